"""IFBench conformance: ``ifplay.scoring.ifbench`` against the official code, response by response.

The official scorer (github allenai/IFBench: ``evaluation_lib.py`` and the ``ifbench`` package) is
taken from a git clone or bare mirror of it (``--mirror``, default ``$IFBENCH_REPO``) into a
temporary directory and imported as it is, with ``nltk.download`` switched off (it downloads what
NLTK lacks on import), ``random.seed(0)`` and langdetect seeded as its README says. For every
response set and every prompt the official ``test_instruction_following_strict`` then
``test_instruction_following_loose`` (in that order, on the same example, as ``run_eval`` does) give
the per-instruction verdicts; ours (:func:`ifplay.scoring.ifbench.follows`) must give the same lists.
A prompt whose checker lacks NLTK data here (the POS tagger: ``words:start_verb``) makes the official
code raise ``LookupError``; ours must call exactly those prompts unscorable.

Response sets:

* ``official-sample``: the official ``data/sample_output.jsonl`` (a model's responses, not ours),
  matched by prompt text; prompts without a response are left out;
* ``prompts``: each prompt as its own response; ``empty``: "", " " and "\\n";
* ``edits``: each of ``EDITS`` applied to every sample response (or, without one, the prompt): edits
  aimed at where checkers can differ (closing quotes and ``?!`` at sentence ends, curly quotes,
  contractions, names inside longer words, title case with "a", trailing whitespace and newlines,
  bullets, emoji, sentences reversed or dropped); ``mutated-S``: one to three seeded random edits per
  response, and the prompt's keyword put at the second and second-to-last word;
* ``probes``: every text of ``PROBES`` (where the older package and HEAD part, from
  docs/studies/ifbench-checkers.md) as the response to every prompt;
* ``spans``: for the repeat:repeat_span prompts, the character span HEAD expects, the word span the
  prompt asks for, and both off by one; ``targeted``: responses built from a prompt's own arguments
  (keyword positions, sentence keywords, names inside longer words, equal-length sentences, 26
  sentences, bullets after sentences ending in ``?!`` or a closing quote).

Run from the repository root (exits 1 on any difference; about a minute):

    .venv/bin/python benchmarks/ifbench_conformance.py [--data FILE] [--mirror DIR] [--seeds 5]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from ifplay.scoring import ifbench as ib

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ifbench" / "IFBench_test.jsonl"
# A clone (or bare mirror) of github allenai/IFBench: $IFBENCH_REPO, else this workplace's mirror.
DEFAULT_MIRROR = Path(os.environ.get("IFBENCH_REPO", "/work/.mirror/allenai+IFBench/repo"))
OFFICIAL_FILES = ("evaluation_lib.py", "ifbench/__init__.py", "ifbench/instructions.py",
                  "ifbench/instructions_registry.py", "ifbench/instructions_util.py",
                  "ifbench/classic_instructions.py")


def git(mirror: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(mirror), *args], check=True, capture_output=True, text=True).stdout


def load_official(mirror: Path, into: Path):
    """The official ``evaluation_lib``, extracted from the mirror's HEAD into ``into`` and imported."""
    import langdetect
    import nltk

    commit = git(mirror, "rev-parse", "HEAD").strip()
    for name in OFFICIAL_FILES:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text(git(mirror, "show", f"HEAD:{name}"), encoding="utf-8")
    sys.path.insert(0, str(into))
    download, nltk.download = nltk.download, (lambda *args, **kwargs: False)
    try:
        evaluation_lib = importlib.import_module("evaluation_lib")
    finally:
        nltk.download = download
    random.seed(0)
    langdetect.DetectorFactory.seed = 0
    return commit, evaluation_lib


def official_verdicts(lib, record: dict, response: str) -> tuple[list[bool], list[bool]] | None:
    """HEAD's strict then loose verdicts (None where a checker lacks its NLTK data)."""
    example = lib.InputExample(key=record["key"], instruction_id_list=record["instruction_id_list"],
                               prompt=record["prompt"], kwargs=copy.deepcopy(record["kwargs"]))
    table = {record["prompt"]: response}
    try:
        strict = lib.test_instruction_following_strict(example, table)
        loose = lib.test_instruction_following_loose(example, table)
    except LookupError:
        return None
    return strict.follow_instruction_list, loose.follow_instruction_list


