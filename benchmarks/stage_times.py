"""Per-stage wall time and peak memory of a workflow run, from Snakemake's benchmark files.

Every rule writes logs/<rule>/<key>.benchmark.tsv (Snakemake's `benchmark:` directive). Run after
`make run` (or any snakemake run) from the repository root:

    python benchmarks/stage_times.py [--logs logs] [--markdown]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def collect(logs: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted(logs.glob("*/*.benchmark.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": tsv.parent.name, "key": tsv.name.removesuffix(".benchmark.tsv"),
                     "seconds": round(float(bench["s"].iloc[-1]), 1),
                     "max_rss_mb": round(float(bench["max_rss"].iloc[-1]), 0)})
    return pd.DataFrame(rows, columns=["rule", "key", "seconds", "max_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logs", type=Path, default=Path("logs"))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    table = collect(args.logs)
    if table.empty:
        raise SystemExit(f"no benchmark files under {args.logs}/*/")
    print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))
    print(f"\ntotal job time: {table['seconds'].sum():.0f} s over {len(table)} jobs")


if __name__ == "__main__":
    main()
