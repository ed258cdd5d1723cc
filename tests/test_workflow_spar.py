"""One tiny SPaR iteration through the whole workflow, with the real model; then the model judge
as a second experiment that shares the sampling stage. The initial-SFT experiment on the teacher's
data: tests/test_workflow_spar_sft.py."""

import json

import pandas as pd
import pytest
import yaml

from conftest import run, shared
from test_workflow import job_counts, snakemake

pytestmark = pytest.mark.slow


def tiny_config(smollm2, ifeval_data, llmbar=None) -> dict:
    """The tiny SPaR experiment (tests/test_workflow_spar_sft.py starts from it too); ``llmbar``: the
    LLMBar data directory (each refiner then judges its first pair of each subset)."""
    return {
        "experiment": "spar-verifier",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"ifeval": str(ifeval_data), "llmbar": str(llmbar) if llmbar else None},
        "eval": {"general": {"enabled": False}, "max_new_tokens": 16, "benchmarks": {"ifeval": {"limit": 2}, "dev": {"limit": 8}, "followbench": {"enabled": False}},
                 "llmbar": {"limit": 1, "votes": [1]},
                 "refinement": {"limit": None, "require_oracle_failure": False,
                                "strategies": {"greedy": [], "best_of_n": [], "iterative": [2], "bfs": [], "dfs": []}},
                 "inference_scaling": {"limit": 2, "budgets": [1, 3], "sampling": {"max_new_tokens": 16},
                                       "search": {"branch": 2, "select": 1, "max_depth": 2, "max_new_tokens": 16}}},
        "spar": {
            "enabled": True,
            "prompt_limit": 6,
            "sampling": {"k": 3, "max_new_tokens": 32},
            "judge": {"kind": "verifier", "votes": 2, "max_new_tokens": 32},
            "search": {"branch": 2, "select": 1, "max_depth": 2, "budget": 4, "max_new_tokens": 32,
                       "output_format": "plain"},
            "judge_eval": {"limit": 8},  # the dev evaluation's eight answers: shared with it
            # the release's caps (the CPU default caps each judgement kind at 6)
            "rft_mix": {"refinements": 4000, "tree_judgements_positive": 1500, "tree_judgements_negative": 1000,
                        "sample_judgements_yes": 2500, "sample_judgements_no": 500, "total": 9500},
            "actor_dpo": {"max_steps": 1, "max_length": 160},
            "refiner_rft": {"max_steps": 1, "max_length": 256},
        },
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("spar")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(smollm2, ifeval_data, shared("llmbar"))))
    # the overlays test other things: the evaluations that read the final refiner off
    no_scaling = {"inference_scaling": {"enabled": False}, "refinement": {"enabled": False}, "llmbar": {"enabled": False}}
    (workdir / "model-judge.yaml").write_text(yaml.safe_dump({"experiment": "spar-model", "eval": no_scaling,
                                                              "spar": {"judge": {"kind": "model"}}}))
    snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir


