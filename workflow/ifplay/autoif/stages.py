"""AutoIF's stages: the supervisor model writes, the sandbox executes, :mod:`ifplay.autoif.core` decides.

One function per Snakemake stage, each with named files in and out, a ``counts.json`` of what it
kept and dropped (the experiment manifest collects them) and an ``ifplay autoif-*`` subcommand.
Stages that call a model journal finished items beside their output and resume after a kill.

==========================  ==============================================================
stage (subcommand)          reads -> writes
==========================  ==============================================================
autoif-instructions         seed file -> instructions.jsonl (seeds + augmentations)
autoif-verifiers            instructions -> verifiers.jsonl (K parsed answers each)
autoif-crossval             verifiers -> instructions.jsonl (eval_func, cases) [sandbox]
autoif-backtrans        crossval -> instructions.jsonl (NLI-consistent ones)
autoif-queries              instructions + query pool -> queries.jsonl
autoif-responses            queries -> responses.jsonl (AutoIF's query_rft format: gpt-answer)
autoif-verified     query_rft-style JSONL -> verified.jsonl (accuracy per response) [sandbox]
autoif-scored                verified -> scored.jsonl (quality score per kept response)
autoif-data                 verified (+ scored) -> sft.jsonl, dpo_pairs.jsonl, queries.jsonl
autoif-online-pairs         policy samples + queries -> dpo_pairs.jsonl [sandbox]
autoif-prompts              queries -> prompts.jsonl (SPaR's pool, spar.prompt_source: autoif)
==========================  ==============================================================
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from tqdm.auto import tqdm

from ifplay.autoif import core as autoif
from ifplay.core.settings import NoRuntime, SettingsError
from ifplay.generation.backends import BackendChoice, BackendRuntime, SamplingParams
from ifplay.sandbox.runner import SandboxLimits
from ifplay.sandbox.runner import execute, make_sandbox
from ifplay.core.records import Checkpoint, RecordError, numbered_jsonl, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)


# -- shared machinery --------------------------------------------------------------------------
class Supervisor:
    """The model that writes AutoIF's data, built lazily (a resumed stage may need no generation)."""

    def __init__(self, model: str, backend: BackendChoice | str = "transformers", batch_size: int = 16,
                 max_prompt_tokens: int = 2048, threads: int | None = None, backend_options: dict | None = None):
        self.args = dict(model=model, backend=backend, batch_size=batch_size,
                         max_prompt_tokens=max_prompt_tokens, threads=threads, options=backend_options)
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            from ifplay.generation.backends import make_backend

            a = self.args
            self._engine = make_backend(a["backend"], a["model"], batch_size=a["batch_size"],
                                        max_prompt_tokens=a["max_prompt_tokens"], threads=a["threads"],
                                        options=a["options"])
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


def complete(supervisor: Supervisor, items: list[tuple[str, list[dict]]], params: SamplingParams, out: str | Path,
             desc: str, chunk: int | None = None) -> dict[str, list[str]]:
    """``params.n`` completions for each ``(id, conversation)``, journalled to ``<out>.partial`` so that a
    killed stage resumes; a prefilled assistant turn is prepended to its completions. ``chunk`` items
    (default: one backend batch) go to the backend at a time. The journal stays until the stage has
    written its output (:func:`drop_journal`), so a crash after generation loses nothing."""
    chunk = chunk or supervisor.args["batch_size"]
    journal = Checkpoint(out, id_field="id")
    done = {record["id"]: record["texts"] for record in journal.records}
    todo = [(ident, conv) for ident, conv in items if ident not in done]
    if done:
        log.info("%s: resuming, %d of %d items already done", desc, len(items) - len(todo), len(items))
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, unit="item") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            texts = supervisor.engine.chat([conv for _, conv in part], params)
            records = []
            for (ident, conv), completions in zip(part, texts):
                prefix = conv[-1]["content"] if conv[-1]["role"] == "assistant" else ""
                records.append({"id": ident, "texts": [prefix + text for text in completions]})
            journal.append(records)
            done.update((r["id"], r["texts"]) for r in records)
            bar.update(len(part))
    journal.close()
    return done


def drop_journal(out: str | Path) -> None:
    """Remove the completions journal of :func:`complete` once the stage's output is written."""
    Path(f"{out}.partial").unlink(missing_ok=True)


def run_functions(jobs: list[tuple[list[str], list[str]]], timeout: float, memory_mb: int,
                  workers: int | None = None) -> list[list[list[bool | None]]]:
    """:func:`execute` in a sandbox of its own, results only (``None`` = any error)."""
    if not any(funcs and texts for funcs, texts in jobs):
        return [[[None] * len(texts) for _ in funcs] for funcs, texts in jobs]
    with make_sandbox(timeout, memory_mb, workers) as box:
        results = execute(box, jobs, progress=True)
    return [[[r.result for r in row] for row in job] for job in results]


def _turns(template: str, **fields) -> list[dict]:
    from ifplay.generation.templates import template_turns

    return template_turns(template, **fields)


def _template(path: str, kind: str) -> str:
    from ifplay.generation.templates import load_template

    try:
        return load_template(path, kind)
    except ValueError as err:
        raise RecordError(str(err)) from None


