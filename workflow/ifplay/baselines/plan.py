"""The baselines' part of the stage plan (docs/baselines.md): each method iterates from SPaR's M_0 on
SPaR's prompt pool, through the shared ``generate`` and ``dpo`` stages, so a study that runs several
methods computes every stage they agree on once (the same model, prompts and settings give the
same key).

Functions of the :class:`ifplay.plan.Plan` being built: they add stages with ``plan.add`` and record
the models the benchmarks score (``plan.models``) and the self-judging models the refiner tables
score (:func:`ifplay.spar.plan.judge_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ifplay.core.stages import Stage
from ifplay.spar.plan import judge_rows, prompt_pool


@dataclass
class MetaRewardingIteration:
    """The stages of Meta-Rewarding iteration t: M_t samples, judges and (``verdicts`` unless the
    iteration trains the actor only) meta-judges itself; M_{t+1} = DPO(M_t) on actor and judge pairs."""

    iteration: int
    samples: Stage
    judged: Stage
    verdicts: Stage | None
    pairs: Stage
    model: Stage


@dataclass
class SelfRewardingIteration:
    """The stages of Self-Rewarding iteration t: M_t samples and judges itself, M_{t+1} = DPO(M_t)."""

    iteration: int
    samples: Stage
    judged: Stage
    pairs: Stage
    model: Stage


def _self_judging(plan, section: str, base: Stage, actor: Stage):
    """What Self-Rewarding and Meta-Rewarding set up alike: the section's config, SPaR's prompt pool,
    the hashed rubric judge with its template path, and ``score_judge`` (M_0 already listed as a judge)."""
    cfg = plan.config[section]
    pool = prompt_pool(plan)
    judge = dict(cfg["judge"])
    judge["template"], template_path = plan.local_file(judge["template"], f"{section}.judge.template")
    score_judge = judge_rows(plan, base)
    label = plan.base_label()
    score_judge(label if actor is base else f"{label}-SFT", 0, actor)
    return cfg, pool, judge, template_path, score_judge


def _judged_samples(plan, model: Stage, pool: Stage, sampling: dict, judge: dict, template_path: str):
    """M_t's samples of the pool and its rubric judgements of them (one ``rubric_judgements`` stage
    for every method whose settings agree)."""
    samples = plan.samples(model, pool, sampling)
    judged = plan.add(Stage("rubric_judgements", {"judge": judge, "backend": plan.backend(), "seed": plan.config["seed"]},
                            {"samples": samples, "judge": model},
                            runtime={**plan.backend_runtime(), "rubric_template": template_path}))
    return samples, judged


def add_self_rewarding(plan, base: Stage, actor: Stage) -> None:
    """Self-Rewarding iterations from M_0 = ``actor`` (SPaR's M_0: the base model or its SFT):
    M_t samples ``self_rewarding.sampling``, scores each sample with the rubric
    (``rubric_judgements``), the best- against the worst-scored response of each prompt are DPO
    pairs (``self_rewarding_pairs``), M_{t+1} = DPO(M_t). Every M_t is a row of the benchmark tables
    (``<label>-Self-Rewarding``, iteration t) and, as the judge it is, of the refiner tables."""
    cfg, pool, judge, template_path, score_judge = _self_judging(plan, "self_rewarding", base, actor)
    row = f"{plan.base_label()}-Self-Rewarding"
    model = actor
    for t in range(cfg["iterations"]):
        samples, judged = _judged_samples(plan, model, pool, cfg["sampling"], judge, template_path)
        pairs = plan.add(Stage("self_rewarding_pairs", {}, {"judged": judged}))
        model = plan.fine_tune("dpo", cfg["dpo"], model, pairs)
        plan.self_rewarding.append(SelfRewardingIteration(t, samples, judged, pairs, model))
        plan.models.append((row, t + 1, model))
        score_judge(row, t + 1, model)


def add_meta_rewarding(plan, base: Stage, actor: Stage) -> None:
    """Meta-Rewarding iterations from M_0 = ``actor``: M_t samples ``meta_rewarding.sampling`` and
    scores each sample with the rubric (``rubric_judgements``, Self-Rewarding's stage: equal settings
    share it); in the first ``judge_iterations`` iterations M_t also compares its own judgements
    (``meta_judgements``); ``meta_rewarding_pairs`` makes the length-controlled actor pairs and the
    judge pairs; M_{t+1} = DPO(M_t) on both. Rows ``<label>-Meta-Rewarding`` (iteration t) in the
    benchmark and refiner tables."""
    cfg, pool, judge, template_path, score_judge = _self_judging(plan, "meta_rewarding", base, actor)
    meta_judge = dict(cfg["meta_judge"])
    meta_judge["template"], meta_path = plan.local_file(meta_judge["template"], "meta_rewarding.meta_judge.template")
    row = f"{plan.base_label()}-Meta-Rewarding"
    model = actor
    for t in range(cfg["iterations"]):
        samples, judged = _judged_samples(plan, model, pool, cfg["sampling"], judge, template_path)
        verdicts = None
        inputs = {"judged": judged}
        if t < cfg["judge_iterations"]:
            verdicts = plan.add(Stage("meta_judgements", {"meta_judge": meta_judge, "backend": plan.backend(),
                                                          "seed": plan.config["seed"]},
                                      {"judged": judged, "judge": model},
                                      runtime={**plan.backend_runtime(), "meta_judge_template": meta_path}))
            inputs["verdicts"] = verdicts
        pairs = plan.add(Stage("meta_rewarding_pairs",
                               {"length_control_rho": cfg["length_control_rho"],
                                "max_chosen_judgement_chars": cfg["max_chosen_judgement_chars"],
                                "judge_template": judge["template"]},
                               inputs, runtime={"rubric_template": template_path}))
        model = plan.fine_tune("dpo", cfg["dpo"], model, pairs)
        plan.meta_rewarding.append(MetaRewardingIteration(t, samples, judged, verdicts, pairs, model))
        plan.models.append((row, t + 1, model))
        score_judge(row, t + 1, model)
