"""SPaR's starting data (arXiv 2412.11605, step 1): the teacher's SFT data for M_0 and R_0.

The paper fine-tunes the actor on a stronger teacher's (GPT-4o-mini's) responses to the evolved
prompts, and the refiner on the teacher's judgements and refinements; those are its "-SFT" models.
This stage makes both data sets with any teacher (:mod:`ifplay.generation.teacher`):

* **actor data**: the teacher answers each of the first ``actor_prompts`` evolved prompts once;
  every non-empty answer is a conversation ``[user: prompt, assistant: answer]``.
* **refiner data**: the student (the base model) has sampled responses to the first
  ``refiner_prompts`` evolved prompts (a ``generate`` stage); the teacher judges each with the
  SPaR judge template (:func:`ifplay.spar.stages.judge_responses`, ``votes`` critiques, majority vote) and
  refines each response it judges No with the SPaR refine template, the critique included
  (``ifplay.spar.tree_search.refinement_critique``). With ``verify_refinements`` a refinement is kept
  only when the teacher then judges it Yes. Judgements with a label and kept refinements become
  dialogues in exactly the formats SPaR's refiner RFT uses (:func:`ifplay.spar.stages.judgement_example`,
  :func:`ifplay.spar.stages.refinement_example`), so R_0 learns the prompts it is given in self-play.

Both outputs are JSONL in TRL's conversational format (``{"messages": [...]}`` plus ``key`` and
``kind``). Every teacher answer is journalled (answers, judgements, refinements: ``<file>.partial``
until the whole stage is done, as Snakemake deletes a failed job's outputs), so an interrupted
stage resumes without asking the teacher again; ``counts.json`` keeps what was kept and dropped,
``usage.json`` what the teacher was asked (and, for a server, requests and tokens) in this run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from tqdm.auto import tqdm

from ifplay.generation.backends import Backend, BackendRuntime, SamplingParams
from ifplay.generation.generate import user_turn
from ifplay.generation.teacher import TeacherConfig
from ifplay.judging.judge import Judge, VotedJudgement
from ifplay.core.records import Checkpoint
from ifplay.spar.stages import (Refine, VotingJudge, judge_responses, judgement_example, refinement_example,
                                response_id)
from ifplay.spar.tree_search import SearchConfig, refine_turn, refinement_critique

log = logging.getLogger(__name__)


def answer_prompts(prompts: list[dict], teacher: Backend, params: SamplingParams, journal_path: str,
                   chunk: int = 64) -> list[dict]:
    """The teacher's answer to every prompt (key, prompt, answer), journalled chunk by chunk to
    ``<journal_path>.partial`` (:func:`ifplay.core.records.finish_journal` writes ``journal_path``)."""
    journal = Checkpoint(journal_path, id_field="key")
    todo = [p for p in prompts if p["key"] not in journal.done]
    if journal.done:
        log.info("teacher answers: resuming, %d of %d prompts already answered", len(prompts) - len(todo), len(prompts))
    with tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="teacher answers", unit="prompt") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            outputs = teacher.chat([user_turn(p["prompt"]) for p in part], params, progress="answer")
            journal.append({"key": p["key"], "prompt": p["prompt"], "answer": texts[0]}
                           for p, texts in zip(part, outputs))
            bar.update(len(part))
    journal.close()
    return journal.ordered([p["key"] for p in prompts])


def refine_negatives(judged: list[dict], prompts: dict, teacher: Backend, judge: Judge, refine_template: str,
                     search: SearchConfig, verify: bool, journal_path: str, chunk: int = 64) -> list[dict]:
    """The teacher's refinement of every response it judged No, with its parsed refined response and
    (``verify``) the teacher's judgement of it; journalled by response id (see :func:`answer_prompts`)."""
    negatives = [r for r in judged if r["label"] == 0]
    journal = Checkpoint(journal_path, id_field="id")
    todo = [r for r in negatives if response_id(r) not in journal.done]
    params = dataclasses.replace(search.sampling(), n=1)
    with tqdm(total=len(negatives), initial=len(negatives) - len(todo), desc="teacher refines", unit="response") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            critiques = [refinement_critique(VotedJudgement.from_record(r)) for r in part]
            conversations = [[refine_turn(refine_template, r["prompt"], r["response"], critique)]
                             for r, critique in zip(part, critiques)]
            outputs = [texts[0] for texts in teacher.chat(conversations, params, progress="refine")]
            refined = [search.refined(text) for text in outputs]
            checks: dict[int, VotedJudgement] = {}
            if verify:
                parsed = [i for i, text in enumerate(refined) if text is not None]
                verdicts = judge.judge([(prompts[part[i]["key"]], refined[i]) for i in parsed])
                checks = dict(zip(parsed, verdicts))
            journal.append({"id": response_id(r), "key": r["key"], "prompt": r["prompt"], "response": r["response"],
                            "critique": critique, "refinement": output, "refined": text,
                            "verification": checks[i].to_json() if i in checks else None}
                           for i, (r, critique, output, text) in enumerate(zip(part, critiques, outputs, refined)))
            bar.update(len(part))
    journal.close()
    return journal.ordered([response_id(r) for r in negatives])


