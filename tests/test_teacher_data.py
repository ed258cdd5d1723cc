"""The teacher's SFT data for M_0 and R_0: answers, judgements and refinements with a scripted
teacher (formats equal to SPaR's RFT data, verification, counts, usage, resume), the plan's wiring
and sharing; then the command with the real model as its own teacher."""

import json

import pytest

from conftest import CORES, REPO, planned_settings, run
from ifplay.generation.backends import Backend, SamplingParams, resolve_dtype
from ifplay.core.config import load_config
from ifplay.judging.judge import make_judge
from ifplay.plan import Plan
from ifplay.core.records import read_jsonl, write_jsonl
from ifplay.spar.stages import judge_responses, judgement_example, refinement_example
from ifplay.generation.teacher import Teacher
from ifplay.spar.teacher_data import actor_examples, answer_prompts, refine_negatives, refiner_examples
from ifplay.spar.tree_search import SearchConfig

GENERATION_DTYPE = resolve_dtype("transformers", "auto")  # config backend.dtype on this machine

JUDGE = (REPO / "config" / "prompts" / "judge_verdict_first.txt").read_text()
REFINE = (REPO / "config" / "prompts" / "refine_plain.txt").read_text()


class ScriptedTeacher(Backend):
    """A judge request: "Yes" unless the response contains "bad" (prefilled "Final Judgement:").
    A refine request: the response with "bad" replaced by "fixed" (or "still bad" for "hopeless"
    responses, which the verification then rejects; nothing at all for "mute" ones). Anything
    else is a prompt to answer: "Answer: <prompt>", or nothing for prompts with "silent"."""

    name = "scripted"

    def __init__(self):
        self.requests: list[str] = []

    def chat(self, conversations, params, progress=None):
        out = []
        for conversation in conversations:
            user = conversation[0]["content"]
            if conversation[-1]["role"] == "assistant":  # the judge's prefill
                response = user.split("Response:\n", 1)[1].split("\n\nStart with", 1)[0]
                self.requests.append(f"judge:{response}")
                text = " No, it says bad." if "bad" in response else " Yes, all met."
            elif "Judgement of the response:" in user:
                response = user.split("Response:\n", 1)[1].split("\n\nJudgement", 1)[0]
                self.requests.append(f"refine:{response}")
                text = ("" if "mute" in response else "still bad" if "hopeless" in response
                        else response.replace("bad", "fixed"))
            else:
                self.requests.append(f"answer:{user}")
                text = "" if "silent" in user else f"Answer: {user}"
            out.append([text] * params.n)
        return out


PROMPTS = [{"key": 1, "prompt": "Describe a cat in lowercase."}, {"key": 2, "prompt": "A silent prompt."},
           {"key": 3, "prompt": "Write two words."}]
SAMPLES = [{"key": 1, "sample": 0, "prompt": PROMPTS[0]["prompt"], "response": "a good cat"},
           {"key": 1, "sample": 1, "prompt": PROMPTS[0]["prompt"], "response": "a bad cat"},
           {"key": 3, "sample": 0, "prompt": PROMPTS[2]["prompt"], "response": "hopeless bad words"},
           {"key": 3, "sample": 1, "prompt": PROMPTS[2]["prompt"], "response": "mute bad"}]


def make_data(tmp_path, teacher, verify=True):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    answers = answer_prompts(PROMPTS, teacher, SamplingParams(), str(tmp_path / "answers.jsonl"), chunk=2)
    search = SearchConfig(output_format="plain")
    with make_judge("model", teacher, REPO / "config" / "prompts" / "judge_verdict_first.txt", votes=1) as judge:
        judged = judge_responses(str(tmp_path / "prompts.jsonl"), str(tmp_path / "samples.jsonl"),
                                 str(tmp_path / "judged.jsonl"), judge, finish=False)
        refinements = refine_negatives(judged, {p["key"]: p for p in PROMPTS}, teacher, judge, REFINE, search, verify,
                                       str(tmp_path / "refinements.jsonl"))
    return answers, judged, refinements


