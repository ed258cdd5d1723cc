"""FollowBench scoring: the rule checks, the LLM judge's prompt and verdict parser, HSR / SSR / CSL.

FollowBench (Jiang et al. 2023, "FollowBench: A Multi-level Fine-grained Constraints Following
Benchmark for Large Language Models"; github YJiangcm/FollowBench, Apache-2.0) grows each of 164
seed instructions ("groups") one constraint at a time: level 0 is the seed, level L carries L added
constraints. Six categories, one data file each (``{category}_constraints.json``): content,
situation, style, format, mixed (constraints of several kinds) and example (few-shot prompts whose
answer must follow the examples' template; its file holds levels 1-5 only). The 820 items with
level >= 1 are scored:

* 350 by rules (:func:`rule_check`): every example item (a template match), the items of the other
  categories whose ``source`` is one of :data:`RULE_SOURCES` (one rule per source), and the format
  groups 22 and 30 (their own level-cumulative checks);
* the other 470 by an LLM judge: :func:`judge_prompt` shows it the group's evolution (the level-0
  instruction, every level's instruction up to L, the answer at L); it names the L added constraints,
  judges each and ends with a Python list of L 'YES'/'NO', read by :func:`parse_verdict`.

Metrics (:func:`score`), per category and level L: the hard satisfaction rate HSR (all L constraints
met), the soft one SSR (the fraction met; a rule item counts 0 or 1 in both) and the consistent
satisfaction levels CSL (per group, how many levels in a row from level 1 are hard-satisfied;
averaged over groups). As in the official ``save_discriminative_evaluation`` /
``save_csl_evaluation``, a category's rate at L is (judged sum + rule sum) / (judged groups + rule
groups) and its CSL (judged + rule consistency) / groups.

This is a re-implementation of the official code (``code/rule_based_evaluation.py``,
``code/gpt4_based_evaluation.py``, ``code/utils.py`` at commit 6278f4c), not a copy;
``benchmarks/followbench_conformance.py`` runs the official code beside it and checks that both agree.

Choices of ours (where the official code has no answer, or one we do not want)
------------------------------------------------------------------------------
* Unparseable verdicts. The official parser returns -1 for them and its sums take the -1 in, which
  can drive a rate below zero. We score them as not satisfied (hard 0, soft 0) and count them per
  category and level (``judged.unparseable``), so that a rate is never negative and no verdict is
  scored silently. CSL stops at them, as it does in the official code (-1 is not 1).
* No ``eval``: the official parser ``eval``s the judge's list; we use :func:`ast.literal_eval`, so a
  list written as an expression (``['YES'] + ['NO']``) is unparseable here where eval accepted it.
* No judge: with ``verdicts=None`` the LLM-judged groups are left out, and every rate is over the
  rule-checked groups alone.
* Merged figures: all scored groups of all categories pooled, each instruction counting equally
  (rate at L = the sum over categories of what is satisfied at L / all groups; CSL = the sum of the
  consistency / all groups), rather than a mean of the six category rates. The paper reports
  categories only; pooling weighs a category by its number of groups (example 40 ... mixed 17).
* A category is the data file's name. The items of ``mixed_constraints.json`` carry their own
  ``category`` field (``"content, format, content"``, sometimes ``"format"``) and the official
  format-22/30 test reads that field; on the data no mixed group has id 22 or 30, so both agree.
* A missing response is an error (the official matching prints the index and goes on, to crash or
  score stale text later); a null response counts as an empty one.

Quirks of the official code that we keep (each is in the official figures)
-------------------------------------------------------------------------
Every rule sees the raw generation: nothing is stripped first, so a trailing newline or space can
fail a check that the text itself passes.

* Example items: the target template loses every ``"{instruction}\\n"``, ``{{``/``}}`` become
  ``{``/``}``, ``{answer}`` becomes ``.*``, and the rest must full-match the generation literally.
  The official code ``re.escape``s the pattern and turns every escaped ``.*`` back into a wildcard,
  so a literal ``.*`` in a template would be a wildcard too (we split on ``.*`` and escape the
  pieces: the same pattern). ``.`` does not cross a newline, so an answer of several lines cannot
  match ``{answer}`` (one gold answer of the data, billsum's, fails for this reason).
* The example file's items with source xsum or samsum get the template check, never the summary
  rules of those sources (the official code scores the example file on its own).
* Sentences (cnn_dailymail, xsum, samsum, arxiv, format 22): ``re.split('[.!?]')``, dropping the
  empty pieces only: whitespace after the last full stop is a sentence of its own ("A summary. "
  is two sentences, and a sentence of zero words), and "3.5" or "e.g." splits.
* Words: ``split(' ')`` for xsum (< 20), samsum (< 15), gigaword (== 8) and arxiv (<= 20), so two
  spaces make an empty word and a newline joins two words into one; ``split()`` for the per-sentence
  limits of cnn_dailymail (< 15) and format 22 (> 20).
* Words present or absent: ``\\b`` + word + ``\\b``, case-sensitive, also for the two-word phrase
  'Newton Stewart' (one space between, exactly); samsum's 'procrast' is a case-insensitive substring.
* arxiv level 3 (start with "We"): ``generation[:2] == "We"`` ("Weather ..." passes, " We" fails).
* gigaword level 3 (all lowercase): ``str.islower()`` (digits allowed, at least one letter needed).
* gigaword level 2 and samsum level 5: characters of ``string.punctuation`` (none; exactly one, so a
  summary ending in a full stop may have no comma).
* xsum level 4 (present continuous): ``\\b(am|is|are)\\s+\\w+ing\\b`` anywhere; cnn_dailymail level 5
  (third sentence in present perfect): ``\\b(has|have)\\s+\\w+`` in it.
* BBH_logical, BBH_time, gsm_8k: the last ``([A-Z])``, ``dd/dd/dddd`` or ``$digits`` of the text must
  equal the target ("$14.50" gives "$14"); self_made_space: the target is a substring.
* E2E and text_editing: the whole generation equals the target. CONLL2003: it is one element of the
  target's list. WIKIEVENTS: every line of the generation is a line of the target (any subset, with
  repeats; a trailing newline adds an empty line, which no target has).
* Format 22 (three paragraphs, each under three sentences, every sentence over 20 words, number
  markers, "Those are suggestions" at the end): paragraphs are ``split('\\n\\n')``; level 5 wants
  *four* paragraphs instead of three (the sentence limit then looks at the first three only) and the
  text to end exactly with "Those are suggestions" (no full stop); the marker test is
  ``re.match(r'\\d+\\.')`` on every non-empty paragraph after ``lstrip``. Levels 4 and 5 cannot be
  met: the marker's full stop makes its digits a one-word sentence, which fails the > 20 words.
* Format 30 (a speech on five benefits): level L wants the first L of these checks, in this order,
  which is not the order the instructions add them: the text contains "**"; exactly five matches
  of ``\\*\\*\\d.+?:`` (the keyword headings that the level-5 instruction asks for); every sentence
  that contains "1." to "5." has at most one "."; every sentence has 10-15 words; no word ends in
  "-ly" (with the hyphen: "quickly" passes). Sentences here are split at whitespace after "." or
  "?", not after "x.y." or "Mr." shapes, and the pieces (empty ones included) are all counted.

And of the verdict parser (:func:`parse_verdict`):

* The judge's text loses "`" characters at both ends, then whitespace; only its last line counts.
  A closing fence followed by a newline is therefore the last line ("```"), and invalid.
* Level 1: 'YES' anywhere in that line gives 1, else 'NO' anywhere gives 0 ("NONE" is a NO;
  "Yes" is invalid): no list is needed.
* Level > 1: the first ``\\[.*\\]`` match of the line (greedy: from its first "[" to its last "]",
  so prose after the list on the same line is fine, two lists on it are not) must be a list of
  exactly L elements, each 'YES' (1) or one of 'NO', 'PARTIAL', 'MAYBE', 'UNKNOWN', 'N/A' (0),
  case-sensitive. hard = all YES, soft = YES / L.
"""

