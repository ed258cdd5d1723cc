"""IFEval scoring with the official checkers as maintained in lm-evaluation-harness.

The checkers, the strict/loose tests and the aggregation are lm-eval's own
(``lm_eval.tasks.ifeval.utils``); this module only matches responses to prompts, makes the
scores deterministic and adds a per-instruction-type breakdown.

Determinism. Two official checkers draw at random: ``langdetect`` (seeded with
``DetectorFactory.seed = 0``) and the letter-frequency checker, which picks a random letter when
the requested one is not a letter (two IFEval prompts ask for '#' and '!'). We seed Python's
``random`` with the prompt's own text before its strict and before its loose test, so a prompt's
score depends on nothing else: not on file order, not on which subset is scored. With this rule,
GPT-4's official responses score exactly the published 76.89 / 83.57 / 79.48 / 85.49.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from ifplay.scoring.nltk_data import ensure_punkt_tab

METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
SHORT = {"prompt_level_strict_acc": "prompt_strict", "inst_level_strict_acc": "inst_strict",
         "prompt_level_loose_acc": "prompt_loose", "inst_level_loose_acc": "inst_loose"}


class ScoringError(ValueError):
    """Responses do not cover the prompts; the message names the prompt."""


def _checkers():
    ensure_punkt_tab()  # before lm-eval's import tries to download it
    import langdetect
    from lm_eval.tasks.ifeval import utils

    langdetect.DetectorFactory.seed = 0
    return utils


@dataclass
class IFEvalResult:
    metrics: dict[str, float]  # the four official metrics, as fractions
    per_instruction: dict[str, dict]  # instruction id -> {"n", "strict", "loose"} (fractions)
    per_prompt: list[dict]  # key, prompt, instruction_id_list, strict/loose lists and verdicts
    num_prompts: int
    num_empty_responses: int

    def percent(self) -> dict[str, float]:
        return {SHORT[m]: round(100 * self.metrics[m], 2) for m in METRICS}

    def to_json(self) -> dict:
        return {
            "num_prompts": self.num_prompts,
            "num_empty_responses": self.num_empty_responses,
            "metrics": self.metrics,
            "percent": self.percent(),
            "per_instruction": self.per_instruction,
        }


def match_responses(prompts: list[dict], responses: list[dict], source: str = "responses") -> list[str]:
    """The response to each prompt, matched by prompt text (as the official scorer does)."""
    by_prompt: dict[str, str] = {}
    for record in responses:
        by_prompt.setdefault(record["prompt"], record["response"])
    missing = [p for p in prompts if p["prompt"] not in by_prompt]
    if missing:
        first = missing[0]
        preview = first["prompt"][:80].replace("\n", " ")
        raise ScoringError(
            f"{source}: no response for {len(missing)} prompt(s); first: key {first['key']}: \"{preview}...\""
        )
    return [by_prompt[p["prompt"]] or "" for p in prompts]


def score(prompts: list[dict], responses: list[str]) -> IFEvalResult:
    """Score ``responses[i]`` against ``prompts[i]`` (IFEval records: key, prompt, instruction_id_list, kwargs)."""
    utils = _checkers()
    per_prompt = []
    strict_prompt, loose_prompt, strict_inst, loose_inst = [], [], [], []
    by_type: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"strict": [], "loose": []})
    for record, response in zip(prompts, responses, strict=True):
        example = utils.InputExample(key=record["key"], instruction_id_list=record["instruction_id_list"],
                                     prompt=record["prompt"], kwargs=record["kwargs"])
        random.seed(record["prompt"])
        strict = utils.test_instruction_following_strict(example, response)
        random.seed(record["prompt"])
        loose = utils.test_instruction_following_loose(example, response)
        strict_prompt.append(strict.follow_all_instructions)
        loose_prompt.append(loose.follow_all_instructions)
        strict_inst.extend(strict.follow_instruction_list)
        loose_inst.extend(loose.follow_instruction_list)
        for inst_id, s, l in zip(record["instruction_id_list"], strict.follow_instruction_list,
                                 loose.follow_instruction_list):
            by_type[inst_id]["strict"].append(s)
            by_type[inst_id]["loose"].append(l)
        per_prompt.append({
            "key": record["key"], "prompt": record["prompt"], "response": response,
            "instruction_id_list": record["instruction_id_list"],
            "strict": strict.follow_instruction_list, "loose": loose.follow_instruction_list,
            "prompt_strict": strict.follow_all_instructions, "prompt_loose": loose.follow_all_instructions,
        })

    def mean(values: list[bool]) -> float:
        return sum(values) / len(values) if values else 0.0

    metrics = {
        "prompt_level_strict_acc": mean(strict_prompt),
        "inst_level_strict_acc": mean(strict_inst),
        "prompt_level_loose_acc": mean(loose_prompt),
        "inst_level_loose_acc": mean(loose_inst),
    }
    per_instruction = {
        inst_id: {"n": len(v["strict"]), "strict": mean(v["strict"]), "loose": mean(v["loose"])}
        for inst_id, v in sorted(by_type.items())
    }
    return IFEvalResult(metrics, per_instruction, per_prompt, len(prompts),
                        sum(1 for r in responses if not r.strip()))
