"""Every command README.md shows works as written on this checkout.

Workflow commands (`snakemake ...`, `.venv/bin/snakemake ...`) run as written plus `-n` (a dry
run plans every job: config, overlays, profile and every rule's inputs resolve) from the repository
root with nothing activated; `make` lines name targets of the Makefile; `ifplay` lines name its
subcommands and parse. tests/test_workflow.py runs a real workflow the same way (a bare PATH).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
OVERLAY = sorted((REPO / "config" / "experiments").glob("*.yaml"))[0]


def shell_lines() -> list[str]:
    """The command lines of README.md's fenced code blocks (comments and prompts stripped, `\\`
    continuations joined)."""
    text = README.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip().removeprefix("$ ")
            if re.match(r"(make|snakemake|\.venv/bin/snakemake|ifplay|\.venv/bin/ifplay)\b", line):
                lines.append(line)
    return lines


COMMANDS = shell_lines()


def concrete(line: str) -> list[str]:
    """The line as a command: placeholders (NAME, A, B) replaced by real names."""
    line = line.replace("config/experiments/NAME.yaml", str(OVERLAY.relative_to(REPO)))
    return shlex.split(line)


def test_the_readme_shows_the_two_commands_and_an_overlay():
    assert "make run" in COMMANDS and "make test" in COMMANDS
    assert any("--configfile config/experiments/" in line for line in COMMANDS)
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


@pytest.mark.parametrize("line", [c for c in COMMANDS if c.startswith("make")])
def test_make_lines_name_targets(line):
    targets = set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))
    for word in shlex.split(line)[1:]:
        if "=" not in word and not word.startswith("-"):
            assert word in targets, f"README: `{line}`: no Makefile target {word}"


@pytest.mark.parametrize("line", [c for c in COMMANDS if "ifplay" in c.split()[0]])
def test_ifplay_lines_parse(line):
    from ifplay.cli import build_parser

    args = concrete(line)[1:]
    if any(a.isupper() and len(a) <= 4 for a in args):  # placeholders like A B: the subcommand must exist
        args = [args[0], "--help"]
    with pytest.raises(SystemExit) if "--help" in args else _nothing():
        build_parser().parse_args(args)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("line", [c for c in COMMANDS if "snakemake" in c.split()[0]])
def test_workflow_lines_dry_run_as_written_with_nothing_activated(line):
    args = concrete(line)
    if args[0] == "snakemake":  # as a user with the environment activated would
        args[0] = str(VENV_BIN / "snakemake")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([*args, "-n"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README: `{line}` -n failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
