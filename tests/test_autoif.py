"""AutoIF's rules (ifplay.autoif.core) on real sample data, and its sandboxed stages (ifplay.autoif.stages)
with the real verifier sandbox."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from ifplay.autoif import core as autoif
from ifplay.autoif import stages as autoif_stages
from ifplay.core.records import RecordError, read_json, read_jsonl, write_jsonl
from ifplay.sandbox.runner import unsafe_in_process

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "autoif"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")


# -- parsing the supervisor's verifier answers ----------------------------------------------------
@needs_shared
def test_every_sample_verifier_answer_parses_with_three_cases():
    answers = [a for line in (SHARED / "eval_func_rft.jsonl").open() for a in json.loads(line)["gpt-answer"]]
    parsed = [autoif.parse_verifier_answer(a) for a in answers]
    assert len(parsed) == 40
    assert all(p.func and "def evaluate" in p.func for p in parsed)
    assert all(len(p.cases) == 3 and all(isinstance(c[1], bool) for c in p.cases) for p in parsed)


def test_fenced_json_with_chatter_around_it():
    text = 'Sure!\n```json\n{"func": "def evaluate(response):\\n    return True", "cases": [{"input": "a", "output": "false"}]}\n```\nDone.'
    p = autoif.parse_verifier_answer(text)
    assert p.func == "def evaluate(response):\n    return True" and p.cases == [["a", False]] and p.how == "json"


def test_raw_newlines_inside_the_json_string():
    text = '{"func": "def evaluate(response):\n    return len(response) < 5", "cases": [{"input": "hi", "output": true}]}'
    p = autoif.parse_verifier_answer(text)
    assert p.how == "json-lenient" and "len(response) < 5" in p.func and p.cases == [["hi", True]]


def test_python_literal_with_single_quotes():
    text = "{'func': 'def evaluate(response):\\n    return True', 'cases': [{'input': 'x', 'output': True}]}"
    p = autoif.parse_verifier_answer(text)
    assert p.how == "python-literal" and p.cases == [["x", True]]


def test_salvage_when_the_json_breaks_after_the_function():
    # what SmolLM2 writes: the function string closes, then the object is left broken
    text = ('{"func": "def evaluate(response):\\n    return response == response.lower()", "cases": '
            '[{"input": "all lower", "output": true}, {"input": "Not", "output": false}}}\nmore text')
    p = autoif.parse_verifier_answer(text)
    assert p.how == "salvage" and p.func.endswith("response.lower()")
    assert p.cases == [["all lower", True], ["Not", False]]


@pytest.mark.parametrize("text, error", [
    ("I cannot write this function.", "no-json"),
    ('{"answer": 3}', "no-func"),
    ('{"func": "print(1)", "cases": []}', "no-evaluate"),
    ('{"func": "x = 1", broken', "no-evaluate"),
])
def test_answers_without_a_usable_function(text, error):
    p = autoif.parse_verifier_answer(text)
    assert p.func is None and p.error == error


def test_cases_with_bad_outputs_are_skipped():
    text = '{"func": "def evaluate(response):\\n    return True", "cases": [{"input": "a", "output": "maybe"}, ["b", "True"], {"input": 3, "output": true}]}'
    assert autoif.parse_verifier_answer(text).cases == [["b", True]]


# -- instructions, scores, NLI, queries ------------------------------------------------------------
def test_numbered_lines_and_deduplication():
    text = "1. Use no commas\n2) Answer in French.\n- Here are more:\n* use NO commas!\n3. ok\n4. End with a question"
    lines = autoif.parse_numbered_lines(text)
    assert lines == ["Use no commas", "Answer in French.", "use NO commas!", "End with a question"]
    records, counts = autoif.merge_instructions(["Use no commas."], lines)
    assert [r["instruction"] for r in records] == ["Use no commas.", "Answer in French.", "End with a question"]
    assert counts == {"seeds": 1, "augmented_generated": 4, "augmented_duplicates": 2, "seed_duplicates": 0,
                      "augmented_kept": 2, "instructions": 3}


@pytest.mark.parametrize("text, score", [
    ("Analysis...\nScore: 8", 8.0), ("Score: 3\nlater Score: 9", 9.0), (" 7 because it is fine", 7.0),
    ("**Score:** 10", 10.0), ("Score: 12", None), ("no idea", None),
])
def test_parse_score(text, score):
    assert autoif.parse_score(text) == score


@pytest.mark.parametrize("text, label", [
    (" contradiction.", "contradiction"), ("The premise entails it", "entailment"), ("Neutral", "neutral"),
    ("It contradicts", "contradiction"), ("yes", None),
])
def test_parse_nli(text, label):
    assert autoif.parse_nli(text) == label


def test_query_text_forms_and_train_prompt():
    assert autoif.query_text({"query": "q"}) == "q"
    assert autoif.query_text({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "h"}]}) == "h"
    assert autoif.query_text({"messages": [{"role": "user", "content": "u"}]}) == "u"
    assert autoif.query_text({"other": 1}) is None
    assert autoif.train_prompt("Why? ", "Use no commas") == "Why? Use no commas."
    assert autoif.train_prompt("Why?", "End with 'ok'!") == "Why? End with 'ok'!"


def test_pairs_follow_the_reference_code():
    rng = random.Random(0)
    assert autoif.pair_up(["a"], ["b"], rng) == [("a", "b")]
    assert autoif.pair_up(["a"], [], rng) == []
    pairs = autoif.pair_up(["a", "b", "c"], ["x"], rng)
    assert len(pairs) == 2 and {r for _, r in pairs} == {"x"}
    assert len(autoif.pair_up(["a", "b", "c"], ["x", "y", "z"], rng)) == 4


# -- cross-validation rule ----------------------------------------------------------------------
def test_cross_validation_keeps_agreeing_functions_and_cases():
    funcs = ["f0", "f1", "f2", "broken"]
    cases = [["short", True], ["long text", False], ["mislabelled", True]]
    results = [[True, False, False],   # right on cases 0, 1
               [True, False, False],
               [True, True, False],    # wrong on case 1
               [None, None, None]]     # never ran
    verdict = autoif.cross_validate(funcs, cases, results, autoif.CrossValidation())
    assert verdict["keep"] and verdict["compiled"] == 3
    assert verdict["cases"] == cases[:2]  # case 2: no function agrees
    assert [f for f, _ in verdict["functions"]] == ["f0", "f1"]  # f2: 1/2 is not above 0.5
    assert verdict["case_pass_rates"] == [1.0, 0.0]
    strict = autoif.CrossValidation(min_functions=3)
    assert autoif.cross_validate(funcs, cases, results, strict)["reason"] == "too-few-functions"
    off = autoif.cross_validate(funcs, cases, results, autoif.CrossValidation(enabled=False))
    assert [f for f, _ in off["functions"]] == ["f0", "f1", "f2"] and len(off["cases"]) == 3
    assert autoif.cross_validate(["x"], cases, [[None] * 3], autoif.CrossValidation())["reason"] == "no-compiled-function"


# -- the sandboxed stages -------------------------------------------------------------------------
LOWER = "def evaluate(response):\n    return response == response.lower()"
LOWER2 = "def evaluate(response):\n    return not any(c.isupper() for c in response)"
WRONG = "def evaluate(response):\n    return len(response) > 100"
LOOP = "def evaluate(response):\n    while True:\n        pass"
BOMB = "import os\ndef evaluate(response):\n    os.fork()\n    return True"


def _answer(func, cases):
    return {"func": func, "cases": [[c, o] for c, o in cases], "how": "json", "error": None, "text": ""}


def test_cross_validation_stage_runs_hostile_functions_in_the_sandbox(tmp_path):
    cases = [("all lower", True), ("Has Upper", False), ("x", True)]
    write_jsonl(tmp_path / "verifiers.jsonl", [
        {"id": "i0", "instruction": "Write in lowercase", "answers": [
            _answer(LOWER, cases), _answer(LOWER2, []), _answer(WRONG, [("Mixed Case", True)]),
            _answer(LOOP, []), _answer(BOMB, [])]},
        {"id": "i1", "instruction": "Be long", "answers": [_answer(None, [])]},
        {"id": "i2", "instruction": "Never", "answers": [_answer(LOOP, [("a", True)])]},
    ])
    counts = autoif_stages.cross_validation(str(tmp_path / "verifiers.jsonl"), str(tmp_path / "out.jsonl"),
                                            str(tmp_path / "counts.json"), autoif.CrossValidation(), timeout=1.0,
                                            memory_mb=256)
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in kept] == ["i0"]
    assert [f for f, _ in kept[0]["eval_func"]] == [LOWER, LOWER2]
    # "Mixed Case" -> True comes from the wrong function only: 1 of 3 compiled functions agree
    assert kept[0]["cases"] == [list(c) for c in cases]
    assert counts["kept"] == 1 and counts["dropped_no-compiled-function"] == 2
    assert counts["functions"] == 6 and counts["functions_compiled"] == 3
    assert read_json(tmp_path / "counts.json") == counts


@needs_shared
def test_rejection_sampling_on_autoifs_query_rft_file_matches_in_process_exec(tmp_path):
    src = SHARED / "query_rft.jsonl"
    counts = autoif_stages.verify_responses(str(src), str(tmp_path / "verified.jsonl"), str(tmp_path / "c.json"),
                                            threshold=0.5, timeout=3.0, memory_mb=512)
    records = [json.loads(line) for line in src.open() if line.strip()]
    verified = read_jsonl(tmp_path / "verified.jsonl")
    assert counts["queries"] == len(records) == len(verified) == 20
    assert counts["responses"] == 320 and counts["responses_kept"] + counts["responses_dropped"] == 320
    for record, out in zip(records, verified):  # accuracies equal AutoIF's own way of running them
        funcs = autoif.functions_of(record)
        results = unsafe_in_process([(i, f, r) for r in record["gpt-answer"] for i, f in enumerate(funcs)])
        expected = [sum(x.result is True for x in results[t * len(funcs):(t + 1) * len(funcs)]) / len(funcs)
                    for t in range(len(record["gpt-answer"]))]
        assert out["accuracies"] == pytest.approx(expected, abs=1e-4)
        assert out["kept"] == [t for t, a in enumerate(expected) if a > 0.5]


def test_rejection_sampling_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"eval_func": [[LOWER, 1.0]], "gpt-answer": "not a list"}) + "\n")
    with pytest.raises(Exception, match="bad.jsonl:1"):
        autoif_stages.verify_responses(str(bad), str(tmp_path / "o.jsonl"), str(tmp_path / "c.json"), 0.5, 1.0, 256)


def test_data_and_online_pairs(tmp_path):
    verified = [{"key": "q0", "instruction": "Write in lowercase", "query": "Why is the sky blue?",
                 "prompt": "...", "eval_func": [[LOWER, 1.0], [LOWER2, 1.0]],
                 "cases": [["all lower", True], ["Has Upper", False]], "case_pass_rates": [1.0, 0.0],
                 "gpt-answer": ["it scatters light.", "It Scatters.", "it is blue.", "It is."],
                 "accuracies": [1.0, 0.0, 1.0, 0.0], "kept": [0, 2]},
                {"key": "q1", "instruction": "Be brief", "query": "Hi there friend",  # not in D_train
                 "prompt": "...", "eval_func": [[LOWER, 1.0]], "cases": [["ok", True], ["Not OK", False]],
                 "case_pass_rates": [1.0, 0.0],
                 "gpt-answer": ["Hello"], "accuracies": [0.0], "kept": []}]
    write_jsonl(tmp_path / "verified.jsonl", verified)
    write_jsonl(tmp_path / "scored.jsonl", [
        {"key": "q0", "response": "it scatters light.", "score": 9, "kept": True},
        {"key": "q0", "response": "it is blue.", "score": 5, "kept": False}])
    f = {n: str(tmp_path / n) for n in ("sft.jsonl", "pairs.jsonl", "queries.jsonl", "c.json")}
    counts = autoif_stages.build_data(str(tmp_path / "verified.jsonl"), str(tmp_path / "scored.jsonl"),
                                      f["sft.jsonl"], f["pairs.jsonl"], f["queries.jsonl"], f["c.json"],
                                      chosen_min=0.5, rejected_max=0.0, per_side=2, instruction_level=True)
    sft = read_jsonl(f["sft.jsonl"])
    assert [r["messages"][1]["content"] for r in sft] == ["it scatters light."]
    assert sft[0]["messages"][0]["content"] == "Why is the sky blue? Write in lowercase."
    pairs = read_jsonl(f["pairs.jsonl"])
    assert Counter(p["level"] for p in pairs) == {"query": 4, "instruction": 2}  # both instructions' cases
    assert {p["chosen"][0]["content"] for p in pairs if p["level"] == "query"} == {"it scatters light.", "it is blue."}
    assert counts == {"queries": 1, "pairs_query_level": 4, "pairs_instruction_level": 2, "sft_examples": 1,
                      "dpo_pairs": 6, "online_queries": 1}
    write_jsonl(tmp_path / "samples.jsonl", [
        {"key": "q0", "sample": 0, "response": "all good here."}, {"key": "q0", "sample": 1, "response": "Not Good"},
        {"key": "q0", "sample": 2, "response": "Also Not"}])
    counts = autoif_stages.online_pairs(f["queries.jsonl"], str(tmp_path / "samples.jsonl"), str(tmp_path / "on.jsonl"),
                                        str(tmp_path / "oc.json"), 0.5, 0.0, 2, timeout=1.0, memory_mb=256)
    assert counts["dpo_pairs"] == 2 and counts["samples_positive"] == 1 and counts["samples_negative"] == 2
    online = read_jsonl(tmp_path / "on.jsonl")
    assert all(p["chosen"][0]["content"] == "all good here." for p in online)
    assert online[0]["prompt"][0]["content"] == "Why is the sky blue? Write in lowercase."


def test_queries_from_a_sharegpt_file_name_the_bad_line(tmp_path):
    instructions = tmp_path / "instructions.jsonl"
    write_jsonl(instructions, [{"id": "i0", "instruction": "Use no commas", "eval_func": [[LOWER, 1.0]], "cases": []}])
    share = tmp_path / "sharegpt.jsonl"
    write_jsonl(share, [{"conversations": [{"from": "human", "value": "Tell me about the moon landing"}]},
                        {"conversations": [{"from": "human", "value": "too short"}]}])
    template = str(Path(__file__).resolve().parents[1] / "config" / "prompts" / "autoif_query.txt")
    counts = autoif_stages.make_queries(str(instructions), str(share), str(tmp_path / "q.jsonl"),
                                        str(tmp_path / "c.json"), template, per_instruction=5, min_chars=20,
                                        max_chars=300)
    queries = read_jsonl(tmp_path / "q.jsonl")
    assert counts == {"instructions": 1, "query_pool": 2, "queries": 1}
    assert queries[0]["prompt"] == ("Please answer the query strictly following the instruction.\n"
                                    "[instruction] Use no commas\n[Query] Tell me about the moon landing")
    share.write_text(json.dumps({"conversations": []}) + "\n")
    with pytest.raises(RecordError, match="sharegpt.jsonl:1"):
        autoif_stages.load_queries(str(share))


def test_nli_classifier_reads_labels_from_the_model(tmp_path):
    """A real (randomly initialised) sequence classifier with NLI labels, saved and loaded by path."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "use", "no", "commas", "lowercase"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3,
                        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
                        label2id={"entailment": 0, "neutral": 1, "contradiction": 2})
    BertForSequenceClassification(config).save_pretrained(tmp_path / "nli")
    fast.save_pretrained(tmp_path / "nli")
    labels = autoif_stages.nli_with_classifier(str(tmp_path / "nli"), [("use no commas", "use lowercase")] * 3)
    assert len(labels) == 3 and len(set(labels)) == 1 and labels[0] in autoif.NLI_LABELS


