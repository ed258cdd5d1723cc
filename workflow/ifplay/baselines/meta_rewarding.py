"""Meta-Rewarding language models (Wu et al. 2024, arXiv 2407.19594) as stages.

One iteration, M_t -> M_{t+1}; the model is actor, judge and meta-judge:

1. actor: M_t samples K responses per prompt (the shared ``generate`` stage);
2. judge: M_t scores each response N times with Self-Rewarding's additive 5-point rubric, the score
   the mean (the shared ``rubric_judgements`` stage of :mod:`ifplay.baselines.self_rewarding`: the
   same samples and judge settings give the same stage as Self-Rewarding's);
3. meta-judge: per prompt, the response whose judgements disagree most (the highest variance of
   their scores) has every ordered pair of its judgements compared by M_t ("Winner: Judgement A" or
   "B"; :class:`MetaJudge`, :func:`meta_judgements`; stage ``meta_judgements``);
4. pairs (stage ``meta_rewarding_pairs``, :func:`select_pairs`):
   - actor pairs with length control (:func:`actor_pairs`): with S_max and S_min the prompt's top
     and bottom scores and the quality tier rho, the chosen response is the shortest whose score is
     at least (1-rho) S_max + rho S_min, the rejected the longest whose score is at most
     (1-rho) S_min + rho S_max; rho = 0 keeps the top- and bottom-scored responses only;
   - judge pairs (:func:`judge_pairs`): the meta-judge's verdicts, each weighted against the
     position bias (a win from the position that wins more often counts less: omega_1 =
     wins_second / (wins_first + wins_second) for a win in first position, omega_2 = wins_first /
     (...) in second), give a battle matrix; the judgements' Elo scores are its Bradley-Terry maximum
     likelihood (:func:`elo_scores`); the highest- against the lowest-rated judgement is the pair;
5. M_{t+1} = DPO(M_t) on the actor pairs and, in the iterations that train the judge
   (``meta_rewarding.judge_iterations``), the judge pairs too (the shared ``dpo`` stage).

Choices the paper leaves open are written in docs/baselines.md: the win counts behind the position
weights are the whole stage's (every prompt's verdicts), a judgement with no parsable score takes
no part in the meta-judge's comparisons, an unparsable verdict is no battle, the Elo fit carries a
small L2 prior (``ELO_PRIOR``) so that a judgement that never loses still has a finite rating, and
ties go to the earliest sample or judgement.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass

from tqdm.auto import tqdm

from ifplay.baselines.self_rewarding import (JUDGED_FIELDS, by_key, judgement_counts, pair_counts,
                                             response_id, rounded_mean)
from ifplay.core import settings
from ifplay.core.parsing import parse_winner
from ifplay.core.records import Checkpoint, read_jsonl, write_json, write_jsonl
from ifplay.generation.backends import Backend, BackendChoice, BackendRuntime, SamplingParams
from ifplay.generation.templates import check_template, joined, load_template, template_turns

#: Strength of the Gaussian prior on the Bradley-Terry log-strengths (per unit of battle weight).
ELO_PRIOR = 0.01
#: Elo points per natural-log unit of strength (the chess convention: 400 points = odds of 10).
ELO_SCALE = 400 / math.log(10)
VERDICT_FIELDS = ("id", "key", "sample", "first", "second", "verdict", "text")
TIE = 1e-9


# -- 3. the meta-judge ----------------------------------------------------------------------------
def meta_judge_items(judged: list[dict]) -> list[dict]:
    """Per prompt, the response whose parsable judge scores vary most (population variance; ties:
    the earliest sample) with at least two parsable judgements: key, sample, prompt, response and
    its judgements as ``[{"index": i, "score": s, "text": t}]`` (i: the judge sample's index)."""
    by_prompt = by_key(judged)
    items = []
    for key, records in by_prompt.items():
        best, best_var = None, -1.0
        for record in sorted(records, key=lambda r: r["sample"]):
            valid = [(i, s) for i, s in enumerate(record["scores"]) if s is not None]
            if len(valid) < 2:
                continue
            var = statistics.pvariance([s for _, s in valid])
            if var > best_var + TIE:
                best, best_var = (record, valid), var
        if best is None:
            continue
        record, valid = best
        items.append({"key": key, "sample": record["sample"], "prompt": record["prompt"],
                      "response": record["response"], "variance": round(best_var, 6),
                      "judgements": [{"index": i, "score": s, "text": record["judgements"][i]} for i, s in valid]})
    return items


def battles(item: dict) -> list[tuple[int, int]]:
    """Every ordered pair (first, second) of an item's judgements, by judge sample index."""
    indices = [j["index"] for j in item["judgements"]]
    return list(itertools.permutations(indices, 2))


class MetaJudge:
    """A model compares two judgements of one response with a template (``{prompt}``, ``{response}``,
    ``{judgement_a}``, ``{judgement_b}``; an assistant prefill such as "Winner: Judgement" allowed):
    one verdict text per ordered pair, all pairs of a call in one ``backend.chat`` call."""

    def __init__(self, backend: Backend, template_text: str, temperature: float = 0.7, top_p: float = 1.0,
                 max_new_tokens: int = 256, seed: int = 0):
        check_template(template_text, "meta_judge", "meta-judge template")
        self.backend, self.template = backend, template_text
        self.params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, n=1,
                                     seed=seed)

    def compare(self, items: list[tuple[str, str, str, str]]) -> list[str]:
        """(prompt, response, judgement A, judgement B) -> the meta-judge's full texts."""
        conversations = [template_turns(self.template, prompt=p, response=r, judgement_a=a, judgement_b=b)
                         for p, r, a, b in items]
        completions = self.backend.chat(conversations, self.params, progress="meta-judge")
        return [joined(c, texts[0]) for c, texts in zip(conversations, completions)]


