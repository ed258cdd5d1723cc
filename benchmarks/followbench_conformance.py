"""FollowBench conformance: ``ifplay.scoring.followbench`` against the official code, on response sets
that nobody wrote by hand.

The official scorer (github YJiangcm/FollowBench, ``code/rule_based_evaluation.py``, ``code/utils.py``,
``code/gpt4_based_evaluation.py``) is taken from a git clone or bare mirror of it (``--mirror``, default ``$FOLLOWBENCH_REPO``) into a temporary
directory and imported as it is (matplotlib on the Agg backend). Response sets, for every scored item:

* ``gold``: the item's own target (example items: the data's ``answer``, the template already filled
  in; CONLL2003: the first entity of the target's list; WIKIEVENTS: the target's first line). The
  summary and format-22/30 items have empty targets, so they fail here.
* ``synthetic-S``: for every rule family, seeded random text built to meet its checks level by level
  with some probability (sentence counts, word counts, key words, markers, last matches, ...), so that
  every family passes and fails at several levels; judged items keep the gold text.
* ``mutated-S`` and ``synthetic-mutated-S``: gold or synthetic with a seeded random mutation of half
  the responses (strip, trailing whitespace, an appended sentence, lower case, a word dropped, a
  number changed).

Each set is written as the official api_output files (``{dir}/{set}/{category}_constraint.jsonl``:
``prompt``, ``choices[0].message.content``) and scored by the official ``rule_evaluation`` and
``csl_five_constraint`` (content ... mixed) and ``evaluate_example_constraint`` /
``csl_example_constraint`` (example); ours, matched through ``responses_by_prompt``, by
``score(items, generations, None)``: its ``rule`` blocks must equal the official satisfied counts,
group counts and CSL sums per category and level, and the example category's percentages the
official strings.

Two further checks cover the judged side:

* the verdict parser: ``parse_verdict`` against the official ``paring_discriminative_generation`` on
  seeded random judge outputs (lists of every length and element, prose around them, fences, bare
  YES/NO, empty text). Both must agree, except where by design: a list written as an expression,
  which the official code ``eval``s and ours refuses (counted apart);
* the per-category merge: the official ``acquire_discriminative_eval_input`` writes the judge inputs
  of one response set, seeded random judge outputs answer them, and the official
  ``save_discriminative_evaluation`` / ``save_csl_evaluation`` write their HSR / SSR / CSL tables; with
  only valid verdicts ours must print the same figures, and with some unparseable ones the official
  raw sums must be ours minus the unparseable count (the official -1 where we score 0).

Run from the repository root (a few seconds; exits 1 on any difference):

    .venv/bin/python benchmarks/followbench_conformance.py [--data DIR] [--mirror DIR] [--seeds 10]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import importlib
import io
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from ifplay.scoring import followbench as fb

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "followbench"
# A clone (or bare mirror) of github YJiangcm/FollowBench: $FOLLOWBENCH_REPO, else this workplace's mirror.
DEFAULT_MIRROR = Path(os.environ.get("FOLLOWBENCH_REPO", "/work/.mirror/YJiangcm+FollowBench/repo"))
OFFICIAL_FILES = ("rule_based_evaluation.py", "utils.py", "gpt4_based_evaluation.py")
JUDGED = ("content", "situation", "style", "format", "mixed")

WORDS = ("the team said that new plans for the town would help local people find homes and jobs over "
         "the next few years while the council keeps costs low for every family living near the river").split()


# -- the official code -------------------------------------------------------------------------------
def load_official(mirror: Path, into: Path):
    """The official modules, extracted from the mirror's HEAD into ``into`` and imported."""
    commit = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    for name in OFFICIAL_FILES:
        text = subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:code/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (into / name).write_text(text, encoding="utf-8")
    os.environ["MPLBACKEND"] = "Agg"
    sys.path.insert(0, str(into))
    for name in ("utils", "rule_based_evaluation", "gpt4_based_evaluation"):
        sys.modules.pop(name, None)
    rules = importlib.import_module("rule_based_evaluation")
    judged = importlib.import_module("gpt4_based_evaluation")
    logging.getLogger("gpt4_based_evaluation").setLevel(logging.CRITICAL)  # it logs every invalid verdict
    return commit, rules, judged