# -- 1. instructions ----------------------------------------------------------------------------
def augment_instructions(seeds_path: str, out: str, counts_path: str, supervisor: Supervisor | None,
                         template: str | None, rounds: int, seeds_per_prompt: int, ask: int,
                         params: SamplingParams, seed: int = 0, seed_limit: int | None = None) -> dict:
    """D_ins = the first ``seed_limit`` seeds (all when None) + the supervisor's new instructions. Each of ``rounds`` prompts shows
    ``seeds_per_prompt`` random seeds and asks for ``ask`` more; ``params.n`` answers each."""
    path = Path(seeds_path)
    if not path.is_file():
        raise RecordError(f"{path}: no such seed instruction file")
    seeds = autoif.read_instruction_lines(path.read_text(encoding="utf-8"))[:seed_limit or None]
    if not seeds:
        raise RecordError(f"{path}: no instructions (one per line)")
    generated: list[str] = []
    if rounds and supervisor is not None:
        text = _template(template, "autoif_augment")
        rng = random.Random(seed)
        items = []
        for r in range(rounds):
            shown = rng.sample(seeds, min(seeds_per_prompt, len(seeds)))
            listing = "\n".join(f"{i}. {s}" for i, s in enumerate(shown, start=1))
            items.append((f"round{r}", _turns(text, seeds=listing, n=ask)))
        answers = complete(supervisor, items, params, out, desc="augment")
        for ident, _ in items:
            for answer in answers[ident]:
                generated += autoif.parse_numbered_lines(answer)[:ask]
    records, counts = autoif.merge_instructions(seeds, generated)
    write_jsonl(out, records)
    write_json(counts_path, counts)
    drop_journal(out)
    return counts


# -- 2. verification functions and cases -----------------------------------------------------------
def load_examples(path: str) -> list[dict]:
    """Worked verifier examples: JSONL of ``{"instruction", "func", "cases": [{"input", "output"}]}``."""
    examples = []
    for lineno, record in numbered_jsonl(path, required=("instruction", "func", "cases")):
        if not isinstance(record["func"], str) or "def evaluate" not in record["func"]:
            raise RecordError(f"{path}:{lineno}: 'func' must define evaluate(response)")
        examples.append(record)
    if not examples:
        raise RecordError(f"{path}: no examples")
    return examples


def generate_verifiers(instructions_path: str, out: str, counts_path: str, supervisor: Supervisor, template: str,
                       params: SamplingParams, examples_path: str | None = None, shots: int = 3) -> dict:
    """K (= ``params.n``) answers per instruction, each parsed into a function and test cases. With
    ``examples_path`` the template's ``{examples}`` shows the ``shots`` worked examples nearest to
    each instruction (:func:`ifplay.autoif.core.nearest_examples`)."""
    instructions = read_jsonl(instructions_path, required=("id", "instruction"))
    if examples_path:
        text = _template(template, "autoif_verifier_fewshot")
        pool = load_examples(examples_path)

        def shown(instruction: str) -> dict:
            chosen = autoif.nearest_examples(instruction, pool, shots)
            return {"examples": "\n\n".join(autoif.format_example(e) for e in chosen)}
    else:
        text = _template(template, "autoif_verifier")

        def shown(instruction: str) -> dict:
            return {}
    items = [(r["id"], _turns(text, instruction=r["instruction"], **shown(r["instruction"]))) for r in instructions]
    answers = complete(supervisor, items, params, out, desc="verifiers")
    counts = Counter(instructions=len(instructions))
    records = []
    for record in instructions:
        parsed = []
        for answer in answers[record["id"]]:
            result = autoif.parse_verifier_answer(answer)
            counts["answers"] += 1
            counts[f"parsed_{result.how}" if result.func else f"unparsed_{result.error}"] += 1
            parsed.append({"func": result.func, "cases": result.cases, "how": result.how,
                           "error": result.error, "text": answer})
        records.append({**record, "answers": parsed})
    counts["answers_with_function"] = sum(v for k, v in counts.items() if k.startswith("parsed_"))
    write_jsonl(out, records)
    write_json(counts_path, dict(counts))
    drop_journal(out)
    return dict(counts)


# -- 3. cross-validation --------------------------------------------------------------------------
def cross_validation(verifiers_path: str, out: str, counts_path: str, settings: autoif.CrossValidation,
                     timeout: float, memory_mb: int, workers: int | None = None) -> dict:
    """Every distinct function of an instruction on every distinct case of it, in the sandbox; then
    :func:`ifplay.autoif.core.cross_validate`. Kept instructions get ``eval_func`` ``[[code, accuracy]]``,
    ``cases`` ``[[input, expected]]`` and ``case_pass_rates``."""
    records = read_jsonl(verifiers_path, required=("id", "instruction", "answers"))
    jobs, cases_of = [], []
    for record in records:
        funcs = autoif.unique(a["func"] for a in record["answers"] if a["func"])
        cases = autoif.unique((c for a in record["answers"] for c in a["cases"]), key=lambda c: (c[0], c[1]))
        # a case whose input is given as both true and false by different answers is contradictory
        conflicted = {c[0] for c in cases if [c[0], not c[1]] in cases}
        cases = [c for c in cases if c[0] not in conflicted]
        jobs.append((funcs, [c[0] for c in cases]))
        cases_of.append(cases)
    results = run_functions(jobs, timeout, memory_mb, workers)
    counts = Counter(instructions=len(records))
    kept = []
    for record, (funcs, _), cases, matrix in zip(records, jobs, cases_of, results):
        counts["functions"] += len(funcs)
        counts["cases"] += len(cases)
        verdict = autoif.cross_validate(funcs, cases, matrix, settings)
        counts["functions_compiled"] += verdict["compiled"]
        if not verdict["keep"]:
            counts[f"dropped_{verdict['reason']}"] += 1
            continue
        counts["kept"] += 1
        counts["functions_kept"] += len(verdict["functions"])
        counts["cases_kept"] += len(verdict["cases"])
        kept.append({"id": record["id"], "instruction": record["instruction"], "origin": record.get("origin"),
                     "eval_func": verdict["functions"], "cases": verdict["cases"],
                     "case_pass_rates": verdict["case_pass_rates"]})
    counts["dropped"] = counts["instructions"] - counts["kept"]
    write_jsonl(out, kept)
    write_json(counts_path, dict(counts))
    return dict(counts)


