"""The stage plan: which stages an experiment runs, what each reads, and where its output goes.

Every stage writes to ``results/<kind>/<key>/`` where ``key`` is a short hash of exactly the
config slice the stage reads, the keys of the stages it consumes and the stage's code version.
Two experiments therefore share every stage whose slice and upstream agree: an overlay that
changes only an evaluation setting re-runs only evaluation stages.

A slice holds what decides a stage's *result* (model source, decoding settings, data content);
runtime settings (batch sizes, paths, threads) travel in ``Stage.runtime`` and are not hashed.
The Snakefile builds one :class:`Plan` from the config and looks stages up by key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ifplay import sources

RESULTS = "results"

# Bump a stage's version when its code changes what it writes: every key downstream changes.
STAGE_VERSIONS = {
    "base_model": 1,
    "prompts": 1,
    "eval_responses": 1,
    "ifeval_scores": 1,
    "spar_samples": 1,
    "spar_judged": 1,
    "spar_trees": 1,
    "spar_data": 1,
    "actor_dpo": 1,
    "refiner_rft": 1,
    "sft_model": 1,
    "judge_eval": 1,
}

# The main output of each stage kind, relative to its directory (the Snakefile rules use these).
OUTPUTS = {
    "base_model": "checkpoint",
    "prompts": "prompts.jsonl",
    "eval_responses": "responses.jsonl",
    "ifeval_scores": "metrics.json",
    "spar_samples": "samples.jsonl",
    "spar_judged": "judged.jsonl",
    "spar_trees": "trees.jsonl",
    "spar_data": "dpo_pairs.jsonl",
    "actor_dpo": "checkpoint",
    "refiner_rft": "checkpoint",
    "sft_model": "checkpoint",
    "judge_eval": "metrics.json",
}


def short_hash(obj: Any, length: int = 12) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


@dataclass(eq=False)
class Stage:
    kind: str
    config: dict
    inputs: dict[str, "Stage"] = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        return short_hash(
            {
                "kind": self.kind,
                "version": STAGE_VERSIONS[self.kind],
                "config": self.config,
                "inputs": {name: stage.key for name, stage in sorted(self.inputs.items())},
            }
        )

    @property
    def dir(self) -> str:
        return f"{RESULTS}/{self.kind}/{self.key}"

    @property
    def output(self) -> str:
        return f"{self.dir}/{OUTPUTS[self.kind]}"

    def path(self, name: str) -> str:
        """Another file of this stage's directory."""
        return f"{self.dir}/{name}"

    def __repr__(self) -> str:
        return f"Stage({self.kind}/{self.key})"

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "output": self.output,
            "config": self.config,
            "inputs": {name: stage.key for name, stage in sorted(self.inputs.items())},
        }


@dataclass
class SparIteration:
    """The stages of SPaR iteration t: M_t, R_t in; M_{t+1}, R_{t+1} out."""

    iteration: int
    samples: Stage
    judged: Stage
    trees: Stage
    data: Stage
    actor: Stage
    refiner: Stage


@dataclass
class JudgeEvaluation:
    """A refiner judging held-out responses against the oracle: a row of ``tables/judge.csv``."""

    model: str
    iteration: int
    metrics: Stage


@dataclass
class Evaluation:
    """One model scored on one benchmark: a row of ``tables/<benchmark>.csv``."""

    benchmark: str
    model: str
    iteration: int
    scores: Stage


