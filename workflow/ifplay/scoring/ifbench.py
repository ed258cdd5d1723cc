"""IFBench scoring (Pyatkin et al. 2025, github allenai/IFBench): the official checkers' verdicts at
HEAD ``db69a6f`` (2026-08-19), the reference this module is checked against
(``benchmarks/ifbench_conformance.py``).

The checkers come from the maintained package ``if-verifiable`` (0.1.2, Apache-2.0: IFBench's 58
checkers without spaCy, from an older revision of the official code). docs/studies/ifbench-checkers.md
compares it with HEAD checker by checker; what differs is fixed here, in code of our own:

- **Sentence splitting.** HEAD splits sentences with ``nltk.sent_tokenize`` (official commit
  6fffd61); the package still uses a regex (it moves a closing quote out of its sentence and splits
  ``?!``). Ten checkers differ only by that (ratio:sentence_type, ratio:sentence_balance,
  ratio:sentence_words, sentence:increment, sentence:alliteration_increment, format:emoji,
  format:no_bullets_bullets, words:last_first, custom:sentence_alphabet, custom:word_reverse): the
  package's module-level splitter, which every one of them calls by its module attribute, is
  replaced by ``nltk.sent_tokenize`` when the checkers are loaded (:func:`checkers`). The package is
  pinned exactly, so the replaced name cannot move under us.
- **Eight checkers with other logic at HEAD** are subclasses here whose ``check_following`` (and,
  for repeat:repeat_span, ``build_description``) follows HEAD, bugs included (each documented on its
  class): count:person_names, count:pronouns, sentence:keyword, words:keywords_specific_position,
  words:words_position, repeat:repeat_span, format:title_case, format:quote_unquote.
- **The evaluation loop** is HEAD's ``evaluation_lib`` (the package's ``evaluate_instructions``
  strips responses, which changes strict verdicts): ``None`` kwargs dropped (in both modes: HEAD
  drops them in the strict pass, in place, which its loose pass then relies on), strict = the
  non-blank response passes, loose = any of the eight variants of
  ``if_verifiable.common.get_loose_transformations`` (the same as HEAD's) passes, non-blank.

Unscorable prompts. ``words:start_verb`` (6 prompts) needs NLTK's ``averaged_perceptron_tagger_eng``
and ``ratio:stop_words`` (12) NLTK's English ``stopwords``; no PyPI package carries the tagger, so
where the data is missing a prompt that uses such a checker is *unscorable*: counted and left out of
every accuracy, never scored as a failure (the official run aborts instead).

Determinism. As for IFEval (:mod:`ifplay.scoring.ifeval`): ``langdetect`` is seeded and Python's
``random`` is seeded with the prompt's text before each test (with IFBench's data no checker draws).
"""

from __future__ import annotations

import random
import re
import string
from collections import defaultdict
from dataclasses import dataclass
from functools import cache

from ifplay.scoring.ifeval import METRICS, SHORT, ScoringError, match_responses  # noqa: F401 (re-exported)
from ifplay.scoring.nltk_data import ensure_punkt_tab

#: The official revision whose verdicts this module reproduces.
OFFICIAL_COMMIT = "db69a6f05689830b0068b8f1529ebcfd2f3b164c"

#: NLTK resources some checkers need, with the instruction ids that need them.
NLTK_NEEDS = {"taggers/averaged_perceptron_tagger_eng": ("words:start_verb",),
              "corpora/stopwords": ("ratio:stop_words",)}


