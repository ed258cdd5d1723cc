"""Wall time of SPaR's tree search, batched (level-synchronous across trees) against sequential.

Both strategies of :class:`ifplay.spar.tree_search.TreeSearch` run on the same backend, from the same
roots, with the same settings: ``batched=True`` (one refiner call and one judge call per step for
all unfinished trees) and ``batched=False`` (the reference release's strategy: one tree at a time,
one refiner call and one judge call per expansion).

Settings are the default workflow's (``config/default.yaml``, section ``spar``), read from the
config file: the actor's samples (``spar.sampling``), the model judge (``spar.judge``: template,
votes, temperature, tokens, tie re-draws), ``spar.negatives_per_prompt`` and the search
(``spar.search``: algorithm, branch, select, depth, budget, refine template, output format,
refiner sampling), with the config's ``seed``. The refiner and judge is the base checkpoint, as in
SPaR's iteration 0.

Roots (prepared once, not timed): the model's ``spar.sampling.k`` samples for each of the first
``--limit`` IFEval prompts, judged by the model judge, then negatives mined as SPaR does
(:func:`ifplay.spar.stages.mine_negatives`). Each strategy then gets a fresh judge (its own empty
judgement cache) and searches every root; the timed part is ``TreeSearch.run`` alone.

With the transformers backend sampled refinements depend on the batch they are drawn in, so the
two strategies grow different trees; the vLLM backend seeds each request by its content, so they
grow the same trees up to arithmetic differences between batch shapes ("identical trees" counts
them). The node counts, refiner tokens and judged pairs are reported next to the times so the work
done can be compared (refinements and refiner tokens per second).

``--backend vllm`` re-runs this script under ``--vllm-python`` (default ``.venv-vllm/bin/python``)
unless vLLM is importable here. Run from the repository root:

    .venv/bin/python benchmarks/tree_search_speed.py [--limit 16] [--backend transformers|vllm] [--markdown]

``--model`` is a checkpoint directory; without it (or when it does not exist) the default base model
is prepared into ``results/benchmarks/checkpoint`` first.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "results" / "benchmarks" / "checkpoint"
DEFAULT_PROMPTS = REPO.parent / "shared" / "data" / "ifeval" / "input_data.jsonl"
DEFAULT_CONFIG = REPO / "config" / "default.yaml"
VLLM_OPTIONS = {"max_model_len": 2048, "dtype": "float32", "enforce_eager": False}
STRATEGIES = {"batched": True, "sequential": False}


def ensure_model(path: Path, config: dict) -> Path:
    """``path`` if it is a checkpoint; otherwise the config's base model, prepared there."""
    if (path / "config.json").is_file():
        return path
    from ifplay.generation.checkpoints import prepare_base_model

    model = config["model"]
    print(f"preparing {model['base']} ({model['dtype']}) into {path}", file=sys.stderr)
    return prepare_base_model(model["base"], model["revision"], model["dtype"], path)


def make_model_judge(backend, spar: dict, seed: int):
    from ifplay.judging.judge import make_judge

    judge = spar["judge"]
    return make_judge("model", backend, REPO / judge["template"], votes=judge["votes"],
                      temperature=judge["temperature"], top_p=judge["top_p"], max_new_tokens=judge["max_new_tokens"],
                      seed=seed, tie_resamples=judge["tie_resamples"])


def prepare_roots(backend, prompts: list[dict], spar: dict, seed: int) -> tuple[list[dict], dict]:
    """SPaR's roots: the actor's samples, judged by the model judge, negatives mined."""
    from ifplay.generation.backends import SamplingParams
    from ifplay.spar.stages import judgement_counts, mine_negatives

    sampling = spar["sampling"]
    params = SamplingParams(temperature=sampling["temperature"], top_p=sampling["top_p"],
                            max_new_tokens=sampling["max_new_tokens"], n=sampling["k"], seed=seed)
    samples = backend.chat([[{"role": "user", "content": p["prompt"]}] for p in prompts], params)
    responses = [(p, j, text) for p, texts in zip(prompts, samples) for j, text in enumerate(texts)]
    with make_model_judge(backend, spar, seed) as judge:
        judgements = judge.judge([(p, text) for p, _, text in responses])
    judged = [{"key": p["key"], "sample": j, "prompt": p["prompt"], "response": text, **v.to_json()}
              for (p, j, text), v in zip(responses, judgements)]
    roots = mine_negatives(judged, {p["key"]: p for p in prompts}, spar["negatives_per_prompt"], seed)
    return roots, judgement_counts(judged)


def search_config(spar: dict, seed: int):
    from ifplay.spar.tree_search import SearchConfig

    settings = spar["search"]
    return SearchConfig(**{f.name: settings[f.name] for f in dataclasses.fields(SearchConfig) if f.name in settings},
                        seed=seed)


def time_search(backend, roots: list[dict], spar: dict, seed: int, batched: bool, tokenizer) -> dict:
    from ifplay.generation.templates import load_template
    from ifplay.spar.tree_search import TreeSearch

    with make_model_judge(backend, spar, seed) as judge:  # a fresh judgement cache per strategy
        search = TreeSearch(backend, judge, load_template(REPO / spar["search"]["template"], "refine"),
                            search_config(spar, seed), batched=batched)
        start = time.perf_counter()
        results = search.run(roots)
        seconds = time.perf_counter() - start
        judged_pairs = judge.cache_misses
    refinements = [node.refinement for r in results for node in r.nodes[1:]]
    generated = len(refinements) + sum(r.invalid_refinements for r in results)
    refiner_tokens = sum(len(ids) for ids in tokenizer(refinements, add_special_tokens=False)["input_ids"]) \
        if refinements else 0
    return {"seconds": seconds, "trees": len(results), "solved": sum(r.success for r in results),
            "nodes_expanded": sum(r.nodes_expanded for r in results), "refinements_generated": generated,
            "nodes_generated": len(refinements), "refiner_tokens": refiner_tokens, "judged_pairs": judged_pairs,
            "refiner_calls": search.backend_calls, "judge_calls": search.judge_calls,
            "refinements_per_s": round(generated / seconds, 3), "refiner_tokens_per_s": round(refiner_tokens / seconds, 1),
            "trees_nodes": [[node.response for node in r.nodes] for r in results]}


