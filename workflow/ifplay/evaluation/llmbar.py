"""LLMBar (Zeng et al. 2024, github princeton-nlp/LLMBar): every refiner judged as SPaR judges it.

SPaR (Tables 2, 5, 8, 9) scores its refiners on LLMBar pointwise (:mod:`ifplay.scoring.llmbar`): each
pair gives the better output ("follows") and the other ("does not follow"), and the refiner judges
each with SPaR's judge template (``spar.judge.template``) and its sampling. Three stages:

1. ``llmbar_items``: the first ``eval.llmbar.limit`` pairs of each of the five subsets of
   ``data.llmbar`` as pointwise items (``items.jsonl``).
2. ``llmbar_judgements``: one refiner (or a served judge) judges every item: one greedy vote
   (temperature 0, Table 9's "greedy") and ``votes`` sampled votes drawn once; every raw text and its
   parsed verdict is kept in ``judged.jsonl`` (journalled, resumable).
3. ``llmbar_scores``: accuracy and F1 per subset, Adversarial and Average, for the greedy vote and the
   majority of the first k sampled votes for every k of ``eval.llmbar.votes`` (nested: the k-vote
   judgement re-uses the first k votes drawn); ``metrics.json``. The report writes
   ``tables/llmbar.csv`` (the majority of ``spar.judge.votes``, the judging SPaR trains with) and
   ``tables/llmbar_votes.csv`` (every k and greedy).

Ties are not drawn again here (SPaR's training judge re-draws them): a re-draw would break the
nesting of the k-vote judgements. A tie, like an item whose every vote is unparseable, is unlabelled:
wrong in accuracy, counted in ``unlabelled`` (``tied``, ``invalid``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from tqdm.auto import tqdm

from ifplay.core import settings as stage_settings
from ifplay.core.records import Checkpoint, read_jsonl, write_json, write_jsonl
from ifplay.core.settings import NoRuntime
from ifplay.generation.backends import BackendChoice, SamplingParams
from ifplay.generation.templates import joined, load_template, template_turns
from ifplay.judging.judge import parse_verdict
from ifplay.scoring import llmbar as lb
from ifplay.spar.stages import JudgeRuntime

log = logging.getLogger(__name__)

#: Columns of ``tables/llmbar.csv`` after judge and iteration.
TABLE_COLUMNS = ["subset", "accuracy", "f1", "items", "unlabelled", "invalid", "tied"]


# -- stage 1: the items ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemsConfig:
    origin: dict  # the five files' sha256 (ifplay.scoring.llmbar.data_fingerprint)
    limit: int | None  # the first N pairs of each subset; null = all 419 pairs (838 items)


@dataclass(frozen=True)
class ItemsRuntime:
    source: str  # config data.llmbar: the directory of the five files


@dataclass(frozen=True)
class ItemsSettings:
    config: ItemsConfig
    runtime: ItemsRuntime


def _cmd_items(args) -> None:
    items = lb.load_items(args.settings.runtime.source, limit=args.settings.config.limit)
    write_jsonl(args.out, items)
    print(json.dumps({"items": len(items), "subsets": {s: sum(i["subset"] == s for i in items) for s in lb.SUBSETS}}))


# -- stage 2: the judgements -------------------------------------------------------------------------
@dataclass(frozen=True)
class LLMBarJudge:
    """How the judge votes: SPaR's judge template and sampling, ``votes`` sampled votes (the largest k)
    and one greedy vote; ``model``: a served judge's name (backend openai), null for a checkpoint."""

    template: dict
    votes: int
    temperature: float
    top_p: float
    max_new_tokens: int
    model: str | None


@dataclass(frozen=True)
class JudgementsConfig:
    judge: LLMBarJudge
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class JudgementsSettings:
    config: JudgementsConfig
    runtime: JudgeRuntime


