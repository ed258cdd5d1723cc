"""SPaR data construction: judging, negative mining, DPO pairs, RFT mix, interference statistics."""

import dataclasses

from ifplay.judging.judge import VerifierJudge, vote
from ifplay.core.records import write_jsonl
from ifplay.spar.stages import (RFTMix, build_training_data, edit_similarity, independent_pairs, judge_responses,
                         judgement_counts, mine_negatives, pair_statistics)

JUDGE_T = "J: {prompt} || {response}"
REFINE_T = "R: {prompt} || {response} || {critique}"
SPAR_MIX = RFTMix(refinements=4000, tree_judgements_positive=1500, tree_judgements_negative=1000,
                  sample_judgements_yes=2500, sample_judgements_no=500, total=9500)  # SPaR's official caps
LOWER = {"key": 1, "prompt": "Answer in lowercase only.", "instruction_id_list": ["change_case:english_lowercase"],
         "kwargs": [{}]}


def judged(key, sample, response, votes, prompt="p"):
    j = vote([f"crit {sample}: Final Judgement: {'Yes' if v == 1 else 'No' if v == 0 else '?'}" for v in votes])
    return {"id": f"{key}/{sample}", "key": key, "sample": sample, "prompt": prompt, "response": response, **j.to_json()}


def node(i, parent, response, votes=None, refinement=None):
    j = vote([f"c{i}: Final Judgement: {'Yes' if v else 'No'}" for v in votes]).to_json() if votes else None
    return {"id": i, "parent": parent, "depth": 0 if parent is None else 1, "response": response,
            "critique": f"critique of {i}", "judgement": j, "refinement": refinement,
            "value": j["value"] if j else 0.0}


def tree(key, success, nodes, best, path):
    return {"key": key, "prompt": {"key": key, "prompt": f"prompt {key}"}, "success": success, "stop_reason": "x",
            "best": best, "path": path, "nodes": nodes, "nodes_expanded": 1, "backend_calls": 1,
            "invalid_refinements": 0}


def test_judge_responses_with_verifier_and_resume(tmp_path):
    prompts, responses, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl", tmp_path / "j.jsonl"
    write_jsonl(prompts, [LOWER])
    write_jsonl(responses, [{"key": 1, "sample": 0, "prompt": LOWER["prompt"], "response": "all lowercase here"},
                            {"key": 1, "sample": 1, "prompt": LOWER["prompt"], "response": "Not Lowercase"}])
    records = judge_responses(str(prompts), str(responses), str(out), VerifierJudge(), chunk=1)
    assert [r["label"] for r in records] == [1, 0]
    assert "Final Judgement: No" in records[1]["critique"]
    counts = judgement_counts(records)
    assert counts == {"prompts": 1, "responses": 2, "votes": 2, "invalid_votes": 0, "labelled_yes": 1,
                      "labelled_no": 1, "unlabelled": 0, "ties": 0, "tie_resampled": 0}


def test_mine_negatives_one_per_prompt_seeded():
    records = [judged(1, 0, "a", [0, 0, 1]), judged(1, 1, "b", [0, 0, 0]), judged(1, 2, "c", [1, 1, 1]),
               judged(2, 0, "d", [1, 1, 0]), judged(3, 0, "e", [None, None, None])]
    prompts = {k: {"key": k, "prompt": "p"} for k in (1, 2, 3)}
    roots = mine_negatives(records, prompts, per_prompt=1, seed=0)
    assert len(roots) == 1 and roots[0]["key"] in ("1/0", "1/1")
    assert roots == mine_negatives(records, prompts, per_prompt=1, seed=0)
    assert len(mine_negatives(records, prompts, per_prompt=5)) == 2
    assert roots[0]["critique"].startswith("crit")


def test_training_data_pairs_and_rft_mix():
    trees = [
        tree("1/0", True, [node(0, None, "orig one"), node(1, 0, "refined one", [1, 1, 0], "refine text 1")], 1, [0, 1]),
        tree("2/0", False, [node(0, None, "orig two"), node(1, 0, "worse", [0, 0, 1], "refine text 2")], 0, [0]),
        tree("3/0", True, [node(0, None, "same"), node(1, 0, "same", [1, 1, 1], "r")], 1, [0, 1]),
    ]
    samples = [judged(1, 0, "x", [1, 1, 0]), judged(1, 1, "y", [0, 0, 1]), judged(2, 0, "z", [1, 1, 1])]
    pairs, rft, counts = build_training_data(samples, trees, JUDGE_T, REFINE_T, SPAR_MIX)
    assert pairs == [{"prompt": [{"role": "user", "content": "prompt 1/0"}],
                      "chosen": [{"role": "assistant", "content": "refined one"}],
                      "rejected": [{"role": "assistant", "content": "orig one"}], "key": "1/0"}]
    assert counts["dpo_pairs"] == 1  # tree 3 refined to an identical response: no pair
    assert counts["rft_refinement"] == 2  # trees 1 and 3 (success paths)
    assert counts["rft_tree_judgement_yes"] == 1 and counts["rft_tree_judgement_no"] == 1
    assert counts["rft_sample_judgement_yes"] == 1 and counts["rft_sample_judgement_no"] == 1  # unanimous one dropped
    demo = next(item for item in rft if item["kind"] == "refinement" and "orig one" in item["messages"][0]["content"])
    assert demo["messages"][0]["content"] == "R: prompt 1/0 || orig one || critique of 0"
    assert demo["messages"][1] == {"role": "assistant", "content": "refine text 1"}
    _, capped, counts = build_training_data(samples, trees, JUDGE_T, REFINE_T,
                                        dataclasses.replace(SPAR_MIX, refinements=1, total=3))
    assert counts["rft_refinement"] <= 1 and len(capped) == 3


def test_interference_statistics():
    assert edit_similarity("a b c d", "a b c d") == 1.0
    assert edit_similarity("a b c d", "a x c d") == 0.75
    assert edit_similarity("", "") == 1.0
    samples = [judged(1, 0, "the cat sat on the mat", [1, 1, 1]), judged(1, 1, "dogs bark loudly at night", [0, 0, 0]),
               judged(2, 0, "only yes", [1, 1, 1])]
    independent = independent_pairs(samples)
    assert len(independent) == 1 and independent[0]["chosen"][0]["content"] == "the cat sat on the mat"
    refined = [{"chosen": [{"content": "the cat sat on the mat"}], "rejected": [{"content": "the cat sat on a mat"}]}]
    spar_stats, indep_stats = pair_statistics(refined), pair_statistics(independent)
    assert spar_stats["median_edit_similarity"] > indep_stats["median_edit_similarity"]
    assert spar_stats["mean_length_difference_words"] == 0.0
    assert pair_statistics([]) == {"pairs": 0, "median_edit_similarity": None, "mean_length_difference_words": None}
