"""The generation journal: what each ``Backend.chat`` call of a stage asked for and produced.

A stage that generates writes ``logs/<kind>/<key>.generation.jsonl`` (the path comes with its
settings: :meth:`ifplay.core.stages.Stage.settings`, ``generation_log``; :func:`ifplay.cli.main`
opens it), one JSON object per call:

- ``backend``, ``dtype``, ``params`` (the call's :class:`SamplingParams`), ``seconds`` (wall time of
  the call, model load excluded);
- ``requests``: the prompts as the model saw them, ``prompt_ids`` (token ids after the chat template
  and the prompt cap), and per prompt ``generated``, the number of tokens each sample decoded (the
  end-of-sequence token counted, as vLLM counts it);
- totals: ``prompt_tokens``, ``generated_tokens``.

``benchmarks/stage_throughput.py`` reads the journals of a finished run: each stage's tokens per
second over its whole wall time, and the same requests replayed on vLLM for its utilisation. The
journal is not a stage output: it lives beside the stage's log, is not hashed and not read by any
stage. Outside a stage (tests, scripts) nothing is written unless :func:`open_journal` was called.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

_PATH: Path | None = None


def open_journal(path: str | os.PathLike | None) -> None:
    """Record every later chat call of this process in ``path`` (emptied first); ``None``: stop recording."""
    global _PATH
    _PATH = Path(path) if path else None
    if _PATH is not None:
        _PATH.parent.mkdir(parents=True, exist_ok=True)
        _PATH.write_text("", encoding="utf-8")


def active() -> bool:
    return _PATH is not None


def record(backend: str, dtype: str | None, params, prompt_ids: list[list[int]], generated: list[list[int]],
           seconds: float) -> None:
    """Append one call (no-op unless a journal is open)."""
    if _PATH is None:
        return
    entry = {
        "backend": backend, "dtype": dtype, "params": dataclasses.asdict(params), "seconds": round(seconds, 4),
        "prompt_tokens": sum(len(ids) for ids in prompt_ids),
        "generated_tokens": sum(sum(counts) for counts in generated),
        "requests": [{"prompt_ids": ids, "generated": counts} for ids, counts in zip(prompt_ids, generated)],
    }
    with _PATH.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def read(path: str | os.PathLike) -> list[dict]:
    """The calls of one journal, in order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
