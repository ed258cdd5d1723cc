"""The benchmark registry against the stage registry, the config and the report's tables."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO
from ifplay.core.config import load_config, load_schema
from ifplay.core.stages import STAGES
from ifplay.evaluation.benchmarks import BENCHMARKS, GENERATIONS
from ifplay.plan import Plan
from ifplay.reporting.tables import benchmark_table

DEFAULT = yaml.safe_load((REPO / "config" / "default.yaml").read_text())


def test_every_benchmark_has_its_config_entries():
    schema = load_schema()["properties"]["eval"]["properties"]["benchmarks"]["properties"]
    assert set(BENCHMARKS) == set(schema) == set(DEFAULT["eval"]["benchmarks"])
    for name, spec in BENCHMARKS.items():
        declared = schema[name].get("required") or load_schema()["$defs"]["benchmark"]["required"]
        assert set(DEFAULT["eval"]["benchmarks"][name]) == set(declared) >= {"enabled", "limit"}, name
        assert spec.prompts in DEFAULT["data"], f"{name}: data.{spec.prompts} is not a config key"


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_names_a_scorer_stage_and_a_generation(name):
    spec = BENCHMARKS[name]
    assert spec.generation in GENERATIONS
    scorer = STAGES[spec.scorer]
    assert {"prompts", "responses"} <= set(scorer.inputs) and scorer.main == "metrics.json"
    assert spec.metrics and all(column not in ("model", "iteration") for column in spec.metrics)


def test_the_plan_scores_every_model_on_every_enabled_benchmark():
    plan = Plan(load_config([], {"eval": {"benchmarks": {"dev": {"enabled": False}, "followbench": {"enabled": False}}}}))
    assert {e.benchmark for e in plan.evaluations} == {"ifeval"}
    assert [(e.model, e.iteration) for e in plan.evaluations] == [(label, it) for label, it, _ in plan.models]
    for e in plan.evaluations:
        assert e.scores.kind == BENCHMARKS["ifeval"].scorer
        assert e.scores.inputs["responses"].config["sampling"]["temperature"] == 0  # greedy


def test_the_table_has_the_declared_metric_columns(tmp_path):
    spec = BENCHMARKS["ifeval"]
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"metrics": {key: 0.5 for key in spec.metrics.values()}}))
    table = benchmark_table("ifeval", [{"model": "m", "iteration": 1, "scores": str(metrics)},
                                       {"model": "b", "iteration": 0, "scores": str(metrics)}])
    assert list(table.columns) == ["model", "iteration", *spec.metrics]
    assert list(table["model"]) == ["b", "m"] and (table[list(spec.metrics)] == 50.0).all().all()