def actor_examples(answers: list[dict]) -> tuple[list[dict], dict]:
    """SFT conversations from the teacher's answers (empty answers dropped), with counts."""
    examples = [{"messages": [*user_turn(a["prompt"]), {"role": "assistant", "content": a["answer"].strip()}],
                 "key": a["key"], "kind": "answer"} for a in answers if a["answer"].strip()]
    return examples, {"actor_prompts": len(answers), "actor_empty_answers": len(answers) - len(examples),
                      "actor_examples": len(examples)}


def refiner_examples(judged: list[dict], refinements: list[dict], judge_template: str, refine_template: str,
                     verify: bool) -> tuple[list[dict], dict]:
    """Judgement and refinement dialogues (SPaR's RFT formats) from the teacher's work, with counts."""
    examples = []
    for record in judged:
        if record["label"] is None or record["critique"] is None:
            continue
        kind = f"judgement_{'yes' if record['label'] == 1 else 'no'}"
        examples.append({**judgement_example(judge_template, record["prompt"], record["response"],
                                             record["critique"], kind), "key": response_id(record)})
    kept = [r for r in refinements if r["refined"] is not None
            and (not verify or (r["verification"] and r["verification"]["label"] == 1))]
    for r in kept:
        examples.append({**refinement_example(refine_template, r["prompt"], r["response"], r["critique"],
                                              r["refinement"]), "key": r["id"]})
    unparsed = sum(r["refined"] is None for r in refinements)
    counts = {
        "student_prompts": len({r["key"] for r in judged}),
        "student_responses": len(judged),
        "judged_yes": sum(r["label"] == 1 for r in judged),
        "judged_no": sum(r["label"] == 0 for r in judged),
        "judged_unlabelled": sum(r["label"] is None for r in judged),
        "refinements": len(refinements),
        "refinements_unparsed": unparsed,
        "refinements_rejected": len(refinements) - unparsed - len(kept),
        "refinements_kept": len(kept),
        "refiner_examples_judgement_yes": sum(e["kind"] == "judgement_yes" for e in examples),
        "refiner_examples_judgement_no": sum(e["kind"] == "judgement_no" for e in examples),
        "refiner_examples_refinement": len(kept),
        "refiner_examples": len(examples),
    }
    return examples, counts


# -- stage settings (ifplay.core.settings) ------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """The teacher's decoding of its answers (``sft.teacher_data.answer``)."""

    temperature: float
    top_p: float
    max_new_tokens: int

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              seed=seed)


