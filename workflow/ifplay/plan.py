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

import json
from dataclasses import dataclass
from pathlib import Path

from ifplay.core import sources
from ifplay.core.config import ConfigError
from ifplay.core.stages import RESULTS, STAGES, Stage, short_hash  # noqa: F401 - re-exported for callers
from ifplay.evaluation.benchmarks import BENCHMARKS

# Stages whose counts.json goes into the manifest and tables/autoif_counts.csv, in pipeline order.
AUTOIF_FILTERS = ("autoif_instructions", "autoif_verifiers", "autoif_crossval", "autoif_backtrans",
                  "autoif_queries", "autoif_verified", "autoif_scored", "autoif_data", "autoif_online_pairs")

#: Greedy decoding of the evaluations (the seed cannot change a greedy answer: fixed, so that the
#: experiment's seed does not re-run them).
GREEDY = {"n": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0}


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
class AutoIFRun:
    """The stages of one AutoIF configuration: the data pipeline, then SFT, offline and online DPO."""

    filters: list[Stage]  # the stages with counts.json, in pipeline order
    data: Stage  # autoif_data: D_train's SFT data, offline pairs and the queries with their functions
    sft: Stage
    offline_dpo: Stage | None
    online: list[tuple[Stage, Stage, Stage]]  # (samples, pairs, DPO model) per online iteration


