"""FollowBench scoring (ifplay.scoring.followbench): the rule families on real items, the verdict
parser, the judge prompt, the metrics (HSR, SSR, CSL, the merge), the matching and bad data.

benchmarks/followbench_conformance.py checks the same code against the official scorer on generated
response sets; these tests pin the behaviour item by item."""

import argparse
import dataclasses
import json
import shutil

import pytest

from conftest import shared
from ifplay.scoring import followbench as fb


@pytest.fixture(scope="module")
def data():
    return shared("followbench")


@pytest.fixture(scope="module")
def items(data):
    return fb.load_items(data)


@pytest.fixture(scope="module")
def answers(data):
    """The example items' ``answer`` field, by key."""
    records = json.loads((data / "example_constraints.json").read_text(encoding="utf-8"))
    return {f"example/{r['example_id']}/{r['level']}": r["answer"] for r in records}


@pytest.fixture(scope="module")
def by_key(items):
    return {item.key: item for item in items}


def at_level(item: fb.Item, level: int) -> fb.Item:
    """The same item asked at another level (the cumulative families read only the level)."""
    return dataclasses.replace(item, level=level)


def levels_passed(item: fb.Item, text: str) -> list[bool]:
    return [fb.rule_check(at_level(item, level), text) for level in fb.LEVELS]


# -- the data ----------------------------------------------------------------------------------------
def test_items_counts_order_and_paths(items):
    assert len(items) == 820
    assert sum(item.rule is not None for item in items) == 350
    assert len({(i.category, i.example_id) for i in items}) == 164
    assert len({item.key for item in items}) == 820
    assert [c for c in fb.CATEGORIES] == list(dict.fromkeys(item.category for item in items))
    for item in items:
        assert len(item.path) == item.level + 1 and item.path[-1] == item.instruction
        assert item.path[0] == "" or item.category != "example"
    # the data's own empty seeds: 17 content groups (COGNAC, E2E, WIKIEVENTS, CONLL2003) have level 0 = ""
    empty = {(i.category, i.example_id) for i in items if i.path[0] == "" and i.category != "example"}
    assert empty == {("content", n) for n in range(9, 26)}
    families = {item.rule for item in items} - {None}
    assert families == set(fb.RULES)


def test_a_group_is_rule_checked_or_judged_as_a_whole(items):
    status = {}
    for item in items:
        status.setdefault((item.category, item.example_id), set()).add(item.rule)
    assert all(len(rules) == 1 for rules in status.values())
    assert {k for k, rules in status.items() if rules == {"format_22"} or rules == {"format_30"}} == {
        ("format", 22), ("format", 30)}


def test_groups_takes_the_first_groups_of_each_category(data, items):
    two = fb.load_items(data, groups=2)
    assert len(two) == 6 * 2 * 5
    for category in fb.CATEGORIES:
        ids = list(dict.fromkeys(i.example_id for i in items if i.category == category))[:2]
        assert [i.example_id for i in two if i.category == category] == [x for x in ids for _ in fb.LEVELS]
    with pytest.raises(ValueError):
        fb.load_items(data, groups=0)


# -- the rule families -------------------------------------------------------------------------------
CNN = "Harry Potter turns eighteen today. The actor keeps his money. His films have earned millions."
FORMAT_22 = "\n\n".join([
    "Wipe the wooden table with a soft dry cloth every single day so that dust and grit never get a chance to "
    "scratch its finish.",
    "Keep hot dishes and wet glasses off the bare wood by using coasters and mats, because heat and water leave "
    "white rings that are hard to remove.",
    "Once or twice a year you should rub a thin coat of good furniture wax into the surface and buff it gently "
    "with a clean cloth until it shines.",
])
FORMAT_30 = "\n".join(
    f"**{n}.{word}:** Innovation helps Australian firms grow faster and hire more local workers?"
    for n, word in enumerate(["Growth", "Jobs", "Trade", "Health", "Skills"], start=1))

