"""Generation throughput of the transformers backend against the vLLM backend on the same prompts.

The first ``--limit`` IFEval prompts (one user turn each) go through each backend in ONE
``backend.chat`` call, twice: greedy decoding, then sampled (``n=4``, T 0.9, top_p 0.9, seed 0),
both with a fixed ``--max-new-tokens``. Measured per backend and decoding mode: wall seconds of
the call, generated tokens and tokens per second; the engine start-up (building the backend: loading
the model, for vLLM also its worker process, KV cache and, without ``enforce_eager``, torch.compile)
is timed separately and is not part of the tokens per second. Before the timed calls each backend
makes one short warm-up call (untimed).

Tokens are counted the same way for both backends: the returned texts are re-tokenized with the
checkpoint's tokenizer (no special tokens) in this process, so the end-of-sequence token is not
counted and a text stopped at ``--max-new-tokens`` counts about that many tokens.

vLLM lives in its own environment (``make venv-vllm``), so every backend runs in its own interpreter:
this script starts ``<python> benchmarks/generation_throughput.py --worker BACKEND ...`` with
``--transformers-python`` (default ``.venv/bin/python``) and ``--vllm-python`` (default
``.venv-vllm/bin/python``), and reads the worker's texts and timings back as JSON. The
transformers backend uses the config default batch size 16 (``--batch-size``); vLLM batches
itself. Run from the repository root:

    .venv/bin/python benchmarks/generation_throughput.py [--limit 64] [--max-new-tokens 128] [--markdown]

``--model`` is a checkpoint directory; without it (or when it does not exist) the default base model
is prepared into ``results/benchmarks/checkpoint`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "results" / "benchmarks" / "checkpoint"
DEFAULT_PROMPTS = REPO.parent / "shared" / "data" / "ifeval" / "input_data.jsonl"
BACKENDS = ("transformers", "vllm")
VLLM_OPTIONS = {"max_model_len": 2048, "dtype": "float32", "enforce_eager": False}
MODES = {  # name -> SamplingParams keywords (max_new_tokens added from the command line)
    "greedy": dict(temperature=0.0, n=1, seed=0),
    "sampled n=4": dict(temperature=0.9, top_p=0.9, n=4, seed=0),
}


def ensure_model(path: Path) -> Path:
    """``path`` if it is a checkpoint; otherwise the config's base model, prepared there."""
    if (path / "config.json").is_file():
        return path
    import yaml

    from ifplay.generation.checkpoints import prepare_base_model

    model = yaml.safe_load((REPO / "config" / "default.yaml").read_text())["model"]
    print(f"preparing {model['base']} ({model['dtype']}) into {path}", file=sys.stderr)
    return prepare_base_model(model["base"], model["revision"], model["dtype"], path)


def load_prompts(path: Path, limit: int) -> list[dict]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records[:limit]


# -- worker: one backend, in the interpreter that has it -----------------------------------------
def run_worker(args) -> dict:
    from ifplay.generation.backends import SamplingParams, make_backend

    prompts = load_prompts(args.prompts, args.limit)
    conversations = [[{"role": "user", "content": p["prompt"]}] for p in prompts]
    options = json.loads(args.vllm_options) if args.worker == "vllm" else {}
    start = time.perf_counter()
    backend = make_backend(args.worker, str(args.model), batch_size=args.batch_size, options=options)
    startup = time.perf_counter() - start
    result = {"backend": args.worker, "options": options, "batch_size": args.batch_size,
              "startup_s": startup, "runs": {}}
    with backend:
        start = time.perf_counter()
        backend.chat(conversations[:2], SamplingParams(max_new_tokens=8))
        result["warmup_s"] = time.perf_counter() - start
        for name, params in MODES.items():
            sampling = SamplingParams(max_new_tokens=args.max_new_tokens, **params)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                texts = backend.chat(conversations, sampling)
                times.append(time.perf_counter() - start)
            if sampling.greedy:
                texts = [t[:1] for t in texts]  # the greedy answer, not its n copies
            result["runs"][name] = {"seconds": times, "texts": texts}
    return result