def test_one_iteration_end_to_end(workdir):
    exp = workdir / "results" / "experiments" / "spar-verifier"
    manifest = json.loads((exp / "manifest.json").read_text())
    [counts] = manifest["spar_counts"]
    assert counts["judgements"]["responses"] == 18 and counts["judgements"]["invalid_votes"] == 0
    judged = next(s for s in manifest["stages"] if s["kind"] == "judgements")
    records = [json.loads(line) for line in (workdir / judged["output"]).read_text().splitlines()]
    prompts_with_negative = {r["key"] for r in records if r["label"] == 0}
    assert counts["search"]["trees"] == len(prompts_with_negative) >= 1  # one negative per prompt
    assert counts["dpo_pairs"] <= counts["search"]["solved"]
    assert counts["rft_examples"] >= counts["judgements"]["responses"] - counts["judgements"]["unlabelled"]
    table = pd.read_csv(exp / "tables" / "ifeval.csv")
    assert list(table["iteration"]) == [0, 1]
    assert table.loc[1, "model"] == "smollm2-SPaR-DPO"
    pairs = pd.read_csv(exp / "tables" / "spar_pairs.csv")
    assert set(pairs["pairs_kind"]) == {"spar_pairs", "independent_pairs"}
    kinds = {s["kind"] for s in manifest["stages"]}
    assert {"generate", "judgements", "tree_search", "spar_data", "dpo", "sft"} <= kinds
    refiner = next(s for s in manifest["stages"] if s["kind"] == "sft")
    assert refiner["files"] == {"data": "rft.jsonl"}  # R_1 = RFT(R_0) on the search's data
    assert (workdir / refiner["output"] / "config.json").is_file()
    summary = pd.read_csv(exp / "tables" / "spar_counts.csv")
    assert summary.loc[0, "responses"] == 18 and summary.loc[0, "dpo_pairs"] == counts["dpo_pairs"]
    assert summary.loc[0, "negatives"] == counts["search"]["trees"]
    # each refiner (R_0 = base, R_1 = RFT) judged the four held-out dev answers, scored by the oracle
    judge = pd.read_csv(exp / "tables" / "judge.csv")
    assert list(judge["iteration"]) == [0, 1] and list(judge["responses"]) == [8, 8]
    assert judge.loc[1, "model"] == "smollm2-SPaR-RFT"
    assert judge["accuracy"].between(0, 100).all()
    assert {"judge_eval"} <= kinds and len(manifest["judge_evaluations"]) == 2
    # LLMBar: R_0 and R_1 judge the first pair of each subset (10 items), greedy and 2 sampled votes
    llmbar = pd.read_csv(exp / "tables" / "llmbar.csv")
    subsets = ["Natural", "GPTInst", "GPTOut", "Manual", "Neighbor", "Adversarial", "Average"]
    assert list(llmbar["subset"]) == subsets * 2 and list(llmbar["iteration"]) == [0] * 7 + [1] * 7
    assert (llmbar.loc[:4, "items"] == 2).all() and llmbar["accuracy"].between(0, 100).all()
    votes = pd.read_csv(exp / "tables" / "llmbar_votes.csv")
    assert set(votes["votes"].astype(str)) == {"greedy", "1", "2"}
    [judged, _] = [s for s in manifest["stages"] if s["kind"] == "llmbar_judgements"]
    first = json.loads((workdir / judged["output"]).read_text().splitlines()[0])
    assert len(first["texts"]) == len(first["votes"]) == 2 and isinstance(first["greedy_text"], str)
    # refinement accuracy: the held-out answers R_0 judged No are the tasks; R_0 and R_1 refine them
    # iteratively (2 refinements; the other strategies' shapes: tests/test_refinement.py), R_1 and the
    # oracle judge: 2 x 2 rows
    refinement = pd.read_csv(exp / "tables" / "refinement.csv")
    assert list(zip(refinement["iteration"], refinement["strategy"], refinement["judge"])) == [
        (it, "iterative", judge) for it in (0, 1) for judge in ("smollm2-SPaR-RFT", "oracle")]
    [r0_eval, _] = [s for s in manifest["stages"] if s["kind"] == "judge_eval"]
    held_out = [json.loads(line) for line in (workdir / r0_eval["output"]).with_name("judged.jsonl").read_text().splitlines()]
    tasks = sum(r["label"] == 0 and bool(r["critique"]) for r in held_out)
    assert (refinement["tasks"] == tasks).all() and refinement["accuracy"].between(0, 100).all()
    assert (refinement["accepted"] + refinement["unparsed"] <= tasks).all()
    for stage in (s for s in manifest["stages"] if s["kind"] == "refinements"):
        counts = json.loads((workdir / stage["output"]).with_name("counts.json").read_text())
        assert counts["tasks"] == tasks and counts["accepted"] + counts["best_refinement"] + counts["unparsed"] == tasks
        assert counts["mean_refinements"] <= stage["config"]["budget"]


def test_inference_scaling_table_and_figure(workdir):
    exp = workdir / "results" / "experiments" / "spar-verifier"
    scaling = pd.read_csv(exp / "tables" / "inference_scaling.csv")
    assert list(zip(scaling["method"], scaling["budget"])) == [("greedy", 1), ("best_of_n", 1), ("best_of_n", 3),
                                                               ("tree_search", 1), ("tree_search", 3)]
    assert (scaling["prompts"] == 2).all() and scaling["prompt_strict"].between(0, 100).all()
    # greedy = M_1's IFEval row (the same stage: same prompts and decoding); budget 1 of the search too
    ifeval = pd.read_csv(exp / "tables" / "ifeval.csv")
    assert scaling.loc[0, "prompt_strict"] == ifeval.loc[1, "prompt_strict"] == scaling.loc[3, "prompt_strict"]
    assert scaling.loc[2, "generations"] == 3 and 1 <= scaling.loc[4, "generations"] <= 3
    assert (exp / "figures" / "inference_scaling.png").stat().st_size > 10_000
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["tables"]["inference_scaling"] == "tables/inference_scaling.csv"
    assert manifest["figures"]["inference_scaling"] == "figures/inference_scaling.png"
    search = [p for p in manifest["inference_scaling"] if p["method"] == "tree_search"][-1]
    answers = [json.loads(line) for line in (workdir / search["answers"]).read_text().splitlines()]
    assert len(answers) == 2 and {a["how"] for a in answers} <= {"accepted_greedy", "refined", "best_node"}


def test_model_judge_experiment_shares_sampling(workdir):
    dry = snakemake(workdir, "--configfile", "tiny.yaml", "model-judge.yaml", "-n").stdout
    jobs = job_counts(dry)
    # the samples are shared; M_1's greedy answers to IFEval and dev are new (its training data changed)
    assert jobs["generate"] == 2 and "base_model" not in jobs and "prompts" not in jobs
    assert jobs["judgements"] == 1 and jobs["tree_search"] == 1
    snakemake(workdir, "--configfile", "tiny.yaml", "model-judge.yaml")
    diff = json.loads(run(["ifplay", "diff", "spar-verifier", "spar-model", "--json"], cwd=workdir).stdout)
    assert "spar.judge.kind" in [c["key"] for c in diff["config"]]
    shared = {s["key"] for s in diff["stages"]["shared"]}
    stages = {s["key"]: s for s in json.loads((workdir / "results" / "experiments" / "spar-model" / "manifest.json")
                                               .read_text())["stages"]}
    assert any(stages[k]["kind"] == "generate" and stages[k]["config"]["sampling"]["n"] > 1 for k in shared)