@cache
def checkers() -> dict[str, type]:
    """Instruction id -> checker class: the package's registry, HEAD's splitter, our eight classes."""
    ensure_punkt_tab()
    import langdetect
    import nltk

    download = nltk.download  # the package downloads what NLTK lacks on import: never here (offline
    nltk.download = lambda *args, **kwargs: False  # nodes; a missing resource makes prompts unscorable)
    try:
        from if_verifiable.ifbench import instructions, instructions_registry, instructions_util
    finally:
        nltk.download = download
    langdetect.DetectorFactory.seed = 0
    instructions_util.split_into_sentences = nltk.sent_tokenize  # HEAD's splitter (see the module docstring)
    registry = dict(instructions_registry.INSTRUCTION_DICT)

    class PersonNames(instructions.PersonNameCountChecker):
        """HEAD: a listed name counts where it matches as a whole word (case-sensitive), not as a
        substring ("Leo" is not in "Leonard")."""

        def check_following(self, value):
            found = {name for name, pattern in zip(PERSON_NAMES, _patterns()) if pattern.search(value)}
            return len(found) >= self._num_person_names

    class Pronouns(instructions.PronounCountChecker):
        """HEAD: NLTK word tokens of the lowercased text ("/" read as a space), counted with repeats
        against HEAD's 63 personal, possessive, reflexive, demonstrative, interrogative, relative and
        indefinite pronouns."""

        def check_following(self, value):
            tokens = nltk.word_tokenize(value.replace("/", " ").lower())
            return sum(token in PRONOUNS for token in tokens) >= self._num_pronouns

    class SentenceKeyword(instructions.IncludeKeywordChecker):
        """HEAD: the keyword as a whole word, case-insensitive, in sentence N (NLTK sentences)."""

        def check_following(self, value):
            sentences = nltk.sent_tokenize(value)
            if len(sentences) < self._keyword_position:
                return False
            pattern = r"\b{}\b".format(re.escape(self._keyword))
            return re.search(pattern, sentences[int(self._keyword_position - 1)], re.IGNORECASE) is not None

    class KeywordPosition(instructions.KeywordSpecificPositionChecker):
        """HEAD: word m of sentence n (NLTK sentences; NLTK word tokens holding a letter or digit)
        equals the keyword, case-insensitive."""

        def check_following(self, value):
            sentences = nltk.sent_tokenize(value)
            if len(sentences) < self._n:
                return False
            words = [t for t in nltk.word_tokenize(sentences[self._n - 1]) if any(c.isalnum() for c in t)]
            if len(words) < self._m:
                return False
            return words[self._m - 1].lower() == self._keyword.lower()

    class WordsPosition(instructions.WordsPositionChecker):
        """HEAD: NLTK word tokens; the second and the second-to-last word, or the third-to-last when the
        last token is punctuation, equal the keyword, case-insensitive. Quirk kept: "is punctuation" is
        a substring test on ``string.punctuation``, and NLTK turns a closing '"' into "''", which is
        not, so an answer ending '... word."' compares the '.' token and fails."""

        def check_following(self, value):
            words = nltk.word_tokenize(value)
            if len(words) < 2:
                return False
            keyword = self._keyword.lower()
            if words[-1] in string.punctuation:
                return len(words) >= 3 and words[1].lower() == words[-3].lower() == keyword
            return words[1].lower() == words[-2].lower() == keyword

    class RepeatSpan(instructions.RepeatSpanChecker):
        """HEAD: the answer, stripped and lowercased, equals the prompt's characters n_start..n_end
        (inclusive), stripped and lowercased. Quirk kept: the prompts ask for word indices; HEAD reads
        character indices. Defaults are drawn only for arguments that are None (the package also draws
        for n_start = 0)."""

        def build_description(self, prompt_to_repeat=None, n_start=None, n_end=None):
            if not prompt_to_repeat:
                raise ValueError("repeat:repeat_span needs prompt_to_repeat")
            self._prompt_to_repeat = prompt_to_repeat
            last = len(prompt_to_repeat) - 1  # HEAD draws missing indices over characters
            self._n_start = random.randint(0, last - 1) if n_start is None else n_start
            self._n_end = random.randint(self._n_start + 1, last) if n_end is None else n_end
            self._description_pattern = ("Copy the span of words that lies between (and including) index {n_start} "
                                         "and {n_end}, the indices are character indices!")
            return self._description_pattern.format(n_start=self._n_start, n_end=self._n_end)

        def check_following(self, value):
            expected = self._prompt_to_repeat[self._n_start:self._n_end + 1]
            return value.strip().lower() == expected.strip().lower()

    class TitleCase(instructions.TitleCaseChecker):
        """HEAD, over NLTK word tokens starting with a letter: a one-letter token fails if lowercase
        (so "a" fails); a longer one fails if its first letter is lowercase and the rest is all upper
        or all lower case ("n't" fails); anything else passes (NASA, McDonald, iPhone)."""

        def check_following(self, value):
            for word in nltk.word_tokenize(value):
                if not word or not word[0].isalpha():
                    continue
                if len(word) == 1:
                    if word.islower():
                        return False
                    continue
                if word[0].isupper() and word[1:].islower():
                    continue
                if word[0].islower() and (word[1:].isupper() or word[1:].islower()):
                    return False
            return True

    class QuoteUnquote(instructions.QuoteExplanationChecker):
        """HEAD: drop every mention of the character '"' (the three characters ''"''), then all
        whitespace; fail on an empty quotation ('""') or when the text, stripped of digits and of
        punctuation other than '"', ends with '"'. Quirk kept: HEAD's mapping of curly quotes to '"'
        lost its curly characters (official commit 6fffd61) and does nothing, so curly quotes are
        ordinary characters."""

        def check_following(self, value):
            value = "".join(value.replace("'\"'", "").split())
            if '""' in value:
                return False
            stripped = value.strip(string.digits + string.punctuation.replace('"', ""))
            return not (stripped and stripped[-1] == '"')

    registry.update({
        "count:person_names": PersonNames, "count:pronouns": Pronouns, "sentence:keyword": SentenceKeyword,
        "words:keywords_specific_position": KeywordPosition, "words:words_position": WordsPosition,
        "repeat:repeat_span": RepeatSpan, "format:title_case": TitleCase, "format:quote_unquote": QuoteUnquote,
    })
    return registry


