"""LLMBar in the workflow: its plan (every refiner judges the same items), the judgement stage with a
scripted judge (greedy and nested sampled votes, raw texts kept, resumable) and the tables. The
pointwise expansion and the metrics are tested in tests/test_llmbar_scoring.py."""

from __future__ import annotations

import json

import pytest

from conftest import shared
from ifplay.core.config import load_config
from ifplay.core.sources import model_label
from ifplay.core.records import journal_path, read_jsonl
from ifplay.evaluation import llmbar
from ifplay.generation.backends import Backend
from ifplay.plan import Plan
from ifplay.reporting.tables import llmbar_tables
from ifplay.scoring import llmbar as lb

JUDGE = "Instruction:\n{prompt}\n\nResponse:\n{response}\n\nDoes it follow?\n<<<assistant>>>\nFinal Judgement:"


@pytest.fixture(scope="module")
def data():
    return shared("llmbar")


def plan(data, **overrides) -> Plan:
    cfg = {"data": {"llmbar": str(data) if data else None},
           "eval": {"benchmarks": {"ifeval": {"enabled": False}, "dev": {"enabled": False},
                                   "followbench": {"enabled": False}},
                    "inference_scaling": {"enabled": False}, "llmbar": {"limit": 2, **overrides}}}
    return Plan(load_config([], cfg))


def test_every_refiner_judges_the_same_items(data):
    p = plan(data)
    [items] = [s for s in p.stages.values() if s.kind == "llmbar_items"]
    assert items.config["limit"] == 2 and set(items.config["origin"]["files"]) == set(lb.FILES.values())
    judged = [s for s in p.stages.values() if s.kind == "llmbar_judgements"]
    refiners = [stage for _, _, stage in p.refiners]
    assert [s.inputs["refiner"] for s in judged] == refiners and len(refiners) == 2  # R_0 (the base model), R_1
    assert all(s.inputs["pointwise"] is items for s in judged)
    spar_judge = p.config["spar"]["judge"]
    # the votes drawn: the largest k of eval.llmbar.votes and spar.judge.votes; SPaR's judge sampling
    assert judged[0].config["judge"]["votes"] == max(3, spar_judge["votes"])
    assert judged[0].config["judge"]["temperature"] == spar_judge["temperature"]
    assert [(e.judge, e.iteration) for e in p.llmbar] == [(label, it) for label, it, _ in p.refiners]
    assert {"llmbar", "llmbar_votes"} <= set(p.tables())
    # more k's re-use the same votes when the largest k does not change
    same = plan(data, votes=[1, 2, 3])
    assert {s.key for s in same.stages.values() if s.kind == "llmbar_judgements"} == {s.key for s in judged}


def test_named_judges_and_the_base_model_before_sft(data, smollm2, tmp_path):
    served = {"model": "gpt-4o-mini-2024-07-18", "backend": "openai"}
    p = plan(data, judges=[served, {"model": str(smollm2), "backend": None}])
    [*refiners, api, local] = [s for s in p.stages.values() if s.kind == "llmbar_judgements"]
    assert len(refiners) == 2 and "refiner" not in api.inputs  # the served judge: by name, no checkpoint
    assert api.config["judge"]["model"] == served["model"] and api.config["backend"]["name"] == "openai"
    assert local.inputs["refiner"].kind == "base_model" and local.config["judge"]["model"] is None
    assert [(e.judge, e.iteration) for e in p.llmbar][2:] == [(served["model"], None), (model_label(str(smollm2)), None)]
    # a named judge shares the refiners' votes and items, so adding one re-runs nothing else
    assert {s.key for s in refiners} == {s.key for s in plan(data).stages.values() if s.kind == "llmbar_judgements"}
    # with SFT, R_0 is the SFT model and the base model judges too (Table 2's first SPaR row)
    sft = Plan(load_config([], {"data": {"llmbar": str(data)}, "sft": {"enabled": True},
                                "eval": {"inference_scaling": {"enabled": False}}}))
    rows = [(e.judge, e.iteration) for e in sft.llmbar]
    assert rows[0] == (sft.base_label(), 0) and rows[1][0].endswith("-SFT") and rows[1][1] == 0
    # named judges come first in the tables (no iteration), then the refiners in plan order
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(llmbar.score_records(items(), [
        {"key": i["key"], "greedy": 1, "votes": [1, 1, 1]} for i in items()], ks=[1], main=1)))
    main, votes = llmbar_tables([{"judge": j, "iteration": it, "scores": str(metrics)}
                                 for j, it in [("R_0", 0), ("R_1", 1), ("gpt-4o-mini", None)]])
    assert list(main["judge"].unique()) == ["gpt-4o-mini", "R_0", "R_1"] and main["iteration"].isna().sum() == len(main) // 3


def test_without_data_or_spar_nothing_is_planned(data):
    assert not plan(None).llmbar
    assert not Plan(load_config([], {"data": {"llmbar": str(data)}, "spar": {"enabled": False}})).llmbar


class ScriptedJudge(Backend):
    """"Yes" for responses that contain "good", "No" otherwise; an unparseable text for "mute"."""

    name = "scripted"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def chat(self, conversations, params, progress=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        out = []
        for conversation in conversations:
            response = conversation[0]["content"].split("Response:\n", 1)[1]
            text = " maybe" if "mute" in response else " Yes" if "good" in response else " No"
            out.append([text] * params.n)
        return out


def items() -> list[dict]:
    out = []
    for i, (text, label) in enumerate([("good", 1), ("bad", 0), ("mute", 1), ("good", 0)]):
        subset = lb.SUBSETS[i % 2]
        out.append({"key": f"{subset}/{i}/1", "subset": subset, "pair": i, "output": 1, "prompt": "p",
                    "response": text, "label": label})
    return out


def test_judgements_keep_raw_texts_and_resume(tmp_path):
    judge = llmbar.LLMBarJudge(template={"sha256": "x"}, votes=3, temperature=0.7, top_p=1.0, max_new_tokens=8,
                               model=None)
    out = tmp_path / "judged.jsonl"
    with pytest.raises(RuntimeError):
        llmbar.judge_items(items(), str(out), ScriptedJudge(fail_after=2), JUDGE, judge, seed=0, chunk=2)
    assert len(read_jsonl(journal_path(out))) == 2  # the first chunk (two calls: greedy and sampled)
    backend = ScriptedJudge()
    records = llmbar.judge_items(items(), str(out), backend, JUDGE, judge, seed=0, chunk=2)
    assert backend.calls == 2 and [r["key"] for r in records] == [i["key"] for i in items()]
    assert records[0]["greedy_text"] == "Final Judgement: Yes" and records[0]["votes"] == [1, 1, 1]
    assert records[2]["greedy"] is None and records[2]["votes"] == [None] * 3  # kept, counted as invalid

    scores = llmbar.score_records(items(), records, ks=[1, 3], main=3)
    natural = next(r for r in scores["rows"] if r["subset"] == "Natural")
    assert natural["items"] == 2 and natural["unlabelled"] == 1 and natural["invalid"] == 1  # "mute"
    assert {r["votes"] for r in scores["votes"]} == {"greedy", 1, 3}
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(scores))
    main, votes = llmbar_tables([{"judge": "R_0", "iteration": 0, "scores": str(metrics)}])
    assert list(main.columns) == ["judge", "iteration", *llmbar.TABLE_COLUMNS]
    assert list(votes.columns[:3]) == ["judge", "iteration", "votes"] and set(votes["votes"]) == {"greedy", "1", "3"}


def test_diff_matches_llmbar_rows_with_and_without_an_iteration(tmp_path):
    import pandas as pd

    from ifplay.reporting.experiments import table_deltas
    from ifplay.reporting.tables import read_table, write_table

    def table(name: str, accuracy: list[float]):
        frame = pd.DataFrame({"judge": ["gpt-4o-mini", "R_0", "R_0"], "iteration": [None, 0, 0],
                              "votes": ["greedy", "greedy", "3"], "subset": ["Natural"] * 3, "accuracy": accuracy})
        csv, _ = write_table(frame.astype({"iteration": "Int64"}), tmp_path / name)
        return read_table(csv)

    rows = table_deltas(table("a", [70.0, 50.0, 55.0]), table("b", [70.0, 60.0, 50.0]))
    assert {(r["judge"], r["iteration"], r["votes"]): r["cells"]["accuracy"]["delta"] for r in rows} == {
        ("gpt-4o-mini", None, "greedy"): 0.0, ("R_0", 0, "greedy"): 10.0, ("R_0", 0, "3"): -5.0}
