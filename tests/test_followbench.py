"""FollowBench in the workflow: its plan (items, greedy answers, the judge, the scores), the judge stage
with a scripted judge (journal, raw outputs, unparseable verdicts kept) and the scores' table rows.
The rule checks, the verdict parser and the metrics are tested in tests/test_followbench_scoring.py."""

from __future__ import annotations

import json

import pytest

from conftest import shared
from ifplay.core.config import load_config
from ifplay.core.records import journal_path, read_jsonl
from ifplay.core.sources import SourceError
from ifplay.evaluation import followbench
from ifplay.evaluation.benchmarks import BENCHMARKS
from ifplay.generation.backends import Backend
from ifplay.plan import Plan
from ifplay.reporting.tables import benchmark_table, breakdown_table
from ifplay.scoring import followbench as fb


@pytest.fixture(scope="module")
def data():
    return shared("followbench")


def plan(data, **followbench_cfg) -> Plan:
    cfg = {"eval": {"benchmarks": {"ifeval": {"enabled": False}, "dev": {"enabled": False},
                                   "followbench": followbench_cfg},
                    "inference_scaling": {"enabled": False}, "general": {"enabled": False}},
           "data": {"followbench": str(data)}, "spar": {"enabled": False}}
    return Plan(load_config([], cfg))


def stages_of(p: Plan, kind: str) -> list:
    return [s for s in p.stages.values() if s.kind == kind]


def test_the_plan_judges_and_scores_every_model(data):
    p = plan(data)
    [items] = stages_of(p, "followbench_prompts")
    assert items.inputs == {"model": p.base}  # the base model's tokenizer counts the prompts
    assert items.config["limit"] == 2 and items.config["max_prompt_tokens"] == 4096
    assert set(items.config["origin"]["files"]) == set(followbench.FILES)
    [answers] = stages_of(p, "generate")
    assert answers.inputs["prompts"] is items and answers.config["sampling"]["max_new_tokens"] == 128
    assert answers.config["sampling"]["temperature"] == 0 and answers.runtime["max_prompt_tokens"] == 4096
    [judged] = stages_of(p, "followbench_judgements")
    assert judged.inputs == {"prompts": items, "responses": answers, "judge": p.base}  # the base model judges
    assert judged.config["judge"]["model"] is None and judged.config["judge"]["max_new_tokens"] == 64
    [scores] = stages_of(p, "followbench_scores")
    assert scores.inputs == {"prompts": items, "responses": answers, "judged": judged}
    assert scores.config == {"judge": p.base_label()}
    assert [(e.benchmark, e.scores) for e in p.evaluations] == [("followbench", scores)]
    assert p.tables() == ["followbench", "followbench_categories"]


def test_without_a_judge_the_answers_are_shared_and_only_rules_score(data):
    judged, rules = plan(data), plan(data, judge={"enabled": False})
    assert not stages_of(rules, "followbench_judgements")
    [scores] = stages_of(rules, "followbench_scores")
    assert scores.config == {"judge": "none"} and "judged" not in scores.inputs
    assert stages_of(judged, "generate")[0].key == stages_of(rules, "generate")[0].key


def test_a_served_judge_is_named_in_the_key_and_a_checkpoint_is_an_input(data, tmp_path):
    served = plan(data, judge={"model": "gpt-4o-2024-08-06", "backend": "openai"})
    [judged] = stages_of(served, "followbench_judgements")
    assert judged.config["judge"]["model"] == "gpt-4o-2024-08-06" and judged.config["judge"]["backend"]["name"] == "openai"
    assert "judge" not in judged.inputs
    assert stages_of(served, "followbench_scores")[0].config == {"judge": "gpt-4o-2024-08-06"}
    other = plan(data, judge={"model": "gpt-4o-mini-2024-07-18", "backend": "openai"})
    assert stages_of(other, "followbench_judgements")[0].key != judged.key
    assert stages_of(other, "generate")[0].key == stages_of(served, "generate")[0].key


def test_the_data_source_is_checked(tmp_path, data):
    with pytest.raises(SourceError, match="data.followbench.*no such directory"):
        followbench.data_origin(str(tmp_path / "nowhere"))
    (tmp_path / "content_constraints.json").write_text((data / "content_constraints.json").read_text())
    with pytest.raises(SourceError, match="lacks situation_constraints.json"):
        followbench.data_origin(str(tmp_path))
    with pytest.raises(SourceError, match="not supported"):
        followbench.data_origin("hf:someone/FollowBench")
    assert followbench.data_origin("hf:YuxinJiang/FollowBench") == {"hub": followbench.HUB_ID,
                                                                    "revision": followbench.HUB_REVISION}


