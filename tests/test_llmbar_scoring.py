"""LLMBar scoring (ifplay.scoring.llmbar): the pointwise expansion on the real data, accuracy and F1
with unlabelled items, the Adversarial and Average rows, the nested k-vote judgements, the majority
against ifplay.judging.judge.vote, and bad data."""

import hashlib
import itertools
import json
import shutil

import pytest

from conftest import shared
from ifplay.evaluation.judge_eval import agreement
from ifplay.judging.judge import vote
from ifplay.scoring import llmbar

PAIRS = {"Natural": 100, "GPTInst": 92, "GPTOut": 47, "Manual": 46, "Neighbor": 134}


@pytest.fixture(scope="module")
def data():
    return shared("llmbar")


@pytest.fixture(scope="module")
def items(data):
    return llmbar.load_items(data)


def raw(data, subset):
    return json.loads((data / llmbar.FILES[subset]).read_text(encoding="utf-8"))


# -- the items ---------------------------------------------------------------------------------------
def test_pointwise_expansion_on_the_real_data(data, items):
    assert len(items) == 838
    assert len({item["key"] for item in items}) == 838
    assert [item["subset"] for item in items] == [s for s in llmbar.SUBSETS for _ in range(2 * PAIRS[s])]
    pairs = {}
    for item in items:
        pairs.setdefault((item["subset"], item["pair"]), []).append(item)
    assert len(pairs) == 419 == sum(PAIRS.values())
    for (subset, index), (first, second) in pairs.items():
        assert (first["output"], second["output"]) == (1, 2)
        assert sorted([first["label"], second["label"]]) == [0, 1]
        assert first["key"] == f"{subset}/{index}/1" and second["key"] == f"{subset}/{index}/2"
        assert first["prompt"] == second["prompt"]
    for subset in llmbar.SUBSETS:
        records = raw(data, subset)
        assert len(records) == PAIRS[subset]
        for index, record in enumerate(records):
            one, two = pairs[(subset, index)]
            assert one["prompt"] == record["input"]
            assert (one["response"], two["response"]) == (record["output_1"], record["output_2"])
            better = int(record["label"])
            assert (one["label"], two["label"]) == ((1, 0) if better == 1 else (0, 1))
    # both labels occur in every subset, so "label 2" pairs are really exercised
    second_better = [(s, i) for (s, i), (one, two) in pairs.items() if two["label"] == 1]
    assert {s for s, _ in second_better} == set(llmbar.SUBSETS)
    assert len(second_better) == sum(int(r["label"]) == 2 for s in llmbar.SUBSETS for r in raw(data, s))


def test_limit_takes_the_first_pairs_of_each_subset(data, items):
    limited = llmbar.load_items(data, limit=3)
    assert len(limited) == 5 * 3 * 2
    assert limited == [item for item in items if item["pair"] < 3]
    assert llmbar.load_items(data, limit=1000) == items
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            llmbar.load_items(data, limit=bad)


def test_labels_as_strings_or_ints(data, items, tmp_path):
    for subset in llmbar.SUBSETS:
        records = [{**r, "label": str(r["label"])} for r in raw(data, subset)]
        (tmp_path / llmbar.FILES[subset]).write_text(json.dumps(records), encoding="utf-8")
    assert llmbar.load_items(tmp_path) == items


def test_data_fingerprint(data, tmp_path):
    fingerprint = llmbar.data_fingerprint(data)
    assert list(fingerprint) == ["files"]
    assert sorted(fingerprint["files"]) == sorted(f"{s}.json" for s in llmbar.SUBSETS)
    for name, digest in fingerprint["files"].items():
        assert digest == hashlib.sha256((data / name).read_bytes()).hexdigest()
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    assert llmbar.data_fingerprint(copy) == fingerprint  # content, not place
    (copy / "Manual.json").unlink()
    with pytest.raises(llmbar.LLMBarDataError, match="Manual.json: no such file"):
        llmbar.data_fingerprint(copy)