# (key, passing generation, failing generation): each family at least once, on real items
CASES = [
    ("example/1/1", "{'AI assistant': 'Legal Anywhere.com'}", "{'AI assistant': 'Legal Anywhere.com'}\n"),
    ("example/21/3", "he", "he\nbecause he moves"),  # "." does not cross a newline
    ("content/14/1", "name[The Phoenix], eatType[pub]", "name[The Phoenix], eatType[pub]\n"),
    ("mixed/3/1", "apples love eating I", "apples love eating I."),
    ("content/19/1", "members died at <arg2> place from <arg4> medical issue, killed by The Taliban killer",
     "members died at <arg2> place from <arg4> medical issue, killed by The Taliban"),
    ("content/21/1", "Britain", "Britain "),
    ("content/21/5", "Bonn", "['Bonn']"),
    ("situation/1/1", "(B) is tempting, but the answer is (A)", "(A), or rather (B)"),
    ("situation/6/1", "Five days later it is 12/29/1937", "12/29/1937, or 12/30/1937"),
    ("situation/8/1", "She earned $14.00 in total.", "$14 + $2 = $16"),
    ("situation/7/1", "He is now on the 20th floor.", "He is on floor 20."),
    ("mixed/11/5", CNN, CNN + " "),
    ("mixed/12/5", "Engineers are repairing flood defences in an operation across the Borders.",
     "Engineers are repairing flood defences in Newton Stewart in an operation."),
    ("mixed/13/5", "Kim will do her stuff tomorrow instead of today.", "Kim's stuff waits for tomorrow."),
    ("mixed/14/5", "two people killed in bomb attack on philippine", "two people killed in bomb attack on bus"),
    ("mixed/15/5", "We locate factual associations in mid-layer activations and edit them directly.",
     " We locate factual associations in mid-layer activations and edit them directly."),
    ("format/22/3", FORMAT_22, FORMAT_22 + " "),  # a space after the last stop: a sentence of no words
    ("format/30/5", FORMAT_30, FORMAT_30.replace("Skills:**", "Skills:** friend-ly")),
]


def test_every_family_has_a_case(by_key):
    assert {by_key[key].rule for key, _, _ in CASES} == set(fb.RULES)


@pytest.mark.parametrize("key,good,bad", CASES, ids=[c[0] for c in CASES])
def test_rule_family_pass_and_fail(by_key, key, good, bad):
    item = by_key[key]
    assert fb.rule_check(item, good) is True
    assert fb.rule_check(item, bad) is False


def test_gold_targets_pass_their_exact_match_families(items):
    for item in items:
        if item.rule in ("E2E", "text_editing", "BBH_logical", "BBH_time", "gsm_8k", "self_made_space"):
            assert fb.rule_check(item, item.target), item.key
            assert not fb.rule_check(item, ""), item.key


def test_example_template_escaping():
    item = fb.Item("example", 1, 1, "x", "q", "{instruction}\n{{'Q (a+b)?': '{answer}'}}", ("", "q"))
    assert fb.rule_check(item, "{'Q (a+b)?': 'anything at all'}")
    assert fb.rule_check(item, "{'Q (a+b)?': ''}")
    assert not fb.rule_check(item, "{'Q aab': 'x'}")  # "(", "+", "?" are literal
    assert not fb.rule_check(item, "{'Q (a+b)?': 'two\nlines'}")
    assert not fb.rule_check(item, " {'Q (a+b)?': 'x'}")  # a full match of the raw text
    wild = fb.Item("example", 1, 1, "x", "q", "{instruction}\nA.*B {answer}", ("", "q"))
    assert fb.rule_check(wild, "A and then B x")  # a literal ".*" is a wildcard too (official)


def test_example_gold_answers(items, answers):
    """The data's answers (the templates filled in) pass, but for billsum's, of several lines."""
    failing = {item.key for item in items if item.category == "example" and not fb.rule_check(item, answers[item.key])}
    billsum = next(item.example_id for item in items if item.category == "example" and item.source == "billsum")
    assert failing == {f"example/{billsum}/{level}" for level in fb.LEVELS}


def test_wikievents_lines(by_key):
    item = by_key["content/19/1"]
    lines = item.target.split("\n")
    assert fb.rule_check(item, "\n".join([lines[2], lines[0], lines[0]]))  # any subset, repeats allowed
    assert not fb.rule_check(item, lines[0] + "\n")  # the trailing newline is an empty line
    assert not fb.rule_check(item, lines[0] + "\nsomeone died at <arg2> place")


def test_cnn_dailymail_levels(by_key):
    item = by_key["mixed/11/1"]
    assert levels_passed(item, CNN) == [True] * 5
    assert levels_passed(item, CNN.replace("keeps his money", "keeps his lavish money")) == [True] * 3 + [False] * 2
    assert levels_passed(item, CNN.replace("have earned", "earned")) == [True] * 4 + [False]
    assert levels_passed(item, CNN.replace(".", "!", 1)) == [True] * 5  # '!' ends a sentence too
    long = "Harry Potter turns eighteen today and he can now spend all of the fortune he has made."
    assert levels_passed(item, CNN.replace("Harry Potter turns eighteen today.", long)) == [True] + [False] * 4


def test_xsum_levels(by_key):
    item = by_key["mixed/12/1"]
    good = "Engineers are repairing flood defences in an operation across the Borders."
    assert levels_passed(item, good) == [True] * 5
    assert levels_passed(item, good.replace("in an", "in Newton Stewart in an")) == [True] * 2 + [False] * 3
    assert levels_passed(item, good.replace("in an", "in Newton  Stewart in an"))[2]  # two spaces: not the phrase
    assert levels_passed(item, good.replace("operation", "effort")) == [True] * 4 + [False]
    assert levels_passed(item, good.replace("are repairing", "repaired")) == [True] * 3 + [False] * 2
    wordy = "Engineers are repairing the flood defences of the town in an operation that will last for many more long weeks."
    assert levels_passed(item, wordy) == [True] + [False] * 4  # 20 words by split(' ')
    assert not fb.rule_check(item, "One summary. ")  # the trailing space is a second sentence


def test_samsum_levels(by_key):
    item = by_key["mixed/13/1"]
    good = "Kim will do her stuff tomorrow instead of today."
    assert levels_passed(item, good) == [True] * 5
    assert levels_passed(item, good.replace("stuff", "chores")) == [True] * 2 + [False] * 3
    assert levels_passed(item, good.replace("tomorrow", "after Procrastinating")) == [True] * 3 + [False] * 2
    assert levels_passed(item, good.replace("do her", "do, her")) == [True] * 4 + [False]
    assert levels_passed(item, good[:-1]) == [True] * 4 + [False]  # no punctuation at all: not "one"


def test_gigaword_levels(by_key):
    item = by_key["mixed/14/1"]
    good = "two people killed in bomb attack on philippine"
    assert levels_passed(item, good) == [True] * 5
    assert levels_passed(item, good + ".") == [True] + [False] * 4
    assert levels_passed(item, "Two" + good[3:]) == [True] * 2 + [False] * 3
    assert levels_passed(item, good.replace("philippine", "bus")) == [True] * 3 + [False] * 2
    assert levels_passed(item, good.replace(" in ", " by ")) == [True] * 4 + [False]
    assert levels_passed(item, good.replace(" on ", "  ")) == [True] * 5  # two spaces: an empty word
    assert not fb.rule_check(item, good + " ")  # nine words by split(' ')
    assert levels_passed(item, good + "\n") == [True] * 5  # a newline is neither a space nor punctuation