# -- parent: start the workers, count tokens, compare ---------------------------------------------
def default_python(backend: str) -> str:
    venv = REPO / (".venv" if backend == "transformers" else ".venv-vllm") / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def start_worker(backend: str, python: str, model: Path, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "worker.json"
        command = [python, str(Path(__file__).resolve()), "--worker", backend, "--model", str(model),
                   "--prompts", str(args.prompts), "--limit", str(args.limit),
                   "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
                   "--repeats", str(args.repeats), "--vllm-options", args.vllm_options, "--worker-out", str(out)]
        env = dict(os.environ)  # this checkout's package first, whichever interpreter runs it
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "workflow"), env.get("PYTHONPATH")]))
        print(f"running {backend} worker: {python}", file=sys.stderr)
        subprocess.run(command, env=env, check=True, stdout=sys.stderr)
        return json.loads(out.read_text())


def summarize(workers: dict, tokenizer) -> list[dict]:
    def count(texts):
        flat = [t for group in texts for t in group]
        return sum(len(ids) for ids in tokenizer(flat, add_special_tokens=False)["input_ids"]), len(flat)

    rows = []
    for name in MODES:
        row = {"mode": name}
        for backend, result in workers.items():
            run = result["runs"][name]
            tokens, completions = count(run["texts"])
            seconds = statistics.median(run["seconds"])
            row[backend] = {"seconds": round(seconds, 2), "tokens": tokens, "completions": completions,
                            "tokens_per_s": round(tokens / seconds, 1)}
        if len(workers) == 2:
            row["vllm/transformers"] = round(row["vllm"]["tokens_per_s"] / row["transformers"]["tokens_per_s"], 2)
        rows.append(row)
    if len(workers) == 2:  # greedy answers that agree word for word
        a, b = (workers[b]["runs"]["greedy"]["texts"] for b in BACKENDS)
        rows[0]["greedy_identical"] = f"{sum(x == y for x, y in zip(a, b))} / {len(a)}"
    return rows


def markdown(report: dict) -> str:
    workers, rows = report["workers"], report["results"]
    lines = ["| measure | " + " | ".join(workers) + (" | vllm / transformers |" if len(workers) == 2 else ""),
             "|---|" + "---|" * (len(workers) + (len(workers) == 2))]

    def line(label, values, ratio=""):
        lines.append(f"| {label} | " + " | ".join(values) + (f" | {ratio} |" if len(workers) == 2 else " |"))

    line("engine start-up (s)", [f"{workers[b]['startup_s']:.1f}" for b in workers])
    for row in rows:
        mode = row["mode"]
        line(f"{mode}: wall (s)", [f"{row[b]['seconds']:.1f}" for b in workers])
        line(f"{mode}: generated tokens", [f"{row[b]['tokens']:,}" for b in workers])
        line(f"{mode}: tokens/s", [f"{row[b]['tokens_per_s']:.1f}" for b in workers],
             f"{row['vllm/transformers']:.2f}x" if "vllm/transformers" in row else "")
    if "greedy_identical" in rows[0]:
        lines.append(f"\ngreedy answers identical across backends: {rows[0]['greedy_identical']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="checkpoint directory (prepared from config/default.yaml's model if missing)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="IFEval input_data.jsonl")
    parser.add_argument("--limit", type=int, default=64, help="first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers backend batch size")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per mode (the median is reported)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--transformers-python", default=default_python("transformers"))
    parser.add_argument("--vllm-python", default=default_python("vllm"))
    parser.add_argument("--vllm-options", default=json.dumps(VLLM_OPTIONS),
                        help=f"JSON object of vLLM backend options (default {json.dumps(VLLM_OPTIONS)})")
    parser.add_argument("--out", type=Path, help="write the report (JSON) here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.worker_out.write_text(json.dumps(run_worker(args)))
        return

    from transformers import AutoTokenizer

    model = ensure_model(args.model)
    pythons = {"transformers": args.transformers_python, "vllm": args.vllm_python}
    workers = {b: start_worker(b, pythons[b], model, args) for b in args.backends}
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    report = {
        "machine": describe(),
        "settings": {"prompts": args.limit, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                     "repeats": args.repeats, "modes": MODES},
        "workers": {b: {k: v for k, v in r.items() if k != "runs"} for b, r in workers.items()},
        "results": summarize(workers, tokenizer),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
