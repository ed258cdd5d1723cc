"""Refinement accuracy (SPaR Tables 3, 10): the strategies' search shapes, the tasks, the answers
taken from the trees (scripted refiner and judge, as in tests/test_tree_search.py), the accuracy
under a judge's verdicts, the plan and the table. The whole path runs with the real model in
tests/test_workflow_spar.py."""

from __future__ import annotations

import json

import pytest

from conftest import shared
from ifplay.core.config import ConfigError, load_config
from ifplay.evaluation import refinement as rf
from ifplay.plan import Plan
from ifplay.reporting.tables import refinement_table
from ifplay.spar.tree_search import SearchConfig, TreeSearch
from test_tree_search import REFINE, ScriptedJudge, ScriptedRefiner, roots

SEARCH = {"algorithm": "bfs", "branch": 2, "select": 1, "max_depth": 2, "end_gate": 0.5, "selection": "greedy",
          "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64, "output_format": "plain", "template": {"sha256": "x"}}


def tree(strategy: str, budget: int, values: dict, names=("a",)):
    shape = rf.strategy_search(strategy, budget, SEARCH)
    config = SearchConfig(**{k: v for k, v in shape.items() if k not in ("template", "output_format")},
                          budget=budget, output_format="markers")
    refiner = ScriptedRefiner()
    return TreeSearch(refiner, ScriptedJudge(values), REFINE, config).run(roots(*names)), refiner, shape


def test_each_strategy_is_a_search_shape_within_its_budget():
    [greedy], refiner, shape = tree("greedy", 1, {})
    assert refiner.params[0].temperature == 0.0 and refiner.params[0].n == 1 and len(greedy.nodes) == 2
    [best], refiner, _ = tree("best_of_n", 3, {"a.1": 0.4, "a.2": 0.4})  # one expansion of 3, none accepted
    assert len(refiner.calls) == 1 and refiner.params[0].n == 3 and len(best.nodes) == 4
    assert rf.answer(best, 3)["response"] == "a.1" and rf.answer(best, 3)["how"] == "best_refinement"  # ties: earliest
    # iterative: each refinement refines the last one with its own critique, until one is accepted
    [iterative], refiner, _ = tree("iterative", 4, {"a.0.0.0": 0.9})
    assert [c for [c] in refiner.calls] == ["a", "a.0", "a.0.0"] and iterative.success
    assert rf.answer(iterative, 1) == {"key": "a", "sample": 0, "prompt": "instruction a", "refinements": 3,
                                        "response": "a.0.0.0", "value": 0.9, "node": 3, "how": "accepted"}
    [bfs], refiner, shape = tree("bfs", 4, {})
    assert shape["algorithm"] == "bfs" and sum(p.n for p in refiner.params) == 4 and rf.answer(bfs, 2)["refinements"] == 4
    assert tree("dfs", 4, {})[2]["algorithm"] == "dfs"


@pytest.mark.parametrize("strategy, budget, message", [
    ("greedy", 2, "one refinement"), ("bfs", 1, "below one expansion"), ("beam", 2, "unknown strategy"),
    ("best_of_n", 0, "< 1")])
def test_impossible_strategies_name_their_config_key(strategy, budget, message):
    with pytest.raises(ConfigError, match=message):
        rf.strategy_search(strategy, budget, SEARCH)


def test_an_unparsed_tree_has_no_answer():
    refiner = ScriptedRefiner(invalid={"a.0", "a.1"})
    [result] = TreeSearch(refiner, ScriptedJudge(), REFINE, SearchConfig(branch=2, max_depth=1, budget=2)).run(roots("a"))
    assert rf.answer(result, 2) == {"key": "a", "sample": 0, "prompt": "instruction a", "refinements": 2,
                                     "response": "", "value": None, "node": None, "how": "unparsed"}


def judged(key: str, label, critique="wrong") -> dict:
    return {"key": key, "sample": 0, "prompt": f"p {key}", "response": f"r {key}", "label": label, "value": 0.0,
            "votes": [label], "n_invalid": 0, "tie": False, "critique": critique, "critiques": [critique]}


def test_tasks_are_the_answers_judged_no_that_the_oracle_fails():
    records = [judged("a", 0), judged("b", 1), judged("c", 0), judged("d", 0, critique=""), judged("e", 0), judged("f", None)]
    oracle = [{"id": f"{k}/0", "oracle": o} for k, o in zip("abcdef", [0, 0, 1, 0, 0, 0])]
    assert [t["key"] for t in rf.select_tasks(records, oracle, None, True)] == ["a", "e"]
    assert [t["key"] for t in rf.select_tasks(records, oracle, None, False)] == ["a", "c", "e"]
    assert [t["key"] for t in rf.select_tasks(records, oracle, 1, True)] == ["a"]
    with pytest.raises(rf.RefinementError, match="no oracle label"):
        rf.select_tasks(records, oracle[:2], None, True)


def test_accuracy_counts_unparsed_and_unlabelled_answers_as_wrong(tmp_path):
    answers = [{"key": k, "response": "x", "how": how, "refinements": n}
               for k, how, n in [("a", "accepted", 1), ("b", "best_refinement", 3), ("c", "unparsed", 2), ("d", "accepted", 2)]]
    verdicts = [{"key": k, "label": label} for k, label in [("a", 1), ("b", 0), ("c", 1), ("d", None)]]
    metrics = rf.refinement_metrics(answers, verdicts)
    assert metrics == {"tasks": 4, "accepted": 1, "unparsed": 1, "unlabelled": 1, "accuracy": 25.0, "mean_refinements": 2.0}
    with pytest.raises(rf.RefinementError, match="no judgement"):
        rf.refinement_metrics(answers, verdicts[:3])
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    table = refinement_table([{"refiner": "R_0", "iteration": 0, "strategy": "greedy", "budget": 1, "judge": "oracle",
                               "scores": str(tmp_path / "m.json")}])
    assert list(table.columns) == rf.TABLE_COLUMNS and table.loc[0, "accuracy"] == 25.0


def plan(**refinement) -> Plan:
    return Plan(load_config([], {"eval": {"benchmarks": {"ifeval": {"enabled": False}, "followbench": {"enabled": False}},
                                          "inference_scaling": {"enabled": False}, "refinement": refinement}}))


def test_every_refiner_refines_the_same_tasks_and_two_judges_score_them():
    p = plan(strategies={"greedy": [1], "best_of_n": [3], "iterative": [], "bfs": [4], "dfs": []})
    [tasks] = [s for s in p.stages.values() if s.kind == "refinement_tasks"]
    r0_judge_eval = p.judge_evaluations[0].metrics
    assert tasks.inputs["judged"] is r0_judge_eval and tasks.files == {"judged": "judged.jsonl", "oracle": "per_item.jsonl"}
    refined = [s for s in p.stages.values() if s.kind == "refinements"]
    assert [(s.inputs["refiner"], s.config["strategy"], s.config["budget"]) for s in refined] == [
        (refiner, strategy, budget) for _, _, refiner in p.refiners for strategy, budget in
        [("greedy", 1), ("best_of_n", 3), ("bfs", 4)]]
    assert all(s.inputs["tasks"] is tasks and s.files == {"prompts": "prompts.jsonl"} for s in refined)
    final_label, _, final = p.refiners[-1]
    assert {e.judge for e in p.refinement} == {final_label, "oracle"} and len(p.refinement) == 2 * len(refined)
    for e in p.refinement:
        judged = e.scores.inputs["judged"]
        if e.judge == "oracle":
            assert judged.config["judge"] == {"kind": "verifier"} and "refiner" not in judged.inputs
        else:
            assert judged.inputs["refiner"] is final and judged.config["judge"]["kind"] == "model"
    assert "refinement" in p.tables() and len(p.manifest()["refinement"]) == len(p.refinement)
    # another strategy adds its stages and re-runs none of the others
    fewer = plan(strategies={"greedy": [1], "best_of_n": [], "iterative": [], "bfs": [4], "dfs": []})
    assert set(fewer.stages) < set(p.stages)


def test_refinement_needs_the_held_out_judgements():
    assert not plan(enabled=False).refinement
    off = Plan(load_config([], {"spar": {"judge_eval": {"enabled": False}}}))
    assert not off.refinement and not [s for s in off.stages.values() if s.kind.startswith("refinement")]
    # an impossible budget fails when the plan is made, naming the key
    with pytest.raises(ConfigError, match="eval.refinement.strategies.bfs: budget 1"):
        plan(strategies={"greedy": [], "best_of_n": [], "iterative": [], "bfs": [1], "dfs": []})


def test_the_default_refines_greedily_and_by_a_two_level_search():
    p = Plan(load_config([], {"data": {"llmbar": str(shared("llmbar"))}}))
    assert {(e.strategy, e.budget) for e in p.refinement} == {("greedy", 1), ("bfs", 4)}
    [tasks] = [s for s in p.stages.values() if s.kind == "refinement_tasks"]
    assert tasks.config == {"limit": 10, "require_oracle_failure": True}


def test_named_judges_judge_the_refinements_by_name_or_as_a_checkpoint(smollm2):
    from ifplay.core.settings import parse_stage
    from ifplay.spar.stages import JudgeSettings, NamedModelJudgeConfig

    p = plan(strategies={"greedy": [1], "best_of_n": [], "iterative": [], "bfs": [], "dfs": []},
             judges=[{"model": "gpt-4o-2024-08-06", "backend": "openai"},
                     {"model": str(smollm2), "backend": None}])
    by_judge = {e.judge: e.scores.inputs["judged"] for e in p.refinement}
    assert len(by_judge) == 4 and "gpt-4o-2024-08-06" in by_judge and "oracle" in by_judge
    served = by_judge["gpt-4o-2024-08-06"]
    # Acc-GPT: the served model judges by its name with the refiners' template and votes, no checkpoint
    assert "refiner" not in served.inputs and served.config["backend"]["name"] == "openai"
    settings, _ = parse_stage(JudgeSettings, served.settings())
    assert isinstance(settings.config.judge, NamedModelJudgeConfig)
    assert settings.config.judge.model == "gpt-4o-2024-08-06"
    assert settings.config.judge.votes == p.config["spar"]["judge"]["votes"]
    # a checkpoint judges as a refiner would: its base_model stage is the refiner input
    [local] = [j for name, j in by_judge.items() if name not in {"gpt-4o-2024-08-06", "oracle", p.refiners[-1][0]}]
    assert local.inputs["refiner"].kind == "base_model" and "model" not in local.config["judge"]