def test_arxiv_levels(by_key):
    item = by_key["mixed/15/1"]
    good = "We locate factual associations in mid-layer activations and edit them directly."
    assert levels_passed(item, good) == [True] * 5
    assert levels_passed(item, "Weather aside, w" + good[1:])[2]  # generation[:2] == "We"
    assert levels_passed(item, "Our" + good[2:]) == [True] * 2 + [False] * 3
    assert levels_passed(item, good.replace("activations", "layers")) == [True] * 3 + [False] * 2
    assert levels_passed(item, good.replace("mid-layer", "transformer")) == [True] * 4 + [False]


def test_format_22_levels_and_the_unreachable_levels(by_key):
    item = by_key["format/22/1"]
    assert levels_passed(item, FORMAT_22) == [True] * 3 + [False] * 2
    marked = "\n\n".join(f"{n}. {p}" for n, p in enumerate(FORMAT_22.split("\n\n"), start=1))
    # the marker's full stop makes "1" a one-word sentence: level 3 fails, so 4 and 5 never pass
    assert levels_passed(item, marked) == [True, True, False, False, False]
    closing = marked + "\n\n4. Those are suggestions"
    assert fb.rule_check(at_level(item, 1), closing) is False  # four paragraphs
    assert fb.rule_check(at_level(item, 5), closing) is False
    assert fb.rule_check(at_level(item, 2), FORMAT_22.replace("coasters and mats,", "coasters. And mats. Use")) is False


def test_format_30_levels(by_key):
    item = by_key["format/30/1"]
    assert levels_passed(item, FORMAT_30) == [True] * 5
    assert levels_passed(item, FORMAT_30.replace("Skills:**", "Skills:** quickly")) == [True] * 5  # not "-ly"
    four = "\n".join(FORMAT_30.split("\n")[:4])
    assert levels_passed(item, four) == [True] + [False] * 4
    spaced = FORMAT_30.replace("1.Growth", "1. Growth")  # "**1." becomes a sentence of one word
    assert levels_passed(item, spaced) == [True] * 3 + [False] * 2
    stops = FORMAT_30.replace("?", ".")  # "**1.Growth:** ... workers." has two full stops
    assert levels_passed(item, stops) == [True] * 2 + [False] * 3
    assert levels_passed(item, FORMAT_30.replace("**", "")) == [False] * 5


def test_rule_check_refuses_judged_items(items):
    judged = next(item for item in items if item.rule is None)
    with pytest.raises(ValueError, match=judged.key):
        fb.rule_check(judged, "anything")


# -- the judge ---------------------------------------------------------------------------------------
def test_judge_prompt_shows_the_evolution():
    prompt = fb.judge_prompt("situation", ["Seed?", "Seed, one.", "Seed, one, two."], "My answer")
    order = [prompt.index(s) for s in ("Seed?", "Initial Instruction + 1 constraint]", "Seed, one.",
                                       "Initial Instruction + 2 constraints]", "Seed, one, two.", "My answer")]
    assert order == sorted(order)
    assert "situation constraint (information that describes a specific situation or background)" in prompt
    assert "Python list with 2 elements" in prompt and "2 added constraints" in prompt
    one = fb.judge_prompt("mixed", ["Seed?", "Seed, one."], "A")
    assert "one constraint," in one and "list with 1 element," in one
    assert "constraints]" not in one
    for category in ("content", "style", "format"):
        assert f"{category} constraint" in fb.judge_prompt(category, ["a", "b"], "c")
    with pytest.raises(ValueError):
        fb.judge_prompt("example", ["", "b"], "c")
    with pytest.raises(ValueError):
        fb.judge_prompt("content", ["a"], "c")


