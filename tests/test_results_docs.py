"""docs/results/<experiment>.md rendered from an experiment's manifest and tables (ifplay results-docs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ifplay.core.config import load_config
from ifplay.reporting import results_docs

IFEVAL = pd.DataFrame({"model": ["SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct-SPaR-DPO"], "iteration": [0, 1],
                       "prompt_strict": ["15.00", "17.50"], "inst_strict": ["20.63", "22.22"]})
JUDGE = pd.DataFrame({"model": ["SmolLM2-135M-Instruct"], "iteration": [0], "accuracy": ["50.00"], "f1": ["31.58"]})


def make_experiment(results: Path, name: str, provenance: bool = True, **changes) -> Path:
    """results/experiments/<name>/ with a manifest (load_config() with ``changes``: section -> {key: value})
    and the two tables above."""
    config = load_config()
    config["experiment"] = name
    for section, values in changes.items():
        config[section].update(values)
    directory = results / "experiments" / name
    (directory / "tables").mkdir(parents=True)
    IFEVAL.to_csv(directory / "tables" / "ifeval.csv", index=False)
    JUDGE.to_csv(directory / "tables" / "judge.csv", index=False)
    manifest = {"experiment": name, "written": "2026-12-01T00:00:00+00:00", "ifplay_version": "0.1.0",
                "config": config, "stages": [{"kind": "base_model", "key": "0123456789ab", "done": True}],
                "tables": {"judge": "tables/judge.csv", "ifeval": "tables/ifeval.csv"}}
    if provenance:
        manifest["provenance"] = {"git_commit": "f" * 40, "git_dirty": False,
                                  "versions": {"torch": "2.13.0", "vllm": None}}
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


def test_render_shows_the_changed_key_provenance_and_both_tables(tmp_path):
    directory = make_experiment(tmp_path / "results", "x", eval={"max_new_tokens": 640})
    page = results_docs.render(directory)

    assert page.startswith("# x\n")
    assert "| `eval.max_new_tokens` | `256` | `640` |" in page
    assert "spar.sampling" not in page  # keys left at the default are not listed
    assert "`" + "f" * 40 + "` (clean)" in page and "| torch | 2.13.0 |" in page and "| vllm | not installed |" in page
    for table in (IFEVAL, JUDGE):
        for column in table.columns:
            assert f" {column} " in page
        for value in table.astype(str).to_numpy().ravel():
            assert value in page
    assert "17.50" in page and "15.00" in page  # cells exactly as the CSV holds them (not 17.5)
    # the manifest's table order: judge before ifeval
    assert page.index("### judge") < page.index("### ifeval")


def test_render_handles_an_old_manifest_without_provenance(tmp_path):
    directory = make_experiment(tmp_path / "results", "old", provenance=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["written"], manifest["ifplay_version"], manifest["tables"]
    del manifest["config"]["eval"]["max_new_tokens"]  # a key added after the run
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    page = results_docs.render(directory)
    assert "records no code commit or package versions" in page
    assert "None: the experiment ran the default configuration." in page
    assert "1 key(s) of that default are absent" in page
    assert "### ifeval" in page and "### judge" in page


def test_write_all_writes_one_page_per_experiment(tmp_path):
    results = tmp_path / "results"
    make_experiment(results, "x", eval={"max_new_tokens": 640})
    make_experiment(results, "y", spar={"iterations": 2}, provenance=False)
    (results / "experiments" / "unfinished" / "tables").mkdir(parents=True)  # no manifest: no page
    out = tmp_path / "docs" / "results"

    paths = results_docs.write_all(results, out)
    assert paths == [out / "x.md", out / "y.md"]
    assert sorted(p.name for p in out.iterdir()) == ["x.md", "y.md"]
    assert "`spar.iterations` | `1` | `2` |" in (out / "y.md").read_text()
    before = (out / "x.md").read_text()
    assert results_docs.write_all(results, out) == paths and (out / "x.md").read_text() == before  # stable


def test_the_command_prints_each_page(tmp_path, capsys):
    import argparse

    results = tmp_path / "results"
    make_experiment(results, "x")
    parser = argparse.ArgumentParser()
    results_docs.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["results-docs", "--results", str(results), "--out", str(tmp_path / "out")])
    args.func(args)
    assert capsys.readouterr().out.split() == [str(tmp_path / "out" / "x.md")]


@pytest.mark.parametrize("content", ["", "model,iteration\n"])
def test_an_empty_table_renders(tmp_path, content):
    csv = tmp_path / "t.csv"
    csv.write_text(content, encoding="utf-8")
    assert results_docs.markdown_table(csv).startswith("(")
