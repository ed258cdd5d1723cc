"""LLMBar scoring: a judge's verdicts on LLMBar's responses, SPaR's way (accuracy and F1 per subset).

LLMBar (Zeng et al. 2024, "Evaluating Large Language Models at Evaluating Instruction Following";
github princeton-nlp/LLMBar, MIT) is a meta-evaluation set of 419 pairwise items: an instruction
(``input``), two outputs (``output_1``, ``output_2``) and ``label`` (1 or 2: the output that follows
the instruction better). Five subsets, one file each (:data:`FILES`): Natural (100 pairs) and the
four Adversarial ones, GPTInst (92), GPTOut (47), Manual (46) and Neighbor (134), whose worse output
is built to look good (:data:`ADVERSARIAL`).

SPaR (Cheng et al. 2024, arXiv 2412.11605; its Tables 2, 5, 8 and 9) uses LLMBar to measure the
refiner as a *judge* of single responses, not as a pairwise ranker:

* Pointwise expansion (:func:`load_items`). Every pair gives two items: the labelled output, whose
  true label is 1 ("follows the instruction"), and the other output, label 0 ("does not follow").
  That is 838 items. The judge judges each item alone: instruction = the pair's ``input``,
  response = the output's text. Item keys are ``"{subset}/{pair}/{output}"``: ``pair`` is the
  pair's 0-based position in its file, ``output`` 1 or 2.
* Metrics (:func:`subset_metrics`), per subset: accuracy, and F1 with "follows" (1) as the positive
  class (with its precision and recall), all in percent, unrounded.
* Unlabelled items. A judgement may have no label: every vote invalid (reason ``"invalid"``) or the
  valid votes tie, as many yes as no (reason ``"tied"``). Such an item counts as a wrong answer in
  accuracy and as not-positive in precision and recall: never a true or false positive, a false
  negative when its true label is 1. This is the rule of
  :func:`ifplay.evaluation.judge_eval.agreement` (the refiner against the verifier oracle). That
  function cannot be imported here: ``ifplay.evaluation`` and ``ifplay.judging`` both import
  ``ifplay.scoring``, so importing either from this module would make a cycle between subpackages
  (``tests/test_imports.py`` forbids it). :func:`_agreement` is the same computation, and
  ``tests/test_llmbar_scoring.py`` checks that both give the same figures.
* Derived rows. "Adversarial" is the unweighted mean of the four adversarial subsets' figures
  (accuracy, F1, precision, recall: the mean of the subset percentages, as the paper's table
  has it, not a figure pooled over their 638 items), "Average" the unweighted mean over all five
  subsets (Natural and the four adversarial ones; not the mean of Natural and Adversarial). Their
  ``items``, ``unlabelled``, ``invalid`` and ``tied`` are the subsets' sums.
* Majority of k (Table 9; :func:`judgement_at`, :func:`votes_table`). Each item has one list of
  sampled votes (1, 0 or ``None`` for an invalid one), drawn once for the largest k. The k-vote
  judgement is the majority of the FIRST k votes, so the judgements at k = 1, 3, 5 ... are nested
  (k = 3 reuses k = 1's vote and adds two). The majority (:func:`majority`) is that of
  :func:`ifplay.judging.judge.vote`: the label the valid votes agree on more often; a tie, or no
  valid vote, leaves the item unlabelled (no re-drawing here: a tie at k stays a tie). Beside the
  k-vote rows a ``"greedy"`` row scores one vote per item at temperature 0, a separate verdict.

Pure logic: no model, no files but LLMBar's own. Stages that judge the items build on it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ifplay.core.records import RecordError
from ifplay.core.sources import file_sha256

SUBSETS = ("Natural", "GPTInst", "GPTOut", "Manual", "Neighbor")
ADVERSARIAL = ("GPTInst", "GPTOut", "Manual", "Neighbor")
FILES = {subset: f"{subset}.json" for subset in SUBSETS}
FIELDS = ("input", "output_1", "output_2", "label")
#: The causes of an unlabelled judgement (the values of ``reasons``).
REASONS = ("invalid", "tied")
#: The figures of a row that are percentages (the derived rows average them).
PERCENT_COLUMNS = ("accuracy", "f1", "precision", "recall")


class LLMBarDataError(RecordError):
    """An LLMBar data file is missing or malformed; the message names the file and the pair index."""


# -- the items ---------------------------------------------------------------------------------------
def load_items(data_dir: str | Path, limit: int | None = None) -> list[dict]:
    """The pointwise items of the five files of ``data_dir``: for each pair, output 1 then output 2,
    each ``{"key", "subset", "pair", "output", "prompt", "response", "label"}`` (label 1 for the
    pair's labelled output, else 0); in :data:`SUBSETS` order, then pair order. ``limit``: only the
    first N pairs of each subset (None: all). Every file is read and checked whole, whatever
    ``limit`` is."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of pairs per subset or None, not {limit!r}")
    items: list[dict] = []
    for subset in SUBSETS:
        for index, pair in enumerate(_read_pairs(Path(data_dir) / FILES[subset])[:limit]):
            better = pair["label"]
            for output in (1, 2):
                items.append({"key": f"{subset}/{index}/{output}", "subset": subset, "pair": index,
                              "output": output, "prompt": pair["input"], "response": pair[f"output_{output}"],
                              "label": int(output == better)})
    return items


