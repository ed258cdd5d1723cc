"""Result tables (pandas): one row per evaluated model and iteration, percent with two decimals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ifplay.evaluation.benchmarks import BENCHMARKS
from ifplay.core.records import atomic_path, read_json

def benchmark_table(benchmark: str, rows: list[dict]) -> pd.DataFrame:
    """``tables/<benchmark>.csv``: ``rows`` are dicts with model, iteration and scores (a path to the
    scorer's metrics.json); the columns are the benchmark's declared metrics
    (:data:`ifplay.evaluation.benchmarks.BENCHMARKS`), in percent where it says so."""
    spec = BENCHMARKS[benchmark]
    records = []
    for row in rows:
        scores = read_json(row["scores"])
        metrics = scores["metrics"]
        records.append({"model": row["model"], "iteration": row["iteration"],
                        **{column: round(100 * metrics[key], 2) if spec.percent else metrics[key]
                           for column, key in spec.metrics.items()},
                        **{column: scores[key] for column, key in spec.counts.items()}})
    return _by_iteration(records, ["model", "iteration", *spec.metrics, *spec.counts])


def breakdown_table(benchmark: str, rows: list[dict]) -> pd.DataFrame:
    """``tables/<benchmark>_<breakdown>.csv``: for each row (model, iteration, scores), the rows of the
    scorer's ``metrics.json`` ``breakdown`` list (FollowBench: one per category), in their order."""
    records = [{"model": row["model"], "iteration": row["iteration"], **part}
               for row in rows for part in read_json(row["scores"])["breakdown"]]
    columns = list(dict.fromkeys(column for record in records for column in record))
    return _by_iteration(records, columns or ["model", "iteration"])


GENERAL_COLUMNS = ["model", "iteration", "task", "metric", "value", "stderr", "n", "shots", "lm_eval_version",
                   "data_source"]


def general_table(rows: list[dict]) -> pd.DataFrame:
    """``tables/general.csv``: for each row (model, iteration, scores: a general_eval metrics.json),
    one row per lm-eval task and metric (``metric,filter``); value and stderr in percent (two
    decimals; stderr empty where lm-eval gives none), n the documents scored, shots as run."""
    records = []
    for row in rows:
        for part in read_json(row["scores"])["rows"]:
            records.append({"model": row["model"], "iteration": row["iteration"], "task": part["task"],
                            "metric": part["metric"], "value": round(100 * part["value"], 2),
                            "stderr": None if part["stderr"] is None else round(100 * part["stderr"], 2),
                            "n": part["n"], "shots": part["shots"], "lm_eval_version": part["lm_eval_version"],
                            "data_source": part["data_source"]})
    return _by_iteration(records, GENERAL_COLUMNS)


def llmbar_tables(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``tables/llmbar.csv`` and ``llmbar_votes.csv``: ``rows`` are dicts with judge, iteration and
    scores (a path to an llmbar_scores metrics.json); one row per subset (and Adversarial, Average),
    accuracy and F1 in percent, counts as integers."""
    from ifplay.evaluation.llmbar import TABLE_COLUMNS

    def records(key: str, columns: list[str]) -> list[dict]:
        out = []
        for row in rows:
            for part in read_json(row["scores"])[key]:
                out.append({"judge": row["judge"], "iteration": row["iteration"],
                            **{c: round(part[c], 2) if c in ("accuracy", "f1") else part[c] for c in columns}})
        return out

    main = pd.DataFrame.from_records(records("rows", TABLE_COLUMNS), columns=["judge", "iteration", *TABLE_COLUMNS])
    votes = pd.DataFrame.from_records(records("votes", ["votes", *TABLE_COLUMNS]),
                                      columns=["judge", "iteration", "votes", *TABLE_COLUMNS])
    def ordered(frame: pd.DataFrame) -> pd.DataFrame:  # named judges (no iteration) first, as in Table 2
        frame = frame.astype({"iteration": "Int64"})
        return frame.sort_values("iteration", kind="stable", na_position="first").reset_index(drop=True)

    return ordered(main), ordered(votes.astype({"votes": str}))


def refinement_table(rows: list[dict]) -> pd.DataFrame:
    """``tables/refinement.csv``: ``rows`` are dicts with refiner, iteration, strategy, budget, judge and
    scores (a ``refinement_scores`` metrics.json path); in plan order, accuracy in percent."""
    from ifplay.evaluation.refinement import TABLE_COLUMNS

    records = []
    for row in rows:
        metrics = read_json(row["scores"])
        records.append({**{k: row[k] for k in ("refiner", "iteration", "strategy", "budget", "judge")},
                        "accuracy": round(metrics["accuracy"], 2), "mean_refinements": round(metrics["mean_refinements"], 2),
                        **{k: metrics[k] for k in ("tasks", "accepted", "unparsed", "unlabelled")}})
    return pd.DataFrame.from_records(records, columns=TABLE_COLUMNS)


def judge_table(rows: list[dict]) -> pd.DataFrame:
    """``rows``: dicts with model, iteration and metrics (a path to a judge_eval metrics.json);
    counts as integers, accuracy / precision / recall / F1 in percent."""
    from ifplay.evaluation.judge_eval import METRIC_COLUMNS

    records = []
    for row in rows:
        metrics = read_json(row["metrics"])["metrics"]
        records.append({"model": row["model"], "iteration": row["iteration"],
                        **{name: round(100 * metrics[name], 2) if isinstance(metrics[name], float) else metrics[name]
                           for name in METRIC_COLUMNS}})
    return _by_iteration(records, ["model", "iteration", *METRIC_COLUMNS])


def _by_iteration(records: list[dict], columns: list[str]) -> pd.DataFrame:
    """A table of ``records`` with ``columns``, rows ordered by iteration, then model."""
    table = pd.DataFrame.from_records(records, columns=columns)
    return table.sort_values(["iteration", "model"], kind="stable").reset_index(drop=True)


def write_table(table: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md`` atomically."""
    stem = Path(stem)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.2f")
    with atomic_path(md) as tmp:
        # object columns: tabulate keeps integer columns integral beside float ones
        tmp.write_text(table.astype(object).to_markdown(index=False, floatfmt=".2f") + "\n", encoding="utf-8")
    return csv, md


def read_table(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path)