from __future__ import annotations

import ast
import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ifplay.core.records import RecordError

CATEGORIES = ("content", "situation", "style", "format", "mixed", "example")
LEVELS = (1, 2, 3, 4, 5)

#: Sources whose items are rule-checked in every category but example (one rule each).
RULE_SOURCES = ("E2E", "WIKIEVENTS", "CONLL2003", "text_editing", "cnn_dailymail", "xsum", "samsum",
                "gigaword", "arxiv", "BBH_logical", "BBH_time", "self_made_space", "gsm_8k")
#: Format groups with their own rule checks.
FORMAT_RULE_IDS = (22, 30)

FIELDS = {"example_id": int, "category": str, "source": str, "level": int, "instruction": str, "target": str}

#: What the judge is told the category's constraints are (mixed: constraints of any kind).
CONSTRAINT_KINDS = {
    "content": "content constraint",
    "situation": "situation constraint (information that describes a specific situation or background)",
    "style": "style constraint",
    "format": "format constraint",
    "mixed": "constraint",
}

#: Judge list elements that count 0 (any other element than these and 'YES' is invalid).
NOT_SATISFIED = ("NO", "PARTIAL", "MAYBE", "UNKNOWN", "N/A")


class FollowBenchDataError(RecordError):
    """A FollowBench data file is missing or malformed; the message names the file and the item."""


