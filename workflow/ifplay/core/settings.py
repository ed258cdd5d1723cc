"""Stage settings: one structured argument per stage command, parsed into dataclasses.

A stage command takes its files as flags and everything else in one ``--settings`` argument: the
stage's config slice (hashed into its key) and its runtime settings (paths, batch sizes: not
hashed), as the JSON object ``{"config": {...}, "runtime": {...}}`` that :meth:`Stage.settings`
writes and the rules pass (``workflow/rules/common.smk``: ``stage_settings``). The command declares
the shape as a dataclass with the two fields ``config`` and ``runtime``; :func:`parse` fills it and
refuses a missing key, an unknown key or a value of the wrong type, naming the key's path. The
dataclasses have **no defaults**: the one set of defaults is ``config/default.yaml``.

A stage that generates also gets ``"generation_log": "logs/<kind>/<key>.generation.jsonl"``, the
path of its generation journal (:mod:`ifplay.generation.journal`; not hashed, read by no stage):
:func:`parse_stage` splits it off.

By hand, ``ifplay plan [--configfile ...] --settings KIND`` prints the settings of the first planned
stage of that kind (or ``--settings KEY``: of that stage), ready to pass as ``--settings "$(...)"``
or, saved to a file, as ``--settings @FILE``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union


@dataclass(frozen=True)
class NoRuntime:
    """The runtime of a stage that has no runtime settings."""


class SettingsError(ValueError):
    """Stage settings that do not match the command's declaration."""


def load(text: str, where: str = "--settings") -> dict:
    """The settings object from ``text``: JSON, or ``@PATH`` to a JSON file."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except OSError as err:
            raise SettingsError(f"{where}: cannot read {path}: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SettingsError(f"{where}: not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def parse(cls: type, data: Any, where: str = "settings") -> Any:
    """``data`` (decoded JSON) as an instance of the dataclass ``cls``, checked key by key."""
    return _convert(cls, data, where)


GENERATION_LOG = "generation_log"


def parse_stage(cls: type, data: Any, where: str = "settings") -> tuple[Any, str | None]:
    """A stage's settings object as ``(cls instance, generation journal path or None)``."""
    if isinstance(data, dict) and GENERATION_LOG in data:
        data = dict(data)
        journal = data.pop(GENERATION_LOG)
        if journal is not None and not isinstance(journal, str):
            raise SettingsError(f"{where}.{GENERATION_LOG}: expected a path, got {_name(journal)}")
        return _convert(cls, data, where), journal
    return _convert(cls, data, where), None


def fields(cls: type) -> list[str]:
    """The keys a settings dataclass declares (for help texts)."""
    return [f.name for f in dataclasses.fields(cls)]


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except SettingsError as err:
                errors.append(str(err))
        raise SettingsError(" / ".join(errors) if len(errors) > 1 else errors[0])
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise SettingsError(f"{where}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
        return value
    if tp is Any:
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            raise SettingsError(f"{where}: expected a list, got {_name(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected an object, got {_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: expected a number, got {_name(value)}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise SettingsError(f"{where}: expected {tp.__name__}, got {_name(value)}")
        return value
    raise TypeError(f"{where}: settings type {tp!r} is not supported")


def _dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise SettingsError(f"{where}: expected an object with keys {', '.join(fields(cls))}, got {_name(value)}")
    hints = typing.get_type_hints(cls)
    declared = fields(cls)
    unknown = sorted(set(value) - set(declared))
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(unknown)} ({cls.__name__} declares "
                            f"{', '.join(declared)})")
    missing = [name for name in declared if name not in value]
    if missing:
        raise SettingsError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**{name: _convert(hints[name], value[name], f"{where}.{name}") for name in declared})


def _name(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:60]}"


def add_argument(parser, cls: type) -> None:
    """``--settings`` (required) for a stage command whose settings dataclass is ``cls``; the CLI
    parses it into ``args.settings`` before the command runs (:func:`ifplay.cli.main`)."""
    hints = typing.get_type_hints(cls)
    parts = [f"{name}: {', '.join(fields(hints[name]))}" for name in fields(cls) if dataclasses.is_dataclass(hints[name])]
    parser.add_argument("--settings", required=True, metavar="JSON|@FILE",
                        help="the stage's settings, {\"config\": ..., \"runtime\": ...} (" + "; ".join(parts)
                        + "); `ifplay plan --settings KIND|KEY` prints a planned stage's")
    parser.set_defaults(settings_class=cls)
