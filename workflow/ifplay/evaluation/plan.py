"""The evaluations' part of the stage plan: every model on every enabled benchmark
(:data:`ifplay.evaluation.benchmarks.BENCHMARKS`), and the inference-time scaling sweep (functions
of the :class:`ifplay.plan.Plan` being built, ``plan``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ifplay.core.config import ConfigError
from ifplay.core.stages import Stage
from ifplay.evaluation.benchmarks import BENCHMARKS
from ifplay.spar.plan import refiner_judge, spar_template


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


def add_benchmark(plan, name: str, cfg: dict) -> None:
    """Every model of the experiment answers the benchmark's prompts (the first ``limit``) as the
    benchmark says (:data:`ifplay.evaluation.benchmarks.BENCHMARKS`); its judge, if it has one,
    judges the answers and its scorer scores them. ``cfg``: config ``eval.benchmarks.<name>``."""
    if name not in BENCHMARKS:
        raise ConfigError(f"eval.benchmarks.{name}: no such benchmark (declared: {', '.join(BENCHMARKS)})")
    spec = BENCHMARKS[name]
    if spec.prompt_stage == "followbench_prompts":
        prompts = plan.add(followbench_prompts(plan, cfg))
        generation = {"max_new_tokens": cfg["max_new_tokens"], "max_prompt_tokens": cfg["max_prompt_tokens"]}
    else:
        prompts = plan.add(plan.prompt_set(spec.prompts, cfg["limit"]))
        generation = {}
    judge = followbench_judge(plan, cfg) if spec.judge else None
    for model_label, iteration, model in plan.models:
        responses = plan.add(plan.eval_responses(model, prompts, **generation))
        inputs = {"prompts": prompts, "responses": responses}
        config = {}
        if judge is not None:
            config = {"judge": judge.name}
            if judge.config is not None:
                inputs["judged"] = plan.add(Stage(spec.judge, {"judge": judge.config},
                                                  {**inputs, **({"judge": judge.model} if judge.model else {})},
                                                  runtime=judge.runtime))
        scores = plan.add(Stage(spec.scorer, config, inputs))
        plan.evaluations.append(Evaluation(name, model_label, iteration, scores))


def followbench_prompts(plan, cfg: dict) -> Stage:
    """FollowBench's items (``data.followbench``, the first ``limit`` groups of each category), their
    prompts counted in tokens by the base model's tokenizer (:mod:`ifplay.evaluation.followbench`)."""
    from ifplay.evaluation.followbench import data_origin

    source = plan.config["data"]["followbench"]
    return Stage("followbench_prompts", {"origin": data_origin(source), "limit": cfg["limit"],
                                         "max_prompt_tokens": cfg["max_prompt_tokens"]},
                 {"model": plan.base}, runtime={"source": source, "config_key": "data.followbench"})


@dataclass
class BenchmarkJudge:
    """A benchmark's judge: ``name`` (its column in the table), its hashed ``config`` (None: no judge,
    only rule-checked items are scored), its checkpoint stage (None for a served model), its runtime."""

    name: str
    config: dict | None
    model: Stage | None
    runtime: dict


def followbench_judge(plan, cfg: dict) -> BenchmarkJudge:
    """``eval.benchmarks.followbench.judge``: like the teacher, any model on any backend (model null =
    the base model on backend.name; a checkpoint or hub id; or a served model's name with backend
    openai)."""
    judge = cfg["judge"]
    if not judge["enabled"]:
        return BenchmarkJudge("none", None, None, {})
    backend = plan.backend(judge["backend"])
    runtime = {**plan.backend_runtime(), "max_prompt_tokens": cfg["max_prompt_tokens"],
               "backend_options": plan.backend_options(backend["name"])}
    config = {"backend": backend, "model": None, "max_new_tokens": judge["max_new_tokens"]}
    if judge["model"] is None:
        return BenchmarkJudge(plan.base_label(), config, plan.base, runtime)
    if backend["name"] == "openai":
        return BenchmarkJudge(judge["model"], {**config, "model": judge["model"]}, None, runtime)
    from ifplay.core import sources

    model = plan.other_model(judge["model"], "eval.benchmarks.followbench.judge.model")
    return BenchmarkJudge(sources.model_label(judge["model"]), config, model, runtime)


@dataclass
class LLMBarEvaluation:
    """One judge scored on LLMBar: rows of ``tables/llmbar.csv`` and ``llmbar_votes.csv``; ``iteration``
    is None for a judge named in ``eval.llmbar.judges``."""

    judge: str
    iteration: int | None
    scores: Stage


