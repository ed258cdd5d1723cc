"""The generation stage: one chat completion (or ``n``) per prompt, checkpointed as it goes.

Output lines are ``{"key", "sample", "prompt", "response"}``, one per sample, in prompt order.
Finished prompts are journalled to ``<out>.partial`` after every chunk, so a killed job restarts
where it stopped and the final file appears atomically only when every prompt is done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tqdm.auto import tqdm

from ifplay.generation.backends import BackendChoice, BackendRuntime, SamplingParams, make_backend
from ifplay.core.records import Checkpoint, read_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """The ``sampling`` slice of a generate stage (greedy evaluation: n 1, temperature 0, seed 0)."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              n=self.n, seed=self.seed)


@dataclass(frozen=True)
class GenerateConfig:
    backend: BackendChoice
    sampling: Sampling


@dataclass(frozen=True)
class GenerateSettings:
    """``ifplay generate --settings``: the generate stage's slice and the backend's runtime settings."""

    config: GenerateConfig
    runtime: BackendRuntime


def user_turn(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def generate_responses(model: str, prompts_path: str, out: str, backend: BackendChoice | str, params: SamplingParams, *,
                       batch_size: int = 16, max_prompt_tokens: int = 2048, threads: int | None = None,
                       chunk_batches: int = 1, backend_options: dict | None = None) -> list[dict]:
    prompts = read_jsonl(prompts_path, required=("key", "prompt"))
    journal = Checkpoint(out, id_field="key")
    todo = [p for p in prompts if p["key"] not in journal.done]
    if journal.done:
        log.info("resuming: %d of %d prompts already done", len(prompts) - len(todo), len(prompts))
    if todo:
        engine = make_backend(backend, model, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                              threads=threads, options=backend_options)
        chunk = batch_size * chunk_batches
        with engine, tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="generate", unit="prompt") as bar:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                completions = engine.chat([user_turn(p["prompt"]) for p in part], params)
                journal.append(
                    {"key": p["key"], "sample": j, "prompt": p["prompt"], "response": text}
                    for p, texts in zip(part, completions) for j, text in enumerate(texts)
                )
                bar.update(len(part))
    return journal.finish(order=[p["key"] for p in prompts])