def meta_judgements(judged_path: str, out: str, meta_judge: MetaJudge, chunk: int = 64) -> list[dict]:
    """Every battle of :func:`meta_judge_items` judged once; resumable (a journal beside ``out``).
    Output lines: id (key/sample/first/second), key, sample, first, second, verdict ("A", "B" or
    None: unparsable), text."""
    judged = read_jsonl(judged_path, required=JUDGED_FIELDS)
    todo_all = []
    for item in meta_judge_items(judged):
        texts = {j["index"]: j["text"] for j in item["judgements"]}
        for first, second in battles(item):
            todo_all.append((f"{response_id(item)}/{first}/{second}", item, first, second, texts))
    journal = Checkpoint(out, id_field="id")
    todo = [t for t in todo_all if t[0] not in journal.done]
    with tqdm(total=len(todo_all), initial=len(todo_all) - len(todo), desc="meta-judge", unit="battle") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            texts = meta_judge.compare([(item["prompt"], item["response"], t[first], t[second])
                                        for _, item, first, second, t in part])
            journal.append({"id": battle_id, "key": item["key"], "sample": item["sample"], "first": first,
                            "second": second, "verdict": parse_winner(text), "text": text}
                           for (battle_id, item, first, second, _), text in zip(part, texts))
            bar.update(len(part))
    return journal.finish(order=[t[0] for t in todo_all])


def meta_judgement_counts(verdicts: list[dict]) -> dict:
    """Battles, prompts, parsable verdicts and how often each position won."""
    first = sum(v["verdict"] == "A" for v in verdicts)
    second = sum(v["verdict"] == "B" for v in verdicts)
    return {"prompts": len({v["key"] for v in verdicts}), "battles": len(verdicts),
            "invalid_verdicts": len(verdicts) - first - second, "wins_first": first, "wins_second": second}


# -- 4. pairs -----------------------------------------------------------------------------------------
def _actor_pair(chosen: dict, rejected: dict) -> dict:
    return {"kind": "actor", "prompt": [{"role": "user", "content": chosen["prompt"]}],
            "chosen": [{"role": "assistant", "content": chosen["response"]}],
            "rejected": [{"role": "assistant", "content": rejected["response"]}],
            "key": chosen["key"], "chosen_sample": chosen["sample"], "rejected_sample": rejected["sample"],
            "chosen_score": chosen["score"], "rejected_score": rejected["score"]}


def actor_pairs(judged: list[dict], rho: float) -> tuple[list[dict], dict]:
    """Meta-Rewarding's actor pairs with length control (module docstring): per prompt, the shortest
    response (characters) of the top tier against the longest of the bottom tier; none when all
    scored responses score the same or fewer than two are scored. Ties in length go to the earliest
    sample. ``rho`` in [0, 0.5): the tiers never overlap."""
    if not 0 <= rho < 0.5:
        raise ValueError(f"meta_rewarding.length_control_rho must be in [0, 0.5), got {rho}")
    by_prompt = by_key(judged)
    pairs, too_few, equal, not_top = [], 0, 0, 0
    for records in by_prompt.values():
        scored = sorted((r for r in records if r["score"] is not None), key=lambda r: r["sample"])
        if len(scored) < 2:
            too_few += 1
            continue
        s_max, s_min = max(r["score"] for r in scored), min(r["score"] for r in scored)
        if s_max - s_min <= TIE:
            equal += 1
            continue
        top = [r for r in scored if r["score"] >= (1 - rho) * s_max + rho * s_min - TIE]
        bottom = [r for r in scored if r["score"] <= (1 - rho) * s_min + rho * s_max + TIE]
        chosen = min(top, key=lambda r: len(r["response"]))  # min/max keep the first of equal lengths
        rejected = max(bottom, key=lambda r: len(r["response"]))
        not_top += chosen["score"] < s_max - TIE
        pairs.append(_actor_pair(chosen, rejected))
    return pairs, {**pair_counts(pairs), "prompts": len(by_prompt), "prompts_too_few_scored": too_few,
                   "prompts_all_equal": equal, "chosen_below_top_score": not_top}


