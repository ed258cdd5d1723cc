"""Self-Rewarding (ifplay.baselines.self_rewarding): the rubric's score parsing and averaging, the
model judging its own samples (scripted backend: a unit test of the logic), the journal, the pair
selection, the report table, and the plan: sharing SPaR's stages, the rows it adds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ifplay.baselines.self_rewarding import (RubricJudge, judgement_counts, rubric_judgement, rubric_judgements,
                                             select_pairs)
from ifplay.core.config import load_config
from ifplay.generation.backends import Backend
from ifplay.generation.templates import load_template
from ifplay.core.parsing import parse_score
from ifplay.plan import Plan
from ifplay.reporting.experiments import SELF_REWARDING_COLUMNS, self_rewarding_table

REPO = Path(__file__).resolve().parents[1]
RUBRICS = ("self_rewarding_rubric.txt", "self_rewarding_rubric_score_first.txt")


class ScriptedRubricBackend(Backend):
    """Scores a rubric conversation by its response: the digit after "SCORE=" in it, or prose
    without a score for "NOSCORE"; the n samples of one conversation alternate +0 and +1 when the
    response says "WOBBLE"."""

    name = "scripted"

    def __init__(self):
        self.calls = []

    def chat(self, conversations, params, progress=None):
        self.calls.append((conversations, params))
        out = []
        for conv in conversations:
            text = conv[0]["content"]
            response = text.split("Response:\n", 1)[1]
            if "NOSCORE" in response:
                out.append(["I cannot tell."] * params.n)
                continue
            base = int(response.split("SCORE=", 1)[1][0])
            wobble = "WOBBLE" in response
            prefilled = conv[-1]["role"] == "assistant"
            out.append([(f" {base + (i % 2 if wobble else 0)}\nBecause." if prefilled
                         else f"Reasons.\nScore: {base + (i % 2 if wobble else 0)}") for i in range(params.n)])
        return out


def judged(key, sample, score, response=None):
    return {"key": key, "sample": sample, "prompt": f"prompt {key}", "response": response or f"r{key}{sample}",
            "score": score, "scores": [score], "judgements": ["x"], "n_invalid": int(score is None)}


# -- the rubric ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, score", [
    ("The response is relevant and complete.\nScore: 4", 4.0),
    (" 3\nIt answers the core of the request.", 3.0),  # prefilled "Score:" continued
    ("Score: **5**", 5.0),
    ("Score: 2\nOn reflection...\nScore: 1", 1.0),  # the last one counts
    ("Score: 7", None),  # outside the 0-5 rubric
    ("A fine answer.", None),
])
def test_rubric_scores_parse_on_the_five_point_scale(text, score):
    assert rubric_judgement([text]).scores == [score]
    assert parse_score(text, maximum=5) == score


def test_a_response_scores_the_mean_of_its_parsable_judgements():
    j = rubric_judgement(["Score: 4", "garbled", "Score: 3"])
    assert (j.scores, j.score, j.n_invalid) == ([4.0, None, 3.0], 3.5, 1)
    assert rubric_judgement(["no", "none"]).score is None


@pytest.mark.parametrize("name", RUBRICS)
def test_rubric_templates_load_and_render(name):
    text = load_template(REPO / "config" / "prompts" / name, "rubric")
    assert "5 points" in text and "{prompt}" in text and "{response}" in text


def test_rubric_judge_scores_each_pair_samples_times_in_one_call():
    backend = ScriptedRubricBackend()
    template = load_template(REPO / "config" / "prompts" / "self_rewarding_rubric_score_first.txt", "rubric")
    judge = RubricJudge(backend, template, samples=4, temperature=0.7, top_p=0.9, max_new_tokens=16, seed=3)
    out = judge.score([("Say hi.", "hi SCORE=2 WOBBLE"), ("Say bye.", "bye SCORE=5"), ("X", "NOSCORE")])
    assert [j.scores for j in out] == [[2.0, 3.0, 2.0, 3.0], [5.0] * 4, [None] * 4]
    assert [j.score for j in out] == [2.5, 5.0, None]
    assert out[0].judgements[0].startswith("Score: 2")  # the prefill joined to the continuation
    [(conversations, params)] = backend.calls
    assert len(conversations) == 3 and (params.n, params.temperature, params.top_p, params.seed) == (4, 0.7, 0.9, 3)
    assert "Say hi." in conversations[0][0]["content"] and conversations[0][-1] == {"role": "assistant", "content": "Score:"}


def test_rubric_judgements_are_journalled_and_resume(tmp_path):
    """An interrupted stage keeps the chunks it judged; the rerun judges only the rest, and the
    output equals an uninterrupted run's."""
    responses = tmp_path / "responses.jsonl"
    rows = [{"key": k, "sample": s, "prompt": f"p{k}", "response": f"answer SCORE={k + s}"} for k in range(3) for s in range(2)]
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = "Request:\n{prompt}\n\nResponse:\n{response}"

    class DiesOnSecondChunk(ScriptedRubricBackend):
        def chat(self, conversations, params, progress=None):
            if self.calls:
                raise KeyboardInterrupt("the job was cancelled")
            return super().chat(conversations, params, progress)

    out = tmp_path / "judged.jsonl"
    with pytest.raises(KeyboardInterrupt):
        rubric_judgements(str(responses), str(out), RubricJudge(DiesOnSecondChunk(), template, samples=2), chunk=4)
    assert not out.exists()
    resumed_backend = ScriptedRubricBackend()
    resumed = rubric_judgements(str(responses), str(out), RubricJudge(resumed_backend, template, samples=2), chunk=4)
    [(conversations, _)] = resumed_backend.calls
    assert len(conversations) == 2  # the four of the first chunk came from the journal
    whole = rubric_judgements(str(responses), str(tmp_path / "whole.jsonl"),
                              RubricJudge(ScriptedRubricBackend(), template, samples=2), chunk=4)
    assert resumed == whole == [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["key"], r["sample"], r["score"]) for r in whole] == [(k, s, float(k + s)) for k in range(3) for s in range(2)]
    counts = judgement_counts(whole)
    assert (counts["responses"], counts["judge_samples"], counts["scored_responses"]) == (6, 12, 6)
    assert counts["score_histogram"] == {"0": 1, "1": 2, "2": 2, "3": 1, "4": 0, "5": 0}


