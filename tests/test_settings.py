"""Stage settings: one structured --settings argument per stage command, parsed into dataclasses
with no defaults of their own (ifplay.core.settings); every stage any config plans parses."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from ifplay.cli import build_parser, settings_class
from ifplay.core import settings
from ifplay.core.config import load_config
from ifplay.core.stages import STAGES
from ifplay.plan import Plan

from test_stages import CONFIGS, config_id, user_data  # noqa: F401 (user_data: the paper configs' stand-in files)


@dataclass(frozen=True)
class Inner:
    votes: int
    temperature: float


@dataclass(frozen=True)
class Model:
    kind: str
    inner: Inner


@dataclass(frozen=True)
class Verifier:
    kind: str
    timeout: float


@dataclass(frozen=True)
class Example:
    judge: Model | Verifier
    stop: list[str] | None
    label: str


def test_parse_fills_nested_dataclasses():
    value = settings.parse(Example, {"judge": {"kind": "model", "inner": {"votes": 3, "temperature": 1}},
                                     "stop": ["\n"], "label": "x"})
    assert value == Example(Model("model", Inner(3, 1.0)), ["\n"], "x")
    assert settings.parse(Example, {"judge": {"kind": "verifier", "timeout": 3}, "stop": None, "label": "x"}).judge \
        == Verifier("verifier", 3.0)


@pytest.mark.parametrize("data, message", [
    ({"judge": {"kind": "v", "timeout": 3}, "stop": None}, r"settings: missing key\(s\) label"),
    ({"judge": {"kind": "v", "timeout": 3}, "stop": None, "label": "x", "extra": 1}, r"unknown key\(s\) extra"),
    ({"judge": {"kind": "v", "timeout": "3"}, "stop": None, "label": "x"}, r"settings.judge.timeout: expected a number"),
    ({"judge": {"kind": "m", "inner": {"votes": True, "temperature": 1}}, "stop": None, "label": "x"},
     r"settings.judge.inner.votes: expected int"),
    ({"judge": {"kind": "v", "timeout": 3}, "stop": [1], "label": "x"}, r"settings.stop\[0\]: expected str"),
])
def test_parse_names_the_key_that_is_wrong(data, message):
    with pytest.raises(settings.SettingsError, match=message):
        settings.parse(Example, data)


def test_load_reads_json_or_a_file(tmp_path):
    (tmp_path / "s.json").write_text('{"a": 1}')
    assert settings.load(f"@{tmp_path / 's.json'}") == settings.load('{"a": 1}') == {"a": 1}
    with pytest.raises(settings.SettingsError, match=r"--settings: not JSON"):
        settings.load("{a")
    with pytest.raises(settings.SettingsError, match=r"s.json: expected a JSON object"):
        (tmp_path / "s.json").write_text("[1]")
        settings.load(f"@{tmp_path / 's.json'}")


def test_settings_dataclasses_have_no_defaults():
    """The one set of defaults is config/default.yaml: no settings dataclass brings a second."""
    import dataclasses

    def walk(cls, where):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{where}.{f.name} has a default"
            for tp in [f.type] if not isinstance(f.type, str) else []:
                if dataclasses.is_dataclass(tp):
                    walk(tp, f"{where}.{f.name}")

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    classes = {name: p.get_default("settings_class") for name, p in sub.choices.items()}
    for kind in STAGES.values():
        assert kind.command in classes, f"stage kind {kind.name}: no command {kind.command}"
    for name, cls in classes.items():
        if cls is not None:
            import typing

            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                assert f.default is dataclasses.MISSING, f"{name}: {f.name} has a default"
                tp = hints[f.name]
                if dataclasses.is_dataclass(tp):
                    walk(tp, f"{name}.{f.name}")


@pytest.mark.parametrize("overlay", CONFIGS, ids=config_id)
def test_every_planned_stage_parses_into_its_command_settings(overlay, user_data):
    """Every stage of every config under config/ (default, experiments, paper) parses into its
    command's settings: a slice or runtime key the command does not declare fails here."""
    for stage in Plan(load_config([overlay] if overlay else [])).stages.values():
        cls = settings_class(stage.spec.command)
        if cls is None:  # a command with nothing to set (ifeval-scores) takes no --settings
            assert stage.settings() == {"config": {}, "runtime": {}}, f"{stage.spec.command} takes no --settings"
            continue
        settings.parse_stage(cls, json.loads(json.dumps(stage.settings())), where=f"{stage.kind}/{stage.key}")


def test_a_bad_setting_is_a_clear_cli_error(tmp_path, capsys):
    from ifplay.cli import main

    bad = json.dumps({"config": {"backend": {"name": "transformers", "dtype": "float32"}, "sampling": {"n": 1}}, "runtime": {}})
    code = main(["generate", "--model", "m", "--prompts", "p", "--out", str(tmp_path / "o"), "--threads", "1",
                 "--settings", bad])
    assert code == 2
    assert "settings.config.sampling: missing key(s) temperature, top_p, max_new_tokens, seed" in capsys.readouterr().err
