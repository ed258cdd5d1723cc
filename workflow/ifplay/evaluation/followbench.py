"""FollowBench (Jiang et al. 2023, github YJiangcm/FollowBench): the benchmark's three stages.

1. ``followbench_prompts``: the six ``{category}_constraints.json`` files of ``data.followbench`` (a
   local directory, or the hub copy :data:`HUB_ID` at a pinned revision) as scored items, the first
   ``limit`` groups of each category with all five levels (:func:`ifplay.scoring.followbench.load_items`).
   Each item's prompt is counted in tokens under the base model's chat template: a prompt longer than
   ``max_prompt_tokens`` is cut from the left by the backend (the question, at the end of an example
   prompt, is kept) and is marked ``truncated``; the scores count those per category and level.
2. ``followbench_judgements``: the judge (any model on any backend, like the teacher: the base model on
   the CPU default, a local checkpoint, or an OpenAI-compatible server) answers
   :func:`ifplay.scoring.followbench.judge_prompt` for every LLM-judged item of one model's responses,
   greedily. Raw outputs are journalled (a killed job resumes) and kept in ``judged.jsonl`` with the
   parsed verdict; an unparseable one is kept with its error, never dropped.
3. ``followbench_scores``: rule checks of the 350 rule-checked items, the judged verdicts of the others,
   HSR / SSR / CSL per category and level and merged over categories
   (:func:`ifplay.scoring.followbench.score`) -> ``metrics.json`` (``metrics``: the row of
   ``tables/followbench.csv``; ``breakdown``: the rows of ``tables/followbench_categories.csv``) and
   ``per_item.jsonl``.

The benchmark's registry entry is in :mod:`ifplay.evaluation.benchmarks`; its plan in
:mod:`ifplay.evaluation.plan`; docs/evaluation.md describes the choices.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tqdm.auto import tqdm

from ifplay.core import settings as stage_settings
from ifplay.core.records import Checkpoint, read_jsonl, write_json, write_jsonl
from ifplay.core.settings import NoRuntime
from ifplay.core.sources import SourceError, file_sha256
from ifplay.generation.backends import BackendChoice, BackendRuntime, SamplingParams
from ifplay.scoring import followbench as fb

log = logging.getLogger(__name__)

#: The hub copy of the data: YuxinJiang/FollowBench (the authors'), ``data_en/`` at this commit
#: (2024, "Update README.md"; the English files are those of the GitHub release).
HUB_ID = "YuxinJiang/FollowBench"
HUB_REVISION = "03a0578946afb379ee8c0fa8061c9c65daa0f93a"
HUB_DIR = "data_en"
FILES = tuple(f"{category}_constraints.json" for category in fb.CATEGORIES)

#: Columns of ``tables/followbench.csv`` after model and iteration (rates in percent, CSL in levels).
TABLE_COLUMNS = ([f"ssr_l{level}" for level in fb.LEVELS] + ["ssr_avg"] + [f"hsr_l{level}" for level in fb.LEVELS]
                 + ["hsr_avg", "csl", "judge", "rule_items", "judged_items", "unparseable", "truncated"])


# -- the data ---------------------------------------------------------------------------------------
def data_origin(source: str, config_key: str = "data.followbench") -> dict:
    """The data's identity (hashed into the prompts stage): the hub id and revision, or the sha256 of
    each of the six files of a local directory."""
    if source.startswith("hf:"):
        name, _, revision = source[3:].partition("@")
        if name != HUB_ID:
            raise SourceError(f"config key '{config_key}': hub copy {name!r} is not supported; use "
                              f"'hf:{HUB_ID}@{HUB_REVISION}' or a local directory of the six files")
        return {"hub": name, "revision": revision or HUB_REVISION}
    directory = Path(source).expanduser()
    if not directory.is_dir():
        raise SourceError(f"config key '{config_key}': {source}: no such directory (it holds {', '.join(FILES)})")
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise SourceError(f"config key '{config_key}': {directory} lacks {', '.join(missing)}")
    return {"files": {name: file_sha256(directory / name) for name in FILES}}


def data_dir(source: str, config_key: str = "data.followbench") -> Path:
    """A local directory holding the six files: ``source`` itself, or the hub copy downloaded into the
    Hugging Face cache."""
    origin = data_origin(source, config_key)
    if "hub" not in origin:
        return Path(source).expanduser()
    from huggingface_hub import snapshot_download

    try:
        root = snapshot_download(HUB_ID, repo_type="dataset", revision=origin["revision"],
                                 allow_patterns=[f"{HUB_DIR}/{name}" for name in FILES])
    except Exception as err:  # offline machines land here
        raise SourceError(f"config key '{config_key}': cannot download {HUB_ID}@{origin['revision']} ({err}); "
                          "on an offline machine set it to a local directory of the six files") from None
    return Path(root) / HUB_DIR


def item_record(item: fb.Item) -> dict:
    return {"key": item.key, "prompt": item.instruction, **asdict(item), "rule": item.rule}


def record_item(record: dict) -> fb.Item:
    values = {f.name: record[f.name] for f in fields(fb.Item)}
    return fb.Item(**{**values, "path": tuple(values["path"])})


ITEM_FIELDS = ("key", "prompt", *(f.name for f in fields(fb.Item)), "rule", "prompt_tokens", "truncated")


def read_items(path: str) -> list[tuple[fb.Item, dict]]:
    """The prompts stage's records as (item, record) pairs."""
    return [(record_item(r), r) for r in read_jsonl(path, required=ITEM_FIELDS)]


