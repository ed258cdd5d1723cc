"""Judgements: the verdict parser, voting, the judge cache, the model judge's batching, the IFEval verifier."""

from pathlib import Path

import pytest

from ifplay.scoring import ifeval
from ifplay.generation.backends import Backend, SamplingParams
from ifplay.generation.templates import load_template
from ifplay.judging.judge import ModelJudge, VerifierJudge, VotedJudgement, make_judge, parse_verdict, vote

PROMPTS = Path(__file__).resolve().parents[1] / "config" / "prompts"
TEMPLATE = "Instruction: {prompt}\nResponse: {response}\nJudge it."


class ScriptedJudgeBackend(Backend):
    """Answers a judge conversation by its content: Yes when the response contains GOOD, else No."""

    name = "scripted"

    def __init__(self):
        self.calls: list[tuple[list, SamplingParams]] = []

    def chat(self, conversations, params, progress=None):
        self.calls.append((conversations, params))
        verdicts = ["Yes" if "GOOD" in conv[-1]["content"] else "No" for conv in conversations]
        return [[f"Step-by-step verification:\n1. ok\nFinal Judgement: {verdict}"] * params.n for verdict in verdicts]


# -- the verdict parser ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, verdict", [
    ("Step-by-step verification:\n1. lowercase: met\nFinal Judgement: Yes", 1),
    ("1. comma used: not met\nFinal Judgement: No", 0),
    ("**Final Judgement:** **Yes**", 1),
    ("**Final Judgement: No**.", 0),
    ("final judgement: yes.", 1),
    ("Final Judgment: No!", 0),
    ("Verdict: YES", 1),
    ("## Final Judgement (does it follow all constraints?): No", 0),
    ("Final Judgement:\n\n**Yes**", 1),
    ("Final Judgement - no", 0),
    ("The response is fine overall, yes.", None),  # no marker
    ("", None),
    ("Final Judgement: maybe", None),
    ("Final Judgement: Yes and No", None),  # contradictory
    ("Final Judgement (Yes or No): (Yes or No)", None),  # the template echoed
    ("Final Judgement: Yes\nOn reflection, the comma rule is broken.\nFinal Judgement: No", 0),  # last wins
    ("Final Judgement: No\nFinal Judgement: Yes", 1),
    ("Final Judgement: No. Final Judgement: Yes", 1),  # several on one line: last wins
    ("Final Judgement: Yes\nI will now state my verdict again.", 1),  # a marker without yes/no does not count
    ("Final Judgement: Yes\nFinal Judgement: yes or no", None),  # the last counting marker is contradictory
    ("Final Judgement: Nothing is wrong, yes", 1),  # words, not substrings: "Nothing" is not "no"
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


# -- voting ---------------------------------------------------------------------------------------
def test_vote_majority_keeps_first_agreeing_critique():
    texts = ["A\nFinal Judgement: No", "B\nFinal Judgement: Yes", "C\nFinal Judgement: No", "D garbled",
             "E\nFinal Judgement: No"]
    judgement = vote(texts)
    assert judgement.label == 0 and judgement.votes == [0, 1, 0, None, 0]
    assert judgement.critique == texts[0] and judgement.critiques == texts
    assert judgement.n_invalid == 1 and not judgement.tie
    assert judgement.value == pytest.approx(1 / 4)


def test_vote_tie_has_no_label():
    judgement = vote(["Final Judgement: Yes", "Final Judgement: No", "nothing", "Final Judgement: No",
                      "Final Judgement: Yes"])
    assert judgement.label is None and judgement.tie and judgement.critique is None
    assert judgement.value == 0.5 and judgement.n_invalid == 1


def test_vote_all_invalid():
    judgement = vote(["no marker here", "Final Judgement: Yes and No"])
    assert judgement.label is None and not judgement.tie and judgement.critique is None
    assert judgement.value == 0.0 and judgement.n_invalid == 2 and judgement.votes == [None, None]


def test_voted_judgement_json_round_trip():
    judgement = vote(["Final Judgement: Yes", "x"])
    assert VotedJudgement.from_json(judgement.to_json()) == judgement


