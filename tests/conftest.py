"""Shared fixtures: repository paths, the shared benchmark data, the real SmolLM2 checkpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IFPLAY_SHARED_DATA", REPO.parent / "shared" / "data"))
BIN = Path(sys.executable).parent

# The cores of this machine shared out among pytest-xdist's workers (`make test`: two workers on two
# cores, one core each). Two 2-thread OpenMP jobs side by side on two cores took 131 s each for what one
# of them does alone in 31 s (benchmarks/README.md, "Threads per job"). So each worker
# is pinned to its own cores (sched_setaffinity: inherited by every process a test starts, and read by
# Snakemake's --cores all, torch's default thread count and vLLM's core binding), and CORES, the
# --cores and --threads that tests pass, is how many it has. Set before anything imports torch.
def _share_cores() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    cpus = sorted(os.sched_getaffinity(0))
    if workers > 1 and worker.isdigit() and len(cpus) >= workers:
        share = len(cpus) // workers
        os.sched_setaffinity(0, cpus[int(worker) % workers * share:][:share])
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(share)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(share)
    # Without workers nothing is set: vLLM's CPU worker binds itself to one core and sizes its OpenMP
    # pool from OMP_NUM_THREADS when set (OMP_NUM_THREADS=2 on its one core ran its tests 3x slower).
    return len(os.sched_getaffinity(0))


CORES = _share_cores()


# `make test` runs the suite on pytest-xdist's workers, one module per worker at a time (--dist loadfile
# --no-loadscope-reorder: modules in this order). The modules that run whole workflows go first, longest
# first (docs/testing.md has their times), so that no worker is left with a long module at the end.
LONGEST_FIRST = ["test_slurm.py", "test_workflow_spar.py", "test_workflow_spar_sft.py", "test_readme.py",
                 "test_workflow_autoif.py", "test_workflow.py", "test_workflow_followbench.py",
                 "test_backend_openai.py", "test_stage_vllm.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order within a rank


def shared(relpath: str) -> Path:
    path = SHARED_DATA / relpath
    if not path.exists():
        pytest.skip(f"shared test data missing: {path} (CI has ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def ifeval_data() -> Path:
    return shared("ifeval/input_data.jsonl")


@pytest.fixture(scope="session")
def gpt4_responses() -> Path:
    return shared("ifeval/gpt4_responses.jsonl")


@pytest.fixture(scope="session")
def smollm2(request) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from its GGUF once and cached across runs."""
    from ifplay.generation.checkpoints import prepare_base_model

    from filelock import FileLock

    cache = Path(request.config.cache.mkdir("smollm2-135m-instruct-f32"))
    checkpoint = cache / "checkpoint"
    with FileLock(cache / "convert.lock"):  # pytest-xdist's workers: one converts, the others wait
        if not (checkpoint / "model.safetensors").is_file():
            shutil.rmtree(checkpoint, ignore_errors=True)
            prepare_base_model("builtin:smollm2-135m-instruct", "main", "float32", checkpoint)
    return checkpoint


def run(cmd: list[str], cwd: Path | None = None, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's bin/ first on PATH (where `ifplay` and `snakemake` live)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_settings(kind: str, *configfiles: str, config: dict | None = None, runtime: dict | None = None) -> str:
    """The ``--settings`` JSON of the first ``kind`` stage that ``config/default.yaml`` (plus the
    overlays ``configfiles``, paths relative to the repository) plans, with ``config`` and ``runtime``
    merged over it key by key (nested objects merged, other values replaced). Tests that call a stage
    command by hand take its settings from here: the defaults stay in config/default.yaml."""
    import json

    from ifplay.core.config import load_config
    from ifplay.plan import Plan

    plan = Plan(load_config([str(REPO / f) for f in configfiles]))
    stage = next((s for s in plan.stages.values() if s.kind == kind), None)
    if stage is None:
        raise LookupError(f"no {kind} stage in the plan of default.yaml + {list(configfiles)}")
    settings = stage.settings()
    return json.dumps({"config": _merge(settings["config"], config or {}),
                       "runtime": _merge(settings["runtime"], runtime or {})})


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
