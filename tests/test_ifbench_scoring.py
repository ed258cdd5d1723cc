"""IFBench scoring (ifplay.scoring.ifbench): the checkers where the pinned package and the official code
at db69a6f part, on texts whose official verdicts were read off the official code
(docs/studies/ifbench-checkers.md; benchmarks/ifbench_conformance.py compares every checker on
thousands of responses); the evaluation loop; unscorable prompts; the metrics."""

from __future__ import annotations

import json

import pytest

from conftest import shared
from ifplay.scoring import ifbench as ib


def record(instruction_id: str, key: str = "k", prompt: str = "Answer.", **kwargs) -> dict:
    return {"key": key, "prompt": prompt, "instruction_id_list": [instruction_id], "kwargs": [kwargs]}


def strict(instruction_id: str, response: str, **kwargs) -> bool:
    return ib.follows(record(instruction_id, **kwargs), response)[0][0]


@pytest.mark.parametrize("instruction_id, kwargs, response, expected", [
    # names count as whole words only (the package counts Leo in Leonard, Mia in Miami)
    ("count:person_names", {"N": 2}, "Leonard moved to Miami.", False),
    ("count:person_names", {"N": 2}, "Leo met Mia.", True),
    # HEAD's 63 pronouns over NLTK tokens: "I'm" gives "i"; demonstratives and indefinites count
    ("count:pronouns", {"N": 3}, "I'm sure you're right, we've won.", True),
    ("count:pronouns", {"N": 5}, "This is what everyone wants, and that is something.", True),
    # a lowercase one-letter word is not title case at HEAD
    ("format:title_case", {}, "Life Is a Journey", False),
    ("format:title_case", {}, "Life Is A Journey With NASA", True),
    # HEAD leaves curly quotes alone: they are not quotation marks to it
    ("format:quote_unquote", {}, "He said \u201chello\u201d \u201cworld\u201d loudly.", True),
    ("format:quote_unquote", {}, 'He ended with "a quote"', False),
    ("format:quote_unquote", {}, "...", True),  # the package raises IndexError here
    # second and second-to-last word, third-to-last when the last token is punctuation
    ("words:words_position", {"keyword": "vibrant"}, "The vibrant city was vibrant today.", True),
    ("words:words_position", {"keyword": "whisper"}, "A whisper is what I heard, a whisper.", False),
    # the keyword as a whole word, any case, in sentence N (NLTK sentences)
    ("sentence:keyword", {"word": "eat", "N": 2}, "Hello there. It is GREAT to EAT.", True),
    ("sentence:keyword", {"word": "eat", "N": 2}, "Hello there. It is great.", False),
    # NLTK sentences: '?!' ends one sentence, a closing quote stays with its sentence
    ("ratio:sentence_type", {}, "Is it? Yes. No.", True),
    ("ratio:sentence_type", {}, 'She said "go." Then? Yes.', False),
    # word m of sentence n, punctuation tokens not counted, any case
    ("words:keywords_specific_position", {"keyword": "blue", "n": 2, "m": 3}, "One. A -- big BLUE sky.", True),
])
def test_checkers_follow_the_official_code(instruction_id, kwargs, response, expected):
    assert strict(instruction_id, response, **kwargs) is expected


def test_repeat_span_reads_character_indices_as_the_official_code_does():
    data = {r["key"]: r for r in map(json.loads, shared("ifbench/IFBench_test.jsonl").read_text().splitlines())}
    expected = {"284": "lain", "285": " a descript", "286": "The wall", "287": "d w"}
    for key, span in expected.items():
        r = data[key]
        kwargs = r["kwargs"][r["instruction_id_list"].index("repeat:repeat_span")]
        assert kwargs["prompt_to_repeat"][kwargs["n_start"]:kwargs["n_end"] + 1] == span
        strict_verdicts, loose_verdicts = ib.follows(r, span.upper() + "\n")  # stripped, any case
        assert strict_verdicts[r["instruction_id_list"].index("repeat:repeat_span")]
    # n_start 0 is an index, not "unset" (the package draws a random start for it)
    r = data["286"]
    assert ib.follows(r, "The wall") == ib.follows(r, "The wall")


def test_loose_tries_the_official_variants_and_strict_keeps_the_response_as_it_is():
    r = record("format:no_whitespace")
    assert ib.follows(r, "abc\n") == ([False], [True])  # a trailing newline fails strict, not loose
    assert ib.follows(record("format:title_case"), "") == ([False], [False])
    # null kwargs are dropped before the checker sees them, in both modes
    r = record("count:pronouns", N=2, keyword=None)
    assert ib.follows(r, "I like you.") == ([True], [True])


