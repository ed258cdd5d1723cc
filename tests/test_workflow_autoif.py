"""A tiny AutoIF run through the whole workflow with the real model and the real sandbox; then the
back-translation ablation as a second experiment that shares every stage upstream of it."""

import json

import pandas as pd
import pytest
import yaml

from test_workflow import job_counts, snakemake

pytestmark = pytest.mark.slow

PIPELINE = ["autoif_instructions", "autoif_verifiers", "autoif_crossval", "autoif_backtrans", "autoif_queries",
            "autoif_verified", "autoif_scored", "autoif_data", "autoif_online_pairs"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("autoif")
    (workdir / "seeds.txt").write_text("Write your entire response in lowercase letters\n"
                                       "# a comment line\nAnswer in fewer than 20 words\n")
    training = {"max_steps": 1, "max_length": 128}
    tiny = {
        "experiment": "autoif-tiny",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"ifeval": str(ifeval_data)},
        "eval": {"general": {"enabled": False}, "max_new_tokens": 16, "benchmarks": {"ifeval": {"limit": 2}, "dev": {"enabled": False}, "followbench": {"enabled": False}},
                 "inference_scaling": {"enabled": False}},
        "spar": {"enabled": False},
        "autoif": {
            "enabled": True,
            "seeds": str(workdir / "seeds.txt"),
            "seed_limit": None,
            "augment": {"rounds": 1, "ask": 2, "max_new_tokens": 40},
            "verifiers": {"k": 2, "max_new_tokens": 96},
            "back_translation": {"max_new_tokens": 24},
            "queries": {"per_instruction": 1},
            "responses": {"k": 3, "max_new_tokens": 24},
            "sft": training,
            "offline_dpo": training,
            "online_dpo": {"k": 2, "max_new_tokens": 16, "training": training},
        },
    }
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (workdir / "no-backtrans.yaml").write_text(yaml.safe_dump({"experiment": "autoif-no-bt",
                                                               "autoif": {"back_translation": {"enabled": False}}}))
    snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir


def test_pipeline_end_to_end(workdir):
    exp = workdir / "results" / "experiments" / "autoif-tiny"
    manifest = json.loads((exp / "manifest.json").read_text())
    counts = {entry["stage"]: entry["counts"] for entry in manifest["autoif_counts"]}
    assert list(counts) == PIPELINE
    assert counts["autoif_instructions"]["seeds"] == 2  # the comment line is not a seed
    assert counts["autoif_instructions"]["instructions"] == 2 + counts["autoif_instructions"]["augmented_kept"]
    assert counts["autoif_verifiers"]["answers"] == 2 * counts["autoif_instructions"]["instructions"]
    assert counts["autoif_crossval"]["instructions"] == counts["autoif_instructions"]["instructions"]
    assert counts["autoif_crossval"]["kept"] + counts["autoif_crossval"]["dropped"] == counts["autoif_crossval"]["instructions"]
    assert counts["autoif_backtrans"]["instructions"] == counts["autoif_crossval"]["kept"]
    assert counts["autoif_queries"]["queries"] == counts["autoif_backtrans"]["kept"]
    assert counts["autoif_verified"]["responses"] == 3 * counts["autoif_queries"]["queries"]
    assert counts["autoif_scored"]["responses"] == counts["autoif_verified"]["responses_kept"]
    assert counts["autoif_data"].get("sft_examples", 0) <= counts["autoif_scored"].get("kept", 0)
    table = pd.read_csv(exp / "tables" / "ifeval.csv")
    assert list(table["model"]) == ["smollm2", "smollm2-AutoIF-SFT", "smollm2-AutoIF-Offline-DPO",
                                    "smollm2-AutoIF-Online-DPO"]
    steps = pd.read_csv(exp / "tables" / "autoif_counts.csv")
    assert list(steps.columns) == ["step", "stage", "count", "value"]
    assert list(dict.fromkeys(steps["stage"])) == PIPELINE
    for name in ("autoif_sft", "autoif_offline_dpo", "autoif_online_dpo_iter1"):
        assert (exp / "figures" / f"{name}.png").is_file()
    # every verifier the model wrote ran in the sandbox: the kept ones are plain data now
    crossval = next(s for s in manifest["stages"] if s["kind"] == "autoif_crossval")
    for line in (workdir / crossval["output"]).read_text().splitlines():
        record = json.loads(line)
        assert record["eval_func"] and all(0.5 < acc <= 1 for _, acc in record["eval_func"])


def test_back_translation_ablation_shares_everything_upstream(workdir):
    dry = snakemake(workdir, "--configfile", "tiny.yaml", "no-backtrans.yaml", "-n").stdout
    jobs = job_counts(dry)
    for shared in ("base_model", "autoif_instructions", "autoif_verifiers", "autoif_crossval", "prompts"):
        assert shared not in jobs
    assert "autoif_backtrans" not in jobs and jobs["autoif_queries"] == 1 and jobs["sft"] == 1