def run(args) -> dict:
    import yaml
    from transformers import AutoTokenizer

    from ifplay.generation.backends import make_backend

    config = yaml.safe_load(args.config.read_text())
    spar, seed = config["spar"], config["seed"]
    model = ensure_model(args.model, config)
    lines = args.prompts.read_text(encoding="utf-8").splitlines()
    prompts = [json.loads(line) for line in lines if line.strip()][:args.limit]
    options = json.loads(args.vllm_options) if args.backend == "vllm" else {}
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    start = time.perf_counter()
    backend = make_backend(args.backend, str(model), batch_size=config["backend"]["batch_size"],
                           max_prompt_tokens=config["backend"]["max_prompt_tokens"], options=options)
    startup = time.perf_counter() - start
    with backend:
        start = time.perf_counter()
        roots, judgements = prepare_roots(backend, prompts, spar, seed)
        preparation = time.perf_counter() - start
        print(f"{len(roots)} roots from {len(prompts)} prompts ({preparation:.0f} s)", file=sys.stderr)
        if not roots:
            raise SystemExit("no prompt got a response the judge labelled No: no roots to search (raise --limit)")
        order = args.order.split(",")
        strategies = {name: time_search(backend, roots, spar, seed, STRATEGIES[name], tokenizer) for name in order}
    trees = [strategy.pop("trees_nodes") for strategy in strategies.values()]
    # a backend that seeds each request by its content (vllm) grows the same trees either way
    identical = sum(a == b for a, b in zip(*trees)) if len(trees) == 2 else None
    return {
        "machine": describe(),
        "settings": {"backend": args.backend, "options": options, "batch_size": config["backend"]["batch_size"],
                     "prompts": len(prompts), "config": str(args.config), "seed": seed,
                     "sampling": spar["sampling"], "judge": spar["judge"], "search": spar["search"],
                     "negatives_per_prompt": spar["negatives_per_prompt"]},
        "startup_s": round(startup, 1), "roots_preparation_s": round(preparation, 1), "root_judgements": judgements,
        "roots": len(roots), "strategies": strategies, "identical_trees": identical,
        "sequential/batched": round(strategies["sequential"]["seconds"] / strategies["batched"]["seconds"], 2)
        if len(strategies) == 2 else None,
    }


def markdown(report: dict) -> str:
    strategies = report["strategies"]
    names = list(strategies)
    rows = [("trees (roots)", "trees", "{:d}"), ("trees solved", "solved", "{:d}"),
            ("nodes expanded", "nodes_expanded", "{:d}"), ("refinements generated", "refinements_generated", "{:d}"),
            ("nodes generated (parsed refinements)", "nodes_generated", "{:d}"),
            ("refiner tokens", "refiner_tokens", "{:,}"), ("pairs judged", "judged_pairs", "{:d}"),
            ("refiner calls", "refiner_calls", "{:d}"), ("judge calls", "judge_calls", "{:d}"),
            ("wall time (s)", "seconds", "{:.1f}"), ("refinements/s", "refinements_per_s", "{:.3f}"),
            ("refiner tokens/s", "refiner_tokens_per_s", "{:.1f}")]
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(strategies[n][key]) for n in names) + " |")
    if report["sequential/batched"] is not None:
        lines.append(f"\nsequential / batched wall time: {report['sequential/batched']:.2f}x "
                     f"(backend {report['settings']['backend']}, start-up {report['startup_s']:.0f} s, "
                     f"roots prepared in {report['roots_preparation_s']:.0f} s, untimed); identical trees: "
                     f"{report['identical_trees']} of {report['roots']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="checkpoint directory (prepared from the config's model if missing)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="IFEval input_data.jsonl")
    parser.add_argument("--limit", type=int, default=16, help="first N prompts (one root per prompt with a negative)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="workflow config (its spar section)")
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--vllm-options", default=json.dumps(VLLM_OPTIONS),
                        help=f"JSON object of vLLM backend options (default {json.dumps(VLLM_OPTIONS)})")
    default_vllm = REPO / ".venv-vllm" / "bin" / "python"
    parser.add_argument("--vllm-python", default=str(default_vllm) if default_vllm.exists() else None,
                        help="interpreter with vLLM (default .venv-vllm/bin/python)")
    parser.add_argument("--order", default="batched,sequential", help="strategies to time, in this order")
    parser.add_argument("--out", type=Path, help="write the report (JSON) here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    if any(name not in STRATEGIES for name in args.order.split(",")):
        parser.error(f"--order: comma-separated names of {', '.join(STRATEGIES)}")

    if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        if not args.vllm_python:
            parser.error("vLLM is not installed here; pass --vllm-python (make venv-vllm)")
        env = dict(os.environ)  # this checkout's package first
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "workflow"), env.get("PYTHONPATH")]))
        raise SystemExit(subprocess.run([args.vllm_python, str(Path(__file__).resolve()), *sys.argv[1:]],
                                        env=env).returncode)

    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