def test_unknown_ids_and_unscorable_prompts(monkeypatch):
    with pytest.raises(ib.ScoringError, match="unknown IFBench instruction id 'count:nothing'"):
        ib.follows(record("count:nothing"), "text")
    monkeypatch.setattr(ib, "missing_nltk_data", lambda: ("taggers/averaged_perceptron_tagger_eng",))
    assert "words:start_verb needs NLTK's averaged_perceptron_tagger_eng" in ib.unscorable_reason(
        ["count:pronouns", "words:start_verb"], "Run now.")
    assert ib.unscorable_reason(["words:start_verb"], "  \n") is None  # blank fails without the checker
    prompts = [record("words:start_verb", key="a"), record("count:pronouns", key="b", N=1),
               record("count:pronouns", key="c", N=1)]
    result = ib.score(prompts, ["Run now.", "I run.", "Run."])
    assert result.num_unscorable == 1 and result.per_prompt[0]["unscorable"] and result.per_prompt[0]["strict"] is None
    # the unscorable prompt is in no accuracy: one of two scorable prompts passes
    assert result.percent() == {"prompt_strict": 50.0, "inst_strict": 50.0, "prompt_loose": 50.0, "inst_loose": 50.0}
    assert result.to_json()["num_unscorable"] == 1 and result.to_json()["official_commit"] == ib.OFFICIAL_COMMIT


def test_every_ifbench_prompt_is_scorable_or_counted():
    data = [json.loads(line) for line in shared("ifbench/IFBench_test.jsonl").read_text().splitlines()]
    result = ib.score(data, [r["prompt"] for r in data])
    assert result.num_prompts == 300
    needing = sum(any(i in ids for ids in ib.NLTK_NEEDS.values() for i in r["instruction_id_list"]) for r in data)
    assert result.num_unscorable <= needing == 18  # 6 start_verb + 12 stop_words prompts
    assert sum(v["n"] for v in result.per_instruction.values()) == sum(
        len(r["instruction_id_list"]) for r, row in zip(data, result.per_prompt) if row["unscorable"] is None)
    again = ib.score(data, [r["prompt"] for r in data])
    assert again.metrics == result.metrics  # deterministic


def test_ifbench_scores_command(tmp_path):
    from conftest import run
    from ifplay.core.records import read_json, read_jsonl, write_jsonl

    data = [json.loads(line) for line in shared("ifbench/IFBench_test.jsonl").read_text().splitlines()][:5]
    write_jsonl(tmp_path / "prompts.jsonl", data)
    write_jsonl(tmp_path / "responses.jsonl", [{"key": r["key"], "prompt": r["prompt"], "response": r["prompt"]}
                                               for r in data])
    run(["ifplay", "ifbench-scores", "--prompts", str(tmp_path / "prompts.jsonl"), "--responses",
         str(tmp_path / "responses.jsonl"), "--metrics", str(tmp_path / "m.json"), "--per-prompt",
         str(tmp_path / "p.jsonl")], cwd=tmp_path)
    metrics = read_json(tmp_path / "m.json")
    assert metrics["num_prompts"] == 5 and set(metrics["percent"]) == {"prompt_strict", "inst_strict", "prompt_loose",
                                                                        "inst_loose"}
    assert [r["key"] for r in read_jsonl(tmp_path / "p.jsonl")] == [r["key"] for r in data]
    # a response set that misses a prompt names the file and the prompt
    write_jsonl(tmp_path / "short.jsonl", [{"prompt": data[0]["prompt"], "response": "x"}])
    bad = run(["ifplay", "ifbench-scores", "--prompts", str(tmp_path / "prompts.jsonl"), "--responses",
               str(tmp_path / "short.jsonl")], cwd=tmp_path, check=False)
    assert bad.returncode == 2 and f"short.jsonl: no response for 4 prompt(s); first: key {data[1]['key']}" in bad.stderr


def test_the_default_plans_ifbench_only_with_its_data():
    from ifplay.core.config import load_config
    from ifplay.plan import Plan

    assert not [s for s in Plan(load_config([])).stages.values() if s.kind == "ifbench_scores"]
    p = Plan(load_config([], {"data": {"ifbench": str(shared("ifbench/IFBench_test.jsonl"))}}))
    scored = [e for e in p.evaluations if e.benchmark == "ifbench"]
    assert [e.iteration for e in scored] == [m[1] for m in p.models] and "ifbench" in p.tables()
    prompts = scored[0].scores.inputs["prompts"]
    assert prompts.config["limit"] == 30 and prompts.runtime["config_key"] == "data.ifbench"
