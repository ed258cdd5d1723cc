"""config/default.yaml is the one source of defaults (issue 13 part 4).

The schema (workflow/schemas/config.schema.yaml) gives every key's type, range and meaning, holds no
``default`` and requires every key; config/default.yaml sets each key, with a comment;
``check_config`` merges a partial config over default.yaml before validating it.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from conftest import REPO
from ifplay.core import config as config_module
from ifplay.core.config import ConfigError, check_config, deep_merge, load_config, load_schema

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_TEXT = (REPO / "config" / "default.yaml").read_text()
DEFAULT = yaml.safe_load(DEFAULT_TEXT)
SCHEMA = load_schema()

# The only keys the schema does not require, because their absence means something: the tree searches
# at inference and of refinement accuracy take every key they lack from spar.search, and warmup_steps (a step count) is the
# alternative to warmup_ratio. Setting them in default.yaml would change behaviour or stage keys.
TRAINING = ("spar.actor_dpo", "spar.refiner_rft", "sft.training", "autoif.sft", "autoif.offline_dpo",
            "autoif.online_dpo.training", "self_rewarding.dpo", "meta_rewarding.dpo")
OPTIONAL = ({f"eval.{section}.search.{key}" for section in ("inference_scaling", "refinement") for key in (
    "algorithm", "branch", "select", "max_depth", "end_gate", "selection", "temperature", "top_p", "max_new_tokens")}
    | {f"{section}.warmup_steps" for section in TRAINING})
# Objects whose keys are free (additionalProperties is a schema): default.yaml need not list keys there.
FREE_MAPS = {"prompt_evolution.categories"}


# -- the schema ---------------------------------------------------------------------------------
def resolve(node: dict) -> dict:
    """``node`` with its ``$ref`` (a local ``#/...`` pointer) merged in, as JSON Schema 2020-12 reads it."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target = SCHEMA
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return node


def schema_keys(node: dict = SCHEMA, prefix: str = ""):
    """(path, resolved schema, required) of every key the schema names, recursively through $ref."""
    node = resolve(node)
    required = set(node.get("required", ()))
    for name, sub in node.get("properties", {}).items():
        path = prefix + name
        yield path, resolve(sub), name in required
        yield from schema_keys(sub, path + ".")


def schema_objects(node: dict = SCHEMA, path: str = "<top level>"):
    """(path, resolved schema) of every object with named keys, the top level included."""
    node = resolve(node)
    if "properties" in node:
        yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_objects(sub, name if path == "<top level>" else f"{path}.{name}")


def keywords(node, names: bool = False):
    """Every keyword used anywhere in the schema (the keys of ``properties`` and ``$defs`` are names, not keywords)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not names:
                yield key
            yield from keywords(value, names=not names and key in ("properties", "$defs", "patternProperties"))
    elif isinstance(node, list):
        for value in node:
            yield from keywords(value)


def compare(value, node: dict, prefix: str, missing: list, unknown: list) -> None:
    """Walk a config value against its schema: required keys it lacks, keys the schema does not name."""
    node = resolve(node)
    properties = node.get("properties")
    if properties is None or not isinstance(value, dict):
        return  # a leaf, a free map, or a null where the schema allows one (the schema check decides)
    for name, sub in properties.items():
        if name in value:
            compare(value[name], sub, f"{prefix}{name}.", missing, unknown)
        elif f"{prefix}{name}" not in OPTIONAL:
            missing.append(prefix + name)
    unknown.extend(prefix + key for key in value if key not in properties)


def test_every_schema_key_is_set_in_default_yaml():
    missing: list[str] = []
    compare(DEFAULT, SCHEMA, "", missing, [])
    assert missing == [], f"keys the schema names but config/default.yaml does not set: {missing}"


def test_every_default_yaml_key_is_in_the_schema():
    unknown: list[str] = []
    compare(DEFAULT, SCHEMA, "", [], unknown)
    assert unknown == [], f"keys of config/default.yaml the schema does not name: {unknown}"
    assert set(DEFAULT) == set(SCHEMA["properties"])


def test_every_key_is_required_but_the_listed_optional_ones():
    assert {path for path, _, required in schema_keys() if not required} == OPTIONAL
    for path, node in schema_objects():
        required = node.get("required", [])
        assert len(required) == len(set(required)), f"{path}: duplicate names in required"
        assert set(required) <= set(node["properties"]), f"{path}: required names unknown keys"
        assert node.get("additionalProperties") is False, f"{path}: unknown keys must be rejected"


def test_only_the_listed_maps_are_free():
    free = {path: node for path, node, _ in schema_keys() if isinstance(node.get("additionalProperties"), dict)}
    assert set(free) == FREE_MAPS
    assert all("properties" not in node and "required" not in node for node in free.values())


def test_the_schema_holds_no_default():
    assert "default" not in set(keywords(SCHEMA))
    text = SCHEMA_PATH.read_text()
    assert not re.search(r"(^|[{,])\s*default\s*:", text, re.MULTILINE)


def test_snakemake_validate_fills_nothing_and_needs_every_key():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = copy.deepcopy(DEFAULT)
    validate(config, str(SCHEMA_PATH))
    assert config == DEFAULT
    with pytest.raises(WorkflowError, match="'seed' is a required property"):
        validate({"experiment": "x"}, str(SCHEMA_PATH))


# -- comments in default.yaml -------------------------------------------------------------------
def _inline_comment(line: str, start: int) -> bool:
    quote = None
    for i in range(start, len(line)):
        char = line[i]
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and line[i - 1] in " \t":
            return True
    return False


def undocumented(text: str) -> list[str]:
    """Key paths of ``text`` (a YAML config) without a comment, by default.yaml's convention:

    * a key has its own comment when its line carries one, or the line directly above it is a
      comment at its indent, or it is a one-line key (a scalar or a flow mapping) on the line right
      after a one-line sibling that has a comment directly above it or is itself in such a run;
    * top-level keys and the keys directly under them need their own comment; a deeper key is also
      documented by its section's own comment (one level: a section documents its keys, not theirs);
    * the keys inside a flow mapping are documented when the key owning the mapping is.
    """
    lines = text.splitlines()
    missing: list[str] = []

    def above(key) -> bool:
        row, column = key.start_mark.line, key.start_mark.column
        previous = lines[row - 1] if row else ""
        return previous.lstrip().startswith("#") and len(previous) - len(previous.lstrip()) == column

    def one_line(node) -> bool:
        return isinstance(node, yaml.ScalarNode) or bool(node.flow_style)

    def walk(node, path: tuple, section_commented: bool, owner_documented: bool) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        run, previous_end = False, None
        for key, value in node.value:
            here = path + (key.value,)
            if node.flow_style:
                own = documented = owner_documented
            else:
                in_run = run and one_line(value) and previous_end == key.start_mark.line - 1
                own = above(key) or _inline_comment(lines[key.start_mark.line], key.start_mark.column) or in_run
                documented = own or (len(here) > 2 and section_commented)
                run = one_line(value) and (above(key) or in_run)
                previous_end = value.end_mark.line
            if not documented:
                missing.append(".".join(here))
            walk(value, here, own, documented)

    walk(yaml.compose(text), (), False, False)
    return missing


def test_every_key_of_default_yaml_is_documented():
    assert undocumented(DEFAULT_TEXT) == []


@pytest.mark.parametrize("text, expected", [
    ("# a\na: 1\nb: 2\n", []),  # a run of one-line keys under one comment
    ("a: 1  # a\nb: 2\n", ["b"]),  # an inline comment is about its own line only
    ("# a\na: 1\n\nb: 2\n", ["b"]),  # a blank line ends the run
    ("# s\ns:\n  b: 1\n", ["s.b"]),  # keys directly under a top-level section need their own
    ("# s\ns:\n  # t\n  t:\n    u: 1\n    v: {w: 2}\n", []),  # deeper: the section's comment is enough
    ("# s\ns:\n  # t\n  t:\n    u:\n      v: 1\n", ["s.t.u.v"]),  # ... one level only
    ("# s\ns:\n  # t\n  t:\n    x: 1\n  y: 2\n", ["s.y"]),  # a run does not continue past a block
    ("# s\ns:\n  t: {u: 1}\n", ["s.t", "s.t.u"]),  # a flow mapping's keys go with their owner
    ("# s\ns:\n  # t\n  t:\n    x: 1\n  u: \"a # no\"\n  v: 'b # no'\n", ["s.u", "s.v"]),  # '#' in quotes
])
def test_the_documentation_rule(text, expected):
    assert undocumented(text) == expected


@pytest.mark.parametrize("anchor, insert, path", [
    ("\n# Name of this experiment", "\nnew_key: 1\n", "new_key"),
    ("model:\n", "  new_key: 1\n", "model.new_key"),
    ("\n# The teacher that makes", "  new_key: 1\n", "meta_rewarding.new_key"),
    ("  # Failing responses per prompt", "  new_key: {a: 1}\n", "spar.new_key"),
    ("  # Judge: model (the refiner", "  new_key:\n    a: 1\n", "spar.new_key"),
    ("\n# Evaluation of every model", "\n  new_key: 1\n", "data.new_key"),
])
def test_an_undocumented_new_key_in_default_yaml_is_caught(anchor, insert, path):
    assert DEFAULT_TEXT.count(anchor) == 1
    at = DEFAULT_TEXT.index(anchor) + (len(anchor) if anchor.endswith(":\n") else 0)
    text = DEFAULT_TEXT[:at] + insert + DEFAULT_TEXT[at:]
    assert path in undocumented(text)
    assert yaml.safe_load(text) != DEFAULT  # the key really went in


# -- check_config merges over default.yaml ------------------------------------------------------
def test_check_config_of_nothing_is_default_yaml():
    assert check_config({}) == DEFAULT
    assert load_config() == DEFAULT


def test_check_config_does_not_share_the_defaults():
    first = check_config({})
    first["eval"]["benchmarks"]["ifeval"]["limit"] = 1
    first["spar"]["search"]["branch"] = 9
    assert check_config({}) == DEFAULT


def test_a_partial_config_is_merged_over_default_yaml_in_place():
    partial = {"experiment": "x", "eval": {"max_new_tokens": 640, "benchmarks": {"dev": {"enabled": False}}}}
    expected = deep_merge(DEFAULT, partial)
    result = check_config(partial)
    assert result is partial and partial == expected
    assert partial["eval"]["benchmarks"]["ifeval"] == DEFAULT["eval"]["benchmarks"]["ifeval"]
    assert partial["eval"]["inference_scaling"] == DEFAULT["eval"]["inference_scaling"]


def test_an_invalid_partial_config_is_left_untouched():
    partial = {"eval": {"max_new_tokens": 0}}
    with pytest.raises(ConfigError):
        check_config(partial)
    assert partial == {"eval": {"max_new_tokens": 0}}


@pytest.mark.parametrize("overlay, key", [
    ({"modle": {}}, "modle"),
    ({"eval": {"benchmarks": {"ifeval": {"limt": 3}}}}, "eval.benchmarks.ifeval.limt"),
    ({"spar": {"actor_dpo": {"lora": {"rank": 8}}}}, "spar.actor_dpo.lora.rank"),
    ({"eval": {"inference_scaling": {"search": {"budget": 3}}}}, "eval.inference_scaling.search.budget"),
    ({"autoif": {"online_dpo": {"training": {"warmup": 3}}}}, "autoif.online_dpo.training.warmup"),
])
def test_an_unknown_key_is_rejected_naming_its_path(overlay, key):
    with pytest.raises(ConfigError) as err:
        check_config(overlay)
    message = str(err.value)
    assert "1 problem(s)" in message
    assert f"key '{key}': unknown key (allowed here: " in message and "schema rule 'additionalProperties'" in message


@pytest.mark.parametrize("drop, key", [
    (("spar", "search", "budget"), "spar.search.budget"),
    (("teacher",), "teacher"),
    (("autoif", "sft", "lora", "r"), "autoif.sft.lora.r"),
    (("resources", "generation", "nodes"), "resources.generation.nodes"),
])
def test_a_key_missing_from_the_defaults_is_an_error_naming_it(monkeypatch, drop, key):
    broken = copy.deepcopy(DEFAULT)
    section = broken
    for part in drop[:-1]:
        section = section[part]
    del section[drop[-1]]
    monkeypatch.setattr(config_module, "_DEFAULTS", broken)
    with pytest.raises(ConfigError) as err:
        check_config({})
    message = str(err.value)
    assert "1 problem(s)" in message
    assert f"key '{key}': missing (every key must be set; config/default.yaml sets the defaults)" in message
    assert "schema rule 'required'" in message


def test_an_optional_key_may_be_absent_or_set():
    assert "warmup_steps" not in check_config({})["autoif"]["sft"]
    config = check_config({"autoif": {"sft": {"warmup_ratio": None, "warmup_steps": 20}},
                           "eval": {"inference_scaling": {"search": {"temperature": 0.5}}}})
    assert config["autoif"]["sft"]["warmup_steps"] == 20
    assert config["eval"]["inference_scaling"]["search"]["temperature"] == 0.5