@pytest.mark.parametrize("text,level,hard,soft", [
    ("YES", 1, 1, 1.0),
    ("NO", 1, 0, 0.0),
    ("1) The constraint: be brief.\n2) It is brief.\n['YES']", 1, 1, 1.0),
    ("NONE of it holds", 1, 0, 0.0),  # 'NO' anywhere on the last line
    ("['YES', 'YES', 'YES']", 3, 1, 1.0),
    ("['YES', 'PARTIAL', 'YES']", 3, 0, 2 / 3),
    ('["YES", "N/A", "MAYBE", "UNKNOWN"]', 4, 0, 0.25),
    ("1) The added constraints are a, b.\n2) a holds, b does not.\n['YES', 'NO']", 2, 0, 0.5),
    ("Final answer: ['YES', 'NO'] (both checked)", 2, 0, 0.5),  # prose around the list on its line
    ("```python\n['YES', 'YES']\n```", 2, 1, 1.0),
])
def test_parse_verdict_valid(text, level, hard, soft):
    assert fb.parse_verdict(text, level) == fb.Verdict(hard, soft, None)


@pytest.mark.parametrize("text,level,why", [
    ("Yes", 1, "neither YES nor NO"),
    ("['YES', 'NO']", 3, "2 element(s) for 3"),
    ("['YES', 'NO', 'YES']", 2, "3 element(s) for 2"),
    ("['YES', 'NO']\nThat is my verdict.", 2, "no [...] list"),  # only the last line counts
    ("```\n['YES', 'NO']\n```\n", 2, "no [...] list"),  # the closing fence is the last line
    ("", 1, "empty"),
    ("  \n ", 3, "empty"),
    ("['YES'] + ['NO']", 2, "not a Python literal"),  # official eval() read this; we never eval
    ("[YES, NO]", 2, "not a Python literal"),
    ("['YES', 'NO'] ['NO']", 2, "not a Python literal"),  # greedy: first [ to last ]
    ("['YES', 'yes']", 2, "element 'yes'"),
    ("[True, 'YES']", 2, "element True"),
])
def test_parse_verdict_invalid(text, level, why):
    verdict = fb.parse_verdict(text, level)
    assert verdict.hard is None and verdict.soft is None and not verdict.valid
    assert why in verdict.error


def test_verdict_is_frozen_and_levels_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        fb.parse_verdict("YES", 1).hard = 0
    with pytest.raises(ValueError):
        fb.parse_verdict("YES", 0)


# -- the metrics -------------------------------------------------------------------------------------
def group(category: str, example_id: int, source: str, target: str = "ok") -> list[fb.Item]:
    return [fb.Item(category, example_id, level, source, f"{category} {example_id} {level}", target,
                    tuple(f"i{n}" for n in range(level + 1))) for level in fb.LEVELS]


def passes(items: list[fb.Item], pattern: str) -> dict[str, str]:
    return {item.key: "ok" if bit == "1" else "no" for item, bit in zip(items, pattern)}


def verdicts(items: list[fb.Item], outputs: list[str]) -> dict[str, fb.Verdict]:
    return {item.key: fb.parse_verdict(text, item.level) for item, text in zip(items, outputs)}


def lst(level: int, yes: int) -> str:
    return str(["YES"] * yes + ["NO"] * (level - yes))


@pytest.fixture
def handmade():
    a, b = group("content", 1, "E2E"), group("content", 2, "E2E")
    c, d = group("content", 3, "oasst"), group("content", 4, "oasst")
    e = group("example", 1, "xsum", "{instruction}\n{answer}!")
    items = a + b + c + d + e
    generations = {**passes(a, "11011"), **passes(b, "01111"), **{i.key: "fine!" for i in e}}
    judged = {**verdicts(c, ["YES", lst(2, 2), lst(3, 3), lst(4, 3), lst(5, 5)]),
              **verdicts(d, ["YES", lst(2, 2), lst(3, 3), "['YES', 'PARTIAL', 'YES', 'YES']", "no verdict"])}
    return items, generations, judged


