"""SPaR's baselines through the whole workflow with the real model (SmolLM2-135M): one tiny
iteration of Self-Rewarding and of Meta-Rewarding, their counts, tables and rows, and a second run
that has nothing to do."""

import json

import pandas as pd
import pytest
import yaml

from conftest import shared
from test_workflow import snakemake

pytestmark = pytest.mark.slow


def tiny_self_rewarding(smollm2, ifeval_data) -> dict:
    return {
        "experiment": "self-rewarding",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"ifeval": str(ifeval_data), "llmbar": str(shared("llmbar"))},
        "eval": {"general": {"enabled": False}, "max_new_tokens": 16,
                 "benchmarks": {"ifeval": {"limit": 2}, "dev": {"limit": 3}, "followbench": {"enabled": False}},
                 "llmbar": {"limit": 1, "votes": [1]}, "refinement": {"enabled": False},
                 "inference_scaling": {"enabled": False}},
        "spar": {"enabled": False, "prompt_limit": 4, "judge": {"votes": 1, "max_new_tokens": 16},
                 "judge_eval": {"limit": 3}},
        "self_rewarding": {"enabled": True, "sampling": {"k": 3, "max_new_tokens": 24},
                           "judge": {"samples": 2, "max_new_tokens": 8},
                           "dpo": {"max_steps": 1, "max_length": 160}},
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("self-rewarding")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny_self_rewarding(smollm2, ifeval_data)))
    snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir


def test_self_rewarding_iteration_end_to_end(workdir):
    exp = workdir / "results" / "experiments" / "self-rewarding"
    manifest = json.loads((exp / "manifest.json").read_text())
    [entry] = manifest["self_rewarding"]
    judged = [json.loads(line) for line in (workdir / entry["judge_counts"]).parent.joinpath("judged.jsonl")
              .read_text().splitlines()]
    assert len(judged) == 4 * 3 and all(len(r["scores"]) == 2 for r in judged)
    assert all(r["score"] is None or 0 <= r["score"] <= 5 for r in judged)
    counts = json.loads((workdir / entry["pair_counts"]).read_text())
    pairs = [json.loads(line) for line in (workdir / entry["pair_counts"]).parent.joinpath("pairs.jsonl")
             .read_text().splitlines()]
    assert counts["pairs"] == len(pairs) and counts["prompts"] == 4
    assert counts["pairs"] + counts["prompts_all_equal"] + counts["prompts_too_few_scored"] == 4
    for pair in pairs:  # the best against the worst, strictly better
        assert pair["chosen_score"] > pair["rejected_score"]
    table = pd.read_csv(exp / "tables" / "self_rewarding.csv")
    assert table.loc[0, "responses"] == 12 and table.loc[0, "judge_samples"] == 24
    assert table.loc[0, "pairs"] == counts["pairs"]
    ifeval = pd.read_csv(exp / "tables" / "ifeval.csv")
    assert list(zip(ifeval["model"], ifeval["iteration"])) == [("smollm2", 0), ("smollm2-Self-Rewarding", 1)]
    llmbar = pd.read_csv(exp / "tables" / "llmbar.csv")  # the self-judging models are judges' rows
    assert {"smollm2", "smollm2-Self-Rewarding"} <= set(llmbar["judge"])
    judge = pd.read_csv(exp / "tables" / "judge.csv")
    assert {"smollm2", "smollm2-Self-Rewarding"} <= set(judge["model"])
    assert not {"tree_search", "refinements", "judgements"} & {s["kind"] for s in manifest["stages"]}


def test_a_second_run_has_nothing_to_do(workdir):
    out = snakemake(workdir, "--configfile", "tiny.yaml", "-n").stdout
    assert "Nothing to be done" in out


def tiny_meta_rewarding(smollm2, ifeval_data) -> dict:
    config = tiny_self_rewarding(smollm2, ifeval_data)
    del config["self_rewarding"]
    config["experiment"] = "meta-rewarding"
    config["meta_rewarding"] = {"enabled": True, "sampling": {"k": 3, "max_new_tokens": 24},
                                "judge": {"samples": 4, "max_new_tokens": 8}, "length_control_rho": 0.2,
                                "dpo": {"max_steps": 1, "max_length": 256}}
    return config


@pytest.fixture(scope="module")
def meta_workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("meta-rewarding")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny_meta_rewarding(smollm2, ifeval_data)))
    snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_meta_rewarding_iteration_end_to_end(meta_workdir):
    exp = meta_workdir / "results" / "experiments" / "meta-rewarding"
    manifest = json.loads((exp / "manifest.json").read_text())
    [entry] = manifest["meta_rewarding"]
    judged = lines((meta_workdir / entry["judge_counts"]).parent / "judged.jsonl")
    assert len(judged) == 4 * 3 and all(len(r["scores"]) == 4 for r in judged)
    verdicts = lines((meta_workdir / entry["verdict_counts"]).parent / "verdicts.jsonl")
    # one response per prompt with two or more parsable judgements, every ordered pair of those
    disputed = {r["key"] for r in judged if sum(s is not None for s in r["scores"]) >= 2}
    assert {v["key"] for v in verdicts} == set(disputed)
    for key in disputed:
        [sample] = {v["sample"] for v in verdicts if v["key"] == key}
        record = next(r for r in judged if r["key"] == key and r["sample"] == sample)
        valid = sum(s is not None for s in record["scores"])
        assert sum(v["key"] == key for v in verdicts) == valid * (valid - 1)
    assert all(v["verdict"] in ("A", "B", None) and v["text"].startswith("Winner: Judgement") for v in verdicts)
    counts = json.loads((meta_workdir / entry["pair_counts"]).read_text())
    pairs = lines((meta_workdir / entry["pair_counts"]).parent / "pairs.jsonl")
    actor = [p for p in pairs if p["kind"] == "actor"]
    judge = [p for p in pairs if p["kind"] == "judge"]
    assert (len(actor), len(judge)) == (counts["actor"]["pairs"], counts["judge"]["pairs"])
    assert all(p["chosen_score"] > p["rejected_score"] for p in actor)
    assert all(p["chosen_elo"] > p["rejected_elo"] for p in judge)
    table = pd.read_csv(exp / "tables" / "meta_rewarding.csv")
    assert table.loc[0, ["responses", "judge_samples", "battles"]].tolist() == [12, 48, len(verdicts)]
    ifeval = pd.read_csv(exp / "tables" / "ifeval.csv")
    assert list(zip(ifeval["model"], ifeval["iteration"])) == [("smollm2", 0), ("smollm2-Meta-Rewarding", 1)]
    assert {"smollm2", "smollm2-Meta-Rewarding"} <= set(pd.read_csv(exp / "tables" / "llmbar.csv")["judge"])
    assert {"smollm2", "smollm2-Meta-Rewarding"} <= set(pd.read_csv(exp / "tables" / "judge.csv")["model"])


def test_a_second_meta_rewarding_run_has_nothing_to_do(meta_workdir):
    assert "Nothing to be done" in snakemake(meta_workdir, "--configfile", "tiny.yaml", "-n").stdout