# -- 4. back-translation and NLI ---------------------------------------------------------------------
def nli_with_classifier(model_path: str, pairs: list[tuple[str, str]], batch_size: int = 32) -> list[str]:
    """An NLI classifier (e.g. MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7, the paper's):
    premise/hypothesis pairs -> entailment/neutral/contradiction from the model's ``id2label``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()
    names = {i: str(label).lower() for i, label in model.config.id2label.items()}
    unknown = sorted(n for n in names.values() if autoif.parse_nli(n) is None)
    if unknown:
        raise RecordError(f"{model_path}: NLI classifier labels {unknown} are not entailment/neutral/contradiction")
    labels = []
    for start in range(0, len(pairs), batch_size):
        part = pairs[start:start + batch_size]
        batch = tokenizer([p for p, _ in part], [h for _, h in part], truncation=True, padding=True,
                          return_tensors="pt")
        with torch.no_grad():
            predicted = model(**batch).logits.argmax(-1).tolist()
        labels += [autoif.parse_nli(names[i]) for i in predicted]
    return labels


def back_translate(instructions_path: str, out: str, counts_path: str, supervisor: Supervisor, template: str,
                   functions: int, params: SamplingParams, nli: str, nli_template: str | None = None,
                   nli_model: str | None = None, nli_params: SamplingParams | None = None) -> dict:
    """The supervisor writes the instruction each of the first ``functions`` functions checks; an NLI
    judgement (premise = the instruction, hypothesis = the back-translation) by ``nli`` = "llm" (the
    supervisor with ``nli_template``) or "classifier" (``nli_model``) drops the instruction when any
    is a contradiction, as AutoIF's code does."""
    records = read_jsonl(instructions_path, required=("id", "instruction", "eval_func"))
    text = _template(template, "autoif_backtrans")
    translated = {r["id"]: autoif.functions_of(r)[:functions] for r in records}
    items = [(f"{ident}:{f}", _turns(text, function=code))
             for ident, codes in translated.items() for f, code in enumerate(codes)]
    answers = complete(supervisor, items, params, out + ".backtrans", desc="back-translate")
    pairs = [(r["instruction"], autoif.clean_back_translation(answers[f"{r['id']}:{f}"][0]))
             for r in records for f in range(len(translated[r["id"]]))]
    if nli == "classifier":
        if not nli_model:
            raise RecordError("autoif.back_translation.nli_model: the classifier NLI needs a model path")
        labels = nli_with_classifier(nli_model, pairs)
    else:
        judge = _template(nli_template, "autoif_nli")
        nli_items = [(str(i), _turns(judge, premise=p, hypothesis=h)) for i, (p, h) in enumerate(pairs)]
        verdicts = complete(supervisor, nli_items, nli_params or SamplingParams(max_new_tokens=8), out + ".nli",
                            desc="nli")
        labels = [autoif.parse_nli(verdicts[str(i)][0]) for i in range(len(pairs))]
    counts = Counter(instructions=len(records), back_translations=len(pairs))
    counts.update(f"nli_{label or 'unparsed'}" for label in labels)
    kept, position = [], 0
    for record in records:
        n = len(translated[record["id"]])
        mine = labels[position:position + n]
        translations = [pairs[position + i][1] for i in range(n)]
        position += n
        if "contradiction" in mine:
            counts["dropped_contradiction"] += 1
            continue
        kept.append({**record, "back_instruction": translations, "nli": mine})
    counts["kept"] = len(kept)
    write_jsonl(out, kept)
    write_json(counts_path, dict(counts))
    drop_journal(out + ".backtrans")
    drop_journal(out + ".nli")
    return dict(counts)


# -- 5. queries -----------------------------------------------------------------------------------
BUILTIN_QUERIES = Path(__file__).parent / "data" / "queries.jsonl"
BUILTIN_SEEDS = Path(__file__).parent / "data" / "seed_instructions.txt"


def load_queries(source: str) -> list[str]:
    """User queries from ``builtin:autoif`` (the repository's small set) or a JSONL / JSON file of
    ShareGPT-style records (see :func:`ifplay.autoif.core.query_text`)."""
    path = BUILTIN_QUERIES if source == "builtin:autoif" else Path(source)
    if not path.is_file():
        raise RecordError(f"autoif.queries.source: {source}: no such file")
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        numbered = list(enumerate(records if isinstance(records, list) else [], start=1))
    else:
        numbered = list(numbered_jsonl(path))
    queries = []
    for where, record in numbered:
        text = autoif.query_text(record) if isinstance(record, dict) else None
        if text is None:
            raise RecordError(f"{path}:{where}: no query (fields query, prompt, conversations or messages)")
        queries.append(text)
    return queries


def _back_translation(record: dict) -> dict:
    """``{"back_instruction": [...]}`` when the record carries the back-translations of its functions
    (the back-translation stage ran), else ``{}``: what each function checks, in words."""
    return {"back_instruction": record["back_instruction"]} if record.get("back_instruction") else {}


def make_queries(instructions_path: str, source: str, out: str, counts_path: str, template: str,
                 per_instruction: int, min_chars: int, max_chars: int, seed: int = 0) -> dict:
    """Each instruction with ``per_instruction`` random user queries, in AutoIF's prompt format."""
    records = read_jsonl(instructions_path, required=("id", "instruction", "eval_func"))
    pool = load_queries(source)
    text = _template(template, "autoif_query")
    rng = random.Random(seed)
    queries = []
    for record in records:
        for j, query in enumerate(autoif.select_queries(pool, per_instruction, rng, min_chars, max_chars)):
            prompt = _turns(text, instruction=record["instruction"], query=query)[0]["content"].rstrip("\n")
            queries.append({"key": f"{record['id']}-q{j}", "instruction": record["instruction"], "query": query,
                            "prompt": prompt, "eval_func": record["eval_func"], "cases": record["cases"],
                            "case_pass_rates": record.get("case_pass_rates"),
                            **_back_translation(record)})
    counts = {"instructions": len(records), "query_pool": len(pool), "queries": len(queries)}
    write_jsonl(out, queries)
    write_json(counts_path, counts)
    return counts


