"""AutoIF's data logic (arXiv 2406.13542): parsing what the supervision model writes, and the filters.

No model and no sandbox here - the stages in :mod:`ifplay.autoif.stages` call these functions with
model outputs and with verifier results from :mod:`ifplay.sandbox.runner`, so every rule is unit-tested.

The pipeline, and where each step's rule lives:

1. Instructions: seeds plus the supervisor's augmentations, deduplicated (:func:`parse_numbered_lines`,
   :func:`merge_instructions`).
2. Verifiers: K answers per instruction, each a JSON ``{"func", "cases"}`` parsed robustly
   (:func:`parse_verifier_answer`).
3. Cross-validation of functions against test cases (:func:`cross_validate`, :class:`CrossValidation`).
4. Back-translation: each kept function is translated back into an instruction; an NLI judgement
   (premise = instruction, hypothesis = back-translation) drops the instruction on contradiction
   (:func:`parse_nli`).
5. Queries: instruction + user queries (:func:`select_queries`, :func:`train_prompt`).
6. Execution-feedback rejection sampling: a response's accuracy is the share of functions that
   accept it (:func:`accuracy`).
7. Quality scores "Score: N" (:func:`parse_score`).
8. SFT data and DPO pairs (:func:`pair_up`).

Thresholds follow the paper by default; the reference code's stricter values are documented beside
each setting in ``workflow/schemas/config.schema.yaml``.
"""

from __future__ import annotations

import ast
import json
import random
import re
from dataclasses import dataclass, field
from typing import Iterable

from ifplay.core.parsing import parse_score as _parse_score

# -- 1. instructions ---------------------------------------------------------------------------
_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.)\]:-]|[-*\u2022]|\(\d+\))\s*")


def normalise_instruction(text: str) -> str:
    """The form instructions are deduplicated by: lower case, single spaces, no final punctuation."""
    return re.sub(r"\s+", " ", text).strip().strip(".!;:").strip().lower()


def read_instruction_lines(text: str) -> list[str]:
    """Instructions of a seed file: one per non-empty line; ``#`` lines are comments."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_numbered_lines(text: str, min_chars: int = 8, max_chars: int = 300) -> list[str]:
    """Instructions in a supervisor's answer: one per line, numbering and bullets removed.

    Lines that are too short or too long, or that look like chatter rather than an instruction
    (end with ":"; start with "Here are"/"Sure"), are skipped.
    """
    found = []
    for line in text.splitlines():
        line = _NUMBERING.sub("", line).strip().strip('"').strip()
        if not min_chars <= len(line) <= max_chars or line.endswith(":"):
            continue
        if re.match(r"(?i)(here (are|is)|sure\b|certainly\b|note\b)", line):
            continue
        found.append(line)
    return found


def merge_instructions(seeds: list[str], generated: list[str]) -> tuple[list[dict], dict]:
    """D_ins = D_seed + D_aug, deduplicated by :func:`normalise_instruction` (first wins).

    Returns ``[{"id", "instruction", "origin": "seed"|"augmented"}]`` and counts.
    """
    seen: set[str] = set()
    records = []
    duplicates = {"seed": 0, "augmented": 0}
    for origin, texts in (("seed", seeds), ("augmented", generated)):
        for text in texts:
            norm = normalise_instruction(text)
            if not norm or norm in seen:
                duplicates[origin] += 1
                continue
            seen.add(norm)
            records.append({"id": f"i{len(records):05d}", "instruction": text.strip(), "origin": origin})
    counts = {"seeds": len(seeds), "augmented_generated": len(generated),
              "augmented_duplicates": duplicates["augmented"], "seed_duplicates": duplicates["seed"],
              "augmented_kept": sum(r["origin"] == "augmented" for r in records), "instructions": len(records)}
    return records, counts


# -- 2. verification functions and test cases -------------------------------------------------------
_FENCE = re.compile(r"```(?:json|JSON|python)?\s*\n?(.*?)```", re.DOTALL)
_FUNC = re.compile(r'"func"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL)
_CASE = re.compile(r'"input"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"output"\s*:\s*"?(true|false|True|False)"?', re.DOTALL)


@dataclass
class VerifierAnswer:
    """One parsed supervisor answer: ``func`` (code defining ``evaluate``) and ``cases``
    (``[input, expected bool]``), or ``error`` saying why nothing usable was found."""

    func: str | None
    cases: list[list] = field(default_factory=list)
    error: str | None = None
    how: str | None = None  # which parsing rule succeeded: json, json-lenient, python-literal, salvage


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span of ``text``, braces inside JSON strings ignored."""
    spans, depth, start, in_str, escape = [], 0, None, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start:i + 1])
    return spans


