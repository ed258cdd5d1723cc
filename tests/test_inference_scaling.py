"""Inference-time scaling: best-of-N picks, tree-search refinement of greedy answers at a budget,
the table and figure, and the plan's stages (scripted refiner and judge from test_tree_search)."""

import json

import pandas as pd

import pytest
from PIL import Image

from conftest import planned_settings, run
from ifplay.core.config import load_config
from ifplay.evaluation.inference_scaling import best_of_n, plot_scaling, refine_answers, scaling_table
from ifplay.plan import Plan
from ifplay.core.records import read_jsonl, write_json, write_jsonl
from ifplay.spar.tree_search import SearchConfig, TreeSearch
from test_tree_search import REFINE, ScriptedJudge, ScriptedRefiner


def judged_record(key, sample, response, value):
    return {"key": key, "sample": sample, "prompt": f"prompt {key}", "response": response, "label": int(value > 0.5),
            "value": value, "votes": [], "n_invalid": 0, "tie": False, "critique": f"{response} is wrong",
            "critiques": []}


SAMPLES = [judged_record("a", 0, "a0", 0.2), judged_record("a", 1, "a1", 0.6), judged_record("a", 2, "a2", 0.6),
           judged_record("a", 3, "a3", 1.0), judged_record("b", 0, "b0", 0.4), judged_record("b", 1, "b1", 0.0),
           judged_record("b", 2, "b2", 0.4), judged_record("b", 3, "b3", 0.0)]


def test_best_of_n_picks_the_best_of_the_first_n_ties_to_the_earliest():
    picks = {n: {a["key"]: a["response"] for a in best_of_n(SAMPLES, n)} for n in (1, 2, 3, 4)}
    assert picks == {1: {"a": "a0", "b": "b0"}, 2: {"a": "a1", "b": "b0"}, 3: {"a": "a1", "b": "b0"},
                     4: {"a": "a3", "b": "b0"}}
    assert all(a["generations"] == 4 for a in best_of_n(SAMPLES, 4))
    with pytest.raises(ValueError, match="prompt 'a' has 4 samples below index 5"):
        best_of_n(SAMPLES, 5, source="judged.jsonl")


def greedy_answers():
    # "good" passes the end gate at the root; "bad" and "worse" are refined
    return [judged_record("good", 0, "good", 0.8), judged_record("bad", 0, "bad", 0.2),
            judged_record("worse", 0, "worse", 0.0)]


def prompts():
    return {r["key"]: {"key": r["key"], "prompt": r["prompt"]} for r in greedy_answers()}


def test_tree_search_at_a_budget_refines_only_what_the_judge_rejects():
    refiner, judge = ScriptedRefiner(), ScriptedJudge({"bad.1": 0.9, "worse.0.1": 0.7})
    config = SearchConfig(branch=2, select=1, max_depth=3, budget=4, output_format="markers")
    answers, results = refine_answers(greedy_answers(), prompts(), 5, 0.5, TreeSearch(refiner, judge, REFINE, config))
    by_key = {a["key"]: a for a in answers}
    assert [a["key"] for a in answers] == ["good", "bad", "worse"]
    assert by_key["good"] == {**by_key["good"], "response": "good", "how": "accepted_greedy", "generations": 1}
    assert by_key["bad"] == {**by_key["bad"], "response": "bad.1", "how": "refined", "generations": 3}
    # worse: worse -> worse.0/.1 (0, 0: keep worse.0) -> worse.0.0/.0.1 (0.7 accepted): 1 + 4
    assert by_key["worse"]["how"] == "refined" and by_key["worse"]["generations"] == 5
    assert by_key["worse"]["response"] == "worse.0.1"
    assert refiner.calls[0] == ["bad", "worse"]  # the accepted greedy answer is never refined
    assert len(results) == 2


def test_tree_search_budget_exhausted_falls_back_to_the_best_node():
    judge = ScriptedJudge({"bad.0": 0.4})
    config = SearchConfig(branch=2, select=1, max_depth=3, budget=2, output_format="markers")
    answers, _ = refine_answers(greedy_answers(), prompts(), 3, 0.5, TreeSearch(ScriptedRefiner(), judge, REFINE, config))
    by_key = {a["key"]: a for a in answers}
    assert by_key["bad"]["response"] == "bad.0" and by_key["bad"]["how"] == "best_node"
    assert by_key["worse"]["response"] == "worse" and by_key["worse"]["generations"] == 3  # root kept (ties: earliest)


def test_budget_without_room_for_an_expansion_keeps_the_greedy_answers():
    answers, results = refine_answers(greedy_answers(), prompts(), 1, 0.5, None)
    assert [a["response"] for a in answers] == ["good", "bad", "worse"] and not results
    assert [a["how"] for a in answers] == ["accepted_greedy", "greedy_unrefined", "greedy_unrefined"]
    config = SearchConfig(branch=2, budget=3)
    with pytest.raises(ValueError, match="search budget 3 != budget - 1 = 4"):
        refine_answers(greedy_answers(), prompts(), 5, 0.5, TreeSearch(ScriptedRefiner(), ScriptedJudge(), REFINE, config))


def metrics(tmp_path, name, prompt_strict, prompts=10):
    path = tmp_path / f"{name}.json"
    names = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
    write_json(path, {"num_prompts": prompts, "metrics": {m: prompt_strict + i / 100 for i, m in enumerate(names)}})
    return str(path)


