"""Throughput of the verifier sandbox on AutoIF's sample verifiers and responses.

Calls are every (verifier, response) pair of the AutoIF sample data: ``query_rft.jsonl`` and
``dpo_query_w_funcs.jsonl`` (each ``eval_func`` code x each ``gpt-answer``) and ``back_trans.jsonl``
(each code x each case input), repeated to ``--calls``. Measured, in calls per second:

* ``sandbox``: :class:`ifplay.sandbox.runner.Sandbox` with ``--workers`` workers: a fresh sandbox runs
  all calls once (cold: start-up and compiling every code included), then again (steady);
* ``unsafe exec``: AutoIF's way, ``exec`` of each code once in this process, then ``evaluate`` per
  response (one core, no isolation at all);
* ``subprocess per call``: a fresh ``python -I -S`` per call (code and response on stdin), with
  ``--workers`` running at a time, on ``--subprocess-calls`` calls.

Run from the repository root (as root, like the sandbox):

    python benchmarks/sandbox_throughput.py [--data ../shared/data/autoif] [--calls 30000] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ifplay.sandbox.runner import Sandbox, default_workers, unsafe_in_process

REPO = Path(__file__).resolve().parents[1]

SUBPROCESS_RUNNER = r"""
import json, sys
job = json.loads(sys.stdin.read())
ns = {"__name__": "__verifier__"}
try:
    exec(job["code"], ns)
    value = ns["evaluate"](job["response"])
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    out = value if isinstance(value, bool) else "invalid-return"
except BaseException as exc:
    out = "exception:" + type(exc).__name__
sys.stdout.write(json.dumps(out))
"""


def sample_calls(data: Path) -> list[tuple[str, str]]:
    """(code, response) pairs from the AutoIF sample files."""
    pairs = []
    for name, responses_of in (("query_rft.jsonl", lambda r: r["gpt-answer"]),
                               ("dpo_query_w_funcs.jsonl", lambda r: r["gpt-answer"]),
                               ("back_trans.jsonl", lambda r: [case[0] for case in r["cases"]])):
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            for code, _accuracy in record["eval_func"]:
                pairs.extend((code, response) for response in responses_of(record))
    return pairs


def repeat(pairs: list, n: int) -> list:
    return [pairs[i % len(pairs)] for i in range(n)]


def bench_sandbox(items, workers: int, batch_size: int) -> dict:
    """A fresh sandbox runs the calls twice: cold (start-up, every code compiled) and steady."""
    start = time.perf_counter()
    with Sandbox(workers=workers, batch_size=batch_size) as box:
        started = time.perf_counter()
        box.run(items)
        cold = time.perf_counter()
        cpu = time.process_time()
        results = box.run(items)
        end = time.perf_counter()
        cpu = time.process_time() - cpu
    return {"results": results, "steady_s": end - cold, "cold_s": cold - start, "start_s": started - start,
            "parent_cpu_s": cpu}


def bench_unsafe(items) -> dict:
    unsafe_in_process(items[:2000])
    start = time.perf_counter()
    results = unsafe_in_process(items)
    return {"results": results, "steady_s": time.perf_counter() - start}


def bench_subprocess(items, workers: int) -> dict:
    def one(item):
        _, code, response = item
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", SUBPROCESS_RUNNER],
                              input=json.dumps({"code": code, "response": response}),
                              capture_output=True, text=True, timeout=60, env={})
        return proc.stdout

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, items))
    return {"steady_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "autoif")
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--subprocess-calls", type=int, default=300)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (median reported)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()

    pairs = sample_calls(args.data)
    items = [(i, code, response) for i, (code, response) in enumerate(repeat(pairs, args.calls))]
    n_codes = len({code for code, _ in pairs})
    print(f"{len(pairs)} sample calls ({n_codes} distinct verifiers), repeated to {len(items)}; "
          f"{args.workers} workers; {os.cpu_count()} CPUs; Python {platform.python_version()}")

    # Interleaved repeats; the median of each (the development machine is a noisy VM).
    runs = {"box": [], "unsafe": [], "sub": []}
    for _ in range(args.repeat):
        runs["box"].append(bench_sandbox(items, args.workers, args.batch_size))
        runs["unsafe"].append(bench_unsafe(items))
        runs["sub"].append(bench_subprocess(items[: args.subprocess_calls], args.workers))
    box, unsafe, sub = (sorted(r, key=lambda m: m["steady_s"])[len(r) // 2] for r in runs.values())
    agree = sum(a.result == b.result and a.error == b.error for a, b in zip(box["results"], unsafe["results"]))

    rate = {
        "sandbox, steady (calls/s)": len(items) / box["steady_s"],
        "sandbox, cold: start-up + first run (calls/s)": len(items) / box["cold_s"],
        "unsafe exec, 1 process (calls/s)": len(items) / unsafe["steady_s"],
        "subprocess per call (calls/s)": args.subprocess_calls / sub["steady_s"],
    }
    rows = [(name, f"{value:,.0f}") for name, value in rate.items()]
    steady = rate["sandbox, steady (calls/s)"]
    rows.append(("sandbox / unsafe exec", f"{steady / rate['unsafe exec, 1 process (calls/s)']:.2f}"))
    rows.append(("sandbox / subprocess per call", f"{steady / rate['subprocess per call (calls/s)']:,.0f}x"))
    rows.append((f"sandbox start-up, {args.workers} workers (s)", f"{box['start_s']:.3f}"))
    rows.append(("parent's CPU during the steady run", f"{box['parent_cpu_s'] / box['steady_s']:.0%} of a core"))
    rows.append(("results equal to unsafe exec", f"{agree} / {len(items)}"))
    if args.markdown:
        print("| measure | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    else:
        for name, value in rows:
            print(f"{name:<48} {value:>14}")


if __name__ == "__main__":
    main()