def test_score_with_judge(handmade):
    items, generations, judged = handmade
    out = fb.score(items, generations, judged)
    assert list(out) == ["content", "example", "merged"]
    content = out["content"]
    assert content["rule"] == {"groups": 2, "satisfied": [1, 2, 1, 2, 2], "csl_sum": 2 + 0}
    assert content["judged"]["groups"] == 2
    assert content["judged"]["hard"] == [2, 2, 2, 0, 1]
    assert content["judged"]["soft"] == pytest.approx([2, 2, 2, 3 / 4 + 3 / 4, 1])
    assert content["judged"]["csl_sum"] == 3 + 3
    assert content["judged"]["unparseable"] == [0, 0, 0, 0, 1]
    assert content["groups"] == 4
    assert content["hsr"] == pytest.approx([75, 100, 75, 50, 75])
    assert content["ssr"] == pytest.approx([75, 100, 75, (1.5 + 2) / 4 * 100, 75])
    assert content["hsr_avg"] == pytest.approx(75)
    assert content["csl"] == pytest.approx((2 + 0 + 3 + 3) / 4)
    assert out["example"]["groups"] == 1 and out["example"]["hsr"] == [100.0] * 5 and out["example"]["csl"] == 5
    merged = out["merged"]  # pooled: each group counts once
    assert merged["groups"] == 5
    assert merged["hsr"] == pytest.approx([80, 100, 80, 60, 80])
    assert merged["csl"] == pytest.approx((8 + 5) / 5)
    assert merged["judged"]["unparseable"] == [0, 0, 0, 0, 1]
    json.dumps(out)


def test_score_without_judge_leaves_judged_groups_out(handmade):
    items, generations, _ = handmade
    out = fb.score(items, generations, None)
    assert "judged" not in out["content"] and "judged" not in out["merged"]
    assert out["content"]["groups"] == 2
    assert out["content"]["hsr"] == [50.0, 100.0, 50.0, 100.0, 100.0]
    assert out["content"]["csl"] == 1.0
    only_judged = fb.score(items[10:20], {}, None)["content"]
    assert only_judged["groups"] == 0 and only_judged["hsr"] == [None] * 5 and only_judged["csl"] is None


def test_score_errors_name_the_item(handmade):
    items, generations, judged = handmade
    with pytest.raises(fb.FollowBenchScoringError, match="content/4/5"):
        fb.score(items, generations, {k: v for k, v in judged.items() if k != "content/4/5"})
    with pytest.raises(fb.FollowBenchScoringError, match="content/2/3"):
        fb.score(items, {k: v for k, v in generations.items() if k != "content/2/3"}, judged)
    with pytest.raises(fb.FollowBenchScoringError, match="levels 1-5"):
        fb.score(items[:4], generations, None)
    mixed = group("content", 9, "oasst")
    mixed[2] = dataclasses.replace(mixed[2], source="E2E")
    with pytest.raises(fb.FollowBenchScoringError, match="content/9"):
        fb.score(mixed, {i.key: "x" for i in mixed}, None)


def test_score_on_the_example_gold_answers(items, answers):
    example = [item for item in items if item.category == "example"]
    out = fb.score(example, answers, None)
    assert out["example"]["rule"] == {"groups": 40, "satisfied": [39] * 5, "csl_sum": 39 * 5}
    assert out["example"]["hsr"] == pytest.approx([97.5] * 5) and out["example"]["ssr"] == out["example"]["hsr"]
    assert out["example"]["csl"] == 4.875 and out["merged"]["hsr"] == out["example"]["hsr"]


# -- matching and the command ------------------------------------------------------------------------
def test_responses_by_prompt(items):
    few = [item for item in items if item.category == "style"][:5]
    responses = [{"prompt": few[0].instruction, "response": "first"}, {"prompt": few[0].instruction, "response": "2nd"},
                 *({"prompt": item.instruction, "response": None} for item in few[1:])]
    assert fb.responses_by_prompt(few, responses) == {few[0].key: "first", **{item.key: "" for item in few[1:]}}
    with pytest.raises(fb.FollowBenchScoringError, match=few[1].key) as err:
        fb.responses_by_prompt(few, responses[:2])
    assert few[1].instruction[:30] in str(err.value)