class FollowBenchScoringError(ValueError):
    """Responses, generations or verdicts do not cover the items; the message names the item."""


# -- the items ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One scored instruction (level >= 1)."""

    category: str  # the data file's category (CATEGORIES), not the item's own field
    example_id: int
    level: int
    source: str
    instruction: str
    target: str
    path: tuple[str, ...]  # the group's instructions, level 0 ("" for example, which has none) .. this level

    @property
    def key(self) -> str:
        return f"{self.category}/{self.example_id}/{self.level}"

    @property
    def rule(self) -> str | None:
        """The rule family that checks this item, or None when the LLM judge does."""
        return rule_family(self.category, self.source, self.example_id)


def rule_family(category: str, source: str, example_id: int) -> str | None:
    """An item's rule family (a key of :data:`RULES`), or None for an LLM-judged item."""
    if category == "example":
        return "example"
    if source in RULE_SOURCES:
        return source
    if category == "format" and example_id in FORMAT_RULE_IDS:
        return f"format_{example_id}"
    return None


def load_items(data_dir: str | Path, groups: int | None = None) -> list[Item]:
    """The scored items of the six files of ``data_dir``, validated: in :data:`CATEGORIES` order, then
    file order. ``groups``: only the first N groups of each category (all their levels)."""
    if groups is not None and groups < 1:
        raise ValueError(f"groups must be a positive number of groups, not {groups}")
    items: list[Item] = []
    for category in CATEGORIES:
        file_groups = _read_groups(Path(data_dir) / f"{category}_constraints.json", category)
        for group in file_groups[:groups]:
            items.extend(group)
    return items


