"""The local-file path of eval.general on the tasks whose data is on the hub, not on this machine
(MMLU, C-Eval, TriviaQA): small fixtures in each data set's format, written for these tests (not
items of the data sets), laid out as ``general.stock_layout`` asks; the local task's prompts equal
the stock task's on the same documents, and SmolLM2 runs all three through lm-eval's hf model
(log-likelihood and generation) offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ifplay.evaluation import general
from ifplay.evaluation.general import TaskSpec, model_for, run_tasks, write_task_override


def _mmlu(question: str, choices: list[str], answer: int) -> dict:
    return {"question": question, "subject": "abstract_algebra", "choices": choices, "answer": answer}


def _ceval(i: int, question: str, options: list[str], answer: str) -> dict:
    return {"id": i, "question": question, **dict(zip("ABCD", options)), "answer": answer, "explanation": ""}


def _trivia(i: int, question: str, value: str, aliases: list[str]) -> dict:
    return {"question": question, "question_id": f"fx_{i}", "question_source": "fixture",
            "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
            "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [],
                               "search_context": []},
            "answer": {"aliases": aliases, "normalized_aliases": [a.lower() for a in aliases],
                       "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                       "normalized_value": value.lower(), "type": "FreeForm", "value": value}}


#: task -> split -> rows (MMLU: cais/mmlu's fields; C-Eval: ceval/ceval-exam's; TriviaQA: rc.nocontext's).
FIXTURES = {
    "mmlu_abstract_algebra": {
        "dev": [_mmlu("How many elements does the cyclic group Z_6 have?", ["3", "6", "12", "36"], 1),
                _mmlu("Which of these is the identity of the group of integers under addition?", ["0", "1", "-1", "2"], 0),
                _mmlu("What is the order of the element 2 in Z_5 under addition?", ["1", "2", "4", "5"], 3),
                _mmlu("The set of even integers under addition is", ["not closed", "a group", "empty", "finite"], 1),
                _mmlu("How many subgroups does Z_2 have?", ["1", "2", "3", "4"], 1)],
        "test": [_mmlu("What is the order of the symmetric group S_3?", ["3", "6", "9", "27"], 1),
                 _mmlu("Is every cyclic group abelian?", ["Yes", "No", "Only if finite", "Only if infinite"], 0),
                 _mmlu("How many generators does Z_4 have?", ["1", "2", "3", "4"], 1)],
    },
    "ceval-valid_computer_network": {
        "dev": [_ceval(0, "TCP 协议工作在哪一层？", ["物理层", "数据链路层", "传输层", "应用层"], "C"),
                _ceval(1, "IP 地址 127.0.0.1 通常表示什么？", ["广播地址", "本机回环地址", "网关地址", "组播地址"], "B"),
                _ceval(2, "HTTP 默认使用的端口号是？", ["21", "25", "53", "80"], "D"),
                _ceval(3, "以太网使用的介质访问控制方法是？", ["CSMA/CD", "令牌环", "FDMA", "TDMA"], "A"),
                _ceval(4, "DNS 的主要作用是？", ["分配 IP 地址", "域名解析", "文件传输", "发送邮件"], "B")],
        "val": [_ceval(10, "UDP 协议的特点是？", ["面向连接", "可靠传输", "无连接", "有拥塞控制"], "C"),
                _ceval(11, "路由器工作在哪一层？", ["网络层", "物理层", "会话层", "表示层"], "A"),
                _ceval(12, "IPv4 地址的长度是多少位？", ["16", "32", "64", "128"], "B")],
    },
    "triviaqa": {
        "train": [_trivia(0, "Which planet is known as the Red Planet", "Mars", ["Mars", "Planet Mars"]),
                  _trivia(1, "What is the largest ocean on Earth", "Pacific", ["Pacific", "Pacific Ocean"]),
                  _trivia(5, "Who wrote the play Romeo and Juliet", "William Shakespeare",
                          ["William Shakespeare", "Shakespeare"])],
        "validation": [_trivia(2, "What is the capital city of France", "Paris", ["Paris"]),
                       _trivia(3, "How many legs does a spider have", "Eight", ["Eight", "8"]),
                       _trivia(4, "Which gas do plants absorb from the air", "Carbon dioxide",
                               ["Carbon dioxide", "CO2"])],
    },
}
SHOTS = {"mmlu_abstract_algebra": 5, "ceval-valid_computer_network": 5, "triviaqa": 2}


@pytest.fixture
def fixture_dirs(tmp_path) -> dict[str, Path]:
    dirs = {}
    for task, splits in FIXTURES.items():
        d = dirs[task] = tmp_path / "data" / task
        d.mkdir(parents=True)
        for split, rows in splits.items():
            (d / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return dirs


def requests(task, num_fewshot: int, seed: int, limit: int) -> list[tuple]:
    """Every request ``task`` builds for its first ``limit`` documents, as lm-eval's evaluate() builds
    them: (document, index, arguments), the context first (a multiple-choice task: one per choice)."""
    task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(seed=seed)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return sorted((i.doc_id, i.idx, tuple(i.args) if isinstance(i.args, (tuple, list)) else (i.args,))
                  for i in task.instances)


def test_stock_layouts_are_the_splits_each_task_reads():
    assert general.stock_layout("mmlu_abstract_algebra") == ("dev.jsonl", "test.jsonl")
    assert general.stock_layout("ceval-valid_computer_network") == ("dev.jsonl", "val.jsonl")
    assert general.stock_layout("triviaqa") == ("train.jsonl", "validation.jsonl")


def test_local_data_files_and_their_errors(fixture_dirs, tmp_path):
    from ifplay.core.config import ConfigError

    files = general.local_data_files("mmlu_abstract_algebra", str(fixture_dirs["mmlu_abstract_algebra"]), "data.x")
    assert files == {s: str((fixture_dirs["mmlu_abstract_algebra"] / f"{s}.jsonl").resolve()) for s in ("dev", "test")}
    (fixture_dirs["triviaqa"] / "train.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"data.x: .*triviaqa/train.jsonl: no such file \(expected train.jsonl, "
                                          r"validation.jsonl\)"):
        general.local_data_files("triviaqa", str(fixture_dirs["triviaqa"]), "data.x")
    with pytest.raises(ConfigError, match=r"data.x: no local layout for lm-eval task 'ceval-valid': .*group.*"
                                          r"list its tasks"):
        general.local_data_files("ceval-valid", str(tmp_path), "data.x")


@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_local_prompts_are_the_stock_tasks(task, fixture_dirs, tmp_path):
    """The local task (a written YAML including the installed stock one) renders the same few-shot
    contexts as the STOCK task fed the same documents through lm-eval's custom_dataset hook."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    files = general.local_data_files(task, str(fixture_dirs[task]), "data.x")
    name = write_task_override(TaskSpec(task, data_files=files), tmp_path / "tasks")
    with general.offline_hub():
        local = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False).load([name])["tasks"][name]
        docs = datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split, rows in FIXTURES[task].items()})
        stock = ConfigurableTask(config={**general.stock_task_config(task), "custom_dataset": lambda **_: docs})
        ours, theirs = (requests(t, SHOTS[task], seed=0, limit=3) for t in (local, stock))
    assert ours == theirs and sorted({doc for doc, _, _ in ours}) == [0, 1, 2]
    if task != "triviaqa":  # multiple choice: one request per choice, the continuation " A" ... " D"
        assert [args[1] for _, _, args in ours[:4]] == [" A", " B", " C", " D"]
    ours = [args[0] for _, idx, args in ours if idx == 0]
    evaluated = FIXTURES[task].get("test") or FIXTURES[task].get("val") or FIXTURES[task]["validation"]
    assert evaluated[0]["question"].strip() in ours[0]
    shots_from = FIXTURES[task].get("dev") or FIXTURES[task]["train"]
    assert sum(r["question"].strip() in ours[0] for r in shots_from) == SHOTS[task]


