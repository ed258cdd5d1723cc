"""The refiner as a judge: how often its voted verdicts agree with the verifier oracle.

SPaR's claim is that the refiner's judging improves over iterations (its Table 2 measures this on
LLMBar). Here every refiner R_t judges the same held-out responses (by default the base model's
greedy responses to the repository's dev prompts, which no iteration trains on) with the model
judge's settings, and IFEval's strict checkers (:class:`~ifplay.judging.judge.VerifierJudge`) give the
true label of each response.

The positive class is "Yes" (the response follows every instruction), the verdict the tree search
accepts on. A response the refiner leaves without a label (every vote invalid, or a tie left after
re-drawing) counts as a wrong answer in ``accuracy`` and as not-Yes in precision and recall.
"""

from __future__ import annotations

import json

from ifplay.judging.judge import Judge
from ifplay.core.records import read_jsonl, write_json, write_jsonl
from ifplay.spar.stages import judge_responses, judgement_counts, response_id

#: Columns of ``tables/judge.csv`` after model and iteration (counts, then percentages).
METRIC_COLUMNS = ["responses", "oracle_yes", "judged_yes", "unlabelled", "accuracy", "precision", "recall", "f1"]


def agreement(labels: list[int | None], oracle: list[int]) -> dict:
    """Accuracy, precision, recall and F1 (fractions) of ``labels`` against ``oracle`` (positive = 1)."""
    if len(labels) != len(oracle):
        raise ValueError(f"{len(labels)} judged labels but {len(oracle)} oracle labels")
    tp = sum(label == 1 and truth == 1 for label, truth in zip(labels, oracle))
    fp = sum(label == 1 and truth == 0 for label, truth in zip(labels, oracle))
    fn = sum(label != 1 and truth == 1 for label, truth in zip(labels, oracle))
    correct = sum(label == truth for label, truth in zip(labels, oracle))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "responses": len(labels),
        "oracle_yes": sum(oracle),
        "judged_yes": sum(label == 1 for label in labels),
        "judged_no": sum(label == 0 for label in labels),
        "unlabelled": sum(label is None for label in labels),
        "accuracy": correct / len(labels) if labels else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def evaluate_judge(prompts_path: str, responses_path: str, out: str, judge: Judge, oracle: Judge) -> dict:
    """Judge every held-out response with ``judge`` (resumable, journalled to ``out``), label it
    with ``oracle`` and return the agreement metrics plus the judge's vote counts."""
    judged = judge_responses(prompts_path, responses_path, out, judge)
    prompts = {p["key"]: p for p in read_jsonl(prompts_path, required=("key", "prompt"))}
    truths = oracle.judge([(prompts[r["key"]], r["response"]) for r in judged])
    labels = [r["label"] for r in judged]
    per_item = [{"id": response_id(r), "key": r["key"], "label": r["label"], "oracle": t.label, "value": r["value"]}
                for r, t in zip(judged, truths)]
    metrics = agreement(labels, [t.label for t in truths])
    votes = judgement_counts(judged)
    return {"metrics": metrics, "votes": {k: votes[k] for k in ("votes", "invalid_votes", "ties", "tie_resampled")},
            "per_item": per_item}


def _cmd_judge_eval(args) -> None:
    from ifplay.judging.judge import make_judge
    from ifplay.spar.stages import refiner_backend, stage_judge

    config, runtime = args.settings.config, args.settings.runtime
    backend = refiner_backend(config.backend, runtime, args.refiner, args.threads)
    with stage_judge(config, runtime, backend, args.threads) as judge, make_judge("verifier") as oracle:
        result = evaluate_judge(args.prompts, args.responses, args.out, judge, oracle)
    if args.per_item:
        write_jsonl(args.per_item, result.pop("per_item"))
    else:
        result.pop("per_item")
    write_json(args.metrics, result)
    print(json.dumps(result))


def add_cli(sub) -> None:
    """Register ``judge-eval`` on the ``ifplay`` subparsers."""
    from ifplay.core import settings
    from ifplay.spar.stages import JudgeSettings, add_threads_argument

    p = sub.add_parser("judge-eval", help="the refiner as a judge vs the verifier oracle on held-out responses")
    p.add_argument("--prompts", required=True, help="IFEval-style prompt records (instruction ids and kwargs)")
    p.add_argument("--responses", required=True, help="held-out responses JSONL (key, prompt, response)")
    p.add_argument("--refiner", required=True, help="the refiner checkpoint that judges")
    p.add_argument("--out", required=True, help="the refiner's voted judgements JSONL")
    p.add_argument("--metrics", required=True, help="accuracy / precision / recall / F1 JSON")
    p.add_argument("--per-item", help="per-response label and oracle label JSONL")
    settings.add_argument(p, JudgeSettings)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_judge_eval)
