"""Judging whether a response follows its instruction: a model's voted verdicts, or IFEval's checkers.

A judgement is always a :class:`VotedJudgement`: several judge texts ("critiques"), each ending in
a final verdict line, reduced to a majority label and a value in [0, 1]. SPaR's refiner judges each
response 5 times (T=0.7) and keeps the majority label and the first critique that agrees with it;
the tree search uses the value ``#Yes / (#Yes + #No)`` of a node to decide when to stop.

Two judges implement :class:`Judge`:

- :class:`ModelJudge` renders a judge prompt template and samples ``votes`` critiques from a
  :class:`~ifplay.generation.backends.Backend`, one ``chat`` call for a whole batch of items.
- :class:`VerifierJudge` checks by execution: IFEval-style prompts (records with
  ``instruction_id_list`` and ``kwargs``) with lm-eval's strict checkers, via :mod:`ifplay.scoring.ifeval`
  (an exact oracle); AutoIF queries (records with ``eval_func``) by running every verification
  function on the response in the verifier sandbox (:mod:`ifplay.sandbox.runner`), AutoIF's execution
  feedback.

Both cache judgements in memory by (prompt text, response), so no pair is judged twice in a
process. A judge may hold resources (the verifier's sandbox workers): :meth:`Judge.close` frees them.
"""

from __future__ import annotations

import dataclasses
import random
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

from ifplay.generation.backends import Backend, SamplingParams
from ifplay.generation.templates import check_template, joined, load_template, template_turns

JUDGES = ("model", "verifier")

# A final-verdict marker: "Final Judgement", "Final Judgment" or "Verdict", optionally followed by a
# parenthetical such as "(Yes or No)" and a separator. Its answer runs to the next marker or line end.
_MARKER = re.compile(
    r"\b(?:final\s+judg(?:e)?ment|verdict)\b\s*(?:\([^)\n]*\))?\s*(?:[:=\-\u2013\u2014]|\bis\b)?",
    re.IGNORECASE,
)
_YES = re.compile(r"\byes\b", re.IGNORECASE)
_NO = re.compile(r"\bno\b", re.IGNORECASE)
_MARKDOWN = str.maketrans("", "", "*_#`")


def parse_verdict(text: str) -> int | None:
    """The final verdict of one judge text: 1 (yes), 0 (no) or ``None`` (invalid).

    Rules, in order:

    1. Markdown emphasis characters (``* _ # ```) are removed and the text is read line by line.
    2. A *marker* is "Final Judgement", "Final Judgment" or "Verdict" (any case), optionally
       followed by a parenthetical and a separator (``:``, ``-``, ``=``, a dash or "is"). Its
       answer is the rest of the line up to the next marker, or the next non-empty line when
       that is empty ("Final Judgement:" alone on its line).
    3. Only markers whose answer contains the word "yes" or "no" count; the LAST one decides.
       Trailing punctuation and brackets do not matter ("**Yes**.", "(No)").
    4. If that answer holds both words ("Yes and No", an echoed "(Yes or No)"), the verdict is
       contradictory: ``None``. If no marker counts, ``None``.
    """
    lines = [line.translate(_MARKDOWN) for line in text.splitlines()]
    verdict: int | None = None
    for index, line in enumerate(lines):
        markers = list(_MARKER.finditer(line))
        for marker, following in zip(markers, markers[1:] + [None]):
            answer = line[marker.end():following.start() if following else len(line)].strip()
            if not answer:
                answer = next((later.strip() for later in lines[index + 1:] if later.strip()), "")
            yes, no = bool(_YES.search(answer)), bool(_NO.search(answer))
            if yes or no:
                verdict = None if yes and no else int(yes)
    return verdict


@dataclass
class VotedJudgement:
    """Several judge texts about one (prompt, response) pair, reduced by majority vote.

    ``label``: 1 (yes) or 0 (no) by majority of the valid votes; ``None`` when every vote is
    invalid or the valid votes tie. ``votes``: each text's parsed verdict (1, 0 or ``None``).
    ``critiques``: the raw judge texts. ``critique``: the first text whose vote equals ``label``
    (``None`` without a label). ``n_invalid``: votes that could not be parsed. ``tie``: the valid
    votes split evenly (at least one each). ``value``: ``#yes / (#yes + #no)``, 0.0 without valid votes.
    ``resamples``: how many times the votes were drawn again because they tied (the votes above
    are the last draw's).
    """

    label: int | None
    votes: list[int | None]
    critiques: list[str]
    critique: str | None
    n_invalid: int
    tie: bool
    value: float
    resamples: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> VotedJudgement:
        return cls(**data)

    @classmethod
    def from_record(cls, record: dict) -> VotedJudgement:
        """The judgement inside a judged-response record (its fields beside key, prompt, response)."""
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