@pytest.mark.slow
def test_smollm2_runs_mmlu_ceval_and_triviaqa_fixtures_offline(tmp_path, smollm2, fixture_dirs):
    """SmolLM2-135M through lm-eval's hf model on the three local copies in one stage: two
    log-likelihood tasks (acc) and one generating task (exact_match), every document scored, each
    row naming its local files."""
    model, args = model_for({"name": "transformers", "dtype": "float32", "batch_size": 4}, str(smollm2), None)
    specs = [TaskSpec(task, num_fewshot=SHOTS[task], metric="acc" if task != "triviaqa" else "exact_match",
                      data_files=general.local_data_files(task, str(fixture_dirs[task]), "data.x"))
             for task in sorted(FIXTURES)]
    rows = run_tasks(model, args, specs, tmp_path / "out", seed=0, gen_kwargs={"max_gen_toks": 8})
    by_task = {r["task"]: r for r in rows}
    assert sorted(by_task) == sorted(FIXTURES)
    for task, row in by_task.items():
        evaluated = [rows for split, rows in FIXTURES[task].items() if split in ("test", "val", "validation")][0]
        assert row["n"] == len(evaluated) and row["shots"] == SHOTS[task]
        assert 0.0 <= row["value"] <= 1.0 and row["data_source"].startswith("local:")
        assert (tmp_path / "out" / "samples" / f"{task}_local.jsonl").is_file()
    assert by_task["mmlu_abstract_algebra"]["metric"] == "acc,none"
    assert by_task["triviaqa"]["metric"] == "exact_match,remove_whitespace"
