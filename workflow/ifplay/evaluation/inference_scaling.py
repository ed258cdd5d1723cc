"""Inference-time scaling (SPaR, arXiv 2412.11605, Fig. 5): decode the evaluation prompts with more
generated responses per prompt and score each decoding strategy with IFEval.

Strategies, each at a ``budget`` = responses generated per prompt:

- ``greedy``: the actor's greedy answer (budget 1; the evaluation's own decoding).
- ``best_of_n``: N sampled answers of the actor, each judged by the refiner (its voted value,
  ``#Yes / (#Yes + #No)``); the highest value wins, ties to the earliest sample. One sampling
  stage draws max(budgets) answers and budget N reads the first N of them, so the budgets are
  nested (as when N grows at inference) and the sampling is paid once.
- ``tree_search``: the greedy answer is judged by the refiner; if its value passes the search's end
  gate it is kept, otherwise the refinement tree search (:mod:`ifplay.spar.tree_search`, the SPaR search
  with the ``inference_scaling.search`` settings) refines it with at most ``budget - 1``
  refinements and the accepted (else the highest-value) node is the answer. Budget 1 is greedy.

Every strategy's answers are ``responses.jsonl`` records (key, prompt, response, generations, ...)
that the ordinary ``ifeval_scores`` stage scores; :func:`scaling_table` and :func:`plot_scaling`
make ``tables/inference_scaling.csv`` and ``figures/inference_scaling.png`` of an experiment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ifplay.scoring.ifeval import METRICS, SHORT
from ifplay.core.records import atomic_path, read_json
from ifplay.core.settings import NoRuntime
from ifplay.generation.backends import BackendChoice
from ifplay.spar.stages import JudgeConfig, Search, SearchRuntime, tree_root
from ifplay.spar.tree_search import SearchResult, TreeSearch

if TYPE_CHECKING:  # pandas only where tables are made: the command line also runs in .venv-vllm
    import pandas as pd

log = logging.getLogger(__name__)

METHODS = ("greedy", "best_of_n", "tree_search")
TABLE_COLUMNS = ["method", "budget", "generations", "prompts", "prompt_strict", "inst_strict", "prompt_loose",
                 "inst_loose"]
LABELS = {"greedy": "greedy", "best_of_n": "best-of-N (refiner picks)", "tree_search": "tree-search refinement"}


def best_of_n(judged: list[dict], budget: int, source: str = "judged samples") -> list[dict]:
    """For every prompt, the highest-value response among its samples ``0..budget-1`` (ties: the
    earliest sample), in first-seen prompt order. ``judged``: voted judgements of k >= budget
    samples per prompt (``judgements`` output: key, sample, prompt, response, value, ...)."""
    if budget < 1:
        raise ValueError(f"best-of-N budget must be >= 1, got {budget}")
    by_key: dict = {}
    for record in judged:
        by_key.setdefault(record["key"], []).append(record)
    answers = []
    for key, records in by_key.items():
        pool = sorted((r for r in records if r.get("sample", 0) < budget), key=lambda r: r.get("sample", 0))
        if len(pool) < budget:
            raise ValueError(f"{source}: prompt {key!r} has {len(pool)} samples below index {budget}, "
                             f"best-of-{budget} needs {budget} (sample more: k >= max budget)")
        best = max(pool, key=lambda r: r["value"])  # max keeps the first of equal values
        answers.append({"key": key, "prompt": best["prompt"], "response": best["response"], "sample": best["sample"],
                        "value": best["value"], "generations": budget})
    return answers


def split_roots(judged: list[dict], prompts: dict, end_gate: float) -> tuple[dict, list[dict]]:
    """The judged greedy answers that pass ``end_gate`` (by key) and tree-search roots for the rest."""
    accepted, roots = {}, []
    for record in judged:
        if record["value"] > end_gate:
            accepted[record["key"]] = record
        else:
            roots.append(tree_root(record, prompts[record["key"]], record["key"]))
    return accepted, roots


def refine_answers(judged: list[dict], prompts: dict, budget: int, end_gate: float,
                   search: TreeSearch | None, trees_path: str | None = None) -> tuple[list[dict], list[SearchResult]]:
    """Tree-search refinement at inference with ``budget`` responses per prompt (the greedy answer
    plus at most ``budget - 1`` refinements; ``search.config.budget`` must be ``budget - 1``).
    ``search`` may be ``None`` when no expansion fits (budget - 1 < branch): greedy answers.
    Returns one answer per judged greedy answer, in its order, and the search results."""
    accepted, roots = split_roots(judged, prompts, end_gate)
    results: dict = {}
    if roots and search is not None:
        if search.config.budget != budget - 1:
            raise ValueError(f"search budget {search.config.budget} != budget - 1 = {budget - 1}")
        results = {r.key: r for r in search.run(roots, journal_path=trees_path)}
    answers = []
    for record in judged:
        key = record["key"]
        result = results.get(key)
        if result is None:
            how = "accepted_greedy" if key in accepted else "greedy_unrefined"
            answers.append({"key": key, "prompt": record["prompt"], "response": record["response"],
                            "value": record["value"], "how": how, "generations": 1})
            continue
        generated = result.nodes_expanded * search.config.branch
        answers.append({"key": key, "prompt": record["prompt"], "response": result.best.response,
                        "value": result.best.value, "how": "refined" if result.success else "best_node",
                        "node": result.best.id, "generations": 1 + generated})
    return answers, list(results.values())


def answer_counts(answers: list[dict]) -> dict:
    """How the answers came about: by ``how`` (tree search) and the mean responses generated."""
    counts: dict = {"prompts": len(answers),
                    "mean_generations": round(sum(a["generations"] for a in answers) / len(answers), 4) if answers else 0}
    for answer in answers:
        if "how" in answer:
            counts[answer["how"]] = counts.get(answer["how"], 0) + 1
    return counts


# -- the experiment's table and figure --------------------------------------------------------
def scaling_table(rows: list[dict]) -> pd.DataFrame:
    """``rows``: method, budget, scores (a metrics.json path) and answers (a responses.jsonl whose
    records carry ``generations``; None for greedy). One row per (method, budget): the mean
    responses generated per prompt and IFEval's four metrics in percent."""
    import pandas as pd

    from ifplay.core.records import read_jsonl

    records = []
    for row in rows:
        scores = read_json(row["scores"])
        generations = 1.0
        if row.get("answers"):
            answers = read_jsonl(row["answers"])
            generations = sum(a.get("generations", row["budget"]) for a in answers) / max(1, len(answers))
        records.append({"method": row["method"], "budget": row["budget"], "generations": round(generations, 2),
                        "prompts": scores["num_prompts"],
                        **{SHORT[m]: round(100 * scores["metrics"][m], 2) for m in METRICS}})
    table = pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)
    order = {method: i for i, method in enumerate(METHODS)}
    table["_order"] = table["method"].map(order)
    return table.sort_values(["_order", "budget"], kind="stable").drop(columns="_order").reset_index(drop=True)