# -- AutoIF's queries as SPaR's prompt pool ----------------------------------------------------------
def test_back_translations_travel_from_instructions_to_the_spar_pool(tmp_path):
    from conftest import REPO, planned_settings, run

    instructions = tmp_path / "instructions.jsonl"
    back = ["Answer in lowercase letters only.", "Use no capital letters."]
    write_jsonl(instructions, [
        {"id": "i0", "instruction": "Write in lowercase", "eval_func": [[LOWER, 1.0], [LOWER2, 1.0]], "cases": [],
         "back_instruction": back, "nli": ["entailment", "entailment"]},
        {"id": "i1", "instruction": "Write in lowercase too", "eval_func": [[LOWER, 1.0]], "cases": []}])  # no back-translation stage
    template = str(REPO / "config" / "prompts" / "autoif_query.txt")
    autoif_stages.make_queries(str(instructions), "builtin:autoif", str(tmp_path / "q.jsonl"), str(tmp_path / "c.json"),
                               template, per_instruction=2, min_chars=20, max_chars=300)
    queries = read_jsonl(tmp_path / "q.jsonl")
    assert [q.get("back_instruction") for q in queries] == [back, back, None, None]
    # the responses stage keeps every query field; autoif-data writes them to queries.jsonl
    verified = [{**q, "gpt-answer": ["all lowercase here.", "Not Lowercase."], "accuracies": [1.0, 0.0], "kept": [0]}
                for q in queries]
    write_jsonl(tmp_path / "verified.jsonl", verified)
    out = {n: str(tmp_path / n) for n in ("sft.jsonl", "pairs.jsonl", "queries.jsonl", "c2.json")}
    autoif_stages.build_data(str(tmp_path / "verified.jsonl"), None, out["sft.jsonl"], out["pairs.jsonl"],
                             out["queries.jsonl"], out["c2.json"], 0.5, 0.0, 2, False)
    data_queries = read_jsonl(out["queries.jsonl"])
    assert [q.get("back_instruction") for q in data_queries] == [back, back, None, None]
    # autoif-prompts: the first N queries as prompt records (the command as the workflow runs it)
    run(["ifplay", "autoif-prompts", "--queries", out["queries.jsonl"], "--out", str(tmp_path / "prompts.jsonl"),
         "--settings", planned_settings("autoif_prompts", "config/experiments/spar-autoif-verifier.yaml",
                                        config={"limit": 3})])
    prompts = read_jsonl(tmp_path / "prompts.jsonl")
    assert [p["key"] for p in prompts] == [q["key"] for q in data_queries[:3]]
    assert prompts[0] == {"key": data_queries[0]["key"], "prompt": data_queries[0]["prompt"],
                          "instruction": "Write in lowercase", "eval_func": [[LOWER, 1.0], [LOWER2, 1.0]],
                          "back_instruction": back}
    assert set(prompts[2]) == {"key", "prompt", "instruction", "eval_func"}
    assert autoif_stages.spar_prompts(out["queries.jsonl"], str(tmp_path / "all.jsonl"), None) == \
        {"prompts": 4, "with_back_translation": 2}