def test_actor_and_refiner_data_in_spars_formats(tmp_path):
    teacher = Teacher(ScriptedTeacher(), "scripted-teacher")
    answers, judged, refinements = make_data(tmp_path, teacher)
    actor, counts = actor_examples(answers)
    assert counts == {"actor_prompts": 3, "actor_empty_answers": 1, "actor_examples": 2}
    assert actor[0] == {"messages": [{"role": "user", "content": "Describe a cat in lowercase."},
                                     {"role": "assistant", "content": "Answer: Describe a cat in lowercase."}],
                        "key": 1, "kind": "answer"}
    assert [j["label"] for j in judged] == [1, 0, 0, 0]
    assert [(r["refined"], r["verification"] and r["verification"]["label"]) for r in refinements] == [
        ("a fixed cat", 1), ("still bad", 0), (None, None)]
    refiner, counts = refiner_examples(judged, refinements, JUDGE, REFINE, verify=True)
    assert counts == {"student_prompts": 2, "student_responses": 4, "judged_yes": 1, "judged_no": 3,
                      "judged_unlabelled": 0, "refinements": 3, "refinements_unparsed": 1, "refinements_rejected": 1,
                      "refinements_kept": 1, "refiner_examples_judgement_yes": 1, "refiner_examples_judgement_no": 3,
                      "refiner_examples_refinement": 1, "refiner_examples": 5}
    # exactly the dialogues SPaR's refiner RFT trains on (the judgement keeps the template's prefill)
    bad = judged[1]
    assert refiner[1] == {**judgement_example(JUDGE, bad["prompt"], "a bad cat", "Final Judgement: No, it says bad.",
                                              "judgement_no"), "key": "1/1"}
    assert refiner[1]["messages"][1]["content"] == bad["critique"]
    assert refiner[4] == {**refinement_example(REFINE, bad["prompt"], "a bad cat", bad["critique"], "a fixed cat"),
                          "key": "1/1"}
    # without verification the rejected refinement is kept too
    _, loose = refiner_examples(judged, refinements, JUDGE, REFINE, verify=False)
    assert loose["refinements_kept"] == 2 and loose["refinements_rejected"] == 0
    usage = teacher.usage()
    # 3 answers + 4 judgements + 3 refinements + 2 verifications (the unparsed one is not judged)
    assert usage["conversations"] == 12 and usage["completions"] == 12 and usage["model"] == "scripted-teacher"


def test_interrupted_teacher_data_resumes_without_asking_again(tmp_path):
    class Crashing(ScriptedTeacher):
        def chat(self, conversations, params, progress=None):
            if any("Judgement of the response:" in c[0]["content"] for c in conversations):
                raise RuntimeError("server went away")
            return super().chat(conversations, params, progress)

    with pytest.raises(RuntimeError, match="server went away"):
        make_data(tmp_path, Crashing())
    # nothing is written as an output before the stage ends (Snakemake deletes a failed job's outputs)
    assert not (tmp_path / "answers.jsonl").exists() and not (tmp_path / "judged.jsonl").exists()
    assert len(read_jsonl(tmp_path / "answers.jsonl.partial")) == 3
    assert len(read_jsonl(tmp_path / "judged.jsonl.partial")) == 4
    second = ScriptedTeacher()
    _, _, refinements = make_data(tmp_path, second)
    # the answers and judgements were kept: only the refinements and their verification are asked
    assert [r.split(":")[0] for r in second.requests] == ["refine"] * 3 + ["judge"] * 2
    assert len(refinements) == 3


def test_plan_wires_the_teacher_data_to_m0_and_r0_and_shares_upstream():
    default, sft = Plan(load_config([])), Plan(load_config([REPO / "config" / "experiments" / "spar-sft.yaml"]))
    data = sft.teacher_data
    assert data.kind == "teacher_sft_data" and data.inputs["prompts"] is sft.evolution
    assert data.inputs["teacher"] is sft.base and data.config["teacher"] == {"backend": {"name": "transformers", "dtype": GENERATION_DTYPE}, "model": None}
    samples = data.inputs["samples"]  # the student's: the base model on the first 16 evolved prompts
    assert samples.kind == "generate" and samples.inputs["model"] is sft.base
    assert samples.inputs["prompts"].config == {"limit": 16}
    assert samples.config["sampling"] == {"n": 2, "temperature": 0.9, "top_p": 0.9, "max_new_tokens": 128, "seed": 0}
    # SPaR's own judge and refine templates (content-keyed) and output format
    spar_data = sft.spar[0].data
    assert data.config["judge"]["template"] == spar_data.config["judge_template"]
    assert data.config["refine"]["template"] == spar_data.config["refine_template"]
    assert data.config["refine"]["output_format"] == "plain"
    m0, r0 = sft.sft["actor"], sft.sft["refiner"]
    assert m0.inputs == {"model": sft.base, "data": data} and m0.config["data"] == {"file": "actor.jsonl"}
    assert r0.inputs == {"model": sft.base, "data": data} and r0.config["data"] == {"file": "refiner.jsonl"}
    assert r0.files == {"data": "refiner.jsonl"} and r0.input_path("data") == data.path("refiner.jsonl")
    assert sft.spar[0].samples.inputs["model"] is m0 and sft.spar[0].judged.inputs["refiner"] is r0
    assert [label for label, _, _ in sft.models][:2] == ["SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct-SFT"]
    assert sft.judge_evaluations[0].model.endswith("-SFT")
    # shared with the default: exactly what does not depend on M_0 or R_0
    shared = {default.stages[k].kind for k in set(default.stages) & set(sft.stages)}
    assert shared == {"base_model", "prompts", "generate", "ifeval_scores", "followbench_prompts",
                      "followbench_judgements", "followbench_scores", "general_eval"}  # the base model's evaluations
    for key in set(default.stages) & set(sft.stages):
        stage = sft.stages[key]
        assert stage.kind in ("base_model", "prompts", "followbench_prompts") or stage.inputs.get("model", stage) is not m0
    # the evolution is the one spar-evolved uses; another SFT setting keeps it and the student's samples
    evolved = Plan(load_config([REPO / "config" / "experiments" / "spar-evolved.yaml"]))
    assert evolved.evolution.key == sft.evolution.key
    more = Plan(load_config([REPO / "config" / "experiments" / "spar-sft.yaml"],
                            {"sft": {"teacher_data": {"verify_refinements": False}}}))
    assert more.teacher_data.key != data.key and more.teacher_data.inputs["samples"].key == samples.key
    manifest = sft.manifest()["sft"]
    assert manifest["teacher_data"]["counts_path"] == data.path("counts.json") and manifest["actor"] == m0.output
    assert data.path("usage.json") in sft.report_inputs()