def add_llmbar(plan) -> None:
    """The base model (when SFT makes R_0), every judge of the experiment (``plan.judges``: SPaR's
    refiners R_0 .. R_T, the baselines' self-judging models) and every judge of ``eval.llmbar.judges``
    judge LLMBar's items with SPaR's judge template and sampling (:mod:`ifplay.evaluation.llmbar`)."""
    from ifplay.core import sources
    from ifplay.scoring.llmbar import data_fingerprint

    cfg = plan.config["eval"]["llmbar"]
    directory = sources.local_dir(plan.config["data"]["llmbar"], "data.llmbar")
    items = plan.add(Stage("llmbar_items", {"origin": data_fingerprint(directory), "limit": cfg["limit"]},
                           runtime={"source": str(directory)}))
    spar_judge = plan.config["spar"]["judge"]
    template, template_path = spar_template(plan, "judge")
    judge = {"template": template, "votes": max([*cfg["votes"], spar_judge["votes"]]),
             "temperature": spar_judge["temperature"], "top_p": spar_judge["top_p"],
             "max_new_tokens": spar_judge["max_new_tokens"], "model": None}
    scores_config = {"votes": sorted(set(cfg["votes"])), "main": spar_judge["votes"]}

    def evaluate(label: str, iteration: int | None, refiner: Stage | None, backend: dict, model: str | None) -> None:
        runtime = {**plan.backend_runtime(), "backend_options": plan.backend_options(backend["name"]),
                   "judge_template": template_path}
        inputs = {"pointwise": items, **({"refiner": refiner} if refiner is not None else {})}
        judged = plan.add(Stage("llmbar_judgements", {"judge": {**judge, "model": model}, "backend": backend,
                                                      "seed": plan.config["seed"]}, inputs, runtime=runtime))
        scores = plan.add(Stage("llmbar_scores", scores_config, {"pointwise": items, "judged": judged}))
        plan.llmbar.append(LLMBarEvaluation(label, iteration, scores))

    refiners = list(plan.judges)
    if "refiner" in plan.sft and not any(stage.key == plan.base.key for _, _, stage in refiners):  # R_0 is the SFT model: the base model before it is Table 2's first SPaR row
        refiners.insert(0, (plan.base_label(), 0, plan.base))
    for label, iteration, refiner in refiners:
        evaluate(label, iteration, refiner, plan.backend(), None)
    for i, named in enumerate(cfg["judges"]):
        backend = plan.backend(named["backend"])
        if backend["name"] == "openai":
            evaluate(named["model"], None, None, backend, named["model"])
        else:
            model = plan.other_model(named["model"], f"eval.llmbar.judges[{i}].model")
            evaluate(sources.model_label(named["model"]), None, model, backend, None)


@dataclass
class RefinementEvaluation:
    """One (refiner, strategy, budget) judged by one judge: a row of ``tables/refinement.csv``."""

    refiner: str
    iteration: int
    strategy: str
    budget: int
    judge: str
    scores: Stage


def add_refinement(plan) -> None:
    """Refinement accuracy (:mod:`ifplay.evaluation.refinement`): tasks from R_0's judgements of the
    held-out answers (its ``judge_eval`` stage); every refiner refines them with every strategy and
    budget of ``eval.refinement.strategies``; the final refiner (Acc-SPaR), the verifier oracle and
    every judge of ``eval.refinement.judges`` (Acc-GPT) judge."""
    from ifplay.core import sources
    from ifplay.evaluation.refinement import strategy_search

    cfg = plan.config["eval"]["refinement"]
    first = plan.judge_evaluations[0].metrics  # R_0 judging the base model's held-out answers
    tasks = plan.add(Stage("refinement_tasks", {"limit": cfg["limit"], "require_oracle_failure": cfg["require_oracle_failure"]},
                           {"prompts": first.inputs["prompts"], "judged": first, "oracle": first},
                           files={"judged": "judged.jsonl", "oracle": "per_item.jsonl"}))
    backend, seed = plan.backend(), plan.config["seed"]
    runtime = plan.backend_runtime()
    judge, judge_path = refiner_judge(plan)
    search = {**plan.config["spar"]["search"], **cfg["search"]}
    search.pop("budget")
    search["template"], refine_path = spar_template(plan, "search")
    final_label, _, final = plan.refiners[-1]
    judges = {final_label: ({"judge": judge, "backend": backend, "seed": seed}, {"refiner": final},
                            {**runtime, **judge_path}),
              "oracle": ({"judge": {"kind": "verifier"}, "backend": backend, "seed": seed}, {}, {**runtime, **judge_path})}
    for i, named in enumerate(cfg["judges"]):  # Acc-GPT: a served model by name, or a checkpoint
        named_backend = plan.backend(named["backend"])
        named_runtime = {**runtime, **judge_path, "backend_options": plan.backend_options(named_backend["name"])}
        if named_backend["name"] == "openai":
            judges[named["model"]] = ({"judge": {**judge, "model": named["model"]}, "backend": named_backend,
                                       "seed": seed}, {}, named_runtime)
        else:
            model = plan.other_model(named["model"], f"eval.refinement.judges[{i}].model")
            judges[sources.model_label(named["model"])] = (
                {"judge": judge, "backend": named_backend, "seed": seed}, {"refiner": model}, named_runtime)
    for label, iteration, refiner in plan.refiners:
        for strategy, budgets in cfg["strategies"].items():
            for budget in budgets:
                refined = plan.add(Stage("refinements", {"strategy": strategy, "budget": budget,
                                                         "search": strategy_search(strategy, budget, search),
                                                         "judge": judge, "backend": backend, "seed": seed},
                                         {"tasks": tasks, "prompts": tasks, "refiner": refiner},
                                         files={"prompts": "prompts.jsonl"},
                                         runtime={**runtime, **judge_path, "refine_template": refine_path}))
                for name, (config, refiner_input, judge_runtime) in judges.items():
                    judged = plan.add(Stage("judgements", config, {"samples": refined, "prompts": tasks, **refiner_input},
                                            files={"prompts": "prompts.jsonl"}, runtime=judge_runtime))
                    scores = plan.add(Stage("refinement_scores", {}, {"refined": refined, "judged": judged}))
                    plan.refinement.append(RefinementEvaluation(label, iteration, strategy, budget, name, scores))


