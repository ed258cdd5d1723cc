"""Meta-Rewarding (ifplay.baselines.meta_rewarding): the length control of the actor pairs, the
meta-judge's items, battles and verdicts (scripted backend: a unit test of the logic), its
journal, the position weights, the Elo fit, the judge pairs, the report table, and the plan: the
stages it shares with SPaR's default and with Self-Rewarding, the rows it adds, the paper overlay."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from ifplay.baselines.meta_rewarding import (MetaJudge, actor_pairs, battle_matrix, battles, elo_scores, judge_pairs,
                                             meta_judge_items, meta_judgement_counts, meta_judgements,
                                             position_weights, select_pairs)
from ifplay.core.config import ConfigError, load_config
from ifplay.core.parsing import parse_winner
from ifplay.generation.backends import Backend
from ifplay.generation.templates import load_template
from ifplay.plan import Plan
from ifplay.reporting.experiments import META_REWARDING_COLUMNS, meta_rewarding_table

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "config" / "prompts"
RUBRIC = (PROMPTS / "self_rewarding_rubric_score_first.txt").read_text()


def judged(key, sample, score, response=None, scores=None, judgements=None):
    scores = scores if scores is not None else [score]
    return {"key": key, "sample": sample, "prompt": f"prompt {key}", "response": response or f"r{key}{sample}",
            "score": score, "scores": scores, "judgements": judgements or [f"Score: {s}" for s in scores],
            "n_invalid": sum(s is None for s in scores)}


def verdict(key, sample, first, second, winner):
    return {"id": f"{key}/{sample}/{first}/{second}", "key": key, "sample": sample, "first": first,
            "second": second, "verdict": winner, "text": f"Winner: Judgement {winner}"}


# -- the actor pairs' length control ----------------------------------------------------------------
def test_rho_zero_pairs_the_shortest_top_against_the_longest_bottom():
    rows = [judged(1, 0, 4.0, "a long top answer"), judged(1, 1, 4.0, "short"), judged(1, 2, 2.0, "mid"),
            judged(1, 3, 1.0, "x"), judged(1, 4, 1.0, "the longest bottom answer"),
            judged(2, 0, 3.0), judged(2, 1, 3.0),  # all equal: no pair
            judged(3, 0, 5.0), judged(3, 1, None)]  # one scored: too few
    pairs, counts = actor_pairs(rows, 0.0)
    [pair] = pairs
    assert (pair["kind"], pair["key"], pair["chosen_sample"], pair["rejected_sample"]) == ("actor", 1, 1, 4)
    assert pair["chosen"] == [{"role": "assistant", "content": "short"}]
    assert (counts["prompts"], counts["prompts_all_equal"], counts["prompts_too_few_scored"]) == (3, 1, 1)
    assert counts["chosen_below_top_score"] == 0


def test_a_quality_tier_prefers_a_shorter_near_top_response():
    """rho 0.25 with scores 5 / 4.5 / 1: the top tier is [4, 5], so the shorter 4.5 is chosen; the
    bottom tier [1, 2] holds the 1 only."""
    rows = [judged(1, 0, 5.0, "a very long answer that rambles"), judged(1, 1, 4.5, "tight"),
            judged(1, 2, 1.0, "bad")]
    [pair], counts = actor_pairs(rows, 0.25)
    assert (pair["chosen_sample"], pair["rejected_sample"], pair["chosen_score"]) == (1, 2, 4.5)
    assert counts["chosen_below_top_score"] == 1
    [pair], _ = actor_pairs(rows, 0.0)
    assert pair["chosen_sample"] == 0  # without length control the top score wins, however long


def test_the_bottom_tier_takes_its_longest_and_length_ties_go_to_the_earliest():
    rows = [judged(1, 0, 5.0, "aa"), judged(1, 1, 5.0, "bb"), judged(1, 2, 1.5, "ccc"), judged(1, 3, 1.0, "dd")]
    [pair], _ = actor_pairs(rows, 0.2)  # bottom tier [1, 1.8]: the 1.5 is longer than the 1
    assert (pair["chosen_sample"], pair["rejected_sample"]) == (0, 2)


@pytest.mark.parametrize("rho", [-0.1, 0.5, 0.9])
def test_overlapping_or_negative_tiers_are_refused(rho):
    with pytest.raises(ValueError, match="length_control_rho"):
        actor_pairs([judged(1, 0, 1.0), judged(1, 1, 2.0)], rho)


# -- the meta-judge -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, winner", [
    ("Judgement B misreads the request.\nWinner: Judgement A", "A"),
    (" B", None),  # a continuation alone carries no "Winner:"
    ("Winner: Judgement B", "B"),
    ("winner: judgment a.", "A"),
    ("**Winner: Judgement B**", "B"),
    ("Winner: (A)", "A"),
    ("Winner: Judgement A\nOn reflection... Winner: Judgement B", "B"),  # the last one counts
    ("Winner: Judgement Although", None),
    ("Both are fine.", None),
])
def test_verdicts_parse(text, winner):
    assert parse_winner(text) == winner


def test_the_most_disputed_response_of_each_prompt_is_meta_judged():
    rows = [judged(1, 0, 3.0, scores=[3.0, 3.0, 3.0]),
            judged(1, 1, 3.0, scores=[1.0, 5.0, None]),  # variance 4 over its two parsable scores
            judged(1, 2, 3.0, scores=[2.0, 4.0, 3.0]),
            judged(2, 0, 4.0, scores=[4.0, None, None]),  # fewer than two parsable: never meta-judged
            judged(3, 0, 2.0, scores=[2.0, 2.0]), judged(3, 1, 2.0, scores=[2.0, 2.0])]  # ties: the earliest
    items = meta_judge_items(rows)
    assert [(i["key"], i["sample"]) for i in items] == [(1, 1), (3, 0)]
    assert [j["index"] for j in items[0]["judgements"]] == [0, 1]  # the unparsable judgement takes no part
    assert items[0]["variance"] == 4.0
    assert battles(items[0]) == [(0, 1), (1, 0)]
    assert len(battles({"judgements": [{"index": i} for i in range(4)]})) == 12  # every ordered pair


class ScriptedMetaJudge(Backend):
    """Prefers the judgement holding "GOOD"; between two or none, always the first position."""

    name = "scripted"

    def __init__(self):
        self.calls = []

    def chat(self, conversations, params, progress=None):
        self.calls.append((conversations, params))
        out = []
        for conv in conversations:
            text = conv[0]["content"]
            a = text.split("Judgement A:\n", 1)[1].split("Judgement B:\n", 1)[0]
            b = text.split("Judgement B:\n", 1)[1]
            out.append([" B" if "GOOD" in b and "GOOD" not in a else " A"])
        return out


def test_meta_judgements_are_journalled_and_resume(tmp_path):
    rows = [judged(k, 0, 3.0, scores=[1.0, 5.0, 3.0], judgements=["Score: 1 bad", "Score: 5 GOOD", "Score: 3 ok"])
            for k in range(3)]
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    template = load_template(PROMPTS / "meta_judge_verdict_first.txt", "meta_judge")

    class DiesOnSecondChunk(ScriptedMetaJudge):
        def chat(self, conversations, params, progress=None):
            if self.calls:
                raise KeyboardInterrupt("the job was cancelled")
            return super().chat(conversations, params, progress)

    out = tmp_path / "verdicts.jsonl"
    with pytest.raises(KeyboardInterrupt):
        meta_judgements(str(path), str(out), MetaJudge(DiesOnSecondChunk(), template), chunk=10)
    backend = ScriptedMetaJudge()
    resumed = meta_judgements(str(path), str(out), MetaJudge(backend, template, temperature=0.5, seed=7), chunk=10)
    [(conversations, params)] = backend.calls
    assert len(conversations) == 8 and (params.n, params.temperature, params.seed) == (1, 0.5, 7)
    assert conversations[0][-1] == {"role": "assistant", "content": "Winner: Judgement"}
    assert len(resumed) == 18 and resumed[0]["text"].startswith("Winner: Judgement")
    assert resumed == [json.loads(line) for line in out.read_text().splitlines()]
    by_pair = {(v["first"], v["second"]): v["verdict"] for v in resumed if v["key"] == 0}
    assert by_pair == {(0, 1): "B", (1, 0): "A", (0, 2): "A", (2, 0): "A", (1, 2): "A", (2, 1): "B"}
    assert meta_judgement_counts(resumed) == {"prompts": 3, "battles": 18, "invalid_verdicts": 0,
                                              "wins_first": 12, "wins_second": 6}


@pytest.mark.parametrize("name", ["meta_judge.txt", "meta_judge_verdict_first.txt"])
def test_meta_judge_templates_load(name):
    text = load_template(PROMPTS / name, "meta_judge")
    assert "{judgement_a}" in text and "Winner: Judgement" in text


# -- position weights, Elo, judge pairs -------------------------------------------------------------
def test_position_weights_discount_the_position_that_wins_more():
    verdicts = [verdict(1, 0, 0, 1, "A")] * 3 + [verdict(1, 0, 1, 0, "B"), verdict(1, 0, 0, 1, None)]
    assert position_weights(verdicts) == (0.25, 0.75)
    assert position_weights([verdict(1, 0, 0, 1, None)]) == (0.5, 0.5)


def test_the_battle_matrix_weights_each_win_by_its_position():
    verdicts = [verdict(1, 0, 0, 1, "A"), verdict(1, 0, 1, 0, "A"), verdict(1, 0, 0, 2, "B"), verdict(1, 0, 2, 1, None)]
    assert battle_matrix([0, 1, 2], verdicts, (0.25, 0.75)) == [[0, 0.25, 0], [0.25, 0, 0], [0.75, 0, 0]]


def test_elo_is_the_bradley_terry_maximum_likelihood():
    """Two judgements, 3 weighted wins against 1: without the prior the log-odds would be log 3; the
    fit is close to it and symmetric; an unbeaten judgement stays finite; equal records tie."""
    elo = elo_scores([[0, 3], [1, 0]])
    assert elo[0] + elo[1] == pytest.approx(2000)
    assert (elo[0] - elo[1]) * math.log(10) / 400 == pytest.approx(math.log(3), rel=0.05)
    unbeaten = elo_scores([[0, 2, 2], [0, 0, 1], [0, 1, 0]])
    assert all(math.isfinite(x) for x in unbeaten) and unbeaten[0] > unbeaten[1] == pytest.approx(unbeaten[2])
    assert elo_scores([[0, 1], [1, 0]]) == pytest.approx([1000, 1000])


def test_judge_pairs_take_the_highest_against_the_lowest_rated_judgement():
    texts = ["Score: 1 wrong", "Score: 4 right", "Score: 3 close"]
    rows = [judged(1, 0, 2.0, scores=[1.0, 4.0, 3.0], judgements=texts),
            judged(2, 0, 2.0, scores=[2.0, 3.0], judgements=["Score: 2", "Score: 3"])]
    verdicts = [verdict(1, 0, 0, 1, "B"), verdict(1, 0, 1, 0, "A"), verdict(1, 0, 0, 2, "B"), verdict(1, 0, 2, 0, "A"),
                verdict(1, 0, 1, 2, "A"), verdict(1, 0, 2, 1, "A"),
                verdict(2, 0, 0, 1, "A"), verdict(2, 0, 1, 0, "A")]  # each wins once in first place: a tie
    pairs, counts = judge_pairs(rows, verdicts, RUBRIC, None)
    [pair] = pairs
    assert (pair["kind"], pair["key"], pair["chosen_judgement"], pair["rejected_judgement"]) == ("judge", 1, 1, 0)
    assert pair["chosen"] == [{"role": "assistant", "content": "Score: 4 right"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Score: 1 wrong"}]
    [turn] = pair["prompt"]  # the rubric's user turn; its "Score:" prefill starts each judgement text
    assert turn["role"] == "user" and "prompt 1" in turn["content"] and "r10" in turn["content"]
    assert pair["chosen_elo"] > pair["rejected_elo"] and (pair["chosen_score"], pair["rejected_score"]) == (4.0, 1.0)
    assert (counts["pairs"], counts["responses"], counts["ratings_tied"]) == (1, 2, 1)
    assert (counts["omega_first"], counts["omega_second"]) == (0.25, 0.75)  # 6 first-place wins, 2 second
    _, counts = judge_pairs(rows, verdicts, RUBRIC, 10)
    assert counts["pairs"] == 0 and counts["chosen_too_long"] == 1


def test_an_iteration_without_verdicts_trains_the_actor_only():
    rows = [judged(1, 0, 1.0, scores=[1.0, 1.0]), judged(1, 1, 4.0, scores=[3.0, 5.0])]
    pairs, counts = select_pairs(rows, None, 0.0, RUBRIC, None)
    assert [p["kind"] for p in pairs] == ["actor"] and "judge" not in counts and counts["pairs"] == 1
    verdicts = [verdict(1, 1, 0, 1, "B"), verdict(1, 1, 1, 0, "A")]
    pairs, counts = select_pairs(rows, verdicts, 0.0, RUBRIC, None)
    assert [p["kind"] for p in pairs] == ["actor", "judge"] and counts["pairs"] == 2
    table = meta_rewarding_table([{"iteration": 0, "pairs": counts}])
    assert list(table.columns) == META_REWARDING_COLUMNS
    assert table.loc[0, ["actor_pairs", "judge_pairs", "battles", "wins_first"]].tolist() == [1, 1, 2, 1]


# -- the plan -------------------------------------------------------------------------------------------
def plan(*overlays, **overrides) -> Plan:
    return Plan(load_config([str(REPO / o) for o in overlays], overrides or None))


def test_meta_rewarding_plan_shares_spars_samples_and_self_rewardings_judgements():
    default, sr = plan(), plan("config/experiments/self-rewarding.yaml")
    mr = plan("config/experiments/meta-rewarding.yaml")
    assert not mr.spar and not mr.self_rewarding and len(mr.meta_rewarding) == 1
    [it] = mr.meta_rewarding
    m0 = mr.base
    assert it.samples.key == default.spar[0].samples.key  # SPaR's iteration-1 samples
    assert it.judged.key == sr.self_rewarding[0].judged.key  # Self-Rewarding's rubric judgements
    assert it.verdicts.inputs == {"judged": it.judged, "judge": m0}
    assert it.pairs.inputs == {"judged": it.judged, "verdicts": it.verdicts}
    assert it.model.kind == "dpo" and it.model.inputs == {"model": m0, "data": it.pairs}
    label = mr.base_label()
    assert [(m, i) for m, i, _ in mr.models] == [(label, 0), (f"{label}-Meta-Rewarding", 1)]
    assert [(m, i) for m, i, _ in mr.judges] == [(label, 0), (f"{label}-Meta-Rewarding", 1)]
    assert "meta_rewarding" in mr.tables() and "meta_rewarding_dpo_iter1" in mr.training_runs()
    assert it.pairs.path("counts.json") in mr.report_inputs() and it.verdicts.path("counts.json") in mr.report_inputs()


def test_later_iterations_train_the_actor_only():
    p = plan("config/experiments/meta-rewarding.yaml", meta_rewarding={"iterations": 3, "judge_iterations": 2})
    assert [it.verdicts is not None for it in p.meta_rewarding] == [True, True, False]
    third = p.meta_rewarding[2]
    assert third.pairs.inputs == {"judged": third.judged} and third.samples.inputs["model"] is p.meta_rewarding[1].model
    assert [i for _, i, _ in p.models] == [0, 1, 2, 3]


def test_all_three_methods_in_one_study_compute_shared_stages_once():
    p = plan(self_rewarding={"enabled": True}, meta_rewarding={"enabled": True})
    assert p.spar[0].samples is p.self_rewarding[0].samples is p.meta_rewarding[0].samples
    assert p.self_rewarding[0].judged is p.meta_rewarding[0].judged
    labels = [m for m, _, _ in p.judges]
    assert len(labels) == len(set(labels))


def test_an_unknown_or_out_of_range_key_is_refused():
    with pytest.raises(ConfigError, match="meta_rewarding"):
        plan("config/experiments/meta-rewarding.yaml", meta_rewarding={"rho": 0.1})
    with pytest.raises(ConfigError, match="length_control_rho"):
        plan("config/experiments/meta-rewarding.yaml", meta_rewarding={"length_control_rho": 0.5})


# -- paper scale ----------------------------------------------------------------------------------------
SPAR_PAPERS = sorted(p.name for p in (REPO / "config" / "paper").glob("spar-*.yaml"))
OVERLAY = "config/paper/baselines/meta-rewarding.yaml"


@pytest.mark.parametrize("paper", SPAR_PAPERS)
def test_paper_overlay_runs_beside_spar_on_its_pool_and_m0(paper):
    config = load_config([REPO / "config" / "paper" / paper, REPO / OVERLAY], {"experiment": "x"})
    p = Plan(config)
    assert len(p.spar) == 3 and len(p.meta_rewarding) == 3
    assert [it.verdicts is not None for it in p.meta_rewarding] == [True, True, False]
    first = p.meta_rewarding[0]
    assert first.samples.inputs["model"] is p.spar[0].samples.inputs["model"]  # M_0
    assert first.samples.inputs["prompts"] is p.spar[0].samples.inputs["prompts"]  # the evolved pool
    assert first.samples.config["sampling"] == {"n": 7, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 2048,
                                                "seed": config["seed"]}
    rubric = hashlib.sha256((PROMPTS / "self_rewarding_rubric.txt").read_bytes()).hexdigest()
    assert first.judged.config["judge"]["template"] == {"sha256": rubric}
    assert first.judged.config["judge"]["samples"] == 11
    meta = hashlib.sha256((PROMPTS / "meta_judge.txt").read_bytes()).hexdigest()
    assert first.verdicts.config["meta_judge"]["template"] == {"sha256": meta}
    pairs = first.pairs.config
    assert (pairs["length_control_rho"], pairs["max_chosen_judgement_chars"]) == (0.32, 1100)
    dpo = first.model.config["settings"]
    assert (dpo["learning_rate"], dpo["beta"], dpo["lr_scheduler_type"], dpo["bf16"]) == (5e-6, 0.1, "cosine", True)
    gpus = config["resources"]["training"]["gpus"]
    assert dpo["per_device_train_batch_size"] * dpo["gradient_accumulation_steps"] * gpus == 32
    assert {f"{p.base_label()}-SPaR-DPO", f"{p.base_label()}-Meta-Rewarding"} <= {m for m, _, _ in p.models}


@pytest.mark.slow
def test_paper_dry_run_under_the_slurm_profile_lists_meta_rewardings_jobs():
    from conftest import run

    out = run(["snakemake", "--profile", "slurm", "-n", "--configfile", "config/paper/spar-llama3-8b.yaml", OVERLAY,
               "--config", "experiment=spar-llama3-8b-meta-rewarding"], cwd=REPO).stdout
    jobs = dict(re.findall(r"(?m)^\s*(\w+)\s+(\d+)\s*$", out.split("Job stats:", 1)[1].split("\n\n", 1)[0]))
    assert (jobs["rubric_judgements"], jobs["meta_judgements"], jobs["meta_rewarding_pairs"]) == ("3", "2", "3")
    requests = dict(re.findall(r"(?ms)^rule (\w+):.*?resources: ([^\n]*)", out))
    assert "gpu=1" in requests["meta_judgements"] and "gpu=0" in requests["meta_rewarding_pairs"]