def test_table_and_figure(tmp_path):
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, [{"key": 1, "generations": 1}, {"key": 2, "generations": 4}])
    rows = [{"method": "tree_search", "budget": 4, "scores": metrics(tmp_path, "t4", 0.3), "answers": str(answers)},
            {"method": "best_of_n", "budget": 4, "scores": metrics(tmp_path, "b4", 0.25), "answers": str(answers)},
            {"method": "best_of_n", "budget": 1, "scores": metrics(tmp_path, "b1", 0.1), "answers": str(answers)},
            {"method": "greedy", "budget": 1, "scores": metrics(tmp_path, "g", 0.2), "answers": None}]
    table = scaling_table(rows)
    assert list(table.columns) == ["method", "budget", "generations", "prompts", "prompt_strict", "inst_strict",
                                   "prompt_loose", "inst_loose"]
    assert list(zip(table["method"], table["budget"])) == [("greedy", 1), ("best_of_n", 1), ("best_of_n", 4),
                                                          ("tree_search", 4)]
    assert table["prompt_strict"].tolist() == [20.0, 10.0, 25.0, 30.0]
    assert table["generations"].tolist() == [1.0, 2.5, 2.5, 2.5] and table["inst_strict"].iloc[0] == 21.0
    figure = plot_scaling(table, tmp_path / "figures" / "inference_scaling.png", "test")
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.size == (720, 480)
    assert not list((tmp_path / "figures").glob("*.tmp*"))


def test_plan_sweeps_the_final_actor_with_the_final_refiner():
    plan = Plan(load_config([], {"spar": {"iterations": 2}}))
    points = [(p.method, p.budget) for p in plan.scaling]
    assert points == [("greedy", 1), ("best_of_n", 1), ("best_of_n", 3), ("best_of_n", 5), ("tree_search", 1),
                      ("tree_search", 3), ("tree_search", 5)]
    actor, refiner = plan.spar[-1].actor, plan.spar[-1].refiner
    greedy = plan.scaling[0].scores.inputs["responses"]
    assert greedy.kind == "generate" and greedy.inputs["model"] is actor
    assert greedy.inputs["prompts"].config["limit"] == 10
    bon = [p.answers for p in plan.scaling if p.method == "best_of_n"]
    judged = bon[0].inputs["judged"]
    assert all(b.inputs["judged"] is judged for b in bon)  # one sampling, nested budgets
    assert judged.inputs["refiner"] is refiner and judged.inputs["samples"].config["sampling"]["n"] == 5
    assert judged.inputs["samples"].inputs["model"] is actor
    search = [p.answers for p in plan.scaling if p.method == "tree_search"]
    assert all(s.inputs["judged"].inputs["samples"] is greedy and s.inputs["refiner"] is refiner for s in search)
    assert [s.config["budget"] for s in search] == [1, 3, 5] and "budget" not in search[0].config["search"]
    assert search[0].config["search"]["branch"] == 2 and search[0].config["judge"]["kind"] == "model"
    assert "inference_scaling" in plan.tables() and plan.figures() == ["inference_scaling"]
    # more budgets: the existing stages are kept, only the new budgets' stages are added ... except
    # best-of-N's sampling, whose k is the largest budget
    more = Plan(load_config([], {"spar": {"iterations": 2}, "eval": {"inference_scaling": {"budgets": [1, 3, 5, 9]}}}))
    assert {p.answers.key for p in plan.scaling if p.method == "tree_search"} < set(more.stages)
    off = Plan(load_config([], {"eval": {"inference_scaling": {"enabled": False}}}))
    assert not off.scaling and "inference_scaling" not in off.tables() and off.figures() == []


def test_plan_without_spar_uses_the_base_model_as_actor_and_refiner():
    plan = Plan(load_config([], {"spar": {"enabled": False}, "eval": {"inference_scaling": {"methods": ["tree_search"]}}}))
    base = plan.models[0][2]
    search = [p.answers for p in plan.scaling if p.method == "tree_search"]
    assert search and all(s.inputs["refiner"] is base for s in search)
    assert not any(p.method == "best_of_n" for p in plan.scaling)


def test_best_of_n_command(tmp_path):
    judged = tmp_path / "judged.jsonl"
    write_jsonl(judged, SAMPLES)
    out, counts = tmp_path / "answers.jsonl", tmp_path / "counts.json"
    proc = run(["ifplay", "scaling-best-of-n", "--judged", str(judged), "--out", str(out), "--counts", str(counts),
                "--settings", planned_settings("scaling_best_of_n", config={"budget": 2})])
    assert [a["response"] for a in read_jsonl(out)] == ["a1", "b0"]
    assert json.loads(counts.read_text()) == {"prompts": 2, "mean_generations": 2.0}
    assert json.loads(proc.stdout) == {"prompts": 2, "mean_generations": 2.0}
    bad = run(["ifplay", "scaling-best-of-n", "--judged", str(judged), "--out", str(out), "--counts", str(counts),
               "--settings", planned_settings("scaling_best_of_n", config={"budget": 9})], check=False)
    assert bad.returncode != 0 and "judged.jsonl: prompt 'a' has 4 samples below index 9" in bad.stderr


def test_diff_matches_scaling_rows_by_method_and_budget():
    from ifplay.reporting.experiments import table_deltas

    rows = {"method": ["greedy", "best_of_n", "best_of_n"], "budget": [1, 1, 3]}
    a = pd.DataFrame({**rows, "prompt_strict": [20.0, 0.0, 10.0]})
    b = pd.DataFrame({**rows, "prompt_strict": [10.0, 0.0, 20.0]})
    rows = table_deltas(a, b)
    assert {(r["method"], r["budget"]): r["cells"]["prompt_strict"]["delta"] for r in rows} == {
        ("greedy", 1): -10.0, ("best_of_n", 1): 0.0, ("best_of_n", 3): 10.0}