# -- response sets -----------------------------------------------------------------------------------
NAMES_INSIDE = "Leonard moved to Miami with Graceful Davidson."
EDITS = [
    lambda t, r: t + "\n",
    lambda t, r: "  " + t + " \n\n",
    lambda t, r: t.replace('"', "\u201c", 1).replace('"', "\u201d", 1),
    lambda t, r: t.replace(".", '."', 1),
    lambda t, r: t.replace(".", "?!", 2),
    lambda t, r: t.replace(".", "?", 1),
    lambda t, r: t.replace(" is ", "'s ").replace(" not ", "n't "),
    lambda t, r: t.replace(" and ", " a ").replace(" the ", " The "),
    lambda t, r: NAMES_INSIDE + " " + t,
    lambda t, r: "I'm sure you're right, we've won. This is what everyone wants. " + t,
    lambda t, r: " ".join(w[:1].upper() + w[1:] for w in t.split(" ")),
    lambda t, r: " ".join(w[:1].upper() + w[1:] for w in t.split(" ")).replace(" A ", " a "),
    lambda t, r: t.lower(),
    lambda t, r: t.upper(),
    lambda t, r: "\n".join("* " + line for line in t.split("\n")),
    lambda t, r: "First sentence here. Second one here.\n* one\n* two" + ("\n" if r.random() < 0.5 else ""),
    lambda t, r: t.replace(". ", " \U0001F600. ").replace(".\n", " \U0001F680.\n"),
    lambda t, r: t.split(". ")[0] + ".",
    lambda t, r: ". ".join(t.split(". ")[::-1]),
    lambda t, r: t.replace(" and ", " e.g. and ", 1).replace(".", ".Next", 1),
    lambda t, r: '"' + t + '"',
    lambda t, r: t + ' He said "".',
]


#: Texts where the package's older checkers and HEAD's part (docs/studies/ifbench-checkers.md).
PROBES = [
    "Leonard moved to Miami.", "Emma met Liam, Sophia and Noah. Ava came too.",
    "I'm sure you're right, we've won.", "This is what everyone wants, and that is something.",
    "Life Is a Journey", "Life Is A Journey Worth Taking", "The Cat Isn't Here", "NASA And McDonald Sell iPhone",
    "He said \u201chello\u201d \u201cworld\u201d loudly.", "The motto is \u201ccarpe diem\u201d", "...", '"..."',
    'He said "hi" and left. Use the \'"\' sign.', "The vibrant city was vibrant today.",
    "A whisper is what I heard, a whisper.", 'A whisper is what I heard, a "whisper."',
    'She said, "It works." Then? Yes! Done.', "Is it? Yes. No. Why? Fine. Good.", "Really?! Yes. Yes.",
    "Cats chase cats. Dogs dig deep ditches daily. Big bold bears bring blue berries by boats.",
    "One two three. One two three four five. One two three four five six seven.",
    "I like tea. Tea is warm. Warm days end.", "Wonderful day today \U0001F600. Great fun \U0001F680.",
    "First sentence here. Second one here.\n* one\n* two", "First sentence here. Second one here.\n* one\n* two\n",
    "eagle bald the is symbol national the", "See file.txt now.Then go. E.g. this one.",
]


def targeted(record: dict) -> list[str]:
    """Responses built for the prompt's own arguments, where the older package and HEAD part."""
    out = []
    for instruction_id, kwargs in zip(record["instruction_id_list"], record["kwargs"]):
        if instruction_id == "words:keywords_specific_position":
            keyword, n, m = kwargs["keyword"].strip(), kwargs["n"], kwargs["m"]
            filler = "This is filler. " * (n - 1)
            for before in (["w"] * (m - 1), ["w"] * (m - 2) + ["--", "w"], ["w"] * (m - 2) + ["don't"]):
                for word in (keyword, keyword.upper(), f'"{keyword}"', f"{keyword},"):
                    out.append(filler + " ".join(before + [word, "end."]))
        elif instruction_id == "sentence:keyword":
            word, n = kwargs["word"], int(kwargs["N"])
            filler = "This is filler. " * (n - 1)
            out += [filler + f"This has {word}.", filler + f"This has {word.upper()}!", filler + f"Many {word}s here.",
                    filler.replace(". ", '." ') + f"This has {word}."]
        elif instruction_id == "count:person_names":
            out.append("Leonard, Miami, Graceful, Davidson, Avalanche, Stellar, Ryanair, Thomason, Emmanuel, "
                       "Nathaniel, Owens, Claireville, Ariana, Ellaby, Zoey, Chloes, Lilypad, Danielle, Samuels.")
        elif instruction_id == "ratio:sentence_words":
            out += ["Cat sat. Dog ran. Owl hid.", 'A "cat." Dog ran. Owl hid.', "Cat sat?! Dog ran. Owl hid."]
        elif instruction_id == "custom:sentence_alphabet":
            for odd in ("?!", ".\u201d"):
                out.append(" ".join(chr(65 + i) + "ll good" + (odd if i == 3 else ".") for i in range(26)))
        elif instruction_id == "format:no_bullets_bullets":
            out += ["Really?! Yes.\n* one\n* two", 'She said "go." Fine.\n* one\n* two']
    return out


def keyword_edit(record: dict, text: str) -> str:
    """Put the prompt's keyword (words:words_position / words:keywords_specific_position /
    sentence:keyword) where its checker looks, with punctuation and case varied."""
    for kwargs in record["kwargs"]:
        keyword = kwargs.get("keyword") or kwargs.get("word")
        if keyword:
            return f"The {keyword} is here and {text} the {keyword.capitalize()}."
    return text


