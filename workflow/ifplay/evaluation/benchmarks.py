"""The benchmark registry: every benchmark the workflow scores models on, declared once.

In the spirit of lm-eval's task definitions, a :class:`Benchmark` says where its prompts come from,
how answers are generated, which stage kind scores them, and which metrics its table shows:

- ``name``: the config key ``eval.benchmarks.<name>`` (``enabled``, ``limit``) and the table
  ``tables/<name>.csv`` of every experiment that enables it;
- ``prompts``: the ``data.<key>`` its prompt set is read from (a ``prompts`` stage, first ``limit``);
  while that key is null the benchmark is not planned (IFBench, LLMBar: no hub copy we can pin);
- ``generation``: how each model answers; ``greedy`` is the evaluation decoding (temperature 0,
  ``eval.max_new_tokens``, one answer per prompt, a ``generate`` stage);
- ``scorer``: the stage kind (:mod:`ifplay.core.stages`) that reads prompts and responses and writes
  ``metrics.json`` with a ``metrics`` object;
- ``metrics``: the table's columns, each ``column: key in metrics.json``; ``percent`` scales them
  to percent (two decimals); ``counts``: further columns, each ``column: top-level key of
  metrics.json``, integers as they are (IFBench's unscorable prompts);
- ``prompt_stage``: the stage kind that reads ``data.<prompts>`` (``prompts``: a prompt set in
  IFEval's format; ``followbench_prompts``: FollowBench's six files);
- ``judge``: the stage kind that judges each model's responses before the scorer reads them (the
  benchmark's ``judge`` config), or None;
- ``breakdown``: the name of a second table, ``tables/<name>_<breakdown>.csv``, whose rows are the
  ``breakdown`` list of the scorer's ``metrics.json`` (FollowBench's categories), or None.

The plan (``ifplay.plan``) evaluates every model of an experiment (the base model, the "-SFT"
models, each method's iterations) on every enabled benchmark, and the report
(:func:`ifplay.reporting.tables.benchmark_table`) makes the tables. Adding one:
``docs/adding-a-benchmark.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ifplay.evaluation.followbench import TABLE_COLUMNS as FOLLOWBENCH_COLUMNS
from ifplay.scoring.ifeval import METRICS as IFEVAL_METRICS
from ifplay.scoring.ifeval import SHORT as IFEVAL_SHORT

GENERATIONS = ("greedy",)


@dataclass(frozen=True)
class Benchmark:
    name: str
    prompts: str
    generation: str
    scorer: str
    metrics: dict[str, str]
    percent: bool
    doc: str
    prompt_stage: str = "prompts"
    judge: str | None = None
    breakdown: str | None = None
    counts: dict[str, str] = field(default_factory=dict)


_IFEVAL_COLUMNS = {IFEVAL_SHORT[metric]: metric for metric in IFEVAL_METRICS}

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("ifeval", prompts="ifeval", generation="greedy", scorer="ifeval_scores", metrics=_IFEVAL_COLUMNS,
              percent=True, doc="IFEval (google/IFEval, 541 prompts): lm-eval's checkers, four accuracies"),
    Benchmark("dev", prompts="dev_prompts", generation="greedy", scorer="ifeval_scores", metrics=_IFEVAL_COLUMNS,
              percent=True, doc="the repository's held-out dev prompts, scored by the same IFEval checkers"),
    Benchmark("followbench", prompts="followbench", generation="greedy", scorer="followbench_scores",
              metrics={column: column for column in FOLLOWBENCH_COLUMNS}, percent=False,
              prompt_stage="followbench_prompts", judge="followbench_judgements", breakdown="categories",
              doc="FollowBench (YJiangcm/FollowBench, 820 items): SSR / HSR by level, CSL; rule checks and an LLM judge"),
    Benchmark("ifbench", prompts="ifbench", generation="greedy", scorer="ifbench_scores", metrics=_IFEVAL_COLUMNS,
              percent=True, counts={"unscorable": "num_unscorable"},
              doc="IFBench (allenai/IFBench, 300 prompts, 58 unseen constraints): the official checkers' verdicts, "
                  "IFEval's four accuracies over the scorable prompts"),
)}
