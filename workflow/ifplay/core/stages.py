"""The stage registry: every stage kind, declared once.

A stage is one job of the workflow: it reads the outputs of other stages (its *inputs*, by name)
and a slice of the config, and writes files into ``results/<kind>/<key>/``, where ``key`` hashes
the kind, its version, the slice and the inputs' keys (:class:`Stage`). A :class:`StageKind`
says everything the plan (``ifplay.plan``), the rules (``workflow/rules/*.smk``) and the report
need to agree on:

- ``name``: the kind, the rule's name and, with ``-`` for ``_``, the ``ifplay`` command the rule runs;
- ``version``: bump it when the code changes what the stage writes (every key downstream changes);
- ``outputs``: the files the stage writes, main output first (a trailing ``/`` marks a directory);
- ``group``: the rule group, which names its conda env (``envs/<group>.yaml``) and its threads and
  cluster resources (``resources.<group>``, :mod:`ifplay.core.cluster`);
- ``inputs``: the names of the stages it may read (the plan wires a subset, the rule looks them up);
- ``config``: the top-level keys of its hashed config slice (exactly these, checked for each stage;
  ``name?`` marks a key that only some configurations set).

Planning a stage of an unknown kind, with another slice or an undeclared input fails at once,
whatever config asked for it; ``tests/test_stages.py`` checks every kind against its rule and
plans every config under ``config/``. Adding a kind: ``docs/adding-a-stage.md``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

RESULTS = "results"
LOGS = "logs"  # logs/<kind>/<key>.log (the rule's log), .benchmark.tsv, .generation.jsonl
GROUPS = ("generation", "training", "evaluation", "bookkeeping")


@dataclass(frozen=True)
class StageKind:
    name: str
    version: int
    outputs: tuple[str, ...]
    group: str
    inputs: tuple[str, ...]
    config: tuple[str, ...]
    doc: str

    @property
    def command(self) -> str:
        """The ``ifplay`` subcommand the stage's rule runs (the training kinds run it under ``launch``)."""
        return self.name.replace("_", "-")

    @property
    def generates(self) -> bool:
        """Whether the stage runs a model's generation (it then keeps a generation journal,
        :mod:`ifplay.generation.journal`): every kind of the generation group but ``base_model`` and
        ``general_eval`` (lm-eval generates, through its own model classes)."""
        return self.group == "generation" and self.name not in ("base_model", "general_eval")

    @property
    def main(self) -> str:
        """The main output, relative to the stage's directory (no trailing ``/`` for a directory)."""
        return self.outputs[0].rstrip("/")

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(name.rstrip("/") for name in self.outputs)


