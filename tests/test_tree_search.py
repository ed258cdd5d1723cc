"""The refinement tree search, on a scripted refiner and scripted judges (no model).

Responses are named by their place in the tree: the scripted refiner turns response "a" into the
children "a.0", "a.1", "a.2"; the scripted judge gives each name a value (default 0).
"""

import json

import pytest

from ifplay.generation.backends import Backend, SamplingParams
from ifplay.judging.judge import Judge, ModelJudge, vote
from ifplay.spar.tree_search import SearchConfig, SearchResult, TreeSearch, parse_refinement

REFINE = "REFINE|{response}|{critique}|{prompt}"


class ScriptedRefiner(Backend):
    """Refines response R into "R.0" ... "R.{n-1}" (all "R.x" with ``same``). Names in ``invalid``
    come back unparsable. Records each call's refined responses; raises on call ``fail_on_call``."""

    name = "scripted-refiner"

    def __init__(self, invalid=(), same=False, fail_on_call=None):
        self.invalid, self.same, self.fail_on_call = set(invalid), same, fail_on_call
        self.calls: list[list[str]] = []
        self.params: list[SamplingParams] = []

    def chat(self, conversations, params, progress=None):
        if self.fail_on_call == len(self.calls) + 1:
            raise RuntimeError("refiner crashed")
        parents = [conv[-1]["content"].split("|")[1] for conv in conversations]
        self.calls.append(parents)
        self.params.append(params)
        outputs = []
        for parent in parents:
            names = [f"{parent}.{'x' if self.same else i}" for i in range(params.n)]
            outputs.append([f"Reflection: fix {name}" if name in self.invalid
                            else f"Reflection: fix it.\nFinal Refined Output: [[start]]{name}[[end]]"
                            for name in names])
        return outputs


class ScriptedJudge(Judge):
    """Values responses by name (default 0.0): a value v is 10 votes, round(10 v) of them Yes."""

    def __init__(self, values=None):
        super().__init__()
        self.values = values or {}
        self.seen: list[list[str]] = []

    def _evaluate(self, items):
        self.seen.append([response for _, response in items])
        judgements = []
        for _, response in items:
            yes = round(10 * self.values.get(response, 0.0))
            judgements.append(vote([f"{response} checked\nFinal Judgement: Yes"] * yes
                                   + [f"{response} checked\nFinal Judgement: No"] * (10 - yes)))
        return judgements


class ContentJudgeBackend(Backend):
    """A judge model scripted by content: Yes when the judged response is in ``good``."""

    name = "scripted-judge"

    def __init__(self, good=()):
        self.good = set(good)
        self.calls = 0

    def chat(self, conversations, params, progress=None):
        self.calls += 1
        return [["Final Judgement: " + ("Yes" if conv[-1]["content"].split("Response: ")[1] in self.good else "No")]
                * params.n for conv in conversations]


def roots(*names):
    return [{"key": name, "prompt": {"key": name, "prompt": f"instruction {name}"}, "response": name,
             "critique": f"{name} is wrong\nFinal Judgement: No"} for name in names]


def search(values=None, names=("a",), batched=True, refiner=None, **config):
    refiner = refiner or ScriptedRefiner()
    judge = ScriptedJudge(values)
    ts = TreeSearch(refiner, judge, REFINE, SearchConfig(**config), batched=batched)
    return ts.run(roots(*names)), ts, refiner, judge


def responses(nodes):
    return [node.response for node in nodes]


# -- parsing refinements --------------------------------------------------------------------------
@pytest.mark.parametrize("text, refined", [
    ("Reflection: add a title.\nFinal Refined Output: [[start]]<<Cats>>\nCats nap.[[end]]", "<<Cats>>\nCats nap."),
    ("**Final Refined Output:**\n[[start]]\n  fixed  \n[[end]] trailing chatter", "fixed"),
    ("Final Refined Output: [[start]] cut off by max tokens", "cut off by max tokens"),  # no [[end]]
    ("Final Refined Output: the answer without markers", None),  # no [[start]]
    ("Final Refined Output: [[start]]   [[end]]", None),  # nothing inside
    ("Final Refined Output: [[start]]first[[end]]\nFinal refined output: [[START]]second[[END]]", "second"),
    ("I would say [[start]]only markers[[end]]", "only markers"),  # no "Final Refined Output" line
    ("", None),
])
def test_parse_refinement(text, refined):
    assert parse_refinement(text)[1] == refined


def test_parse_refinement_reflection():
    assert parse_refinement("Reflection: drop the commas.\nFinal Refined Output: [[start]]x[[end]]") == \
        ("Reflection: drop the commas.", "x")


