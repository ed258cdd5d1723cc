"""SPaR's prompt evolution: constraint draws, parsing the teacher, the stage with a scripted teacher
(declines, duplicates, resume), the teacher's usage, the plan's wiring; then the real model."""

import json
import random

import pytest

from conftest import CORES, REPO, planned_settings, run
from ifplay.generation.backends import Backend, SamplingParams, resolve_dtype
from ifplay.core.config import load_config
from ifplay.generation.templates import check_template
from ifplay.core.settings import parse_stage as settings_parse_stage
from ifplay.spar.evolution import (TAXONOMY, EvolvedPromptsSettings, categories, draw_constraints, evolve_prompts,
                                   load_seeds, parse_evolved, render)
from ifplay.plan import Plan
from ifplay.core.records import read_jsonl
from ifplay.core.sources import SourceError
from ifplay.generation.teacher import Teacher

GENERATION_DTYPE = resolve_dtype("transformers", "auto")  # config backend.dtype on this machine

TEMPLATE = (REPO / "config" / "prompts" / "evolve.txt").read_text()


def test_taxonomy_has_the_papers_14_categories_in_three_groups():
    names = [c.category for c in categories(TAXONOMY)]
    assert len(names) == 14 == len(set(names)) and set(TAXONOMY) == {"format", "content", "general"}


def test_draws_are_seeded_distinct_and_never_length_as_another():
    for key in range(200):
        main, others = draw_constraints(random.Random(f"0:{key}"), TAXONOMY, (1, 3))
        assert 1 <= len(others) <= 3 and main not in others and len(set(others)) == len(others)
        assert all(c.category != "Length" for c in others)
        assert (main, others) == draw_constraints(random.Random(f"0:{key}"), TAXONOMY, (1, 3))
    mains = {draw_constraints(random.Random(f"0:{key}"), TAXONOMY, (1, 3))[0].category for key in range(200)}
    assert len(mains) == 14
    with pytest.raises(ValueError, match="prompt_evolution.others"):
        draw_constraints(random.Random(0), TAXONOMY, (3, 1))


def test_parse_evolved():
    assert parse_evolved("Sure!\n[[start]] Write a poem in lowercase. [[end]]") == ("evolved", "Write a poem in lowercase.")
    assert parse_evolved("[[start]]first[[end]] then [[START]]second") == ("evolved", "second")  # the last block
    assert parse_evolved("None") == ("declined", None)
    assert parse_evolved("[[start]] None. [[end]]") == ("declined", None)
    assert parse_evolved("Here is a new request: write more.") == ("unparsed", None)
    assert parse_evolved("[[start]] [[end]]") == ("unparsed", None)
    assert parse_evolved("") == ("unparsed", None)


def test_template_checks_and_rendering():
    check_template(TEMPLATE, "evolution", "evolve.txt")
    with pytest.raises(ValueError, match=r"bad.txt: evolution template lacks placeholder\(s\) \{main_constraint\}"):
        check_template("{prompt} {other_constraints}", "evolution", "bad.txt")
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \{oops\}"):
        check_template("{prompt} {main_constraint} {other_constraints} {oops}", "evolution", "bad.txt")
    main, others = draw_constraints(random.Random(1), TAXONOMY, (2, 2))
    [turn] = render(TEMPLATE, "Describe a cat.", main, others)
    text = turn["content"]
    assert "Describe a cat." in text and main.description in text and all(f"- {o.text()}" in text for o in others)


class ScriptedTeacher(Backend):
    """Answers by the seed prompt in the evolution request: maths -> None, "broken" -> no markers,
    "same" -> the seed itself, "twin" -> one fixed prompt, else the seed + " In lowercase."."""

    name = "scripted"

    def __init__(self):
        self.asked: list[str] = []
        self.usage = {"requests": 0, "prompt_tokens": 0}

    def chat(self, conversations, params, progress=None):
        out = []
        for conversation in conversations:
            seed = conversation[-1]["content"].split("Original request:\n", 1)[1].split("\n", 1)[0]
            self.asked.append(seed)
            self.usage["requests"] += 1
            if "Solve" in seed:
                text = "None"
            elif "broken" in seed:
                text = "I would rather not use markers."
            elif "same" in seed:
                text = f"[[start]]{seed}[[end]]"
            elif "twin" in seed:
                text = "[[start]]Write about twins in exactly 3 sentences.[[end]]"
            else:
                text = f"Thinking...\n[[start]]{seed} Answer in lowercase.[[end]]"
            out.append([text] * params.n)
        return out


SEEDS = [{"key": 1, "prompt": "Describe a cat."}, {"key": 2, "prompt": "Solve 2x = 4."},
         {"key": 3, "prompt": "A broken request."}, {"key": 4, "prompt": "The same request."},
         {"key": 5, "prompt": "A twin request."}, {"key": 6, "prompt": "Another twin request."},
         {"key": 7, "prompt": "Describe a dog."}]


