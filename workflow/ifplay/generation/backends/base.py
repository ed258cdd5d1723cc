"""The generation interface every stage uses, whatever runs the model.

A stage builds chat conversations and :class:`SamplingParams`, asks :func:`ifplay.generation.backends.make_backend`
for the configured backend and calls :meth:`Backend.chat`. transformers (CPU default), vLLM's
offline engine and OpenAI-compatible servers implement the same two methods, so no stage changes
when the backend does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}
Conversation = list  # list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings of one call. ``temperature == 0`` means greedy decoding. ``stop``: strings
    that end a completion; the completion is cut before the first one (as vLLM and OpenAI do)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError("max_new_tokens and n must be >= 1")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def cut(self, text: str) -> str:
        """``text`` up to the first stop string."""
        for stop in self.stop:
            index = text.find(stop)
            if index >= 0:
                text = text[:index]
        return text

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Backend(ABC):
    """Generates chat completions for many conversations at once."""

    name: str = "abstract"

    @abstractmethod
    def chat(self, conversations: list[Conversation], params: SamplingParams,
             progress: str | None = None) -> list[list[str]]:
        """Return ``params.n`` completions for each conversation, in input order.

        A conversation that ends with an assistant message is continued from it (a prefill); the
        completion holds only the continuation.

        ``progress`` names a progress bar; ``None`` shows none.
        """

    def close(self) -> None:
        """Release the model (GPU memory, server connections)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
