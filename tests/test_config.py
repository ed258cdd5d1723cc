import copy

import pytest
import yaml

from conftest import REPO, run
from ifplay.core.config import ConfigError, check_config, deep_merge, flatten, load_config


def default() -> dict:
    return yaml.safe_load((REPO / "config" / "default.yaml").read_text())


def test_default_is_valid_and_complete():
    config = load_config()
    assert config["model"]["base"] == "builtin:smollm2-135m-instruct"
    assert config["eval"]["benchmarks"]["ifeval"]["enabled"] is True


def test_a_partial_config_is_completed_from_default_yaml():
    config = check_config({"experiment": "x"})
    assert config == {**default(), "experiment": "x"}
    assert config["backend"]["name"] == "transformers"
    assert config["eval"]["benchmarks"]["dev"] == {"enabled": True, "limit": None}
    assert config["data"]["ifeval"] == "hf:google/IFEval"
    assert config["eval"]["max_new_tokens"] == 256  # default.yaml's value (the schema holds none)


@pytest.mark.parametrize(
    "overlay, key, rule",
    [
        ({"eval": {"max_new_tokens": 0}}, "eval.max_new_tokens", "minimum"),
        ({"eval": {"max_new_tokens": "long"}}, "eval.max_new_tokens", "type"),
        ({"eval": {"benchmarks": {"ifeval": {"limt": 3}}}}, "eval.benchmarks.ifeval.limt", "additionalProperties"),
        ({"modle": {}}, "modle", "additionalProperties"),
        ({"backend": {"name": "gpt"}}, "backend.name", "enum"),
        ({"experiment": "has space"}, "experiment", "pattern"),
    ],
)
@pytest.mark.parametrize("partial", [False, True], ids=["merged", "partial"])
def test_errors_name_key_and_rule(overlay, key, rule, partial):
    with pytest.raises(ConfigError) as err:
        check_config(copy.deepcopy(overlay) if partial else deep_merge(default(), overlay))
    message = str(err.value)
    assert "invalid configuration (1 problem(s))" in message
    assert f"key '{key}'" in message and f"schema rule '{rule}'" in message


@pytest.mark.parametrize("partial", [False, True], ids=["merged", "partial"])
def test_all_problems_reported_at_once(partial):
    overlay = {"seed": -1, "eval": {"max_new_tokens": 0}}
    with pytest.raises(ConfigError, match=r"2 problem\(s\)") as err:
        check_config(overlay if partial else deep_merge(default(), overlay))
    assert "key 'seed'" in str(err.value) and "key 'eval.max_new_tokens'" in str(err.value)


def test_overlays_merge_deeply():
    config = load_config([REPO / "config" / "experiments" / "eval-long.yaml"])
    assert config["experiment"] == "eval-long"
    assert config["eval"]["max_new_tokens"] == 640
    assert config["eval"]["benchmarks"]["ifeval"]["limit"] == 40  # untouched by the overlay


def test_missing_overlay_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config([tmp_path / "nope.yaml"])


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def test_snakemake_fails_before_any_job_naming_the_key(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("eval:\n  max_new_tokens: 0\n")
    proc = run(["snakemake", "-n", "--cores", "1", "--configfile", str(overlay)], cwd=REPO, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "key 'eval.max_new_tokens'" in out and "schema rule 'minimum'" in out
    assert "jobid" not in out


def test_missing_data_path_named():
    proc = run(["snakemake", "-n", "--cores", "1", "--config", "data={'ifeval': '/no/such/ifeval.jsonl'}"],
               cwd=REPO, check=False)
    assert proc.returncode != 0
    assert "config key 'data.ifeval': /no/such/ifeval.jsonl: no such file" in proc.stdout + proc.stderr
