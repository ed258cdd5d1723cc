"""Smoke run of the whole workflow on a tiny config in a temporary directory, then an overlay."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, run

pytestmark = pytest.mark.slow


def snakemake(workdir, *args, check=True):
    """Run the repository's workflow with `workdir` as working directory (results/, logs/ go there)."""
    return run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args],
               cwd=workdir, check=check)


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("workflow")
    tiny = {
        "experiment": "tiny",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"ifeval": str(ifeval_data)},
        "eval": {"max_new_tokens": 24, "benchmarks": {"ifeval": {"limit": 4}, "dev": {"limit": 3}},
                 "inference_scaling": {"enabled": False}},
        "spar": {"enabled": False},  # evaluation only (tests/test_workflow_spar.py runs SPaR)
    }
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (workdir / "tiny-eval.yaml").write_text(yaml.safe_dump({"experiment": "tiny-eval", "eval": {"max_new_tokens": 32}}))
    snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir


def test_experiment_outputs(workdir):
    exp = workdir / "results" / "experiments" / "tiny"
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["config"]["eval"]["max_new_tokens"] == 24
    assert {s["kind"] for s in manifest["stages"]} == {"base_model", "prompts", "generate", "ifeval_scores"}
    assert all(s["done"] for s in manifest["stages"])
    for bench, n in (("ifeval", 4), ("dev", 3)):
        table = pd.read_csv(exp / "tables" / f"{bench}.csv")
        assert list(table.columns) == ["model", "iteration", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose"]
        assert table.loc[0, "model"] == "smollm2" and table.loc[0, "iteration"] == 0
        assert table[["prompt_strict", "inst_loose"]].apply(lambda c: c.between(0, 100)).all().all()
        assert (exp / "tables" / f"{bench}.md").read_text().startswith("| model")
        scores = next(e["scores"] for e in manifest["evaluations"] if e["benchmark"] == bench)
        assert json.loads((workdir / scores).read_text())["num_prompts"] == n
    assert list((workdir / "logs").glob("generate/*.log"))


def test_rerun_is_a_no_op(workdir):
    out = snakemake(workdir, "--configfile", "tiny.yaml", "-n").stdout
    assert "Nothing to be done" in out


def test_eval_overlay_reruns_only_evaluation(workdir):
    dry = snakemake(workdir, "--configfile", "tiny.yaml", "tiny-eval.yaml", "-n").stdout
    jobs = job_counts(dry)
    assert set(jobs) == {"generate", "ifeval_scores", "report", "all"}, jobs
    assert jobs["generate"] == 2
    snakemake(workdir, "--configfile", "tiny.yaml", "tiny-eval.yaml")
    diff = json.loads(run(["ifplay", "diff", "tiny", "tiny-eval", "--json"], cwd=workdir).stdout)
    assert [c["key"] for c in diff["config"]] == ["eval.max_new_tokens"]
    assert {s["kind"] for s in diff["stages"]["shared"]} == {"base_model", "prompts"}
    assert len(diff["stages"]["only_a"]) == len(diff["stages"]["only_b"]) == 4
    assert set(diff["metrics"]) == {"ifeval", "dev"}
    cell = diff["metrics"]["ifeval"][0]["cells"]["prompt_strict"]
    assert cell["delta"] == round(cell["b"] - cell["a"], 2)
    text = run(["ifplay", "diff", "tiny", "tiny-eval"], cwd=workdir).stdout
    assert "| eval.max_new_tokens | 24 | 32 |" in text and "shared: 3," in text


def test_report_shows_tables(workdir):
    snakemake(workdir, "--configfile", "tiny.yaml", "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "ifeval.csv" in html and "dev.csv" in html
