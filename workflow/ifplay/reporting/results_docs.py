"""``docs/results/<experiment>.md``: each finished experiment's results, rendered from its own files.

Measured results are never copied into the documentation by hand. This module reads what a run
wrote in ``results/experiments/<experiment>/`` and renders one Markdown page per experiment:

- the config keys the experiment sets beyond the default: ``manifest.json``'s resolved ``config``
  against :func:`ifplay.core.config.load_config` (``config/default.yaml`` of the code that renders
  the page), compared key by key with :func:`ifplay.core.config.flatten`;
- the code that wrote the report: ``provenance`` (git commit, dirty flag, package versions),
  ``ifplay_version`` and ``written``, as far as the manifest records them (older manifests lack some);
- every ``tables/*.csv``, cells exactly as the CSV holds them, in the manifest's table order (then
  any other CSV by name).

The page holds nothing that changes from one rendering to the next, so re-rendering unchanged
results changes no file. ``ifplay results-docs`` (``make results-docs``) renders every experiment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


from ifplay.core.config import flatten, load_config
from ifplay.core.records import atomic_path, read_json

UNSET = "(unset)"


def _cell(value: Any) -> str:
    """A config value as one Markdown table cell: JSON (null, true, lists), pipes escaped."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "`" + text.replace("|", "\\|").replace("\n", " ") + "`"


def config_changes(config: dict, default: dict | None = None) -> tuple[list[dict], int]:
    """The keys ``config`` sets to another value than ``default`` (or that ``default`` lacks), and
    how many keys of ``default`` ``config`` lacks (keys added since an old run). ``experiment`` is
    the page's title, not a change."""
    flat = flatten(config)
    base = flatten(default if default is not None else load_config())
    changes = [{"key": key, "default": base.get(key, UNSET), "value": value}
               for key, value in sorted(flat.items())
               if key != "experiment" and (key not in base or base[key] != value)]
    missing = sum(1 for key in base if key not in flat)
    return changes, missing


def _provenance(manifest: dict) -> list[str]:
    provenance = manifest.get("provenance") or {}
    rows = []
    if manifest.get("written"):
        rows.append(("report written", manifest["written"]))
    if manifest.get("ifplay_version"):
        rows.append(("ifplay version", manifest["ifplay_version"]))
    commit = provenance.get("git_commit")
    if commit:
        dirty = provenance.get("git_dirty")
        note = {True: " (tracked files differed from it)", False: " (clean)"}.get(dirty, "")
        rows.append(("git commit", f"`{commit}`{note}"))
    for name, version in sorted((provenance.get("versions") or {}).items()):
        rows.append((name, version if version is not None else "not installed"))
    lines = []
    if not commit and not provenance.get("versions"):
        lines += ["The manifest records no code commit or package versions (written before manifests "
                  "recorded them, or outside a git checkout).", ""]
    if rows:
        lines += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return lines[:-1] if lines and lines[-1] == "" else lines


def table_files(experiment_dir: Path, manifest: dict) -> list[Path]:
    """Every ``tables/*.csv``: first in the manifest's table order, then the others by name."""
    tables = experiment_dir / "tables"
    present = {path.name: path for path in sorted(tables.glob("*.csv"))}
    ordered = []
    for rel in (manifest.get("tables") or {}).values():
        name = Path(rel).name
        if name in present and present[name] not in ordered:
            ordered.append(present[name])
    return ordered + [path for name, path in present.items() if path not in ordered]


def markdown_table(csv: Path) -> str:
    """A CSV as a Markdown table, every cell as the file has it (no re-formatting of numbers)."""
    import pandas as pd  # noqa: PLC0415 - here: .venv-vllm's `ifplay` (the CLI) has no pandas
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return "(empty file)"
    if table.empty:
        return "(no rows; columns: " + ", ".join(f"`{c}`" for c in table.columns) + ")"

    def numeric(column) -> bool:  # right-aligned: every non-empty cell is a number
        cells = column[column != ""]
        return not cells.empty and bool(pd.to_numeric(cells, errors="coerce").notna().all())

    align = ["right" if numeric(table[c]) else "left" for c in table.columns]
    table = table.map(lambda cell: cell.replace("|", "\\|"))
    table.columns = [str(c).replace("|", "\\|") for c in table.columns]
    return table.to_markdown(index=False, disable_numparse=True, colalign=align)


def render(experiment_dir: str | os.PathLike) -> str:
    """The Markdown page of the experiment in ``experiment_dir`` (which holds ``manifest.json``)."""
    directory = Path(experiment_dir)
    manifest = read_json(directory / "manifest.json")
    name = manifest.get("experiment") or directory.name
    where = f"results/experiments/{directory.name}/"
    lines = [f"# {name}", "",
             f"Generated by `ifplay results-docs` from `{where}` (`manifest.json`, `tables/*.csv`); "
             "do not edit: re-run `make results-docs` after the experiment runs again.", ""]

    lines += ["## Config beyond the default", ""]
    config = manifest.get("config")
    if isinstance(config, dict):
        changes, missing = config_changes(config)
        if changes:
            lines += ["| key | default | this experiment |", "|---|---|---|"]
            lines += [f"| `{c['key']}` | {_cell(c['default'])} | {_cell(c['value'])} |" for c in changes]
        else:
            lines.append("None: the experiment ran the default configuration.")
        lines += ["", "Compared with `config/default.yaml` of the code that rendered this page."]
        if missing:
            lines.append(f"{missing} key(s) of that default are absent from the manifest's config "
                         "(added after the run) and are not listed.")
    else:
        lines.append("The manifest records no config.")
    lines.append("")

    lines += ["## Code", "", *_provenance(manifest), ""]

    stages = manifest.get("stages") or []
    if stages:
        done = sum(1 for stage in stages if stage.get("done"))
        lines += [f"Stages: {len(stages)} planned, {done} with their output present when the report was "
                  f"written (kinds and keys in `{where}manifest.json`).", ""]

    lines += ["## Tables", ""]
    files = table_files(directory, manifest)
    if not files:
        lines += ["No tables.", ""]
    for csv in files:
        lines += [f"### {csv.stem}", "", f"`{where}tables/{csv.name}`", "", markdown_table(csv), ""]

    figures = manifest.get("figures") or {}
    if figures:
        lines += ["## Figures", "", f"Not copied here; in `{where}`: "
                  + ", ".join(f"`{rel}`" for rel in figures.values()) + ".", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_all(results_dir: str | os.PathLike = "results", out_dir: str | os.PathLike = "docs/results") -> list[Path]:
    """Render ``out_dir/<experiment>.md`` for every ``results_dir/experiments/*/`` holding a
    ``manifest.json``, in name order; returns the paths written."""
    out = Path(out_dir)
    written = []
    for manifest in sorted(Path(results_dir).glob("experiments/*/manifest.json")):
        page = out / f"{manifest.parent.name}.md"
        text = render(manifest.parent)
        with atomic_path(page) as tmp:
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(0o644)  # a document (mkstemp makes 0600)
        written.append(page)
    return written


def _cmd_results_docs(args) -> None:
    paths = write_all(args.results, args.out)
    if not paths:
        print(f"no experiment with a manifest.json under {Path(args.results) / 'experiments'}", file=sys.stderr)
    for path in paths:
        print(path)


def add_cli(sub) -> None:
    """Register ``results-docs`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("results-docs",
                       help="render docs/results/<experiment>.md from each experiment's manifest and tables")
    p.add_argument("--results", default="results", help="results directory (holds experiments/*/manifest.json)")
    p.add_argument("--out", default="docs/results", help="where the pages go")
    p.set_defaults(func=_cmd_results_docs)
