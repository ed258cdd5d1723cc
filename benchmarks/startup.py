"""Per-job start-up: what a stage process pays before it computes anything, by import.

Every stage is one process (one Snakemake job), so the imports a stage needs are paid once per job:
dozens of times in a `make run`, hundreds in `make test`. Each probe runs ``--repeats`` times in a
fresh interpreter (the first run warms the file cache and is dropped); the median wall time is
printed. The last rows are what a job pays with warm starts (ifplay.core.warm, local runs): the
`ifplay` command handed to a warm server (which has imported torch and transformers) and forked
there, against the same command in a fresh process that imports what a generating job imports.
Run from the repository root, with nothing else running:

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from machine import describe  # benchmarks/machine.py: CPU model and flags

PLAIN = "from transformers import AutoModelForCausalLM, AutoTokenizer"
PATCHED = "from ifplay.core.hf import import_transformers; import_transformers(); " + PLAIN
TRAINING = "from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer"

PROBES = {
    "python": "pass",
    "ifplay CLI (parser)": "import ifplay.cli as c; c.build_parser()",
    "torch": "import torch",
    "transformers, as imported before (scikit-learn too)": PLAIN,
    "transformers, ifplay.core.hf.import_transformers": PATCHED,
    "trl trainers, before": TRAINING,
    "trl trainers, ifplay.core.hf.import_transformers": "from ifplay.core.hf import import_transformers; "
                                                       "import_transformers(); " + TRAINING,
}


# A job's command: a no-op stage (`ifplay plan --settings KIND`, plan built from config/default.yaml)
# after the imports of a generating job, cold; the same command handed to a warm server.
IFPLAY = str(Path(sys.executable).parent / "ifplay")
JOB = ["plan", "--settings", "generate"]
COLD_JOB = f"{PATCHED}; import sys, ifplay.cli as c; sys.exit(c.run({JOB!r}))"


def seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def warm_seconds(socket_path: str) -> float:
    started = time.perf_counter()
    subprocess.run([IFPLAY, *JOB], check=True, env={**os.environ, "IFPLAY_WARM": socket_path},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def warm_rows(repeats: int) -> list[dict]:
    """A generating job's start-up, cold and warm; and the server's own start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "socket")
        started = time.perf_counter()
        server = subprocess.Popen([IFPLAY, "warm-server", "--socket", path], stdout=subprocess.DEVNULL,
                                  env={k: v for k, v in os.environ.items() if k != "IFPLAY_WARM"})
        while not os.path.exists(path):
            time.sleep(0.02)
        ready = time.perf_counter() - started
        try:
            warm_seconds(path)
            warm = [warm_seconds(path) for _ in range(repeats)]
        finally:
            server.terminate()
            server.wait()
    seconds(COLD_JOB)
    cold = [seconds(COLD_JOB) for _ in range(repeats)]
    row = lambda name, runs: {"probe": name, "median_s": round(statistics.median(runs), 2),  # noqa: E731
                              "min_s": round(min(runs), 2), "max_s": round(max(runs), 2)}
    return [row("warm server start-up (once per workflow run)", [ready]),
            row("a generating job's start-up, cold (imports + ifplay plan)", cold),
            row("the same job, warm start (ifplay.core.warm)", warm)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    for name, code in PROBES.items():
        seconds(code)  # warm the file cache
        runs = [seconds(code) for _ in range(args.repeats)]
        rows.append({"probe": name, "median_s": round(statistics.median(runs), 2),
                     "min_s": round(min(runs), 2), "max_s": round(max(runs), 2)})
    rows += warm_rows(args.repeats)
    table = pd.DataFrame(rows)
    print(describe())
    print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))


if __name__ == "__main__":
    main()