@pytest.fixture
def corrupt(data, tmp_path):
    """Write a corrupted copy: ``corrupt(subset, text_or_records)`` -> the copy's directory."""
    copy = tmp_path / "llmbar"
    shutil.copytree(data, copy)

    def write(subset, content):
        text = content if isinstance(content, str) else json.dumps(content)
        (copy / llmbar.FILES[subset]).write_text(text, encoding="utf-8")
        return copy

    return write


def test_load_errors_name_the_file_and_the_pair(data, corrupt):
    records = raw(data, "GPTOut")

    def with_pair(index, **change):
        changed = [dict(r) for r in records]
        changed[index].update(change)
        for name, value in change.items():
            if value is ...:
                del changed[index][name]
        return changed

    cases = [
        ({"input": records[0]["input"]}, r"GPTOut\.json: expected a non-empty JSON list of pairs, got dict"),
        ([], r"GPTOut\.json: expected a non-empty JSON list of pairs, got an empty list"),
        ("[{", r"GPTOut\.json:1: not valid JSON"),
        (records[:2] + ["text"], r"GPTOut\.json: pair 2: expected a JSON object, got str"),
        (with_pair(5, label=...), r"GPTOut\.json: pair 5: missing field\(s\) 'label'"),
        (with_pair(6, output_2=...), r"GPTOut\.json: pair 6: missing field\(s\) 'output_2'"),
        (with_pair(7, label=3), r"GPTOut\.json: pair 7: label must be 1 or 2 .* got 3"),
        (with_pair(7, label="B"), r"GPTOut\.json: pair 7: label must be 1 or 2 .* got 'B'"),
        (with_pair(7, label=True), r"GPTOut\.json: pair 7: label must be 1 or 2 .* got True"),
        (with_pair(8, input=" \n"), r"GPTOut\.json: pair 8: empty input"),
        (with_pair(9, output_1=None), r"GPTOut\.json: pair 9: field 'output_1' must be a string"),
    ]
    for content, message in cases:
        copy = corrupt("GPTOut", content)
        with pytest.raises(llmbar.LLMBarDataError, match=message):
            llmbar.load_items(copy)
        with pytest.raises(llmbar.LLMBarDataError, match=message):
            llmbar.load_items(copy, limit=1)  # a limit does not skip the checks
    copy = corrupt("GPTOut", records)  # the good file back: the missing one is named
    (copy / "Neighbor.json").unlink()
    with pytest.raises(llmbar.LLMBarDataError, match=r"Neighbor\.json: no such file"):
        llmbar.load_items(copy)
    assert issubclass(llmbar.LLMBarDataError, llmbar.RecordError)


# -- metrics -----------------------------------------------------------------------------------------
# Per subset: (true label, judged label, reason) of each item; judged None = unlabelled.
EXAMPLE = {
    "Natural": [(1, 1, None), (0, 0, None), (1, 0, None), (0, None, "invalid")],
    "GPTInst": [(1, 1, None), (0, 1, None)],
    "GPTOut": [(1, None, "tied"), (0, 0, None)],
    "Manual": [(1, 1, None), (0, 0, None)],
    "Neighbor": [(1, 0, None), (0, 1, None), (1, None, "invalid"), (0, None, "tied")],
}


def example(subsets=llmbar.SUBSETS):
    items, labels, reasons = [], {}, {}
    for subset in subsets:
        for index, (truth, judged, reason) in enumerate(EXAMPLE[subset]):
            key = f"{subset}/{index // 2}/{index % 2 + 1}"
            items.append({"key": key, "subset": subset, "label": truth})
            labels[key] = judged
            if reason:
                reasons[key] = reason
    return items, labels, reasons


