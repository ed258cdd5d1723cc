"""SPaR's initial SFT through the whole workflow, with the real model: the base model, as its own
teacher, evolves seed prompts, answers them (M_0's SFT data) and judges and refines the student's
samples (R_0's); both are fine-tuned and one SPaR iteration starts from them. Its own module (and
workflow directory) beside tests/test_workflow_spar.py, so that pytest-xdist runs the two on two
workers: the directory first holds the evaluation of the base model, which the SFT experiment shares."""

import json

import pandas as pd
import pytest
import yaml

from test_workflow import job_counts, snakemake
from test_workflow_spar import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("spar_sft")
    tiny = tiny_config(smollm2, ifeval_data)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    # the base model's evaluation, as the SPaR experiment of tests/test_workflow_spar.py makes it
    (workdir / "base.yaml").write_text(yaml.safe_dump({"experiment": "base", "spar": {"enabled": False},
                                                       "eval": {"general": {"enabled": False}, "inference_scaling": {"enabled": False}}}))
    snakemake(workdir, "--configfile", "tiny.yaml", "base.yaml")
    return workdir


def test_initial_sft_experiment(workdir):
    """sft.enabled: the base model as its own teacher evolves 4 seeds, answers them (M_0's data) and
    judges and refines the student's samples (R_0's); both are fine-tuned, SPaR starts from them."""
    (workdir / "sft.yaml").write_text(yaml.safe_dump({
        "experiment": "spar-sft", "eval": {"general": {"enabled": False}, "inference_scaling": {"enabled": False}, "refinement": {"enabled": False}},
        "prompt_evolution": {"limit": 4, "max_new_tokens": 24},
        "sft": {"enabled": True,
                "teacher_data": {"actor_prompts": 3, "refiner_prompts": 2, "answer": {"max_new_tokens": 16},
                                 "student": {"k": 2, "max_new_tokens": 16}, "judge": {"max_new_tokens": 8},
                                 "refine": {"max_new_tokens": 16}},
                "training": {"max_steps": 1, "max_length": 256}}}))
    jobs = job_counts(snakemake(workdir, "--configfile", "tiny.yaml", "sft.yaml", "-n").stdout)
    # the base model, the evaluation's prompt sets and the base model's evaluation are shared; the
    # SPaR pool (data.train_prompts) is new here (the base experiment runs no SPaR); self-play restarts
    assert "base_model" not in jobs and jobs["prompts"] == 1 and jobs["sft"] == 2 + 1  # M_0, R_0; R_1
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