def vote(texts: list[str]) -> VotedJudgement:
    """Parse each judge text with :func:`parse_verdict` and take the majority."""
    votes = [parse_verdict(text) for text in texts]
    yes, no = votes.count(1), votes.count(0)
    tie = yes == no and yes > 0
    label = None if yes == no else int(yes > no)
    critique = next((text for text, v in zip(texts, votes) if v == label), None) if label is not None else None
    value = yes / (yes + no) if yes + no else 0.0
    return VotedJudgement(label=label, votes=votes, critiques=list(texts), critique=critique,
                          n_invalid=votes.count(None), tie=tie, value=value)


class Judge(ABC):
    """Judges (prompt record, response) pairs, caching every judgement by (prompt text, response).

    A prompt record is ``{"key", "prompt", "instruction_id_list"?, "kwargs"?}``. ``cache_hits``
    counts pairs answered from the cache (or judged once for several equal pairs in one batch);
    ``cache_misses`` counts pairs actually judged; ``calls`` counts :meth:`judge` calls.
    """

    def __init__(self):
        self._cache: dict[tuple[str, str], VotedJudgement] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.calls = 0

    def judge(self, items: list[tuple[dict, str]]) -> list[VotedJudgement]:
        """One judgement per item, in input order; uncached pairs are judged in one batch."""
        self.calls += 1
        todo: dict[tuple[str, str], tuple[dict, str]] = {}
        for record, response in items:
            pair = (record["prompt"], response)
            if pair in self._cache or pair in todo:
                self.cache_hits += 1
            else:
                todo[pair] = (record, response)
        if todo:
            self.cache_misses += len(todo)
            self._cache.update(zip(todo, self._evaluate(list(todo.values()))))
        return [self._cache[(record["prompt"], response)] for record, response in items]

    @abstractmethod
    def _evaluate(self, items: list[tuple[dict, str]]) -> list[VotedJudgement]:
        """Judge distinct, uncached pairs (one judgement each, in order)."""

    def close(self) -> None:
        """Free what the judge holds (nothing here; the verifier's sandbox workers)."""

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ModelJudge(Judge):
    """A model judges by writing ``votes`` critiques per pair from a judge prompt template.

    The template (``{prompt}``, ``{response}``) is the user turn, optionally followed by an
    assistant prefill (:func:`template_turns`); a judgement's text is prefill + completion. All
    uncached pairs of a :meth:`judge` call go to ``backend.chat`` in one call with ``n=votes``. Temperature 0 with
    several votes is allowed (greedy repeats; a deterministic backend then votes unanimously).

    Ties: SPaR's release draws a node's votes again when they tie, up to 3 times. Pairs whose
    votes tie are re-judged (all of them in one more backend call, with a new seed) up to
    ``tie_resamples`` times; the last draw stands, and a tie left after that has no label.
    """

    def __init__(self, backend: Backend, template_text: str, votes: int = 5, temperature: float = 0.7,
                 top_p: float = 1.0, max_new_tokens: int = 512, seed: int = 0, tie_resamples: int = 0):
        super().__init__()
        check_template(template_text, "judge", "judge template")
        if tie_resamples < 0:
            raise ValueError(f"tie_resamples must be >= 0, got {tie_resamples}")
        self.backend = backend
        self.template = template_text
        self.tie_resamples = tie_resamples
        self.params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                     n=votes, seed=seed)

    def render(self, record: dict, response: str) -> list[dict]:
        """The judge conversation for one pair."""
        return template_turns(self.template, prompt=record["prompt"], response=response)

    def _evaluate(self, items: list[tuple[dict, str]]) -> list[VotedJudgement]:
        conversations = [self.render(record, response) for record, response in items]
        judgements = self._vote(conversations, self.params)
        for draw in range(1, self.tie_resamples + 1):
            tied = [index for index, judgement in enumerate(judgements) if judgement.tie]
            if not tied:
                break
            params = dataclasses.replace(self.params, seed=self.params.seed + 7919 * draw)
            for index, judgement in zip(tied, self._vote([conversations[i] for i in tied], params)):
                judgement.resamples = draw
                judgements[index] = judgement
        return judgements

    def _vote(self, conversations: list[list[dict]], params: SamplingParams) -> list[VotedJudgement]:
        completions = self.backend.chat(conversations, params, progress="judge")
        return [vote([joined(conversation, text) for text in texts])
                for conversation, texts in zip(conversations, completions)]