def test_spar_pool_needs_queries_with_functions(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"key": "k0", "prompt": "p", "eval_func": []}])
    with pytest.raises(RecordError, match=r"q.jsonl:1: query 'k0' has no verification function"):
        autoif_stages.spar_prompts(str(tmp_path / "q.jsonl"), str(tmp_path / "out.jsonl"), 5)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(RecordError, match="no AutoIF queries"):
        autoif_stages.spar_prompts(str(tmp_path / "empty.jsonl"), str(tmp_path / "out.jsonl"), 5)
    assert not (tmp_path / "out.jsonl").exists()


def test_nearest_examples_put_the_closest_last():
    pool = [{"instruction": "Answer in fewer than 10 words"}, {"instruction": "Write in capital letters only"},
            {"instruction": "Write in lowercase letters only"}, {"instruction": "Use no commas"}]
    chosen = autoif.nearest_examples("Write your entire response in capital letters", pool, 2)
    assert [e["instruction"] for e in chosen] == ["Write in lowercase letters only", "Write in capital letters only"]
    example = {"instruction": "Use no commas", "func": "def evaluate(response):\n    return ',' not in response",
               "cases": [{"input": "a, b", "output": False}]}
    text = autoif.format_example(example)
    assert text.splitlines()[0] == "Instruction: Use no commas"
    assert autoif.parse_verifier_answer(text.splitlines()[1]).cases == [["a, b", False]]


def test_shipped_worked_examples_pass_their_own_cases_in_the_sandbox():
    from ifplay.sandbox.runner import Sandbox

    path = Path(__file__).resolve().parents[1] / "config" / "prompts" / "autoif_verifier_examples.jsonl"
    examples = autoif_stages.load_examples(str(path))
    items = [((i, j), e["func"], c["input"]) for i, e in enumerate(examples) for j, c in enumerate(e["cases"])]
    with Sandbox(workers=1) as box:
        results = box.run(items)
    assert [r.result for r in results] == [examples[i]["cases"][j]["output"] for (i, j), _, _ in items]
