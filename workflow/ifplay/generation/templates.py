"""Prompt templates: ``str.format`` files with named placeholders, split into chat turns.

A template may prefill the assistant turn: the text after a line ``<<<assistant>>>`` begins the
answer, which the model continues (SPaR's judge prompts, the prompt evolution). Each kind of
template has a fixed set of placeholders (:data:`TEMPLATE_FIELDS`), checked when it is loaded.
"""

from __future__ import annotations

import string
from pathlib import Path

#: Placeholders each kind of prompt template must contain (Python ``str.format`` fields).
TEMPLATE_FIELDS = {
    "judge": ("prompt", "response"),
    "refine": ("prompt", "response", "critique"),
    # SPaR's prompt evolution (config/prompts/evolve.txt, ifplay.spar.evolution)
    "evolution": ("prompt", "main_constraint", "other_constraints"),
    # AutoIF's supervisor prompts (config/prompts/autoif_*.txt, ifplay.autoif.stages)
    "autoif_augment": ("seeds", "n"),
    "autoif_verifier": ("instruction",),
    "autoif_verifier_fewshot": ("instruction", "examples"),
    "autoif_backtrans": ("function",),
    "autoif_nli": ("premise", "hypothesis"),
    "autoif_query": ("instruction", "query"),
    "autoif_score": ("instruction", "query", "response"),
    # Self-Rewarding's LLM-as-a-Judge rubric (config/prompts/self_rewarding_rubric*.txt, ifplay.baselines)
    "rubric": ("prompt", "response"),
    # Meta-Rewarding's meta-judge: two judgements of one response (config/prompts/meta_judge*.txt)
    "meta_judge": ("prompt", "response", "judgement_a", "judgement_b"),
}

ASSISTANT_MARKER = "<<<assistant>>>"


def template_turns(template_text: str, **fields) -> list[dict]:
    """A template as chat turns: the text before a line ``<<<assistant>>>`` is the user turn; the
    text after it (if any) begins the assistant's answer, which the model then continues (a
    prefill, e.g. "Final Judgement:" so that a small model gives its verdict first)."""
    user, marker, prefix = template_text.partition(ASSISTANT_MARKER)
    turns = [{"role": "user", "content": user.rstrip("\n").format(**fields) if marker else user.format(**fields)}]
    if marker and prefix.strip():
        turns.append({"role": "assistant", "content": prefix.strip("\n").format(**fields)})
    return turns


def joined(conversation: list[dict], completion: str) -> str:
    """The full assistant answer: a prefilled start plus the model's continuation."""
    if conversation[-1]["role"] == "assistant":
        return conversation[-1]["content"] + completion
    return completion


def check_template(text: str, kind: str, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``text`` has exactly the placeholders of ``kind``."""
    if kind not in TEMPLATE_FIELDS:
        raise ValueError(f"unknown template kind '{kind}' (choices: {', '.join(TEMPLATE_FIELDS)})")
    try:
        found = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as err:
        raise ValueError(f"{source}: not a valid format template ({err}); write literal braces as {{{{ }}}}") from None
    required = TEMPLATE_FIELDS[kind]
    missing = [name for name in required if name not in found]
    unknown = sorted(found - set(required))
    if missing:
        raise ValueError(f"{source}: {kind} template lacks placeholder(s) "
                         + ", ".join("{" + name + "}" for name in missing))
    if unknown:
        raise ValueError(f"{source}: {kind} template has unknown placeholder(s) "
                         + ", ".join("{" + name + "}" for name in unknown))


def load_template(path: str | Path, kind: str = "judge") -> str:
    """Read a prompt template and check its placeholders (``TEMPLATE_FIELDS[kind]``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such template file")
    text = path.read_text(encoding="utf-8")
    check_template(text, kind, str(path))
    return text