def position_weights(verdicts: list[dict]) -> tuple[float, float]:
    """(omega_1, omega_2): the weight of a win in first and in second position, from all verdicts'
    win counts; 0.5 each when no verdict parses."""
    first = sum(v["verdict"] == "A" for v in verdicts)
    second = sum(v["verdict"] == "B" for v in verdicts)
    if first + second == 0:
        return 0.5, 0.5
    return second / (first + second), first / (first + second)


def battle_matrix(indices: list[int], verdicts: list[dict], weights: tuple[float, float]) -> list[list[float]]:
    """B[m][n]: the weighted wins of judgement ``indices[m]`` over ``indices[n]``."""
    where = {index: i for i, index in enumerate(indices)}
    matrix = [[0.0] * len(indices) for _ in indices]
    for v in verdicts:
        first, second = where[v["first"]], where[v["second"]]
        if v["verdict"] == "A":
            matrix[first][second] += weights[0]
        elif v["verdict"] == "B":
            matrix[second][first] += weights[1]
    return matrix


def elo_scores(matrix: list[list[float]], steps: int = 500) -> list[float]:
    """The Bradley-Terry maximum-likelihood log-strengths of a battle matrix, argmax over e of
    sum_mn B_mn log sigmoid(e_m - e_n) - ELO_PRIOR * W / 2 * sum_m e_m^2 (W: the total weight), by
    Newton's method, on the Elo scale (1000 + ELO_SCALE * e)."""
    import numpy as np

    b = np.asarray(matrix, dtype=float)
    n = len(b)
    total = max(b.sum(), 1.0)
    prior = ELO_PRIOR * total
    games = b + b.T
    e = np.zeros(n)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(e[:, None] - e[None, :])))  # P(m beats n)
        grad = (b - games * p).sum(axis=1) - prior * e
        weight = games * p * (1 - p)
        hess = -np.diag(weight.sum(axis=1)) + weight - prior * np.eye(n)
        step = np.linalg.solve(hess, grad)
        e = e - step
        if np.abs(step).max() < 1e-10:
            break
    return [float(1000 + ELO_SCALE * x) for x in e]


def judge_pairs(judged: list[dict], verdicts: list[dict], judge_template: str,
                max_chosen_chars: int | None) -> tuple[list[dict], dict]:
    """Meta-Rewarding's judge pairs (module docstring): per meta-judged response, its highest-rated
    judgement (chosen) against its lowest (rejected), the prompt being the rubric judge's prompt
    about that response. Dropped: equal ratings, identical texts, and (``max_chosen_chars`` set)
    a chosen judgement longer than that many characters."""
    weights = position_weights(verdicts)
    by_response: dict = {}
    for v in verdicts:
        by_response.setdefault((v["key"], v["sample"]), []).append(v)
    records = {(r["key"], r["sample"]): r for r in judged}
    pairs, tied, same_text, too_long = [], 0, 0, 0
    for (key, sample), battles_of in by_response.items():
        record = records[(key, sample)]
        indices = sorted({v["first"] for v in battles_of} | {v["second"] for v in battles_of})
        elo = elo_scores(battle_matrix(indices, battles_of, weights))
        best = max(range(len(indices)), key=lambda i: elo[i])  # the first of equal ratings
        worst = min(range(len(indices)), key=lambda i: elo[i])
        if elo[best] - elo[worst] <= 1e-6:
            tied += 1
            continue
        chosen, rejected = record["judgements"][indices[best]], record["judgements"][indices[worst]]
        if chosen == rejected:
            same_text += 1
            continue
        if max_chosen_chars is not None and len(chosen) > max_chosen_chars:
            too_long += 1
            continue
        turns = template_turns(judge_template, prompt=record["prompt"], response=record["response"])
        prompt = [t for t in turns if t["role"] == "user"]  # a prefill is the start of each judgement text
        pairs.append({"kind": "judge", "prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}], "key": key, "sample": sample,
                      "chosen_judgement": indices[best], "rejected_judgement": indices[worst],
                      "chosen_elo": round(elo[best], 3), "rejected_elo": round(elo[worst], 3),
                      "chosen_score": record["scores"][indices[best]],
                      "rejected_score": record["scores"][indices[worst]]})
    return pairs, {"pairs": len(pairs), "responses": len(by_response), "ratings_tied": tied,
                   "identical_texts": same_text, "chosen_too_long": too_long,
                   "omega_first": round(weights[0], 4), "omega_second": round(weights[1], 4),
                   "mean_chosen_chars": rounded_mean([len(p["chosen"][0]["content"]) for p in pairs]),
                   "mean_rejected_chars": rounded_mean([len(p["rejected"][0]["content"]) for p in pairs])}


