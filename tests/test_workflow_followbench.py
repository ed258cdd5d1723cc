"""FollowBench through the whole workflow with the real model: the base model answers the first group of
each category and judges its own answers; then a judge-less overlay re-scores the same answers with the
rule checks only, and `ifplay score followbench` agrees with the workflow's rule scores."""

import json

import pandas as pd
import pytest
import yaml

from conftest import run, shared
from test_workflow import job_counts, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2):
    data = shared("followbench")
    workdir = tmp_path_factory.mktemp("followbench")
    tiny = {
        "experiment": "fb",
        "model": {"base": str(smollm2), "label": "smollm2"},
        "data": {"followbench": str(data)},
        "eval": {"general": {"enabled": False}, "benchmarks": {"ifeval": {"enabled": False}, "dev": {"enabled": False},
                                # 512 prompt tokens: the example category's prompts are cut (and counted)
                                "followbench": {"limit": 1, "max_new_tokens": 16, "max_prompt_tokens": 512,
                                                "judge": {"max_new_tokens": 24}}},
                 "inference_scaling": {"enabled": False}},
        "spar": {"enabled": False},
    }
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (workdir / "rules.yaml").write_text(yaml.safe_dump({
        "experiment": "fb-rules", "eval": {"benchmarks": {"followbench": {"judge": {"enabled": False}}}}}))
    snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir


def manifest(workdir, experiment):
    return json.loads((workdir / "results" / "experiments" / experiment / "manifest.json").read_text())


def test_tables_count_rule_items_judged_items_unparseable_and_truncated(workdir):
    exp = workdir / "results" / "experiments" / "fb"
    table = pd.read_csv(exp / "tables" / "followbench.csv")
    assert list(table.columns[:9]) == ["model", "iteration", "ssr_l1", "ssr_l2", "ssr_l3", "ssr_l4", "ssr_l5",
                                       "ssr_avg", "hsr_l1"]
    [row] = table.to_dict("records")
    assert row["model"] == "smollm2" and row["judge"] == "smollm2"
    # the first group of each category: situation's (BBH_logical) and example's are rule-checked
    assert row["rule_items"] == 10 and row["judged_items"] == 20 and 0 <= row["unparseable"] <= 20
    assert row["truncated"] >= 1 and 0 <= row["ssr_avg"] <= 100 and 0 <= row["csl"] <= 5
    categories = pd.read_csv(exp / "tables" / "followbench_categories.csv")
    assert list(categories["category"]) == ["content", "situation", "style", "format", "mixed", "example"]
    assert categories["unparseable"].sum() == row["unparseable"] and categories["truncated"].sum() == row["truncated"]
    m = manifest(workdir, "fb")
    assert {"followbench", "followbench_categories"} <= set(m["tables"])
    [judged] = [s for s in m["stages"] if s["kind"] == "followbench_judgements"]
    records = [json.loads(line) for line in (workdir / judged["output"]).read_text().splitlines()]
    assert len(records) == 20 and all(isinstance(r["output"], str) for r in records)  # the raw outputs
    assert sum(r["error"] is not None for r in records) == row["unparseable"]
    [items] = [s for s in m["stages"] if s["kind"] == "followbench_prompts"]
    prompts = [json.loads(line) for line in (workdir / items["output"]).read_text().splitlines()]
    assert sum(p["truncated"] for p in prompts) == row["truncated"]
    assert all(p["prompt_tokens"] > 512 for p in prompts if p["truncated"])


def test_judge_less_overlay_rescores_the_same_answers_and_the_cli_agrees(workdir):
    jobs = job_counts(snakemake(workdir, "--configfile", "tiny.yaml", "rules.yaml", "-n").stdout)
    assert set(jobs) == {"followbench_scores", "report", "all"}, jobs  # the answers are shared
    snakemake(workdir, "--configfile", "tiny.yaml", "rules.yaml")
    [row] = pd.read_csv(workdir / "results" / "experiments" / "fb-rules" / "tables" / "followbench.csv").to_dict("records")
    assert row["judge"] == "none" and row["judged_items"] == 0 and row["unparseable"] == 0
    diff = json.loads(run(["ifplay", "diff", "fb", "fb-rules", "--json"], cwd=workdir).stdout)
    assert {"followbench", "followbench_categories"} <= set(diff["metrics"])

    m = manifest(workdir, "fb-rules")
    [answers] = [s for s in m["stages"] if s["kind"] == "generate"]
    [scores] = [s for s in m["stages"] if s["kind"] == "followbench_scores"]
    cli = json.loads(run(["ifplay", "score", "followbench", "--data", str(shared("followbench")), "--responses",
                          str(workdir / answers["output"]), "--judge", "none", "--groups", "1", "--json"]).stdout)
    stage = json.loads((workdir / scores["output"]).read_text())["scores"]
    for category in ("situation", "example"):
        assert cli[category]["rule"] == stage[category]["rule"] and cli[category]["rule"]["groups"] == 1