def write_api_output(api_dir: Path, name: str, items: list[fb.Item], responses: dict[str, str]) -> None:
    folder = api_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for category in fb.CATEGORIES:
        with open(folder / f"{category}_constraint.jsonl", "w", encoding="utf-8") as handle:
            for item in items:
                if item.category == category:
                    handle.write(json.dumps({"prompt": item.instruction,
                                             "choices": [{"message": {"content": responses[item.key]}}]}) + "\n")


@contextlib.contextmanager
def quiet():
    """The official matching prints the index of every unmatched item: keep it, to fail on it."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


# -- response sets -----------------------------------------------------------------------------------
def gold_response(item: fb.Item, raw: dict) -> str:
    if item.category == "example":
        return raw[item.key]["answer"]
    if item.rule == "CONLL2003":
        return ast.literal_eval(item.target)[0]
    if item.rule == "WIKIEVENTS":
        return item.target.split("\n")[0]
    return item.target


def _words(rng: random.Random, n: int, keywords: list[str] = ()) -> list[str]:
    """About ``n`` words (``n`` tokens: a keyword of two words is one), keywords at random places."""
    words = [rng.choice(WORDS) for _ in range(max(1, n - len(keywords)))]
    for keyword in keywords:
        words.insert(rng.randrange(len(words) + 1), keyword)
    return words


def synthetic_response(item: fb.Item, raw: dict, rng: random.Random) -> str:
    """Random text for ``item``'s rule family that meets its checks level by level with some chance.

    Each ``miss(p)`` is a way to fail a check, taken with probability p (p / 5 in a careful text, one
    in three), so that the deeper levels pass now and then."""
    careful = rng.random() < 0.33
    r = rng.random

    def miss(p: float) -> bool:
        return r() < (p / 5 if careful else p)

    def sentence(n: int, keywords: list[str] = (), end: str = ".", first: str | None = None) -> str:
        words = _words(rng, n, keywords)
        if first is not None:
            words[0] = first
        elif r() < 0.8:
            words[0] = words[0].capitalize()
        return " ".join(words) + end

    rule, target = item.rule, item.target
    if rule == "cnn_dailymail":
        n = rng.choice([2, 4]) if miss(0.3) else 3
        sentences = []
        for i, key in enumerate(["Potter", "actor", "films", "river"][:n]):
            keywords = [] if miss(0.15) else [key]
            keywords += ["lavish"] if i == 1 and miss(0.2) else []
            keywords += ["has made"] if i == 2 and not miss(0.3) else []
            sentences.append(sentence(rng.randint(10, 16) if miss(0.2) else rng.randint(5, 13), keywords,
                                      "!" if r() < 0.2 else "."))
        text = " ".join(sentences)
    elif rule == "xsum":
        keywords = (["Newton Stewart"] if miss(0.2) else []) + ([] if miss(0.3) else ["is repairing"])
        keywords += [] if miss(0.3) else ["operation"]
        text = sentence(rng.randint(18, 24) if miss(0.3) else rng.randint(8, 18), keywords)
        text += " " + sentence(5) if miss(0.2) else ""
    elif rule == "samsum":
        keywords = ([] if miss(0.2) else ["stuff"]) + ([rng.choice(["procrastinating", "Procrast"])] if miss(0.15) else [])
        words = _words(rng, rng.randint(14, 18) if miss(0.3) else rng.randint(6, 13), keywords)
        if miss(0.3):
            words[rng.randrange(len(words))] += ","
        text = " ".join(words) + ("" if miss(0.2) else ".")
        text += " " + sentence(5) if miss(0.2) else ""
    elif rule == "gigaword":
        keywords = (["bus"] if miss(0.2) else []) + ([] if miss(0.25) else ["in"])
        words = _words(rng, rng.choice([7, 9]) if miss(0.3) else 8, keywords)
        if miss(0.2):
            words[0] = words[0].capitalize()
        text = " ".join(words) + ("." if miss(0.2) else "")
    elif rule == "arxiv":
        first = rng.choice(["Weather", "This", "we"]) if miss(0.25) else "We"
        keywords = ([] if miss(0.25) else ["activations"]) + (["transformer"] if miss(0.2) else [])
        text = sentence(rng.randint(19, 24) if miss(0.3) else rng.randint(10, 19), keywords, first=first)
        text += " " + sentence(6) if miss(0.2) else ""
    elif rule == "format_22":  # the number markers and the closing words where the level asks for them
        markers = (item.level >= 4) != miss(0.3)
        paragraphs = []
        for k in range(rng.choice([2, 4]) if miss(0.3) else 3):
            body = " ".join(sentence(rng.randint(14, 22) if miss(0.3) else rng.randint(21, 30))
                            for _ in range(3 if miss(0.25) else rng.choice([1, 2])))
            paragraphs.append(f"{k + 1}. {body}" if markers else body)
        if (item.level == 5) != miss(0.2):
            paragraphs.append("Those are suggestions")
        text = "\n\n".join(paragraphs)
    elif rule == "format_30":
        lines = [] if miss(0.3) else [sentence(rng.randint(10, 15))]
        for k in range(rng.choice([4, 6]) if miss(0.25) else 5):
            keyword = rng.choice(["Growth", "Jobs", "Trade", "Health", "Skills"])
            marker = "" if miss(0.05) else "**"
            space = " " if miss(0.2) else ""
            words = _words(rng, rng.randint(5, 16) if miss(0.2) else rng.randint(9, 14),
                           ["friend-ly"] if miss(0.1) else [])
            lines.append(f"{marker}{k + 1}.{space}{keyword}:{marker} " + " ".join(words) + ("." if miss(0.2) else "?"))
        text = "\n".join(lines)
    elif rule == "BBH_logical":
        letter = f"({rng.choice('ABCDE')})" if miss(0.4) else target
        text = rng.choice(["The answer is {}.", "{}", "Between (A) and (C), it is {}", "So the answer is {} "]).format(letter)
    elif rule == "BBH_time":
        date = (f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1930, 1945)}" if miss(0.4)
                else target)
        text = rng.choice(["{}", "The date is {}.", "Today is 01/01/1937, so the answer is {}"]).format(date)
    elif rule == "gsm_8k":
        amount = f"${int(target[1:]) + rng.choice([-1, 1, 10])}" if miss(0.4) else target
        text = rng.choice(["{}", "She earned {} in total.", "At $12 an hour she earns {}", "{}.50"]).format(amount)
    elif rule == "self_made_space":
        answer = target.replace("th", "st", 1) if miss(0.4) else target
        text = rng.choice(["{}", "He is now on the {}.", "{}"]).format(answer)
    elif rule in ("E2E", "text_editing"):
        text = mutate(target, rng) if miss(0.5) else target
    elif rule == "CONLL2003":
        entities = ast.literal_eval(target)
        text = rng.choice(["Paris", entities[0] + " ", entities[0].lower()]) if miss(0.4) else rng.choice(entities)
    elif rule == "WIKIEVENTS":
        lines = target.split("\n")
        chosen = rng.sample(lines, rng.randint(1, min(3, len(lines))))
        if miss(0.3):
            chosen.append("someone died at <arg2> place")
        text = "\n".join(chosen) + ("\n" if miss(0.1) else "")
    elif rule == "example":
        answer = raw[item.key]["answer"]
        text = rng.choice([f"Answer: {answer}", answer + "\n", answer.replace("'", '"'),
                           mutate(answer, rng)]) if miss(0.4) else answer
    else:  # judged: the gold text
        return gold_response(item, raw)
    return text + (" " if miss(0.05) else "")


def mutate(text: str, rng: random.Random) -> str:
    """One seeded random edit: strip, pad, append a sentence, lower-case, drop a word, change a number."""
    kind = rng.choice(["strip", "pad", "append", "lower", "drop", "number"])
    if kind == "strip":
        return text.strip()
    if kind == "pad":
        return text + rng.choice(["\n", " ", "\n\n"])
    if kind == "append":
        return text + rng.choice([" That is all.", "\nHope this helps!", " It has been done"])
    if kind == "lower":
        return text.lower()
    words = text.split(" ")
    if kind == "drop" and len(words) > 1:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    digits = [m.start() for m in re.finditer(r"\d", text)]
    if digits:
        at = rng.choice(digits)
        return text[:at] + str((int(text[at]) + rng.randint(1, 9)) % 10) + text[at + 1:]
    return text + "1"


def response_sets(items: list[fb.Item], raw: dict, seeds: int) -> list[tuple[str, dict[str, str]]]:
    gold = {item.key: gold_response(item, raw) for item in items}
    sets = [("gold", gold)]
    for seed in range(seeds):
        rng = random.Random(seed)
        sets.append((f"mutated-{seed}", {k: mutate(v, rng) if rng.random() < 0.5 else v for k, v in gold.items()}))
        rng = random.Random(1000 + seed)
        synthetic = {item.key: synthetic_response(item, raw, rng) for item in items}
        sets.append((f"synthetic-{seed}", synthetic))
        rng = random.Random(2000 + seed)
        sets.append((f"synthetic-mutated-{seed}",
                     {k: mutate(v, rng) if rng.random() < 0.5 else v for k, v in synthetic.items()}))
    return sets


# -- check 1: the rules ------------------------------------------------------------------------------
def check_rules(official, data: Path, api: Path, items, sets, totals, coverage) -> list[str]:
    differences = []
    for name, responses in sets:
        write_api_output(api, name, items, responses)
        records = [{"prompt": item.instruction, "response": responses[item.key]} for item in items]
        generations = fb.responses_by_prompt(items, records)
        ours = fb.score(items, generations, None)
        for item in items:
            if item.rule is not None:
                coverage[item.rule][item.level - 1][fb.rule_check(item, generations[item.key])] += 1
        with quiet() as printed:
            for category in fb.CATEGORIES:
                mine = ours[category]["rule"]
                if category == "example":
                    percent = official.evaluate_example_constraint(str(data), str(api), name)
                    csl, groups = official.csl_example_constraint(str(data), str(api), name)
                    theirs = {"groups": groups, "csl_sum": csl,
                              "satisfied": [round(float(p) * groups / 100) for p in percent]}
                    mine_percent = ["{:.2f}".format(p) for p in ours[category]["hsr"]]
                    if mine_percent != percent:
                        differences.append(f"{name}/{category}: percent {mine_percent} != official {percent}")
                else:
                    satisfied, groups = official.rule_evaluation(str(data), str(api), category, name)
                    csl, csl_groups = official.csl_five_constraint(str(data), str(api), category, name)
                    if csl_groups != groups:
                        differences.append(f"{name}/{category}: official groups {groups} (HSR) != {csl_groups} (CSL)")
                    theirs = {"groups": groups, "csl_sum": csl, "satisfied": [int(s) for s in satisfied]}
                if theirs != mine:
                    differences.append(f"{name}/{category}: ours {mine} != official {theirs}")
                total = totals[category]
                total["sets"] += 1
                total["groups"] += mine["groups"]
                total["satisfied"] = [a + b for a, b in zip(total["satisfied"], mine["satisfied"])]
                total["csl_sum"] += mine["csl_sum"]
                total["agree"] += theirs == mine
        if printed.getvalue().strip():
            differences.append(f"{name}: the official matching printed unmatched items: {printed.getvalue().split()}")
    return differences


# -- check 2: the verdict parser ---------------------------------------------------------------------
ELEMENTS = ["YES"] * 12 + ["NO"] * 6 + ["PARTIAL", "MAYBE", "UNKNOWN", "N/A", "yes", "Yes", "TRUE", "N0", ""]


EXPRESSIONS = ("['YES'] + ['NO']", "[f'YES', 'NO']")  # lists that eval reads and ast.literal_eval refuses


def judge_output(rng: random.Random, level: int, valid_only: bool = False, expressions: bool = True) -> str:
    """A random judge output for a level-``level`` item (``valid_only``: one the official parser reads;
    ``expressions``: lists written as expressions among the shapes)."""
    r = rng.random
    prose = "1) The added constraints are: a list of points.\n2) The answer meets most of them.\n" if r() < 0.7 else ""
    if valid_only:
        values = [rng.choice(["YES", "YES", "NO"] if level == 1 else ["YES", "YES", "NO", "PARTIAL"])
                  for _ in range(level)]
        return prose + (values[0] if level == 1 and r() < 0.3 else str(values))
    n = level if r() < 0.8 else max(0, level + rng.choice([-1, 1]))
    q = rng.choice(["'", '"'])
    body = "[" + ", ".join(f"{q}{rng.choice(ELEMENTS)}{q}" for _ in range(n)) + "]"
    shapes = ["{}"] * 14 + ["Final answer: {}", "Final answer: {}", "{} (all checked)", "```python\n{}\n```", "```\n{}\n```\n",
              "{}\nThat is my verdict.", "{} [note]", "[YES, NO]", "[True, 1]", "YES", "NO", "Yes", "NONE", "",
              "   \n", "[[{}]]", "('YES', 'NO')"]
    shape = rng.choice(shapes + list(EXPRESSIONS) if expressions else shapes)
    return prose + shape.format(body)


def check_parser(official, seeds: int) -> tuple[list[str], dict]:
    differences, counts = [], defaultdict(int)
    for seed in range(seeds):
        rng = random.Random(3000 + seed)
        for _ in range(400):
            level = rng.randint(1, 5)
            text = judge_output(rng, level)
            mine = fb.parse_verdict(text, level)
            theirs = official.paring_discriminative_generation(text, level)
            counts["outputs"] += 1
            if theirs == (-1, -1):
                counts["invalid"] += 1
                ok = not mine.valid
            elif not mine.valid and mine.error.startswith("the list is not a Python literal"):
                counts["by design (eval accepts an expression)"] += 1
                ok = True
            else:
                counts["valid"] += 1
                ok = mine.valid and (mine.hard, mine.soft) == theirs
            if not ok:
                differences.append(f"parser: level {level} {text!r}: ours {mine} != official {theirs}")
    return differences, dict(counts)


# -- check 3: the per-category merge of judged and rule sums ----------------------------------------
def read_row(path: Path) -> list[str]:
    """The one model row of an official result table, without the model name."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))[1][1:]


