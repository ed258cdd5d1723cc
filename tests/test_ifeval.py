"""IFEval scoring: the official figures on GPT-4's responses, determinism, bad input."""

import json

import pytest

from conftest import run
from ifplay.scoring import ifeval
from ifplay.core.records import read_jsonl

OFFICIAL = {"prompt_strict": 76.89, "inst_strict": 83.57, "prompt_loose": 79.48, "inst_loose": 85.49}


@pytest.fixture(scope="module")
def gpt4(ifeval_data, gpt4_responses):
    prompts = read_jsonl(ifeval_data)
    return prompts, ifeval.match_responses(prompts, read_jsonl(gpt4_responses))


def test_gpt4_official_figures_exactly(gpt4):
    result = ifeval.score(*gpt4)
    assert result.num_prompts == 541
    assert result.percent() == OFFICIAL


def test_scores_are_deterministic_and_subset_independent(gpt4):
    prompts, responses = gpt4
    first = ifeval.score(prompts, responses).per_prompt
    again = ifeval.score(prompts, responses).per_prompt
    assert first == again
    # a prompt's verdict does not depend on which other prompts are scored, nor on their order
    picked = [i for i, p in enumerate(prompts) if "keywords:letter_frequency" in p["instruction_id_list"]]
    subset = ifeval.score([prompts[i] for i in reversed(picked)], [responses[i] for i in reversed(picked)]).per_prompt
    assert list(reversed(subset)) == [first[i] for i in picked]


def test_per_instruction_breakdown(gpt4):
    result = ifeval.score(*gpt4)
    assert sum(v["n"] for v in result.per_instruction.values()) == 834
    assert result.per_instruction["detectable_format:title"]["strict"] == 1.0


def test_cli_prints_official_figures(ifeval_data, gpt4_responses):
    out = run(["ifplay", "ifeval-scores", "--prompts", str(ifeval_data), "--responses", str(gpt4_responses), "--json"]).stdout
    assert json.loads(out)["percent"] == OFFICIAL


def test_empty_response_fails_without_crash():
    prompts = [{"key": 1, "prompt": "Say hi in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
                "kwargs": [{}]},
               {"key": 2, "prompt": "Answer in Italian.", "instruction_id_list": ["language:response_language"],
                "kwargs": [{"language": "it"}]}]
    result = ifeval.score(prompts, ["", "   \n"])
    assert result.metrics["prompt_level_loose_acc"] == 0.0
    assert result.num_empty_responses == 2


def test_missing_response_names_the_prompt(tmp_path, ifeval_data, gpt4_responses):
    partial = tmp_path / "partial.jsonl"
    lines = gpt4_responses.read_text().splitlines()
    partial.write_text("\n".join(lines[:10]) + "\n")
    proc = run(["ifplay", "ifeval-scores", "--prompts", str(ifeval_data), "--responses", str(partial)], check=False)
    assert proc.returncode == 2
    first_missing = read_jsonl(ifeval_data)[10]
    assert f"no response for 531 prompt(s); first: key {first_missing['key']}" in proc.stderr


def test_malformed_responses_line_named(tmp_path, ifeval_data):
    bad = tmp_path / "resp.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a" "response": "b"}\n')
    proc = run(["ifplay", "ifeval-scores", "--prompts", str(ifeval_data), "--responses", str(bad)], check=False)
    assert proc.returncode == 2 and "resp.jsonl:2: not valid JSON" in proc.stderr