def _read_pairs(path: Path) -> list[dict]:
    """A subset file's pairs, checked, with ``label`` as the int 1 or 2."""
    if not path.is_file():
        raise LLMBarDataError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f":{err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise LLMBarDataError(f"{path}{where}: not valid JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise LLMBarDataError(f"{path}: expected a non-empty JSON list of pairs, got "
                              f"{'an empty list' if isinstance(data, list) else type(data).__name__}")
    pairs = []
    for index, record in enumerate(data):
        where = f"{path}: pair {index}"
        if not isinstance(record, dict):
            raise LLMBarDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        missing = [name for name in FIELDS if name not in record]
        if missing:
            raise LLMBarDataError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
        for name in ("input", "output_1", "output_2"):
            if not isinstance(record[name], str):
                raise LLMBarDataError(f"{where}: field {name!r} must be a string, got {type(record[name]).__name__}")
        if not record["input"].strip():
            raise LLMBarDataError(f"{where}: empty input (no instruction to judge against)")
        label = record["label"]
        if isinstance(label, bool) or label not in (1, 2, "1", "2"):
            raise LLMBarDataError(f"{where}: label must be 1 or 2 (the better output), got {label!r}")
        pairs.append({**record, "label": int(label)})
    return pairs


def data_fingerprint(data_dir: str | Path) -> dict:
    """``{"files": {file name: sha256}}`` of the five subset files (content only, not their place)."""
    files = {}
    for subset in SUBSETS:
        path = Path(data_dir) / FILES[subset]
        if not path.is_file():
            raise LLMBarDataError(f"{path}: no such file")
        files[FILES[subset]] = file_sha256(path)
    return {"files": files}


# -- votes -------------------------------------------------------------------------------------------
def _counts(verdicts: list[int | None]) -> tuple[int, int]:
    for verdict in verdicts:
        if verdict is not None and (isinstance(verdict, bool) or verdict not in (0, 1)):
            raise ValueError(f"a vote verdict is 1, 0 or None (invalid), not {verdict!r}")
    return sum(v == 1 for v in verdicts), sum(v == 0 for v in verdicts)


def majority(verdicts: list[int | None]) -> int | None:
    """The majority label of the valid verdicts (1 or 0); None when they tie or none is valid.
    The rule of :func:`ifplay.judging.judge.vote` (which parses judge texts first)."""
    yes, no = _counts(verdicts)
    return None if yes == no else int(yes > no)


def unlabelled_reason(verdicts: list[int | None]) -> str | None:
    """Why :func:`majority` gives no label: ``"invalid"`` (no valid verdict), ``"tied"`` (as many
    yes as no, at least one each), or None when it gives one."""
    yes, no = _counts(verdicts)
    if yes != no:
        return None
    return "tied" if yes else "invalid"


def judgement_at(votes: list[int | None], k: int) -> int | None:
    """The k-vote judgement: :func:`majority` of the first ``k`` votes (ValueError if fewer)."""
    _check_k(k)
    if len(votes) < k:
        raise ValueError(f"{k} votes needed, only {len(votes)} drawn")
    return majority(votes[:k])


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive number of votes, not {k!r}")


