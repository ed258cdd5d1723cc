"""The transformers backend's speed by dtype and rows in flight, and how much the dtype moves the answers.

The measurement behind config ``backend.dtype: auto`` and ``backend.batch_size``. For every
``--dtypes`` x ``--rows`` setting, one fresh backend (the stage's own ``make_backend`` with a
:class:`BackendChoice`) answers the first ``--limit`` IFEval prompts in one ``chat`` call each:
greedy, then sampled (n 4, T 0.9, top-p 0.9, seed 0), with the default's evaluation budget of new
tokens (``--max-new-tokens``, 256 as ``eval.max_new_tokens``). Reported per setting and mode: wall
seconds, tokens decoded (the backend's own count, end-of-sequence included: its generation journal)
and tokens/s; engine start-up (model load) is timed apart. The greedy answers of each dtype are
compared with the first dtype's at the same rows: how many are identical word for word, and the
IFEval prompt-level strict accuracy of each (lm-eval's checkers), since the dtype is a
result-changing choice.

Run from the repository root, nothing else running (the figures are rates):

    .venv/bin/python benchmarks/dtype_rows.py [--limit 40] [--dtypes float32 bfloat16] [--rows 32 48 64 96] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from generation_throughput import DEFAULT_MODEL, DEFAULT_PROMPTS, ensure_model, load_prompts
from machine import describe  # benchmarks/machine.py, beside this script

MODES = {"greedy": dict(temperature=0.0, n=1, seed=0), "sampled n=4": dict(temperature=0.9, top_p=0.9, n=4, seed=0)}


def measure(model: Path, prompts: list[dict], dtype: str, rows: int, max_new_tokens: int) -> dict:
    from ifplay.generation import journal
    from ifplay.generation.backends import BackendChoice, SamplingParams, make_backend

    conversations = [[{"role": "user", "content": p["prompt"]}] for p in prompts]
    start = time.perf_counter()
    backend = make_backend(BackendChoice("transformers", dtype), str(model), batch_size=rows)
    result = {"dtype": dtype, "rows": rows, "startup_s": round(time.perf_counter() - start, 1), "modes": {}}
    with backend, tempfile.TemporaryDirectory() as tmp:
        backend.chat(conversations[:2], SamplingParams(max_new_tokens=8))  # warm-up, untimed
        for name, params in MODES.items():
            log = Path(tmp) / f"{name}.jsonl"
            journal.open_journal(log)
            start = time.perf_counter()
            texts = backend.chat(conversations, SamplingParams(max_new_tokens=max_new_tokens, **params))
            seconds = time.perf_counter() - start
            journal.open_journal(None)
            tokens = sum(call["generated_tokens"] for call in journal.read(log))
            result["modes"][name] = {"seconds": round(seconds, 1), "tokens": tokens,
                                     "tokens_per_s": round(tokens / seconds, 1)}
            if name == "greedy":
                result["greedy"] = [t[0] for t in texts]
    return result


def strict_accuracy(prompts: list[dict], answers: list[str]) -> float:
    from ifplay.scoring import ifeval

    records = [{"prompt": p["prompt"], "response": a} for p, a in zip(prompts, answers)]
    return round(ifeval.score(prompts, ifeval.match_responses(prompts, records, source="benchmark")).percent()
                 ["prompt_strict"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="IFEval input_data.jsonl")
    parser.add_argument("--limit", type=int, default=40, help="first N prompts (the default's IFEval subset)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rows", nargs="+", type=int, default=[48])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", type=Path, help="write the report (JSON) here")
    args = parser.parse_args()
    model = ensure_model(args.model)
    prompts = load_prompts(args.prompts, args.limit)
    results = []
    for rows in args.rows:
        for dtype in args.dtypes:
            print(f"{dtype}, {rows} rows ...", file=sys.stderr, flush=True)
            results.append(measure(model, prompts, dtype, rows, args.max_new_tokens))
    for result in results:
        first = next(r for r in results if r["rows"] == result["rows"])
        result["greedy_identical_to_" + args.dtypes[0]] = sum(a == b for a, b in zip(result["greedy"], first["greedy"]))
        result["prompt_strict"] = strict_accuracy(prompts, result["greedy"])
    machine = describe()
    print(f"{machine['processor']}, {machine['cpus']} CPUs, flags {' '.join(machine['cpu_flags'])}; "
          f"{args.limit} IFEval prompts, {args.max_new_tokens} new tokens")
    if args.markdown:
        print(f"| dtype | rows | start-up s | greedy s | greedy tokens/s | sampled n=4 s | sampled tokens/s | "
              f"greedy identical to {args.dtypes[0]} | IFEval prompt strict % |\n|---|---|---|---|---|---|---|---|---|")
        for r in results:
            g, s = r["modes"]["greedy"], r["modes"]["sampled n=4"]
            print(f"| {r['dtype']} | {r['rows']} | {r['startup_s']} | {g['seconds']} | {g['tokens_per_s']} | "
                  f"{s['seconds']} | {s['tokens_per_s']} | {r['greedy_identical_to_' + args.dtypes[0]]}/{args.limit} | "
                  f"{r['prompt_strict']} |")
    else:
        print(json.dumps([{k: v for k, v in r.items() if k != "greedy"} for r in results], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
                                        "results": results}, indent=1))


if __name__ == "__main__":
    main()