def _read_groups(path: Path, category: str) -> list[list[Item]]:
    """A category file as groups of items (levels 1-5), checked as the official code assumes it."""
    if not path.is_file():
        raise FollowBenchDataError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f":{err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise FollowBenchDataError(f"{path}{where}: not valid JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise FollowBenchDataError(f"{path}: expected a non-empty JSON list of items")
    first = 1 if category == "example" else 0
    groups: list[list[Item]] = []
    seen: set[int] = set()
    current_id: int | None = None
    instructions: list[str] = []  # the current group's, from its first level on
    for index, record in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(record, dict):
            raise FollowBenchDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for name, kind in FIELDS.items():
            if name not in record:
                raise FollowBenchDataError(f"{where}: missing field {name!r}")
            value = record[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise FollowBenchDataError(f"{where}: field {name!r} must be {kind.__name__}, "
                                           f"got {type(value).__name__}")
        example_id, level = record["example_id"], record["level"]
        where = f"{where} (example_id {example_id})"
        expected = first + len(instructions)
        if level != expected:
            raise FollowBenchDataError(f"{where}: level {level} where level {expected} was expected "
                                       f"(levels run {first}..5 per example_id, in order)")
        if level == first:  # a new group
            if example_id in seen:
                raise FollowBenchDataError(f"{where}: example_id {example_id} appears in two groups")
            seen.add(example_id)
            current_id = example_id
            groups.append([])
        elif example_id != current_id:
            raise FollowBenchDataError(f"{where}: level {level} of example_id {example_id} inside the group "
                                       f"of example_id {current_id} (levels run {first}..5 per example_id, in order)")
        instructions.append(record["instruction"])
        if level >= 1:
            if not record["instruction"]:
                raise FollowBenchDataError(f"{where}: empty instruction at level {level}")
            evolution = ("",) * first + tuple(instructions)  # example has no level 0: ""
            item = Item(category, example_id, level, record["source"], record["instruction"], record["target"],
                        evolution)
            if item.rule == "CONLL2003":
                _literal_target(item.target, where)
            groups[-1].append(item)
        if level == 5:
            rules = {item.rule is None for item in groups[-1]}
            if len(rules) > 1:
                raise FollowBenchDataError(f"{where}: the group's levels are not all rule-checked or all "
                                           f"judged (sources {sorted({i.source for i in groups[-1]})})")
            instructions = []
    if instructions:
        raise FollowBenchDataError(f"{path}: item {len(data) - 1}: the file ends inside a group, at level "
                                   f"{first + len(instructions) - 1}")
    return groups


# -- the rule checks ---------------------------------------------------------------------------------
# Each family is a function (generation, item) -> bool. The level-cumulative ones list one check per
# level and pass when the first ``level`` checks do. All of them read the raw generation.

def _sentences(text: str) -> list[str]:
    """The official sentence splitter: pieces between '.', '!' and '?', empty pieces dropped
    (whitespace-only ones kept)."""
    return [piece for piece in re.split(r"[.!?]", text) if piece]


def _nth_sentence(text: str, n: int) -> str | None:
    sentences = _sentences(text)
    return sentences[n - 1] if len(sentences) >= n else None


def _has_word(text: str | None, word: str) -> bool:
    """``word`` between two regex word boundaries, case-sensitive (False for a missing sentence)."""
    return text is not None and re.search(rf"\b{re.escape(word)}\b", text) is not None


def _space_words(text: str) -> int:
    return len(text.split(" "))


def _punctuation(text: str) -> int:
    return sum(char in string.punctuation for char in text)


def _cumulative(checks: list[Callable[[str], bool]]) -> Callable[[str, Item], bool]:
    def family(generation: str, item: Item) -> bool:
        return all(check(generation) for check in checks[:item.level])
    return family


def _last_match(pattern: str) -> Callable[[str, Item], bool]:
    """The last match of ``pattern`` in the generation equals the target."""
    def family(generation: str, item: Item) -> bool:
        found = re.findall(pattern, generation)
        return bool(found) and found[-1] == item.target
    return family


def _present_perfect(text: str | None) -> bool:
    return text is not None and re.search(r"\b(?:has|have)\s+\w+", text) is not None


_cnn_dailymail = _cumulative([
    lambda g: len(_sentences(g)) == 3,
    lambda g: all(len(s.split()) < 15 for s in _sentences(g)),
    lambda g: (_has_word(_nth_sentence(g, 1), "Potter") and _has_word(_nth_sentence(g, 2), "actor")
               and _has_word(_nth_sentence(g, 3), "films")),
    lambda g: not _has_word(_nth_sentence(g, 2), "lavish"),
    lambda g: _present_perfect(_nth_sentence(g, 3)),
])

_xsum = _cumulative([
    lambda g: len(_sentences(g)) == 1,
    lambda g: _space_words(g) < 20,
    lambda g: not _has_word(g, "Newton Stewart"),
    lambda g: re.search(r"\b(?:am|is|are)\s+\w+ing\b", g) is not None,
    lambda g: _has_word(g, "operation"),
])

_samsum = _cumulative([
    lambda g: len(_sentences(g)) == 1,
    lambda g: _space_words(g) < 15,
    lambda g: _has_word(g, "stuff"),
    lambda g: re.search("procrast", g, re.IGNORECASE) is None,
    lambda g: _punctuation(g) == 1,
])

_gigaword = _cumulative([
    lambda g: _space_words(g) == 8,
    lambda g: _punctuation(g) == 0,
    lambda g: g.islower(),
    lambda g: not _has_word(g, "bus"),
    lambda g: _has_word(g, "in"),
])

_arxiv = _cumulative([
    lambda g: len(_sentences(g)) == 1,
    lambda g: _space_words(g) <= 20,
    lambda g: g[:2] == "We",
    lambda g: _has_word(g, "activations"),
    lambda g: not _has_word(g, "transformer"),
])


def _format_22(generation: str, item: Item) -> bool:
    paragraphs = generation.split("\n\n")
    wanted = 4 if item.level == 5 else 3  # the official level 5 asks for four paragraphs
    checks = [
        lambda: len(paragraphs) == wanted,
        lambda: all(len(_sentences(p)) < 3 for p in paragraphs[:3]),
        lambda: all(len(s.split()) > 20 for s in _sentences(generation)),
        lambda: all(re.match(r"\d+\.", p.lstrip()) for p in paragraphs if p.lstrip()),
        lambda: generation.endswith("Those are suggestions"),
    ]
    return all(check() for check in checks[:item.level])


def _format_30(generation: str, item: Item) -> bool:
    sentences = re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s", generation)
    numbered = [s for s in sentences if any(f"{n}." in s for n in range(1, 6))]
    checks = [
        lambda: "**" in generation,
        lambda: len(re.findall(r"\*\*\d.+?:", generation)) == 5,
        lambda: all(len(s.split(".")) < 3 for s in numbered),
        lambda: all(10 <= len(s.split()) <= 15 for s in sentences),
        lambda: not any(word.endswith("-ly") for s in sentences for word in s.split()),
    ]
    return all(check() for check in checks[:item.level])


@lru_cache(maxsize=None)
def _template_pattern(target: str) -> re.Pattern:
    """An example item's template as a pattern: literal text, ``{answer}`` (and any ``.*``) a wildcard."""
    template = target.replace("{instruction}\n", "").replace("{{", "{").replace("}}", "}")
    pieces = template.replace("{answer}", ".*").split(".*")
    return re.compile(".*".join(re.escape(piece) for piece in pieces))


def _example(generation: str, item: Item) -> bool:
    return _template_pattern(item.target).fullmatch(generation) is not None


@lru_cache(maxsize=None)
def _literal_target(target: str, where: str = "") -> tuple:
    """A CONLL2003 target: a Python list literal of the accepted entities."""
    try:
        value = ast.literal_eval(target)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, (list, tuple)):
        raise FollowBenchDataError(f"{where}: a CONLL2003 target must be a Python list literal, got {target[:80]!r}")
    return tuple(value)