def check_merge(official, data: Path, work: Path, items, name: str, responses: dict[str, str], seed: int,
                valid_only: bool) -> list[str]:
    differences = []
    api, inputs, gpt_in, gpt_out, results = (work / d for d in ("api", "judge_data", "judge_in", "judge_out", f"results-{name}"))
    results.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    verdicts: dict[str, fb.Verdict] = {}
    with quiet() as printed:
        for category in JUDGED:
            official.acquire_discriminative_eval_input(str(data), str(api), category, name, str(inputs), str(gpt_in))
            lines = [json.loads(line) for line in open(inputs / name / f"{category}_constraint.jsonl", encoding="utf-8")]
            (gpt_out / name).mkdir(parents=True, exist_ok=True)
            with open(gpt_out / name / f"{category}_constraint.jsonl", "w", encoding="utf-8") as handle:
                for line in lines:
                    text = judge_output(rng, line["level"], valid_only=valid_only or rng.random() < 0.85,
                                        expressions=False)
                    verdicts[f"{category}/{line['example_id']}/{line['level']}"] = fb.parse_verdict(text, line["level"])
                    handle.write(json.dumps({"prompt_new": line["prompt_new"],
                                             "choices": [{"message": {"content": text}}]}) + "\n")
        judged_keys = {item.key for item in items if item.rule is None and item.category in JUDGED}
        if set(verdicts) != judged_keys:
            differences.append(f"{name}: the official judge inputs are not our judged items "
                               f"({len(set(verdicts) ^ judged_keys)} differ)")
            return differences
        ours = fb.score(items, fb.responses_by_prompt(
            items, [{"prompt": i.instruction, "response": responses[i.key]} for i in items]), verdicts)
        for category in JUDGED:
            mine = ours[category]
            if valid_only:
                official.save_discriminative_evaluation(str(data), str(api), str(inputs), str(gpt_out), category,
                                                        [name], str(results))
                official.save_csl_evaluation(str(data), str(api), str(inputs), str(gpt_out), category, [name],
                                             str(results))
                official.plt.close("all")
                table = {kind: read_row(results / f"{category}_{kind}.csv") for kind in ("hsr", "ssr", "csl")}
                expected = {"hsr": ["{:.2f}".format(v) for v in mine["hsr"]],
                            "ssr": ["{:.2f}".format(v) for v in mine["ssr"]],
                            "csl": [str(round(mine["csl"], 1))]}
                if table != expected:
                    differences.append(f"{name}/{category}: ours {expected} != official tables {table}")
            else:
                (hard, soft), groups = official.discriminative_evaluation(str(inputs), str(gpt_out), category, name)
                csl, _ = official.csl_evaluation(str(inputs), str(gpt_out), category, name)
                j = mine["judged"]
                want_hard = [h - u for h, u in zip(j["hard"], j["unparseable"])]
                want_soft = [s - u for s, u in zip(j["soft"], j["unparseable"])]
                if (groups, hard, csl) != (j["groups"], want_hard, j["csl_sum"]) or any(
                        abs(a - b) > 1e-9 for a, b in zip(soft, want_soft)):
                    differences.append(f"{name}/{category}: official sums {groups, hard, soft, csl} != ours less "
                                       f"the unparseable {j['groups'], want_hard, want_soft, j['csl_sum']}")
    if printed.getvalue().strip():
        differences.append(f"{name}: the official matching printed unmatched items: {printed.getvalue().split()[:10]}")
    return differences


