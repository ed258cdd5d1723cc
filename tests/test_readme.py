"""Every command README.md and docs/*.md show works as written on this checkout.

- README's overlay commands (the `snakemake --configfile config/experiments/NAME.yaml` block) run for
  real, NAME = smoke, from a copy of the checkout through `.venv/bin/snakemake` with nothing
  activated (PATH=/usr/bin:/bin): the workflow runs to its report, then `ifplay plan` and `ifplay
  diff` on it.
- Every other workflow line (`snakemake ...`, `.venv/bin/snakemake ...`) runs as written plus `-n`
  (a dry run: config, overlays, profiles and every rule's inputs resolve); tests/test_slurm.py runs
  the SLURM profile for real.
- `ifplay` lines of docs/ run as written where the files they name are given (placeholders filled,
  `[optional]` flags included), in a directory holding those files; the others parse.
- `make` lines name targets of the Makefile.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA

README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent
SMOKE = "smoke"  # config/experiments/smoke.yaml: the overlay README's commands are run with
BARE_PATH = "/usr/bin:/bin"
PROGRAMS = r"(make|snakemake|\.venv/bin/snakemake|ifplay|\.venv/bin/ifplay)"


def shell_lines(doc: Path) -> list[str]:
    """The command lines of a page's fenced code blocks (comments and prompts stripped, `\\`
    continuations joined)."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip().removeprefix("$ ")
            if re.match(PROGRAMS + r"\s", line + " "):
                lines.append(line)
    return lines


COMMANDS = {doc: shell_lines(doc) for doc in DOCS}
ALL = [(doc, line) for doc, lines in COMMANDS.items() for line in lines]
OVERLAY_BLOCK = [line for line in COMMANDS[README] if "NAME" in line]


def ids(item) -> str:
    doc, line = item
    return f"{doc.name}:{line[:60]}"


def concrete(line: str) -> list[str]:
    """The line as a command: README's placeholders (NAME, A, B) replaced by real names, `[...]`
    optional parts included."""
    line = line.replace("config/experiments/NAME.yaml", f"config/experiments/{SMOKE}.yaml")
    line = re.sub(r"\[([^\]]*)\]", r"\1", line)
    return shlex.split(line)


def program(args: list[str]) -> list[str]:
    """`snakemake`/`ifplay` as a user with the environment activated would run them."""
    if args[0] in ("snakemake", "ifplay"):
        return [str(VENV_BIN / args[0]), *args[1:]]
    return args


def test_the_readme_shows_the_two_commands_and_an_overlay():
    assert "make run" in COMMANDS[README] and "make test" in COMMANDS[README]
    assert any("--configfile config/experiments/NAME.yaml" in line for line in OVERLAY_BLOCK)
    assert (REPO / "config" / "experiments" / f"{SMOKE}.yaml").is_file()
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 300


@pytest.mark.parametrize("item", [i for i in ALL if i[1].startswith("make")], ids=ids)
def test_make_lines_name_targets(item):
    doc, line = item
    targets = set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))
    for word in shlex.split(line)[1:]:
        if "=" not in word and not word.startswith("-"):
            assert word in targets, f"{doc.name}: `{line}`: no Makefile target {word}"


@pytest.mark.parametrize("item", [i for i in ALL if "ifplay" in i[1].split()[0]], ids=ids)
def test_ifplay_lines_parse(item):
    from ifplay.cli import build_parser

    doc, line = item
    args = concrete(line)[1:]
    if any(re.fullmatch(r"[A-Z]{1,4}", a) for a in args):  # placeholders (A B, N): the subcommand must exist
        args = [args[0], "--help"]
    try:
        build_parser().parse_args(args)
    except SystemExit as exit:
        assert "--help" in args and exit.code == 0, f"{doc.name}: `{line}` does not parse"


@pytest.mark.slow
@pytest.mark.parametrize("item", [i for i in ALL if "snakemake" in i[1].split()[0] and i[1] not in OVERLAY_BLOCK],
                         ids=ids)
