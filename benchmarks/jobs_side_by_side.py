"""Threads per job against jobs side by side: what `resources.generation.cpus` and `make test`'s
per-worker cores rest on.

On a machine of C cores, work can run as one job of C threads at a time or as C jobs of one thread
side by side (Snakemake's --cores C with cpus 1), and two schedulers that each think they own the
machine (pytest-xdist's workers, each running a workflow with --cores C) run C-thread jobs side by
side. This script measures the three on the same generation job: the transformers backend (the
stages' own ``make_backend``) answering the first ``--limit`` IFEval prompts in one ``chat`` call,
greedy, then sampled (n 3, T 0.9, top-p 0.9, seed 0), ``--max-new-tokens`` each, in
``--dtype`` (default float32; the model load and one short warm-up call are not timed). Each
setting starts fresh processes (``--worker``); side-by-side processes start together. Reported per
setting: each process's seconds, the wall seconds of the setting, jobs per minute, and whether every
process's answers equal those of the first setting (on CPU the thread count can change them:
the order of the arithmetic's reductions follows the threads).

Run from the repository root with nothing else running (the figures are rates and ratios):

    .venv/bin/python benchmarks/jobs_side_by_side.py [--limit 24] [--max-new-tokens 64] [--markdown]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from generation_throughput import DEFAULT_MODEL, DEFAULT_PROMPTS, ensure_model, load_prompts
from machine import describe  # benchmarks/machine.py, beside this script

MODES = {"greedy": dict(temperature=0.0, n=1, seed=0), "sampled n=3": dict(temperature=0.9, top_p=0.9, n=3, seed=0)}


def settings(cores: int) -> list[tuple[str, int, int]]:
    """(name, processes, threads each): one job on every core, jobs of one thread on every core,
    and two oversubscribing jobs of every core each."""
    return [(f"1 job x {cores} threads", 1, cores), (f"{cores} jobs x 1 thread", cores, 1),
            (f"2 jobs x {cores} threads (oversubscribed)", 2, cores)]


def run_worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from ifplay.generation.backends import BackendChoice, SamplingParams, make_backend

    conversations = [[{"role": "user", "content": p["prompt"]}] for p in load_prompts(args.prompts, args.limit)]
    backend = make_backend(BackendChoice("transformers", args.dtype), str(args.model), batch_size=96)
    with backend:
        backend.chat(conversations[:2], SamplingParams(max_new_tokens=4))  # warm-up, untimed
        print("ready", file=sys.stderr, flush=True)
        sys.stdin.readline()  # the parent starts every process of a setting at once
        start, digest = time.perf_counter(), hashlib.sha256()
        for params in MODES.values():
            for texts in backend.chat(conversations, SamplingParams(max_new_tokens=args.max_new_tokens, **params)):
                digest.update(json.dumps(texts).encode())
        return {"threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - start, 1),
                "answers": digest.hexdigest()[:16]}


def run_setting(args, processes: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--model", str(args.model),
           "--prompts", str(args.prompts), "--limit", str(args.limit), "--max-new-tokens", str(args.max_new_tokens),
           "--dtype", args.dtype]
    procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(processes)]
    for proc in procs:  # every model loaded and warmed up before any timed call
        while (line := proc.stderr.readline()) and line.strip() != "ready":
            pass
    start = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({proc.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - start
    return {"processes": processes, "threads": threads, "wall_s": round(wall, 1),
            "seconds": [r["seconds"] for r in results], "jobs_per_min": round(60 * processes / wall, 2),
            "answers": sorted({r["answers"] for r in results})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", type=Path, help="also write the report here as JSON")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    args.model = ensure_model(args.model)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for name, processes, threads in settings(cores):
        row = {"setting": name, **run_setting(args, processes, threads)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    reference = rows[0]["answers"]
    for row in rows:
        row["answers_equal_first"] = row["answers"] == reference
    report = {"machine": describe(), "limit": args.limit, "max_new_tokens": args.max_new_tokens, "dtype": args.dtype,
              "modes": list(MODES), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        m = report["machine"]
        print(f"{m['processor']}, {m['cpus']} CPUs, flags {' '.join(m['cpu_flags'])}; {args.dtype}, "
              f"{args.limit} prompts x ({', '.join(MODES)}), {args.max_new_tokens} new tokens\n")
        print("| setting | seconds per job | wall s | jobs per minute | answers equal to the first row's |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['setting']} | {' / '.join(map(str, r['seconds']))} | {r['wall_s']} | {r['jobs_per_min']} | "
                  f"{'yes' if r['answers_equal_first'] else 'NO'} |")
    else:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