_KINDS = (
    # -- models and prompts ----------------------------------------------------------------------
    StageKind("base_model", 1, ("checkpoint/",), "generation", (), ("origin", "dtype"),
              "a model source (builtin GGUF, local directory, hub id) as a HF checkpoint directory"),
    StageKind("prompts", 1, ("prompts.jsonl",), "bookkeeping", (), ("origin", "limit"),
              "a prompt set (IFEval format) from the hub, a file or the repository's own sets"),
    StageKind("prompt_subset", 1, ("prompts.jsonl",), "bookkeeping", ("prompts",), ("limit",),
              "the first N prompts of another stage's prompts"),
    # -- shared by the methods and the evaluations -----------------------------------------------
    StageKind("generate", 4, ("responses.jsonl",), "generation", ("model", "prompts"), ("backend", "sampling"),
              "a model's responses to prompts: greedy for evaluation, n samples per prompt for self-play"),
    StageKind("judgements", 4, ("judged.jsonl",), "generation", ("samples", "prompts", "refiner"),
              ("judge", "backend", "seed"),
              "each response judged (the refiner's majority vote, or the verifier oracle)"),
    StageKind("dpo", 2, ("checkpoint/",), "training", ("model", "data"), ("settings", "seed"),
              "DPO (trl) of a model on preference pairs (SPaR's actor, AutoIF's offline and online DPO)"),
    StageKind("sft", 2, ("checkpoint/",), "training", ("model", "data"), ("settings", "seed", "data"),
              "SFT (trl) of a model on conversations (SPaR's refiner RFT and -SFT models, AutoIF's SFT)"),
    # -- the baselines (ifplay.baselines) ---------------------------------------------------------
    StageKind("rubric_judgements", 1, ("judged.jsonl", "counts.json"), "generation", ("samples", "judge"),
              ("judge", "backend", "seed"),
              "Self-Rewarding: the model scores its own samples with the additive 5-point rubric, several times"),
    StageKind("self_rewarding_pairs", 1, ("pairs.jsonl", "counts.json"), "bookkeeping", ("judged",), (),
              "Self-Rewarding: per prompt, the best- against the worst-scored sample as a DPO pair"),
    StageKind("meta_judgements", 1, ("verdicts.jsonl", "counts.json"), "generation", ("judged", "judge"),
              ("meta_judge", "backend", "seed"),
              "Meta-Rewarding: the model compares every ordered pair of its judgements of its most disputed response"),
    StageKind("meta_rewarding_pairs", 1, ("pairs.jsonl", "counts.json"), "bookkeeping", ("judged", "verdicts"),
              ("length_control_rho", "max_chosen_judgement_chars", "judge_template"),
              "Meta-Rewarding: length-controlled actor pairs and (judge iterations) Elo-ranked judgement pairs"),
    # -- evaluation ------------------------------------------------------------------------------
    StageKind("ifeval_scores", 1, ("metrics.json", "per_prompt.jsonl"), "evaluation", ("prompts", "responses"), (),
              "IFEval's four metrics of responses (lm-eval's checkers)"),
    StageKind("ifbench_scores", 1, ("metrics.json", "per_prompt.jsonl"), "evaluation", ("prompts", "responses"), (),
              "IFBench's strict and loose accuracies (the official checkers' verdicts; unscorable prompts counted)"),
    StageKind("followbench_prompts", 1, ("prompts.jsonl",), "evaluation", ("model",),
              ("origin", "limit", "max_prompt_tokens"),
              "FollowBench's scored items (first `limit` groups per category), prompts counted in tokens"),
    StageKind("followbench_judgements", 1, ("judged.jsonl",), "generation", ("prompts", "responses", "judge"),
              ("judge",), "FollowBench: the judge's raw outputs and parsed verdicts on the LLM-judged items"),
    StageKind("followbench_scores", 1, ("metrics.json", "per_item.jsonl"), "evaluation",
              ("prompts", "responses", "judged"), ("judge",),
              "FollowBench's HSR / SSR / CSL per category and level (rule checks and judged verdicts)"),
    StageKind("llmbar_items", 1, ("items.jsonl",), "bookkeeping", (), ("origin", "limit"),
              "LLMBar's pairs (first `limit` per subset) as pointwise items: follows / does not follow"),
    StageKind("llmbar_judgements", 1, ("judged.jsonl",), "generation", ("pointwise", "refiner"), ("judge", "backend", "seed"),
              "LLMBar: a refiner's greedy vote and sampled votes on every item, raw texts kept"),
    StageKind("llmbar_scores", 1, ("metrics.json",), "evaluation", ("pointwise", "judged"), ("votes", "main"),
              "LLMBar: accuracy and F1 per subset, Adversarial and Average, greedy and majority of k"),
    StageKind("judge_eval", 3, ("metrics.json", "judged.jsonl", "per_item.jsonl"), "generation",
              ("prompts", "responses", "refiner"), ("judge", "backend", "seed"),
              "a refiner judging held-out responses, scored against the IFEval oracle"),
    StageKind("general_eval", 2, ("metrics.json", "results.json", "samples/"), "generation", ("model",),
              ("tasks", "backend", "seed", "max_gen_toks", "chat_template", "endpoint"),
              "general skills: stock lm-eval tasks (GSM8k, HumanEval, MMLU, ...) through lm-eval's own API, "
              "programs of code tasks in the sandbox, per-sample logs kept"),
    StageKind("scaling_best_of_n", 1, ("responses.jsonl", "counts.json"), "bookkeeping", ("judged",), ("budget",),
              "inference-time scaling: the refiner's pick of the first N judged samples"),
    StageKind("scaling_search", 3, ("responses.jsonl", "trees.jsonl", "counts.json"), "generation",
              ("judged", "prompts", "refiner"), ("budget", "search", "judge", "backend", "seed"),
              "inference-time scaling: tree-search refinement of the greedy answers at a budget"),
    StageKind("refinement_tasks", 1, ("tasks.jsonl", "prompts.jsonl"), "bookkeeping", ("prompts", "judged", "oracle"),
              ("limit", "require_oracle_failure"),
              "refinement accuracy: held-out answers R_0 judged No (and the oracle fails), with critiques"),
    StageKind("refinements", 1, ("responses.jsonl", "trees.jsonl", "counts.json"), "generation",
              ("tasks", "prompts", "refiner"), ("strategy", "budget", "search", "judge", "backend", "seed"),
              "refinement accuracy: a refiner repairs every task (greedy, best-of-N, iterative, BFS, DFS)"),
    StageKind("refinement_scores", 1, ("metrics.json",), "evaluation", ("refined", "judged"), (),
              "refinement accuracy of the answers under one judge (the final refiner, the oracle)"),
    # -- SPaR ------------------------------------------------------------------------------------
    StageKind("tree_search", 4, ("trees.jsonl", "counts.json"), "generation", ("judged", "prompts", "refiner"),
              ("judge", "search", "backend", "negatives_per_prompt", "seed"),
              "SPaR's tree-search refinement of the responses judged not to follow"),
    StageKind("spar_data", 1, ("dpo_pairs.jsonl", "rft.jsonl", "counts.json"), "bookkeeping", ("judged", "trees"),
              ("rft_mix", "judge_template", "refine_template", "seed"),
              "SPaR's (refined, original) DPO pairs and the refiner's RFT conversations"),
    StageKind("evolved_prompts", 3, ("prompts.jsonl", "evolved.jsonl", "counts.json", "usage.json"), "generation",
              ("teacher",), ("evolution", "teacher", "seed"),
              "SPaR's prompt evolution: the teacher adds constraints to seed prompts"),
    StageKind("teacher_sft_data", 3, ("actor.jsonl", "refiner.jsonl", "answers.jsonl", "judged.jsonl",
                                      "refinements.jsonl", "counts.json", "usage.json"), "generation",
              ("prompts", "samples", "teacher"),
              ("actor_prompts", "answer", "judge", "refine", "verify_refinements", "teacher", "seed"),
              "the teacher's SFT data for SPaR's M_0 (answers) and R_0 (judgements, refinements)"),
    # -- AutoIF ----------------------------------------------------------------------------------
    StageKind("autoif_instructions", 3, ("instructions.jsonl", "counts.json"), "generation", ("model",),
              ("seeds", "augment", "backend?", "seed?"), "seed instructions, augmented by the supervisor"),
    StageKind("autoif_verifiers", 3, ("verifiers.jsonl", "counts.json"), "generation", ("model", "instructions"),
              ("verifiers", "backend", "seed"), "verification functions and test cases the supervisor writes"),
    StageKind("autoif_crossval", 1, ("instructions.jsonl", "counts.json"), "evaluation", ("verifiers",),
              ("cross_validation", "sandbox"), "cross-validation of the functions in the sandbox"),
    StageKind("autoif_backtrans", 3, ("instructions.jsonl", "counts.json"), "generation",
              ("model", "instructions"), ("back_translation", "backend", "seed"),
              "back-translation of each function and the NLI filter"),
    StageKind("autoif_queries", 2, ("queries.jsonl", "counts.json"), "bookkeeping", ("instructions",),
              ("queries", "seed"), "queries paired with the instructions that survived"),
    StageKind("autoif_responses", 3, ("responses.jsonl",), "generation", ("model", "queries"),
              ("responses", "backend", "seed"), "the supervisor's responses to the queries"),
    StageKind("autoif_verified", 1, ("verified.jsonl", "counts.json"), "evaluation", ("responses",),
              ("rejection", "sandbox"), "rejection sampling: responses run through every function"),
    StageKind("autoif_scored", 3, ("scored.jsonl", "counts.json"), "generation", ("model", "verified"),
              ("quality", "backend", "seed"), "the supervisor's quality scores of the verified queries"),
    StageKind("autoif_data", 3, ("dpo_pairs.jsonl", "sft.jsonl", "queries.jsonl", "counts.json"), "bookkeeping",
              ("verified", "scored"), ("pairs", "seed"), "D_train: SFT data, offline DPO pairs and the queries"),
    StageKind("autoif_online_pairs", 1, ("dpo_pairs.jsonl", "counts.json"), "evaluation", ("queries", "samples"),
              ("pairs", "sandbox", "seed"), "online DPO pairs: the policy's samples verified in the sandbox"),
    StageKind("autoif_prompts", 1, ("prompts.jsonl",), "bookkeeping", ("queries",), ("limit",),
              "AutoIF's queries with their functions as SPaR's prompt pool"),
)

