"""The workflow configuration: schema validation with readable errors, defaults, overlays.

``workflow/schemas/config.schema.yaml`` is the single description of every key. The Snakefile
calls :func:`check_config` before anything else (then ``snakemake.utils.validate`` with the same
schema), and the ``ifplay`` commands that need the whole config load it through :func:`load_config`,
so both see the same defaults and the same errors.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "config" / "default.yaml"


class ConfigError(ValueError):
    """The configuration broke a schema rule; the message names the key and the rule."""


def load_schema() -> dict:
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref:
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return merged
    return schema


def fill_defaults(config: dict, schema: dict | None = None, root: dict | None = None) -> dict:
    """Fill in every missing key that has a ``default`` in the schema, recursively (in place)."""
    root = root if root is not None else (schema or load_schema())
    schema = _resolve(schema or root, root)
    for name, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if name not in config and "default" in sub:
            config[name] = copy.deepcopy(sub["default"])
        if isinstance(config.get(name), dict) and sub.get("type") == "object":
            fill_defaults(config[name], sub, root)
    return config


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # The offending key is in the message, not the path.
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts.append(extra[0] if extra else "?")
    return ".".join(parts) or "<top level>"


def format_error(error: jsonschema.ValidationError, source: str = "config") -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        what = f"unknown key (allowed here: {allowed})"
    else:
        what = error.message
    return f"{source}: key '{key}': {what} [schema rule '{error.validator}' at {'/'.join(map(str, error.absolute_schema_path))}]"


def check_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema, fill defaults, and return it.

    Raises :class:`ConfigError` listing every violation, each with its key path and the schema
    rule it broke, e.g. ``key 'eval.max_new_tokens': 0 is less than the minimum of 1 [schema rule
    'minimum' ...]``.
    """
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n  ".join(format_error(e, source) for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem(s)):\n  {lines}")
    return fill_defaults(config, schema)


def deep_merge(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into a copy of ``base`` the way Snakemake merges --configfile layers."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(paths: Iterable[str | os.PathLike] = (), overrides: dict | None = None) -> dict:
    """Load the default config, then each overlay in order, then ``overrides``; validate."""
    config: dict = {}
    sources = [DEFAULT_CONFIG, *map(Path, paths)]
    for path in sources:
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such config file")
        with open(path, encoding="utf-8") as handle:
            layer = yaml.safe_load(handle) or {}
        if not isinstance(layer, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping at the top level")
        config = deep_merge(config, layer)
    if overrides:
        config = deep_merge(config, overrides)
    return check_config(config, source=", ".join(map(str, sources)))


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
