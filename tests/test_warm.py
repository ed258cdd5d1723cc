"""Warm job starts (ifplay.core.warm): a real server process on a Unix socket, real `ifplay` clients.

The server here imports only the CLI (the workflow's imports torch and transformers too);
tests/test_workflow.py runs a whole workflow warm and checks its outputs against a cold run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BIN

from ifplay.core import warm


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("warm") / "socket")
    env = {k: v for k, v in os.environ.items() if k not in (warm.SOCKET_ENV, warm.SWITCH_ENV)}
    proc = subprocess.Popen([str(BIN / "ifplay"), "warm-server", "--socket", path, "--preload", "ifplay.cli:build_parser()"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the warm server did not start"
        time.sleep(0.05)
    yield path, env
    proc.terminate()
    proc.wait(timeout=10)
    assert not os.path.exists(path)  # it removes its socket


def ifplay(args, server, cwd, env=None):
    path, base = server
    return subprocess.run([str(BIN / "ifplay"), *args], env={**base, warm.SOCKET_ENV: path, **(env or {})},
                          cwd=cwd, capture_output=True, text=True)


def test_job_runs_in_the_server_with_its_files_directory_and_exit_status(server, tmp_path):
    (tmp_path / "over.yaml").write_text("experiment: warm-test\n")
    warm_run = ifplay(["plan", "--configfile", "over.yaml"], server, tmp_path)
    cold = subprocess.run([str(BIN / "ifplay"), "plan", "--configfile", "over.yaml"], cwd=tmp_path,
                          env=server[1], capture_output=True, text=True)
    assert warm_run.returncode == cold.returncode == 0
    assert warm_run.stdout == cold.stdout and "base_model" in warm_run.stdout  # over.yaml from the job's cwd
    assert re.search(r"^warm start: pid \d+, [\d.]+ CPU s, peak memory \d+ MiB$", warm_run.stderr, re.M)
    assert "warm start" not in cold.stderr
    error = ifplay(["plan", "--settings", "no-such-kind"], server, tmp_path)
    assert error.returncode == 2 and "no planned stage of that kind or key" in error.stderr
    usage = ifplay(["no-such-command"], server, tmp_path)
    assert usage.returncode == 2 and "invalid choice: 'no-such-command'" in usage.stderr
    assert "warm start" in usage.stderr  # argparse's SystemExit(2) happened in the server's child
    missing = ifplay(["plan", "--configfile", "absent.yaml"], server, tmp_path)
    assert missing.returncode != 0 and "absent.yaml" in missing.stderr and "warm start" in missing.stderr


def test_a_job_whose_environment_differs_runs_cold(server, tmp_path):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a job that sets it otherwise than the
    # server's environment must not inherit the server's imports
    other = "0" if os.environ.get("HF_HUB_OFFLINE") == "1" else "1"
    cold = ifplay(["plan", "--settings", "no-such-kind"], server, tmp_path, env={"HF_HUB_OFFLINE": other})
    assert cold.returncode == 2 and "no planned stage" in cold.stderr and "warm start" not in cold.stderr
    # what Snakemake sets per job (threads, TMPDIR) and the rule's PATH do not count
    per_job = ifplay(["plan", "--settings", "no-such-kind"], server, tmp_path,
                     env={"OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert per_job.returncode == 2 and "warm start" in per_job.stderr


def test_environment_rules():
    assert warm.env_mismatch({"A": "1", "PATH": "x", "OMP_NUM_THREADS": "4"},
                             {"A": "1", "PATH": "y", "OMP_NUM_THREADS": "2", "SNAKEMAKE_PROFILE": "p"}) == []
    assert warm.env_mismatch({"A": "1", "HF_HUB_OFFLINE": "1"}, {"A": "2"}) == ["A", "HF_HUB_OFFLINE"]
    # the job keeps its own variables, gets what the server's imports set (torch sets KMP_* variables)
    # and loses the socket, so that what it starts runs cold
    env = warm.job_environment({"A": "1", "GONE": "x", warm.SOCKET_ENV: "/s"}, {"KMP_INIT_AT_FORK": "FALSE", "GONE": None})
    assert env == {"A": "1", "KMP_INIT_AT_FORK": "FALSE"}


def test_no_server_or_switched_off_runs_here(tmp_path, monkeypatch):
    monkeypatch.setenv(warm.SOCKET_ENV, str(tmp_path / "absent"))
    assert warm.run_client(["plan"]) is None
    monkeypatch.setenv(warm.SOCKET_ENV, str(tmp_path))  # not a socket
    assert warm.run_client(["plan"]) is None
    monkeypatch.setenv(warm.SWITCH_ENV, "0")
    assert warm.run_client(["plan"]) is None


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signals_reach_the_job_and_a_killed_client_takes_the_job_with_it(server, tmp_path, kill):
    # a job that runs until it is stopped: another warm server, served as a job; it prints its pid
    inner = tmp_path / "inner"
    path, base = server
    client = subprocess.Popen([str(BIN / "ifplay"), "warm-server", "--socket", str(inner), "--preload", "json"],
                              env={**base, warm.SOCKET_ENV: path}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = client.stdout.readline()  # "warm server PID: imported {...}": the job's stdout is the client's
    job = int(re.match(r"warm server (\d+):", line).group(1))
    assert job != client.pid
    deadline = time.monotonic() + 60
    while not inner.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.send_signal(kill)
    returncode = client.wait(timeout=30)
    if kill == signal.SIGTERM:
        assert returncode == 0  # forwarded: the job stopped cleanly, its exit status came back
    deadline = time.monotonic() + 30
    while _alive(job):
        assert time.monotonic() < deadline, f"job {job} outlived its client"
        time.sleep(0.1)
    assert not inner.exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