def sample_responses(queries_path: str, out: str, supervisor: Supervisor, params: SamplingParams) -> dict:
    """K responses per query (``gpt-answer``, AutoIF's field name)."""
    queries = read_jsonl(queries_path, required=("key", "prompt"))
    items = [(q["key"], [{"role": "user", "content": q["prompt"]}]) for q in queries]
    answers = complete(supervisor, items, params, out, desc="responses")
    write_jsonl(out, ({**q, "gpt-answer": answers[q["key"]]} for q in queries))
    drop_journal(out)
    return {"queries": len(queries), "responses": sum(len(v) for v in answers.values())}


# -- 6. execution-feedback rejection sampling ---------------------------------------------------------
def verify_responses(in_path: str, out: str, counts_path: str, threshold: float, timeout: float,
                     memory_mb: int, workers: int | None = None) -> dict:
    """Every response of every query against the query's functions (AutoIF's ``query_rft.jsonl``
    format: ``eval_func``, ``gpt-answer``). A response is kept when its accuracy is above
    ``threshold`` (paper 0.5, code 0); a query when it has a function and a kept response.
    Every query is written (DPO needs the rejected responses) with ``accuracies`` and ``kept``."""
    records = []
    for lineno, record in numbered_jsonl(in_path, required=("eval_func",)):
        responses = record.get("gpt-answer", record.get("responses"))
        if isinstance(responses, str):  # AutoIF's DPO files hold the list as a JSON string
            try:
                responses = json.loads(responses)
            except json.JSONDecodeError:
                pass
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise RecordError(f"{in_path}:{lineno}: 'gpt-answer' must be a list of response strings")
        records.append((record, responses))
    jobs = [(autoif.functions_of(record), responses) for record, responses in records]
    results = run_functions(jobs, timeout, memory_mb, workers)
    counts = Counter(queries=len(records))
    verified = []
    for (record, responses), (funcs, _), matrix in zip(records, jobs, results):
        counts["responses"] += len(responses)
        accuracies = [autoif.accuracy([matrix[f][t] for f in range(len(funcs))]) for t in range(len(responses))]
        kept = [t for t, acc in enumerate(accuracies) if funcs and acc > threshold]
        counts["responses_kept"] += len(kept)
        if not funcs:
            counts["dropped_no_function"] += 1
        elif not kept:
            counts["dropped_no_response"] += 1
        else:
            counts["queries_kept"] += 1
        verified.append({**record, "gpt-answer": responses, "accuracies": [round(a, 4) for a in accuracies],
                         "kept": kept})
    counts["responses_dropped"] = counts["responses"] - counts["responses_kept"]
    write_jsonl(out, verified)
    write_json(counts_path, dict(counts))
    return dict(counts)


# -- 7. quality scoring ------------------------------------------------------------------------------
def _query_fields(record: dict) -> tuple[str, str]:
    instruction = record.get("instruction", "")
    query = record.get("query")
    if query is None:  # AutoIF's files hold the query only inside the prompt
        query = record["prompt"].split("[Query]", 1)[-1].strip() if "[Query]" in record.get("prompt", "") \
            else record.get("prompt", "")
    return instruction, query


def score_responses(verified_path: str, out: str, counts_path: str, supervisor: Supervisor, template: str,
                    min_score: float, params: SamplingParams) -> dict:
    """The supervisor scores each kept response 0-10 (``Score: N``, mean over ``params.n`` samples);
    responses scoring at least ``min_score`` (paper 8) form D_train."""
    records = read_jsonl(verified_path, required=("eval_func", "gpt-answer", "kept"))
    text = _template(template, "autoif_score")
    items, rows = [], []
    for i, record in enumerate(records):
        instruction, query = _query_fields(record)
        for t in record["kept"]:
            ident = f"{record.get('key', i)}:{t}"
            response = record["gpt-answer"][t]
            items.append((ident, _turns(text, instruction=instruction, query=query, response=response)))
            rows.append({"id": ident, "key": record.get("key", str(i)), "instruction": instruction, "query": query,
                         "response": response, "accuracy": record["accuracies"][t]})
    answers = complete(supervisor, items, params, out, desc="score")
    counts = Counter(responses=len(rows))
    for row in rows:
        scores = [s for s in (autoif.parse_score(a) for a in answers[row["id"]]) if s is not None]
        row["score"] = sum(scores) / len(scores) if scores else None
        row["kept"] = row["score"] is not None and row["score"] >= min_score
        counts["unparsed" if row["score"] is None else "kept" if row["kept"] else "dropped_low_score"] += 1
    counts["queries_kept"] = len({row["key"] for row in rows if row["kept"]})
    write_jsonl(out, rows)
    write_json(counts_path, dict(counts))
    drop_journal(out)
    return dict(counts)


