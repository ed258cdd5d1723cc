"""The stage plan: which stages an experiment runs, what each reads, and where its output goes.

Every stage writes to ``results/<kind>/<key>/`` where ``key`` is a short hash of exactly the
config slice the stage reads, the keys of the stages it consumes and the stage's code version.
Two experiments therefore share every stage whose slice and upstream agree: an overlay that
changes only an evaluation setting re-runs only evaluation stages.

A slice holds what decides a stage's *result* (model source, decoding settings, data content);
runtime settings (batch sizes, paths, threads) travel in ``Stage.runtime`` and are not hashed.
The Snakefile builds one :class:`Plan` from the config and looks stages up by key. This module
holds what every method shares (the base model, prompt sets, generation, training) and the
lookups the rules and the report use; each method plans its own stages: :mod:`ifplay.spar.plan`,
:mod:`ifplay.autoif.plan`, :mod:`ifplay.evaluation.plan`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ifplay.autoif.plan import AutoIFRun, add_autoif
from ifplay.baselines.plan import MetaRewardingIteration, SelfRewardingIteration, add_meta_rewarding, add_self_rewarding
from ifplay.core import sources
from ifplay.core.stages import RESULTS, Stage, short_hash  # noqa: F401 - re-exported for callers
from ifplay.generation.backends import resolve_dtype
from ifplay.evaluation.benchmarks import BENCHMARKS
from ifplay.evaluation.plan import (Evaluation, GeneralEvaluation, LLMBarEvaluation, RefinementEvaluation, ScalingPoint,
                                    add_benchmark, add_general, add_inference_scaling, add_llmbar, add_refinement)
from ifplay.spar.plan import JudgeEvaluation, SparIteration, add_sft, add_spar

#: Greedy decoding of the evaluations (the seed cannot change a greedy answer: fixed, so that the
#: experiment's seed does not re-run them).
GREEDY = {"n": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0}


class Plan:
    """All stages one configuration asks for, deduplicated by key."""

    def __init__(self, config: dict):
        self.config = config
        self._dtypes: dict[str, str | None] = {}  # backend name -> resolved backend.dtype (Plan.backend)
        self.stages: dict[str, Stage] = {}
        self._report_key: str | None = None  # of the finished plan (report_key)
        self.evaluations: list[Evaluation] = []
        self.models: list[tuple[str, int, Stage]] = []
        self.spar: list[SparIteration] = []
        self.self_rewarding: list[SelfRewardingIteration] = []
        self.meta_rewarding: list[MetaRewardingIteration] = []
        self.judge_evaluations: list[JudgeEvaluation] = []
        self.refiners: list[tuple[str, int, Stage]] = []  # SPaR's R_0..R_T: (label, iteration, checkpoint)
        # every model judged as a judge (LLMBar, judge.csv): SPaR's refiners, the baselines' self-judges
        self.judges: list[tuple[str, int, Stage]] = []
        self.llmbar: list[LLMBarEvaluation] = []
        self.general: list[GeneralEvaluation] = []  # eval.general: every model on lm-eval's tasks
        self.refinement: list[RefinementEvaluation] = []
        self.sft: dict[str, Stage] = {}  # "actor" (M_0) and "refiner" (R_0) when they are SFT models
        self.autoif: AutoIFRun | None = None
        self.scaling: list[ScalingPoint] = []
        self.evolution: Stage | None = None  # the teacher's evolved prompts (SPaR's pool when evolved)
        self.teacher_data: Stage | None = None  # the teacher's SFT data for M_0 and R_0

        base = self.base = self.add(self.base_model_stage())
        label = self.base_label()
        self.models.append((label, 0, base))
        actor = refiner = base  # M_0 and R_0: the base model, or its SFT
        if config["sft"]["enabled"]:
            actor, refiner = add_sft(self, base)
            self.models.append((f"{label}-SFT", 0, actor))
        if config["autoif"]["enabled"]:
            add_autoif(self, base)
        if config["spar"]["enabled"]:
            add_spar(self, base, actor, refiner)
        if config["self_rewarding"]["enabled"]:
            add_self_rewarding(self, base, actor)
        if config["meta_rewarding"]["enabled"]:
            add_meta_rewarding(self, base, actor)
        if config["eval"]["inference_scaling"]["enabled"]:
            final_refiner = self.spar[-1].refiner if self.spar else refiner
            add_inference_scaling(self, self.models[-1][2], final_refiner)

        for name, bench in config["eval"]["benchmarks"].items():
            spec = BENCHMARKS.get(name)  # add_benchmark names an unknown one
            if bench["enabled"] and (spec is None or config["data"].get(spec.prompts, "") is not None):
                add_benchmark(self, name, bench)  # a benchmark whose data.<key> is null is not planned
        if config["eval"]["general"]["enabled"] and config["eval"]["general"]["tasks"]:
            add_general(self)
        if config["eval"]["llmbar"]["enabled"] and config["data"]["llmbar"] and self.judges:
            add_llmbar(self)
        if config["eval"]["refinement"]["enabled"] and self.refiners and self.judge_evaluations:
            add_refinement(self)  # SPaR's refiners; its tasks: R_0's judge_eval

    # -- construction helpers -------------------------------------------------------------
    def add(self, stage: Stage) -> Stage:
        return self.stages.setdefault(stage.key, stage)

    def backend_runtime(self) -> dict:
        """Runtime settings of the generating stages (not hashed): batch size, prompt cap and the
        chosen backend's own settings (``backend.vllm`` / ``backend.openai``)."""
        backend = self.config["backend"]
        return {"batch_size": backend["batch_size"], "max_prompt_tokens": backend["max_prompt_tokens"],
                "backend_options": self.backend_options(backend["name"])}

    def backend(self, name: str | None = None) -> dict:
        """The hashed backend of a generating stage (:class:`ifplay.generation.backends.BackendChoice`):
        ``name`` (default config ``backend.name``) and the dtype config ``backend.dtype`` resolves to
        on this machine."""
        name = name or self.config["backend"]["name"]
        if name not in self._dtypes:  # `auto` reads /proc once per plan, not once per stage
            self._dtypes[name] = resolve_dtype(name, self.config["backend"]["dtype"])
        return {"name": name, "dtype": self._dtypes[name]}

    def eval_responses(self, model: Stage, prompts: Stage, max_new_tokens: int | None = None,
                       max_prompt_tokens: int | None = None) -> Stage:
        """Greedy responses of ``model`` to ``prompts`` (the evaluation decoding): ``max_new_tokens``
        (default ``eval.max_new_tokens``) and, where a benchmark sets its own, the prompt cap (a
        benchmark that sets one hashes it into its prompts stage)."""
        runtime = self.backend_runtime()
        if max_prompt_tokens is not None:
            runtime["max_prompt_tokens"] = max_prompt_tokens
        return Stage(
            "generate",
            {"backend": self.backend(),
             "sampling": {**GREEDY, "max_new_tokens": max_new_tokens or self.config["eval"]["max_new_tokens"]}},
            {"model": model, "prompts": prompts},
            runtime=runtime,
        )

    def samples(self, model: Stage, prompts: Stage, sampling: dict, files: dict | None = None) -> Stage:
        """``sampling["k"]`` samples per prompt of ``model`` (self-play, best-of-N, online DPO), seeded by
        the experiment's seed."""
        settings = {key: value for key, value in sampling.items() if key != "k"}
        return self.add(Stage("generate", {"backend": self.backend(),
                                           "sampling": {"n": sampling["k"], **settings, "seed": self.config["seed"]}},
                              {"model": model, "prompts": prompts}, runtime=self.backend_runtime(), files=files or {}))

    def base_label(self) -> str:
        model = self.config["model"]
        return model["label"] or sources.model_label(model["base"])

    def base_model_stage(self) -> Stage:
        model = self.config["model"]
        origin = sources.model_origin(model["base"], model["revision"])
        return Stage(
            "base_model",
            {"origin": origin.fingerprint, "dtype": model["dtype"]},
            runtime={"source": model["base"], "revision": model["revision"]},
        )

    def prompt_set(self, data_key: str, limit: int | None) -> Stage:
        source = self.config["data"][data_key]
        origin = sources.prompt_origin(source, config_key=f"data.{data_key}")
        return Stage("prompts", {"origin": origin.fingerprint, "limit": limit},
                     runtime={"source": source, "config_key": f"data.{data_key}"})

    def local_file(self, path: str, config_key: str) -> tuple[dict, str]:
        """A file's content fingerprint (hashed) and its resolved path (runtime)."""
        resolved = sources.local_file(path, config_key)
        return {"sha256": sources.file_sha256(resolved)}, str(resolved)


    def fine_tune(self, kind: str, settings: dict, model: Stage, data: Stage, file: str | None = None) -> Stage:
        """``kind`` (``sft`` or ``dpo``) of ``model`` on ``data``'s main output or its ``file``."""
        config = {"settings": settings, "seed": self.config["seed"]}
        if kind == "sft":
            config["data"] = {"file": file or data.spec.main}
        return self.add(Stage(kind, config, {"model": model, "data": data}, files={"data": file} if file else {}))


    def backend_options(self, name: str) -> dict:
        """The settings of backend ``name`` (``backend.vllm`` / ``backend.openai``)."""
        return dict(self.config["backend"].get(name, {}))

    def other_model(self, source: str, config_key: str) -> Stage:
        """A model besides the base one (AutoIF's supervisor, the teacher) as a ``base_model`` stage."""
        origin = sources.model_origin(source, "main", config_key=config_key)
        return self.add(Stage("base_model", {"origin": origin.fingerprint, "dtype": self.config["model"]["dtype"]},
                              runtime={"source": source, "revision": "main"}))


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
                + [stage.path("counts.json") for it in self.self_rewarding for stage in (it.judged, it.pairs)]
                + [stage.path("counts.json") for it in self.meta_rewarding for stage in (it.judged, it.verdicts, it.pairs)
                   if stage is not None]
                + [stage.path("counts.json") for stage in (self.autoif.filters if self.autoif else [])]
                + [stage.output for stage in self.training_runs().values()]
                + [e.scores.output for e in self.llmbar]
                + [e.scores.output for e in self.general]
                + [e.scores.output for e in self.refinement]
                + [point.scores.output for point in self.scaling]
                + [point.answers.output for point in self.scaling if point.answers]
                + [stage.path(name) for stage in (self.evolution, self.teacher_data) if stage
                   for name in ("counts.json", "usage.json")])

    def tables(self) -> list[str]:
        """The tables the experiment report writes (``tables/<name>.csv``)."""
        benchmarks = list(dict.fromkeys(e.benchmark for e in self.evaluations))
        benchmarks += [f"{name}_{BENCHMARKS[name].breakdown}" for name in benchmarks if BENCHMARKS[name].breakdown]
        return (benchmarks + (["spar_counts", "spar_pairs"] if self.spar else [])
                + (["self_rewarding"] if self.self_rewarding else [])
                + (["meta_rewarding"] if self.meta_rewarding else [])
                + (["general"] if self.general else [])
                + (["judge"] if self.judge_evaluations else []) + (["llmbar", "llmbar_votes"] if self.llmbar else [])
                + (["refinement"] if self.refinement else [])
                + (["autoif_counts"] if self.autoif else [])
                + (["inference_scaling"] if self.scaling else [])
                + (["teacher"] if self.evolution or self.teacher_data else []))

    def figures(self) -> list[str]:
        """Result figures of the experiment report besides the training curves (``figures/<name>.png``)."""
        return ["inference_scaling"] if self.scaling else []

    def training_runs(self) -> dict[str, Stage]:
        """Every training stage by figure name (``figures/<name>.png`` in the experiment's report)."""
        if self.sft and self.sft["refiner"] is self.sft["actor"]:
            runs = {"sft": self.sft["actor"]}
        else:
            runs = {f"sft_{role}": stage for role, stage in self.sft.items()}
        if self.autoif:
            runs["autoif_sft"] = self.autoif.sft
            runs["autoif_offline_dpo"] = self.autoif.offline_dpo
            for t, (_, _, model) in enumerate(self.autoif.online, start=1):
                runs[f"autoif_online_dpo_iter{t}"] = model
        for it in self.spar:
            runs[f"actor_dpo_iter{it.iteration + 1}"] = it.actor
            runs[f"refiner_rft_iter{it.iteration + 1}"] = it.refiner
        for it in self.self_rewarding:
            runs[f"self_rewarding_dpo_iter{it.iteration + 1}"] = it.model
        for it in self.meta_rewarding:
            runs[f"meta_rewarding_dpo_iter{it.iteration + 1}"] = it.model
        return runs

    def final_outputs(self) -> list[str]:
        return [f"{RESULTS}/experiments/{self.config['experiment']}/manifest.json", self.report_marker()]

    def report_key(self) -> str:
        """What the experiment's report shows, hashed: its stages, evaluations and labels, not the
        config's paths and runtime settings (moving data or a checkpoint changes no report). Computed
        once: the Snakefile, the report rule and ``ifplay report`` each ask for it."""
        if self._report_key is None:
            self._report_key = self._hash_report()
        return self._report_key

    def _hash_report(self) -> str:
        shown = {k: v for k, v in self.manifest().items() if k != "config"}
        # in no particular order: the plan the Snakefile makes and the one `ifplay report` makes from
        # the config as JSON (keys sorted) list the same stages and evaluations in other orders
        return short_hash({k: sorted(v, key=lambda item: json.dumps(item, sort_keys=True)) if isinstance(v, list) else v
                           for k, v in shown.items()})

    def report_marker(self) -> str:
        """``plan-<report_key>.json`` beside the manifest: the report rule's output that names the plan
        it reported, so a changed plan re-writes the report (the rules' re-run triggers are off:
        the stage keys decide, see ``profiles/default/config.yaml``)."""
        return f"{RESULTS}/experiments/{self.config['experiment']}/plan-{self.report_key()}.json"

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
            "llmbar": [{"judge": e.judge, "iteration": e.iteration, "scores": e.scores.output} for e in self.llmbar],
            "general": [{"model": e.model, "iteration": e.iteration, "scores": e.scores.output} for e in self.general],
            "refinement": [{"refiner": e.refiner, "iteration": e.iteration, "strategy": e.strategy, "budget": e.budget,
                            "judge": e.judge, "scores": e.scores.output} for e in self.refinement],
            "autoif": None if self.autoif is None else {
                "filters": [{"kind": stage.kind, "counts": stage.path("counts.json")} for stage in self.autoif.filters],
                "sft": self.autoif.sft.output,
                "offline_dpo": self.autoif.offline_dpo.output,
                "online_dpo": [model.output for _, _, model in self.autoif.online],
            },
            "prompt_evolution": None if self.evolution is None else {
                "prompts": self.evolution.output, "counts_path": self.evolution.path("counts.json"),
                "usage_path": self.evolution.path("usage.json")},
            "sft": None if not self.sft else {
                "actor": self.sft["actor"].output, "refiner": self.sft["refiner"].output,
                "teacher_data": None if self.teacher_data is None else {
                    "actor_data": self.teacher_data.output, "refiner_data": self.teacher_data.path("refiner.jsonl"),
                    "counts_path": self.teacher_data.path("counts.json"),
                    "usage_path": self.teacher_data.path("usage.json")}},
            "inference_scaling": [
                {"method": p.method, "budget": p.budget, "scores": p.scores.output,
                 "answers": p.answers.output if p.answers else None}
                for p in self.scaling
            ],
            "self_rewarding": [
                {"iteration": it.iteration, "judge_counts": it.judged.path("counts.json"),
                 "pair_counts": it.pairs.path("counts.json"), "model": it.model.output}
                for it in self.self_rewarding
            ],
            "meta_rewarding": [
                {"iteration": it.iteration, "judge_counts": it.judged.path("counts.json"),
                 "verdict_counts": it.verdicts.path("counts.json") if it.verdicts else None,
                 "pair_counts": it.pairs.path("counts.json"), "model": it.model.output}
                for it in self.meta_rewarding
            ],
            "spar_iterations": [
                {"iteration": it.iteration, "counts": it.data.path("counts.json"),
                 "actor_out": it.actor.output, "refiner_out": it.refiner.output}
                for it in self.spar
            ],
        }


def experiment_dir(name: str) -> Path:
    return Path(RESULTS) / "experiments" / name