# -- stage 1: the items ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptsConfig:
    origin: dict  # the data's identity (data_origin)
    limit: int | None  # the first N groups of each category (all five levels); null = all 164 groups
    max_prompt_tokens: int  # prompts longer than this (chat template included) are cut from the left


@dataclass(frozen=True)
class PromptsRuntime:
    source: str  # config data.followbench: a directory or hf:ID@REV
    config_key: str


@dataclass(frozen=True)
class PromptsSettings:
    config: PromptsConfig
    runtime: PromptsRuntime


def prompt_lengths(model: str, prompts: list[str]) -> list[int]:
    """Tokens of each prompt as the backends send it: a user turn under ``model``'s chat template."""
    from ifplay.core.hf import import_transformers

    import_transformers()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def write_prompts(source: str, config: PromptsConfig, model: str, out: str, config_key: str) -> dict:
    """Stage ``followbench_prompts``: the items with their token counts; returns the counts."""
    items = fb.load_items(data_dir(source, config_key), groups=config.limit)
    lengths = prompt_lengths(model, [item.instruction for item in items])
    records = [{**item_record(item), "prompt_tokens": n, "truncated": n > config.max_prompt_tokens}
               for item, n in zip(items, lengths)]
    write_jsonl(out, records)
    counts = {"items": len(records), "rule_items": sum(r["rule"] is not None for r in records),
              "truncated": sum(r["truncated"] for r in records), "max_prompt_tokens": max(lengths, default=0)}
    log.info("%s", counts)
    return counts


def _cmd_prompts(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    print(json.dumps(write_prompts(runtime.source, config, args.model, args.out, runtime.config_key)))


# -- stage 2: the judge ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeConfig:
    backend: BackendChoice
    model: str | None  # a served model's name (backend openai); null: the stage's judge checkpoint
    max_new_tokens: int


@dataclass(frozen=True)
class JudgementsConfig:
    judge: JudgeConfig


@dataclass(frozen=True)
class JudgementsSettings:
    config: JudgementsConfig
    runtime: BackendRuntime


def judge_items(items: list[fb.Item], answers: dict[str, str], out: str, backend, max_new_tokens: int,
                chunk: int = 16) -> list[dict]:
    """Every LLM-judged item's answer judged once, greedily (resumable, journalled to ``out``):
    records ``{key, category, example_id, level, output, hard, soft, error}``."""
    judged = [item for item in items if item.rule is None]
    journal = Checkpoint(out, id_field="key")
    todo = [item for item in judged if item.key not in journal.done]
    if journal.done:
        log.info("resuming: %d of %d judgements already done", len(judged) - len(todo), len(judged))
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, n=1, seed=0)
    with tqdm(total=len(judged), initial=len(judged) - len(todo), desc="judge", unit="item") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            prompts = [fb.judge_prompt(item.category, list(item.path), answers[item.key]) for item in part]
            outputs = backend.chat([[{"role": "user", "content": p}] for p in prompts], params)
            records = []
            for item, texts in zip(part, outputs):
                verdict = fb.parse_verdict(texts[0], item.level)
                records.append({"key": item.key, "category": item.category, "example_id": item.example_id,
                                "level": item.level, "output": texts[0], "hard": verdict.hard, "soft": verdict.soft,
                                "error": verdict.error})
            journal.append(records)
            bar.update(len(part))
    return journal.finish(order=[item.key for item in judged])