# -- 8. SFT data, offline DPO pairs, the online-DPO query set -------------------------------------------
def build_data(verified_path: str, scored_path: str | None, sft_out: str, pairs_out: str, queries_out: str,
               counts_path: str, chosen_min: float, rejected_max: float, per_side: int, instruction_level: bool,
               seed: int = 0) -> dict:
    """D_train as SFT conversations; offline DPO pairs at query level (for every verified query:
    responses with accuracy >= ``chosen_min`` over those <= ``rejected_max``) and, with
    ``instruction_level``, at instruction level (for every cross-validated instruction: test cases
    most functions accept over cases none accepts, the instruction as prompt); and the D_train
    queries with their functions for online DPO. Without ``scored_path`` (quality filter off) every
    execution-verified response is in D_train."""
    verified = read_jsonl(verified_path, required=("eval_func", "gpt-answer", "accuracies", "kept"))
    if scored_path:
        keep = {(row["key"], row["response"]) for row in read_jsonl(scored_path, required=("key", "response", "kept"))
                if row["kept"]}
    else:
        keep = {(r.get("key", str(i)), r["gpt-answer"][t]) for i, r in enumerate(verified) for t in r["kept"]}
    rng = random.Random(seed)
    sft, pairs, queries = [], [], []
    counts = Counter()
    instructions_seen: set[str] = set()
    for i, record in enumerate(verified):
        key = record.get("key", str(i))
        instruction, query = _query_fields(record)
        user = autoif.train_prompt(query, instruction)
        if instruction_level and instruction not in instructions_seen and record.get("case_pass_rates"):
            instructions_seen.add(instruction)  # every cross-validated instruction, once
            cases = [c[0] for c in record["cases"]]
            wins = [c for c, rate in zip(cases, record["case_pass_rates"]) if rate > 0.5]
            losses = [c for c, rate in zip(cases, record["case_pass_rates"]) if rate == 0]
            for c, r in autoif.pair_up(wins, losses, rng, per_side):
                pairs.append(autoif.dpo_record(instruction, c, r, key=f"{key}:cases", level="instruction"))
                counts["pairs_instruction_level"] += 1
        # query level: every verified query with a response most functions accept and one none accepts
        chosen = [r for r, a in zip(record["gpt-answer"], record["accuracies"]) if a >= chosen_min]
        rejected = [r for r, a in zip(record["gpt-answer"], record["accuracies"]) if a <= rejected_max]
        for c, r in autoif.pair_up(chosen, rejected, rng, per_side):
            pairs.append(autoif.dpo_record(user, c, r, key=key, level="query"))
            counts["pairs_query_level"] += 1
        good = [r for t, r in enumerate(record["gpt-answer"]) if (key, r) in keep]
        if not good:
            continue
        counts["queries"] += 1  # in D_train
        for response in autoif.unique(good):
            sft.append({"messages": autoif.conversation(user, response), "key": key})
        queries.append({"key": key, "prompt": user, "instruction": instruction, "query": query,
                        "eval_func": record["eval_func"], **_back_translation(record)})
    counts.update(sft_examples=len(sft), dpo_pairs=len(pairs), online_queries=len(queries))
    write_jsonl(sft_out, sft)
    write_jsonl(pairs_out, pairs)
    write_jsonl(queries_out, queries)
    write_json(counts_path, dict(counts))
    return dict(counts)


def spar_prompts(queries_path: str, out: str, limit: int | None = None) -> dict:
    """SPaR's prompt pool from AutoIF's queries (``autoif-data``'s queries.jsonl): the first ``limit``
    (``None`` or 0: all) as prompt records ``{key, prompt, instruction, eval_func[, back_instruction]}``,
    which the verifier judge checks by running their functions."""
    records = []
    for lineno, query in numbered_jsonl(queries_path, required=("key", "prompt", "eval_func")):
        if limit and len(records) >= limit:
            break
        if not autoif.functions_of(query):
            raise RecordError(f"{queries_path}:{lineno}: query {query['key']!r} has no verification function")
        records.append({"key": query["key"], "prompt": query["prompt"], "instruction": query.get("instruction", ""),
                        "eval_func": query["eval_func"], **_back_translation(query)})
    if not records:
        raise RecordError(f"{queries_path}: no AutoIF queries (the AutoIF data stages kept none)")
    write_jsonl(out, records)
    return {"prompts": len(records), "with_back_translation": sum("back_instruction" in r for r in records)}


def online_pairs(queries_path: str, samples_path: str, out: str, counts_path: str, chosen_min: float,
                 rejected_max: float, per_side: int, timeout: float, memory_mb: int, seed: int = 0,
                 workers: int | None = None) -> dict:
    """Online DPO: the policy's own samples (``ifplay generate`` output) verified by each query's
    functions; pairs of accuracy >= ``chosen_min`` over accuracy <= ``rejected_max``."""
    queries = {q["key"]: q for q in read_jsonl(queries_path, required=("key", "prompt", "eval_func"))}
    samples: dict[str, list[str]] = {}
    for lineno, row in numbered_jsonl(samples_path, required=("key", "response")):
        if row["key"] not in queries:
            raise RecordError(f"{samples_path}:{lineno}: key {row['key']!r} is not in {queries_path}")
        samples.setdefault(row["key"], []).append(row["response"])
    keys = [k for k in queries if k in samples]
    results = run_functions([(autoif.functions_of(queries[k]), samples[k]) for k in keys], timeout, memory_mb, workers)
    rng = random.Random(seed)
    counts = Counter(queries=len(keys), samples=sum(len(samples[k]) for k in keys))
    pairs = []
    for key, matrix in zip(keys, results):
        accs = [autoif.accuracy([row[t] for row in matrix]) for t in range(len(samples[key]))]
        counts["samples_positive"] += sum(a >= chosen_min for a in accs)
        counts["samples_negative"] += sum(a <= rejected_max for a in accs)
        chosen = [s for s, a in zip(samples[key], accs) if a >= chosen_min]
        rejected = [s for s, a in zip(samples[key], accs) if a <= rejected_max]
        made = autoif.pair_up(chosen, rejected, rng, per_side)
        counts["queries_paired"] += bool(made)
        pairs += [autoif.dpo_record(queries[key]["prompt"], c, r, key=key, level="online") for c, r in made]
    counts["dpo_pairs"] = len(pairs)
    write_jsonl(out, pairs)
    write_json(counts_path, dict(counts))
    return dict(counts)