@dataclass(frozen=True)
class TeacherDataConfig:
    """``sft.teacher_data`` as a teacher_sft_data stage hashes it (the student's settings are its
    samples' stage's; the templates' hashes are SPaR's, the refiner's output format spar.search's)."""

    actor_prompts: int | None  # the teacher answers the first N prompts; null = all
    answer: Answer
    judge: VotingJudge
    refine: Refine
    verify_refinements: bool
    teacher: TeacherConfig
    seed: int


@dataclass(frozen=True)
class TeacherDataRuntime(BackendRuntime):
    """The teacher's backend settings and the paths of SPaR's judge and refine templates."""

    judge_template: str
    refine_template: str


@dataclass(frozen=True)
class TeacherDataSettings:
    """``ifplay teacher-sft-data --settings``."""

    config: TeacherDataConfig
    runtime: TeacherDataRuntime


# -- command line -----------------------------------------------------------------------------
def _cmd_sft_data(args) -> None:
    import json

    from ifplay.judging.judge import ModelJudge

    from ifplay.generation.templates import load_template
    from ifplay.core.records import finish_journal, read_jsonl, write_json, write_jsonl
    from ifplay.generation.teacher import teacher_from_settings

    config, runtime = args.settings.config, args.settings.runtime
    prompts = read_jsonl(args.prompts, required=("key", "prompt"))
    by_key = {p["key"]: p for p in prompts}
    judge_template = load_template(runtime.judge_template, "judge")
    refine_template = load_template(runtime.refine_template, "refine")
    search = SearchConfig(**config.refine.sampling(), seed=config.seed)
    verify = config.verify_refinements
    with teacher_from_settings(config.teacher, runtime, args.teacher, args.threads) as teacher:
        answers = answer_prompts(prompts[:config.actor_prompts], teacher, config.answer.sampling(config.seed),
                                 args.answers)
        with ModelJudge(teacher, judge_template, **config.judge.params(config.seed)) as judge:
            judged = judge_responses(args.prompts, args.samples, args.judged, judge, finish=False)
            refinements = refine_negatives(judged, by_key, teacher, judge, refine_template, search, verify,
                                           args.refinements)
        usage = teacher.usage()
    actor, actor_counts = actor_examples(answers)
    refiner, refiner_counts = refiner_examples(judged, refinements, judge_template, refine_template, verify)
    counts = {**actor_counts, **refiner_counts}
    for path, records in ((args.answers, answers), (args.judged, judged), (args.refinements, refinements)):
        finish_journal(path, records)
    write_jsonl(args.actor, actor)
    write_jsonl(args.refiner, refiner)
    write_json(args.counts, counts)
    write_json(args.usage, usage)
    print(json.dumps({"counts": counts, "usage": usage}))


def add_cli(sub) -> None:
    """Register ``teacher-sft-data`` on the ``ifplay`` subparsers."""
    from ifplay.core import settings
    from ifplay.generation.teacher import add_teacher_argument

    p = sub.add_parser("teacher-sft-data",
                       help="SPaR: the teacher's SFT data for the actor (answers) and refiner (judgements, refinements)")
    p.add_argument("--prompts", required=True, help="evolved prompts JSONL (key, prompt)")
    p.add_argument("--samples", required=True, help="the student's responses JSONL (key, sample, prompt, response)")
    add_teacher_argument(p)
    p.add_argument("--actor", required=True, help="actor SFT data JSONL (TRL conversational format)")
    p.add_argument("--refiner", required=True, help="refiner SFT data JSONL (TRL conversational format)")
    p.add_argument("--answers", required=True, help="the teacher's answers JSONL")
    p.add_argument("--judged", required=True, help="the teacher's judgements of the student's responses JSONL")
    p.add_argument("--refinements", required=True, help="the teacher's refinements JSONL")
    p.add_argument("--counts", required=True, help="counts JSON")
    p.add_argument("--usage", required=True, help="the teacher's usage JSON")
    settings.add_argument(p, TeacherDataSettings)
    p.add_argument("--threads", type=int, required=True, help="CPU threads (the rule's threads)")
    p.set_defaults(func=_cmd_sft_data)
