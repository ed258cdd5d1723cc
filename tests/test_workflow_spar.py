"""One tiny SPaR iteration through the whole workflow, with the real model; then the model judge
as a second experiment that shares the sampling stage, and an initial-SFT experiment on the
teacher's data."""

import json

import pandas as pd
import pytest
import yaml

from conftest import run
from test_workflow import job_counts, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("spar")
    tiny = {
        "experiment": "spar-verifier",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"ifeval": str(ifeval_data)},
        "eval": {"max_new_tokens": 16, "benchmarks": {"ifeval": {"limit": 2}, "dev": {"limit": 2}},
                 "inference_scaling": {"limit": 2, "budgets": [1, 3], "sampling": {"max_new_tokens": 16},
                                       "search": {"branch": 2, "select": 1, "max_depth": 2, "max_new_tokens": 16}}},
        "spar": {
            "enabled": True,
            "prompt_limit": 6,
            "sampling": {"k": 3, "max_new_tokens": 32},
            "judge": {"kind": "verifier", "votes": 2, "max_new_tokens": 32},
            "search": {"branch": 2, "select": 1, "max_depth": 2, "budget": 4, "max_new_tokens": 32,
                       "output_format": "plain"},
            "judge_eval": {"limit": 2},
            # the release's caps (the CPU default caps each judgement kind at 6)
            "rft_mix": {"refinements": 4000, "tree_judgements_positive": 1500, "tree_judgements_negative": 1000,
                        "sample_judgements_yes": 2500, "sample_judgements_no": 500, "total": 9500},  # the dev evaluation's two responses: shared with it
            "actor_dpo": {"max_steps": 1, "max_length": 160},
            "refiner_rft": {"max_steps": 1, "max_length": 256},
        },
    }
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    no_scaling = {"inference_scaling": {"enabled": False}}  # the overlays test other things
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
    # each refiner (R_0 = base, R_1 = RFT) judged the two held-out dev answers, scored by the oracle
    judge = pd.read_csv(exp / "tables" / "judge.csv")
    assert list(judge["iteration"]) == [0, 1] and list(judge["responses"]) == [2, 2]
    assert judge.loc[1, "model"] == "smollm2-SPaR-RFT"
    assert judge["accuracy"].between(0, 100).all()
    assert {"judge_eval"} <= kinds and len(manifest["judge_evaluations"]) == 2


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


def test_initial_sft_experiment(workdir):
    """sft.enabled: the base model as its own teacher evolves 4 seeds, answers them (M_0's data) and
    judges and refines the student's samples (R_0's); both are fine-tuned, SPaR starts from them."""
    (workdir / "sft.yaml").write_text(yaml.safe_dump({
        "experiment": "spar-sft", "eval": {"inference_scaling": {"enabled": False}},
        "prompt_evolution": {"limit": 4, "max_new_tokens": 24},
        "sft": {"enabled": True,
                "teacher_data": {"actor_prompts": 3, "refiner_prompts": 2, "answer": {"max_new_tokens": 16},
                                 "student": {"k": 2, "max_new_tokens": 16}, "judge": {"max_new_tokens": 8},
                                 "refine": {"max_new_tokens": 16}},
                "training": {"max_steps": 1, "max_length": 256}}}))
    jobs = job_counts(snakemake(workdir, "--configfile", "tiny.yaml", "sft.yaml", "-n").stdout)
    # the base model, the prompt sets and the base model's evaluation are shared; self-play restarts
    assert "base_model" not in jobs and "prompts" not in jobs and jobs["sft"] == 2 + 1  # M_0, R_0; R_1
    assert jobs["evolved_prompts"] == jobs["teacher_sft_data"] == 1
    # greedy answers of M_0 and M_1 to IFEval and dev; samples of the student and of M_0
    assert jobs["generate"] == 4 + 2
    snakemake(workdir, "--configfile", "tiny.yaml", "sft.yaml")
    exp = workdir / "results" / "experiments" / "spar-sft"
    table = pd.read_csv(exp / "tables" / "ifeval.csv")
    assert list(zip(table["model"], table["iteration"])) == [("smollm2", 0), ("smollm2-SFT", 0),
                                                             ("smollm2-SPaR-DPO", 1)]
    judge = pd.read_csv(exp / "tables" / "judge.csv")
    assert list(judge["model"]) == ["smollm2-SFT", "smollm2-SPaR-RFT"]
    manifest = json.loads((exp / "manifest.json").read_text())
    data = manifest["sft"]["teacher_data"]
    counts, usage = data["counts"], data["usage"]
    evolved = manifest["prompt_evolution"]["counts"]["kept"]
    assert counts["actor_prompts"] == min(3, evolved) and counts["student_prompts"] == min(2, evolved)
    assert counts["actor_examples"] == len((workdir / data["actor_data"]).read_text().splitlines())
    assert counts["refiner_examples"] == len((workdir / data["refiner_data"]).read_text().splitlines())
    assert usage["conversations"] >= counts["actor_prompts"] + counts["student_responses"]
    stages = {s["key"]: s for s in manifest["stages"]}
    m0, r0 = (manifest["sft"][role].split("/")[2] for role in ("actor", "refiner"))
    assert stages[m0]["config"]["data"] == {"file": "actor.jsonl"}
    assert stages[r0]["config"]["data"] == {"file": "refiner.jsonl"}
    # self-play samples from M_0 and R_0 is the iteration-0 judge
    assert [s["kind"] for s in manifest["stages"] if s["inputs"].get("model") == m0].count("generate") == 1 + 2  # samples, IFEval, dev
    assert [s["kind"] for s in manifest["stages"] if s["inputs"].get("refiner") == r0].count("judge_eval") == 1
