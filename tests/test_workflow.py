"""Smoke run of the whole workflow on a tiny config in a temporary directory, then an overlay."""

import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import CORES, shared, BIN, REPO, run

pytestmark = pytest.mark.slow


def snakemake(workdir, *args, check=True):
    """Run the repository's workflow with `workdir` as working directory (results/, logs/ go there)."""
    return run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", str(CORES), *args],
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
        "data": {"ifeval": str(ifeval_data), "ifbench": str(shared("ifbench/IFBench_test.jsonl")),
                 "gsm8k": str(shared("gsm8k/test.jsonl").parent)},
        "eval": {"max_new_tokens": 24, "benchmarks": {"ifeval": {"limit": 4}, "dev": {"limit": 3}, "ifbench": {"limit": 3},
                                                      "followbench": {"enabled": False}},
                 "inference_scaling": {"enabled": False},
                 # lm-eval's GSM8k from the local copy: 2 problems, 1 shot, short answers
                 "general": {"tasks": [{"name": "gsm8k", "shots": 1, "limit": 2, "metric": "exact_match", "data": "gsm8k"}],
                             "max_gen_toks": 24}},
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
    assert {s["kind"] for s in manifest["stages"]} == {"base_model", "prompts", "generate", "ifeval_scores",
                                                       "ifbench_scores", "general_eval"}
    assert all(s["done"] for s in manifest["stages"])
    for bench, n in (("ifeval", 4), ("dev", 3)):
        table = pd.read_csv(exp / "tables" / f"{bench}.csv")
        assert list(table.columns) == ["model", "iteration", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose"]
        assert table.loc[0, "model"] == "smollm2" and table.loc[0, "iteration"] == 0
        assert table[["prompt_strict", "inst_loose"]].apply(lambda c: c.between(0, 100)).all().all()
        assert (exp / "tables" / f"{bench}.md").read_text().startswith("| model")
        scores = next(e["scores"] for e in manifest["evaluations"] if e["benchmark"] == bench)
        assert json.loads((workdir / scores).read_text())["num_prompts"] == n
    ifbench = pd.read_csv(exp / "tables" / "ifbench.csv")  # IFEval's columns over the scorable prompts
    assert list(ifbench.columns) == ["model", "iteration", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose",
                                     "unscorable"]
    scores = next(e["scores"] for e in manifest["evaluations"] if e["benchmark"] == "ifbench")
    metrics = json.loads((workdir / scores).read_text())
    assert metrics["num_prompts"] == 3 and ifbench.loc[0, "unscorable"] == metrics["num_unscorable"] == 0
    assert metrics["official_commit"].startswith("db69a6f")
    assert list((workdir / "logs").glob("generate/*.log"))
    general = pd.read_csv(exp / "tables" / "general.csv")  # lm-eval's GSM8k, both of its filters
    assert list(general.columns) == ["model", "iteration", "task", "metric", "value", "stderr", "n", "shots",
                                     "lm_eval_version", "data_source"]
    assert set(general["metric"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert (general["n"] == 2).all() and (general["shots"] == 1).all() and (general["task"] == "gsm8k").all()
    [stage] = [s for s in manifest["stages"] if s["kind"] == "general_eval"]
    samples = workdir / "results" / "general_eval" / stage["key"] / "samples" / "gsm8k_local.jsonl"
    assert len(samples.read_text().splitlines()) == 4  # lm-eval's per-sample logs: 2 documents x 2 filters
    # the code and the packages that wrote it
    provenance = manifest["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["git_commit"]) and isinstance(provenance["git_dirty"], bool)
    versions = provenance["versions"]
    assert set(versions) == {"torch", "transformers", "trl", "vllm", "lm_eval", "snakemake"}
    assert versions["torch"].startswith("2.13.0") and versions["snakemake"] == "9.27.1" and versions["trl"] == "1.16.0"
    [marker] = exp.glob("plan-*.json")  # the plan this report shows, one at a time
    assert json.loads(marker.read_text())["report_key"] == marker.stem.removeprefix("plan-")


def test_rerun_is_a_no_op(workdir):
    out = snakemake(workdir, "--configfile", "tiny.yaml", "-n").stdout
    assert "Nothing to be done" in out


def test_moved_data_and_checkpoint_plan_nothing(workdir, smollm2, ifeval_data):
    """The stage key is the trigger: the same data file and model checkpoint copied elsewhere (new
    paths, new modification times) plan no job, although every rule's paths changed."""
    moved = workdir / "scratch" / "moved"
    shutil.copytree(smollm2, moved / "checkpoint")
    shutil.copyfile(ifeval_data, moved / "input_data.jsonl")
    (workdir / "moved.yaml").write_text(yaml.safe_dump({
        "model": {"base": str(moved / "checkpoint")}, "data": {"ifeval": str(moved / "input_data.jsonl")},
        "backend": {"batch_size": 3}}))  # a runtime setting changes nothing either
    out = snakemake(workdir, "--configfile", "tiny.yaml", "moved.yaml", "-n").stdout
    assert "Nothing to be done" in out, out[-3000:]
    # a changed stage input is another key: that stage and what depends on it are planned
    (moved / "input_data.jsonl").write_text("".join(ifeval_data.read_text().splitlines(keepends=True)[1:]))
    jobs = job_counts(snakemake(workdir, "--configfile", "tiny.yaml", "moved.yaml", "-n").stdout)
    assert jobs["prompts"] == 1 and jobs["generate"] == 1 and jobs["ifeval_scores"] == 1 and "base_model" not in jobs


def test_rules_find_ifplay_through_the_snakemake_they_run_under(workdir):
    """`.venv/bin/snakemake` with nothing activated: PATH holds no `ifplay`, the rules find it beside
    the interpreter that runs Snakemake."""
    (workdir / "bare.yaml").write_text(yaml.safe_dump({"experiment": "bare",
                                                       "eval": {"benchmarks": {"dev": {"limit": 2}}}}))
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    assert shutil.which("ifplay", path=env["PATH"]) is None
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", str(CORES),
                           "--configfile", "tiny.yaml", "bare.yaml"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (workdir / "results" / "experiments" / "bare" / "manifest.json").is_file()


def test_eval_overlay_reruns_only_evaluation(workdir):
    dry = snakemake(workdir, "--configfile", "tiny.yaml", "tiny-eval.yaml", "-n").stdout
    jobs = job_counts(dry)
    assert set(jobs) == {"generate", "ifeval_scores", "ifbench_scores", "report", "all"}, jobs
    assert jobs["generate"] == 3
    snakemake(workdir, "--configfile", "tiny.yaml", "tiny-eval.yaml")
    diff = json.loads(run(["ifplay", "diff", "tiny", "tiny-eval", "--json"], cwd=workdir).stdout)
    assert [c["key"] for c in diff["config"]] == ["eval.max_new_tokens"]
    assert {s["kind"] for s in diff["stages"]["shared"]} == {"base_model", "prompts", "general_eval"}  # lm-eval's own budget
    assert len(diff["stages"]["only_a"]) == len(diff["stages"]["only_b"]) == 6
    assert set(diff["metrics"]) == {"ifeval", "dev", "ifbench", "general"}
    cell = diff["metrics"]["ifeval"][0]["cells"]["prompt_strict"]
    assert cell["delta"] == round(cell["b"] - cell["a"], 2)
    text = run(["ifplay", "diff", "tiny", "tiny-eval"], cwd=workdir).stdout
    assert "| eval.max_new_tokens | 24 | 32 |" in text and "shared: 5," in text


def test_report_shows_tables(workdir):
    snakemake(workdir, "--configfile", "tiny.yaml", "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "ifeval.csv" in html and "dev.csv" in html and "ifbench.csv" in html


def stage_outputs(workdir) -> dict[str, bytes]:
    """Every file the stages wrote (results/<kind>/<key>/...), but the experiments' manifests (dated)."""
    results = workdir / "results"
    return {str(path.relative_to(results)): path.read_bytes() for path in sorted(results.rglob("*"))
            if path.is_file() and path.parts[len(results.parts)] != "experiments"
            and path.name != ".snakemake_timestamp"}


def test_warm_and_cold_job_starts_write_identical_outputs(workdir, tmp_path):
    """The module's run started its jobs warm (forks of one server that had imported torch and
    transformers: ifplay.core.warm); the same config run cold, every job a fresh process, writes
    byte-identical stage outputs."""
    logs = [path.read_text() for path in (workdir / "logs").glob("*/*.log")]
    warm_jobs = sum("warm start: pid" in log for log in logs)
    assert warm_jobs >= 3, f"{warm_jobs} of {len(logs)} jobs started warm"
    assert "warm server" in (workdir / "logs" / "warm-server.log").read_text()
    cold = tmp_path / "cold"
    cold.mkdir()
    shutil.copyfile(workdir / "tiny.yaml", cold / "tiny.yaml")
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(cold), "--cores", str(CORES),
                           "--configfile", "tiny.yaml"], cwd=cold, env={**os.environ, "IFPLAY_WARM_START": "0"},
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not any("warm start: pid" in path.read_text() for path in (cold / "logs").glob("*/*.log"))
    assert not (cold / "logs" / "warm-server.log").exists()
    warm_outputs, cold_outputs = stage_outputs(workdir), stage_outputs(cold)
    assert cold_outputs and set(cold_outputs) <= set(warm_outputs)  # the module's other tests add stages
    assert [name for name in sorted(cold_outputs) if warm_outputs[name] != cold_outputs[name]] == []