# -- stage settings ------------------------------------------------------------------------------------
# Each command takes its stage's settings as one --settings JSON (ifplay.core.settings): the config
# slice autoif/plan.py hashes into the stage key and the runtime settings (paths, batching), with
# exactly the keys the plan gives the stage. No defaults here: the one set is config/default.yaml.
NLI_MAX_NEW_TOKENS = 8  # the supervisor's NLI answer is one label word (greedy)


@dataclass(frozen=True)
class Seeds:
    sha256: str  # the seed file's content (identity; its path is runtime.seeds)
    limit: int | None  # autoif.seed_limit: the first N seeds; null = all


@dataclass(frozen=True)
class Augment:
    """``autoif.augment``: the supervisor's self-instruct prompts."""

    enabled: bool
    rounds: int
    seeds_per_prompt: int
    ask: int
    template: dict  # {"sha256": ...}: the template's identity (its path is runtime.template)
    temperature: float
    top_p: float
    max_new_tokens: int

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              seed=seed)


@dataclass(frozen=True)
class AugmentedInstructionsConfig:
    seeds: Seeds
    augment: Augment
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class SeedInstructionsConfig:
    """``autoif.augment.enabled: false``: the seeds only, no model."""

    seeds: Seeds
    augment: Literal[None]


@dataclass(frozen=True)
class SeedsRuntime:
    seeds: str  # the seed instruction file (builtin:autoif's path or autoif.seeds)


@dataclass(frozen=True)
class AugmentRuntime(BackendRuntime):
    seeds: str  # the seed instruction file
    template: str  # the augmentation prompt template


def _agree(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(f"settings: {message}")


@dataclass(frozen=True)
class InstructionsSettings:
    """``ifplay autoif-instructions --settings``: the seeds, and the augmentation with its runtime."""

    config: AugmentedInstructionsConfig | SeedInstructionsConfig
    runtime: AugmentRuntime | SeedsRuntime

    def __post_init__(self):
        _agree((self.config.augment is None) == isinstance(self.runtime, SeedsRuntime),
               "config.augment and runtime disagree (augmentation needs the supervisor's runtime: "
               "template, batch_size, max_prompt_tokens, backend_options; seeds only take runtime.seeds)")


@dataclass(frozen=True)
class Verifiers:
    """``autoif.verifiers``: K answers per instruction, each a function and test cases."""

    k: int
    template: dict  # {"sha256": ...}: the template's identity (its path is runtime.template)
    examples: dict | None  # {"sha256": ...} of the worked examples (runtime.examples); null = zero-shot
    shots: int
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: list[str]

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              n=self.k, seed=seed, stop=tuple(self.stop))


@dataclass(frozen=True)
class VerifiersConfig:
    verifiers: Verifiers
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class VerifiersRuntime(BackendRuntime):
    template: str  # the verifier prompt template
    examples: str | None  # the worked examples JSONL (null: zero-shot)


@dataclass(frozen=True)
class VerifiersSettings:
    """``ifplay autoif-verifiers --settings``."""

    config: VerifiersConfig
    runtime: VerifiersRuntime

    def __post_init__(self):
        _agree((self.config.verifiers.examples is None) == (self.runtime.examples is None),
               "config.verifiers.examples and runtime.examples disagree (both set or both null)")


@dataclass(frozen=True)
class CrossValidationFilter:
    """``autoif.cross_validation`` (:class:`ifplay.autoif.core.CrossValidation`)."""

    enabled: bool
    case_agreement: float
    function_accuracy: float
    min_functions: int
    min_cases: int

    def filter(self) -> autoif.CrossValidation:
        return autoif.CrossValidation(self.enabled, self.case_agreement, self.function_accuracy,
                                      self.min_functions, self.min_cases)


@dataclass(frozen=True)
class CrossvalConfig:
    cross_validation: CrossValidationFilter
    sandbox: SandboxLimits


@dataclass(frozen=True)
class CrossvalSettings:
    """``ifplay autoif-crossval --settings``."""

    config: CrossvalConfig
    runtime: NoRuntime


@dataclass(frozen=True)
class LlmBackTranslation:
    """``autoif.back_translation`` with ``nli: llm``: the supervisor judges entailment."""

    enabled: bool
    functions: int
    template: dict  # {"sha256": ...}: the template's identity (its path is runtime.template)
    max_new_tokens: int
    nli: Literal["llm"]
    nli_template: dict  # {"sha256": ...}: the NLI template's identity (runtime.nli_template)


@dataclass(frozen=True)
class ClassifierBackTranslation:
    """``autoif.back_translation`` with ``nli: classifier``: an NLI classifier judges entailment."""

    enabled: bool
    functions: int
    template: dict  # {"sha256": ...}: the template's identity (its path is runtime.template)
    max_new_tokens: int
    nli: Literal["classifier"]
    nli_model: dict  # {"files": {name: sha256}}: the classifier directory's identity (runtime.nli_model)


@dataclass(frozen=True)
class BacktransConfig:
    back_translation: LlmBackTranslation | ClassifierBackTranslation
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class LlmNliRuntime(BackendRuntime):
    template: str  # the back-translation prompt template
    nli_template: str  # the supervisor's NLI prompt template


@dataclass(frozen=True)
class ClassifierNliRuntime(BackendRuntime):
    template: str  # the back-translation prompt template
    nli_model: str  # the NLI classifier's directory


@dataclass(frozen=True)
class BacktransSettings:
    """``ifplay autoif-backtrans --settings``."""

    config: BacktransConfig
    runtime: LlmNliRuntime | ClassifierNliRuntime

    def __post_init__(self):
        _agree(isinstance(self.runtime, LlmNliRuntime) == (self.config.back_translation.nli == "llm"),
               "config.back_translation.nli and runtime disagree (llm takes runtime.nli_template, "
               "classifier runtime.nli_model)")


@dataclass(frozen=True)
class QueryPairing:
    """``autoif.queries``: user queries paired with each instruction."""

    source: str | dict  # builtin:autoif, or {"sha256": ...}: the query file's identity (runtime.source)
    per_instruction: int
    min_chars: int
    max_chars: int
    template: dict  # {"sha256": ...}: the template's identity (its path is runtime.template)