class VerifierJudge(Judge):
    """A judge that checks by execution: IFEval's strict checkers or AutoIF's verification functions.

    Every judgement has ``votes == [label]`` and a critique in a model judgement's shape:
    "Step-by-step verification:", one numbered line per check, then "Final Judgement: Yes" or
    "Final Judgement: No". The kind of a prompt record decides how it is checked:

    - IFEval-style records (``instruction_id_list`` and ``kwargs``): lm-eval's strict checkers
      (lm-eval's code, seeded as :mod:`ifplay.scoring.ifeval` does). Label 1 iff every instruction passes;
      value 1.0 or 0.0; a line per instruction (id, lm-eval's description, satisfied / not satisfied).
    - AutoIF records (``eval_func``, :func:`ifplay.autoif.core.functions_of`): every verification function
      runs on the response in the verifier sandbox. value = the share of functions that accept the
      response (an error counts as rejection, as in AutoIF); label 1 iff value > 0.5 (AutoIF's
      threshold). A line per function saying what it checks (the record's ``back_instruction`` of
      that function when the back-translation stage wrote one, else the record's ``instruction``)
      and passed / failed / error (timeout, exception:ValueError, ...): execution feedback the
      refiner can act on.

    A record with neither raises ``ValueError`` naming its prompt key. The sandbox (``timeout``
    seconds per call, ``memory_mb`` per worker, ``workers`` processes: one per core by default) is
    started on the first AutoIF record and kept until :meth:`close`; all AutoIF pairs of one
    :meth:`judge` call run in one :meth:`ifplay.sandbox.runner.Sandbox.run`. lm-eval is loaded on the
    first IFEval record.
    """

    def __init__(self, timeout: float = 3.0, memory_mb: int = 512, workers: int | None = None):
        super().__init__()
        if timeout <= 0 or memory_mb < 64:
            raise ValueError(f"verifier judge: timeout must be > 0 and memory_mb >= 64, got {timeout}, {memory_mb}")
        self.timeout = float(timeout)
        self.memory_mb = int(memory_mb)
        self.workers = workers
        self._utils = None
        self._sandbox = None

    @property
    def sandbox(self):
        """The verifier sandbox, started on first use (one per judge)."""
        if self._sandbox is None:
            from ifplay.sandbox.runner import make_sandbox

            self._sandbox = make_sandbox(self.timeout, self.memory_mb, self.workers)
        return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def _evaluate(self, items: list[tuple[dict, str]]) -> list[VotedJudgement]:
        from ifplay.autoif import core as autoif

        kinds = []
        for record, _ in items:
            if "instruction_id_list" in record and "kwargs" in record:
                kinds.append("ifeval")
            elif "eval_func" in record or "eval_funcs" in record:
                if not autoif.functions_of(record):
                    raise ValueError(f"verifier judge: prompt key {record.get('key')!r} has an empty eval_func "
                                     "(no verification function to run)")
                kinds.append("autoif")
            else:
                missing = [name for name in ("instruction_id_list", "kwargs") if name not in record]
                raise ValueError(f"verifier judge: prompt key {record.get('key')!r} has no {' or '.join(missing)} "
                                 "and no eval_func (only IFEval-style records and AutoIF queries with "
                                 "verification functions can be verified)")
        executed = self._execute([pair for pair, kind in zip(items, kinds) if kind == "autoif"])
        judgements = []
        for (record, response), kind in zip(items, kinds):
            judgements.append(self._verify(record, response) if kind == "ifeval"
                              else self._feedback(record, next(executed)))
        return judgements

    # -- AutoIF's verification functions --
    def _execute(self, items: list[tuple[dict, str]]):
        """Every function of every pair in ONE sandbox run; yields each pair's results in order."""
        from ifplay.autoif import core as autoif
        from ifplay.sandbox.runner import execute

        if not items:  # no sandbox for IFEval-only batches
            return iter([])
        results = execute(self.sandbox, [(autoif.functions_of(record), [response]) for record, response in items])
        return iter([[row[0] for row in job] for job in results])

    def _feedback(self, record: dict, results: list) -> VotedJudgement:
        from ifplay.autoif import core as autoif

        value = autoif.accuracy([r.result for r in results])
        label = int(value > 0.5)
        back = record.get("back_instruction") or []
        lines = ["Step-by-step verification:"]
        for number, result in enumerate(results, start=1):
            what = back[number - 1] if number <= len(back) and back[number - 1] else record.get("instruction")
            what = " ".join(str(what).split()) if what else f"verification function {number}"
            if result.error is not None:
                status = f"error ({result.error})"
            else:
                status = "passed" if result.result else "failed"
            lines.append(f"{number}. {what}: {status}")
        lines.append(f"Final Judgement: {'Yes' if label else 'No'}")
        critique = "\n".join(lines)
        return VotedJudgement(label=label, votes=[label], critiques=[critique], critique=critique,
                              n_invalid=0, tie=False, value=value)

    # -- IFEval's checkers --
    @property
    def utils(self):
        if self._utils is None:
            from ifplay.scoring import ifeval

            self._utils = ifeval._checkers()  # writes punkt_tab before lm-eval is imported, seeds langdetect
        return self._utils

    def _verify(self, record: dict, response: str) -> VotedJudgement:
        example = self.utils.InputExample(key=record["key"], instruction_id_list=record["instruction_id_list"],
                                          prompt=record["prompt"], kwargs=record["kwargs"])
        random.seed(record["prompt"])  # the same seeding rule as ifplay.scoring.ifeval.score
        passed = self.utils.test_instruction_following_strict(example, response).follow_instruction_list
        label = int(all(passed))
        lines = ["Step-by-step verification:"]
        for number, (inst_id, description, ok) in enumerate(
                zip(record["instruction_id_list"], self._descriptions(record), passed), start=1):
            lines.append(f"{number}. {inst_id} ({description}): {'satisfied' if ok else 'not satisfied'}")
        lines.append(f"Final Judgement: {'Yes' if label else 'No'}")
        critique = "\n".join(lines)
        return VotedJudgement(label=label, votes=[label], critiques=[critique], critique=critique,
                              n_invalid=0, tie=False, value=float(label))

    def _descriptions(self, record: dict) -> list[str]:
        """lm-eval's description of each instruction, built with the kwargs the strict test uses."""
        random.seed(record["prompt"])  # descriptions draw defaults at random only for missing kwargs
        registry = self.utils.instructions_registry.INSTRUCTION_DICT
        descriptions = []
        for inst_id, kwargs in zip(record["instruction_id_list"], record["kwargs"]):
            instruction = registry[inst_id](inst_id)
            descriptions.append(instruction.build_description(**{k: v for k, v in kwargs.items() if v}))
        return descriptions


def make_judge(kind: str, backend: Backend | None = None, template_path: str | Path | None = None,
               **params) -> Judge:
    """Build a judge by name: ``"model"`` (needs ``backend`` and ``template_path``; ``params`` go to
    :class:`ModelJudge`) or ``"verifier"`` (``params``: the sandbox limits ``timeout``, ``memory_mb``
    and ``workers`` of :class:`VerifierJudge`)."""
    if kind == "model":
        if backend is None or template_path is None:
            raise ValueError("the model judge needs a backend and a judge template path")
        return ModelJudge(backend, load_template(template_path, "judge"), **params)
    if kind == "verifier":
        unknown = sorted(set(params) - {"timeout", "memory_mb", "workers"})
        if unknown:
            raise ValueError(f"the verifier judge takes only timeout, memory_mb and workers, got {', '.join(unknown)}")
        return VerifierJudge(**params)
    raise ValueError(f"unknown judge '{kind}' (choices: {', '.join(JUDGES)})")
