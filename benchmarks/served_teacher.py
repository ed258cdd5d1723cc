"""SPaR's teacher stages against a served teacher: vLLM's OpenAI-compatible server on this machine.

Starts ``vllm serve`` (the server module of ``.venv-vllm``) on the default base model's checkpoint
under the name ``smollm2-135m-instruct`` with an API key, waits until it is healthy (start-up
timed), then runs the experiment ``config/experiments/spar-sft-served.yaml`` up to its teacher
stages (``snakemake --until teacher_sft_data``: the prompt evolution, the student's samples and the
teacher's SFT data), with ``backend.openai.base_url`` pointing at the server and the key in
``OPENAI_API_KEY``. Reports the wall time of that run, per-stage times from Snakemake's benchmark
files, and each teacher stage's counts and usage (requests, failures, retries, prompt and completion
tokens, as ``usage.json`` records them), as JSON (and ``--markdown`` rows). The server is stopped
at the end. Run from the repository root:

    .venv/bin/python benchmarks/served_teacher.py [--port 8000] [--cores 2] [--markdown]

The server runs on the same CPUs as the stages (a 2-core machine shares them); on a cluster the
teacher is a server elsewhere and only its usage matters.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from machine import describe  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
OVERLAY = REPO / "config" / "experiments" / "spar-sft-served.yaml"
SERVED_NAME = "smollm2-135m-instruct"


def plan(extra_config: dict):
    sys.path.insert(0, str(REPO / "workflow"))
    from ifplay.core.config import load_config
    from ifplay.plan import Plan

    return Plan(load_config([OVERLAY], extra_config))


def snakemake_config(args) -> tuple[dict, list[str]]:
    """The overrides (server URL, local IFEval) as a dict and as Snakemake --config arguments."""
    config = {"backend": {"openai": {"base_url": f"http://127.0.0.1:{args.port}/v1"}}}
    cli = [f"backend={json.dumps(config['backend'])}"]
    if args.ifeval:
        config["data"] = {"ifeval": args.ifeval}
        cli.append(f"data={json.dumps(config['data'])}")
    return config, cli


def start_server(python: Path, checkpoint: str, port: int, key: str, log: Path) -> tuple[subprocess.Popen, float]:
    start = time.monotonic()
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint,
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", "2048", "--seed", "0", "--dtype", "float32",
               # seeded requests on vLLM's CPU build need whole-prompt prefills
               "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048"]
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "VLLM_API_KEY": key}, start_new_session=True)
    deadline = start + 900
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"vllm serve exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"vllm serve not healthy after 900 s; see {log}")
        time.sleep(1)


def stage_seconds(kind: str, key: str) -> float | None:
    path = REPO / "logs" / kind / f"{key}.benchmark.tsv"
    if not path.is_file():
        return None
    with path.open() as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--vllm-python", type=Path, default=REPO / ".venv-vllm" / "bin" / "python")
    parser.add_argument("--ifeval", default=str(REPO.parent / "shared" / "data" / "ifeval" / "input_data.jsonl")
                        if (REPO.parent / "shared" / "data" / "ifeval" / "input_data.jsonl").is_file() else None,
                        help="a local IFEval input_data.jsonl (offline machines)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    config, cli = snakemake_config(args)
    experiment = plan(config)
    base = experiment.base
    subprocess.run([sys.executable, "-m", "snakemake", base.output, "--cores", str(args.cores), "--config", *cli,
                    "--configfile", str(OVERLAY)], cwd=REPO, check=True)  # the checkpoint to serve
    key = "sk-ifplay-" + secrets.token_hex(12)
    log = REPO / "logs" / "served_teacher_vllm.log"
    log.parent.mkdir(exist_ok=True)
    server, startup = start_server(args.vllm_python, str(REPO / base.output), args.port, key, log)
    try:
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), "--configfile", str(OVERLAY),
                        "--config", *cli, "--until", "teacher_sft_data"], cwd=REPO, check=True,
                       env={**os.environ, "OPENAI_API_KEY": key})
        elapsed = time.monotonic() - start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
    stages = {}
    for stage in (experiment.evolution, experiment.teacher_data.inputs["samples"], experiment.teacher_data):
        stages[stage.kind] = {"key": stage.key, "seconds": stage_seconds(stage.kind, stage.key)}
        for name in ("counts", "usage"):
            path = REPO / stage.path(f"{name}.json")
            if path.is_file():
                stages[stage.kind][name] = json.loads(path.read_text())
    report = {"machine": describe(), "server_startup_s": round(startup, 1), "snakemake_s": round(elapsed, 1),
              "stages": stages}
    print(json.dumps(report, indent=2))
    if args.markdown:
        print("| stage | seconds | requests | failures | prompt tokens | completion tokens |")
        print("|---|---|---|---|---|---|")
        for kind, info in stages.items():
            usage = info.get("usage", {})
            print(f"| `{kind}` | {info['seconds']} | {usage.get('requests', '-')} | {usage.get('failures', '-')} "
                  f"| {usage.get('prompt_tokens', '-')} | {usage.get('completion_tokens', '-')} |")


if __name__ == "__main__":
    main()