# -- the model judge ------------------------------------------------------------------------------
def test_model_judge_one_call_for_many_items_with_n_votes():
    backend = ScriptedJudgeBackend()
    judge = ModelJudge(backend, TEMPLATE, votes=5, temperature=0.7, max_new_tokens=64, seed=3)
    record = {"key": 1, "prompt": "Say something good."}
    items = [(record, f"response {i} {'GOOD' if i % 2 else 'bad'}") for i in range(7)]
    judgements = judge.judge(items)
    assert len(backend.calls) == 1
    conversations, params = backend.calls[0]
    assert len(conversations) == 7 and params == SamplingParams(temperature=0.7, top_p=1.0, max_new_tokens=64,
                                                               n=5, seed=3)
    assert conversations[1] == [{"role": "user", "content": TEMPLATE.format(prompt=record["prompt"],
                                                                            response=items[1][1])}]
    assert [j.label for j in judgements] == [i % 2 for i in range(7)]
    assert all(len(j.votes) == 5 for j in judgements)


def test_judge_cache_never_judges_a_pair_twice():
    backend = ScriptedJudgeBackend()
    judge = ModelJudge(backend, TEMPLATE, votes=3, temperature=0.0)  # greedy repeats are allowed
    a, b = {"key": 1, "prompt": "P1"}, {"key": 2, "prompt": "P2"}
    first = judge.judge([(a, "GOOD"), (a, "GOOD"), (b, "GOOD")])  # the repeat is judged once
    assert len(backend.calls[0][0]) == 2 and (judge.cache_hits, judge.cache_misses) == (1, 2)
    again = judge.judge([(b, "GOOD"), (a, "bad"), (a, "GOOD")])
    assert len(backend.calls) == 2 and len(backend.calls[1][0]) == 1  # only (a, "bad") is new
    assert (judge.cache_hits, judge.cache_misses) == (3, 3)
    assert again[0] == first[2] and again[2] == first[0] and again[1].label == 0
    judge.judge([(a, "GOOD")])
    assert len(backend.calls) == 2 and judge.calls == 3  # fully cached: no backend call


class TieThenDecideBackend(Backend):
    """Splits the votes evenly on a response's first `ties` draws, then votes Yes unanimously."""

    name = "scripted"

    def __init__(self, ties: dict[str, int]):
        self.ties = dict(ties)
        self.calls: list[tuple[list, SamplingParams]] = []

    def chat(self, conversations, params, progress=None):
        self.calls.append((conversations, params))
        out = []
        for conversation in conversations:
            response = conversation[-1]["content"].split("Response: ")[1].split("\n")[0]
            if self.ties.get(response, 0) > 0:
                self.ties[response] -= 1
                out.append([f"Final Judgement: {'Yes' if i % 2 else 'No'}" for i in range(params.n)])
            else:
                out.append(["Final Judgement: Yes"] * params.n)
        return out


def test_tied_votes_are_drawn_again_in_one_batch():
    backend = TieThenDecideBackend({"a": 1, "b": 2, "c": 5})
    judge = ModelJudge(backend, TEMPLATE, votes=4, seed=11, tie_resamples=3)
    record = {"key": 1, "prompt": "P"}
    a, b, c, d = judge.judge([(record, r) for r in "abcd"])
    # draw 0: all four; draw 1: the tied a, b, c; draw 2: b, c; draw 3: c (still tied: no label)
    assert [len(conversations) for conversations, _ in backend.calls] == [4, 3, 2, 1]
    assert len({params.seed for _, params in backend.calls}) == 4  # each draw samples anew
    assert (a.label, a.resamples, b.label, b.resamples) == (1, 1, 1, 2)
    assert c.label is None and c.tie and c.resamples == 3
    assert d.label == 1 and d.resamples == 0 and d.votes == [1, 1, 1, 1]


def test_ties_kept_without_resampling():
    backend = TieThenDecideBackend({"a": 1})
    [a] = ModelJudge(backend, TEMPLATE, votes=2).judge([({"key": 1, "prompt": "P"}, "a")])
    assert a.tie and a.label is None and len(backend.calls) == 1


# -- templates and the factory --------------------------------------------------------------------
def test_repository_templates_load():
    judge_text = load_template(PROMPTS / "judge.txt", "judge")
    refine_text = load_template(PROMPTS / "refine.txt", "refine")
    assert "Final Judgement: Yes" in judge_text and "Final Judgement: No" in judge_text
    assert "[[start]]" in refine_text and "[[end]]" in refine_text and "Final Refined Output:" in refine_text
    refine_text.format(prompt="p", response="r", critique="c")