def test_accuracy_and_f1_with_unlabelled_items():
    items, labels, reasons = example()
    rows = {row["subset"]: row for row in llmbar.subset_metrics(items, labels, reasons)}
    # Natural: right on items 0 and 1, wrong on 2, item 3 unlabelled (wrong): accuracy 2/4.
    # tp = 1 (item 0), fp = 0, fn = 1 (item 2): precision 1, recall 1/2, F1 2/3.
    natural = rows["Natural"]
    assert natural == pytest.approx({"subset": "Natural", "items": 4, "unlabelled": 1, "invalid": 1, "tied": 0,
                                     "accuracy": 50.0, "precision": 100.0, "recall": 50.0, "f1": 200 / 3})
    # GPTInst: one false positive: precision 1/2, recall 1, F1 2/3, accuracy 1/2.
    assert rows["GPTInst"] == pytest.approx({"subset": "GPTInst", "items": 2, "unlabelled": 0, "invalid": 0, "tied": 0,
                                             "accuracy": 50.0, "precision": 50.0, "recall": 100.0, "f1": 200 / 3})
    # GPTOut: the positive item is unlabelled (a tie): a false negative, no true positive: F1 0.
    assert rows["GPTOut"] == pytest.approx({"subset": "GPTOut", "items": 2, "unlabelled": 1, "invalid": 0, "tied": 1,
                                            "accuracy": 50.0, "precision": 0.0, "recall": 0.0, "f1": 0.0})
    assert rows["Manual"] == pytest.approx({"subset": "Manual", "items": 2, "unlabelled": 0, "invalid": 0, "tied": 0,
                                            "accuracy": 100.0, "precision": 100.0, "recall": 100.0, "f1": 100.0})
    # Neighbor: every item wrong; the unlabelled positive is a false negative, never a true positive.
    assert rows["Neighbor"] == pytest.approx({"subset": "Neighbor", "items": 4, "unlabelled": 2, "invalid": 1,
                                              "tied": 1, "accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0})
    # the same figures as judge_eval.agreement (which ifplay.scoring cannot import), in percent
    for subset in llmbar.SUBSETS:
        members = [item for item in items if item["subset"] == subset]
        theirs = agreement([labels[item["key"]] for item in members], [item["label"] for item in members])
        for column in ("accuracy", "precision", "recall", "f1"):
            assert rows[subset][column] == pytest.approx(100 * theirs[column])
        assert rows[subset]["unlabelled"] == theirs["unlabelled"]


def test_adversarial_and_average_rows_are_unweighted_means():
    items, labels, reasons = example()
    rows = llmbar.subset_metrics(items, labels, reasons)
    assert [row["subset"] for row in rows] == [*llmbar.SUBSETS, "Adversarial", "Average"]
    adversarial, average = rows[-2], rows[-1]
    # accuracy: GPTInst 50, GPTOut 50, Manual 100, Neighbor 0 -> 200 / 4 = 50 (pooled over the 10
    # items it would be 4 / 10 = 40); F1: 200/3, 0, 100, 0 -> (500/3) / 4 = 125/3.
    # precision 50, 0, 100, 0 -> 37.5; recall 100, 0, 100, 0 -> 50.
    assert adversarial == pytest.approx({"subset": "Adversarial", "items": 10, "unlabelled": 3, "invalid": 1,
                                         "tied": 2, "accuracy": 50.0, "f1": 125 / 3, "precision": 37.5,
                                         "recall": 50.0})
    # Average over the five: accuracy (50 + 50 + 50 + 100 + 0) / 5 = 50; F1 (200/3 + 200/3 + 0 + 100 + 0) / 5
    # = 140/3; precision (100 + 50 + 0 + 100 + 0) / 5 = 50; recall (50 + 100 + 0 + 100 + 0) / 5 = 50.
    # Not the mean of Natural and Adversarial: that F1 would be (200/3 + 125/3) / 2 = 325/6.
    assert average == pytest.approx({"subset": "Average", "items": 14, "unlabelled": 4, "invalid": 2, "tied": 2,
                                     "accuracy": 50.0, "f1": 140 / 3, "precision": 50.0, "recall": 50.0})


def test_rows_for_the_subsets_present_only():
    items, labels, reasons = example(("Natural", "Manual"))
    assert [row["subset"] for row in llmbar.subset_metrics(items, labels, reasons)] == ["Natural", "Manual"]
    items, labels, reasons = example(llmbar.ADVERSARIAL)
    assert [row["subset"] for row in llmbar.subset_metrics(items, labels, reasons)] == [*llmbar.ADVERSARIAL,
                                                                                         "Adversarial"]
    items, labels, reasons = example(("Manual", "Natural"))  # rows in SUBSETS order, whatever the items'
    assert [row["subset"] for row in llmbar.subset_metrics(items, labels, reasons)] == ["Natural", "Manual"]


def test_without_reasons_the_causes_are_unknown():
    items, labels, _ = example()
    rows = llmbar.subset_metrics(items, labels)
    assert all(row["invalid"] is None and row["tied"] is None for row in rows)
    assert [row["unlabelled"] for row in rows] == [1, 0, 1, 0, 2, 3, 4]


def test_metrics_reject_inconsistent_input():
    items, labels, reasons = example()
    with pytest.raises(ValueError, match="no judged label for item 'Natural/0/1'"):
        llmbar.subset_metrics(items, {k: v for k, v in labels.items() if k != "Natural/0/1"}, reasons)
    with pytest.raises(ValueError, match="judged label must be 1, 0 or None"):
        llmbar.subset_metrics(items, {**labels, "Natural/0/1": 2}, reasons)
    with pytest.raises(ValueError, match="'Natural/1/2' is unlabelled"):
        llmbar.subset_metrics(items, labels, {k: v for k, v in reasons.items() if k != "Natural/1/2"})
    with pytest.raises(ValueError, match="'Natural/0/1' has label 1 and an unlabelled reason"):
        llmbar.subset_metrics(items, labels, {**reasons, "Natural/0/1": "tied"})
    with pytest.raises(ValueError, match="appears twice"):
        llmbar.subset_metrics(items + items[:1], labels, reasons)
    with pytest.raises(ValueError, match="unknown subset"):
        llmbar.subset_metrics([{"key": "x", "subset": "Other", "label": 1}], {"x": 1})
    # labels of other items are ignored
    assert llmbar.subset_metrics(items[:4], labels, reasons) == llmbar.subset_metrics(items, labels, reasons)[:1]


def test_a_perfect_judge_on_the_real_items(items):
    rows = llmbar.subset_metrics(items, {item["key"]: item["label"] for item in items}, {})
    assert [row["items"] for row in rows] == [2 * PAIRS[s] for s in llmbar.SUBSETS] + [2 * 319, 838]
    assert all(row["accuracy"] == row["f1"] == 100.0 and row["unlabelled"] == 0 for row in rows)
    always_yes = llmbar.subset_metrics(items, {item["key"]: 1 for item in items}, {})
    # every subset is half positive: accuracy 50, precision 50, recall 100, F1 2/3
    assert all(row["accuracy"] == 50.0 and row["f1"] == pytest.approx(200 / 3) for row in always_yes)


# -- votes -------------------------------------------------------------------------------------------
def test_majority_and_its_reasons():
    assert llmbar.majority([1, 1, 0]) == 1
    assert llmbar.majority([0, None, 0, 1]) == 0
    assert llmbar.majority([1, 0]) is None and llmbar.unlabelled_reason([1, 0]) == "tied"
    assert llmbar.majority([None, None]) is None and llmbar.unlabelled_reason([None, None]) == "invalid"
    assert llmbar.majority([]) is None and llmbar.unlabelled_reason([]) == "invalid"
    assert llmbar.unlabelled_reason([1, None]) is None
    with pytest.raises(ValueError, match="1, 0 or None"):
        llmbar.majority([1, 2])


TEXTS = {1: "The response follows it.\nFinal Judgement: Yes", 0: "Final Judgement: No",
         None: "I cannot decide."}


def test_majority_agrees_with_the_judges_vote():
    for n in range(1, 6):
        for verdicts in itertools.product((1, 0, None), repeat=n):
            judged = vote([TEXTS[v] for v in verdicts])
            assert judged.votes == list(verdicts)
            assert llmbar.majority(list(verdicts)) == judged.label, verdicts
            reason = llmbar.unlabelled_reason(list(verdicts))
            assert (reason == "tied") == judged.tie
            assert (reason == "invalid") == (judged.n_invalid == n)


def test_the_k_vote_judgement_uses_the_first_k_votes():
    votes = [1, 1, 0, 0, 0]
    assert [llmbar.judgement_at(votes, k) for k in (1, 2, 3, 4, 5)] == [1, 1, 1, None, 0]
    assert llmbar.judgement_at([0, 1, 1, 1, 1], 1) == 0  # k = 1 is the first vote
    assert llmbar.judgement_at([0, 1, 1, 1, 1], 3) == 1
    assert llmbar.judgement_at([1, 0, None, 0, 0], 3) is None  # tied among the first three
    assert llmbar.judgement_at([None, None, None, 1, 1], 3) is None  # no valid vote among them
    assert llmbar.judgement_at([None, None, None, 1, 1], 5) == 1
    with pytest.raises(ValueError, match="5 votes needed, only 3 drawn"):
        llmbar.judgement_at([1, 1, 1], 5)
    with pytest.raises(ValueError, match="k must be"):
        llmbar.judgement_at([1, 1, 1], 0)


def test_votes_table_is_nested():
    items, _, _ = example()
    keys = [item["key"] for item in items]
    truth = {item["key"]: item["label"] for item in items}
    # every item: its first vote right, votes 2-3 wrong, votes 4-5 invalid
    votes = {key: [truth[key], 1 - truth[key], 1 - truth[key], None, None] for key in keys}
    greedy = {key: None if index % 7 == 0 else truth[key] for index, key in enumerate(keys)}
    table = llmbar.votes_table(items, greedy, votes, [1, 3, 5])
    assert [row["votes"] for row in table] == ["greedy"] * 7 + [1] * 7 + [3] * 7 + [5] * 7
    rows = {(row["votes"], row["subset"]): row for row in table}
    assert all(rows[(1, s)]["accuracy"] == 100.0 for s in llmbar.SUBSETS)
    assert all(rows[(3, s)]["accuracy"] == 0.0 and rows[(3, s)]["unlabelled"] == 0 for s in llmbar.SUBSETS)
    assert rows[(5, "Average")]["accuracy"] == 0.0  # 1 right, 2 wrong, 2 invalid: the wrong label wins
    # greedy: items 0 and 7 (Natural/0/1, GPTOut/0/2) have an invalid verdict, the rest are right
    assert rows[("greedy", "Natural")]["unlabelled"] == rows[("greedy", "Natural")]["invalid"] == 1
    assert rows[("greedy", "GPTOut")]["accuracy"] == 50.0
    assert rows[("greedy", "Average")]["tied"] == 0 and rows[("greedy", "Average")]["unlabelled"] == 2
    # the votes beyond k do not change the k rows
    changed = {key: v[:3] + [truth[key], truth[key]] for key, v in votes.items()}
    again = llmbar.votes_table(items, None, changed, [1, 3, 5])
    assert again[:14] == table[7:21]
    assert all(row["accuracy"] == 100.0 for row in again[14:])
    # ties and all-invalid votes at k are counted by cause
    tied = {key: [1, 0, None, None] for key in keys}
    tied[keys[0]] = [None, None, None, 1]
    row = llmbar.votes_table(items, None, tied, [3])[-1]
    assert (row["votes"], row["subset"], row["unlabelled"], row["tied"], row["invalid"]) == (3, "Average", 14, 13, 1)


def test_votes_table_checks_the_votes():
    items, labels, _ = example()
    votes = {item["key"]: [1, 1, 1] for item in items}
    with pytest.raises(ValueError, match="'Natural/0/1': 5 votes needed, only 3 drawn"):
        llmbar.votes_table(items, None, votes, [1, 5])
    with pytest.raises(ValueError, match="no votes for item 'Natural/0/1'"):
        llmbar.votes_table(items, None, {k: v for k, v in votes.items() if k != "Natural/0/1"}, [1])
    with pytest.raises(ValueError, match="no greedy verdict"):
        llmbar.votes_table(items, {}, votes, [1])
    with pytest.raises(ValueError, match="k must be"):
        llmbar.votes_table(items, None, votes, [0])
    assert llmbar.votes_table(items, None, votes, []) == []