def _load_object(candidate: str) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(candidate)
        return (value, "json") if isinstance(value, dict) else (None, None)
    except json.JSONDecodeError:
        pass
    try:  # raw newlines and tabs inside strings (models write code with real line breaks)
        value = json.loads(candidate, strict=False)
        return (value, "json-lenient") if isinstance(value, dict) else (None, None)
    except json.JSONDecodeError:
        pass
    try:  # Python literals: single quotes, True/False
        value = ast.literal_eval(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", candidate)))
        return (value, "python-literal") if isinstance(value, dict) else (None, None)
    except Exception:  # noqa: BLE001 - any literal the model wrote that is not a dict of plain values
        return None, None


def _as_bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _cases(raw) -> list[list]:
    """``[{"input", "output"}]`` (or ``[input, output]`` pairs) as ``[[str, bool]]``; bad entries skipped."""
    cases = []
    for case in raw if isinstance(raw, list) else []:
        if isinstance(case, dict):
            text, expected = case.get("input"), _as_bool(case.get("output"))
        elif isinstance(case, (list, tuple)) and len(case) == 2:
            text, expected = case[0], _as_bool(case[1])
        else:
            continue
        if isinstance(text, str) and expected is not None:
            cases.append([text, expected])
    return cases


def parse_verifier_answer(text: str) -> VerifierAnswer:
    """A supervisor's verifier answer as code and test cases, as robustly as the text allows.

    Tried in order, on each fenced block, each balanced ``{...}`` span, then the whole text:
    strict JSON, JSON with raw control characters in strings, a Python literal (single quotes,
    ``True``); last, a salvage that reads the ``"func"`` string and the ``"input"/"output"`` pairs
    with regular expressions (a model that breaks the JSON after the function still counts).
    ``func`` must define ``evaluate``; cases with a non-string input or an output other than a
    boolean or "true"/"false" are skipped. Errors: ``no-json``, ``no-func``, ``no-evaluate``.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates += _balanced_objects(text) + [text]
    saw_object = False
    for candidate in candidates:
        obj, how = _load_object(candidate.strip())
        if obj is None:
            continue
        saw_object = True
        func = obj.get("func")
        if isinstance(func, str) and "def evaluate" in func:
            return VerifierAnswer(func=func, cases=_cases(obj.get("cases")), how=how)
    match = _FUNC.search(text)
    if match:
        try:
            func = json.loads(f'"{match.group(1)}"', strict=False)
        except json.JSONDecodeError:
            func = None
        if func and "def evaluate" in func:
            cases = []
            for raw_input, raw_output in _CASE.findall(text[match.end():]):
                try:
                    cases.append([json.loads(f'"{raw_input}"', strict=False), raw_output.lower() == "true"])
                except json.JSONDecodeError:
                    continue
            return VerifierAnswer(func=func, cases=cases, how="salvage")
        return VerifierAnswer(func=None, error="no-evaluate")
    return VerifierAnswer(func=None, error="no-func" if saw_object else "no-json")


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def nearest_examples(instruction: str, examples: list[dict], shots: int) -> list[dict]:
    """The ``shots`` worked examples whose instructions share the most words with ``instruction``
    (Jaccard similarity of lower-case word sets; ties keep file order), most similar last, so the
    closest one sits right above the instruction."""
    words = _words(instruction)

    def similarity(example: dict) -> float:
        other = _words(example["instruction"])
        return len(words & other) / len(words | other) if words | other else 0.0

    ranked = sorted(range(len(examples)), key=lambda i: (-similarity(examples[i]), i))[:shots]
    return [examples[i] for i in reversed(ranked)]


def format_example(example: dict) -> str:
    """A worked example as the few-shot verifier template shows it: the instruction, then the answer
    JSON on one line."""
    answer = json.dumps({"func": example["func"], "cases": example["cases"]}, ensure_ascii=False)
    return f"Instruction: {example['instruction']}\n{answer}"


# -- 3. cross-validation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CrossValidation:
    """Settings of the cross-validation filter (paper values by default).

    A case is kept when the share of compiled functions whose result equals its expected output
    is above ``case_agreement`` (paper 0.5; the reference code keeps a case any function matches,
    i.e. 0.0). A function is kept when its accuracy on the kept cases is above
    ``function_accuracy`` (paper 0.5; code >= 0.8). An instruction is kept with at least
    ``min_functions`` functions and ``min_cases`` cases left (paper 1 and 1; code 3 and 10).
    ``enabled=False`` (the paper's "w/o Cross Verification" ablation) keeps every compiled
    function and every case; an instruction then needs only one compiled function.
    """

    enabled: bool = True
    case_agreement: float = 0.5
    function_accuracy: float = 0.5
    min_functions: int = 1
    min_cases: int = 1


def unique(items: Iterable, key=lambda x: x) -> list:
    seen, out = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def cross_validate(funcs: list[str], cases: list[list], results: list[list[bool | None]],
                   settings: CrossValidation) -> dict:
    """Apply the filter to one instruction. ``results[f][c]``: function f on case c's input
    (``None`` = error). A function that errors on every case (syntax, no ``evaluate``, crashes)
    does not count as compiled.

    Returns ``{"keep", "reason", "functions": [[code, accuracy]], "cases": [[input, expected]],
    "case_pass_rates": [share of kept functions accepting each kept case], "compiled"}``.
    """
    compiled = [f for f in range(len(funcs)) if any(r is not None for r in results[f])]
    if not settings.enabled:
        settings = CrossValidation(enabled=True, case_agreement=-1.0, function_accuracy=-1.0, min_functions=1,
                                   min_cases=0)
        if not cases:  # nothing to measure accuracy on: every compiled function stays
            return {"keep": bool(compiled), "reason": None if compiled else "no-compiled-function",
                    "compiled": len(compiled), "functions": [[funcs[f], 0.0] for f in compiled], "cases": [],
                    "case_pass_rates": []}
    kept_cases = []
    for c, (_, expected) in enumerate(cases):
        if not compiled:
            break
        agree = sum(results[f][c] is expected for f in compiled) / len(compiled)
        if agree > settings.case_agreement:
            kept_cases.append(c)
    kept_funcs = []
    for f in compiled:
        if not kept_cases:
            break
        acc = sum(results[f][c] is cases[c][1] for c in kept_cases) / len(kept_cases)
        if acc > settings.function_accuracy:
            kept_funcs.append((f, acc))
    if not compiled:
        reason = "no-compiled-function"
    elif len(kept_funcs) < settings.min_functions:
        reason = "too-few-functions"
    elif len(kept_cases) < settings.min_cases:
        reason = "too-few-cases"
    else:
        reason = None
    pass_rates = [sum(results[f][c] is True for f, _ in kept_funcs) / len(kept_funcs) if kept_funcs else 0.0
                  for c in kept_cases]
    return {"keep": reason is None, "reason": reason, "compiled": len(compiled),
            "functions": [[funcs[f], round(acc, 4)] for f, acc in kept_funcs],
            "cases": [cases[c] for c in kept_cases], "case_pass_rates": pass_rates}


# -- 4. back-translation ---------------------------------------------------------------------------
NLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI = re.compile(r"\b(entail\w*|neutral|contradict\w*)\b", re.IGNORECASE)


def parse_nli(text: str) -> str | None:
    """The first NLI label a judge text names ("entails"/"contradicts" count), or ``None``."""
    match = _NLI.search(text)
    if not match:
        return None
    word = match.group(1).lower()
    return "entailment" if word.startswith("entail") else "contradiction" if word.startswith("contradict") else "neutral"


def clean_back_translation(text: str) -> str:
    """The back-translated instruction: the first non-empty line, without a leading label or quotes."""
    for line in text.splitlines():
        line = re.sub(r"(?i)^\s*instruction\s*:\s*", "", line).strip().strip('"').strip()
        if line:
            return line
    return ""


# -- 5. queries --------------------------------------------------------------------------------
def query_text(record: dict) -> str | None:
    """A user query from a record: ``query``, ``prompt``, the first human/user turn of ShareGPT-style
    ``conversations`` (``from``/``value``) or of ``messages`` (``role``/``content``)."""
    for name in ("query", "prompt", "instruction"):
        if isinstance(record.get(name), str):
            return record[name]
    for name, role_key, text_key in (("conversations", "from", "value"), ("messages", "role", "content")):
        turns = record.get(name)
        if isinstance(turns, list):
            for turn in turns:
                if isinstance(turn, dict) and turn.get(role_key) in ("human", "user") \
                        and isinstance(turn.get(text_key), str):
                    return turn[text_key]
    return None


def select_queries(queries: list[str], n: int, rng: random.Random, min_chars: int = 20,
                   max_chars: int = 300) -> list[str]:
    """``n`` distinct queries of acceptable length, drawn at random (AutoIF keeps 20-300 characters)."""
    pool = unique(q.strip() for q in queries if min_chars <= len(q.strip()) <= max_chars)
    return rng.sample(pool, min(n, len(pool)))


def train_prompt(query: str, instruction: str) -> str:
    """The user turn of SFT and DPO examples: the query, then the instruction (the reference code's
    ``query + " " + instruction + "."``, without doubling final punctuation)."""
    instruction = instruction.strip()
    if instruction and instruction[-1] not in ".!?":
        instruction += "."
    return f"{query.strip()} {instruction}"


# -- 6. execution feedback --------------------------------------------------------------------------
def accuracy(results: list[bool | None]) -> float:
    """Share of functions that accept a response (errors count as rejection)."""
    return sum(r is True for r in results) / len(results) if results else 0.0


# -- 7. quality scores ------------------------------------------------------------------------------
def parse_score(text: str) -> float | None:
    """The last "Score: N" in a quality judge's text, 0-10 (:func:`ifplay.core.parsing.parse_score`)."""
    return _parse_score(text, maximum=10)


# -- 8. training data -------------------------------------------------------------------------------
def pair_up(chosen: list[str], rejected: list[str], rng: random.Random, per_side: int = 2) -> list[tuple[str, str]]:
    """DPO pairs of one prompt, as AutoIF's code builds them: if either side has at least two
    candidates, up to ``per_side`` x ``per_side`` pairs from a random sample of each side;
    otherwise the single 1 x 1 pair (none when a side is empty)."""
    chosen, rejected = unique(chosen), unique(rejected)
    if not chosen or not rejected:
        return []
    if len(chosen) >= 2 or len(rejected) >= 2:
        chosen = rng.sample(chosen, min(per_side, len(chosen)))
        rejected = rng.sample(rejected, min(per_side, len(rejected)))
    else:
        chosen, rejected = chosen[:1], rejected[:1]
    return [(c, r) for c in chosen for r in rejected if c != r]


def conversation(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def dpo_record(user: str, chosen: str, rejected: str, **extra) -> dict:
    """One pair in TRL's conversational preference format (what ``ifplay dpo`` reads)."""
    return {"prompt": [{"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], **extra}


def functions_of(record: dict) -> list[str]:
    """The verification functions of a query record: ``eval_func`` as ``[[code, accuracy]]`` (AutoIF's
    files) or ``[code]``, or ``eval_funcs``."""
    raw = record.get("eval_funcs", record.get("eval_func"))
    if isinstance(raw, str):
        raw = json.loads(raw)
    funcs = []
    for item in raw or []:
        code = item[0] if isinstance(item, (list, tuple)) else item
        if isinstance(code, str):
            funcs.append(code)
    return unique(funcs)