def test_workflow_lines_dry_run_as_written_with_nothing_activated(item):
    doc, line = item
    if "--software-deployment-method conda" in line and shutil.which("conda") is None:
        pytest.skip(f"{doc.name}: `{line}` needs conda on PATH, which this machine has not")
    args = program(concrete(line))
    if "-n" not in args:
        args.append("-n")
    env = {**os.environ, "PATH": BARE_PATH}
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{doc.name}: `{line}` -n failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def checkout_copy(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) copied to ``dest``, with its .venv
    linked in and ../shared beside it: a fresh clone after `make install`, without touching this
    checkout's results/."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(VENV_BIN.parent)
    if SHARED_DATA.exists() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").mkdir()
        (dest.parent / "shared" / "data").symlink_to(SHARED_DATA)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return checkout_copy(tmp_path_factory.mktemp("clone") / "ifplay")


def as_written(line: str, cwd: Path, fill: dict[str, str] | None = None, timeout: int = 600):
    """Run a documented line through bash from ``cwd`` with nothing activated: placeholders filled,
    `[optional]` parts included."""
    line = re.sub(r"\[([^\]]*)\]", r"\1", line.replace("config/experiments/NAME.yaml", f"config/experiments/{SMOKE}.yaml"))
    for word, value in (fill or {}).items():
        line = re.sub(rf"\b{word}\b", value, line)
    return subprocess.run(["bash", "-c", line], cwd=cwd, env={**os.environ, "PATH": BARE_PATH},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_readme_overlay_commands_run_as_written(checkout):
    """README's overlay block with NAME = smoke: the workflow runs for real from a copy of the
    checkout with nothing activated, then `ifplay plan` and `ifplay diff` (its `default` is the
    smoke experiment too: the copy has run no other) on what it wrote."""
    outputs = {}
    for line in OVERLAY_BLOCK:
        fill = {"default": SMOKE, "NAME": SMOKE} if " diff " in line else {}
        proc = as_written(line, checkout, fill, timeout=1800)
        assert proc.returncode == 0, f"README: `{line}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs[line.split()[1] if "ifplay" in line.split()[0] else "snakemake"] = proc.stdout
    experiment = checkout / "results" / "experiments" / SMOKE
    manifest = json.loads((experiment / "manifest.json").read_text())
    assert {"base_model", "generate", "judgements", "tree_search", "spar_data", "dpo", "sft", "judge_eval",
            "ifeval_scores"} <= {s["kind"] for s in manifest["stages"]}
    assert {"dev.csv", "judge.csv", "spar_counts.csv"} <= {p.name for p in (experiment / "tables").iterdir()}
    assert all(stage["key"] in outputs["plan"] for stage in manifest["stages"])
    assert SMOKE in outputs["diff"]


def _calls(path: Path) -> None:
    code = "def evaluate(response):\n    return len(response.split()) <= 5\n"
    path.write_text("".join(json.dumps({"id": i, "code": code, "response": r}) + "\n"
                            for i, r in enumerate(["short answer", "a much longer answer than five words"])))


# The docs' stand-alone ifplay commands that are run: the files each names (written here or linked
# from ../shared/data) and its placeholders.
RUNNABLE = {
    "ifeval-scores": ({"input_data.jsonl": "ifeval/input_data.jsonl", "responses.jsonl": "ifeval/gpt4_responses.jsonl"},
                      {}),
    "verify": ({"calls.jsonl": _calls}, {"N": "2", "B": "8"}),
    "autoif-verified": ({}, {}),
}


@pytest.mark.parametrize("item", [i for i in ALL if "ifplay" in i[1].split()[0] and i[0] != README
                                  and i[1].split()[1] in RUNNABLE], ids=ids)
def test_doc_commands_run_as_written(item, checkout):
    doc, line = item
    needs, fill = RUNNABLE[line.split()[1]]
    for name, source in needs.items():
        (checkout / name).unlink(missing_ok=True)
        if callable(source):
            source(checkout / name)
        else:
            if not (SHARED_DATA / source).exists():
                pytest.skip(f"shared test data missing: {SHARED_DATA / source}")
            (checkout / name).symlink_to(SHARED_DATA / source)
    if "../shared/data" in line and not SHARED_DATA.exists():
        pytest.skip(f"shared test data missing: {SHARED_DATA}")
    written = [w for w in re.findall(r"--(?:out|counts|metrics|per-prompt) \[?([\w.-]+)", line)]
    for name in written:
        (checkout / name).unlink(missing_ok=True)
    proc = as_written(line, checkout, fill)
    assert proc.returncode == 0, f"{doc.name}: `{line}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    for name in written:
        assert (checkout / name).is_file(), f"{doc.name}: `{line}` wrote no {name}"
