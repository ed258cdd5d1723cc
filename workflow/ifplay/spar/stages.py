"""SPaR's data stages: voted judging of samples, negative mining, tree search, training data.

Iteration t of SPaR (arXiv 2412.11605) in files:

1. the actor's samples (``generation``: k per prompt) -> :func:`judge_responses` -> judged.jsonl
2. :func:`mine_negatives` picks failing responses as roots -> :func:`search_negatives` -> trees.jsonl
3. :func:`build_training_data` -> ``dpo_pairs.jsonl`` (TRL preference format: chosen = accepted
   refinement, rejected = its original negative) and ``rft.jsonl`` (TRL conversational format:
   refinement demonstrations, tree-node judgements, voted sample judgements), with counts.

:func:`independent_pairs` and :func:`pair_statistics` make the paper's interference check: pairs
built the conventional way (best vs worst of k independent samples) differ from each other far
more than a refinement differs from its original.
"""

from __future__ import annotations

import logging
import random
import statistics
from dataclasses import dataclass
from typing import Literal

from tqdm.auto import tqdm

from ifplay.core import settings
from ifplay.core.records import Checkpoint, read_jsonl
from ifplay.core.settings import SettingsError
from ifplay.generation.backends import Backend, BackendChoice, BackendRuntime
from ifplay.generation.templates import template_turns
from ifplay.judging.judge import Judge, VotedJudgement, make_judge
from ifplay.sandbox.runner import SandboxLimits
from ifplay.spar.tree_search import SearchConfig, SearchResult, TreeSearch, refine_turn

log = logging.getLogger(__name__)

JUDGED_FIELDS = ("key", "sample", "prompt", "response", "label", "value", "votes", "n_invalid", "tie", "critique",
                 "critiques")


def response_id(record: dict) -> str:
    return f"{record['key']}/{record.get('sample', 0)}"


# -- 1. voted judgements ---------------------------------------------------------------------
def judge_responses(prompts_path: str, responses_path: str, out: str, judge: Judge, chunk: int = 64,
                    finish: bool = True) -> list[dict]:
    """Judge every response of ``responses_path`` (key, sample, prompt, response); resumable.

    Output lines: the response fields plus the voted judgement (label 1/0/None, value, votes,
    n_invalid, tie, the kept critique and all critiques). ``finish=False`` leaves them in the
    journal (a stage that goes on asking the same model writes every output at its end).
    """
    prompts = {p["key"]: p for p in read_jsonl(prompts_path, required=("key", "prompt"))}
    responses = read_jsonl(responses_path, required=("key", "prompt", "response"))
    for record in responses:
        if record["key"] not in prompts:
            raise ValueError(f"{responses_path}: response to unknown prompt key {record['key']!r}")
    journal = Checkpoint(out, id_field="id")
    todo = [r for r in responses if response_id(r) not in journal.done]
    with tqdm(total=len(responses), initial=len(responses) - len(todo), desc="judge", unit="response") as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            judgements = judge.judge([(prompts[r["key"]], r["response"]) for r in part])
            journal.append({"id": response_id(r), "key": r["key"], "sample": r.get("sample", 0), "prompt": r["prompt"],
                            "response": r["response"], **j.to_json()} for r, j in zip(part, judgements))
            bar.update(len(part))
    order = [response_id(r) for r in responses]
    if not finish:
        journal.close()
        return journal.ordered(order)
    return journal.finish(order=order)


def judgement_counts(judged: list[dict]) -> dict:
    votes = [v for r in judged for v in r["votes"]]
    return {
        "prompts": len({r["key"] for r in judged}),
        "responses": len(judged),
        "votes": len(votes),
        "invalid_votes": sum(v is None for v in votes),
        "labelled_yes": sum(r["label"] == 1 for r in judged),
        "labelled_no": sum(r["label"] == 0 for r in judged),
        "unlabelled": sum(r["label"] is None for r in judged),
        "ties": sum(bool(r["tie"]) for r in judged),
        "tie_resampled": sum(r.get("resamples", 0) > 0 for r in judged),
    }


# -- 2. negatives and tree search --------------------------------------------------------------
def mine_negatives(judged: list[dict], prompts: dict, per_prompt: int = 1, seed: int = 0) -> list[dict]:
    """Tree roots: up to ``per_prompt`` responses labelled No, drawn at random, for every prompt
    that has at least one (SPaR: one random negative per prompt)."""
    by_prompt: dict = {}
    for record in judged:
        if record["label"] == 0:
            by_prompt.setdefault(record["key"], []).append(record)
    roots = []
    for key, negatives in by_prompt.items():
        rng = random.Random(f"{seed}:{key}")
        roots += [tree_root(record, prompts[key], response_id(record))
                  for record in rng.sample(negatives, min(per_prompt, len(negatives)))]
    return roots


