"""What judges write: the score of a scoring judge ("Score: N"), shared by AutoIF's 0-10 quality
filter (:mod:`ifplay.autoif.core`) and Self-Rewarding's additive 0-5 rubric
(:mod:`ifplay.baselines.self_rewarding`), and a meta-judge's verdict ("Winner: Judgement A",
:mod:`ifplay.baselines.meta_rewarding`). Pure text parsing; no other ifplay module is imported."""

from __future__ import annotations

import re

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^\s*\**\s*(\d+(?:\.\d+)?)")
_WINNER = re.compile(r"winner\s*[:=]?\s*\**\s*(?:judge?ment\s*)?\**\s*\(?([AB])\b", re.IGNORECASE)


def parse_score(text: str, maximum: float = 10) -> float | None:
    """The last "Score: N" in a scoring judge's text (AutoIF's 0-10 quality score, Self-Rewarding's
    additive 0-5 rubric); a text that starts with a number (a template prefilled with "Score:")
    gives that number. Markdown emphasis around the number is allowed ("Score: **4**"). Outside
    ``[0, maximum]`` or missing: ``None``."""
    matches = _SCORE.findall(text)
    raw = matches[-1] if matches else None
    if raw is None:
        lead = _LEADING_NUMBER.match(text)
        raw = lead.group(1) if lead else None
    if raw is None:
        return None
    value = float(raw)
    return value if 0 <= value <= maximum else None


def parse_winner(text: str) -> str | None:
    """The last "Winner: Judgement A" (or B; "Judgment", markdown emphasis and "(A)" allowed) in a
    meta-judge's text: ``"A"``, ``"B"`` or ``None``."""
    matches = _WINNER.findall(text)
    return matches[-1].upper() if matches else None
