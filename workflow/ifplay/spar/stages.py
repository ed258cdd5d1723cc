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
from dataclasses import dataclass, fields

from tqdm.auto import tqdm

from ifplay.judging.judge import Judge, VotedJudgement

from ifplay.generation.templates import template_turns
from ifplay.core.records import Checkpoint, read_jsonl
from ifplay.spar.tree_search import SearchResult, TreeSearch, refine_turn

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
@dataclass
class RFTMix:
    """Caps on each kind of refiner training example (SPaR's official numbers as defaults)."""

    refinements: int = 4000
    tree_judgements_positive: int = 1500  # tree nodes with 0.5 < V < 1
    tree_judgements_negative: int = 1000  # tree nodes with 0 < V < 0.5
    sample_judgements_yes: int = 2500  # voted sample judgements, majority Yes with a dissenting vote
    sample_judgements_no: int = 500
    total: int = 9500


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


# -- command line (registered by ifplay.cli) ---------------------------------------------------
def add_judge_args(p) -> None:
    p.add_argument("--judge", required=True, choices=["model", "verifier"], help="who judges")
    p.add_argument("--refiner", help="refiner checkpoint (the model judge and the tree search use it)")
    p.add_argument("--judge-template", help="judge prompt template (model judge)")
    p.add_argument("--votes", type=int, default=5)
    p.add_argument("--judge-temperature", type=float, default=0.7)
    p.add_argument("--judge-top-p", type=float, default=1.0)
    p.add_argument("--judge-max-new-tokens", type=int, default=2048)
    p.add_argument("--tie-resamples", type=int, default=3, help="re-draw tied votes up to this many times")
    p.add_argument("--verifier-timeout", type=float, default=3.0,
                   help="verifier judge: wall-clock seconds per AutoIF verification function call")
    p.add_argument("--verifier-memory-mb", type=int, default=512,
                   help="verifier judge: address-space limit per sandbox worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="transformers")
    p.add_argument("--backend-options", default=None, help="JSON object of backend settings (config backend.vllm / backend.openai)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)


def add_search_args(p, budget: bool = True) -> None:
    """The tree-search flags (SearchConfig's fields; defaults: SPaR's official settings)."""
    p.add_argument("--refine-template", required=True)
    p.add_argument("--algorithm", default="bfs", choices=["bfs", "dfs"])
    p.add_argument("--branch", type=int, default=3)
    p.add_argument("--select", type=int, default=2)
    p.add_argument("--max-depth", type=int, default=3)
    if budget:
        p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--end-gate", type=float, default=0.5)
    p.add_argument("--selection", default="greedy", choices=["greedy", "sampled"])
    p.add_argument("--temperature", type=float, default=0.7, help="refiner temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="refiner top_p")
    p.add_argument("--max-new-tokens", type=int, default=3072, help="refiner token budget")
    p.add_argument("--output-format", default="markers", choices=["markers", "plain"])


def refiner_backend(args):
    from ifplay.generation.backends import make_backend, parse_options

    if not args.refiner:
        return None
    return make_backend(args.backend, args.refiner, batch_size=args.batch_size,
                        max_prompt_tokens=args.max_prompt_tokens, threads=args.threads,
                        options=parse_options(args.backend_options))


def judge_from_args(args, backend):
    from ifplay.judging.judge import make_judge

    if args.judge == "verifier":  # sandbox workers (AutoIF functions): one per thread of the job
        return make_judge("verifier", timeout=args.verifier_timeout, memory_mb=args.verifier_memory_mb,
                          workers=args.threads)
    return make_judge("model", backend, args.judge_template, votes=args.votes, temperature=args.judge_temperature,
                      top_p=args.judge_top_p, max_new_tokens=args.judge_max_new_tokens, seed=args.seed,
                      tie_resamples=args.tie_resamples)


def _cmd_judge(args) -> None:
    import json

    backend = refiner_backend(args) if args.judge == "model" else None
    with judge_from_args(args, backend) as judge:
        judged = judge_responses(args.prompts, args.responses, args.out, judge)
    print(json.dumps(judgement_counts(judged)))


def _cmd_search(args) -> None:
    import json

    from ifplay.generation.templates import load_template
    from ifplay.core.records import write_json
    from ifplay.spar.tree_search import SearchConfig

    prompts = {p["key"]: p for p in read_jsonl(args.prompts, required=("key", "prompt"))}
    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    roots = mine_negatives(judged, prompts, args.negatives_per_prompt, args.seed)
    config = SearchConfig(**{f.name: getattr(args, f.name) for f in fields(SearchConfig)})
    backend = refiner_backend(args)
    with judge_from_args(args, backend) as judge:
        search = TreeSearch(backend, judge, load_template(args.refine_template, "refine"), config)
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

    judged = read_jsonl(args.judged, required=JUDGED_FIELDS)
    trees = read_jsonl(args.trees, required=("key", "success", "nodes", "best", "path"))
    mix = RFTMix(**json.loads(args.rft_mix)) if args.rft_mix else RFTMix()
    pairs, rft, counts = build_training_data(judged, trees, load_template(args.judge_template, "judge"),
                                             load_template(args.refine_template, "refine"), mix, args.seed)
    write_jsonl(args.pairs, pairs)
    write_jsonl(args.rft, rft)
    counts["interference"] = {"spar_pairs": pair_statistics(pairs),
                              "independent_pairs": pair_statistics(independent_pairs(judged))}
    counts["judgements"] = judgement_counts(judged)
    counts["search"] = search_counts(trees)
    write_json(args.counts, counts)
    print(json.dumps(counts))


def add_cli(sub) -> None:
    """Register ``judgements``, ``tree-search`` and ``spar-data`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("judgements", help="SPaR: voted judgements of sampled responses (resumable)")
    p.add_argument("--prompts", required=True,
                   help="prompt records JSONL (key, prompt[, instruction ids and kwargs | eval_func])")
    p.add_argument("--responses", required=True, help="responses JSONL (key, sample, prompt, response)")
    p.add_argument("--out", required=True, help="judged responses JSONL")
    add_judge_args(p)
    p.set_defaults(func=_cmd_judge)

    p = sub.add_parser("tree-search", help="SPaR: tree-search refinement of judged negatives (resumable)")
    p.add_argument("--prompts", required=True)
    p.add_argument("--judged", required=True, help="output of judgements")
    p.add_argument("--out", required=True, help="trees JSONL")
    p.add_argument("--counts", required=True, help="search counts JSON")
    p.add_argument("--negatives-per-prompt", type=int, default=1)
    add_search_args(p)
    add_judge_args(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("spar-data", help="SPaR: actor DPO pairs, refiner RFT data, counts, interference check")
    p.add_argument("--judged", required=True)
    p.add_argument("--trees", required=True)
    p.add_argument("--judge-template", required=True)
    p.add_argument("--refine-template", required=True)
    p.add_argument("--rft-mix", help="JSON object of RFTMix caps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", required=True, help="DPO pairs JSONL (TRL preference format)")
    p.add_argument("--rft", required=True, help="RFT data JSONL (TRL conversational format)")
    p.add_argument("--counts", required=True, help="counts JSON")
    p.set_defaults(func=_cmd_data)
