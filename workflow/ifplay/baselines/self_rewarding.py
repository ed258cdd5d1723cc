"""Self-Rewarding language models (Yuan et al. 2024, arXiv 2401.10020) as stages.

One iteration, M_t -> M_{t+1} (the paper's AI Feedback Training, AIFT(M_t)):

1. M_t samples N responses per prompt (the shared ``generate`` stage: :meth:`ifplay.plan.Plan.samples`,
   the same stage SPaR's iteration reads when the sampling settings agree);
2. M_t judges each response itself with an LLM-as-a-Judge prompt, the paper's additive 5-point
   rubric (a point per criterion met, "Score: <0-5>"), ``samples`` times; the response's score is the
   mean of the parsable scores (:class:`RubricJudge`, :func:`rubric_judgements`; stage
   ``rubric_judgements``);
3. per prompt, the highest- against the lowest-scored response is a preference pair, none when
   they score the same (:func:`select_pairs`; stage ``self_rewarding_pairs``);
4. M_{t+1} = DPO(M_t) on those pairs (the shared ``dpo`` stage).

Choices the paper leaves open (docs/baselines.md): ties for the top or bottom score go to the
earliest sample (the paper does not say); a response none of whose judge samples parse has no score
and takes part in no pair; a prompt with fewer than two scored responses gives no pair. The rubric
prompt (``config/prompts/self_rewarding_rubric.txt``) is written from the paper's description, not
copied from it.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass

from tqdm.auto import tqdm

from ifplay.core import settings
from ifplay.core.records import Checkpoint, read_jsonl, write_json, write_jsonl
from ifplay.generation.backends import Backend, BackendChoice, BackendRuntime, SamplingParams
from ifplay.generation.templates import check_template, joined, load_template, template_turns
from ifplay.core.parsing import parse_score

log = logging.getLogger(__name__)

#: The rubric's top score: five criteria, a point each.
RUBRIC_MAX = 5
JUDGED_FIELDS = ("key", "sample", "prompt", "response", "score", "scores", "judgements", "n_invalid")


# -- 2. the model judges its own responses ------------------------------------------------------
@dataclass
class RubricJudgement:
    """``samples`` judge texts about one response: each text's parsed score (None: unparsable or
    outside 0-5), their mean over the parsable ones (``score``; None when none parse)."""

    scores: list[float | None]
    judgements: list[str]

    @property
    def score(self) -> float | None:
        valid = [s for s in self.scores if s is not None]
        return statistics.fmean(valid) if valid else None

    @property
    def n_invalid(self) -> int:
        return sum(s is None for s in self.scores)

    def to_json(self) -> dict:
        return {"score": self.score, "scores": self.scores, "judgements": self.judgements, "n_invalid": self.n_invalid}


def rubric_judgement(texts: list[str]) -> RubricJudgement:
    return RubricJudgement([parse_score(t, maximum=RUBRIC_MAX) for t in texts], list(texts))


class RubricJudge:
    """A model scores (prompt, response) pairs with a rubric template (``{prompt}``, ``{response}``;
    an assistant prefill such as "Score:" allowed): ``samples`` judge texts per pair, all pairs of a
    call in one ``backend.chat`` call."""

    def __init__(self, backend: Backend, template_text: str, samples: int = 3, temperature: float = 0.7,
                 top_p: float = 1.0, max_new_tokens: int = 256, seed: int = 0):
        check_template(template_text, "rubric", "rubric template")
        self.backend, self.template = backend, template_text
        self.params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, n=samples,
                                     seed=seed)

    def score(self, items: list[tuple[str, str]]) -> list[RubricJudgement]:
        conversations = [template_turns(self.template, prompt=p, response=r) for p, r in items]
        completions = self.backend.chat(conversations, self.params, progress="rubric")
        return [rubric_judgement([joined(c, text) for text in texts]) for c, texts in zip(conversations, completions)]


def response_id(record: dict) -> str:
    return f"{record['key']}/{record.get('sample', 0)}"


def rubric_judgements(responses_path: str, out: str, judge: RubricJudge, chunk: int = 64) -> list[dict]:
    """Score every response of ``responses_path`` (key, sample, prompt, response); resumable (a
    journal beside ``out``). Output lines: the response fields plus :meth:`RubricJudgement.to_json`."""
    responses = read_jsonl(responses_path, required=("key", "prompt", "response"))
    journal = Checkpoint(out, id_field="id")
    todo = [r for r in responses if response_id(r) not in journal.done]
    with tqdm(total=len(responses), initial=len(responses) - len(todo), desc="rubric", unit="response") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            scored = judge.score([(r["prompt"], r["response"]) for r in part])
            journal.append({"id": response_id(r), "key": r["key"], "sample": r.get("sample", 0), "prompt": r["prompt"],
                            "response": r["response"], **j.to_json()} for r, j in zip(part, scored))
            bar.update(len(part))
    return journal.finish(order=[response_id(r) for r in responses])


def judgement_counts(judged: list[dict]) -> dict:
    """Responses, judge samples, unparsable ones, scored responses and their score distribution."""
    scores = [r["score"] for r in judged if r["score"] is not None]
    samples = [s for r in judged for s in r["scores"]]
    return {"prompts": len({r["key"] for r in judged}), "responses": len(judged), "judge_samples": len(samples),
            "invalid_judge_samples": sum(s is None for s in samples), "scored_responses": len(scores),
            "unscored_responses": len(judged) - len(scores),
            "mean_score": round(statistics.fmean(scores), 4) if scores else None,
            "score_histogram": {str(v): sum(round(s) == v for s in scores) for v in range(RUBRIC_MAX + 1)}}


# -- 3. preference pairs ---------------------------------------------------------------------------
def by_key(records: list[dict]) -> dict:
    """Records grouped by prompt key, keys in order of first appearance."""
    groups: dict = {}
    for record in records:
        groups.setdefault(record["key"], []).append(record)
    return groups


def _pair(best: dict, worst: dict) -> dict:
    return {"prompt": [{"role": "user", "content": best["prompt"]}],
            "chosen": [{"role": "assistant", "content": best["response"]}],
            "rejected": [{"role": "assistant", "content": worst["response"]}],
            "key": best["key"], "chosen_sample": best["sample"], "rejected_sample": worst["sample"],
            "chosen_score": best["score"], "rejected_score": worst["score"]}


def select_pairs(judged: list[dict]) -> tuple[list[dict], dict]:
    """Self-Rewarding's pairs: per prompt, its highest-scored response (chosen) against its lowest
    (rejected), none when they score the same; ties for the top or the bottom go to the earliest
    sample. Prompts in order of first appearance. Returns the pairs (TRL's conversational preference
    format plus key, samples and scores) and their counts."""
    by_prompt = by_key(judged)
    pairs, too_few, equal = [], 0, 0
    for records in by_prompt.values():
        scored = sorted((r for r in records if r["score"] is not None), key=lambda r: r["sample"])
        if len(scored) < 2:
            too_few += 1
            continue
        best = max(scored, key=lambda r: r["score"])  # max/min keep the first of equal scores
        worst = min(scored, key=lambda r: r["score"])
        if best["score"] == worst["score"]:
            equal += 1
            continue
        pairs.append(_pair(best, worst))
    return pairs, {**pair_counts(pairs), "prompts": len(by_prompt), "prompts_too_few_scored": too_few,
                   "prompts_all_equal": equal}


def rounded_mean(values) -> float | None:
    """The mean to 4 decimals, None for no values (the counts files' means)."""
    return round(statistics.fmean(values), 4) if values else None


def pair_counts(pairs: list[dict]) -> dict:
    """How many pairs, their mean scores and lengths (characters) on each side."""
    mean = rounded_mean
    return {"pairs": len(pairs), "mean_chosen_score": mean([p["chosen_score"] for p in pairs]),
            "mean_rejected_score": mean([p["rejected_score"] for p in pairs]),
            "mean_chosen_chars": mean([len(p["chosen"][0]["content"]) for p in pairs]),
            "mean_rejected_chars": mean([len(p["rejected"][0]["content"]) for p in pairs])}


# -- settings and command line ----------------------------------------------------------------------
@dataclass(frozen=True)
class RubricJudgeConfig:
    """``self_rewarding.judge``: the rubric template's content and the judge's sampling."""

    template: dict  # {"sha256": ...}; its path: runtime rubric_template
    samples: int
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class RubricJudgementsConfig:
    judge: RubricJudgeConfig
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class RubricRuntime(BackendRuntime):
    rubric_template: str


@dataclass(frozen=True)
class RubricJudgementsSettings:
    """``ifplay rubric-judgements --settings``."""

    config: RubricJudgementsConfig
    runtime: RubricRuntime


def _cmd_rubric_judgements(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    judge_cfg = config.judge
    backend = runtime.make(config.backend, args.judge, args.threads)
    with backend:
        judge = RubricJudge(backend, load_template(runtime.rubric_template, "rubric"), samples=judge_cfg.samples,
                            temperature=judge_cfg.temperature, top_p=judge_cfg.top_p,
                            max_new_tokens=judge_cfg.max_new_tokens, seed=config.seed)
        judged = rubric_judgements(args.responses, args.out, judge)
    counts = judgement_counts(judged)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def _cmd_pairs(args) -> None:
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    pairs, counts = select_pairs(judged)
    write_jsonl(args.pairs, pairs)
    counts["judgements"] = judgement_counts(judged)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def add_cli(sub) -> None:
    """Register ``rubric-judgements`` and ``self-rewarding-pairs`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("rubric-judgements", help="Self-Rewarding: the model scores its own responses (5-point rubric)")
    p.add_argument("--responses", required=True, help="responses JSONL (key, sample, prompt, response)")
    p.add_argument("--judge", required=True, help="the judging checkpoint (the actor M_t itself)")
    p.add_argument("--out", required=True, help="scored responses JSONL")
    p.add_argument("--counts", required=True, help="counts JSON")
    settings.add_argument(p, RubricJudgementsSettings)
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    p.set_defaults(func=_cmd_rubric_judgements)

    p = sub.add_parser("self-rewarding-pairs", help="Self-Rewarding: best- against worst-scored response per prompt")
    p.add_argument("--judged", required=True, help="output of rubric-judgements")
    p.add_argument("--pairs", required=True, help="DPO pairs JSONL (TRL preference format)")
    p.add_argument("--counts", required=True, help="counts JSON")
    p.set_defaults(func=_cmd_pairs)
