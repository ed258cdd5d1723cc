"""Refinement accuracy (SPaR, arXiv 2412.11605, Tables 3 and 10): can a refiner repair a response
that was judged not to follow its instruction?

1. ``refinement_tasks``: held-out tasks built the way SPaR's RFT data is, from prompts no iteration
   trains on. R_0's ``judge_eval`` judgements of the base model's greedy answers to the dev prompts
   give, per answer, R_0's voted verdict and the critique that agrees with the majority; a task is
   an answer R_0 labels "No", and (``require_oracle_failure``, on by default) one IFEval's strict
   checkers fail too, so that every task really needs repairing. The first ``limit`` in prompt
   order: ``tasks.jsonl`` (the judged records) and ``prompts.jsonl`` (their prompts).
2. ``refinements``: a refiner R_t refines every task with a decoding strategy at a budget (the
   refinements generated per task). Every strategy is SPaR's tree search
   (:mod:`ifplay.spar.tree_search`) in a shape (:func:`strategy_search`); R_t judges its own
   refinements as it does in SPaR, and a tree stops when one is accepted:

   - ``greedy``: one refinement at temperature 0 (budget 1);
   - ``best_of_n``: N sampled refinements of the task, the best-judged kept (one expansion of N);
   - ``iterative``: refine, judge, refine that refinement with its own critique, up to N times;
   - ``bfs`` / ``dfs``: the search of ``spar.search`` (with ``eval.refinement.search``'s overrides),
     at most N refinements.

   The answer is the accepted refinement, else the highest-valued one (ties: the earliest), never
   the unrefined task; a task whose every refinement failed to parse has none (``unparsed``).
3. The answers are judged by the ordinary ``judgements`` stage, by the final refiner R_T
   ("Acc-SPaR": SPaR's judge template and votes) and by the verifier oracle (IFEval's strict
   checkers: exact on these prompts, the judge a CPU run can trust); ``refinement_scores`` turns each
   into accuracy = answers labelled "Yes" / tasks, an unparsed task wrong under every judge.

``tables/refinement.csv``: refiner, iteration, strategy, budget, judge, accuracy, tasks, then the
counts (:data:`TABLE_COLUMNS`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ifplay.core import settings as stage_settings
from ifplay.core.config import ConfigError
from ifplay.core.records import read_jsonl, write_json, write_jsonl
from ifplay.core.settings import NoRuntime
from ifplay.generation.backends import BackendChoice
from ifplay.spar.stages import JUDGED_FIELDS, JudgeConfig, Search, SearchRuntime, tree_root
from ifplay.spar.tree_search import SearchResult, TreeSearch

log = logging.getLogger(__name__)

STRATEGIES = ("greedy", "best_of_n", "iterative", "bfs", "dfs")
#: Columns of ``tables/refinement.csv``.
TABLE_COLUMNS = ["refiner", "iteration", "strategy", "budget", "judge", "accuracy", "tasks", "accepted", "unparsed",
                 "unlabelled", "mean_refinements"]


class RefinementError(ValueError):
    """Inputs of a refinement stage that do not fit together (names the file or the record)."""


def strategy_search(strategy: str, budget: int, search: dict) -> dict:
    """The tree-search shape of ``strategy`` at ``budget`` refinements per task: ``search`` (the
    search's hashed settings, without budget) with the fields the strategy fixes; a budget the
    strategy cannot spend raises :class:`ConfigError` naming its key."""
    key = f"eval.refinement.strategies.{strategy}"
    if strategy not in STRATEGIES:
        raise ConfigError(f"eval.refinement.strategies: unknown strategy '{strategy}' (choices: {', '.join(STRATEGIES)})")
    if budget < 1:
        raise ConfigError(f"{key}: budget {budget} < 1")
    if strategy == "greedy":
        if budget != 1:
            raise ConfigError(f"{key}: greedy decoding makes one refinement (budget 1), not {budget}")
        return {**search, "algorithm": "bfs", "branch": 1, "select": 1, "max_depth": 1, "temperature": 0.0, "top_p": 1.0}
    if strategy == "best_of_n":
        return {**search, "algorithm": "bfs", "branch": budget, "select": 1, "max_depth": 1}
    if strategy == "iterative":
        return {**search, "algorithm": "dfs", "branch": 1, "select": 1, "max_depth": budget}
    if budget < search["branch"]:
        raise ConfigError(f"{key}: budget {budget} is below one expansion of the search "
                              f"(branch {search['branch']}): no refinement would be made")
    return {**search, "algorithm": strategy}


# -- stage 1: the tasks ------------------------------------------------------------------------------
def select_tasks(judged: list[dict], oracle: list[dict], limit: int | None, require_oracle_failure: bool) -> list[dict]:
    """The judged answers R_0 labels "No" (and, with ``require_oracle_failure``, the oracle fails),
    first ``limit`` in order; each keeps its judgement and gains ``oracle`` (1 or 0)."""
    truth = {r["id"]: r["oracle"] for r in oracle}
    tasks = []
    for record in judged:
        rid = f"{record['key']}/{record.get('sample', 0)}"
        if rid not in truth:
            raise RefinementError(f"judged answer {rid} has no oracle label")
        if record["label"] != 0 or (require_oracle_failure and truth[rid] != 0) or not record["critique"]:
            continue
        tasks.append({**record, "oracle": truth[rid]})
        if limit is not None and len(tasks) == limit:
            break
    return tasks


@dataclass(frozen=True)
class TasksConfig:
    limit: int | None
    require_oracle_failure: bool


@dataclass(frozen=True)
class TasksSettings:
    config: TasksConfig
    runtime: NoRuntime


def _cmd_tasks(args) -> None:
    config = args.settings.config
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    oracle = read_jsonl(args.oracle, required=("id", "oracle"))
    tasks = select_tasks(judged, oracle, config.limit, config.require_oracle_failure)
    keys = {t["key"] for t in tasks}
    prompts = [p for p in read_jsonl(args.prompts, required=("key", "prompt")) if p["key"] in keys]
    if len(tasks) < (config.limit or 0):
        log.warning("only %d of %d judged answers make refinement tasks (limit %s)", len(tasks), len(judged), config.limit)
    write_jsonl(args.prompts_out, prompts)
    write_jsonl(args.out, tasks)
    print(json.dumps({"judged": len(judged), "judged_no": sum(r["label"] == 0 for r in judged), "tasks": len(tasks)}))


# -- stage 2: the refinements ------------------------------------------------------------------------
def answer(result: SearchResult, branch: int) -> dict:
    """A task's answer from its tree: the accepted node, else the highest-valued refinement (ties:
    the earliest); ``how`` is accepted, best_refinement or unparsed (no refinement parsed)."""
    refinements = [node for node in result.nodes if node.parent is not None]
    generated = result.nodes_expanded * branch
    record = {"key": result.key, "sample": 0, "prompt": result.prompt["prompt"], "refinements": generated}
    if not refinements:
        return {**record, "response": "", "value": None, "node": None, "how": "unparsed"}
    best = result.best if result.success else max(refinements, key=lambda node: (node.value, -node.id))
    return {**record, "response": best.response, "value": best.value, "node": best.id,
            "how": "accepted" if result.success else "best_refinement"}


@dataclass(frozen=True)
class RefinementsConfig:
    strategy: str
    budget: int
    search: Search
    judge: JudgeConfig
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class RefinementsSettings:
    config: RefinementsConfig
    runtime: SearchRuntime


def _cmd_refinements(args) -> None:
    from ifplay.generation.templates import load_template
    from ifplay.spar.stages import refiner_backend, stage_judge

    config, runtime = args.settings.config, args.settings.runtime
    prompts = {p["key"]: p for p in read_jsonl(args.prompts, required=("key", "prompt"))}
    tasks = read_jsonl(args.tasks, required=JUDGED_FIELDS)
    roots = [tree_root(task, prompts[task["key"]], task["key"]) for task in tasks]
    counts: dict = {"tasks": len(tasks)}
    results: list[SearchResult] = []
    if roots:
        backend = refiner_backend(config.backend, runtime, args.refiner, args.threads)
        with stage_judge(config, runtime, backend, args.threads) as judge:
            search = TreeSearch(backend, judge, load_template(runtime.refine_template, "refine"),
                                config.search.tree(config.budget, config.seed))
            results = search.run(roots, journal_path=args.trees)
            counts.update(refiner_calls=search.backend_calls, judge_calls=search.judge_calls)
    else:
        write_jsonl(args.trees, [])
    answers = [answer(result, config.search.branch) for result in results]
    for how in ("accepted", "best_refinement", "unparsed"):
        counts[how] = sum(a["how"] == how for a in answers)
    counts["mean_refinements"] = round(sum(a["refinements"] for a in answers) / len(answers), 4) if answers else 0.0
    write_jsonl(args.out, answers)
    write_json(args.counts, counts)
    print(json.dumps(counts))


# -- stage 3: the scores -----------------------------------------------------------------------------
def refinement_metrics(answers: list[dict], judged: list[dict]) -> dict:
    """Accuracy (percent) of the answers under one judge's verdicts (``judgements`` output): an
    answer counts when it parsed and is labelled Yes; unparsed and unlabelled answers are wrong."""
    verdict = {r["key"]: r["label"] for r in judged}
    missing = [a["key"] for a in answers if a["key"] not in verdict]
    if missing:
        raise RefinementError(f"no judgement for {len(missing)} refined answer(s); first: {missing[0]}")
    parsed = [a for a in answers if a["how"] != "unparsed"]
    accepted = sum(verdict[a["key"]] == 1 for a in parsed)
    return {"tasks": len(answers), "accepted": accepted, "unparsed": len(answers) - len(parsed),
            "unlabelled": sum(verdict[a["key"]] is None for a in parsed),
            "accuracy": 100.0 * accepted / len(answers) if answers else 0.0,
            "mean_refinements": sum(a["refinements"] for a in answers) / len(answers) if answers else 0.0}


def _cmd_scores(args) -> None:
    answers = read_jsonl(args.refined, required=("key", "response", "how", "refinements"))
    judged = read_jsonl(args.judged, required=("key", "label"))
    metrics = refinement_metrics(answers, judged)
    write_json(args.metrics, metrics)
    print(json.dumps(metrics))


def add_cli(sub) -> None:
    """Register ``refinement-tasks``, ``refinements`` and ``refinement-scores`` on the ``ifplay`` subparsers."""
    from ifplay.spar.stages import add_threads_argument

    p = sub.add_parser("refinement-tasks", help="refinement accuracy: held-out answers judged No, with critiques")
    p.add_argument("--judged", required=True, help="judge_eval judged.jsonl (R_0 on the held-out answers)")
    p.add_argument("--oracle", required=True, help="judge_eval per_item.jsonl (the oracle's labels)")
    p.add_argument("--prompts", required=True, help="the held-out prompts")
    p.add_argument("--out", required=True, help="tasks JSONL (the judged records kept)")
    p.add_argument("--prompts-out", required=True, help="the tasks' prompts JSONL")
    stage_settings.add_argument(p, TasksSettings)
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("refinements", help="refinement accuracy: a refiner refines every task with a strategy")
    p.add_argument("--tasks", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--refiner", required=True, help="refiner checkpoint (refines and judges its refinements)")
    p.add_argument("--out", required=True, help="answers JSONL (key, sample, prompt, response, value, how, refinements)")
    p.add_argument("--trees", required=True, help="search trees JSONL")
    p.add_argument("--counts", required=True, help="counts JSON")
    stage_settings.add_argument(p, RefinementsSettings)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_refinements)

    p = sub.add_parser("refinement-scores", help="refinement accuracy of answers under one judge's verdicts")
    p.add_argument("--refined", required=True)
    p.add_argument("--judged", required=True)
    p.add_argument("--metrics", required=True)
    p.set_defaults(func=_cmd_scores)