# -- BFS ------------------------------------------------------------------------------------------
def test_bfs_success_at_depth_1_accepts_the_best_passing_child():
    [result], ts, refiner, _ = search({"a.0": 0.6, "a.1": 0.9})
    assert result.success and result.stop_reason == "accepted"
    assert result.best.response == "a.1" and responses(result.path) == ["a", "a.1"]
    assert responses(result.nodes) == ["a", "a.0", "a.1", "a.2"]
    assert refiner.calls == [["a"]] and result.nodes_expanded == 1 and ts.backend_calls == 1
    assert refiner.params[0] == SamplingParams(temperature=0.7, top_p=1.0, max_new_tokens=3072, n=3, seed=0)


def test_bfs_success_at_depth_2_expands_the_top_two():
    [result], _, refiner, judge = search({"a.0": 0.4, "a.1": 0.2, "a.2": 0.1, "a.1.2": 0.8, "a.0.0": 0.7})
    assert refiner.calls == [["a"], ["a.0", "a.1"]]
    assert judge.seen == [["a.0", "a.1", "a.2"], ["a.0.0", "a.0.1", "a.0.2", "a.1.0", "a.1.1", "a.1.2"]]
    assert result.success and result.best.response == "a.1.2"  # the best of the passing children
    assert responses(result.path) == ["a", "a.1", "a.1.2"]
    assert [node.depth for node in result.path] == [0, 1, 2] and result.path[2].parent == result.path[1].id
    # the refiner was shown each node's majority critique
    assert result.path[1].critique == "a.1 checked\nFinal Judgement: No"


def test_refine_prompt_carries_instruction_response_and_critique():
    class Recorder(ScriptedRefiner):
        def chat(self, conversations, params, progress=None):
            self.contents = [conv[-1]["content"] for conv in conversations]
            return super().chat(conversations, params, progress)

    refiner = Recorder()
    search({"a.0": 1.0}, refiner=refiner)
    assert refiner.contents == ["REFINE|a|a is wrong\nFinal Judgement: No|instruction a"]


def test_end_gate_is_strict():
    [result], *_ = search({"a.0": 0.5, "a.1": 0.5}, max_depth=1)  # a tie: value exactly 0.5
    assert not result.success and result.stop_reason == "max_depth"
    [result], *_ = search({"a.0": 0.8}, max_depth=1, end_gate=0.8)
    assert not result.success
    [result], *_ = search({"a.0": 0.9}, max_depth=1, end_gate=0.8)
    assert result.success and result.best.response == "a.0"


def test_fallback_returns_the_highest_value_node():
    values = {"a.0": 0.3, "a.1": 0.2, "a.0.1": 0.4, "a.0.1.2": 0.5, "a.0.1.0": 0.1}  # 0.5: a tie, not accepted
    [result], *_ = search(values)
    assert not result.success and result.stop_reason == "max_depth"
    assert len(result.nodes) == 1 + 3 + 6 + 6 and result.nodes_expanded == 5  # SPaR's 3 + 6 + 6
    assert result.best.response == "a.0.1.2" and responses(result.path) == ["a", "a.0", "a.0.1", "a.0.1.2"]
    # nothing better than the root's 0.0: the root itself (ties go to the earliest node)
    [result], *_ = search({}, max_depth=1)
    assert result.best.id == 0 and responses(result.path) == ["a"]


def test_root_value_comes_from_a_supplied_judgement():
    root = roots("a")[0]
    root["judgement"] = vote(["Final Judgement: Yes", "Final Judgement: No", "Final Judgement: No",
                              "Final Judgement: No"]).to_json()
    ts = TreeSearch(ScriptedRefiner(), ScriptedJudge({"a.0": 0.2}), REFINE, SearchConfig(max_depth=1))
    [result] = ts.run([root])
    assert result.nodes[0].value == 0.25 and result.best.id == 0  # the root beats its children


def test_budget_cuts_the_search():
    [result], _, refiner, _ = search({"a.1": 0.3}, budget=7)  # room for 2 expansions of 3
    assert refiner.calls == [["a"], ["a.1"]]  # the frontier's best fits, the second does not
    assert result.stop_reason == "budget" and result.nodes_expanded == 2 and len(result.nodes) == 7
    [result], _, refiner, _ = search({}, budget=2)  # not even one expansion fits
    assert refiner.calls == [] and result.stop_reason == "budget" and responses(result.nodes) == ["a"]