@dataclass
class ScalingPoint:
    """One decoding strategy at one budget, scored on IFEval: a row of ``tables/inference_scaling.csv``.
    ``answers``: the stage whose responses carry ``generations`` (None for greedy decoding)."""

    method: str
    budget: int
    scores: Stage
    answers: Stage | None


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
        self.autoif: AutoIFRun | None = None
        self.scaling: list[ScalingPoint] = []
        self.evolution: Stage | None = None  # the teacher's evolved prompts (SPaR's pool when evolved)
        self.teacher_data: Stage | None = None  # the teacher's SFT data for M_0 and R_0

        base = self.base = self.add(self._base_model_stage())
        label = self._base_label()
        self.models.append((label, 0, base))
        actor = refiner = base  # M_0 and R_0: the base model, or its SFT
        if config["sft"]["enabled"]:
            actor, refiner = self._add_sft(base)
            self.models.append((f"{label}-SFT", 0, actor))
        if config["autoif"]["enabled"]:
            self._add_autoif(base)
        if config["spar"]["enabled"]:
            self._add_spar(base, actor, refiner)
        if config["eval"]["inference_scaling"]["enabled"]:
            final_refiner = self.spar[-1].refiner if self.spar else refiner
            self._add_inference_scaling(self.models[-1][2], final_refiner)

        for name, bench in config["eval"]["benchmarks"].items():
            if bench["enabled"]:
                self._add_benchmark(name, bench["limit"])

    # -- construction helpers -------------------------------------------------------------
    def add(self, stage: Stage) -> Stage:
        return self.stages.setdefault(stage.key, stage)

    def backend_runtime(self) -> dict:
        """Runtime settings of the generating stages (not hashed): batch size, prompt cap and the
        chosen backend's own settings (``backend.vllm`` / ``backend.openai``) as a JSON object."""
        backend = self.config["backend"]
        return {"batch_size": backend["batch_size"], "max_prompt_tokens": backend["max_prompt_tokens"],
                "backend_options": self._backend_options(backend["name"])}

    def _eval_responses(self, model: Stage, prompts: Stage) -> Stage:
        """Greedy responses of ``model`` to ``prompts`` (the evaluation decoding)."""
        return Stage(
            "generate",
            {"backend": self.config["backend"]["name"],
             "sampling": {**GREEDY, "max_new_tokens": self.config["eval"]["max_new_tokens"]}},
            {"model": model, "prompts": prompts},
            runtime=self.backend_runtime(),
        )

    def _samples(self, model: Stage, prompts: Stage, sampling: dict, files: dict | None = None) -> Stage:
        """``sampling["k"]`` samples per prompt of ``model`` (self-play, best-of-N, online DPO), seeded by
        the experiment's seed."""
        settings = {key: value for key, value in sampling.items() if key != "k"}
        return self.add(Stage("generate", {"backend": self.config["backend"]["name"],
                                           "sampling": {"n": sampling["k"], **settings, "seed": self.config["seed"]}},
                              {"model": model, "prompts": prompts}, runtime=self.backend_runtime(), files=files or {}))

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

    def _add_benchmark(self, name: str, limit: int | None) -> None:
        """Every model of the experiment answers the benchmark's first ``limit`` prompts as the
        benchmark says (:data:`ifplay.evaluation.benchmarks.BENCHMARKS`); its scorer scores them."""
        if name not in BENCHMARKS:
            raise ConfigError(f"eval.benchmarks.{name}: no such benchmark (declared: {', '.join(BENCHMARKS)})")
        spec = BENCHMARKS[name]
        prompts = self.add(self._prompt_set(spec.prompts, limit))
        for model_label, iteration, model in self.models:
            responses = self.add(self._eval_responses(model, prompts))
            scores = self.add(Stage(spec.scorer, {}, {"prompts": prompts, "responses": responses}))
            self.evaluations.append(Evaluation(name, model_label, iteration, scores))

    def _prompt_set(self, data_key: str, limit: int | None) -> Stage:
        source = self.config["data"][data_key]
        origin = sources.prompt_origin(source, config_key=f"data.{data_key}")
        return Stage("prompts", {"origin": origin.fingerprint, "limit": limit}, runtime={"source": source})

    def _local_file(self, path: str, config_key: str) -> tuple[dict, str]:
        """A file's content fingerprint (hashed) and its resolved path (runtime)."""
        resolved = sources.local_file(path, config_key)
        return {"sha256": sources.file_sha256(resolved)}, str(resolved)

    def _add_sft(self, base: Stage) -> tuple[Stage, Stage]:
        """M_0 = SFT(base) on the actor data, R_0 = SFT(base) on the refiner data: the teacher's
        (``sft.data_source: teacher``, :meth:`_teacher_sft_data`) or given files (``files``:
        ``sft.actor_data``; R_0 = M_0 when ``sft.refiner_data`` is null)."""
        sft = self.config["sft"]

        def on_file(data_key: str) -> Stage:
            data, path = self._local_file(sft[data_key], f"sft.{data_key}")
            return self.add(Stage("sft", {"settings": sft["training"], "data": data, "seed": self.config["seed"]},
                                  {"model": base}, runtime={"data": path}))

        if sft["data_source"] == "teacher":
            self.teacher_data = data = self._teacher_sft_data(base)
            actor, refiner = (self._fine_tune("sft", sft["training"], base, data, name)
                              for name in ("actor.jsonl", "refiner.jsonl"))
        else:
            actor = on_file("actor_data")
            refiner = on_file("refiner_data") if sft["refiner_data"] else actor
        self.sft = {"actor": actor, "refiner": refiner}
        return actor, refiner

    def _fine_tune(self, kind: str, settings: dict, model: Stage, data: Stage, file: str | None = None) -> Stage:
        """``kind`` (``sft`` or ``dpo``) of ``model`` on ``data``'s main output or its ``file``."""
        config = {"settings": settings, "seed": self.config["seed"]}
        if kind == "sft":
            config["data"] = {"file": file or data.spec.main}
        return self.add(Stage(kind, config, {"model": model, "data": data}, files={"data": file} if file else {}))

    def _teacher_sft_data(self, base: Stage) -> Stage:
        """The teacher's SFT data (:mod:`ifplay.spar.teacher_data`): its answers to the evolved prompts, and
        its judgements and refinements of the student's (``base``'s) samples, in SPaR's formats."""
        cfg = dict(self.config["sft"]["teacher_data"])
        seed = self.config["seed"]
        self.evolution = evolution = self._evolved_prompts()
        student_prompts = self.add(Stage("prompt_subset", {"limit": cfg.pop("refiner_prompts")}, {"prompts": evolution}))
        samples = self._samples(base, student_prompts, cfg.pop("student"))
        judge_template, judge_path = self._spar_template("judge")
        refine_template, refine_path = self._spar_template("search")
        cfg["judge"] = {**cfg["judge"], "template": judge_template}
        cfg["refine"] = {**cfg["refine"], "template": refine_template,
                         "output_format": self.config["spar"]["search"]["output_format"]}
        teacher, model, runtime = self._teacher()
        inputs = {"prompts": evolution, "samples": samples, **({"teacher": model} if model is not None else {})}
        return self.add(Stage("teacher_sft_data", {**cfg, "teacher": teacher, "seed": seed}, inputs,
                              runtime={**runtime, "judge_template": judge_path, "refine_template": refine_path}))

    def _spar_template(self, section: str) -> tuple[dict, str]:
        """SPaR's judge (``spar.judge``) or refine (``spar.search``) template: its content hash and its path."""
        return self._local_file(self.config["spar"][section]["template"], f"spar.{section}.template")

    def _add_spar(self, base: Stage, actor: Stage, refiner: Stage) -> None:
        """SPaR iterations from M_0 = ``actor`` and R_0 = ``refiner``: M_{t+1} = DPO(M_t) on refined
        pairs, R_{t+1} = RFT(R_t); each R_t is also scored as a judge on ``base``'s held-out answers.
        The prompt pool is ``data.train_prompts`` or, with ``spar.prompt_source: autoif``, the AutoIF
        pipeline's queries with their verification functions (which the verifier judge runs)."""
        spar = self.config["spar"]
        backend = self.config["backend"]["name"]
        runtime = self.backend_runtime()
        autoif_pool = spar["prompt_source"] == "autoif"
        if spar["prompt_source"] == "evolved":
            self.evolution = self._evolved_prompts()
            pool = self.add(Stage("prompt_subset", {"limit": spar["prompt_limit"]}, {"prompts": self.evolution}))
        elif autoif_pool:
            if self.autoif is None:
                raise ConfigError("spar.prompt_source: 'autoif' takes SPaR's prompts from the AutoIF pipeline's "
                                  "queries, so it needs autoif.enabled: true (or set spar.prompt_source: "
                                  "train_prompts)")
            pool = self.add(Stage("autoif_prompts", {"limit": spar["prompt_limit"]}, {"queries": self.autoif.data},
                                  files={"queries": "queries.jsonl"}))
        else:
            pool = self.add(self._prompt_set("train_prompts", spar["prompt_limit"]))
        judge = dict(spar["judge"])
        del judge["template"]
        judge_template, judge_path = self._spar_template("judge")
        # the refiner as a judge always judges as the model judge does, whoever judges in training
        judge_eval, _ = self._refiner_judge()
        search = dict(spar["search"])
        del search["template"]
        refine_template, refine_path = self._spar_template("search")
        if judge["kind"] == "verifier":  # the oracle reads no model and no sampling settings
            judge = {"kind": "verifier"}
            if autoif_pool:  # it runs the queries' functions in the sandbox, with AutoIF's limits
                judge["sandbox"] = self.config["autoif"]["sandbox"]
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
            samples = self._samples(actor, pool, spar["sampling"])
            judge_inputs = {"samples": samples, "prompts": pool}
            if judge["kind"] == "model":
                judge_inputs["refiner"] = refiner
            judged = self.add(Stage("judgements", {"judge": judge, "backend": backend, "seed": self.config["seed"]},
                                    judge_inputs, runtime={**runtime, **templates}))
            trees = self.add(Stage("tree_search", {"judge": judge, "search": search, "backend": backend,
                                                  "negatives_per_prompt": spar["negatives_per_prompt"],
                                                  "seed": self.config["seed"]},
                                   {"judged": judged, "prompts": pool, "refiner": refiner},
                                   runtime={**runtime, **templates}))
            data = self.add(Stage("spar_data", {"rft_mix": spar["rft_mix"], "judge_template": judge_template,
                                                "refine_template": refine_template, "seed": self.config["seed"]},
                                  {"judged": judged, "trees": trees}, runtime=templates))
            actor = self._fine_tune("dpo", spar["actor_dpo"], actor, data)
            refiner = self._fine_tune("sft", spar["refiner_rft"], refiner, data, "rft.jsonl")
            self.spar.append(SparIteration(t, samples, judged, trees, data, actor, refiner))
            self.models.append((f"{label}-SPaR-DPO", t + 1, actor))
            score_judge(f"{label}-SPaR-RFT", t + 1, refiner)

    def _backend_options(self, name: str) -> str:
        """The settings of backend ``name`` (``backend.vllm`` / ``backend.openai``) as JSON."""
        return json.dumps(self.config["backend"].get(name, {}), sort_keys=True)

    def _other_model(self, source: str, config_key: str) -> Stage:
        """A model besides the base one (AutoIF's supervisor, the teacher) as a ``base_model`` stage."""
        origin = sources.model_origin(source, "main", config_key=config_key)
        return self.add(Stage("base_model", {"origin": origin.fingerprint, "dtype": self.config["model"]["dtype"]},
                              runtime={"source": source, "revision": "main"}))

    def _teacher(self) -> tuple[dict, Stage | None, dict]:
        """The teacher (``teacher``): its hashed identity, its checkpoint stage (None for a model served
        over HTTP under its own name) and its runtime settings (backend, options, batch sizes)."""
        teacher = self.config["teacher"]
        backend = teacher["backend"] or self.config["backend"]["name"]
        runtime = {**self.backend_runtime(), "backend": backend, "backend_options": self._backend_options(backend)}
        if teacher["model"] is None:
            return {"backend": backend, "model": None}, self.base, runtime
        if backend == "openai":
            return {"backend": backend, "model": teacher["model"]}, None, {**runtime, "model": teacher["model"]}
        return {"backend": backend, "model": None}, self._other_model(teacher["model"], "teacher.model"), runtime

    def _evolved_prompts(self) -> Stage:
        """The teacher's evolution of ``prompt_evolution.seeds`` (:mod:`ifplay.spar.evolution`)."""
        cfg = dict(self.config["prompt_evolution"])
        source = cfg.pop("seeds")
        cfg["seeds"] = sources.prompt_origin(source, config_key="prompt_evolution.seeds").fingerprint
        cfg["template"], template = self._local_file(cfg["template"], "prompt_evolution.template")
        teacher, model, runtime = self._teacher()
        inputs = {"teacher": model} if model is not None else {}
        return self.add(Stage("evolved_prompts", {"evolution": cfg, "teacher": teacher, "seed": self.config["seed"]},
                              inputs, runtime={**runtime, "source": source, "template": template}))

    def _refiner_judge(self) -> tuple[dict, dict]:
        """The refiner judging as the model judge with ``spar.judge``'s settings (whatever judges in
        training): its hashed config and the template's path (runtime)."""
        judge = dict(self.config["spar"]["judge"])
        judge["template"], path = self._spar_template("judge")
        return {**judge, "kind": "model"}, {"judge_template": path}

    def _add_inference_scaling(self, actor: Stage, refiner: Stage) -> None:
        """Greedy, best-of-N and tree-search decoding of the first ``limit`` IFEval prompts by
        ``actor`` with ``refiner`` judging, at each budget (:mod:`ifplay.evaluation.inference_scaling`)."""
        cfg = self.config["eval"]["inference_scaling"]
        backend = self.config["backend"]["name"]
        seed = self.config["seed"]
        runtime = self.backend_runtime()
        judge, judge_path = self._refiner_judge()
        prompts = self.add(self._prompt_set("ifeval", cfg["limit"]))

        def scores(responses: Stage) -> Stage:
            return self.add(Stage("ifeval_scores", {}, {"prompts": prompts, "responses": responses}))

        def judged(samples: Stage) -> Stage:
            return self.add(Stage("judgements", {"judge": judge, "backend": backend, "seed": seed},
                                  {"samples": samples, "prompts": prompts, "refiner": refiner},
                                  runtime={**runtime, **judge_path}))

        greedy = self.add(self._eval_responses(actor, prompts))
        self.scaling.append(ScalingPoint("greedy", 1, scores(greedy), None))
        budgets = sorted(cfg["budgets"])
        if "best_of_n" in cfg["methods"]:
            samples = self._samples(actor, prompts, {"k": budgets[-1], **cfg["sampling"]})
            judged_samples = judged(samples)
            for budget in budgets:
                answers = self.add(Stage("scaling_best_of_n", {"budget": budget}, {"judged": judged_samples}))
                self.scaling.append(ScalingPoint("best_of_n", budget, scores(answers), answers))
        if "tree_search" in cfg["methods"]:
            search = {**self.config["spar"]["search"], **cfg["search"]}
            search.pop("budget")
            search["template"], refine_path = self._spar_template("search")
            judged_greedy = judged(greedy)
            for budget in budgets:
                answers = self.add(Stage("scaling_search", {"budget": budget, "search": search, "judge": judge,
                                                            "backend": backend, "seed": seed},
                                         {"judged": judged_greedy, "prompts": prompts, "refiner": refiner},
                                         runtime={**runtime, **judge_path, "refine_template": refine_path}))
                self.scaling.append(ScalingPoint("tree_search", budget, scores(answers), answers))

    def _add_autoif(self, base: Stage) -> None:
        """AutoIF's data pipeline with the supervisor (``autoif.supervisor`` or the base model), then
        SFT(base) on D_train, offline DPO of the SFT model, and online DPO iterations from it."""
        cfg = self.config["autoif"]
        backend = self.config["backend"]["name"]
        seed = self.config["seed"]
        runtime = self.backend_runtime()
        label = self._base_label()
        supervisor = self._other_model(cfg["supervisor"], "autoif.supervisor") if cfg["supervisor"] else base

        def templated(section: dict, key: str, *names: str) -> tuple[dict, dict]:
            """A config section with each template path replaced by its content hash (paths -> runtime)."""
            hashed, paths = dict(section), {}
            for name in names:
                hashed[name], paths[name] = self._local_file(section[name], f"autoif.{key}.{name}")
            return hashed, paths

        def model_stage(kind: str, settings: dict, inputs: dict, paths: dict | None = None) -> Stage:
            return self.add(Stage(kind, {**settings, "backend": backend, "seed": seed},
                                  {"model": supervisor, **inputs}, runtime={**runtime, **(paths or {})}))

        seeds_path = (sources.local_file(cfg["seeds"], "autoif.seeds") if cfg["seeds"] != "builtin:autoif"
                      else None)
        from ifplay.autoif.stages import BUILTIN_SEEDS  # noqa: PLC0415 - keeps plan import light

        seeds_path = seeds_path or BUILTIN_SEEDS
        seeds = {"sha256": sources.file_sha256(seeds_path), "limit": cfg["seed_limit"]}
        filters = []
        if cfg["augment"]["enabled"]:
            augment, paths = templated(cfg["augment"], "augment", "template")
            instructions = model_stage("autoif_instructions", {"seeds": seeds, "augment": augment}, {},
                                       {**paths, "seeds": str(seeds_path), "seed_limit": cfg["seed_limit"] or 0})
        else:
            instructions = self.add(Stage("autoif_instructions", {"seeds": seeds, "augment": None},  # no model
                                          runtime={"seeds": str(seeds_path), "seed_limit": cfg["seed_limit"] or 0}))
        filters.append(instructions)
        verifiers_cfg, paths = templated(cfg["verifiers"], "verifiers",
                                         *(("template", "examples") if cfg["verifiers"]["examples"] else ("template",)))
        verifiers = model_stage("autoif_verifiers", {"verifiers": verifiers_cfg}, {"instructions": instructions}, paths)
        crossval = self.add(Stage("autoif_crossval", {"cross_validation": cfg["cross_validation"],
                                                      "sandbox": cfg["sandbox"]}, {"verifiers": verifiers}))
        filters += [verifiers, crossval]
        kept = crossval
        if cfg["back_translation"]["enabled"]:
            bt = dict(cfg["back_translation"])
            names = ("template", "nli_template") if bt["nli"] == "llm" else ("template",)
            bt, paths = templated(bt, "back_translation", *names)
            if bt["nli"] == "classifier":
                if not bt["nli_model"]:
                    raise ConfigError("autoif.back_translation.nli_model: the classifier NLI needs a model "
                                      "(or set autoif.back_translation.nli: llm)")
                bt.pop("nli_template")
                bt["nli_model"], paths["nli_model"] = self._nli_model(bt["nli_model"])
            else:
                bt.pop("nli_model")
            kept = model_stage("autoif_backtrans", {"back_translation": bt}, {"instructions": crossval}, paths)
            filters.append(kept)
        queries_cfg, paths = templated(cfg["queries"], "queries", "template")
        source = queries_cfg.pop("source")
        if source != "builtin:autoif":
            paths["source"] = str(sources.local_file(source, "autoif.queries.source"))
            queries_cfg["source"] = {"sha256": sources.file_sha256(Path(paths["source"]))}
        else:
            paths["source"] = source
            queries_cfg["source"] = source
        queries = self.add(Stage("autoif_queries", {"queries": queries_cfg, "seed": seed}, {"instructions": kept},
                                 runtime=paths))
        responses = model_stage("autoif_responses", {"responses": cfg["responses"]}, {"queries": queries})
        verified = self.add(Stage("autoif_verified", {"rejection": cfg["rejection"], "sandbox": cfg["sandbox"]},
                                  {"responses": responses}))
        filters += [queries, verified]
        data_inputs = {"verified": verified}
        if cfg["quality"]["enabled"]:
            quality, paths = templated(cfg["quality"], "quality", "template")
            scored = model_stage("autoif_scored", {"quality": quality}, {"verified": verified}, paths)
            filters.append(scored)
            data_inputs["scored"] = scored
        data = self.add(Stage("autoif_data", {"pairs": cfg["pairs"], "seed": seed}, data_inputs))
        filters.append(data)

        sft = self._fine_tune("sft", cfg["sft"], base, data, "sft.jsonl")
        self.models.append((f"{label}-AutoIF-SFT", 0, sft))
        offline = self._fine_tune("dpo", cfg["offline_dpo"], sft, data)
        self.models.append((f"{label}-AutoIF-Offline-DPO", 1, offline))
        online, policy = [], sft
        online_cfg = dict(cfg["online_dpo"])
        training = online_cfg.pop("training")
        iterations = online_cfg.pop("iterations")
        for t in range(iterations):
            samples = self._samples(policy, data, online_cfg, files={"prompts": "queries.jsonl"})
            pairs = self.add(Stage("autoif_online_pairs", {"pairs": cfg["pairs"], "sandbox": cfg["sandbox"], "seed": seed},
                                   {"queries": data, "samples": samples}, files={"queries": "queries.jsonl"}))
            policy = self._fine_tune("dpo", training, policy, pairs)
            online.append((samples, pairs, policy))
            filters.append(pairs)
            self.models.append((f"{label}-AutoIF-Online-DPO", t + 1, policy))
        self.autoif = AutoIFRun(filters, data, sft, offline, online)

    def _nli_model(self, path: str) -> tuple[dict, str]:
        """An NLI classifier directory: its config and weights' hashes (hashed) and its path (runtime)."""
        resolved = Path(path).expanduser()
        if not resolved.is_dir():
            raise ConfigError(f"autoif.back_translation.nli_model: {path}: no such model directory")
        files = sorted(p for p in resolved.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".model"))
        return {"files": {p.name: sources.file_sha256(p) for p in files}}, str(resolved)

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
                + [stage.path("counts.json") for stage in (self.autoif.filters if self.autoif else [])]
                + [stage.output for stage in self.training_runs().values()]
                + [point.scores.output for point in self.scaling]
                + [point.answers.output for point in self.scaling if point.answers]
                + [stage.path(name) for stage in (self.evolution, self.teacher_data) if stage
                   for name in ("counts.json", "usage.json")])

    def tables(self) -> list[str]:
        """The tables the experiment report writes (``tables/<name>.csv``)."""
        benchmarks = list(dict.fromkeys(e.benchmark for e in self.evaluations))
        return (benchmarks + (["spar_counts", "spar_pairs"] if self.spar else [])
                + (["judge"] if self.judge_evaluations else []) + (["autoif_counts"] if self.autoif else [])
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
        return runs

    def final_outputs(self) -> list[str]:
        return [f"{RESULTS}/experiments/{self.config['experiment']}/manifest.json", self.report_marker()]

    def report_key(self) -> str:
        """What the experiment's report shows, hashed: its stages, evaluations and labels, not the
        config's paths and runtime settings (moving data or a checkpoint changes no report)."""
        return short_hash({k: v for k, v in self.manifest().items() if k != "config"})

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
            "spar_iterations": [
                {"iteration": it.iteration, "counts": it.data.path("counts.json"),
                 "actor_out": it.actor.output, "refiner_out": it.refiner.output}
                for it in self.spar
            ],
        }


def experiment_dir(name: str) -> Path:
    return Path(RESULTS) / "experiments" / name