def _cmd_judgements(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    model = args.judge or config.judge.model
    if model is None:
        raise stage_settings.SettingsError("settings.config.judge.model is null: the judge checkpoint (--judge) is needed")
    items = [item for item, _ in read_items(args.prompts)]
    answers = fb.responses_by_prompt(items, read_jsonl(args.responses, required=("prompt", "response")))
    with runtime.make(config.judge.backend, model, args.threads) as backend:
        judged = judge_items(items, answers, args.out, backend, config.judge.max_new_tokens, runtime.batch_size)
    invalid = sum(r["error"] is not None for r in judged)
    print(json.dumps({"judged": len(judged), "unparseable": invalid}))


# -- stage 3: the scores -----------------------------------------------------------------------------
def verdicts_from(records: list[dict]) -> dict[str, fb.Verdict]:
    return {r["key"]: fb.Verdict(hard=r["hard"], soft=r["soft"], error=r["error"]) for r in records}


def level_list(values: list, name: str) -> dict:
    return {f"{name}_l{level}": values[level - 1] for level in fb.LEVELS}


def _row(block: dict) -> dict:
    """A category's (or the merged) scores as table columns."""
    judged = block.get("judged")
    rule = block["rule"]
    return {"groups": block["groups"], **level_list(block["ssr"], "ssr"), "ssr_avg": block["ssr_avg"],
            **level_list(block["hsr"], "hsr"), "hsr_avg": block["hsr_avg"], "csl": block["csl"],
            "rule_groups": rule["groups"], "judged_groups": judged["groups"] if judged else 0,
            "unparseable": sum(judged["unparseable"]) if judged else 0}


def score_records(records: list[tuple[fb.Item, dict]], responses: list[dict], judged: list[dict] | None,
                  judge: str) -> dict:
    """``metrics.json`` of ``followbench_scores``: the table row, the per-category rows, the raw scores."""
    items = [item for item, _ in records]
    answers = fb.responses_by_prompt(items, responses)
    verdicts = verdicts_from(judged) if judged is not None else None
    scores = fb.score(items, answers, verdicts)
    truncated = {item.key for item, record in records if record["truncated"]}
    merged = _row(scores["merged"])
    metrics = {**{k: merged[k] for k in TABLE_COLUMNS if k in merged}, "judge": judge,
               "rule_items": sum(item.rule is not None for item in items),
               "judged_items": 0 if verdicts is None else sum(item.rule is None for item in items),
               "unparseable": merged["unparseable"], "truncated": len(truncated)}
    breakdown = []
    for category in fb.CATEGORIES:
        if category in scores:
            of_category = [item for item in items if item.category == category]
            breakdown.append({"category": category, **_row(scores[category]),
                              "truncated": sum(item.key in truncated for item in of_category)})
    per_item = []
    for item in items:
        verdict = verdicts.get(item.key) if verdicts is not None and item.rule is None else None
        per_item.append({"key": item.key, "category": item.category, "example_id": item.example_id,
                         "level": item.level, "rule": item.rule, "truncated": item.key in truncated,
                         "satisfied": fb.rule_check(item, answers[item.key]) if item.rule else
                         (None if verdict is None else verdict.hard),
                         "soft": None if verdict is None else verdict.soft,
                         "error": None if verdict is None else verdict.error})
    return {"metrics": metrics, "breakdown": breakdown, "scores": scores, "per_item": per_item}


def _cmd_scores(args) -> None:
    records = read_items(args.prompts)
    responses = read_jsonl(args.responses, required=("prompt", "response"))
    judged = read_jsonl(args.judged, required=("key", "hard", "soft", "error")) if args.judged else None
    result = score_records(records, responses, judged, args.settings.config.judge)
    write_jsonl(args.per_item, result.pop("per_item"))
    write_json(args.metrics, result)
    print(json.dumps(result["metrics"]))


@dataclass(frozen=True)
class ScoresConfig:
    judge: str  # the judge's name in the table: "none", the base model's label, a checkpoint, a served model


@dataclass(frozen=True)
class ScoresSettings:
    config: ScoresConfig
    runtime: NoRuntime


def add_cli(sub) -> None:
    """Register ``followbench-prompts``, ``followbench-judgements``, ``followbench-scores`` and
    ``score followbench`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("followbench-prompts", help="FollowBench's scored items with their prompts' token counts")
    p.add_argument("--model", required=True, help="the base model's checkpoint (its tokenizer and chat template)")
    p.add_argument("--out", required=True, help="items JSONL (key, prompt, category, level, path, rule, ...)")
    stage_settings.add_argument(p, PromptsSettings)
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("followbench-judgements", help="FollowBench: the judge's verdicts on the LLM-judged items")
    p.add_argument("--prompts", required=True, help="the followbench-prompts items")
    p.add_argument("--responses", required=True, help="the model's responses JSONL (prompt, response)")
    p.add_argument("--judge", default=None, help="judge checkpoint (none for a served model: config.judge.model)")
    p.add_argument("--out", required=True, help="judged JSONL: key, output (raw), hard, soft, error")
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    stage_settings.add_argument(p, JudgementsSettings)
    p.set_defaults(func=_cmd_judgements)

    p = sub.add_parser("followbench-scores", help="FollowBench: HSR, SSR and CSL per category and level")
    p.add_argument("--prompts", required=True, help="the followbench-prompts items")
    p.add_argument("--responses", required=True, help="the model's responses JSONL (prompt, response)")
    p.add_argument("--judged", default=None, help="the followbench-judgements verdicts (none: rule items only)")
    p.add_argument("--metrics", required=True)
    p.add_argument("--per-item", required=True)
    stage_settings.add_argument(p, ScoresSettings)
    p.set_defaults(func=_cmd_scores)

    score = sub.add_parser("score", help="score a response file on a benchmark, outside the workflow")
    benchmarks = score.add_subparsers(dest="benchmark", required=True)
    p = benchmarks.add_parser("followbench", help="FollowBench: rule checks (and judged verdicts) of responses")
    p.add_argument("--data", required=True, help="directory of the six {category}_constraints.json files")
    p.add_argument("--responses", required=True, help="JSONL with prompt and response (matched by prompt text)")
    p.add_argument("--judge", default="none",
                   help="none (rule-checked items only) or a JSONL of raw judge outputs (key, output)")
    p.add_argument("--groups", type=int, default=None, help="the first N groups of each category (default all)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=fb.cmd_score)

