"""SPaR's prompt evolution (its release's ``instruction_evolve.py``; arXiv 2412.11605, step 0):
a teacher rewrites seed prompts into instruction-following prompts with constraints.

For every seed prompt a generator seeded by the run's seed and the seed prompt's key draws one
*main* constraint category from the taxonomy (the paper's 14 categories, grouped as format,
content and general; ``prompt_evolution.categories``) and 1-3 *other* categories (the
``others`` range) from the rest; Length is never drawn as an other (the release gives non-length
constraints priority). The evolution template (``config/prompts/evolve.txt``, placeholders
``{prompt}``, ``{main_constraint}``, ``{other_constraints}``) asks the teacher for the rewritten
prompt between ``[[start]]`` and ``[[end]]``, or ``None`` for maths and code, which are declined.

:func:`parse_evolved` sorts each answer into evolved / declined / unparsed; evolved prompts equal
to their seed or to an earlier evolved prompt (whitespace and case aside) are dropped as
unchanged / duplicate. Outputs: ``prompts.jsonl`` (key = the seed's key, prompt, the drawn
constraints), ``evolved.jsonl`` (every answer with its status), ``counts.json`` (kept and dropped
at each step) and ``usage.json`` (the teacher's calls and, for a server, requests and tokens).
Generation is journalled per chunk, so an interrupted stage resumes without asking again.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

from tqdm.auto import tqdm

from ifplay.generation.backends import Backend, BackendRuntime, SamplingParams
from ifplay.generation.teacher import TeacherConfig
from ifplay.generation.templates import joined, template_turns
from ifplay.core.records import Checkpoint

log = logging.getLogger(__name__)

#: The paper's 14 constraint categories, grouped (the grouping and descriptions are ours).
TAXONOMY = {
    "format": {
        "Length": "a limit on the number of words, sentences or paragraphs",
        "Text format": "a layout such as bullet points, numbered sections, a title or JSON",
        "Character format": "letter case, e.g. all lowercase or all capitals",
        "Template": "a fixed structure the answer must fill, e.g. given headings or a closing line",
        "Punctuation": "a rule on punctuation, e.g. no commas or ending every sentence with '!'",
        "Numeric format": "how numbers are written, e.g. digits only or exactly three figures",
    },
    "content": {
        "Keyword": "words or phrases that must, or must not, appear",
        "Symbol": "a symbol or marker to include, e.g. placeholders in square brackets",
        "Sentence": "a rule on sentences, e.g. a given first or last sentence",
        "Genre": "a genre or form, e.g. a poem, a letter or a news report",
        "Language": "the language of the answer",
    },
    "general": {
        "Situation": "a situation or audience to write for",
        "Language style": "a register or style, e.g. formal, humorous or Shakespearean",
        "Sentiment": "a tone or sentiment, e.g. optimistic or apologetic",
    },
}

STATUSES = ("evolved", "declined", "unparsed")
_START = re.compile(r"\[\[\s*start\s*\]\]", re.IGNORECASE)
_END = re.compile(r"\[\[\s*end\s*\]\]", re.IGNORECASE)
_NONE = re.compile(r"^\W*none\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class Constraint:
    group: str
    category: str
    description: str

    def text(self) -> str:
        return f"{self.category}: {self.description}"


def categories(taxonomy: dict) -> list[Constraint]:
    """Every category of ``taxonomy`` ({group: {category: description}}), in order."""
    found = [Constraint(group, name, description) for group, items in taxonomy.items()
             for name, description in items.items()]
    if not found:
        raise ValueError("prompt_evolution.categories: the taxonomy has no category")
    return found


def draw_constraints(rng: random.Random, taxonomy: dict, others: tuple[int, int]) -> tuple[Constraint, list[Constraint]]:
    """One main category and ``others[0]..others[1]`` distinct other categories (never Length)."""
    low, high = others
    if not 0 <= low <= high:
        raise ValueError(f"prompt_evolution.others: need 0 <= min <= max, got {list(others)}")
    pool = categories(taxonomy)
    main = rng.choice(pool)
    rest = [c for c in pool if c.category != main.category and c.category.lower() != "length"]
    return main, rng.sample(rest, min(rng.randint(low, high), len(rest)))


def render(template: str, prompt: str, main: Constraint, others: list[Constraint]) -> list[dict]:
    """The evolution request as chat turns: the user turn, and the template's assistant prefill if
    it has one (after a line ``<<<assistant>>>``, e.g. ``[[start]]`` for a small teacher)."""
    listed = "\n".join(f"- {c.text()}" for c in others) or "- (none)"
    return template_turns(template, prompt=prompt, main_constraint=main.text(), other_constraints=listed)


def parse_evolved(text: str) -> tuple[str, str | None]:
    """(status, prompt): the text between the last ``[[start]]`` and the next ``[[end]]`` (or the
    end of the text) is the evolved prompt; ``None`` there or as the whole answer declines."""
    starts = list(_START.finditer(text))
    if not starts:
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        return ("declined", None) if _NONE.match(first_line) else ("unparsed", None)
    body = text[starts[-1].end():]
    end = _END.search(body)
    prompt = (body[:end.start()] if end else body).strip()
    if not prompt:
        return "unparsed", None
    if _NONE.match(prompt):
        return "declined", None
    return "evolved", prompt


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def evolve_prompts(seeds: list[dict], teacher: Backend, template: str, taxonomy: dict, others: tuple[int, int],
                   params: SamplingParams, seed: int, journal_path: str, chunk: int = 32) -> tuple[list[dict], list[dict], dict]:
    """Ask the teacher to evolve every seed prompt; returns (kept prompts, every answer, counts).
    Answers are journalled to ``journal_path`` (its ``.partial``) chunk by chunk."""
    keys = [s["key"] for s in seeds]
    if len(set(keys)) != len(keys):
        raise ValueError("seed prompts must have distinct keys")
    plans = {}
    for record in seeds:
        rng = random.Random(f"{seed}:{record['key']}")
        main, extra = draw_constraints(rng, taxonomy, others)
        plans[record["key"]] = (record, main, extra)
    journal = Checkpoint(journal_path, id_field="key")
    todo = [k for k in keys if k not in journal.done]
    if journal.done:
        log.info("prompt evolution: resuming, %d of %d seeds already answered", len(keys) - len(todo), len(keys))
    with tqdm(total=len(keys), initial=len(keys) - len(todo), desc="evolve", unit="prompt") as bar:
        for start in range(0, len(todo), chunk):
            part = [plans[k] for k in todo[start:start + chunk]]
            conversations = [render(template, record["prompt"], main, extra) for record, main, extra in part]
            outputs = teacher.chat(conversations, params, progress="evolve")
            rows = []
            for (record, main, extra), conversation, texts in zip(part, conversations, outputs):
                answer = joined(conversation, texts[0])
                status, prompt = parse_evolved(answer)
                rows.append({"key": record["key"], "seed_prompt": record["prompt"], "main_constraint": main.category,
                             "main_group": main.group, "other_constraints": [c.category for c in extra],
                             "answer": answer, "status": status, "prompt": prompt})
            journal.append(rows)
            bar.update(len(part))
    answers = journal.finish(order=keys)
    kept, seen = [], set()
    counts = {"seeds": len(seeds), **{status: 0 for status in STATUSES}, "unchanged": 0, "duplicates": 0}
    for row in answers:
        counts[row["status"]] += 1
        if row["status"] != "evolved":
            continue
        normal = _normal(row["prompt"])
        if normal == _normal(row["seed_prompt"]):
            counts["unchanged"] += 1
            continue
        if normal in seen:
            counts["duplicates"] += 1
            continue
        seen.add(normal)
        kept.append({"key": row["key"], "prompt": row["prompt"], "seed_prompt": row["seed_prompt"],
                     "main_constraint": row["main_constraint"], "main_group": row["main_group"],
                     "other_constraints": row["other_constraints"]})
    counts["kept"] = len(kept)
    return kept, answers, counts


def load_seeds(source: str, limit: int | None = None, config_key: str = "prompt_evolution.seeds") -> list[dict]:
    """Seed prompts (key, prompt): ``builtin:NAME`` (the repository's ``prompt_sets/NAME.jsonl``), a
    JSONL path, or ``hf:ORG/NAME[@REV]`` (split train; a ``prompt`` or ``instruction`` column, the
    row number as key when there is no ``key``). First ``limit`` in file order."""
    from ifplay.core.records import RecordError, read_jsonl
    from ifplay.core.sources import hub_rows, prompt_origin

    origin = prompt_origin(source, config_key)
    if origin.kind == "hub":
        records = []
        for index, row in enumerate(hub_rows(origin, config_key)):
            text = row.get("prompt", row.get("instruction"))
            if not isinstance(text, str):
                raise RecordError(f"{origin.location} row {index}: no 'prompt' or 'instruction' text")
            records.append({"key": row.get("key", index), "prompt": text})
    else:
        records = [{"key": r["key"], "prompt": r["prompt"]} for r in read_jsonl(origin.location, required=("key", "prompt"))]
    return records[:limit] if limit else records


# -- stage settings (ifplay.core.settings) ------------------------------------------------------
@dataclass(frozen=True)
class Evolution:
    """``prompt_evolution``, as an evolved_prompts stage hashes it."""

    seeds: dict  # the seed prompts' identity (builtin name and hash, hub id, a file's hash); source: runtime
    limit: int | None  # the first N seeds; null = all
    template: dict  # {"sha256": ...}: the evolution template's content (its path: runtime template)
    categories: dict | None  # the taxonomy {group: {category: description}}; null = TAXONOMY
    others: list[int]  # [min, max] other constraints
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: list[str]

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              seed=seed, stop=tuple(self.stop))


@dataclass(frozen=True)
class EvolvedPromptsConfig:
    evolution: Evolution
    teacher: TeacherConfig
    seed: int


@dataclass(frozen=True)
class EvolvedPromptsRuntime(BackendRuntime):
    """The teacher's backend settings, the seeds' source and the evolution template's path."""

    source: str  # builtin:NAME, a JSONL (key, prompt) or hf:ORG/NAME (prompt_evolution.seeds)
    template: str


@dataclass(frozen=True)
class EvolvedPromptsSettings:
    """``ifplay evolved-prompts --settings``."""

    config: EvolvedPromptsConfig
    runtime: EvolvedPromptsRuntime


# -- command line -----------------------------------------------------------------------------
def _cmd_evolve(args) -> None:
    import json

    from ifplay.generation.templates import load_template
    from ifplay.core.records import write_json, write_jsonl
    from ifplay.generation.teacher import teacher_from_settings

    config, runtime = args.settings.config, args.settings.runtime
    evolution = config.evolution
    template = load_template(runtime.template, "evolution")
    seeds = load_seeds(runtime.source, evolution.limit)
    with teacher_from_settings(config.teacher, runtime, args.teacher, args.threads) as teacher:
        kept, answers, counts = evolve_prompts(seeds, teacher, template, evolution.categories or TAXONOMY,
                                               tuple(evolution.others), evolution.sampling(config.seed), config.seed,
                                               args.evolved)
        usage = teacher.usage()
    write_jsonl(args.out, kept)
    write_json(args.counts, counts)
    write_json(args.usage, usage)
    print(json.dumps({"counts": counts, "usage": usage}))


def add_cli(sub) -> None:
    """Register ``evolved-prompts`` on the ``ifplay`` subparsers."""
    from ifplay.core import settings
    from ifplay.generation.teacher import add_teacher_argument

    p = sub.add_parser("evolved-prompts", help="SPaR: the teacher evolves seed prompts into constrained prompts")
    add_teacher_argument(p)
    p.add_argument("--out", required=True, help="kept prompts JSONL (key, prompt, constraints)")
    p.add_argument("--evolved", required=True, help="every teacher answer with its status (JSONL)")
    p.add_argument("--counts", required=True, help="counts JSON")
    p.add_argument("--usage", required=True, help="the teacher's usage JSON")
    settings.add_argument(p, EvolvedPromptsSettings)
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    p.set_defaults(func=_cmd_evolve)