RULES: dict[str, Callable[[str, Item], bool]] = {
    "example": _example,
    "E2E": lambda generation, item: generation == item.target,
    "text_editing": lambda generation, item: generation == item.target,
    "WIKIEVENTS": lambda generation, item: all(line in item.target.split("\n") for line in generation.split("\n")),
    "CONLL2003": lambda generation, item: generation in _literal_target(item.target, item.key),
    "cnn_dailymail": _cnn_dailymail,
    "xsum": _xsum,
    "samsum": _samsum,
    "gigaword": _gigaword,
    "arxiv": _arxiv,
    "BBH_logical": _last_match(r"\([A-Z]\)"),
    "BBH_time": _last_match(r"\d{2}/\d{2}/\d{4}"),
    "gsm_8k": _last_match(r"\$\d+"),
    "self_made_space": lambda generation, item: item.target in generation,
    "format_22": _format_22,
    "format_30": _format_30,
}


def rule_check(item: Item, generation: str) -> bool:
    """Whether ``generation`` passes ``item``'s rule (the raw text, as the official code sees it)."""
    family = item.rule
    if family is None:
        raise ValueError(f"{item.key} is LLM-judged, not rule-checked")
    if not isinstance(generation, str):
        raise TypeError(f"{item.key}: the generation must be a string, got {type(generation).__name__}")
    return bool(RULES[family](generation, item))


# -- the LLM judge -----------------------------------------------------------------------------------
def _constraints(n: int) -> str:
    return f"{n} constraint" if n == 1 else f"{n} constraints"