def test_invalid_refinements_are_counted_and_not_judged():
    refiner = ScriptedRefiner(invalid={"a.0", "a.2", "a.1.1"})
    [result], _, _, judge = search({"a.1.2": 1.0}, refiner=refiner)
    assert result.invalid_refinements == 3
    assert judge.seen == [["a.1"], ["a.1.0", "a.1.2"]]
    assert responses(result.nodes) == ["a", "a.1", "a.1.0", "a.1.2"] and result.success
    assert result.best.refinement == "Reflection: fix it.\nFinal Refined Output: [[start]]a.1.2[[end]]"
    # every refinement unparsable: nothing left to expand
    [result], *_ = search({}, refiner=ScriptedRefiner(invalid={"a.0", "a.1", "a.2"}))
    assert result.stop_reason == "exhausted" and result.invalid_refinements == 3 and result.nodes_expanded == 1


# -- DFS ------------------------------------------------------------------------------------------
def test_dfs_goes_deep_first_best_child_first():
    values = {"a.0": 0.2, "a.1": 0.4, "a.1.0": 0.2}
    [result], _, refiner, _ = search(values, algorithm="dfs", branch=2, select=2, max_depth=3)
    assert refiner.calls == [["a"], ["a.1"], ["a.1.0"], ["a.1.1"], ["a.0"], ["a.0.0"], ["a.0.1"]]
    assert not result.success and result.stop_reason == "exhausted" and result.best.response == "a.1"


def test_dfs_returns_the_first_passing_child():
    values = {"a.0": 0.2, "a.1": 0.4, "a.1.0": 0.2, "a.1.0.1": 0.7, "a.0.0": 1.0}
    [result], _, refiner, _ = search(values, algorithm="dfs", branch=2, select=2, max_depth=3)
    assert refiner.calls == [["a"], ["a.1"], ["a.1.0"]]  # a.0.0 (better) is never reached
    assert result.success and responses(result.path) == ["a", "a.1", "a.1.0", "a.1.0.1"]


def test_dfs_select_limits_the_children_recursed_into():
    [result], _, refiner, _ = search({"a.2": 0.1}, algorithm="dfs", select=1, max_depth=2)
    assert refiner.calls == [["a"], ["a.2"]] and result.stop_reason == "exhausted"


# -- selection ------------------------------------------------------------------------------------
def test_sampled_selection_is_seeded_and_can_differ_from_greedy():
    values = {"a.0": 0.4, "a.1": 0.3, "a.2": 0.2}
    _, _, greedy, _ = search(values, select=1, max_depth=2)
    assert greedy.calls[1] == ["a.0"]
    picked = {}
    for seed in range(10):
        first = search(values, select=1, max_depth=2, selection="sampled", seed=seed)
        again = search(values, select=1, max_depth=2, selection="sampled", seed=seed)
        assert first[0][0].to_json() == again[0][0].to_json()  # reproducible with the seed
        picked[seed] = first[2].calls[1]
    assert all(p in (["a.0"], ["a.1"], ["a.2"]) for p in picked.values())
    assert any(p != ["a.0"] for p in picked.values())  # sampling sometimes keeps a lower-value child


def test_sampled_selection_draws_without_replacement():
    _, _, refiner, _ = search({}, select=3, max_depth=2, selection="sampled", seed=4)
    assert sorted(refiner.calls[1]) == ["a.0", "a.1", "a.2"]


# -- batching, caching, resuming ------------------------------------------------------------------
def test_one_backend_call_per_level_for_many_trees():
    names = ("a", "b", "c", "d")
    results, ts, refiner, judge = search({}, names=names)
    assert len(refiner.calls) == 3 and ts.backend_calls == 3  # levels, not trees x levels
    assert judge.calls == ts.judge_calls == 3
    assert [len(call) for call in refiner.calls] == [4, 8, 8]
    assert [r.key for r in results] == list(names) and all(r.backend_calls == 3 for r in results)
    _, ts, refiner, judge = search({}, names=names, batched=False)
    assert len(refiner.calls) == ts.backend_calls == 4 * (1 + 2 + 2) and judge.calls == 20


def test_batching_with_a_model_judge():
    judge_backend = ContentJudgeBackend(good={"a.2", "b.0.1"})
    judge = ModelJudge(judge_backend, "Prompt: {prompt}\nResponse: {response}", votes=5)
    refiner = ScriptedRefiner()
    ts = TreeSearch(refiner, judge, REFINE, SearchConfig())
    a, b, c = ts.run(roots("a", "b", "c"))
    assert (a.best.response, b.best.response, c.success) == ("a.2", "b.0.1", False)
    assert len(refiner.calls) == judge_backend.calls == 3
    assert [len(call) for call in refiner.calls] == [3, 4, 2]  # trees drop out as they finish


