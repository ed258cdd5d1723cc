"""Generation backends behind one interface (:class:`Backend`); :func:`make_backend` picks one by name."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ifplay.generation.backends.base import Backend, Conversation, Message, SamplingParams

__all__ = ["Backend", "BackendRuntime", "Conversation", "Message", "SamplingParams", "make_backend", "parse_options",
           "BACKENDS"]

BACKENDS = ("transformers", "vllm", "openai")


def parse_options(text: str | None) -> dict:
    """``--backend-options``: a JSON object of backend settings (``config backend.<name>``)."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"--backend-options must be a JSON object, got {text!r}")
    return value


@dataclass(frozen=True)
class BackendRuntime:
    """Runtime settings (not hashed) of a stage that generates, from config ``backend.*``: the batch
    size, the prompt cap and the chosen backend's own settings (``backend.vllm`` / ``backend.openai``).
    Stage settings whose runtime has more (template paths) extend it."""

    batch_size: int
    max_prompt_tokens: int
    backend_options: dict

    def make(self, name: str, model_path: str, threads: int | None) -> "Backend":
        return make_backend(name, model_path, batch_size=self.batch_size, max_prompt_tokens=self.max_prompt_tokens,
                            threads=threads, options=self.backend_options)


def make_backend(name: str, model_path: str, *, batch_size: int = 16, max_prompt_tokens: int = 2048,
                 threads: int | None = None, options: dict | None = None) -> Backend:
    """Instantiate the backend ``name`` for the checkpoint at ``model_path``. ``options`` are the
    backend's own settings (config ``backend.vllm`` / ``backend.openai``), passed as keywords."""
    options = dict(options or {})
    common = dict(batch_size=batch_size, max_prompt_tokens=max_prompt_tokens, threads=threads)
    if name == "transformers":
        from ifplay.generation.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model_path, **common, **options)
    if name == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise RuntimeError("vllm is not installed; run `make venv-vllm` and run this stage with "
                               f".venv-vllm/bin/ifplay (docs/backends.md) ({err})") from None
        from ifplay.generation.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model_path, **common, **options)
    if name == "openai":
        from ifplay.generation.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model_path, **common, **options)
    raise ValueError(f"unknown backend '{name}' (choices: {', '.join(BACKENDS)})")