def test_template_placeholder_errors_name_the_file(tmp_path):
    path = tmp_path / "refine.txt"
    path.write_text("Instruction: {prompt}\nResponse: {response}\n")
    with pytest.raises(ValueError, match=r"refine\.txt: refine template lacks placeholder\(s\) \{critique\}"):
        load_template(path, "refine")
    path.write_text("{prompt} {response} {answer}")
    with pytest.raises(ValueError, match=r"refine\.txt: judge template has unknown placeholder\(s\) \{answer\}"):
        load_template(path, "judge")
    with pytest.raises(ValueError, match="no such template file"):
        load_template(tmp_path / "missing.txt")


def test_make_judge(tmp_path):
    judge = make_judge("model", backend=ScriptedJudgeBackend(), template_path=PROMPTS / "judge.txt", votes=3)
    assert isinstance(judge, ModelJudge) and judge.params.n == 3
    with pytest.raises(ValueError, match="needs a backend"):
        make_judge("model")
    with pytest.raises(ValueError, match="unknown judge 'oracle'"):
        make_judge("oracle")


# -- the IFEval verifier --------------------------------------------------------------------------
LOWERCASE_NO_COMMA = {"key": 7, "prompt": "Describe a cat in lowercase letters and without commas.",
                      "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
                      "kwargs": [{}, {}]}
SHORT = {"key": 8, "prompt": "Greet me in fewer than 10 words.",
         "instruction_id_list": ["length_constraints:number_words"],
         "kwargs": [{"relation": "less than", "num_words": 10}]}


@pytest.fixture(scope="module")
def verifier():
    return VerifierJudge()


def test_verifier_passing_and_failing(verifier):
    items = [(LOWERCASE_NO_COMMA, "a cat is a small soft animal that sleeps all day"),
             (LOWERCASE_NO_COMMA, "a cat is small, soft and sleepy"),
             (SHORT, "Hello there, friend!"),
             (SHORT, "Hello there my dear friend, it is truly wonderful to meet you today")]
    judgements = verifier.judge(items)
    assert [j.label for j in judgements] == [1, 0, 1, 0]
    assert [j.votes for j in judgements] == [[1], [0], [1], [0]]
    assert [j.value for j in judgements] == [1.0, 0.0, 1.0, 0.0]
    # the same verdicts as IFEval scoring (strict) on the same pairs
    strict = ifeval.score([record for record, _ in items], [response for _, response in items]).per_prompt
    assert [int(p["prompt_strict"]) for p in strict] == [j.label for j in judgements]


def test_verifier_critique_has_a_judgement_shape(verifier):
    passing, failing = verifier.judge([(LOWERCASE_NO_COMMA, "the cat sleeps in the warm sun all afternoon"),
                                       (LOWERCASE_NO_COMMA, "the cat sleeps, eats and then sleeps again in the sun")])
    assert failing.critique == (
        "Step-by-step verification:\n"
        "1. change_case:english_lowercase (Your entire response should be in English, and in all lowercase "
        "letters. No capital letters are allowed.): satisfied\n"
        "2. punctuation:no_comma (In your entire response, refrain from the use of any commas.): not satisfied\n"
        "Final Judgement: No")
    assert passing.critique.endswith("): satisfied\nFinal Judgement: Yes")
    assert [parse_verdict(j.critique) for j in (passing, failing)] == [1, 0]
    assert passing.critiques == [passing.critique] and passing.n_invalid == 0 and not passing.tie


def test_verifier_needs_ifeval_fields(verifier):
    with pytest.raises(ValueError, match=r"prompt key 'free-1' has no instruction_id_list or kwargs"):
        verifier.judge([({"key": "free-1", "prompt": "Write a poem."}, "roses")])


def test_template_prefill_turns_and_joined_verdicts():
    from ifplay.generation.backends import Backend
    from ifplay.judging.judge import ModelJudge
    from ifplay.generation.templates import template_turns

    template = "Judge {prompt} / {response}\n<<<assistant>>>\nFinal Judgement:\n"
    turns = template_turns(template, prompt="P", response="R")
    assert turns == [{"role": "user", "content": "Judge P / R"}, {"role": "assistant", "content": "Final Judgement:"}]
    assert template_turns("Judge {prompt} / {response}", prompt="P", response="R") == [
        {"role": "user", "content": "Judge P / R"}]

    class Continues(Backend):
        def chat(self, conversations, params, progress=None):
            assert all(c[-1]["role"] == "assistant" for c in conversations)
            return [[" Yes", " No", " yes, all met"] for _ in conversations]

    [judgement] = ModelJudge(Continues(), template, votes=3).judge([({"key": 1, "prompt": "P"}, "R")])
    assert judgement.votes == [1, 0, 1] and judgement.label == 1
    assert judgement.critique == "Final Judgement: Yes"