def select_pairs(judged: list[dict], verdicts: list[dict] | None, rho: float, judge_template: str,
                 max_chosen_chars: int | None) -> tuple[list[dict], dict]:
    """The DPO set of one iteration: the actor pairs, then (``verdicts`` given: an iteration that
    trains the judge) the judge pairs; each line's ``kind`` says which."""
    actor, counts = actor_pairs(judged, rho)
    counts = {"actor": counts, "judgements": judgement_counts(judged)}
    pairs = list(actor)
    if verdicts is not None:
        judge, judge_counts = judge_pairs(judged, verdicts, judge_template, max_chosen_chars)
        pairs += judge
        counts["judge"] = judge_counts
        counts["meta_judgements"] = meta_judgement_counts(verdicts)
    counts["pairs"] = len(pairs)
    return pairs, counts


# -- settings and command line ----------------------------------------------------------------------
@dataclass(frozen=True)
class MetaJudgeConfig:
    """``meta_rewarding.meta_judge``: the template's content and the meta-judge's sampling."""

    template: dict  # {"sha256": ...}; its path: runtime meta_judge_template
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class MetaJudgementsConfig:
    meta_judge: MetaJudgeConfig
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class MetaJudgeRuntime(BackendRuntime):
    meta_judge_template: str


@dataclass(frozen=True)
class MetaJudgementsSettings:
    """``ifplay meta-judgements --settings``."""

    config: MetaJudgementsConfig
    runtime: MetaJudgeRuntime


@dataclass(frozen=True)
class MetaPairsConfig:
    length_control_rho: float
    max_chosen_judgement_chars: int | None
    judge_template: dict  # {"sha256": ...} of the rubric the judge pairs' prompts are written with


@dataclass(frozen=True)
class MetaPairsRuntime:
    rubric_template: str


@dataclass(frozen=True)
class MetaPairsSettings:
    """``ifplay meta-rewarding-pairs --settings``."""

    config: MetaPairsConfig
    runtime: MetaPairsRuntime


def _cmd_meta_judgements(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    cfg = config.meta_judge
    backend = runtime.make(config.backend, args.judge, args.threads)
    with backend:
        meta_judge = MetaJudge(backend, load_template(runtime.meta_judge_template, "meta_judge"),
                               temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                               seed=config.seed)
        verdicts = meta_judgements(args.judged, args.out, meta_judge)
    counts = meta_judgement_counts(verdicts)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def _cmd_pairs(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    verdicts = read_jsonl(args.verdicts, required=VERDICT_FIELDS) if args.verdicts else None
    pairs, counts = select_pairs(judged, verdicts, config.length_control_rho,
                                 load_template(runtime.rubric_template, "rubric"), config.max_chosen_judgement_chars)
    write_jsonl(args.pairs, pairs)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def add_cli(sub) -> None:
    """Register ``meta-judgements`` and ``meta-rewarding-pairs`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("meta-judgements", help="Meta-Rewarding: the model compares pairs of its own judgements")
    p.add_argument("--judged", required=True, help="output of rubric-judgements (responses with their judgements)")
    p.add_argument("--judge", required=True, help="the meta-judging checkpoint (the actor M_t itself)")
    p.add_argument("--out", required=True, help="verdicts JSONL")
    p.add_argument("--counts", required=True, help="counts JSON")
    settings.add_argument(p, MetaJudgementsSettings)
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    p.set_defaults(func=_cmd_meta_judgements)

    p = sub.add_parser("meta-rewarding-pairs",
                       help="Meta-Rewarding: length-controlled actor pairs and Elo-ranked judge pairs")
    p.add_argument("--judged", required=True, help="output of rubric-judgements")
    p.add_argument("--verdicts", default=None, help="output of meta-judgements (the iterations that train the judge)")
    p.add_argument("--pairs", required=True, help="DPO pairs JSONL (TRL preference format; kind: actor or judge)")
    p.add_argument("--counts", required=True, help="counts JSON")
    settings.add_argument(p, MetaPairsSettings)
    p.set_defaults(func=_cmd_pairs)