@dataclass(frozen=True)
class QueriesConfig:
    queries: QueryPairing
    seed: int


@dataclass(frozen=True)
class QueriesRuntime:
    source: str  # builtin:autoif or the query file (JSONL/JSON, ShareGPT-style)
    template: str  # the query prompt template


@dataclass(frozen=True)
class QueriesSettings:
    """``ifplay autoif-queries --settings``."""

    config: QueriesConfig
    runtime: QueriesRuntime


@dataclass(frozen=True)
class Responses:
    """``autoif.responses``: the supervisor's K responses per query."""

    k: int
    temperature: float
    top_p: float
    max_new_tokens: int

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              n=self.k, seed=seed)


@dataclass(frozen=True)
class ResponsesConfig:
    responses: Responses
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class ResponsesSettings:
    """``ifplay autoif-responses --settings``."""

    config: ResponsesConfig
    runtime: BackendRuntime


@dataclass(frozen=True)
class Rejection:
    threshold: float  # keep a response when more than this share of its functions accept it


@dataclass(frozen=True)
class VerifiedConfig:
    rejection: Rejection
    sandbox: SandboxLimits


@dataclass(frozen=True)
class VerifiedSettings:
    """``ifplay autoif-verified --settings``."""

    config: VerifiedConfig
    runtime: NoRuntime


@dataclass(frozen=True)
class Quality:
    """``autoif.quality``: the supervisor's 0-10 scores of the kept responses."""

    enabled: bool
    min_score: float
    samples: int
    template: dict  # {"sha256": ...}: the template's identity (its path is runtime.template)
    temperature: float
    max_new_tokens: int

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, max_new_tokens=self.max_new_tokens, n=self.samples,
                              seed=seed)


@dataclass(frozen=True)
class ScoredConfig:
    quality: Quality
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class ScoredRuntime(BackendRuntime):
    template: str  # the scoring prompt template


@dataclass(frozen=True)
class ScoredSettings:
    """``ifplay autoif-scored --settings``."""

    config: ScoredConfig
    runtime: ScoredRuntime


@dataclass(frozen=True)
class Pairs:
    """``autoif.pairs``: DPO pairs by verifier accuracy."""

    chosen_min: float
    rejected_max: float
    per_side: int
    instruction_level: bool


@dataclass(frozen=True)
class DataConfig:
    pairs: Pairs
    seed: int


@dataclass(frozen=True)
class DataSettings:
    """``ifplay autoif-data --settings``."""

    config: DataConfig
    runtime: NoRuntime


@dataclass(frozen=True)
class OnlinePairsConfig:
    pairs: Pairs  # (instruction_level plays no part online)
    sandbox: SandboxLimits
    seed: int


@dataclass(frozen=True)
class OnlinePairsSettings:
    """``ifplay autoif-online-pairs --settings``."""

    config: OnlinePairsConfig
    runtime: NoRuntime


@dataclass(frozen=True)
class PromptPoolConfig:
    limit: int | None  # spar.prompt_limit: the first N queries; null = all


@dataclass(frozen=True)
class PromptPoolSettings:
    """``ifplay autoif-prompts --settings``."""

    config: PromptPoolConfig
    runtime: NoRuntime


# -- command line ------------------------------------------------------------------------------------
def _supervisor(args) -> Supervisor:
    if not args.model:
        raise SettingsError("the supervisor's calls (settings.config.augment) need --model")
    config, runtime = args.settings.config, args.settings.runtime
    return Supervisor(args.model, config.backend, runtime.batch_size, runtime.max_prompt_tokens, args.threads,
                      runtime.backend_options)


def _with_supervisor(args, run: Callable[[Supervisor], dict]) -> None:
    supervisor = _supervisor(args)
    try:
        print(json.dumps(run(supervisor)))
    finally:
        supervisor.close()


