"""The teacher: the model that makes SPaR's starting data (evolved prompts; later its SFT data).

A teacher is any backend: the OpenAI-compatible client (a hosted model or ``vllm serve``) at scale,
a local model by path, or the base model itself on the CPU default. :class:`Teacher` wraps the
backend and records what it was asked (calls, conversations, completions) together with the
backend's own usage counts where it keeps them (the openai backend: requests, retries, failures,
cache hits, prompt and completion tokens), so every teacher stage writes a ``usage.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ifplay.core.settings import SettingsError
from ifplay.generation.backends import (Backend, BackendChoice, BackendRuntime, Conversation, SamplingParams, make_backend,
                                       parse_options)


class Teacher(Backend):
    """A backend that counts its calls; ``usage()`` adds the wrapped backend's own counts."""

    name = "teacher"

    def __init__(self, backend: Backend, model: str):
        self.backend = backend
        self.model = model
        self.calls = self.conversations = self.completions = 0

    def chat(self, conversations: list[Conversation], params: SamplingParams,
             progress: str | None = None) -> list[list[str]]:
        outputs = self.backend.chat(conversations, params, progress=progress)
        self.calls += 1
        self.conversations += len(conversations)
        self.completions += sum(len(texts) for texts in outputs)
        return outputs

    def usage(self) -> dict:
        counts = {"backend": self.backend.name, "model": self.model, "calls": self.calls,
                  "conversations": self.conversations, "completions": self.completions}
        own = getattr(self.backend, "usage", None)
        if isinstance(own, dict):
            counts.update(own)
        return counts

    def close(self) -> None:
        self.backend.close()


def make_teacher(backend: BackendChoice | str, model: str, options: str | dict | None = None, *, batch_size: int = 16,
                 max_prompt_tokens: int = 2048, threads: int | None = None) -> Teacher:
    """The teacher on ``backend`` (transformers, vllm or openai) for ``model``: a checkpoint path, or
    for openai the served model's name (``backend.openai.model`` overrides it)."""
    if isinstance(options, str) or options is None:
        options = parse_options(options)
    return Teacher(make_backend(backend, model, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                                threads=threads, options=options), model)


@dataclass(frozen=True)
class TeacherConfig:
    """The ``teacher`` of a teacher stage's slice: its backend, and the model a server serves under
    that name (null: the teacher is a checkpoint, the stage's ``teacher`` input, whose key says which)."""

    backend: BackendChoice
    model: str | None


def add_teacher_argument(p) -> None:
    """``--teacher``: the teacher's checkpoint directory (a stage input; none for a served model)."""
    p.add_argument("--teacher", default=None,
                   help="teacher checkpoint directory (the stage's teacher input); without it the served model "
                        "config.teacher.model")


def teacher_from_settings(teacher: TeacherConfig, runtime: BackendRuntime, checkpoint: str | None,
                          threads: int) -> Teacher:
    """The teacher a stage's settings name: ``config.teacher``'s backend, the checkpoint ``--teacher``
    (or the served model ``config.teacher.model``) and the runtime's batching and backend settings."""
    model = checkpoint or teacher.model
    if model is None:
        raise SettingsError("settings.config.teacher.model is null: the teacher checkpoint (--teacher) is needed")
    return make_teacher(teacher.backend, model, runtime.backend_options, batch_size=runtime.batch_size,
                        max_prompt_tokens=runtime.max_prompt_tokens, threads=threads)