def test_equal_refinements_are_judged_once():
    judge_backend = ContentJudgeBackend()
    judge = ModelJudge(judge_backend, "Prompt: {prompt}\nResponse: {response}", votes=5)
    ts = TreeSearch(ScriptedRefiner(same=True), judge, REFINE, SearchConfig(max_depth=2))
    [result] = ts.run(roots("a"))
    # level 1: three copies of "a.x"; level 2: both frontier nodes yield "a.x.x" three times
    assert responses(result.nodes) == ["a"] + ["a.x"] * 3 + ["a.x.x"] * 6
    assert (judge.cache_misses, judge.cache_hits) == (2, 7) and judge_backend.calls == 2


def test_resume_after_interruption(tmp_path):
    values = {"a.0": 1.0, "b.0.0": 1.0}  # a finishes after level 1, b after level 2, c runs to depth 3
    journal = tmp_path / "trees.jsonl"
    crashing = ScriptedRefiner(fail_on_call=3)
    with pytest.raises(RuntimeError, match="refiner crashed"):
        TreeSearch(crashing, ScriptedJudge(values), REFINE, SearchConfig()).run(roots("a", "b", "c"), journal)
    partial = [json.loads(line) for line in (tmp_path / "trees.jsonl.partial").read_text().splitlines()]
    assert [record["key"] for record in partial] == ["a", "b"] and not journal.exists()

    refiner = ScriptedRefiner()
    results = TreeSearch(refiner, ScriptedJudge(values), REFINE, SearchConfig()).run(roots("a", "b", "c"), journal)
    assert all(parent.startswith("c") for call in refiner.calls for parent in call)  # a and b not re-searched
    assert len(refiner.calls) == 3  # c starts again from its root
    uninterrupted = TreeSearch(ScriptedRefiner(), ScriptedJudge(values), REFINE, SearchConfig()).run(
        roots("a", "b", "c"))
    assert [r.to_json() for r in results] == [r.to_json() for r in uninterrupted]
    written = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [record["key"] for record in written] == ["a", "b", "c"]
    assert not (tmp_path / "trees.jsonl.partial").exists()
    assert [SearchResult.from_json(record).to_json() for record in written] == [r.to_json() for r in results]


@pytest.mark.parametrize("config", [
    dict(),
    dict(algorithm="dfs"),
    dict(selection="sampled", seed=7),
    dict(algorithm="dfs", selection="sampled", branch=2, select=2, max_depth=4),
    dict(budget=8),
])
def test_batched_equals_sequential(config):
    values = {"a.1": 0.6, "b.0": 0.3, "b.2": 0.4, "b.2.1": 0.6, "c.1.1": 0.2, "d.0": 0.1, "d.0.2": 0.4,
              "d.0.2.0": 0.9, "d.1": 0.2, "d.1.1.1.1": 1.0}
    invalid = {"b.1", "c.0.1", "d.2"}
    names = ("a", "b", "c", "d", "e")
    batched, *_ = search(values, names=names, refiner=ScriptedRefiner(invalid=invalid), **config)
    sequential, *_ = search(values, names=names, refiner=ScriptedRefiner(invalid=invalid), batched=False, **config)

    def comparable(result):
        return {k: v for k, v in result.to_json().items() if k != "backend_calls"}

    assert [comparable(r) for r in batched] == [comparable(r) for r in sequential]
    assert any(r.success for r in batched) and not all(r.success for r in batched)


def test_result_json_round_trip():
    [result], *_ = search({"a.0": 0.4, "a.0.1": 0.9})
    again = SearchResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result and again.best is again.nodes[again.best.id] and again.path[-1] is again.best


def test_bad_settings_and_roots():
    with pytest.raises(ValueError, match="unknown search algorithm 'mcts'"):
        SearchConfig(algorithm="mcts")
    with pytest.raises(ValueError, match="branch must be >= 1"):
        SearchConfig(branch=0)
    with pytest.raises(ValueError, match="lacks placeholder"):
        TreeSearch(ScriptedRefiner(), ScriptedJudge(), "{prompt} {response}")
    ts = TreeSearch(ScriptedRefiner(), ScriptedJudge(), REFINE)
    with pytest.raises(ValueError, match="root 'a' lacks critique"):
        ts.run([{"key": "a", "prompt": {"prompt": "p"}, "response": "r"}])
    with pytest.raises(ValueError, match="distinct keys"):
        ts.run(roots("a", "a"))


def test_plain_output_format_takes_whole_completion():
    from ifplay.spar.tree_search import SearchConfig

    config = SearchConfig(output_format="plain")
    assert config.refined("  a better answer \n") == "a better answer"
    assert config.refined("   ") is None
    assert SearchConfig().refined("Reflection: x\nFinal Refined Output: [[start]]y[[end]]") == "y"
    with pytest.raises(ValueError, match="output format"):
        SearchConfig(output_format="json")
