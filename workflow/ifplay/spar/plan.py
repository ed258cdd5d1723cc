"""SPaR's part of the stage plan: the initial SFT (teacher data, M_0 and R_0), the prompt evolution
and the self-play iterations, each R_t also scored as a judge.

Functions of the :class:`ifplay.plan.Plan` being built (``plan``): they add stages with
``plan.add`` and record what the report reads (``plan.spar``, ``plan.judge_evaluations``,
``plan.models``, ``plan.sft``, ``plan.evolution``, ``plan.teacher_data``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ifplay.core import sources
from ifplay.core.config import ConfigError
from ifplay.core.stages import Stage


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


def add_sft(plan, base: Stage) -> tuple[Stage, Stage]:
    """M_0 = SFT(base) on the actor data, R_0 = SFT(base) on the refiner data: the teacher's
    (``sft.data_source: teacher``, :func:`teacher_sft_data`) or given files (``files``:
    ``sft.actor_data``; R_0 = M_0 when ``sft.refiner_data`` is null)."""
    sft = plan.config["sft"]

    def on_file(data_key: str) -> Stage:
        data, path = plan.local_file(sft[data_key], f"sft.{data_key}")
        return plan.add(Stage("sft", {"settings": sft["training"], "data": data, "seed": plan.config["seed"]},
                              {"model": base}, runtime={"data": path}))

    if sft["data_source"] == "teacher":
        plan.teacher_data = data = teacher_sft_data(plan, base)
        actor, refiner = (plan.fine_tune("sft", sft["training"], base, data, name)
                          for name in ("actor.jsonl", "refiner.jsonl"))
    else:
        actor = on_file("actor_data")
        refiner = on_file("refiner_data") if sft["refiner_data"] else actor
    plan.sft = {"actor": actor, "refiner": refiner}
    return actor, refiner


def teacher_sft_data(plan, base: Stage) -> Stage:
    """The teacher's SFT data (:mod:`ifplay.spar.teacher_data`): its answers to the evolved prompts, and
    its judgements and refinements of the student's (``base``'s) samples, in SPaR's formats."""
    cfg = dict(plan.config["sft"]["teacher_data"])
    seed = plan.config["seed"]
    plan.evolution = evolution = evolved_prompts(plan)
    student_prompts = plan.add(Stage("prompt_subset", {"limit": cfg.pop("refiner_prompts")}, {"prompts": evolution}))
    samples = plan.samples(base, student_prompts, cfg.pop("student"))
    judge_template, judge_path = spar_template(plan, "judge")
    refine_template, refine_path = spar_template(plan, "search")
    cfg["judge"] = {**cfg["judge"], "template": judge_template}
    cfg["refine"] = {**cfg["refine"], "template": refine_template,
                     "output_format": plan.config["spar"]["search"]["output_format"]}
    teacher, model, runtime = teacher_model(plan)
    inputs = {"prompts": evolution, "samples": samples, **({"teacher": model} if model is not None else {})}
    return plan.add(Stage("teacher_sft_data", {**cfg, "teacher": teacher, "seed": seed}, inputs,
                          runtime={**runtime, "judge_template": judge_path, "refine_template": refine_path}))


def spar_template(plan, section: str) -> tuple[dict, str]:
    """SPaR's judge (``spar.judge``) or refine (``spar.search``) template: its content hash and its path."""
    return plan.local_file(plan.config["spar"][section]["template"], f"spar.{section}.template")


def add_spar(plan, base: Stage, actor: Stage, refiner: Stage) -> None:
    """SPaR iterations from M_0 = ``actor`` and R_0 = ``refiner``: M_{t+1} = DPO(M_t) on refined
    pairs, R_{t+1} = RFT(R_t); each R_t is also scored as a judge on ``base``'s held-out answers.
    The prompt pool is ``data.train_prompts`` or, with ``spar.prompt_source: autoif``, the AutoIF
    pipeline's queries with their verification functions (which the verifier judge runs)."""
    spar = plan.config["spar"]
    backend = plan.backend()
    runtime = plan.backend_runtime()
    autoif_pool = spar["prompt_source"] == "autoif"
    pool = prompt_pool(plan)
    judge = dict(spar["judge"])
    del judge["template"]
    judge_template, judge_path = spar_template(plan, "judge")
    score_judge = judge_rows(plan, base)
    search = dict(spar["search"])
    del search["template"]
    refine_template, refine_path = spar_template(plan, "search")
    if judge["kind"] == "verifier":  # the oracle reads no model and no sampling settings
        judge = {"kind": "verifier"}
        if autoif_pool:  # it runs the queries' functions in the sandbox, with AutoIF's limits
            judge["sandbox"] = plan.config["autoif"]["sandbox"]
    else:
        judge["template"] = judge_template
    search["template"] = refine_template
    templates = {"judge_template": judge_path, "refine_template": refine_path}
    label = plan.base_label()
    plan.refiners.append((label if refiner is base else f"{label}-SFT", 0, refiner))
    score_judge(*plan.refiners[-1])
    for t in range(spar["iterations"]):
        samples = plan.samples(actor, pool, spar["sampling"])
        judge_inputs = {"samples": samples, "prompts": pool}
        if judge["kind"] == "model":
            judge_inputs["refiner"] = refiner
        judged = plan.add(Stage("judgements", {"judge": judge, "backend": backend, "seed": plan.config["seed"]},
                                judge_inputs, runtime={**runtime, "judge_template": judge_path}))
        trees = plan.add(Stage("tree_search", {"judge": judge, "search": search, "backend": backend,
                                              "negatives_per_prompt": spar["negatives_per_prompt"],
                                              "seed": plan.config["seed"]},
                               {"judged": judged, "prompts": pool, "refiner": refiner},
                               runtime={**runtime, **templates}))
        data = plan.add(Stage("spar_data", {"rft_mix": spar["rft_mix"], "judge_template": judge_template,
                                            "refine_template": refine_template, "seed": plan.config["seed"]},
                              {"judged": judged, "trees": trees}, runtime=templates))
        actor = plan.fine_tune("dpo", spar["actor_dpo"], actor, data)
        refiner = plan.fine_tune("sft", spar["refiner_rft"], refiner, data, "rft.jsonl")
        plan.spar.append(SparIteration(t, samples, judged, trees, data, actor, refiner))
        plan.models.append((f"{label}-SPaR-DPO", t + 1, actor))
        plan.refiners.append((f"{label}-SPaR-RFT", t + 1, refiner))
        score_judge(*plan.refiners[-1])


