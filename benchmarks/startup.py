"""Per-job start-up: what a stage process pays before it computes anything, by import.

Every stage is one process (one Snakemake job), so the imports a stage needs are paid once per job:
dozens of times in a `make run`, hundreds in `make test`. Each probe runs ``--repeats`` times in a
fresh interpreter (the first run warms the file cache and is dropped); the median wall time is
printed. Run from the repository root, with nothing else running:

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

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


def seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


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
    table = pd.DataFrame(rows)
    print(describe())
    print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))


if __name__ == "__main__":
    main()