class ScriptedJudge(Backend):
    """Knows the judge prompt of each (item, answer): answers it with a list of YES as long as the
    item's level, after a line of prose; "I cannot tell." (unparseable) for the answer "mute"."""

    name = "scripted"

    def __init__(self, items, answers, fail_after: int | None = None):
        self.levels = {fb.judge_prompt(i.category, list(i.path), answers[i.key]): (i.level, answers[i.key])
                       for i in items if i.rule is None}
        self.calls = 0
        self.fail_after = fail_after

    def chat(self, conversations, params, progress=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        out = []
        for conversation in conversations:
            level, answer = self.levels[conversation[0]["content"]]
            out.append(["I cannot tell." if answer == "mute" else "Constraints checked.\n" + str(["YES"] * level)])
        return out


def items_and_answers(data, text: str):
    items = fb.load_items(data, groups=1)
    return items, {item.key: text for item in items}


def test_the_judge_stage_journals_raw_outputs_and_keeps_unparseable_ones(data, tmp_path):
    items, answers = items_and_answers(data, "a good answer")
    answers[next(i.key for i in items if i.rule is None and i.level == 2)] = "mute"
    out = tmp_path / "judged.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        followbench.judge_items(items, answers, str(out), ScriptedJudge(items, answers, fail_after=1), 16, chunk=8)
    assert len(read_jsonl(journal_path(out))) == 8  # the first chunk survives the kill
    judge = ScriptedJudge(items, answers)
    records = followbench.judge_items(items, answers, str(out), judge, 16, chunk=8)
    judged = [i for i in items if i.rule is None]
    assert [r["key"] for r in records] == [i.key for i in judged] and judge.calls == 2  # 12 left: two chunks
    bad = [r for r in records if r["error"] is not None]
    assert len(bad) == 1 and bad[0]["output"] == "I cannot tell." and bad[0]["hard"] is None
    assert all(r["hard"] == 1 and r["soft"] == 1.0 for r in records if r["error"] is None)


def test_scores_give_the_table_row_and_one_row_per_category(data, tmp_path):
    items, answers = items_and_answers(data, "a good answer")
    records = [(item, {**followbench.item_record(item), "prompt_tokens": 10, "truncated": item.category == "example"})
               for item in items]
    responses = [{"prompt": item.instruction, "response": answers[item.key]} for item in items]
    judged = followbench.judge_items(items, answers, str(tmp_path / "judged.jsonl"), ScriptedJudge(items, answers), 16)
    result = followbench.score_records(records, responses, judged, judge="scripted")
    metrics = result["metrics"]
    assert set(metrics) == set(followbench.TABLE_COLUMNS)
    assert metrics["judge"] == "scripted" and metrics["truncated"] == 5 and metrics["unparseable"] == 0
    assert metrics["rule_items"] == sum(i.rule is not None for i in items) and metrics["judged_items"] == len(judged)
    # every judged answer is judged YES; the rule-checked ones ("a good answer") fail their rules
    groups = {i.category: i.rule is None for i in items}
    judged_share = 100 * sum(groups.values()) / len(groups)
    assert metrics["hsr_l1"] == pytest.approx(judged_share) and metrics["ssr_avg"] == pytest.approx(judged_share)
    assert [row["category"] for row in result["breakdown"]] == list(fb.CATEGORIES)
    example = next(row for row in result["breakdown"] if row["category"] == "example")
    assert example["truncated"] == 5 and example["rule_groups"] == 1 and example["hsr_avg"] == 0
    assert len(result["per_item"]) == len(items)

    scores = tmp_path / "metrics.json"
    scores.write_text(json.dumps(result))
    rows = [{"model": "m", "iteration": 0, "scores": str(scores)}]
    table = benchmark_table("followbench", rows)
    assert list(table.columns) == ["model", "iteration", *BENCHMARKS["followbench"].metrics]
    categories = breakdown_table("followbench", rows)
    assert list(categories["category"]) == list(fb.CATEGORIES) and list(categories.columns[:3]) == ["model", "iteration", "category"]


def test_responses_missing_an_item_are_an_error(data):
    items, answers = items_and_answers(data, "x")
    responses = [{"prompt": item.instruction, "response": "x"} for item in items[1:]]
    with pytest.raises(Exception, match=items[0].key):
        fb.responses_by_prompt(items, responses)


def test_score_command_without_a_judge_needs_the_rule_checked_responses_only(data, tmp_path, capsys):
    import argparse

    items = fb.load_items(data)
    rule_items = [item for item in items if item.rule is not None]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"prompt": i.instruction, "response": i.target}) + "\n" for i in rule_items))
    args = argparse.Namespace(data=str(data), responses=str(responses), judge="none", groups=None, json=True)
    fb.cmd_score(args)
    out = json.loads(capsys.readouterr().out)
    assert sum(out[c]["rule"]["groups"] for c in fb.CATEGORIES) == out["merged"]["rule"]["groups"] == 70
    with pytest.raises(fb.FollowBenchScoringError, match="no response"):  # a judge needs every response
        judged = tmp_path / "judge.jsonl"
        judged.write_text("")
        fb.cmd_score(argparse.Namespace(**{**vars(args), "judge": str(judged)}))