#: count:person_names' list (the checker's own description names them; HEAD's order).
PERSON_NAMES = (
    "Emma", "Liam", "Sophia", "Jackson", "Olivia", "Noah", "Ava", "Lucas", "Isabella", "Mason", "Mia", "Ethan",
    "Charlotte", "Alexander", "Amelia", "Benjamin", "Harper", "Leo", "Zoe", "Daniel", "Chloe", "Samuel", "Lily",
    "Matthew", "Grace", "Owen", "Abigail", "Gabriel", "Ella", "Jacob", "Scarlett", "Nathan", "Victoria", "Elijah",
    "Layla", "Nicholas", "Audrey", "David", "Hannah", "Christopher", "Penelope", "Thomas", "Nora", "Andrew", "Aria",
    "Joseph", "Claire", "Ryan", "Stella", "Jonathan",
)

#: count:pronouns' set at HEAD.
PRONOUNS = frozenset("""
    i me we us you he him she her it they them
    my mine our ours your yours his hers its their theirs
    myself ourselves yourself yourselves himself herself itself themselves
    this that these those
    who whom whose which what whoever whomever whatever whichever
    anybody anyone anything everybody everyone everything nobody nothing somebody someone something
    each either neither both all some any none
""".split())


@cache
def _patterns() -> tuple[re.Pattern, ...]:
    """count:person_names' names as whole-word patterns (compiled once)."""
    return tuple(re.compile(r"\b{}\b".format(re.escape(name))) for name in PERSON_NAMES)


@cache
def missing_nltk_data() -> tuple[str, ...]:
    """The resources of :data:`NLTK_NEEDS` NLTK cannot find here."""
    import nltk

    missing = []
    for resource in NLTK_NEEDS:
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(resource)
    return tuple(missing)


def unscorable_reason(instruction_ids: list[str], response: str) -> str | None:
    """Why ``response`` to a prompt with these instructions cannot be scored here (a checker's NLTK
    data is missing), or None. A blank response fails every instruction without running a checker,
    so it is always scored (as HEAD does)."""
    if not response.strip():
        return None
    for resource in missing_nltk_data():
        needing = sorted(set(instruction_ids) & set(NLTK_NEEDS[resource]))
        if needing:
            return f"{needing[0]} needs NLTK's {resource.split('/')[-1]}, which is not installed"
    return None