def add_inference_scaling(plan, actor: Stage, refiner: Stage) -> None:
    """Greedy, best-of-N and tree-search decoding of the first ``limit`` IFEval prompts by
    ``actor`` with ``refiner`` judging, at each budget (:mod:`ifplay.evaluation.inference_scaling`)."""
    cfg = plan.config["eval"]["inference_scaling"]
    backend = plan.backend()
    seed = plan.config["seed"]
    runtime = plan.backend_runtime()
    judge, judge_path = refiner_judge(plan)
    prompts = plan.add(plan.prompt_set("ifeval", cfg["limit"]))

    def scores(responses: Stage) -> Stage:
        return plan.add(Stage("ifeval_scores", {}, {"prompts": prompts, "responses": responses}))

    def judged(samples: Stage) -> Stage:
        return plan.add(Stage("judgements", {"judge": judge, "backend": backend, "seed": seed},
                              {"samples": samples, "prompts": prompts, "refiner": refiner},
                              runtime={**runtime, **judge_path}))

    greedy = plan.add(plan.eval_responses(actor, prompts))
    plan.scaling.append(ScalingPoint("greedy", 1, scores(greedy), None))
    budgets = sorted(cfg["budgets"])
    if "best_of_n" in cfg["methods"]:
        samples = plan.samples(actor, prompts, {"k": budgets[-1], **cfg["sampling"]})
        judged_samples = judged(samples)
        for budget in budgets:
            answers = plan.add(Stage("scaling_best_of_n", {"budget": budget}, {"judged": judged_samples}))
            plan.scaling.append(ScalingPoint("best_of_n", budget, scores(answers), answers))
    if "tree_search" in cfg["methods"]:
        search = {**plan.config["spar"]["search"], **cfg["search"]}
        search.pop("budget")
        search["template"], refine_path = spar_template(plan, "search")
        judged_greedy = judged(greedy)
        for budget in budgets:
            answers = plan.add(Stage("scaling_search", {"budget": budget, "search": search, "judge": judge,
                                                        "backend": backend, "seed": seed},
                                     {"judged": judged_greedy, "prompts": prompts, "refiner": refiner},
                                     runtime={**runtime, **judge_path, "refine_template": refine_path}))
            plan.scaling.append(ScalingPoint("tree_search", budget, scores(answers), answers))


@dataclass
class GeneralEvaluation:
    """One model on ``eval.general``'s lm-eval tasks: rows of ``tables/general.csv``."""

    model: str
    iteration: int
    scores: Stage


def add_general(plan) -> None:
    """Every model of the experiment (``plan.models``) runs ``eval.general.tasks`` through lm-eval
    (:mod:`ifplay.evaluation.general`), one ``general_eval`` stage per model. A task's local files
    (its ``data`` key: a ``data.*`` directory or file) are hashed by content, so moving them re-runs nothing."""
    from ifplay.core import sources
    from ifplay.evaluation.general import local_data_files

    cfg = plan.config["eval"]["general"]
    tasks, data_files = [], {}
    for i, task in enumerate(cfg["tasks"]):
        key = f"eval.general.tasks[{i}]"
        if task["data"] and task["data"] not in plan.config["data"]:
            raise ConfigError(f"{key}.data: no config key data.{task['data']} (data has {', '.join(plan.config['data'])})")
        source = plan.config["data"][task["data"]] if task["data"] else None
        files = None if source is None else local_data_files(task["name"], source, f"data.{task['data']}")
        if task["name"] in data_files:
            raise ConfigError(f"{key}.name: {task['name']} is listed twice")
        data_files[task["name"]] = files
        fingerprint = None if files is None else {"files": {split: sources.file_sha256(Path(path))
                                                            for split, path in sorted(files.items())}}
        tasks.append({"name": task["name"], "shots": task["shots"], "limit": task["limit"],
                      "metric": task["metric"], "data": fingerprint})
    backend = plan.backend()
    runtime = {"batch_size": plan.config["backend"]["batch_size"],
               "backend_options": plan.backend_options(backend["name"]), "data_files": data_files}
    config = {"tasks": tasks, "backend": backend, "seed": plan.config["seed"],
              "max_gen_toks": cfg["max_gen_toks"], "chat_template": cfg["chat_template"],
              "endpoint": cfg["endpoint"] if backend["name"] == "openai" else None}  # keyed where it is used
    for label, iteration, model in plan.models:
        scores = plan.add(Stage("general_eval", config, {"model": model}, runtime=runtime))
        plan.general.append(GeneralEvaluation(label, iteration, scores))
