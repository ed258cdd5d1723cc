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

from ifplay.judge import Judge, VotedJudgement
from ifplay.records import Checkpoint, read_jsonl
from ifplay.tree_search import SearchResult, TreeSearch

log = logging.getLogger(__name__)

JUDGED_FIELDS = ("key", "sample", "prompt", "response", "label", "value", "votes", "n_invalid", "tie", "critique",
                 "critiques")


def response_id(record: dict) -> str:
    return f"{record['key']}/{record.get('sample', 0)}"


# -- 1. voted judgements ---------------------------------------------------------------------
def judge_responses(prompts_path: str, responses_path: str, out: str, judge: Judge, chunk: int = 64) -> list[dict]:
    """Judge every response of ``responses_path`` (key, sample, prompt, response); resumable.

    Output lines: the response fields plus the voted judgement (label 1/0/None, value, votes,
    n_invalid, tie, the kept critique and all critiques).
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
    return journal.finish(order=[response_id(r) for r in responses])


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
        for record in rng.sample(negatives, min(per_prompt, len(negatives))):
            judgement = VotedJudgement.from_json({f.name: record[f.name] for f in fields(VotedJudgement)})
            roots.append({"key": response_id(record), "prompt": prompts[key], "response": record["response"],
                          "critique": record["critique"] or "", "judgement": judgement})
    return roots


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

    def judgement_example(prompt: str, response: str, critique: str, kind: str) -> dict:
        return {"messages": [_user(judge_template.format(prompt=prompt, response=response)), _assistant(critique)],
                "kind": kind}

    refinements, tree_pos, tree_neg = [], [], []
    for tree in trees:
        prompt = tree["prompt"]["prompt"]
        nodes = tree["nodes"]
        if tree["success"]:
            for parent_id, child_id in zip(tree["path"], tree["path"][1:]):
                parent, child = nodes[parent_id], nodes[child_id]
                text = refine_template.format(prompt=prompt, response=parent["response"], critique=parent["critique"])
                refinements.append({"messages": [_user(text), _assistant(child["refinement"])], "kind": "refinement"})
        for node in nodes[1:]:
            judgement = node["judgement"]
            if not judgement or judgement["critique"] is None or not _disputed(judgement["votes"]):
                continue
            value = judgement["value"]
            if value > 0.5:
                tree_pos.append(judgement_example(prompt, node["response"], judgement["critique"], "tree_judgement_yes"))
            elif value < 0.5:
                tree_neg.append(judgement_example(prompt, node["response"], judgement["critique"], "tree_judgement_no"))
    sample_yes, sample_no = [], []
    for record in judged:
        if record["label"] is None or record["critique"] is None or not _disputed(record["votes"]):
            continue
        target = sample_yes if record["label"] == 1 else sample_no
        target.append(judgement_example(record["prompt"], record["response"], record["critique"],
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