def response_sets(records: list[dict], sample: dict[str, str], seeds: int) -> list[tuple[str, dict[str, str]]]:
    sets = [("official-sample", {r["key"]: sample[r["prompt"]] for r in records if r["prompt"] in sample}),
            ("prompts", {r["key"]: r["prompt"] for r in records})]
    sets += [(f"empty-{i}", {r["key"]: text for r in records}) for i, text in enumerate(["", " ", "\n"])]
    sample_or_prompt = {r["key"]: sample.get(r["prompt"], r["prompt"]) for r in records}
    sets.append(("edits", {f"{r['key']}#{i}": edit(sample_or_prompt[r["key"]], random.Random(i))
                           for r in records for i, edit in enumerate(EDITS)}))
    sets.append(("probes", {f"{r['key']}#{i}": text for r in records
                            for i, text in enumerate([*PROBES, keyword_edit(r, "it is so")])}))
    for seed in range(seeds):
        rng = random.Random(seed)
        mutated = {}
        for record in records:
            text = sample.get(record["prompt"], record["prompt"])
            for _ in range(rng.randint(1, 3)):
                text = rng.choice(EDITS)(text, rng)
            mutated[record["key"]] = keyword_edit(record, text) if rng.random() < 0.3 else text
        sets.append((f"mutated-{seed}", mutated))
    spans = {}
    for record in records:
        for instruction_id, kwargs in zip(record["instruction_id_list"], record["kwargs"]):
            if instruction_id == "repeat:repeat_span":
                prompt, start, end = kwargs["prompt_to_repeat"], kwargs["n_start"], kwargs["n_end"]
                words = prompt.split()
                for i, answer in enumerate([prompt[start:end + 1], " ".join(words[start:end + 1]),
                                            " ".join(words[start:end]), prompt[start:end]]):
                    spans[f"{record['key']}#{i}"] = answer
    sets.append(("spans", spans))
    sets.append(("targeted", {f"{r['key']}#{i}": text for r in records for i, text in enumerate(targeted(r))}))
    return sets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="IFBench_test.jsonl")
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR,
                        help="a git clone or bare mirror of github allenai/IFBench; default $IFBENCH_REPO")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the mutated response sets")
    args = parser.parse_args()

    records = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_key = {r["key"]: r for r in records}
    sample = {}
    for line in git(args.mirror, "show", "HEAD:data/sample_output.jsonl").splitlines():
        row = json.loads(line)
        sample[row["prompt"]] = row["response"]
    with tempfile.TemporaryDirectory(prefix="ifbench-conformance-") as tmp:
        commit, lib = load_official(args.mirror, Path(tmp))
        sets = response_sets(records, sample, args.seeds)
        totals, differences, by_id = [], [], Counter()
        for name, responses in sets:
            compared = unscorable = agree = 0
            for key, response in responses.items():
                record = by_key[key.split("#")[0]]
                official = official_verdicts(lib, record, response)
                reason = ib.unscorable_reason(record["instruction_id_list"], response)
                if official is None or reason is not None:
                    unscorable += 1
                    if (official is None) != (reason is not None):
                        differences.append(f"{name} {key}: official {'raised LookupError' if official is None else 'scored'}"
                                           f", ours {'unscorable: ' + reason if reason else 'scored'}")
                    continue
                ours = ib.follows(record, response)
                compared += 1
                if ours == official:
                    agree += 1
                else:
                    for mode, o, t in zip(("strict", "loose"), official, ours):
                        for instruction_id, a, b in zip(record["instruction_id_list"], o, t):
                            if a != b:
                                by_id[instruction_id] += 1
                                differences.append(f"{name} {key} {mode} {instruction_id}: official {a}, ours {b}")
                for mode, verdicts in zip(("strict", "loose"), official):
                    for instruction_id, verdict in zip(record["instruction_id_list"], verdicts):
                        by_id[(instruction_id, mode, verdict)] += 1
            totals.append((name, len(responses), compared, unscorable, agree))

    print(f"IFBench conformance: ifplay.scoring.ifbench vs the official code at {commit[:7]}")
    print(f"{len(records)} prompts; missing NLTK data here: {', '.join(ib.missing_nltk_data()) or 'none'}\n")
    print(f"{'response set':<16} {'responses':>9} {'compared':>8} {'unscorable':>10} {'agree':>6}")
    for name, n, compared, unscorable, agree in totals:
        print(f"{name:<16} {n:>9} {compared:>8} {unscorable:>10} {agree:>6}")
    ids = sorted({k[0] for k in by_id if isinstance(k, tuple)})
    print("\nVerdicts exercised per checker (official pass/fail, strict and loose, all sets):")
    for instruction_id in ids:
        cells = "  ".join(f"{mode} {by_id[(instruction_id, mode, True)]:>4}/{by_id[(instruction_id, mode, False)]:<4}"
                          for mode in ("strict", "loose"))
        print(f"  {instruction_id:<34} {cells}")
    if differences:
        print(f"\n{len(differences)} differences; first 30:")
        print("\n".join(differences[:30]))
        return 1
    print("\nNo differences.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