# -- the pairs ----------------------------------------------------------------------------------------
def test_pairs_are_best_against_worst_per_prompt():
    rows = [judged(1, 0, 2.0), judged(1, 1, 4.5), judged(1, 2, 1.0),
            judged(2, 0, 3.0), judged(2, 1, 3.0),  # all equal: no pair
            judged(3, 0, 5.0), judged(3, 1, None),  # one scored: too few
            judged(4, 0, 4.0), judged(4, 1, 4.0), judged(4, 2, 1.0), judged(4, 3, 1.0)]  # ties: earliest
    pairs, counts = select_pairs(rows)
    assert [(p["key"], p["chosen_sample"], p["rejected_sample"]) for p in pairs] == [(1, 1, 2), (4, 0, 2)]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "prompt 1"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "r11"}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "r12"}]
    assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"]) == (4.5, 1.0)
    assert counts == {"pairs": 2, "mean_chosen_score": 4.25, "mean_rejected_score": 1.0, "mean_chosen_chars": 3.0,
                      "mean_rejected_chars": 3.0, "prompts": 4, "prompts_too_few_scored": 1, "prompts_all_equal": 1}


def test_self_rewarding_table_has_its_columns():
    pairs, counts = select_pairs([judged(1, 0, 2.0), judged(1, 1, 4.0)])
    counts["judgements"] = judgement_counts([judged(1, 0, 2.0), judged(1, 1, 4.0)])
    table = self_rewarding_table([{"iteration": 0, "pairs": counts}])
    assert list(table.columns) == SELF_REWARDING_COLUMNS
    assert table.loc[0, ["prompts", "responses", "pairs", "mean_score"]].tolist() == [1, 2, 1, 3.0]


# -- the plan -------------------------------------------------------------------------------------------
def plan(*overlays, **overrides) -> Plan:
    return Plan(load_config([str(REPO / o) for o in overlays], overrides or None))


def test_self_rewarding_plan_shares_spars_m0_samples_and_adds_its_rows():
    default, sr = plan(), plan("config/experiments/self-rewarding.yaml")
    assert not sr.spar and len(sr.self_rewarding) == 1
    [it] = sr.self_rewarding
    m0 = sr.base  # sft off: M_0 is the base model
    assert it.samples.inputs["model"] is m0 and it.judged.inputs == {"samples": it.samples, "judge": m0}
    assert it.pairs.inputs == {"judged": it.judged} and it.model.kind == "dpo" and it.model.inputs["data"] is it.pairs
    # the same model, prompts and sampling as SPaR's iteration 1: the very same generate stage
    assert it.samples.key == default.spar[0].samples.key
    assert it.samples.inputs["prompts"].key == default.spar[0].samples.inputs["prompts"].key
    label = sr.base_label()
    assert [(m, i) for m, i, _ in sr.models] == [(label, 0), (f"{label}-Self-Rewarding", 1)]
    assert [(m, i) for m, i, _ in sr.judges] == [(label, 0), (f"{label}-Self-Rewarding", 1)]
    assert [e.model for e in sr.judge_evaluations] == [label, f"{label}-Self-Rewarding"]
    assert not sr.refiners and not [s for s in sr.stages.values() if s.kind in ("refinements", "tree_search")]
    assert "self_rewarding" in sr.tables() and "spar_counts" not in sr.tables()
    shared = set(default.stages) & set(sr.stages)
    assert it.samples.key in shared and sr.base.key in shared
    assert [e.scores.key for e in sr.evaluations if e.iteration == 0 and e.benchmark == "ifeval"] == \
           [e.scores.key for e in default.evaluations if e.iteration == 0 and e.benchmark == "ifeval"]


