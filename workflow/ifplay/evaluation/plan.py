"""The evaluations' part of the stage plan: every model on every enabled benchmark
(:data:`ifplay.evaluation.benchmarks.BENCHMARKS`), and the inference-time scaling sweep (functions
of the :class:`ifplay.plan.Plan` being built, ``plan``)."""

from __future__ import annotations

from dataclasses import dataclass

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


def add_benchmark(plan, name: str, limit: int | None) -> None:
    """Every model of the experiment answers the benchmark's first ``limit`` prompts as the
    benchmark says (:data:`ifplay.evaluation.benchmarks.BENCHMARKS`); its scorer scores them."""
    if name not in BENCHMARKS:
        raise ConfigError(f"eval.benchmarks.{name}: no such benchmark (declared: {', '.join(BENCHMARKS)})")
    spec = BENCHMARKS[name]
    prompts = plan.add(plan.prompt_set(spec.prompts, limit))
    for model_label, iteration, model in plan.models:
        responses = plan.add(plan.eval_responses(model, prompts))
        scores = plan.add(Stage(spec.scorer, {}, {"prompts": prompts, "responses": responses}))
        plan.evaluations.append(Evaluation(name, model_label, iteration, scores))


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