class Plan:
    """All stages one configuration asks for, deduplicated by key."""

    def __init__(self, config: dict):
        self.config = config
        self.stages: dict[str, Stage] = {}
        self.evaluations: list[Evaluation] = []
        self.models: list[tuple[str, int, Stage]] = []
        self.spar: list[SparIteration] = []
        self.judge_evaluations: list[JudgeEvaluation] = []
        self.sft: dict[str, Stage] = {}  # "actor" (M_0) and "refiner" (R_0) when they are SFT models

        base = self.add(self._base_model_stage())
        label = self._base_label()
        self.models.append((label, 0, base))
        actor = refiner = base  # M_0 and R_0: the base model, or its SFT
        if config["sft"]["enabled"]:
            actor, refiner = self._add_sft(base)
            self.models.append((f"{label}-SFT", 0, actor))
        if config["spar"]["enabled"]:
            self._add_spar(base, actor, refiner)

        for name, bench in config["eval"]["benchmarks"].items():
            if not bench["enabled"]:
                continue
            prompts = self.add(self._prompts_stage(name, bench["limit"]))
            for model_label, iteration, model in self.models:
                responses = self.add(self._eval_responses(model, prompts))
                scores = self.add(Stage("ifeval_scores", {}, {"prompts": prompts, "responses": responses}))
                self.evaluations.append(Evaluation(name, model_label, iteration, scores))

    # -- construction helpers -------------------------------------------------------------
    def add(self, stage: Stage) -> Stage:
        return self.stages.setdefault(stage.key, stage)

    def backend_runtime(self) -> dict:
        backend = self.config["backend"]
        return {"batch_size": backend["batch_size"], "max_prompt_tokens": backend["max_prompt_tokens"]}

    def _eval_responses(self, model: Stage, prompts: Stage) -> Stage:
        """Greedy responses of ``model`` to ``prompts`` (the evaluation decoding)."""
        return Stage(
            "eval_responses",
            {
                "backend": self.config["backend"]["name"],
                "decoding": {"temperature": 0.0, "top_p": 1.0, "n": 1,
                             "max_new_tokens": self.config["eval"]["max_new_tokens"]},
            },
            {"model": model, "prompts": prompts},
            runtime=self.backend_runtime(),
        )

    def _base_label(self) -> str:
        model = self.config["model"]
        return model["label"] or sources.model_label(model["base"])

    def _base_model_stage(self) -> Stage:
        model = self.config["model"]
        origin = sources.model_origin(model["base"], model["revision"])
        return Stage(
            "base_model",
            {"origin": origin.fingerprint, "dtype": model["dtype"]},
            runtime={"source": model["base"], "revision": model["revision"]},
        )

    def _prompts_stage(self, benchmark: str, limit: int | None) -> Stage:
        return self._prompt_set("ifeval" if benchmark == "ifeval" else "dev_prompts", limit)

    def _prompt_set(self, data_key: str, limit: int | None) -> Stage:
        source = self.config["data"][data_key]
        origin = sources.prompt_origin(source, config_key=f"data.{data_key}")
        return Stage("prompts", {"origin": origin.fingerprint, "limit": limit}, runtime={"source": source})

    def _local_file(self, path: str, config_key: str) -> tuple[dict, str]:
        """A file's content fingerprint (hashed) and its resolved path (runtime)."""
        resolved = sources.local_file(path, config_key)
        return {"sha256": sources.file_sha256(resolved)}, str(resolved)

    def _add_sft(self, base: Stage) -> tuple[Stage, Stage]:
        """M_0 = SFT(base) on ``sft.actor_data``; R_0 = SFT(base) on ``sft.refiner_data``, or M_0
        itself when that is null (both roles then start from one SFT model)."""
        sft = self.config["sft"]

        def fine_tune(data_key: str) -> Stage:
            data, path = self._local_file(sft[data_key], f"sft.{data_key}")
            return self.add(Stage("sft_model", {"settings": sft["training"], "data": data,
                                                "seed": self.config["seed"]},
                                  {"model": base}, runtime={"data": path}))

        actor = fine_tune("actor_data")
        refiner = fine_tune("refiner_data") if sft["refiner_data"] else actor
        self.sft = {"actor": actor, "refiner": refiner}
        return actor, refiner

    def _add_spar(self, base: Stage, actor: Stage, refiner: Stage) -> None:
        """SPaR iterations from M_0 = ``actor`` and R_0 = ``refiner``: M_{t+1} = DPO(M_t) on refined
        pairs, R_{t+1} = RFT(R_t); each R_t is also scored as a judge on ``base``'s held-out answers."""
        spar = self.config["spar"]
        backend = self.config["backend"]["name"]
        runtime = self.backend_runtime()
        pool = self.add(self._prompt_set("train_prompts", spar["prompt_limit"]))
        judge = dict(spar["judge"])
        judge_template, judge_path = self._local_file(judge.pop("template"), "spar.judge.template")
        # the refiner as a judge always judges as the model judge does, whoever judges in training
        judge_eval = {**judge, "kind": "model", "template": judge_template}
        search = dict(spar["search"])
        refine_template, refine_path = self._local_file(search.pop("template"), "spar.search.template")
        if judge["kind"] == "verifier":  # the oracle reads no model and no sampling settings
            judge = {"kind": "verifier"}
        else:
            judge["template"] = judge_template
        search["template"] = refine_template
        templates = {"judge_template": judge_path, "refine_template": refine_path}
        label = self._base_label()
        heldout = None
        if spar["judge_eval"]["enabled"]:  # the base model's greedy answers to the dev prompts
            heldout_prompts = self.add(self._prompt_set("dev_prompts", spar["judge_eval"]["limit"]))
            heldout = {"prompts": heldout_prompts,
                       "responses": self.add(self._eval_responses(base, heldout_prompts))}

        def score_judge(model_label: str, iteration: int, model: Stage) -> None:
            if heldout is None:
                return
            stage = self.add(Stage("judge_eval", {"judge": judge_eval, "backend": backend, "seed": self.config["seed"]},
                                   {**heldout, "refiner": model}, runtime={**runtime, **templates}))
            self.judge_evaluations.append(JudgeEvaluation(model_label, iteration, stage))

        score_judge(label if refiner is base else f"{label}-SFT", 0, refiner)
        for t in range(spar["iterations"]):
            samples = self.add(Stage("spar_samples", {"backend": backend, "sampling": spar["sampling"],
                                                      "seed": self.config["seed"]},
                                     {"model": actor, "prompts": pool}, runtime=runtime))
            judge_inputs = {"samples": samples, "prompts": pool}
            if judge["kind"] == "model":
                judge_inputs["refiner"] = refiner
            judged = self.add(Stage("spar_judged", {"judge": judge, "backend": backend, "seed": self.config["seed"]},
                                    judge_inputs, runtime={**runtime, **templates}))
            trees = self.add(Stage("spar_trees", {"judge": judge, "search": search, "backend": backend,
                                                  "negatives_per_prompt": spar["negatives_per_prompt"],
                                                  "seed": self.config["seed"]},
                                   {"judged": judged, "prompts": pool, "refiner": refiner},
                                   runtime={**runtime, **templates}))
            data = self.add(Stage("spar_data", {"rft_mix": spar["rft_mix"], "judge_template": judge_template,
                                                "refine_template": refine_template, "seed": self.config["seed"]},
                                  {"judged": judged, "trees": trees}, runtime=templates))
            actor = self.add(Stage("actor_dpo", {"settings": spar["actor_dpo"], "seed": self.config["seed"]},
                                   {"model": actor, "data": data}))
            refiner = self.add(Stage("refiner_rft", {"settings": spar["refiner_rft"], "seed": self.config["seed"]},
                                     {"model": refiner, "data": data}))
            self.spar.append(SparIteration(t, samples, judged, trees, data, actor, refiner))
            self.models.append((f"{label}-SPaR-DPO", t + 1, actor))
            score_judge(f"{label}-SPaR-RFT", t + 1, refiner)

    # -- lookups used by the Snakefile and the report -------------------------------------
    def stage(self, key: str) -> Stage:
        try:
            return self.stages[key]
        except KeyError:
            raise KeyError(
                f"no stage with key {key} in the plan of experiment '{self.config['experiment']}': "
                "the path was made by another configuration (pass its --configfile)"
            ) from None

    def report_inputs(self) -> list[str]:
        """Files the experiment report reads: scores, judge scores, SPaR counts, trained checkpoints."""
        return ([e.scores.output for e in self.evaluations]
                + [e.metrics.output for e in self.judge_evaluations]
                + [it.data.path("counts.json") for it in self.spar]
                + [stage.output for stage in self.training_runs().values()])

    def tables(self) -> list[str]:
        """The tables the experiment report writes (``tables/<name>.csv``)."""
        benchmarks = list(dict.fromkeys(e.benchmark for e in self.evaluations))
        return (benchmarks + (["spar_counts", "spar_pairs"] if self.spar else [])
                + (["judge"] if self.judge_evaluations else []))

    def training_runs(self) -> dict[str, Stage]:
        """Every training stage by figure name (``figures/<name>.png`` in the experiment's report)."""
        if self.sft and self.sft["refiner"] is self.sft["actor"]:
            runs = {"sft": self.sft["actor"]}
        else:
            runs = {f"sft_{role}": stage for role, stage in self.sft.items()}
        for it in self.spar:
            runs[f"actor_dpo_iter{it.iteration + 1}"] = it.actor
            runs[f"refiner_rft_iter{it.iteration + 1}"] = it.refiner
        return runs

    def final_outputs(self) -> list[str]:
        return [f"{RESULTS}/experiments/{self.config['experiment']}/manifest.json"]

    def manifest(self) -> dict:
        return {
            "experiment": self.config["experiment"],
            "config": self.config,
            "stages": [stage.describe() for stage in self.stages.values()],
            "evaluations": [
                {"benchmark": e.benchmark, "model": e.model, "iteration": e.iteration,
                 "scores": e.scores.output}
                for e in self.evaluations
            ],
            "judge_evaluations": [
                {"model": e.model, "iteration": e.iteration, "metrics": e.metrics.output}
                for e in self.judge_evaluations
            ],
            "spar_iterations": [
                {"iteration": it.iteration, "counts": it.data.path("counts.json"),
                 "actor_out": it.actor.output, "refiner_out": it.refiner.output}
                for it in self.spar
            ],
        }


def experiment_dir(name: str) -> Path:
    return Path(RESULTS) / "experiments" / name