def test_spar_and_self_rewarding_in_one_study_compute_shared_stages_once():
    both = plan(self_rewarding={"enabled": True})
    assert both.spar and both.self_rewarding
    assert both.spar[0].samples is both.self_rewarding[0].samples
    assert len({s.key for s in both.stages.values()}) == len(both.stages)
    labels = [m for m, _, _ in both.judges]
    assert len(labels) == len(set(labels)) and labels[0] == both.base_label()  # R_0 = M_0 listed once
    assert {m for m, _, _ in both.models} >= {f"{both.base_label()}-SPaR-DPO", f"{both.base_label()}-Self-Rewarding"}


def test_two_iterations_chain_through_the_dpo_model():
    p = plan("config/experiments/self-rewarding.yaml", self_rewarding={"iterations": 2})
    first, second = p.self_rewarding
    assert second.samples.inputs["model"] is first.model and second.judged.inputs["judge"] is first.model
    assert [i for _, i, _ in p.models] == [0, 1, 2]


# -- paper scale ----------------------------------------------------------------------------------------
SPAR_PAPERS = sorted(p.name for p in (REPO / "config" / "paper").glob("spar-*.yaml"))
OVERLAY = "config/paper/baselines/self-rewarding.yaml"


@pytest.mark.parametrize("paper", SPAR_PAPERS)
def test_paper_overlay_runs_beside_spar_on_its_pool_and_m0(paper):
    """On each SPaR paper config: three iterations from SPaR's M_0 (its SFT) on SPaR's evolved pool,
    the paper's N, decoding, judge samples and DPO settings, SPaR's rows beside."""
    config = load_config([REPO / "config" / "paper" / paper, REPO / OVERLAY], {"experiment": "x"})
    p = Plan(config)
    assert len(p.spar) == 3 and len(p.self_rewarding) == 3
    first = p.self_rewarding[0]
    assert first.samples.inputs["model"] is p.spar[0].samples.inputs["model"]  # M_0
    assert first.samples.inputs["prompts"] is p.spar[0].samples.inputs["prompts"]  # the evolved pool
    assert first.samples.inputs["prompts"].kind == "prompt_subset"
    assert first.samples.config["sampling"] == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 2048,
                                                "seed": config["seed"]}
    import hashlib

    rubric = hashlib.sha256((REPO / "config" / "prompts" / "self_rewarding_rubric.txt").read_bytes()).hexdigest()
    assert first.judged.config["judge"] == {"template": {"sha256": rubric}, "samples": 3, "temperature": 0.7,
                                            "top_p": 0.9, "max_new_tokens": 1024}
    dpo = first.model.config["settings"]
    assert (dpo["learning_rate"], dpo["beta"], dpo["rpo_alpha"], dpo["bf16"]) == (1e-6, 0.1, None, True)
    assert dpo["per_device_train_batch_size"] * config["resources"]["training"]["gpus"] == 16
    labels = {m for m, _, _ in p.models}
    assert {f"{p.base_label()}-SPaR-DPO", f"{p.base_label()}-Self-Rewarding"} <= labels


@pytest.mark.slow
def test_paper_dry_run_under_the_slurm_profile_lists_self_rewardings_jobs():
    from conftest import run

    out = run(["snakemake", "--profile", "slurm", "-n", "--configfile", "config/paper/spar-llama3-8b.yaml", OVERLAY,
               "--config", "experiment=spar-llama3-8b-self-rewarding"], cwd=REPO).stdout
    jobs = dict(re.findall(r"(?m)^\s*(\w+)\s+(\d+)\s*$", out.split("Job stats:", 1)[1].split("\n\n", 1)[0]))
    assert jobs["rubric_judgements"] == "3" and jobs["self_rewarding_pairs"] == "3"
    requests = dict(re.findall(r"(?ms)^rule (\w+):.*?resources: ([^\n]*)", out))
    assert "gpu=1" in requests["rubric_judgements"] and "gpu=0" in requests["self_rewarding_pairs"]