STAGES: dict[str, StageKind] = {kind.name: kind for kind in _KINDS}


def short_hash(obj: Any, length: int = 12) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


class StageError(ValueError):
    """A stage planned against its kind's declaration (unknown kind, slice or input)."""


@dataclass(eq=False)
class Stage:
    """One planned stage. ``config`` is hashed into the key, ``runtime`` (paths, batch sizes) is not;
    ``files`` names the file of an input stage read instead of its main output (hashed too)."""

    kind: str
    config: dict
    inputs: dict[str, "Stage"] = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in STAGES:
            raise StageError(f"unknown stage kind '{self.kind}' (declared in ifplay.core.stages: "
                             f"{', '.join(STAGES)})")
        spec = STAGES[self.kind]
        required = {name for name in spec.config if not name.endswith("?")}
        if not required <= set(self.config) <= {name.rstrip("?") for name in spec.config}:
            raise StageError(f"stage {self.kind}: config slice has keys {sorted(self.config)}, "
                             f"the kind declares {sorted(spec.config)}")
        undeclared = set(self.inputs) - set(spec.inputs)
        if undeclared:
            raise StageError(f"stage {self.kind}: inputs {sorted(undeclared)} are not declared "
                             f"(declared: {', '.join(spec.inputs) or 'none'})")
        for name, file in self.files.items():
            if name not in self.inputs or file not in STAGES[self.inputs[name].kind].files:
                raise StageError(f"stage {self.kind}: input file {name}={file} is not an output of that input")

    @property
    def spec(self) -> StageKind:
        return STAGES[self.kind]

    @cached_property
    def key(self) -> str:
        identity = {
            "kind": self.kind,
            "version": self.spec.version,
            "config": self.config,
            "inputs": {name: stage.key for name, stage in sorted(self.inputs.items())},
        }
        if self.files:
            identity["files"] = self.files
        return short_hash(identity)

    @property
    def dir(self) -> str:
        return f"{RESULTS}/{self.kind}/{self.key}"

    @property
    def output(self) -> str:
        return f"{self.dir}/{self.spec.main}"

    def path(self, name: str) -> str:
        """Another file of this stage's directory (one of its kind's outputs)."""
        if name not in self.spec.files:
            raise StageError(f"stage {self.kind} writes no {name} (its outputs: {', '.join(self.spec.files)})")
        return f"{self.dir}/{name}"

    def input_path(self, name: str) -> str:
        """The file this stage reads from its input ``name``: that stage's main output or ``files[name]``."""
        stage = self.inputs[name]
        return stage.path(self.files[name]) if name in self.files else stage.output

    def settings(self) -> dict:
        """What the stage's command takes as ``--settings`` (:mod:`ifplay.core.settings`): the hashed
        config slice and the runtime settings; a stage that generates also the path of its generation
        journal."""
        settings = {"config": self.config, "runtime": self.runtime}
        if self.spec.generates:
            settings["generation_log"] = f"{LOGS}/{self.kind}/{self.key}.generation.jsonl"
        return settings

    def __repr__(self) -> str:
        return f"Stage({self.kind}/{self.key})"

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "output": self.output,
            "config": self.config,
            "inputs": {name: stage.key for name, stage in sorted(self.inputs.items())},
            **({"files": self.files} if self.files else {}),
        }