def tree_root(record: dict, prompt: dict, key) -> dict:
    """A tree-search root from a judged response (``judge_responses`` output) and its prompt record."""
    judgement = VotedJudgement.from_record(record)
    return {"key": key, "prompt": prompt, "response": record["response"], "critique": record["critique"] or "",
            "judgement": judgement}


def search_negatives(search: TreeSearch, roots: list[dict], out: str) -> list[SearchResult]:
    """Run the (batched, resumable) tree search; ``out`` receives one tree per line."""
    return search.run(roots, journal_path=out)


def search_counts(trees: list[dict]) -> dict:
    solved = sum(t["success"] for t in trees)
    return {
        "trees": len(trees),
        "solved": solved,
        "success_rate": round(solved / len(trees), 4) if trees else 0.0,
        "nodes_expanded": sum(t["nodes_expanded"] for t in trees),
        "nodes_generated": sum(len(t["nodes"]) - 1 for t in trees),
        "invalid_refinements": sum(t["invalid_refinements"] for t in trees),
    }


# -- 3. training data --------------------------------------------------------------------------
@dataclass(frozen=True)
class RFTMix:
    """Caps on each kind of refiner training example (``spar.rft_mix``; SPaR's official numbers:
    4000, 1500, 1000, 2500, 500, at most 9500)."""

    refinements: int
    tree_judgements_positive: int  # tree nodes with 0.5 < V < 1
    tree_judgements_negative: int  # tree nodes with 0 < V < 0.5
    sample_judgements_yes: int  # voted sample judgements, majority Yes with a dissenting vote
    sample_judgements_no: int
    total: int


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _disputed(votes: list) -> bool:
    """Non-unanimous, or a single-vote judge (the verifier) where dispute cannot be seen."""
    valid = [v for v in votes if v is not None]
    return len(valid) == 1 or (0 in valid and 1 in valid)


def judgement_example(judge_template: str, prompt: str, response: str, critique: str, kind: str) -> dict:
    """A refiner training dialogue: the judge prompt, then the judgement (which already starts with
    any assistant prefill of the template)."""
    user = template_turns(judge_template, prompt=prompt, response=response)[0]
    return {"messages": [user, _assistant(critique)], "kind": kind}


def refinement_example(refine_template: str, prompt: str, response: str, critique: str, refinement: str) -> dict:
    """A refiner training dialogue: the refine prompt (instruction, response, critique), then the
    refiner's whole output."""
    return {"messages": [refine_turn(refine_template, prompt, response, critique), _assistant(refinement)],
            "kind": "refinement"}