# -- metrics -----------------------------------------------------------------------------------------
def _agreement(labels: list[int | None], truths: list[int]) -> dict:
    """Accuracy, precision, recall and F1 (fractions), positive = 1, an unlabelled item wrong and
    not-positive: :func:`ifplay.evaluation.judge_eval.agreement`'s computation (see the module doc)."""
    tp = sum(label == 1 and truth == 1 for label, truth in zip(labels, truths))
    fp = sum(label == 1 and truth == 0 for label, truth in zip(labels, truths))
    fn = sum(label != 1 and truth == 1 for label, truth in zip(labels, truths))
    correct = sum(label == truth for label, truth in zip(labels, truths))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": correct / len(labels) if labels else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def subset_metrics(items: list[dict], labels: dict[str, int | None],
                   reasons: dict[str, str] | None = None) -> list[dict]:
    """One row per subset present in ``items`` (in :data:`SUBSETS` order), then "Adversarial" (when
    all four adversarial subsets are present) and "Average" (when all five are).

    ``labels``: the judged label (1, 0 or None) of every item's key (keys of other items are
    ignored). ``reasons``: for every unlabelled item, ``"invalid"`` or ``"tied"``; without it the
    rows' ``invalid`` and ``tied`` are None. A row: ``subset``, ``items``, ``unlabelled``,
    ``invalid``, ``tied`` (counts), ``accuracy``, ``f1``, ``precision``, ``recall`` (percent)."""
    by_subset: dict[str, list[dict]] = {}
    seen: set[str] = set()
    for item in items:
        key = item["key"]
        if key in seen:
            raise ValueError(f"item {key!r} appears twice")
        seen.add(key)
        if item["subset"] not in SUBSETS:
            raise ValueError(f"item {key!r}: unknown subset {item['subset']!r} (LLMBar's: {', '.join(SUBSETS)})")
        if isinstance(item["label"], bool) or item["label"] not in (0, 1):
            raise ValueError(f"item {key!r}: true label must be 1 or 0, not {item['label']!r}")
        if key not in labels:
            raise ValueError(f"no judged label for item {key!r}")
        label = labels[key]
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise ValueError(f"item {key!r}: judged label must be 1, 0 or None, not {label!r}")
        if reasons is not None:
            reason = reasons.get(key)
            if label is None and reason not in REASONS:
                raise ValueError(f"item {key!r} is unlabelled: its reason must be one of {', '.join(REASONS)}, "
                                 f"not {reason!r}")
            if label is not None and reason is not None:
                raise ValueError(f"item {key!r} has label {label} and an unlabelled reason {reason!r}")
        by_subset.setdefault(item["subset"], []).append(item)
    rows = {}
    for subset in (s for s in SUBSETS if s in by_subset):
        members = by_subset[subset]
        judged = [labels[item["key"]] for item in members]
        figures = _agreement(judged, [item["label"] for item in members])
        unlabelled = [item["key"] for item, label in zip(members, judged) if label is None]
        rows[subset] = {
            "subset": subset,
            "items": len(members),
            "unlabelled": len(unlabelled),
            "invalid": None if reasons is None else sum(reasons[key] == "invalid" for key in unlabelled),
            "tied": None if reasons is None else sum(reasons[key] == "tied" for key in unlabelled),
            **{column: 100 * figures[column] for column in PERCENT_COLUMNS},
        }
    derived = []
    if all(subset in rows for subset in ADVERSARIAL):
        derived.append(_mean_row("Adversarial", [rows[subset] for subset in ADVERSARIAL]))
    if all(subset in rows for subset in SUBSETS):
        derived.append(_mean_row("Average", [rows[subset] for subset in SUBSETS]))
    return list(rows.values()) + derived


def _mean_row(name: str, rows: list[dict]) -> dict:
    """The unweighted mean of the rows' percentages; the sums of their counts."""
    def total(column: str) -> int | None:
        values = [row[column] for row in rows]
        return None if any(value is None for value in values) else sum(values)

    return {"subset": name, **{column: total(column) for column in ("items", "unlabelled", "invalid", "tied")},
            **{column: sum(row[column] for row in rows) / len(rows) for column in PERCENT_COLUMNS}}


def votes_table(items: list[dict], greedy: dict[str, int | None] | None,
                votes: dict[str, list[int | None]], ks: list[int]) -> list[dict]:
    """:func:`subset_metrics` rows for the greedy judgement (when given: one verdict per item key,
    None when invalid) and then for each k of ``ks`` (the majority of each item's first k
    ``votes``), each row led by ``"votes"``: ``"greedy"`` or k."""
    for k in ks:
        _check_k(k)
    table: list[dict] = []
    if greedy is not None:
        for item in items:
            if item["key"] not in greedy:
                raise ValueError(f"no greedy verdict for item {item['key']!r}")
        reasons = {item["key"]: unlabelled_reason([greedy[item["key"]]]) for item in items}
        table.extend({"votes": "greedy", **row}
                     for row in subset_metrics(items, {item["key"]: majority([greedy[item["key"]]]) for item in items},
                                               {key: reason for key, reason in reasons.items() if reason}))
    for k in ks:
        labels, reasons = {}, {}
        for item in items:
            key = item["key"]
            if key not in votes:
                raise ValueError(f"no votes for item {key!r}")
            if len(votes[key]) < k:
                raise ValueError(f"item {key!r}: {k} votes needed, only {len(votes[key])} drawn")
            labels[key] = judgement_at(votes[key], k)
            if (reason := unlabelled_reason(votes[key][:k])) is not None:
                reasons[key] = reason
        table.extend({"votes": k, **row} for row in subset_metrics(items, labels, reasons))
    return table
