"""The stage registry against the rules, the commands and every config under config/.

Each stage kind is declared once (ifplay.core.stages.STAGES); these tests make the declaration, the
rule of the same name, the ``ifplay`` command it runs and the plan of every shipped config agree,
so a mismatch fails here rather than when some config happens to plan that stage.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO, run
from ifplay.cli import build_parser
from ifplay.core.config import load_config
from ifplay.core.stages import GROUPS, STAGES, Stage, StageError
from ifplay.plan import Plan

RULES_DIR = REPO / "workflow" / "rules"
NOT_STAGES = {"all", "report"}  # the target and the experiment report (keyed by experiment, not by stage key)
CONFIGS = [None, *sorted((REPO / "config" / "experiments").glob("*.yaml")),
           *sorted((REPO / "config" / "paper").glob("*.yaml"))]
# Data the AutoIF paper configs read from the user's disk (AutoIF's seeds, ShareGPT, the NLI model):
# stand-ins, planned by their content hash like the real files.
USER_DATA = {"data/sharegpt/ShareGPT_V3_unfiltered_cleaned_split.json":
             '[{"id": "0", "conversations": [{"from": "human", "value": "hello there"}]}]\n',
             "data/autoif/seed_instruction.txt": "Answer with at least 50 words.\nUse no commas.\n",
             "models/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7/config.json": "{}\n"}


def config_id(path: Path | None) -> str:
    return "default" if path is None else f"{path.parent.name}/{path.stem}"


def rules() -> dict[str, str]:
    """Every rule's body by name, from workflow/rules/*.smk."""
    found = {}
    for smk in sorted(RULES_DIR.glob("*.smk")):
        for name, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^rule |\Z)", smk.read_text()):
            assert name not in found, f"rule {name} is defined twice"
            found[name] = body
    return found


def subcommands() -> set[str]:
    parser = build_parser()
    [sub] = [action for action in parser._actions if action.dest == "command"]
    return set(sub.choices)


@pytest.fixture
def user_data(tmp_path, monkeypatch):
    """A working directory holding the stand-ins of USER_DATA."""
    for name, text in USER_DATA.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_stage_kind_has_its_rule_and_every_rule_a_kind():
    assert set(rules()) - NOT_STAGES == set(STAGES)


@pytest.mark.parametrize("kind", sorted(STAGES))
def test_the_rule_agrees_with_its_kind(kind):
    spec, body = STAGES[kind], rules()[kind]
    assert spec.group in GROUPS
    outputs = re.findall(r'stage_output\("(\w+)"(?:, "([^"]+)")?\)', body)
    assert {k for k, _ in outputs} == {kind}, f"rule {kind} writes another kind's outputs: {outputs}"
    assert sorted(name or spec.main for _, name in outputs) == sorted(spec.files), "outputs differ from the declaration"
    if spec.outputs[0].endswith("/"):
        assert f'directory(stage_output("{kind}"))' in body
    for helper in ("stage_log", "stage_benchmark", "stage_env", "stage_threads", "stage_resources"):
        assert f'{helper}("{kind}")' in body, f"rule {kind} does not take {helper} from its kind"
    undeclared = set(re.findall(r'upstream\("(\w+)"\)', body)) - set(spec.inputs)
    assert not undeclared, f"rule {kind} reads inputs its kind does not declare: {undeclared}"
    command = re.search(r'"ifplay (?:launch [^"]*? -- )?([a-z-]+)', body).group(1)
    assert command == spec.command, f"rule {kind} runs `ifplay {command}`, its kind says `ifplay {spec.command}`"


def test_every_kind_names_an_ifplay_command():
    missing = {spec.command for spec in STAGES.values()} - subcommands()
    assert not missing, f"no such ifplay subcommand: {missing}"


def test_a_stage_against_its_declaration_fails_at_once():
    with pytest.raises(StageError, match="unknown stage kind 'spar_samples'"):
        Stage("spar_samples", {})
    with pytest.raises(StageError, match=r"config slice has keys \['limit', 'typo'\]"):
        Stage("prompts", {"limit": 1, "typo": 2})
    prompts = Stage("prompts", {"origin": {}, "limit": 1})
    with pytest.raises(StageError, match=r"inputs \['queries'\] are not declared"):
        Stage("prompt_subset", {"limit": 1}, {"queries": prompts})
    with pytest.raises(StageError, match="not an output of that input"):
        Stage("prompt_subset", {"limit": 1}, {"prompts": prompts}, files={"prompts": "queries.jsonl"})
    with pytest.raises(StageError, match="writes no usage.json"):
        prompts.path("usage.json")


@pytest.mark.parametrize("overlay", CONFIGS, ids=config_id)
def test_every_config_plans_only_declared_stages(overlay, user_data):
    plan = Plan(load_config([overlay] if overlay else []))
    assert plan.stages
    for stage in plan.stages.values():  # Stage checks its slice and inputs; these are what the rules read
        assert stage.output.startswith(f"results/{stage.kind}/{stage.key}/")
        for name in stage.inputs:
            assert stage.input_path(name).startswith("results/")
    assert all(path.startswith("results/") for path in plan.report_inputs())


@pytest.mark.slow
@pytest.mark.parametrize("overlay", CONFIGS, ids=config_id)
def test_every_config_dry_runs_and_lints_clean(overlay, user_data):
    """snakemake plans every job of the config (every input function resolves, every output has its
    rule) and --lint finds nothing, with the config as the user runs it."""
    args = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(user_data), "--cores", "1"]
    if overlay:
        args += ["--configfile", str(overlay)]
    dry = run([*args, "-n"], cwd=user_data).stdout
    assert "Job stats:" in dry and "report" in dry
    lint = run([*args, "--lint"], cwd=user_data)
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr
