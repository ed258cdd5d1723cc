"""The refiner as a judge: agreement metrics against the verifier oracle."""

import json

import pytest

from conftest import CORES, planned_settings, run
from ifplay.judging.judge import ModelJudge, VerifierJudge
from ifplay.evaluation.judge_eval import agreement, evaluate_judge
from ifplay.core.records import read_jsonl, write_jsonl
from test_judge import TEMPLATE, ScriptedJudgeBackend

LOWER = {"key": 1, "prompt": "Answer in lowercase only.", "instruction_id_list": ["change_case:english_lowercase"],
         "kwargs": [{}]}


class CaseBlindJudgeBackend(ScriptedJudgeBackend):
    def chat(self, conversations, params, progress=None):
        upper = [[{**m, "content": m["content"].upper()} for m in c] for c in conversations]
        return super().chat(upper, params, progress)


def test_agreement_counts_and_rates():
    labels = [1, 1, 0, 0, None, 1]
    oracle = [1, 0, 0, 1, 1, 1]
    m = agreement(labels, oracle)
    assert (m["responses"], m["oracle_yes"], m["judged_yes"], m["judged_no"], m["unlabelled"]) == (6, 4, 3, 2, 1)
    assert m["accuracy"] == pytest.approx(3 / 6)  # the unlabelled one counts as wrong
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))


def test_agreement_without_positives_is_zero_not_an_error():
    m = agreement([0, None], [0, 0])
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="2 judged labels but 1 oracle"):
        agreement([0, 1], [0])


def test_evaluate_judge_against_the_verifier(tmp_path):
    prompts, responses, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl", tmp_path / "judged.jsonl"
    write_jsonl(prompts, [LOWER])
    # the scripted judge says Yes iff "good" appears (any case); the oracle says Yes iff all lowercase
    texts = ["good and lowercase", "GOOD BUT UPPER", "plain lowercase", "NOT UPPER"]
    write_jsonl(responses, [{"key": 1, "sample": i, "prompt": LOWER["prompt"], "response": t}
                            for i, t in enumerate(texts)])
    result = evaluate_judge(str(prompts), str(responses), str(out),
                            ModelJudge(CaseBlindJudgeBackend(), TEMPLATE, votes=3), VerifierJudge())
    assert [i["label"] for i in result["per_item"]] == [1, 1, 0, 0]
    assert [i["oracle"] for i in result["per_item"]] == [1, 0, 1, 0]
    m = result["metrics"]
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert result["votes"]["votes"] == 12
    assert len(read_jsonl(out)) == 4


@pytest.mark.slow
def test_judge_eval_cli_with_the_real_model(tmp_path, smollm2):
    prompts, responses = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_jsonl(prompts, [LOWER])
    write_jsonl(responses, [{"key": 1, "sample": i, "prompt": LOWER["prompt"], "response": t}
                            for i, t in enumerate(["all lowercase words", "UPPER CASE WORDS"])])
    settings = planned_settings("judge_eval", config={"judge": {"votes": 3, "max_new_tokens": 8}})  # judge_verdict_first
    cmd = ["ifplay", "judge-eval", "--prompts", str(prompts), "--responses", str(responses), "--refiner", str(smollm2),
           "--out", str(tmp_path / "judged.jsonl"), "--metrics", str(tmp_path / "m.json"),
           "--per-item", str(tmp_path / "items.jsonl"), "--settings", settings, "--threads", str(CORES)]
    run(cmd)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["metrics"]["responses"] == 2 and metrics["metrics"]["oracle_yes"] == 1
    assert metrics["votes"]["votes"] >= 6
    assert [i["oracle"] for i in read_jsonl(tmp_path / "items.jsonl")] == [1, 0]