def judge_rows(plan, base: Stage):
    """A function ``score_judge(label, iteration, model)`` that makes ``model`` a row of the refiner
    tables: a judge of LLMBar (``plan.judges``, :func:`ifplay.evaluation.plan.add_llmbar`) and, with
    ``spar.judge_eval.enabled``, of ``tables/judge.csv`` (``judge_eval``: ``base``'s greedy answers to
    the dev prompts, judged as the model judge does with ``spar.judge``'s template and votes, whoever
    judges in training). SPaR's refiners R_t and the baselines' self-judging models use it; a model
    already listed (the same stage) is not listed twice."""
    spar = plan.config["spar"]
    backend, runtime = plan.backend(), plan.backend_runtime()
    judge_eval, templates = refiner_judge(plan)
    heldout = None
    if spar["judge_eval"]["enabled"]:  # the base model's greedy answers to the dev prompts
        heldout_prompts = plan.add(plan.prompt_set("dev_prompts", spar["judge_eval"]["limit"]))
        heldout = {"prompts": heldout_prompts, "responses": plan.add(plan.eval_responses(base, heldout_prompts))}

    def score_judge(model_label: str, iteration: int, model: Stage) -> None:
        if any(listed.key == model.key for _, _, listed in plan.judges):
            return
        plan.judges.append((model_label, iteration, model))
        if heldout is None:
            return
        stage = plan.add(Stage("judge_eval", {"judge": judge_eval, "backend": backend, "seed": plan.config["seed"]},
                               {**heldout, "refiner": model}, runtime={**runtime, **templates}))
        plan.judge_evaluations.append(JudgeEvaluation(model_label, iteration, stage))

    return score_judge


def teacher_model(plan) -> tuple[dict, Stage | None, dict]:
    """The teacher (``teacher``): its hashed identity (the backend; the model's name when a server
    serves it), its checkpoint stage (None for a served model) and its runtime settings (batch sizes,
    the teacher backend's options)."""
    teacher = plan.config["teacher"]
    backend = plan.backend(teacher["backend"])
    runtime = {**plan.backend_runtime(), "backend_options": plan.backend_options(backend["name"])}
    if teacher["model"] is None:
        return {"backend": backend, "model": None}, plan.base, runtime
    if backend["name"] == "openai":
        return {"backend": backend, "model": teacher["model"]}, None, runtime
    return {"backend": backend, "model": None}, plan.other_model(teacher["model"], "teacher.model"), runtime


def prompt_pool(plan) -> Stage:
    """SPaR's prompt pool, which the baselines (:mod:`ifplay.baselines.plan`) sample from too: the first
    ``spar.prompt_limit`` prompts of ``data.train_prompts``, of the teacher's evolved prompts
    (``spar.prompt_source: evolved``) or of the AutoIF pipeline's queries (``autoif``)."""
    spar = plan.config["spar"]
    if spar["prompt_source"] == "evolved":
        plan.evolution = evolved_prompts(plan)
        return plan.add(Stage("prompt_subset", {"limit": spar["prompt_limit"]}, {"prompts": plan.evolution}))
    if spar["prompt_source"] == "autoif":
        if plan.autoif is None:
            raise ConfigError("spar.prompt_source: 'autoif' takes SPaR's prompts from the AutoIF pipeline's "
                              "queries, so it needs autoif.enabled: true (or set spar.prompt_source: "
                              "train_prompts)")
        return plan.add(Stage("autoif_prompts", {"limit": spar["prompt_limit"]}, {"queries": plan.autoif.data},
                              files={"queries": "queries.jsonl"}))
    return plan.add(plan.prompt_set("train_prompts", spar["prompt_limit"]))


def evolved_prompts(plan) -> Stage:
    """The teacher's evolution of ``prompt_evolution.seeds`` (:mod:`ifplay.spar.evolution`)."""
    cfg = dict(plan.config["prompt_evolution"])
    source = cfg.pop("seeds")
    cfg["seeds"] = sources.prompt_origin(source, config_key="prompt_evolution.seeds").fingerprint
    cfg["template"], template = plan.local_file(cfg["template"], "prompt_evolution.template")
    teacher, model, runtime = teacher_model(plan)
    inputs = {"teacher": model} if model is not None else {}
    return plan.add(Stage("evolved_prompts", {"evolution": cfg, "teacher": teacher, "seed": plan.config["seed"]},
                          inputs, runtime={**runtime, "source": source, "template": template}))


def refiner_judge(plan) -> tuple[dict, dict]:
    """The refiner judging as the model judge with ``spar.judge``'s settings (whatever judges in
    training): its hashed config and the template's path (runtime)."""
    judge = dict(plan.config["spar"]["judge"])
    judge["template"], path = spar_template(plan, "judge")
    return {**judge, "kind": "model"}, {"judge_template": path}