def plot_scaling(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """IFEval prompt-level strict accuracy against the budget, one line per strategy (greedy: a
    dashed horizontal line at its score), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    budgets = sorted(table["budget"].unique())
    for method in METHODS:
        part = table[table["method"] == method].sort_values("budget")
        if part.empty:
            continue
        if method == "greedy":
            ax.axhline(part["prompt_strict"].iloc[0], color="grey", linestyle="--",
                       label=f"{LABELS[method]} ({part['prompt_strict'].iloc[0]:.1f})")
            continue
        ax.plot(part["budget"], part["prompt_strict"], marker="o", label=LABELS[method])
        for x, y in zip(part["budget"], part["prompt_strict"]):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("budget: responses generated per prompt")
    ax.set_ylabel("IFEval prompt-level strict accuracy (%)")
    prompts = int(table["prompts"].max()) if not table.empty else 0
    ax.set_title(f"{title}\ninference-time scaling on {prompts} IFEval prompts", fontsize=9)
    low, high = table["prompt_strict"].min(), table["prompt_strict"].max()
    margin = max(2.0, 0.12 * (high - low))
    ax.set_ylim(max(0.0, low - margin) if low > margin else -margin / 2, min(100.0, high + margin) + margin / 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# -- stage settings (ifplay.core.settings) ------------------------------------------------------
@dataclass(frozen=True)
class BestOfNConfig:
    budget: int  # N: samples per prompt to choose from


@dataclass(frozen=True)
class BestOfNSettings:
    """``ifplay scaling-best-of-n --settings``."""

    config: BestOfNConfig
    runtime: NoRuntime


@dataclass(frozen=True)
class ScalingSearchConfig:
    budget: int  # responses generated per prompt: the greedy answer + at most budget-1 refinements
    search: Search
    judge: JudgeConfig
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class ScalingSearchSettings:
    """``ifplay scaling-search --settings``."""

    config: ScalingSearchConfig
    runtime: SearchRuntime


# -- command line -----------------------------------------------------------------------------
def _cmd_best_of_n(args) -> None:
    import json

    from ifplay.core.records import read_jsonl, write_json, write_jsonl
    from ifplay.spar.stages import JUDGED_FIELDS

    budget = args.settings.config.budget
    answers = best_of_n(read_jsonl(args.judged, required=JUDGED_FIELDS), budget, source=args.judged)
    write_jsonl(args.out, answers)
    counts = answer_counts(answers)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def _cmd_search(args) -> None:
    import json

    from ifplay.generation.templates import load_template
    from ifplay.core.records import read_jsonl, write_json, write_jsonl
    from ifplay.spar.stages import JUDGED_FIELDS, refiner_backend, stage_judge

    config, runtime = args.settings.config, args.settings.runtime
    budget, search_settings = config.budget, config.search
    prompts = {p["key"]: p for p in read_jsonl(args.prompts, required=("key", "prompt"))}
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    unknown = [r["key"] for r in judged if r["key"] not in prompts]
    if unknown:
        raise ValueError(f"{args.judged}: answers to prompt keys not in {args.prompts}: {unknown[:5]}")
    refinements = budget - 1
    search = None
    counts: dict = {}
    if refinements >= search_settings.branch:  # at least one expansion fits
        backend = refiner_backend(config.backend, runtime, args.refiner, args.threads)
        with stage_judge(config, runtime, backend, args.threads) as judge:
            search = TreeSearch(backend, judge, load_template(runtime.refine_template, "refine"),
                                search_settings.tree(refinements, config.seed))
            answers, results = refine_answers(judged, prompts, budget, search_settings.end_gate, search, args.trees)
            counts = {"refiner_calls": search.backend_calls, "judge_calls": search.judge_calls}
    else:
        log.info("budget %d leaves no room for an expansion of %d refinements: greedy answers", budget,
                 search_settings.branch)
        answers, results = refine_answers(judged, prompts, budget, search_settings.end_gate, None)
    if not results:  # else the search wrote its journal there
        write_jsonl(args.trees, [])
    write_jsonl(args.out, answers)
    counts = {**answer_counts(answers), "trees": len(results), **counts}
    write_json(args.counts, counts)
    print(json.dumps(counts))


def add_cli(sub) -> None:
    """Register ``scaling-best-of-n`` and ``scaling-search`` on the ``ifplay`` subparsers."""
    from ifplay.core import settings
    from ifplay.spar.stages import add_threads_argument

    p = sub.add_parser("scaling-best-of-n", help="inference scaling: the refiner's pick of the first N judged samples")
    p.add_argument("--judged", required=True, help="judgements output over k >= N samples per prompt")
    p.add_argument("--out", required=True, help="answers JSONL (key, prompt, response, sample, value, generations)")
    p.add_argument("--counts", required=True, help="counts JSON")
    settings.add_argument(p, BestOfNSettings)
    p.set_defaults(func=_cmd_best_of_n)

    p = sub.add_parser("scaling-search", help="inference scaling: tree-search refinement of judged greedy answers")
    p.add_argument("--prompts", required=True)
    p.add_argument("--judged", required=True, help="judgements output over the greedy answers")
    p.add_argument("--refiner", required=True, help="refiner checkpoint (refines and judges)")
    p.add_argument("--out", required=True, help="answers JSONL (key, prompt, response, value, how, generations)")
    p.add_argument("--trees", required=True, help="search trees JSONL")
    p.add_argument("--counts", required=True, help="counts JSON")
    settings.add_argument(p, ScalingSearchSettings)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_search)
