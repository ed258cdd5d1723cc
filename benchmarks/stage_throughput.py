"""Throughput and utilisation of every generating stage of a finished run.

Every stage that generates keeps a generation journal, ``logs/<kind>/<key>.generation.jsonl``
(:mod:`ifplay.generation.journal`): per ``Backend.chat`` call its sampling parameters, the prompts'
token ids and how many tokens each sample decoded. Snakemake's benchmark file beside it,
``logs/<kind>/<key>.benchmark.tsv``, has the stage's wall time. Per stage this script reports:

- requests (prompts sent), samples, prompt tokens, generated tokens (end-of-sequence included);
- wall time of the whole job (process start, imports and model load included) and tokens/s over it;
- **utilisation**: that tokens/s divided by vLLM's steady-state tokens/s on the same requests, measured
  in this run: the journal's calls are replayed, in order, on one vLLM engine (``.venv-vllm``; the
  project's own ``VLLMBackend`` settings; the stages' dtype), each sample as its own request that
  decodes exactly the number of tokens the stage's sample decoded (``min_tokens = max_tokens``,
  ``ignore_eos``), with the stage's temperature and top-p. So vLLM does the same work: the same
  prompts and the same generated tokens. vLLM's prefix cache is emptied before each stage (within
  a stage it serves, as in the stage itself: the votes of one prompt share its prefill). Engine
  start-up and one warm-up call are not timed (steady state). The replay runs on the base checkpoint (``--model``): every model of a run has its
  architecture and dtype, and the tokens to decode are fixed, so the weights do not change the work.

Run from the repository root after ``make run`` (``make venv-vllm`` for the replay):

    .venv/bin/python benchmarks/stage_throughput.py [--logs logs] [--markdown] [--out results/benchmarks/stage_throughput.json]

``--no-vllm`` reports the stages alone (no utilisation). The CPU model and its flags go into the
output. Hold the CPU for yourself while it runs (``flock /tmp/cpu.lock``): the figures are rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generation_throughput import ensure_model  # beside this script: the base checkpoint for a replay
from machine import describe  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "results" / "benchmarks" / "checkpoint"


def read_journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wall_seconds(benchmark: Path) -> float | None:
    if not benchmark.is_file():
        return None
    import pandas as pd

    return float(pd.read_csv(benchmark, sep="\t")["s"].iloc[-1])


def collect(logs: Path) -> list[dict]:
    """One row per generating stage that has a journal (and its calls, for the replay)."""
    stages = []
    for path in sorted(logs.glob("*/*.generation.jsonl")):
        calls = read_journal(path)
        kind, key = path.parent.name, path.name.removesuffix(".generation.jsonl")
        wall = wall_seconds(path.with_name(f"{key}.benchmark.tsv"))
        generated = sum(c["generated_tokens"] for c in calls)
        stages.append({
            "stage": kind, "key": key, "backend": sorted({c["backend"] for c in calls}),
            "dtype": sorted({c["dtype"] for c in calls if c["dtype"]}), "calls": len(calls),
            "requests": sum(len(c["requests"]) for c in calls),
            "samples": sum(len(r["generated"]) for c in calls for r in c["requests"]),
            "prompt_tokens": sum(c["prompt_tokens"] for c in calls), "generated_tokens": generated,
            "generation_s": round(sum(c["seconds"] for c in calls), 2),
            "wall_s": None if wall is None else round(wall, 2),
            "tokens_per_s": None if not wall else round(generated / wall, 1),
            "_calls": calls,
        })
    return stages


# -- the vLLM replay (runs under .venv-vllm) ---------------------------------------------------------
def replay_worker(args) -> None:
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.inputs import TokensPrompt

    from ifplay.generation.backends.vllm_backend import VLLMBackend, request_seed

    stages = json.loads(Path(args.worker_in).read_text())
    start = time.perf_counter()
    backend = VLLMBackend(str(args.model), dtype=args.dtype, enforce_eager=False)
    startup = time.perf_counter() - start
    llm = backend.llm

    def requests_of(call):
        params = call["params"]
        prompts, sampling = [], []
        for request in call["requests"]:
            for sample, count in enumerate(request["generated"]):
                prompts.append(TokensPrompt(prompt_token_ids=request["prompt_ids"]))
                common = dict(max_tokens=count, min_tokens=count, ignore_eos=True, detokenize=False)
                if params["temperature"] == 0:
                    sampling.append(VLLMSamplingParams(temperature=0.0, **common))
                else:
                    sampling.append(VLLMSamplingParams(temperature=params["temperature"], top_p=params["top_p"],
                                                       top_k=0, seed=request_seed(params["seed"], request["prompt_ids"],
                                                                                   sample), **common))
        return prompts, sampling

    # warm-up (untimed): the first call of the first stage, cut to 8 requests of 8 tokens
    first = stages[0]["calls"][0]
    warm = {**first, "requests": [{**r, "generated": [min(8, g) for g in r["generated"][:1]]}
                                  for r in first["requests"][:8]]}
    llm.generate(*requests_of(warm), use_tqdm=False)
    results = {}
    for stage in stages:
        # each stage is its own job with its own engine: no prefix cached by an earlier stage (two
        # stages judging the same answers send identical prompts) may serve this one
        llm.reset_prefix_cache()
        seconds, tokens = 0.0, 0
        for call in stage["calls"]:
            prompts, sampling = requests_of(call)
            if not prompts:
                continue
            started = time.perf_counter()
            outputs = llm.generate(prompts, sampling, use_tqdm=False)
            seconds += time.perf_counter() - started
            tokens += sum(len(choice.token_ids) for output in outputs for choice in output.outputs)
        results[stage["id"]] = {"seconds": seconds, "tokens": tokens}
        print(f"replayed {stage['id']}: {tokens} tokens in {seconds:.1f} s", file=sys.stderr, flush=True)
    backend.close()
    Path(args.worker_out).write_text(json.dumps({"startup_s": startup, "dtype": backend.dtype, "stages": results}))


def replay(stages: list[dict], model: Path, dtype: str, python: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        worker_in, worker_out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        worker_in.write_text(json.dumps([{"id": f"{s['stage']}/{s['key']}", "calls": s["_calls"]} for s in stages]))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "workflow"), env.get("PYTHONPATH")]))
        command = [python, str(Path(__file__).resolve()), "--worker-in", str(worker_in), "--worker-out",
                   str(worker_out), "--model", str(model), "--dtype", dtype]
        print(f"replaying {len(stages)} stages on vLLM: {python}", file=sys.stderr)
        subprocess.run(command, env=env, check=True, stdout=sys.stderr)
        return json.loads(worker_out.read_text())


COLUMNS = [("stage", "stage"), ("key", "key"), ("requests", "requests"), ("samples", "samples"),
           ("prompt_tokens", "prompt tokens"), ("generated_tokens", "generated tokens"), ("wall_s", "wall s"),
           ("tokens_per_s", "tokens/s"), ("vllm_tokens_per_s", "vLLM tokens/s"), ("utilisation", "utilisation")]


def markdown(report: dict) -> str:
    lines = ["| " + " | ".join(label for _, label in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report["stages"]:
        lines.append("| " + " | ".join("-" if row.get(name) is None else f"{row[name]:,}" if isinstance(row[name], int)
                                       else str(row[name]) for name, _ in COLUMNS) + " |")
    total = report["total"]
    lines.append(f"| all | | {total['requests']:,} | {total['samples']:,} | {total['prompt_tokens']:,} | "
                 f"{total['generated_tokens']:,} | {total['wall_s']} | {total['tokens_per_s']} | "
                 f"{total.get('vllm_tokens_per_s') or '-'} | {total.get('utilisation') or '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logs", type=Path, default=Path("logs"))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint for the vLLM replay")
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--no-vllm", action="store_true", help="no replay: the stages' own figures only")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--worker-in", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_in:
        return replay_worker(args)
    stages = collect(args.logs)
    if not stages:
        raise SystemExit(f"no generation journals under {args.logs}/*/ (run the workflow first)")
    report = {"machine": describe(), "logs": str(args.logs), "stages": stages}
    dtypes = sorted({d for s in stages for d in s["dtype"]})
    if not args.no_vllm:
        replayable = [s for s in stages if s["_calls"] and all(r["prompt_ids"] for c in s["_calls"] for r in c["requests"])]
        if len(dtypes) != 1:
            raise SystemExit(f"the stages ran in several dtypes ({dtypes}); replay one run at a time")
        result = replay(replayable, ensure_model(args.model), dtypes[0], args.vllm_python)
        report["vllm"] = {"startup_s": round(result["startup_s"], 1), "dtype": result["dtype"]}
        for stage in stages:
            measured = result["stages"].get(f"{stage['stage']}/{stage['key']}")
            if measured and measured["seconds"] > 0:
                stage["vllm_tokens"], stage["vllm_s"] = measured["tokens"], round(measured["seconds"], 2)
                stage["vllm_tokens_per_s"] = round(measured["tokens"] / measured["seconds"], 1)
                if stage["tokens_per_s"]:
                    stage["utilisation"] = round(stage["tokens_per_s"] / stage["vllm_tokens_per_s"], 2)
    for stage in stages:
        del stage["_calls"]
    total = {name: sum(s[name] for s in stages) for name in ("requests", "samples", "prompt_tokens", "generated_tokens")}
    total["wall_s"] = round(sum(s["wall_s"] or 0 for s in stages), 1)
    total["tokens_per_s"] = round(total["generated_tokens"] / total["wall_s"], 1) if total["wall_s"] else None
    worked = [s for s in stages if s["generated_tokens"]]  # a stage with nothing to do (budget 1) has no replay
    if worked and all(s.get("vllm_s") for s in worked):
        vllm_s = sum(s["vllm_s"] for s in worked)
        total["vllm_tokens_per_s"] = round(sum(s["vllm_tokens"] for s in worked) / vllm_s, 1)
        total["utilisation"] = round(total["tokens_per_s"] / total["vllm_tokens_per_s"], 2)
    report["total"] = total
    machine = report["machine"]
    print(f"{machine['processor']}, {machine['cpus']} CPUs, flags {' '.join(machine['cpu_flags'])}; dtype {', '.join(dtypes)}"
          + (f"; vLLM start-up {report['vllm']['startup_s']} s (untimed)" if "vllm" in report else ""))
    print(markdown(report) if args.markdown else json.dumps(report["stages"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