# -- the report --------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the six {category}_constraints.json")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="a git clone or bare mirror of github YJiangcm/FollowBench (git clone "
                             "https://github.com/YJiangcm/FollowBench); default $FOLLOWBENCH_REPO")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of each random response set")
    args = parser.parse_args()

    items = fb.load_items(args.data)
    raw = {}
    for category in fb.CATEGORIES:
        for record in json.loads((args.data / f"{category}_constraints.json").read_text(encoding="utf-8")):
            raw[f"{category}/{record['example_id']}/{record['level']}"] = record
    with tempfile.TemporaryDirectory(prefix="followbench-conformance-") as tmp:
        work = Path(tmp)
        (work / "official").mkdir()
        commit, rules, judged = load_official(args.mirror, work / "official")
        sets = response_sets(items, raw, args.seeds)
        totals = {c: {"sets": 0, "agree": 0, "groups": 0, "satisfied": [0] * 5, "csl_sum": 0} for c in fb.CATEGORIES}
        coverage = defaultdict(lambda: [[0, 0] for _ in fb.LEVELS])
        differences = check_rules(rules, args.data, work / "api", items, sets, totals, coverage)
        parser_differences, parser_counts = check_parser(judged, args.seeds)
        differences += parser_differences
        merge_checks = 0
        for index, (name, responses) in enumerate(sets[:3]):
            for valid_only in (True, False):
                differences += check_merge(judged, args.data, work, items, name, responses, 4000 + index, valid_only)
                merge_checks += 1

    print(f"FollowBench conformance: ifplay.scoring.followbench vs the official code at {commit[:7]}")
    print(f"{len(items)} items ({sum(i.rule is not None for i in items)} rule-checked); {len(sets)} response sets: "
          f"{', '.join(name for name, _ in sets)}\n")
    print("Rule checks, summed over the sets (ours = official where 'agree' = 'sets'):")
    print(f"{'category':<10} {'sets':>4} {'agree':>5} {'groups':>6} " + " ".join(f"{f'L{l}':>5}" for l in fb.LEVELS)
          + f" {'CSL sum':>7}")
    for category, t in totals.items():
        print(f"{category:<10} {t['sets']:>4} {t['agree']:>5} {t['groups']:>6} "
              + " ".join(f"{n:>5}" for n in t["satisfied"]) + f" {t['csl_sum']:>7}")
    print("\nRule families exercised (passed/checked per level, all sets):")
    for family in sorted(coverage):
        print(f"  {family:<16} " + "  ".join(f"L{l} {p:>3}/{p + f:<3}" for l, (f, p) in zip(fb.LEVELS, coverage[family])))
    print(f"\nVerdict parser: {parser_counts}")
    print(f"Judged + rule merge: {merge_checks} runs (official HSR/SSR/CSL tables with valid verdicts; "
          "raw sums with unparseable ones)")
    if differences:
        print(f"\n{len(differences)} DIFFERENCE(S):")
        for line in differences[:50]:
            print("  " + line)
        return 1
    print("\nNo differences.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
