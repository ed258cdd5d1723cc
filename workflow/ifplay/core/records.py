"""JSONL and JSON files: strict reading with file:line errors, atomic writing, resumable appends.

Every stage reads and writes plain JSONL (one JSON object a line) or JSON through this module, so
that bad input always names its file and line, and no reader ever sees a half-written output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


class RecordError(ValueError):
    """A data file is missing or malformed; the message names the file (and line)."""


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Read a JSONL file; every line must be a JSON object holding the ``required`` fields."""
    return list(iter_jsonl(path, required))


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[dict]:
    return (record for _, record in numbered_jsonl(path, required))


def numbered_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-empty line, checked as :func:`read_jsonl` checks them."""
    path = Path(path)
    required = tuple(required)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [field for field in required if field not in record]
            if missing:
                raise RecordError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            yield lineno, record


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move a finished directory (or directory link) ``tmp`` onto ``out``, replacing what is there."""
    out = Path(out)
    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def link_dir(target: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Make ``out`` a symbolic link to the directory ``target`` (atomically, replacing ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    elif tmp.exists():
        shutil.rmtree(tmp)
    tmp.symlink_to(Path(target).resolve(), target_is_directory=True)
    replace_dir(tmp, out)
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records atomically; returns how many were written."""
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def journal_path(output: str | os.PathLike) -> Path:
    """Where the journal of ``output`` lives while its stage runs: ``<output>.partial``."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def finish_journal(output: str | os.PathLike, records: list[dict]) -> None:
    """Write a journalled stage's ``output`` (atomically) and drop its journal."""
    write_jsonl(output, records)
    journal_path(output).unlink(missing_ok=True)


class Checkpoint:
    """An append-only JSONL journal beside a stage's output, so a killed job resumes where it stopped.

    Records are appended and flushed one by one; a torn last line (the job was killed mid-write)
    is dropped on reload. ``finish`` writes the final output atomically and removes the journal.
    """

    def __init__(self, output: str | os.PathLike, id_field: str = "id"):
        self.output = Path(output)
        self.path = journal_path(self.output)
        self.id_field = id_field
        self.records: list[dict] = []
        if self.path.exists():
            with self.path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # torn write at the moment the job was killed
        self.done = {record[id_field] for record in self.records}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Rewrite the journal without a torn tail before appending to it.
        with self.path.open("w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle = self.path.open("a", encoding="utf-8")

    def append(self, records: Iterable[dict]) -> None:
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.records.append(record)
            self.done.add(record[self.id_field])
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Stop appending; the journal stays until the stage removes it (it wrote its own output)."""
        self._handle.close()

    def ordered(self, order: list | None = None) -> list[dict]:
        """The journalled records, in ``order`` of ids when given."""
        if order is None:
            return list(self.records)
        by_id: dict = {}
        for record in self.records:
            by_id.setdefault(record[self.id_field], []).append(record)
        return [r for key in order for r in by_id.get(key, [])]

    def finish(self, order: list | None = None) -> list[dict]:
        """Write the output (in ``order`` of ids when given) and drop the journal."""
        self._handle.close()
        records = self.ordered(order)
        finish_journal(self.output, records)
        return records
