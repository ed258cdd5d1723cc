"""The verifier judge on AutoIF queries: verification functions run in the real sandbox, their
execution feedback is the critique, and it reaches the refiner in SPaR's tree search."""

from __future__ import annotations

import os
import re
import time

import pytest

from ifplay.generation.backends import Backend
from ifplay.judging.judge import Judge, VerifierJudge, make_judge, parse_verdict
from ifplay.spar.tree_search import SearchConfig, TreeSearch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root (as in CI)")

TIMEOUT = 0.5  # seconds per verification call in these tests

LOWERCASE = "def evaluate(response):\n    return response == response.lower()\n"
NO_COMMA = "def evaluate(response):\n    return ',' not in response\n"
SHORT = "def evaluate(response):\n    return len(response.split()) < 8\n"
HANG = "def evaluate(response):\n    while True:\n        pass\n"

#: An AutoIF query as autoif_prompts writes it: functions with their cross-validation accuracy and
#: the back-translation of each function.
QUERY = {"key": "i3-q0", "prompt": "Tell me about cats. Write in lowercase without commas, in under 8 words.",
         "instruction": "Write in lowercase without commas, in under 8 words.",
         "eval_func": [[LOWERCASE, 1.0], [NO_COMMA, 0.9], [SHORT, 0.8]],
         "back_instruction": ["Answer in lowercase letters only.", "Do not use any commas.",
                              "Keep the answer under 8 words."]}
#: Functions as a plain list, no back-translations: lines name the instruction.
PLAIN = {"key": "i4-q1", "prompt": "Greet me. Use no commas.", "instruction": "Use no commas.",
         "eval_func": [NO_COMMA, LOWERCASE]}