def _cmd_instructions(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    augment = config.augment
    if augment is None:  # the seeds only
        counts = augment_instructions(runtime.seeds, args.out, args.counts, None, None, 0, 0, 0, SamplingParams(),
                                      seed_limit=config.seeds.limit)
        print(json.dumps(counts))
        return
    _with_supervisor(args, lambda s: augment_instructions(
        runtime.seeds, args.out, args.counts, s, runtime.template, augment.rounds, augment.seeds_per_prompt,
        augment.ask, augment.params(config.seed), config.seed, config.seeds.limit))


def _cmd_verifiers(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    _with_supervisor(args, lambda s: generate_verifiers(args.instructions, args.out, args.counts, s, runtime.template,
                                                        config.verifiers.params(config.seed), runtime.examples,
                                                        config.verifiers.shots))


def _cmd_crossval(args) -> None:
    config = args.settings.config
    print(json.dumps(cross_validation(args.verifiers, args.out, args.counts, config.cross_validation.filter(),
                                      config.sandbox.timeout, config.sandbox.memory_mb, args.threads)))


def _cmd_backtranslate(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    bt = config.back_translation
    params = SamplingParams(temperature=0.0, max_new_tokens=bt.max_new_tokens, seed=config.seed)  # greedy
    nli_params = SamplingParams(temperature=0.0, max_new_tokens=NLI_MAX_NEW_TOKENS, seed=config.seed)
    _with_supervisor(args, lambda s: back_translate(
        args.instructions, args.out, args.counts, s, runtime.template, bt.functions, params, bt.nli,
        getattr(runtime, "nli_template", None), getattr(runtime, "nli_model", None), nli_params))


def _cmd_queries(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    queries = config.queries
    print(json.dumps(make_queries(args.instructions, runtime.source, args.out, args.counts, runtime.template,
                                  queries.per_instruction, queries.min_chars, queries.max_chars, config.seed)))


def _cmd_responses(args) -> None:
    config = args.settings.config
    _with_supervisor(args, lambda s: sample_responses(args.queries, args.out, s, config.responses.params(config.seed)))


def _cmd_verify_responses(args) -> None:
    config = args.settings.config
    print(json.dumps(verify_responses(args.input, args.out, args.counts, config.rejection.threshold,
                                      config.sandbox.timeout, config.sandbox.memory_mb, args.threads)))


def _cmd_score(args) -> None:
    config, runtime = args.settings.config, args.settings.runtime
    _with_supervisor(args, lambda s: score_responses(args.verified, args.out, args.counts, s, runtime.template,
                                                     config.quality.min_score, config.quality.params(config.seed)))


def _cmd_data(args) -> None:
    config = args.settings.config
    pairs = config.pairs
    print(json.dumps(build_data(args.verified, args.scored, args.sft, args.pairs, args.queries, args.counts,
                                pairs.chosen_min, pairs.rejected_max, pairs.per_side, pairs.instruction_level,
                                config.seed)))


def _cmd_prompts(args) -> None:
    print(json.dumps(spar_prompts(args.queries, args.out, args.settings.config.limit)))


def _cmd_online_pairs(args) -> None:
    config = args.settings.config
    pairs = config.pairs
    print(json.dumps(online_pairs(args.queries, args.samples, args.out, args.counts, pairs.chosen_min,
                                  pairs.rejected_max, pairs.per_side, config.sandbox.timeout,
                                  config.sandbox.memory_mb, config.seed, args.threads)))


def add_cli(sub) -> None:
    """Register the ``autoif-*`` subcommands: files as flags, the stage's settings as ``--settings``."""
    from ifplay.core import settings

    def model(p, required=True):
        p.add_argument("--model", required=required,
                       help="supervisor checkpoint directory" + ("" if required else " (with augmentation)"))

    def threads(p, what="CPU threads of the supervisor's backend"):
        p.add_argument("--threads", type=int, required=True, help=f"{what} (the rule's threads)")

    def sandbox_threads(p):
        threads(p, "sandbox worker processes")

    def files(p, *names):
        for name in names:
            p.add_argument(f"--{name}", required=True)
        p.add_argument("--counts", required=True, help="counts JSON: kept and dropped")

    p = sub.add_parser("autoif-instructions", help="AutoIF: seed instructions + supervisor augmentations")
    model(p, required=False)
    files(p, "out")
    settings.add_argument(p, InstructionsSettings)
    threads(p)
    p.set_defaults(func=_cmd_instructions)

    p = sub.add_parser("autoif-verifiers", help="AutoIF: K verification functions + test cases per instruction")
    model(p)
    p.add_argument("--instructions", required=True)
    files(p, "out")
    settings.add_argument(p, VerifiersSettings)
    threads(p)
    p.set_defaults(func=_cmd_verifiers)

    p = sub.add_parser("autoif-crossval", help="AutoIF: cross-validate functions and test cases (sandbox)")
    p.add_argument("--verifiers", required=True)
    files(p, "out")
    settings.add_argument(p, CrossvalSettings)
    sandbox_threads(p)
    p.set_defaults(func=_cmd_crossval)

    p = sub.add_parser("autoif-backtrans", help="AutoIF: back-translate functions, drop NLI contradictions")
    model(p)
    p.add_argument("--instructions", required=True)
    files(p, "out")
    settings.add_argument(p, BacktransSettings)
    threads(p)
    p.set_defaults(func=_cmd_backtranslate)

    p = sub.add_parser("autoif-queries", help="AutoIF: pair each instruction with user queries")
    p.add_argument("--instructions", required=True)
    files(p, "out")
    settings.add_argument(p, QueriesSettings)
    p.set_defaults(func=_cmd_queries)

    p = sub.add_parser("autoif-responses", help="AutoIF: K supervisor responses per query (resumable)")
    model(p)
    p.add_argument("--queries", required=True)
    p.add_argument("--out", required=True)
    settings.add_argument(p, ResponsesSettings)
    threads(p)
    p.set_defaults(func=_cmd_responses)

    p = sub.add_parser("autoif-verified",
                       help="AutoIF: execution-feedback rejection sampling of query_rft-style JSONL (sandbox)")
    p.add_argument("--input", required=True, help="JSONL with eval_func and gpt-answer (AutoIF's query_rft format)")
    files(p, "out")
    settings.add_argument(p, VerifiedSettings)
    sandbox_threads(p)
    p.set_defaults(func=_cmd_verify_responses)

    p = sub.add_parser("autoif-scored", help="AutoIF: supervisor quality scores, keep >= min score")
    model(p)
    p.add_argument("--verified", required=True)
    files(p, "out")
    settings.add_argument(p, ScoredSettings)
    threads(p)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("autoif-data", help="AutoIF: SFT data, offline DPO pairs, online-DPO queries")
    p.add_argument("--verified", required=True)
    p.add_argument("--scored", default=None, help="quality scores (omit when the quality filter is off)")
    files(p, "sft", "pairs", "queries")
    settings.add_argument(p, DataSettings)
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("autoif-prompts", help="AutoIF's queries (with their functions) as SPaR's prompt pool")
    p.add_argument("--queries", required=True, help="autoif-data's queries.jsonl")
    p.add_argument("--out", required=True, help="prompt records JSONL")
    settings.add_argument(p, PromptPoolSettings)
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("autoif-online-pairs", help="AutoIF: online DPO pairs from the policy's samples (sandbox)")
    p.add_argument("--queries", required=True)
    p.add_argument("--samples", required=True, help="ifplay generate output: key, response")
    files(p, "out")
    settings.add_argument(p, OnlinePairsSettings)
    sandbox_threads(p)
    p.set_defaults(func=_cmd_online_pairs)
