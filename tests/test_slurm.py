"""`snakemake --profile slurm` on a real one-node SLURM cluster started by .ci/slurm-cluster.sh.

The tiny SPaR workflow runs through Snakemake's SLURM executor, every job a real SLURM job; then a
second experiment's training job is cancelled with scancel while it runs, and a re-run finishes
the workflow without redoing the jobs that had finished and without taking the cancelled job's
partial output. Skipped, with the reason, where SLURM cannot be started (not root, no apt).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from conftest import BIN, REPO
from test_workflow import job_counts

pytestmark = pytest.mark.slow

CLUSTER = REPO / ".ci" / "slurm-cluster.sh"
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")
FINISHED = re.compile(r"Finished jobid: \d+ \(Rule: (\w+)\)")


def stage_files(workdir) -> dict:
    """Every stage output under results/<kind>/<key>/ with its modification time."""
    return {path: path.stat().st_mtime_ns for path in (workdir / "results").glob("*/*/*")
            if path.parts[-3] != "experiments"}


@pytest.fixture(scope="module")
def cluster():
    started = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        reason = (started.stderr.strip() or started.stdout.strip()).splitlines()[-1:] or ["unknown"]
        print(f"SLURM could not be started: {reason[0]}")
        pytest.skip(f"SLURM could not be started here: {reason[0]}")
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120)


def profile_run(workdir, *args, background=False):
    """`snakemake --profile slurm` from the repository root (where the profile is found)."""
    cmd = [str(BIN / "snakemake"), "--profile", "slurm", "--directory", str(workdir),
           "--slurm-init-seconds-before-status-checks", "2", "--retries", "0", *args]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def slurm_jobs() -> dict[str, tuple[str, str]]:
    """SLURM job id -> (comment = "rule_<name>_wildcards_<key>", state), finished jobs included."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%k|%T"], capture_output=True, text=True).stdout
    return {jobid: (comment, state) for jobid, comment, state in (line.split("|") for line in out.splitlines())}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cluster, smollm2, ifeval_data):
    workdir = tmp_path_factory.mktemp("slurm")
    tiny = {
        "experiment": "slurm-tiny",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"ifeval": str(ifeval_data)},
        "eval": {"general": {"enabled": False}, "max_new_tokens": 8, "benchmarks": {"ifeval": {"limit": 2}, "dev": {"limit": 2}, "followbench": {"enabled": False}},
                 "inference_scaling": {"enabled": False}},
        "spar": {"enabled": True, "prompt_limit": 3, "sampling": {"k": 2, "max_new_tokens": 16},
                 "judge": {"kind": "verifier"}, "judge_eval": {"enabled": False},
                 "search": {"branch": 2, "select": 1, "max_depth": 1, "budget": 2, "max_new_tokens": 16,
                            "output_format": "plain"},
                 "actor_dpo": {"max_steps": 1, "max_length": 96},
                 "refiner_rft": {"max_steps": 1, "max_length": 512}},
        "resources": {"generation": {"cpus": 1, "mem_mb": 3000, "runtime": 20},
                      "training": {"cpus": 1, "mem_mb": 5000, "runtime": 20}},
    }
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    # the fault experiment: other samples (so the whole iteration re-runs) and a longer actor DPO,
    # which is cancelled while it trains
    (workdir / "fault.yaml").write_text(yaml.safe_dump({
        "experiment": "slurm-fault", "spar": {"sampling": {"max_new_tokens": 20},
                                              "actor_dpo": {"max_steps": 6, "max_length": 96}}}))
    return workdir


def test_profile_runs_every_job_through_slurm(workdir):
    started = time.monotonic()
    before = set(slurm_jobs())
    proc = profile_run(workdir, "--configfile", str(workdir / "tiny.yaml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    submitted = SUBMITTED.findall(log)
    finished = [rule for rule in FINISHED.findall(log) if rule != "all"]
    jobs = slurm_jobs()
    print(f"{len(submitted)} SLURM jobs, {time.monotonic() - started:.0f} s")
    assert len(submitted) == len(finished) >= 15  # every job but the local target `all`
    for jobid in submitted:
        assert jobid not in before and jobs[jobid][1] == "COMPLETED", (jobid, jobs.get(jobid))
    rules = {jobs[jobid][0].split("_wildcards_")[0].removeprefix("rule_") for jobid in submitted}
    assert {"base_model", "generate", "judgements", "tree_search", "spar_data", "dpo", "sft", "ifeval_scores"} <= rules
    manifest = workdir / "results" / "experiments" / "slurm-tiny" / "manifest.json"
    assert manifest.is_file()
    assert list((workdir / "logs" / "slurm").glob("rule_dpo/*/*.log"))  # per-job SLURM logs


def test_cancelled_job_is_redone_and_nothing_else(workdir):
    config = ["--configfile", str(workdir / "tiny.yaml"), str(workdir / "fault.yaml")]
    plan = job_counts(profile_run(workdir, *config, "-n").stdout)
    # the samples, then M_1's greedy answers to IFEval and dev; the DPO of M_0 and the RFT of R_0
    assert plan["dpo"] == 1 and plan["sft"] == 1 and plan["generate"] == 3 and "base_model" not in plan
    proc = profile_run(workdir, *config, background=True)
    cancelled = None
    deadline = time.monotonic() + 900
    while cancelled is None and time.monotonic() < deadline and proc.poll() is None:
        for jobid, (comment, state) in slurm_jobs().items():
            if comment.startswith("rule_dpo_") and state == "RUNNING":
                time.sleep(3)  # mid-stage: the model is loaded and training
                subprocess.run(["scancel", jobid], check=True)
                cancelled = (jobid, comment.split("_wildcards_")[1])
                break
        time.sleep(0.5)
    first_log, _ = proc.communicate(timeout=900)
    assert cancelled, "never saw the dpo job running:\n" + first_log[-3000:]
    print(f"cancelled SLURM job {cancelled[0]} (dpo/{cancelled[1]})")
    assert proc.returncode != 0
    checkpoint = workdir / "results" / "dpo" / cancelled[1] / "checkpoint"
    assert not checkpoint.exists()  # no partial checkpoint where the finished one belongs
    finished_first = [rule for rule in FINISHED.findall(first_log) if rule != "all"]
    written_first = stage_files(workdir)

    rerun = profile_run(workdir, *config)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    redone = job_counts(rerun.stdout + rerun.stderr)
    print(f"first run finished {len(finished_first)} jobs {sorted(set(finished_first))}; "
          f"re-run executed {sum(v for k, v in redone.items() if k != 'all')} jobs {redone}")
    assert redone["dpo"] == 1
    assert {"generate", "judgements", "tree_search", "spar_data"} <= set(finished_first)
    # nothing that had finished runs again: every stage file of the first run is untouched
    assert {path: mtime for path, mtime in stage_files(workdir).items() if path in written_first} == written_first
    assert (checkpoint / "model.safetensors").is_file()
    assert (workdir / "results" / "experiments" / "slurm-fault" / "manifest.json").is_file()