def test_plan_with_a_served_teacher_keys_its_name_not_its_server():
    overlay = [REPO / "config" / "experiments" / "spar-sft.yaml"]
    served = {"teacher": {"model": "gpt-4o-mini-2024-07-18", "backend": "openai"}}
    plan = Plan(load_config(overlay, served))
    data = plan.teacher_data
    assert "teacher" not in data.inputs and "base_url" in data.runtime["backend_options"]  # the server: runtime
    assert data.config["teacher"] == {"backend": {"name": "openai", "dtype": None}, "model": "gpt-4o-mini-2024-07-18"}
    # the student is still the base model, sampled on the run's own backend
    assert data.inputs["samples"].inputs["model"] is plan.base
    moved = Plan(load_config(overlay, {**served, "backend": {"openai": {"base_url": "http://10.0.0.1:8000/v1"}}}))
    assert moved.teacher_data.key == data.key


@pytest.mark.slow
def test_teacher_sft_data_command_with_the_real_model(smollm2, tmp_path):
    prompts = [{"key": i, "prompt": p} for i, p in enumerate(["Describe the sea in exactly two sentences.",
                                                               "Write a haiku about tea, all in lowercase."])]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    write_jsonl(tmp_path / "samples.jsonl", [{"key": p["key"], "sample": 0, "prompt": p["prompt"],
                                              "response": "THE SEA IS BIG."} for p in prompts])
    files = {name: str(tmp_path / f"{name}.json{'l' if name != 'counts' and name != 'usage' else ''}")
             for name in ("actor", "refiner", "answers", "judged", "refinements", "counts", "usage")}
    settings = planned_settings("teacher_sft_data", "config/experiments/spar-sft.yaml",
                                config={"answer": {"max_new_tokens": 24}, "judge": {"max_new_tokens": 16},
                                        "refine": {"max_new_tokens": 24}})
    proc = run(["ifplay", "teacher-sft-data", "--prompts", str(tmp_path / "prompts.jsonl"),
                "--samples", str(tmp_path / "samples.jsonl"), "--teacher", str(smollm2),
                *[arg for name, path in files.items() for arg in (f"--{name}", path)],
                "--settings", settings, "--threads", str(CORES)], timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    counts, usage = result["counts"], result["usage"]
    assert counts["actor_prompts"] == 2 and counts["student_responses"] == 2
    assert counts["actor_examples"] == len(read_jsonl(files["actor"]))
    assert counts["refiner_examples"] == len(read_jsonl(files["refiner"]))
    assert counts["refinements"] == counts["judged_no"]
    assert usage["conversations"] == 2 + 2 + counts["refinements"] + counts["refinements"] - counts["refinements_unparsed"]
    for example in read_jsonl(files["actor"]) + read_jsonl(files["refiner"]):
        assert [m["role"] for m in example["messages"]] == ["user", "assistant"]


def test_teacher_table_keeps_counts_and_numeric_usage():
    from ifplay.reporting.experiments import teacher_table

    table = teacher_table([{"stage": "teacher_sft_data", "counts": {"actor_examples": 31},
                            "usage": {"backend": "openai", "model": "m", "requests": 121, "prompt_tokens": 21464}}])
    assert list(table.columns) == ["stage", "kind", "name", "value"]
    assert table.values.tolist() == [["teacher_sft_data", "count", "actor_examples", 31],
                                     ["teacher_sft_data", "usage", "requests", 121],
                                     ["teacher_sft_data", "usage", "prompt_tokens", 21464]]
    plan = Plan(load_config([REPO / "config" / "experiments" / "spar-sft.yaml"]))
    assert "teacher" in plan.tables() and "teacher" not in Plan(load_config([])).tables()
