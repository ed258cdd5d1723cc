"""Generation backends behind one interface (:class:`Backend`); :func:`make_backend` picks one by name."""

from __future__ import annotations

from ifplay.backends.base import Backend, Conversation, Message, SamplingParams

__all__ = ["Backend", "Conversation", "Message", "SamplingParams", "make_backend", "BACKENDS"]

BACKENDS = ("transformers",)


def make_backend(name: str, model_path: str, *, batch_size: int = 16, max_prompt_tokens: int = 2048,
                 threads: int | None = None) -> Backend:
    """Instantiate the backend ``name`` for the checkpoint at ``model_path``."""
    if name == "transformers":
        from ifplay.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model_path, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                                   threads=threads)
    raise ValueError(f"unknown backend '{name}' (choices: {', '.join(BACKENDS)})")
