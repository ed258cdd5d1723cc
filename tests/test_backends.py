"""make_backend and the HTTP backend's request building, without a model (fast)."""

import importlib.util

import pytest

from ifplay.generation.backends import BACKENDS, SamplingParams, make_backend, parse_options


def test_backend_names_match_the_schema():
    import yaml

    from conftest import REPO

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert tuple(schema["properties"]["backend"]["properties"]["name"]["enum"]) == BACKENDS


def test_parse_options():
    assert parse_options(None) == {} and parse_options("{}") == {}
    assert parse_options('{"max_model_len": 4096}') == {"max_model_len": 4096}
    with pytest.raises(ValueError, match="JSON object"):
        parse_options("[1]")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_without_vllm_says_how_to_get_it():
    with pytest.raises(RuntimeError, match="make venv-vllm"):
        make_backend("vllm", "some/checkpoint")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        make_backend("gpt", "x")


def test_openai_requests(monkeypatch, tmp_path):
    monkeypatch.setenv("IFPLAY_UNIT_KEY", "sk-unit-secret")
    engine = make_backend("openai", "ckpt/dir", options={"api_key_env": "IFPLAY_UNIT_KEY", "cache_dir": str(tmp_path)})
    user = [{"role": "user", "content": "Hi"}]
    body = engine._body(user, SamplingParams(temperature=0.5, n=3, seed=7, stop=("\n",)), 3, 0)
    assert body["model"] == "ckpt/dir" and body["n"] == 3 and body["seed"] == 7 and body["stop"] == ["\n"]
    assert "continue_final_message" not in body
    prefill = engine._body(user + [{"role": "assistant", "content": "Well,"}], SamplingParams(), 1, 0)
    assert prefill["continue_final_message"] is True and prefill["add_generation_prompt"] is False
    assert prefill["temperature"] == 0.0
    # the sampling seed keys the cache even when it is not sent
    unseeded = make_backend("openai", "ckpt/dir", options={"send_seed": False, "cache_dir": str(tmp_path)})
    b = unseeded._body(user, SamplingParams(temperature=0.5), 1, 0)
    assert "seed" not in b and unseeded._cache_path(b, 0, 1) != unseeded._cache_path(b, 0, 2)
    assert "sk-unit-secret" not in repr(engine)
    assert engine._redact("echo sk-unit-secret") == "echo [API KEY]"