def test_cmd_score(data, items, tmp_path, capsys):
    chosen = fb.load_items(data, groups=1)
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"prompt": i.instruction, "response": i.target}) + "\n" for i in chosen))
    judge = tmp_path / "judge.jsonl"
    judge.write_text("".join(json.dumps({"key": i.key, "output": lst(i.level, i.level)}) + "\n"
                             for i in chosen if i.rule is None))
    args = argparse.Namespace(data=str(data), responses=str(responses), judge=str(judge), groups=1, json=True)
    fb.cmd_score(args)
    out = json.loads(capsys.readouterr().out)
    judged_groups = len({(i.category, i.example_id) for i in chosen if i.rule is None})
    assert out["merged"]["groups"] == 6 and out["merged"]["judged"]["groups"] == judged_groups
    assert out["style"]["hsr"] == [100.0] * 5
    fb.cmd_score(argparse.Namespace(**{**vars(args), "judge": "none", "json": False}))
    table = capsys.readouterr().out
    assert "merged" in table and "style" in table


# -- bad data ----------------------------------------------------------------------------------------
@pytest.fixture
def copy(data, tmp_path):
    target = tmp_path / "followbench"
    shutil.copytree(data, target)
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def edit(path, change):
    records = json.loads(path.read_text(encoding="utf-8"))
    change(records)
    path.write_text(json.dumps(records), encoding="utf-8")


def test_missing_file(copy):
    (copy / "style_constraints.json").unlink()
    with pytest.raises(fb.FollowBenchDataError, match="style_constraints.json: no such file"):
        fb.load_items(copy)


def test_bad_json(copy):
    (copy / "format_constraints.json").write_text('[{"example_id": 1,', encoding="utf-8")
    with pytest.raises(fb.FollowBenchDataError, match="format_constraints.json:1: not valid JSON"):
        fb.load_items(copy)


def test_missing_field(copy):
    edit(copy / "content_constraints.json", lambda records: records[7].pop("target"))
    with pytest.raises(fb.FollowBenchDataError, match=r"content_constraints.json: item 7: missing field 'target'"):
        fb.load_items(copy)


def test_levels_out_of_order(copy):
    def swap(records):
        records[2], records[3] = records[3], records[2]
    edit(copy / "situation_constraints.json", swap)
    with pytest.raises(fb.FollowBenchDataError, match=r"situation_constraints.json: item 2 \(example_id 1\): "
                                                      r"level 3 where level 2 was expected"):
        fb.load_items(copy)


def test_example_id_changes_inside_a_group(copy):
    edit(copy / "example_constraints.json", lambda records: records[3].update(example_id=99))
    with pytest.raises(fb.FollowBenchDataError, match=r"example_constraints.json: item 3 \(example_id 99\)"):
        fb.load_items(copy)


def test_group_with_rule_and_judged_levels(copy):
    edit(copy / "style_constraints.json", lambda records: records[4].update(source="E2E"))
    with pytest.raises(fb.FollowBenchDataError, match=r"style_constraints.json: item 5 .*not all rule-checked"):
        fb.load_items(copy)


def test_wrong_type_and_truncated_file(copy):
    edit(copy / "mixed_constraints.json", lambda records: records[0].update(level="0"))
    with pytest.raises(fb.FollowBenchDataError, match=r"mixed_constraints.json: item 0: field 'level' must be int"):
        fb.load_items(copy)

    def truncate(records):
        records[0]["level"] = 0
        del records[-2:]
    edit(copy / "mixed_constraints.json", truncate)
    with pytest.raises(fb.FollowBenchDataError, match="mixed_constraints.json: item 99: the file ends inside a group"):
        fb.load_items(copy)