def build_training_data(judged: list[dict], trees: list[dict], judge_template: str, refine_template: str,
                        mix: RFTMix, seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """DPO pairs for the actor and RFT examples for the refiner, with counts of each kind."""
    rng = random.Random(seed)
    pairs = []
    for tree in trees:
        if not tree["success"]:
            continue
        nodes = tree["nodes"]
        chosen, rejected = nodes[tree["best"]]["response"], nodes[0]["response"]
        if chosen.strip() == rejected.strip():
            continue
        pairs.append({"prompt": [_user(tree["prompt"]["prompt"])], "chosen": [_assistant(chosen)],
                      "rejected": [_assistant(rejected)], "key": tree["key"]})

    refinements, tree_pos, tree_neg = [], [], []
    for tree in trees:
        prompt = tree["prompt"]["prompt"]
        nodes = tree["nodes"]
        if tree["success"]:
            for parent_id, child_id in zip(tree["path"], tree["path"][1:]):
                parent, child = nodes[parent_id], nodes[child_id]
                refinements.append(refinement_example(refine_template, prompt, parent["response"], parent["critique"],
                                                      child["refinement"]))
        for node in nodes[1:]:
            judgement = node["judgement"]
            if not judgement or judgement["critique"] is None or not _disputed(judgement["votes"]):
                continue
            value = judgement["value"]
            if value > 0.5:
                tree_pos.append(judgement_example(judge_template, prompt, node["response"], judgement["critique"], "tree_judgement_yes"))
            elif value < 0.5:
                tree_neg.append(judgement_example(judge_template, prompt, node["response"], judgement["critique"], "tree_judgement_no"))
    sample_yes, sample_no = [], []
    for record in judged:
        if record["label"] is None or record["critique"] is None or not _disputed(record["votes"]):
            continue
        target = sample_yes if record["label"] == 1 else sample_no
        target.append(judgement_example(judge_template, record["prompt"], record["response"], record["critique"],
                                        f"sample_judgement_{'yes' if record['label'] == 1 else 'no'}"))

    def capped(items: list[dict], cap: int) -> list[dict]:
        unique = list({repr(item["messages"]): item for item in items}.values())
        rng.shuffle(unique)
        return unique[:cap]

    rft = (capped(refinements, mix.refinements) + capped(tree_pos, mix.tree_judgements_positive)
           + capped(tree_neg, mix.tree_judgements_negative) + capped(sample_yes, mix.sample_judgements_yes)
           + capped(sample_no, mix.sample_judgements_no))
    rng.shuffle(rft)
    rft = rft[:mix.total]
    counts = {"dpo_pairs": len(pairs), "rft_examples": len(rft)}
    for kind in ("refinement", "tree_judgement_yes", "tree_judgement_no", "sample_judgement_yes", "sample_judgement_no"):
        counts[f"rft_{kind}"] = sum(item["kind"] == kind for item in rft)
    return pairs, rft, counts


# -- interference check ------------------------------------------------------------------------
def independent_pairs(judged: list[dict]) -> list[dict]:
    """Conventional pairs from the same samples and judge: per prompt, the highest-valued response
    (labelled Yes) against the lowest-valued one (labelled No)."""
    by_prompt: dict = {}
    for record in judged:
        by_prompt.setdefault(record["key"], []).append(record)
    pairs = []
    for key, records in by_prompt.items():
        yes = [r for r in records if r["label"] == 1]
        no = [r for r in records if r["label"] == 0]
        if yes and no:
            best = max(yes, key=lambda r: r["value"])
            worst = min(no, key=lambda r: r["value"])
            pairs.append({"prompt": [_user(best["prompt"])], "chosen": [_assistant(best["response"])],
                          "rejected": [_assistant(worst["response"])], "key": key})
    return pairs


def edit_similarity(a: str, b: str) -> float:
    """1 - word-level Levenshtein distance / the longer length (1.0 = identical)."""
    x, y = a.split(), b.split()
    if not x and not y:
        return 1.0
    previous = list(range(len(y) + 1))
    for i, word in enumerate(x, start=1):
        current = [i]
        for j, other in enumerate(y, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return 1.0 - previous[-1] / max(len(x), len(y))


def pair_statistics(pairs: list[dict]) -> dict:
    """Median normalised edit similarity of chosen vs rejected, and mean |length difference| in words."""
    sims = [edit_similarity(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    diffs = [abs(len(p["chosen"][0]["content"].split()) - len(p["rejected"][0]["content"].split())) for p in pairs]
    return {"pairs": len(pairs),
            "median_edit_similarity": round(statistics.median(sims), 4) if sims else None,
            "mean_length_difference_words": round(statistics.fmean(diffs), 2) if diffs else None}


# -- stage settings (ifplay.core.settings) ------------------------------------------------------
@dataclass(frozen=True)
class VotingJudge:
    """A model judge's votes (``spar.judge``, the teacher's ``sft.teacher_data.judge``): ``votes``
    critiques per response with their own sampling, tied votes drawn again up to ``tie_resamples``
    times."""

    template: dict  # {"sha256": ...}: the judge template's content (its path: runtime judge_template)
    votes: int
    temperature: float
    top_p: float
    max_new_tokens: int
    tie_resamples: int

    def params(self, seed: int) -> dict:
        """:class:`~ifplay.judging.judge.ModelJudge`'s keyword arguments."""
        return {"votes": self.votes, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": seed, "tie_resamples": self.tie_resamples}


@dataclass(frozen=True)
class ModelJudgeConfig(VotingJudge):
    """``judge`` of kind model: the refiner votes."""

    kind: Literal["model"]

    def make(self, refiner: Backend | None, template_path: str, seed: int, threads: int) -> Judge:
        if refiner is None:
            raise SettingsError("the model judge (settings.config.judge.kind: model) needs the refiner checkpoint "
                                "(--refiner)")
        return make_judge("model", refiner, template_path, **self.params(seed))


@dataclass(frozen=True)
class NamedModelJudgeConfig(ModelJudgeConfig):
    """``judge`` of kind model played by a named model instead of the stage's refiner: a served
    model's name on backend openai (``eval.refinement.judges``: Table 3's GPT-4o)."""

    model: str

    def make(self, refiner: Backend | None, template_path: str, seed: int, threads: int) -> Judge:
        if refiner is None:
            raise SettingsError(f"the named judge {self.model!r} needs its backend (none was made)")
        return make_judge("model", refiner, template_path, **self.params(seed))


@dataclass(frozen=True)
class VerifierJudgeConfig:
    """``judge`` of kind verifier on IFEval-style prompts: lm-eval's checkers (nothing to set)."""

    kind: Literal["verifier"]

    def make(self, refiner: Backend | None, template_path: str, seed: int, threads: int) -> Judge:
        return make_judge("verifier", workers=threads, **self.limits())  # a sandbox worker per thread

    def limits(self) -> dict:
        return {}


@dataclass(frozen=True)
class SandboxVerifierJudgeConfig(VerifierJudgeConfig):
    """``judge`` of kind verifier on AutoIF's queries: their verification functions, run in the
    sandbox with AutoIF's limits."""

    sandbox: SandboxLimits

    def limits(self) -> dict:
        return {"timeout": self.sandbox.timeout, "memory_mb": self.sandbox.memory_mb}


#: A stage's ``judge``, told apart by its keys.
JudgeConfig = ModelJudgeConfig | NamedModelJudgeConfig | VerifierJudgeConfig | SandboxVerifierJudgeConfig


@dataclass(frozen=True)
class Refine:
    """The refiner's decoding (``spar.search``'s, the teacher's ``sft.teacher_data.refine``)."""

    template: dict  # {"sha256": ...}: the refine template's content (its path: runtime refine_template)
    output_format: Literal["markers", "plain"]
    temperature: float
    top_p: float
    max_new_tokens: int

    def sampling(self) -> dict:
        """The refiner's fields of :class:`~ifplay.spar.tree_search.SearchConfig`."""
        return {"output_format": self.output_format, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class Search(Refine):
    """The tree search without its budget (``spar.search`` with ``eval.inference_scaling.search``'s
    overrides: scaling-search, whose budget is the stage's own)."""

    algorithm: Literal["bfs", "dfs"]
    branch: int
    select: int
    max_depth: int
    end_gate: float
    selection: Literal["greedy", "sampled"]

    def tree(self, budget: int, seed: int) -> SearchConfig:
        return SearchConfig(algorithm=self.algorithm, branch=self.branch, select=self.select, max_depth=self.max_depth,
                            budget=budget, end_gate=self.end_gate, selection=self.selection, seed=seed,
                            **self.sampling())


@dataclass(frozen=True)
class BudgetedSearch(Search):
    """The tree search (``spar.search``): at most ``budget`` refinements per tree."""

    budget: int


@dataclass(frozen=True)
class JudgeRuntime(BackendRuntime):
    """The refiner's backend settings and the judge template's path (the verifier reads none)."""

    judge_template: str


@dataclass(frozen=True)
class SearchRuntime(JudgeRuntime):
    refine_template: str


@dataclass(frozen=True)
class JudgeStageConfig:
    """The slice of a stage that judges responses (judgements, judge_eval)."""

    judge: JudgeConfig
    backend: BackendChoice
    seed: int


@dataclass(frozen=True)
class JudgeSettings:
    """``ifplay judgements --settings`` (and ``judge-eval``'s)."""

    config: JudgeStageConfig
    runtime: JudgeRuntime


@dataclass(frozen=True)
class TreeSearchConfig:
    judge: JudgeConfig
    search: BudgetedSearch
    backend: BackendChoice
    negatives_per_prompt: int
    seed: int


@dataclass(frozen=True)
class TreeSearchSettings:
    """``ifplay tree-search --settings``."""

    config: TreeSearchConfig
    runtime: SearchRuntime


@dataclass(frozen=True)
class SparDataConfig:
    rft_mix: RFTMix
    judge_template: dict  # {"sha256": ...}: the judge template's content (its path: runtime)
    refine_template: dict  # {"sha256": ...}: the refine template's content (its path: runtime)
    seed: int


@dataclass(frozen=True)
class Templates:
    """The paths of SPaR's judge and refine templates."""

    judge_template: str
    refine_template: str


@dataclass(frozen=True)
class SparDataSettings:
    """``ifplay spar-data --settings``."""

    config: SparDataConfig
    runtime: Templates


def refiner_backend(backend: BackendChoice | str, runtime: BackendRuntime, refiner: str | None, threads: int) -> Backend | None:
    """The refiner checkpoint ``refiner`` on ``backend`` (None without one)."""
    return runtime.make(backend, refiner, threads) if refiner else None


def stage_judge(config, runtime: JudgeRuntime, refiner: Backend | None, threads: int) -> Judge:
    """The judge of a stage's slice ``config`` (its ``judge`` and ``seed``)."""
    return config.judge.make(refiner, runtime.judge_template, config.seed, threads)


# -- command line (registered by ifplay.cli) ---------------------------------------------------
def _cmd_judge(args) -> None:
    import json

    config, runtime = args.settings.config, args.settings.runtime
    refiner = args.refiner if isinstance(config.judge, ModelJudgeConfig) else None
    if isinstance(config.judge, NamedModelJudgeConfig):  # a served model: its name, no checkpoint
        refiner = config.judge.model
    backend = refiner_backend(config.backend, runtime, refiner, args.threads)
    with stage_judge(config, runtime, backend, args.threads) as judge:
        judged = judge_responses(args.prompts, args.responses, args.out, judge)
    print(json.dumps(judgement_counts(judged)))


def _cmd_search(args) -> None:
    import json

    from ifplay.generation.templates import load_template
    from ifplay.core.records import write_json

    config, runtime = args.settings.config, args.settings.runtime
    prompts = {p["key"]: p for p in read_jsonl(args.prompts, required=("key", "prompt"))}
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    roots = mine_negatives(judged, prompts, config.negatives_per_prompt, config.seed)
    backend = refiner_backend(config.backend, runtime, args.refiner, args.threads)
    with stage_judge(config, runtime, backend, args.threads) as judge:
        search = TreeSearch(backend, judge, load_template(runtime.refine_template, "refine"),
                            config.search.tree(config.search.budget, config.seed))
        results = search_negatives(search, roots, args.out)
    counts = {"negatives": len(roots), **search_counts([r.to_json() for r in results]),
              "refiner_calls": search.backend_calls, "judge_calls": search.judge_calls,
              "judge_cache_hits": search.judge.cache_hits}
    write_json(args.counts, counts)
    print(json.dumps(counts))


def _cmd_data(args) -> None:
    import json

    from ifplay.generation.templates import load_template
    from ifplay.core.records import write_json, write_jsonl

    config, runtime = args.settings.config, args.settings.runtime
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    trees = read_jsonl(args.trees, required=("key", "success", "nodes", "best", "path"))
    pairs, rft, counts = build_training_data(judged, trees, load_template(runtime.judge_template, "judge"),
                                             load_template(runtime.refine_template, "refine"), config.rft_mix,
                                             config.seed)
    write_jsonl(args.pairs, pairs)
    write_jsonl(args.rft, rft)
    counts["interference"] = {"spar_pairs": pair_statistics(pairs),
                              "independent_pairs": pair_statistics(independent_pairs(judged))}
    counts["judgements"] = judgement_counts(judged)
    counts["search"] = search_counts(trees)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def add_threads_argument(p) -> None:
    p.add_argument("--threads", type=int, required=True,
                   help="CPU threads (the rule's threads; the verifier judge's sandbox workers)")


def add_cli(sub) -> None:
    """Register ``judgements``, ``tree-search`` and ``spar-data`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("judgements", help="SPaR: voted judgements of sampled responses (resumable)")
    p.add_argument("--prompts", required=True,
                   help="prompt records JSONL (key, prompt[, instruction ids and kwargs | eval_func])")
    p.add_argument("--responses", required=True, help="responses JSONL (key, sample, prompt, response)")
    p.add_argument("--out", required=True, help="judged responses JSONL")
    p.add_argument("--refiner", default=None, help="refiner checkpoint (the model judge)")
    settings.add_argument(p, JudgeSettings)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_judge)

    p = sub.add_parser("tree-search", help="SPaR: tree-search refinement of judged negatives (resumable)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--judged", required=True, help="output of judgements")
    p.add_argument("--refiner", required=True, help="refiner checkpoint (refines; judges with the model judge)")
    p.add_argument("--out", required=True, help="trees JSONL")
    p.add_argument("--counts", required=True, help="search counts JSON")
    settings.add_argument(p, TreeSearchSettings)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("spar-data", help="SPaR: actor DPO pairs, refiner RFT data, counts, interference check")
    p.add_argument("--judged", required=True)
    p.add_argument("--trees", required=True)
    p.add_argument("--pairs", required=True, help="DPO pairs JSONL (TRL preference format)")
    p.add_argument("--rft", required=True, help="RFT data JSONL (TRL conversational format)")
    p.add_argument("--counts", required=True, help="counts JSON")
    settings.add_argument(p, SparDataSettings)
    p.set_defaults(func=_cmd_data)
