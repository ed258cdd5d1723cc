"""The teacher: the model that makes SPaR's starting data (evolved prompts; later its SFT data).

A teacher is any backend: the OpenAI-compatible client (a hosted model or ``vllm serve``) at scale,
a local model by path, or the base model itself on the CPU default. :class:`Teacher` wraps the
backend and records what it was asked (calls, conversations, completions) together with the
backend's own usage counts where it keeps them (the openai backend: requests, retries, failures,
cache hits, prompt and completion tokens), so every teacher stage writes a ``usage.json``.
"""

from __future__ import annotations

from ifplay.generation.backends import Backend, Conversation, SamplingParams, make_backend, parse_options


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


def make_teacher(backend: str, model: str, options: str | dict | None = None, *, batch_size: int = 16,
                 max_prompt_tokens: int = 2048, threads: int | None = None) -> Teacher:
    """The teacher on ``backend`` (transformers, vllm or openai) for ``model``: a checkpoint path, or
    for openai the served model's name (``backend.openai.model`` overrides it)."""
    if isinstance(options, str) or options is None:
        options = parse_options(options)
    return Teacher(make_backend(backend, model, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                                threads=threads, options=options), model)


def add_teacher_args(p) -> None:
    """The command-line flags that build a teacher."""
    p.add_argument("--teacher", required=True,
                   help="teacher checkpoint directory, or (backend openai) the served model's name")
    p.add_argument("--backend", default="transformers", help="the teacher's backend")
    p.add_argument("--backend-options", default=None, help="JSON object of the backend's settings")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)


def teacher_from_args(args) -> Teacher:
    return make_teacher(args.backend, args.teacher, args.backend_options, batch_size=args.batch_size,
                        max_prompt_tokens=args.max_prompt_tokens, threads=args.threads)