def test_evolution_stage_counts_declines_duplicates_and_resumes(tmp_path):
    teacher = Teacher(ScriptedTeacher(), "scripted-teacher")
    journal = tmp_path / "evolved.jsonl"
    kept, answers, counts = evolve_prompts(SEEDS, teacher, TEMPLATE, TAXONOMY, (1, 3), SamplingParams(), 0,
                                           str(journal), chunk=3)
    assert counts == {"seeds": 7, "evolved": 5, "declined": 1, "unparsed": 1, "unchanged": 1, "duplicates": 1,
                      "kept": 3}
    assert [k["key"] for k in kept] == [1, 5, 7]
    assert kept[0]["prompt"] == "Describe a cat. Answer in lowercase." and kept[0]["main_constraint"] in [
        c.category for c in categories(TAXONOMY)]
    assert [a["status"] for a in answers] == ["evolved", "declined", "unparsed", "evolved", "evolved", "evolved",
                                              "evolved"]
    assert read_jsonl(journal) == answers and not (tmp_path / "evolved.jsonl.partial").exists()
    usage = teacher.usage()
    assert usage == {"backend": "scripted", "model": "scripted-teacher", "calls": 3, "conversations": 7,
                     "completions": 7, "requests": 7, "prompt_tokens": 0}


def test_interrupted_evolution_resumes_where_it_stopped(tmp_path):
    class Crashing(ScriptedTeacher):
        def chat(self, conversations, params, progress=None):
            if len(self.asked) >= 3:
                raise RuntimeError("server went away")
            return super().chat(conversations, params, progress)

    journal = tmp_path / "evolved.jsonl"
    with pytest.raises(RuntimeError, match="server went away"):
        evolve_prompts(SEEDS, Crashing(), TEMPLATE, TAXONOMY, (1, 3), SamplingParams(), 0, str(journal), chunk=3)
    assert len(read_jsonl(tmp_path / "evolved.jsonl.partial")) == 3
    second = ScriptedTeacher()
    kept, _, counts = evolve_prompts(SEEDS, second, TEMPLATE, TAXONOMY, (1, 3), SamplingParams(), 0, str(journal))
    assert second.asked == [s["prompt"] for s in SEEDS[3:]] and counts["kept"] == 3


def test_seeds():
    seeds = load_seeds("builtin:seeds")
    assert len(seeds) == 40 and len({s["key"] for s in seeds}) == 40
    assert load_seeds("builtin:seeds", 5) == seeds[:5]
    with pytest.raises(SourceError, match="config key 'prompt_evolution.seeds': nowhere.jsonl: no such file"):
        load_seeds("nowhere.jsonl")


def test_plan_takes_spars_pool_from_the_evolved_prompts():
    evolved = Plan(load_config([], {"spar": {"prompt_source": "evolved"}}))
    pool = evolved.spar[0].samples.inputs["prompts"]
    assert pool.kind == "prompt_subset" and pool.config == {"limit": 24}
    stage = pool.inputs["prompts"]
    assert stage.kind == "evolved_prompts" and stage is evolved.evolution
    assert stage.inputs["teacher"] is evolved.base  # the CPU default: the base model teaches itself
    assert stage.config["teacher"] == {"backend": {"name": "transformers", "dtype": GENERATION_DTYPE}, "model": None}
    # another SPaR prompt limit shares the evolution; another taxonomy does not
    more = Plan(load_config([], {"spar": {"prompt_source": "evolved", "prompt_limit": 30}}))
    assert more.evolution.key == stage.key and more.spar[0].samples.inputs["prompts"].key != pool.key
    other = Plan(load_config([], {"spar": {"prompt_source": "evolved"},
                                  "prompt_evolution": {"categories": {"format": {"Length": "at most 50 words"}}}}))
    assert other.evolution.key != stage.key
    assert Plan(load_config([])).evolution is None


def test_plan_with_a_served_teacher():
    plan = Plan(load_config([], {"spar": {"prompt_source": "evolved"},
                                 "teacher": {"model": "gpt-4o-mini-2024-07-18", "backend": "openai"},
                                 "backend": {"openai": {"base_url": "https://api.openai.com/v1"}}}))
    stage = plan.evolution
    assert stage.inputs == {} and stage.config["teacher"] == {"backend": {"name": "openai", "dtype": None}, "model": "gpt-4o-mini-2024-07-18"}
    assert stage.runtime["backend_options"]["base_url"] == "https://api.openai.com/v1"
    # the command asks the server for config.teacher.model: no checkpoint, no --teacher
    settings, _ = settings_parse_stage(EvolvedPromptsSettings, stage.settings())
    assert settings.config.teacher.model == "gpt-4o-mini-2024-07-18" and settings.runtime.backend_options == \
        stage.runtime["backend_options"]
    # the runtime server settings are not in the key
    moved = Plan(load_config([], {"spar": {"prompt_source": "evolved"},
                                  "teacher": {"model": "gpt-4o-mini-2024-07-18", "backend": "openai"},
                                  "backend": {"openai": {"base_url": "http://127.0.0.1:9000/v1"}}}))
    assert moved.evolution.key == stage.key


@pytest.mark.slow
def test_evolve_prompts_command_with_the_real_model(smollm2, tmp_path):
    out = tmp_path / "prompts.jsonl"
    settings = planned_settings("evolved_prompts", "config/experiments/spar-evolved.yaml",
                                config={"evolution": {"limit": 4, "max_new_tokens": 48}})
    proc = run(["ifplay", "evolved-prompts", "--teacher", str(smollm2), "--out", str(out),
                "--evolved", str(tmp_path / "evolved.jsonl"), "--counts", str(tmp_path / "c.json"),
                "--usage", str(tmp_path / "u.json"), "--settings", settings, "--threads", str(CORES)], timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    counts = result["counts"]
    assert counts["seeds"] == 4 and sum(counts[s] for s in ("evolved", "declined", "unparsed")) == 4
    assert counts["kept"] == len(read_jsonl(out)) and result["usage"]["conversations"] == 4
    assert len(read_jsonl(tmp_path / "evolved.jsonl")) == 4
