"""The workflow configuration: one source of defaults, schema validation with readable errors, overlays.

``config/default.yaml`` is the only place a default value lives: it sets every key. Snakemake
loads it first (the Snakefile's ``configfile:``) and merges ``--configfile`` overlays over it;
:func:`check_config` merges any partial config over it the same way, so the two always agree.
``workflow/schemas/config.schema.yaml`` describes every key (type, range, meaning) and holds no
defaults: it requires every key, so a key missing from ``default.yaml`` is an error naming it, and
it rejects unknown keys at every level. The Snakefile calls :func:`check_config` before anything
else (then ``snakemake.utils.validate`` with the same schema), and the ``ifplay`` commands that need
the whole config load it through :func:`load_config`, so both see the same values and errors.
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


_DEFAULTS: dict | None = None


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    with path.open(encoding="utf-8") as handle:
        layer = yaml.safe_load(handle) or {}
    if not isinstance(layer, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping at the top level")
    return layer


def default_config() -> dict:
    """A copy of ``config/default.yaml`` (read once per process)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = _read_mapping(DEFAULT_CONFIG)
    return copy.deepcopy(_DEFAULTS)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # The offending key is in the message, not the path.
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts.append(extra[0] if extra else "?")
    elif error.validator == "required":
        # The missing key too: jsonschema says "'name' is a required property".
        missing = [name for name in error.validator_value if name not in error.instance]
        named = [name for name in missing if error.message.startswith(f"{name!r} ")]
        parts.append((named or missing or ["?"])[0])
    return ".".join(parts) or "<top level>"


def format_error(error: jsonschema.ValidationError, source: str = "config") -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        what = f"unknown key (allowed here: {allowed})"
    elif error.validator == "required":
        what = "missing (every key must be set; config/default.yaml sets the defaults)"
    else:
        what = error.message
    return f"{source}: key '{key}': {what} [schema rule '{error.validator}' at {'/'.join(map(str, error.absolute_schema_path))}]"


def check_config(config: dict, source: str = "config") -> dict:
    """Merge ``config`` over ``config/default.yaml``, validate the result against the schema, return it.

    ``config`` may be partial (``{}`` gives the default); on success the keys it lacks are filled
    in place from the default (so a caller holding it, like the Snakefile's ``config``, sees every
    key) and it is returned, equal to ``deep_merge(default, config)``. Raises :class:`ConfigError`
    listing every violation, each with its key path and the schema rule it broke, e.g. ``key
    'eval.max_new_tokens': 0 is less than the minimum of 1 [schema rule 'minimum' ...]`` or, for a
    key that even the default lacks, ``key 'spar.search.budget': missing ... [schema rule
    'required' ...]``; ``config`` is left untouched then.
    """
    merged = deep_merge(default_config(), config)
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n  ".join(format_error(e, source) for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem(s)):\n  {lines}")
    return _fill_missing(config, merged)


def _fill_missing(config: dict, merged: dict) -> dict:
    """Add to ``config`` (in place) the keys of ``merged`` it lacks, at every level."""
    for key, value in merged.items():
        if key not in config:
            config[key] = value
        elif isinstance(value, dict) and isinstance(config[key], dict):
            _fill_missing(config[key], value)
    return config


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
    config = default_config()
    sources = [DEFAULT_CONFIG, *map(Path, paths)]
    for path in sources[1:]:
        config = deep_merge(config, _read_mapping(path))
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