def judge_items(items: list[dict], out: str, backend, template: str, judge: LLMBarJudge, seed: int,
                chunk: int = 64) -> list[dict]:
    """Every item judged by one greedy vote and ``judge.votes`` sampled votes (resumable, journalled
    to ``out``): records ``{key, greedy_text, greedy, texts, votes}`` (verdicts 1, 0 or None)."""
    journal = Checkpoint(out, id_field="key")
    todo = [item for item in items if item["key"] not in journal.done]
    if journal.done:
        log.info("resuming: %d of %d items already judged", len(items) - len(todo), len(items))
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=judge.max_new_tokens, n=1, seed=seed)
    sampled = SamplingParams(temperature=judge.temperature, top_p=judge.top_p, max_new_tokens=judge.max_new_tokens,
                             n=judge.votes, seed=seed)
    with tqdm(total=len(items), initial=len(items) - len(todo), desc="llmbar", unit="item") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            conversations = [template_turns(template, prompt=i["prompt"], response=i["response"]) for i in part]
            first = backend.chat(conversations, greedy)
            votes = backend.chat(conversations, sampled)
            records = []
            for item, conversation, (greedy_text,), texts in zip(part, conversations, first, votes):
                greedy_text = joined(conversation, greedy_text)  # the prefilled verdict start + the completion
                texts = [joined(conversation, text) for text in texts]
                records.append({"key": item["key"], "greedy_text": greedy_text, "greedy": parse_verdict(greedy_text),
                                "texts": texts, "votes": [parse_verdict(text) for text in texts]})
            journal.append(records)
            bar.update(len(part))
    return journal.finish(order=[item["key"] for item in items])


def _cmd_judgements(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    model = args.refiner or config.judge.model
    if model is None:
        raise stage_settings.SettingsError("settings.config.judge.model is null: the judge checkpoint (--refiner) is needed")
    items = read_jsonl(args.items, required=("key", "subset", "prompt", "response", "label"))
    template = load_template(runtime.judge_template, "judge")
    with runtime.make(config.backend, model, args.threads) as backend:
        judged = judge_items(items, args.out, backend, template, config.judge, config.seed, runtime.batch_size)
    print(json.dumps({"items": len(judged), "invalid_votes": sum(v is None for r in judged for v in r["votes"])}))


# -- stage 3: the scores -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoresConfig:
    votes: list[int]  # every k of Table 9 (majority of the first k sampled votes)
    main: int  # the k of tables/llmbar.csv: spar.judge.votes


@dataclass(frozen=True)
class ScoresSettings:
    config: ScoresConfig
    runtime: NoRuntime


def score_records(items: list[dict], judged: list[dict], ks: list[int], main: int) -> dict:
    """``metrics.json``: the rows of ``llmbar.csv`` (k = ``main``) and of ``llmbar_votes.csv``."""
    by_key = {r["key"]: r for r in judged}
    missing = [i["key"] for i in items if i["key"] not in by_key]
    if missing:
        raise lb.LLMBarDataError(f"no judgement for {len(missing)} item(s); first: {missing[0]}")
    greedy = {key: r["greedy"] for key, r in by_key.items()}
    votes = {key: r["votes"] for key, r in by_key.items()}
    rows = lb.votes_table(items, greedy, votes, sorted(set(ks) | {main}))
    return {"rows": [r for r in rows if r["votes"] == main], "votes": rows}


def _cmd_scores(args) -> None:
    config = args.settings.config
    items = read_jsonl(args.items, required=("key", "subset", "label"))
    judged = read_jsonl(args.judged, required=("key", "greedy", "votes"))
    result = score_records(items, judged, config.votes, config.main)
    write_json(args.metrics, result)
    print(json.dumps([{k: r[k] for k in ("subset", "accuracy", "f1")} for r in result["rows"]]))


def add_cli(sub) -> None:
    """Register ``llmbar-items``, ``llmbar-judgements`` and ``llmbar-scores`` on the ``ifplay`` subparsers."""
    from ifplay.spar.stages import add_threads_argument

    p = sub.add_parser("llmbar-items", help="LLMBar's pairs as pointwise items (follows / does not follow)")
    p.add_argument("--out", required=True, help="items JSONL: key, subset, pair, output, prompt, response, label")
    stage_settings.add_argument(p, ItemsSettings)
    p.set_defaults(func=_cmd_items)

    p = sub.add_parser("llmbar-judgements", help="LLMBar: a refiner's greedy and sampled votes on every item")
    p.add_argument("--items", required=True)
    p.add_argument("--refiner", default=None, help="the judging checkpoint (none for a served judge)")
    p.add_argument("--out", required=True, help="judged JSONL: key, greedy_text, greedy, texts, votes")
    stage_settings.add_argument(p, JudgementsSettings)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_judgements)

    p = sub.add_parser("llmbar-scores", help="LLMBar: accuracy and F1 per subset, by number of votes")
    p.add_argument("--items", required=True)
    p.add_argument("--judged", required=True)
    p.add_argument("--metrics", required=True)
    stage_settings.add_argument(p, ScoresSettings)
    p.set_defaults(func=_cmd_scores)