def _instruction(registry: dict, instruction_id: str, kwargs: dict, prompt: str):
    checker = registry[instruction_id](instruction_id)
    checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})
    args = checker.get_instruction_args()
    if args and "prompt" in args:
        checker.build_description(prompt=prompt)
    return checker


def follows(record: dict, response: str) -> tuple[list[bool], list[bool]]:
    """One prompt's (strict, loose) verdict per instruction, as HEAD's evaluation_lib gives them."""
    from if_verifiable.common import get_loose_transformations

    registry = checkers()
    unknown = [i for i in record["instruction_id_list"] if i not in registry]
    if unknown:
        raise ScoringError(f"prompt {record['key']}: unknown IFBench instruction id {unknown[0]!r}")
    pairs = list(zip(record["instruction_id_list"], record["kwargs"], strict=True))
    random.seed(record["prompt"])
    strict = [bool(response and response.strip() and _instruction(registry, i, kw, record["prompt"])
                   .check_following(response)) for i, kw in pairs]
    random.seed(record["prompt"])
    variants = get_loose_transformations(response)
    loose = []
    for instruction_id, kwargs in pairs:
        checker = _instruction(registry, instruction_id, kwargs, record["prompt"])
        loose.append(any(v.strip() and checker.check_following(v) for v in variants))
    return strict, loose


@dataclass
class IFBenchResult:
    metrics: dict[str, float]  # IFEval's four metrics over the scorable prompts, as fractions
    per_instruction: dict[str, dict]  # instruction id -> {"n", "strict", "loose"}
    per_prompt: list[dict]  # key, prompt, response, instruction_id_list, strict, loose, verdicts, unscorable
    num_prompts: int
    num_unscorable: int
    num_empty_responses: int

    def percent(self) -> dict[str, float]:
        return {SHORT[m]: round(100 * self.metrics[m], 2) for m in METRICS}

    def to_json(self) -> dict:
        return {"num_prompts": self.num_prompts, "num_unscorable": self.num_unscorable,
                "num_empty_responses": self.num_empty_responses, "metrics": self.metrics,
                "percent": self.percent(), "per_instruction": self.per_instruction,
                "official_commit": OFFICIAL_COMMIT}


def score(prompts: list[dict], responses: list[str]) -> IFBenchResult:
    """Score ``responses[i]`` against ``prompts[i]`` (IFBench records: key, prompt, instruction_id_list,
    kwargs); prompts that cannot be scored here are counted apart (:func:`unscorable_reason`)."""
    per_prompt = []
    by_type: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"strict": [], "loose": []})
    prompt_strict, prompt_loose, inst_strict, inst_loose = [], [], [], []
    for record, response in zip(prompts, responses, strict=True):
        reason = unscorable_reason(record["instruction_id_list"], response)
        row = {"key": record["key"], "prompt": record["prompt"], "response": response,
               "instruction_id_list": record["instruction_id_list"], "unscorable": reason}
        if reason is None:
            strict, loose = follows(record, response)
            row.update(strict=strict, loose=loose, prompt_strict=all(strict), prompt_loose=all(loose))
            prompt_strict.append(all(strict))
            prompt_loose.append(all(loose))
            inst_strict.extend(strict)
            inst_loose.extend(loose)
            for instruction_id, s, l in zip(record["instruction_id_list"], strict, loose):
                by_type[instruction_id]["strict"].append(s)
                by_type[instruction_id]["loose"].append(l)
        else:
            row.update(strict=None, loose=None, prompt_strict=None, prompt_loose=None)
        per_prompt.append(row)

    def mean(values: list[bool]) -> float:
        return sum(values) / len(values) if values else 0.0

    metrics = dict(zip(METRICS, map(mean, (prompt_strict, inst_strict, prompt_loose, inst_loose))))
    per_instruction = {i: {"n": len(v["strict"]), "strict": mean(v["strict"]), "loose": mean(v["loose"])}
                       for i, v in sorted(by_type.items())}
    return IFBenchResult(metrics, per_instruction, per_prompt, len(prompts),
                         sum(row["unscorable"] is not None for row in per_prompt),
                         sum(1 for r in responses if not r.strip()))