def judge_prompt(category: str, path: list[str], answer: str) -> str:
    """The judge's prompt for an answer to ``path[-1]``: the evolution ``path`` = [the level-0
    instruction, level 1, ..., level L], the answer, then three steps ending in a list of L verdicts."""
    if category not in CONSTRAINT_KINDS:
        raise ValueError(f"no LLM judge for category {category!r} (judged: {', '.join(CONSTRAINT_KINDS)})")
    level = len(path) - 1
    if level < 1:
        raise ValueError(f"the path needs the level-0 instruction and at least one level, got {len(path)} instruction(s)")
    kind = CONSTRAINT_KINDS[category]
    final = f"Initial Instruction + {_constraints(level)}"
    if level == 1:
        intro = f"An initial instruction was extended with one {kind}, giving an instruction with 1 added constraint."
    else:
        intro = (f"An initial instruction was extended with one {kind} at a time, giving an instruction with "
                 f"{level} added constraints.")
    parts = [intro, f"[Initial Instruction]\n{path[0]}"]
    parts += [f"[Initial Instruction + {_constraints(i)}]\n{path[i]}" for i in range(1, level + 1)]
    parts.append(f"[Answer to {final}]\n{answer}")
    if level == 1:
        steps = ("1) Name the 1 added constraint.\n"
                 f"2) Decide whether the [Answer to {final}] satisfies that constraint.\n"
                 "3) On the last line, write only a Python list with 1 element, 'YES' or 'NO': whether the "
                 "answer satisfies the added constraint.")
    else:
        steps = (f"1) Name all {level} added constraints.\n"
                 f"2) For each of the {level} added constraints, decide whether the [Answer to {final}] "
                 "satisfies it.\n"
                 f"3) On the last line, write only a Python list with {level} elements, each 'YES' or 'NO': "
                 "whether the answer satisfies each added constraint, in the order they were added.")
    parts.append(f"[Your task]\n{steps}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Verdict:
    """The judge's reading of one answer: hard (0/1) and soft (fraction of the constraints met), or
    both None and ``error`` saying why the judge's text could not be read."""

    hard: int | None
    soft: float | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


def _invalid(why: str) -> Verdict:
    return Verdict(None, None, why)


def parse_verdict(text: str, level: int) -> Verdict:
    """The official reading of a judge's output for a level-``level`` item (module docstring), with
    ``ast.literal_eval`` for ``eval`` and an invalid verdict (``error``) for the official -1."""
    if level < 1:
        raise ValueError(f"a judged item's level is 1-5, not {level}")
    if not isinstance(text, str) or not text.strip():
        return _invalid("empty judge output")
    last = text.strip("`").strip().split("\n")[-1]
    shown = last if len(last) <= 80 else last[:77] + "..."
    if level == 1:
        if "YES" in last:
            return Verdict(1, 1.0)
        if "NO" in last:
            return Verdict(0, 0.0)
        return _invalid(f"level 1: neither YES nor NO on the last line: {shown!r}")
    found = re.search(r"\[.*\]", last)
    if found is None:
        return _invalid(f"no [...] list on the last line: {shown!r}")
    try:
        verdicts = ast.literal_eval(found.group())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _invalid(f"the list is not a Python literal: {found.group()[:80]!r}")
    try:
        count = len(verdicts)
    except TypeError:
        return _invalid(f"not a list: {found.group()[:80]!r}")
    if count != level:
        return _invalid(f"{count} element(s) for {level} constraints: {found.group()[:80]!r}")
    met = 0
    for element in verdicts:
        if isinstance(element, str) and element == "YES":
            met += 1
        elif not (isinstance(element, str) and element in NOT_SATISFIED):
            return _invalid(f"element {element!r} is not YES or one of {', '.join(NOT_SATISFIED)}")
    return Verdict(int(met == level), met / level)


# -- matching and metrics ----------------------------------------------------------------------------
def responses_by_prompt(items: list[Item], responses: list[dict]) -> dict[str, str]:
    """Each item's response (by ``Item.key``), matched by exact instruction text; the first response
    with a prompt wins, as in the official matching. A null response is an empty one."""
    by_prompt: dict[str, str] = {}
    for index, record in enumerate(responses):
        if not isinstance(record, dict) or "prompt" not in record or "response" not in record:
            raise FollowBenchScoringError(f"response {index}: expected an object with 'prompt' and 'response'")
        response = record["response"]
        if response is not None and not isinstance(response, str):
            raise FollowBenchScoringError(f"response {index}: 'response' must be a string, got {type(response).__name__}")
        by_prompt.setdefault(record["prompt"], response or "")
    missing = [item for item in items if item.instruction not in by_prompt]
    if missing:
        first = missing[0]
        start = first.instruction[:80].replace("\n", " ")
        raise FollowBenchScoringError(f"no response for {len(missing)} FollowBench item(s); first: {first.key}: "
                                      f"\"{start}...\"")
    return {item.key: by_prompt[item.instruction] for item in items}


def _groups(items: list[Item]) -> dict[tuple[str, int], list[Item]]:
    """The items by group, each group checked: all five levels once, one rule/judged status."""
    groups: dict[tuple[str, int], list[Item]] = {}
    keys: set[str] = set()
    for item in items:
        if item.category not in CATEGORIES:
            raise FollowBenchScoringError(f"{item.key}: unknown category {item.category!r}")
        if item.key in keys:
            raise FollowBenchScoringError(f"{item.key}: the item appears twice")
        keys.add(item.key)
        groups.setdefault((item.category, item.example_id), []).append(item)
    for (category, example_id), members in groups.items():
        members.sort(key=lambda item: item.level)
        levels = tuple(item.level for item in members)
        if levels != LEVELS:
            raise FollowBenchScoringError(f"{category}/{example_id}: a group is scored whole (levels 1-5), "
                                          f"got levels {list(levels)}")
        if len({item.rule is None for item in members}) > 1:
            raise FollowBenchScoringError(f"{category}/{example_id}: the group's levels are not all "
                                          "rule-checked or all judged")
    return groups


def _consistent(satisfied: list) -> int:
    """Levels satisfied in a row from level 1 (hard: 1 or True)."""
    count = 0
    for value in satisfied:
        if value != 1:
            break
        count += 1
    return count


def _empty_rule() -> dict:
    return {"groups": 0, "satisfied": [0] * len(LEVELS), "csl_sum": 0}


def _empty_judged() -> dict:
    return {"groups": 0, "hard": [0] * len(LEVELS), "soft": [0.0] * len(LEVELS), "csl_sum": 0,
            "unparseable": [0] * len(LEVELS)}


def _add(total: dict, block: dict) -> None:
    for name, value in block.items():
        total[name] = [a + b for a, b in zip(total[name], value)] if isinstance(value, list) else total[name] + value


def _rates(rule: dict, judged: dict | None) -> dict:
    """The official merge of the rule and judged sums: (judged + rule) / (judged + rule groups)."""
    judged = judged or _empty_judged()
    groups = rule["groups"] + judged["groups"]
    out: dict = {"groups": groups}
    if groups == 0:
        return {**out, "hsr": [None] * len(LEVELS), "ssr": [None] * len(LEVELS), "hsr_avg": None, "ssr_avg": None,
                "csl": None}
    hsr = [(j + r) / groups * 100 for j, r in zip(judged["hard"], rule["satisfied"])]
    ssr = [(j + r) / groups * 100 for j, r in zip(judged["soft"], rule["satisfied"])]
    return {**out, "hsr": hsr, "ssr": ssr, "hsr_avg": sum(hsr) / len(hsr), "ssr_avg": sum(ssr) / len(ssr),
            "csl": (judged["csl_sum"] + rule["csl_sum"]) / groups}


def score(items: list[Item], generations: dict[str, str], verdicts: dict[str, Verdict] | None) -> dict:
    """HSR, SSR (percent) and CSL (levels) per category present in ``items`` and ``"merged"`` over
    all of them. ``generations``: the answer of every rule-checked item; ``verdicts``: the judge's
    verdict on every judged item, or None to score the rule-checked groups only. Returns (JSON-able)
    ``{category | "merged": {"rule": {...}, "judged": {...} (with verdicts), "groups", "hsr", "ssr",
    "hsr_avg", "ssr_avg", "csl"}}``; the rates are None where no group is scored."""
    present = {item.category for item in items}
    rule = {c: _empty_rule() for c in CATEGORIES if c in present}
    judged = {c: _empty_judged() for c in rule} if verdicts is not None else None
    for (category, _), members in _groups(items).items():
        if members[0].rule is not None:
            missing = [item.key for item in members if item.key not in generations]
            if missing:
                raise FollowBenchScoringError(f"no generation for rule-checked item {missing[0]}")
            passed = [rule_check(item, generations[item.key]) for item in members]
            block = rule[category]
            block["groups"] += 1
            block["satisfied"] = [n + p for n, p in zip(block["satisfied"], passed)]
            block["csl_sum"] += _consistent(passed)
        elif judged is not None:
            missing = [item.key for item in members if item.key not in verdicts]
            if missing:
                raise FollowBenchScoringError(f"no judge verdict for LLM-judged item {missing[0]}")
            group = [verdicts[item.key] for item in members]
            unparseable = [v.error is not None or v.hard is None or v.soft is None for v in group]
            hard = [0 if bad else v.hard for v, bad in zip(group, unparseable)]  # unparseable: not satisfied
            soft = [0.0 if bad else v.soft for v, bad in zip(group, unparseable)]
            block = judged[category]
            block["groups"] += 1
            block["hard"] = [n + h for n, h in zip(block["hard"], hard)]
            block["soft"] = [n + s for n, s in zip(block["soft"], soft)]
            block["unparseable"] = [n + bad for n, bad in zip(block["unparseable"], unparseable)]
            block["csl_sum"] += _consistent(hard)
    out: dict = {}
    merged_rule, merged_judged = _empty_rule(), _empty_judged()
    for category in rule:
        entry: dict = {"rule": rule[category]}
        _add(merged_rule, rule[category])
        if judged is not None:
            entry["judged"] = judged[category]
            _add(merged_judged, judged[category])
        out[category] = {**entry, **_rates(rule[category], judged[category] if judged else None)}
    merged: dict = {"rule": merged_rule}
    if judged is not None:
        merged["judged"] = merged_judged
    out["merged"] = {**merged, **_rates(merged_rule, merged_judged if judged is not None else None)}
    return out


# -- the command -------------------------------------------------------------------------------------
def read_verdicts(path: str | Path, items: list[Item]) -> dict[str, Verdict]:
    """Raw judge outputs (JSONL: ``key``, ``output``) parsed as verdicts for ``items``' judged items;
    records of other keys are ignored, a key given twice is an error."""
    from ifplay.core.records import numbered_jsonl

    levels = {item.key: item.level for item in items if item.rule is None}
    verdicts: dict[str, Verdict] = {}
    for lineno, record in numbered_jsonl(path, required=("key", "output")):
        key = record["key"]
        if key in verdicts:
            raise FollowBenchScoringError(f"{path}:{lineno}: a second judge output for {key}")
        if key in levels:
            verdicts[key] = parse_verdict(record["output"], levels[key])
    return verdicts


def _table(scores: dict) -> str:
    def pct(value: float | None) -> str:
        return "     -" if value is None else f"{value:6.2f}"

    head = (f"{'category':<10} {'groups':>6} {'rule':>5} {'judged':>6} "
            + " ".join(f"{f'HSR L{level}':>6}" for level in LEVELS)
            + f" {'HSR':>6} {'SSR':>6} {'CSL':>5} {'unparseable':>11}")
    lines = [head]
    for name, block in scores.items():
        judged = block.get("judged")
        csl = "    -" if block["csl"] is None else f"{block['csl']:5.2f}"
        lines.append(f"{name:<10} {block['groups']:>6} {block['rule']['groups']:>5} "
                     f"{judged['groups'] if judged else '-':>6} "
                     + " ".join(pct(value) for value in block["hsr"])
                     + f" {pct(block['hsr_avg'])} {pct(block['ssr_avg'])} {csl} "
                     f"{sum(judged['unparseable']) if judged else '-':>11}")
    return "\n".join(lines)


def cmd_score(args) -> None:
    """``ifplay score followbench``: score a response file (rule checks; judged verdicts with --judge)."""
    from ifplay.core.records import read_jsonl

    items = load_items(args.data, groups=args.groups)
    verdicts = None if args.judge in (None, "none") else read_verdicts(args.judge, items)
    # without a judge only the rule-checked items are scored: only their responses are needed
    scored = items if verdicts is not None else [item for item in items if item.rule is not None]
    generations = responses_by_prompt(scored, read_jsonl(args.responses, required=("prompt", "response")))
    result = score(items, generations, verdicts)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    judge = "none: rule-checked groups only" if verdicts is None else args.judge
    print(f"FollowBench, {len(items)} items (judge {judge}); rates in percent, CSL in levels:")
    print(_table(result))