IFEVAL = {"key": 7, "prompt": "Describe a cat in lowercase letters and without commas.",
          "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]}


@pytest.fixture(scope="module")
def judge():
    with VerifierJudge(timeout=TIMEOUT, memory_mb=256, workers=2) as verifier:
        yield verifier


def test_label_and_value_are_the_share_of_accepting_functions(judge):
    items = [(QUERY, "cats purr and nap all day"),       # 3 of 3
             (QUERY, "cats purr, nap and eat"),           # lowercase, short; a comma: 2 of 3
             (QUERY, "Cats purr, nap and eat"),           # short only: 1 of 3
             (QUERY, "Cats Purr, Nap, Eat, Sleep, Play And Then Nap Again")]  # 0 of 3
    judgements = judge.judge(items)
    assert [j.value for j in judgements] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert [j.label for j in judgements] == [1, 1, 0, 0]  # AutoIF's threshold: value > 0.5
    assert [j.votes for j in judgements] == [[1], [1], [0], [0]]
    assert all(j.critiques == [j.critique] and j.n_invalid == 0 and not j.tie for j in judgements)
    assert [parse_verdict(j.critique) for j in judgements] == [1, 1, 0, 0]


def test_critique_names_each_function_by_its_back_translation(judge):
    [judgement] = judge.judge([(QUERY, "Cats purr, nap and eat")])
    assert judgement.critique == ("Step-by-step verification:\n"
                                  "1. Answer in lowercase letters only.: failed\n"
                                  "2. Do not use any commas.: failed\n"
                                  "3. Keep the answer under 8 words.: passed\n"
                                  "Final Judgement: No")


def test_without_back_translations_the_instruction_names_the_functions(judge):
    passing, failing = judge.judge([(PLAIN, "hello there friend"), (PLAIN, "Hello, friend")])
    assert failing.critique == ("Step-by-step verification:\n"
                                "1. Use no commas.: failed\n"
                                "2. Use no commas.: failed\n"
                                "Final Judgement: No")
    assert passing.critique.endswith("2. Use no commas.: passed\nFinal Judgement: Yes") and passing.label == 1
    # a half-accepted response is not above AutoIF's threshold
    [half] = judge.judge([(PLAIN, "Hello friend")])
    assert half.value == 0.5 and half.label == 0


def test_a_hanging_function_is_an_error_and_counts_as_rejection(judge):
    hostile = {**QUERY, "key": "i5-q0", "prompt": "Tell me about dogs briefly.",
               "eval_func": [[LOWERCASE, 1.0], [HANG, 1.0], [SHORT, 1.0]],
               "back_instruction": ["Answer in lowercase letters only.", "Loop forever.", "Keep it short."]}
    start = time.monotonic()
    [judgement] = judge.judge([(hostile, "dogs bark")])
    assert time.monotonic() - start < 30
    assert judgement.value == pytest.approx(2 / 3) and judgement.label == 1
    assert "2. Loop forever.: error (timeout)" in judgement.critique.splitlines()
    only_hang = {"key": "i5-q1", "prompt": "Dogs again.", "instruction": "Keep it short.", "eval_func": [HANG, SHORT]}
    [judgement] = judge.judge([(only_hang, "dogs bark")])
    assert judgement.value == 0.5 and judgement.label == 0  # the timeout is a rejection
    assert judgement.critique.splitlines()[1:] == ["1. Keep it short.: error (timeout)", "2. Keep it short.: passed",
                                                   "Final Judgement: No"]


def test_one_sandbox_run_per_call_and_cached_pairs_are_not_rerun(judge):
    judge.judge([(QUERY, "warm up")])
    box = judge.sandbox
    calls = box.stats["calls"]
    hits = judge.cache_hits
    judgements = judge.judge([(QUERY, "cats sleep"), (PLAIN, "hi there"), (QUERY, "cats sleep"), (QUERY, "warm up")])
    assert judge.sandbox is box  # one sandbox per judge, kept between calls
    assert box.stats["calls"] - calls == 3 + 2  # the new pairs' functions only
    assert judge.cache_hits - hits == 2 and judgements[0] is judgements[2]
    judge.judge([(QUERY, "cats sleep")])
    assert box.stats["calls"] - calls == 5


def test_ifeval_records_keep_the_checkers_and_mix_with_autoif_records(judge):
    ifeval_pass, autoif, ifeval_fail = judge.judge([
        (IFEVAL, "the cat sleeps in the warm sun all afternoon"), (PLAIN, "hello friend"),
        (IFEVAL, "the cat sleeps, eats and then sleeps again in the sun")])
    assert (ifeval_pass.label, ifeval_pass.value, autoif.label, ifeval_fail.label) == (1, 1.0, 1, 0)
    assert ifeval_fail.critique.splitlines()[2] == (
        "2. punctuation:no_comma (In your entire response, refrain from the use of any commas.): not satisfied")


def test_a_record_without_checks_is_named(judge):
    with pytest.raises(ValueError, match=r"prompt key 'free-1' has no instruction_id_list or kwargs and no eval_func"):
        judge.judge([({"key": "free-1", "prompt": "Write a poem."}, "roses")])
    with pytest.raises(ValueError, match=r"prompt key 'empty' has an empty eval_func"):
        judge.judge([({"key": "empty", "prompt": "Write.", "eval_func": []}, "roses")])


def test_make_judge_passes_sandbox_limits_and_close_stops_the_workers():
    verifier = make_judge("verifier", timeout=1.5, memory_mb=128, workers=1)
    assert (verifier.timeout, verifier.memory_mb, verifier.workers) == (1.5, 128, 1)
    with pytest.raises(ValueError, match="takes only timeout, memory_mb and workers, got votes"):
        make_judge("verifier", votes=3)
    verifier.judge([(PLAIN, "hi")])
    workers = [w for w in verifier.sandbox._slots if w is not None]
    assert workers and all(w.proc.poll() is None for w in workers)
    verifier.close()
    assert all(w.proc.poll() is not None for w in workers)
    verifier.close()  # idempotent
    Judge.close(verifier)  # the base class's close is a no-op


# -- the tree search: execution feedback reaches the refiner ----------------------------------
REFINE = "Instruction: {prompt}\nResponse: {response}\nFeedback:\n{critique}\nRewrite the response."


class FeedbackRefiner(Backend):
    """A scripted refiner: rewrites by a table (response -> its refinements), records each prompt."""

    name = "feedback-refiner"

    def __init__(self, table):
        self.table = table
        self.prompts: list[str] = []

    def chat(self, conversations, params, progress=None):
        outputs = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            self.prompts.append(text)
            response = re.search(r"^Response: (.*)$", text, re.M).group(1)
            outputs.append(self.table[response][:params.n])
        return outputs


def test_tree_search_refiner_is_told_which_function_failed(judge):
    root_response = "Cats purr, nap, eat and then nap again all day"
    [root_judgement] = judge.judge([(QUERY, root_response)])
    assert root_judgement.label == 0 and root_judgement.value == 0.0
    first = "cats purr, nap, eat and then nap again all day"  # lowercase only: 1 of 3
    refiner = FeedbackRefiner({
        root_response: [first, "Cats purr, nap and eat"],  # short only: 1 of 3
        first: ["cats purr and nap", "cats purr, nap"],  # 3 of 3, 2 of 3
    })
    config = SearchConfig(branch=2, select=1, max_depth=2, output_format="plain")  # end gate 0.5
    search = TreeSearch(refiner, judge, REFINE, config)
    [result] = search.run([{"key": "i3-q0/0", "prompt": QUERY, "response": root_response,
                            "critique": root_judgement.critique, "judgement": root_judgement}])
    # the root's execution feedback: every function failed
    assert refiner.prompts[0].endswith("Feedback:\nStep-by-step verification:\n"
                                       "1. Answer in lowercase letters only.: failed\n"
                                       "2. Do not use any commas.: failed\n"
                                       "3. Keep the answer under 8 words.: failed\n"
                                       "Final Judgement: No\nRewrite the response.")
    # depth 1: the kept child is refined with the feedback the verifier judge gave it
    assert len(refiner.prompts) == 2
    assert refiner.prompts[1] == REFINE.format(prompt=QUERY["prompt"], response=first, critique=(
        "Step-by-step verification:\n"
        "1. Answer in lowercase letters only.: passed\n"
        "2. Do not use any commas.: failed\n"
        "3. Keep the answer under 8 words.: failed\n"
        "Final Judgement: No"))
    assert result.success and result.best.response == "cats purr and nap" and result.best.value == 1.0
    assert [node.response for node in result.path] == [root_response, first, "cats purr and nap"]
    assert [node.value for node in result.nodes] == pytest.approx([0.0, 1 / 3, 1 / 3, 1.0, 2 / 3])
