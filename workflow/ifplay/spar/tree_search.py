"""SPaR's refinement tree search: refine a judged-negative response until the judge accepts it.

A tree starts from a root response and the critique that judged it wrong. Expanding a node asks
the refiner for ``branch`` refinements of it (a prompt built from the instruction, the node's
response and its critique); each refinement that parses becomes a child, and every child is judged
(:class:`~ifplay.judging.judge.Judge`), its value being the judge's ``#Yes / (#Yes + #No)``. A tree is
solved by the first expansion step that yields a child with value ``> end_gate`` (the best such
child is accepted); otherwise the search falls back to the highest-value node (ties: the earliest).

BFS (SPaR's setting: branch 3, select 2, depth 3, so at most 3 + 6 + 6 = 15 nodes) expands the
whole frontier level by level and keeps ``select`` children of each level as the next frontier.
DFS expands one node at a time from a stack and pushes ``select`` of its children, best on top.

Batching. The search is level-synchronous across trees: at every step, the nodes that all
unfinished trees expand go to the refiner in ONE ``backend.chat`` call (``n=branch``), and all
their new children are judged in ONE ``judge.judge`` call. ``TreeSearch(batched=False)`` is the
reference strategy (one tree at a time, one refiner call and one judge call per expansion); with
a deterministic backend and judge both give the same trees.

Resume. With a journal, each finished tree's :class:`SearchResult` is appended to
``<journal_path>.partial`` (:class:`ifplay.core.records.Checkpoint`); a restarted run loads the finished
keys and searches only the rest, and ``journal_path`` is written (JSONL, root order) at the end.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass, fields
from typing import Any, Callable

from tqdm.auto import tqdm

from ifplay.generation.backends import Backend, SamplingParams
from ifplay.judging.judge import Judge, VotedJudgement
from ifplay.generation.templates import check_template
from ifplay.core.records import Checkpoint

log = logging.getLogger(__name__)

ALGORITHMS = ("bfs", "dfs")
SELECTIONS = ("greedy", "sampled")
OUTPUT_FORMATS = ("markers", "plain")
EPSILON = 1e-6  # added to values when sampling, so zero-value nodes can still be drawn

_OUTPUT_MARKER = re.compile(r"final\s+refined\s+output", re.IGNORECASE)
_START = re.compile(r"\[\[\s*start\s*\]\]", re.IGNORECASE)
_END = re.compile(r"\[\[\s*end\s*\]\]", re.IGNORECASE)


@dataclass
class SearchConfig:
    """Tree-search settings; the defaults are SPaR's official ones (refine max length included).

    ``branch``: refinements requested per expansion. ``select``: frontier nodes kept per level
    (BFS) or children pushed per expansion (DFS). ``max_depth``: deepest child level (root = 0).
    ``budget``: most refinements generated per tree, parsable or not; an expansion (``branch``
    refinements) is only made if it fits. ``end_gate``: a child is accepted when its value is
    strictly greater. ``selection``: ``"greedy"`` keeps the top ``select`` by value (ties: earliest
    node), ``"sampled"`` draws ``select`` without replacement with probability proportional to
    value + ``EPSILON``, from a generator seeded by ``seed`` and the tree's key.
    ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``: the refiner's sampling parameters.
    ``output_format``: ``"markers"`` (SPaR: a reflection, then the refined response between
    ``[[start]]`` and ``[[end]]``; see :func:`parse_refinement`) or ``"plain"`` (the whole output
    is the refined response: for small models that do not keep to the markers).
    """

    algorithm: str = "bfs"
    branch: int = 3
    select: int = 2
    max_depth: int = 3
    budget: int = 1000
    end_gate: float = 0.5
    selection: str = "greedy"
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 3072
    seed: int = 0
    output_format: str = "markers"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm '{self.algorithm}' (choices: {', '.join(ALGORITHMS)})")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection '{self.selection}' (choices: {', '.join(SELECTIONS)})")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format '{self.output_format}' (choices: {', '.join(OUTPUT_FORMATS)})")
        for name in ("branch", "select", "max_depth", "budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.sampling()  # validates temperature, top_p, max_new_tokens

    def sampling(self) -> SamplingParams:
        """The refiner's sampling parameters for one expansion."""
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                              n=self.branch, seed=self.seed)

    def refined(self, text: str) -> str | None:
        """The refined response in a refiner output (``None`` when it does not parse)."""
        if self.output_format == "plain":
            return text.strip() or None
        return parse_refinement(text)[1]


def parse_refinement(text: str) -> tuple[str, str | None]:
    """Split a refiner output into (reflection, refined response).

    The refined response is the text between ``[[start]]`` and ``[[end]]`` that follows the last
    "Final Refined Output" (any case; markdown around it is fine); without that marker, the first
    ``[[start]]`` in the text is used. A missing ``[[end]]`` takes the text to the end. The
    refined response is ``None`` when there is no ``[[start]]`` or nothing between the markers.
    The reflection is the stripped text before the marker (or before ``[[start]]``).
    """
    markers = list(_OUTPUT_MARKER.finditer(text))
    anchor = markers[-1].end() if markers else 0
    start = _START.search(text, anchor)
    reflection = text[:markers[-1].start() if markers else (start.start() if start else len(text))].strip()
    if start is None:
        return reflection, None
    end = _END.search(text, start.end())
    refined = text[start.end():end.start() if end else len(text)].strip()
    return reflection, refined or None


def refine_turn(template: str, prompt: str, response: str, critique: str) -> dict:
    """The refiner's request: the refine template filled with the instruction, the response and its critique."""
    return {"role": "user", "content": template.format(prompt=prompt, response=response, critique=critique)}


def refinement_critique(judgement: VotedJudgement) -> str:
    """The critique a node's refinement is based on: the majority critique; without a majority
    label, the first critique that voted No, else the first critique, else ``""``."""
    if judgement.critique is not None:
        return judgement.critique
    dissent = next((text for text, v in zip(judgement.critiques, judgement.votes) if v == 0), None)
    return dissent if dissent is not None else (judgement.critiques[0] if judgement.critiques else "")


@dataclass
class Node:
    """One response in a tree. ``id``: its index in the tree (root 0, then generation order);
    ``parent``: the parent's id (``None`` for the root); ``depth``: 0 for the root.
    ``critique``: the judge text a refinement of this node is based on. ``judgement``: the
    node's voted judgement (``None`` for a root given without one). ``refinement``: the raw
    refiner output that produced this node (``None`` for the root). ``value``: the judgement's
    value (a root without judgement: 0.0)."""

    id: int
    parent: int | None
    depth: int
    response: str
    critique: str
    judgement: VotedJudgement | None
    refinement: str | None
    value: float

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["judgement"] = self.judgement.to_json() if self.judgement else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> Node:
        judgement = VotedJudgement.from_json(data["judgement"]) if data["judgement"] is not None else None
        return cls(**{**data, "judgement": judgement})


@dataclass
class SearchResult:
    """A finished tree. ``key``/``prompt``: the root's key and prompt record. ``success``: a node
    passed the end gate. ``stop_reason``: "accepted", "max_depth", "budget" or "exhausted" (no
    node left to expand). ``best``: the accepted node, else the highest-value node. ``path``:
    the nodes from the root to ``best``. ``nodes``: every node, by id. ``nodes_expanded``: how
    many nodes were refined. ``backend_calls``: refiner calls this tree took part in.
    ``invalid_refinements``: refiner outputs that did not parse (dropped, never judged)."""

    key: Any
    prompt: dict
    success: bool
    stop_reason: str
    best: Node
    path: list[Node]
    nodes: list[Node]
    nodes_expanded: int
    backend_calls: int
    invalid_refinements: int

    def to_json(self) -> dict:
        """A JSON object; ``best`` and ``path`` are stored as node ids."""
        return {"key": self.key, "prompt": self.prompt, "success": self.success, "stop_reason": self.stop_reason,
                "best": self.best.id, "path": [node.id for node in self.path],
                "nodes": [node.to_json() for node in self.nodes], "nodes_expanded": self.nodes_expanded,
                "backend_calls": self.backend_calls, "invalid_refinements": self.invalid_refinements}

    @classmethod
    def from_json(cls, data: dict) -> SearchResult:
        nodes = [Node.from_json(node) for node in data["nodes"]]
        return cls(**{**data, "nodes": nodes, "best": nodes[data["best"]], "path": [nodes[i] for i in data["path"]]})


def _select(children: list[Node], k: int, mode: str, rng: random.Random) -> list[Node]:
    """``k`` of ``children``, in selection order (greedy: best first, ties to the earliest)."""
    if mode == "greedy":
        return sorted(children, key=lambda node: -node.value)[:k]
    pool, chosen = list(children), []
    while pool and len(chosen) < k:
        point = rng.random() * sum(node.value + EPSILON for node in pool)
        for index, node in enumerate(pool):
            point -= node.value + EPSILON
            if point < 0 or index == len(pool) - 1:
                chosen.append(pool.pop(index))
                break
    return chosen


class _Tree:
    """The search state of one tree: a step proposes nodes to expand (:meth:`expansions`), the
    driver refines and judges them, then :meth:`conclude` decides to accept, continue or stop."""

    def __init__(self, root: dict, config: SearchConfig):
        self.key = root["key"]
        self.record = root["prompt"]
        self.config = config
        self.rng = random.Random(f"{config.seed}:{self.key}")
        judgement = root.get("judgement")
        if isinstance(judgement, dict):
            judgement = VotedJudgement.from_json(judgement)
        self.nodes = [Node(id=0, parent=None, depth=0, response=root["response"], critique=root["critique"],
                           judgement=judgement, refinement=None, value=judgement.value if judgement else 0.0)]
        self.open = [self.nodes[0]]  # BFS: the frontier, in selection order; DFS: the stack, top last
        self.generated = self.expanded = self.invalid = self.backend_calls = 0
        self.result: SearchResult | None = None

    def expansions(self) -> list[Node]:
        """The nodes to expand at this step; none (and the tree finishes) when the search is over."""
        config = self.config
        if self.result is not None:
            return []
        if not self.open:
            self._finish(None, "exhausted")
            return []
        room = (config.budget - self.generated) // config.branch
        if room == 0:
            self._finish(None, "budget")
            return []
        if config.algorithm == "bfs":
            return self.open[:room]
        return [self.open.pop()]

    def add_children(self, parent: Node, completions: list[str]) -> list[Node]:
        """Turn one expansion's refiner outputs into (unjudged) children; unparsable ones are dropped."""
        self.expanded += 1
        self.generated += len(completions)
        children = []
        for text in completions:
            refined = self.config.refined(text)
            if refined is None:
                self.invalid += 1
                continue
            child = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, response=refined,
                         critique="", judgement=None, refinement=text, value=0.0)
            self.nodes.append(child)
            children.append(child)
        return children

    def conclude(self, children: list[Node]) -> None:
        """Decide after a step whose (judged) children are ``children``."""
        config = self.config
        accepted = [child for child in children if child.value > config.end_gate]
        if accepted:
            self._finish(max(accepted, key=lambda node: node.value), "accepted")
            return
        if config.algorithm == "bfs" and children and children[0].depth >= config.max_depth:
            self._finish(None, "max_depth")
            return
        chosen = _select(children, config.select, config.selection, self.rng)
        if config.algorithm == "bfs":
            self.open = chosen
        else:
            self.open.extend(node for node in reversed(chosen) if node.depth < config.max_depth)

    def _finish(self, accepted: Node | None, reason: str) -> None:
        best = accepted or max(self.nodes, key=lambda node: node.value)
        path = [best]
        while path[-1].parent is not None:
            path.append(self.nodes[path[-1].parent])
        self.result = SearchResult(key=self.key, prompt=self.record, success=accepted is not None, stop_reason=reason,
                                   best=best, path=path[::-1], nodes=self.nodes, nodes_expanded=self.expanded,
                                   backend_calls=self.backend_calls, invalid_refinements=self.invalid)


class TreeSearch:
    """Runs the refinement tree search for many roots.

    ``backend`` is the refiner; ``judge`` values the children; ``refine_template`` is the
    refine prompt text (placeholders ``{prompt}``, ``{response}``, ``{critique}``), sent as one
    user turn. ``batched=False`` searches one tree at a time, one refiner call and one judge call
    per expansion (the reference strategy). ``backend_calls`` and ``judge_calls`` count this
    object's calls to ``backend.chat`` and ``judge.judge`` over all runs.
    """

    def __init__(self, backend: Backend, judge: Judge, refine_template: str, config: SearchConfig | None = None,
                 batched: bool = True):
        check_template(refine_template, "refine", "refine template")
        self.backend = backend
        self.judge = judge
        self.template = refine_template
        self.config = config or SearchConfig()
        self.batched = batched
        self.backend_calls = 0
        self.judge_calls = 0

    def run(self, roots: list[dict], journal_path: str | os.PathLike | None = None) -> list[SearchResult]:
        """Search a tree for every root ``{"key", "prompt" (record), "response", "critique",
        "judgement"? (VotedJudgement or its JSON)}``; results come back in root order."""
        keys = [root.get("key") for root in roots]
        for root in roots:
            missing = [name for name in ("key", "prompt", "response", "critique") if name not in root]
            if missing:
                raise ValueError(f"tree-search root {root.get('key')!r} lacks {', '.join(missing)}")
        if len(set(keys)) != len(keys):
            raise ValueError("tree-search roots must have distinct keys")
        journal = Checkpoint(journal_path, id_field="key") if journal_path else None
        results = {record["key"]: SearchResult.from_json(record) for record in journal.records} if journal else {}
        trees = [_Tree(root, self.config) for root in roots if root["key"] not in results]
        if results:
            log.info("tree search: resuming, %d of %d trees already done", len(roots) - len(trees), len(roots))
        log.info("tree search (%s, %s): %d trees", self.config.algorithm,
                 "batched" if self.batched else "sequential", len(trees))

        with tqdm(total=len(roots), initial=len(roots) - len(trees), desc="tree search", unit="tree") as bar:
            def finished(tree: _Tree) -> None:
                results[tree.key] = tree.result
                if journal:
                    journal.append([tree.result.to_json()])
                bar.update(1)

            if self.batched:
                self._search(trees, finished)
            else:
                for tree in trees:
                    self._search_alone(tree, finished)

        ordered = [results[key] for key in keys]
        if journal:
            journal.finish(order=keys)
        log.info("tree search: %d of %d trees solved", sum(r.success for r in ordered), len(ordered))
        return ordered

    def _search(self, trees: list[_Tree], finished: Callable[[_Tree], None]) -> None:
        """Level-synchronous: one refiner call and one judge call per step for all unfinished trees."""
        active = trees
        step = 0
        while active:
            jobs = [(tree, node) for tree in active for node in tree.expansions()]
            for tree in active:
                if tree.result is not None:
                    finished(tree)
            active = [tree for tree in active if tree.result is None]
            if not jobs:
                continue
            step += 1
            log.debug("step %d: expanding %d nodes of %d trees", step, len(jobs), len(active))
            children: dict[_Tree, list[Node]] = {tree: [] for tree in active}
            for (tree, node), completions in zip(jobs, self._refine(jobs)):
                children[tree].extend(tree.add_children(node, completions))
            for tree in active:
                tree.backend_calls += 1
            self._judge([(tree, child) for tree in active for child in children[tree]])
            for tree in active:
                tree.conclude(children[tree])

    def _search_alone(self, tree: _Tree, finished: Callable[[_Tree], None]) -> None:
        """The reference strategy: this tree only, one refiner and one judge call per expansion."""
        while True:
            nodes = tree.expansions()
            if not nodes:
                finished(tree)
                return
            children = []
            for node in nodes:
                [completions] = self._refine([(tree, node)])
                tree.backend_calls += 1
                new = tree.add_children(node, completions)
                self._judge([(tree, child) for child in new])
                children.extend(new)
            tree.conclude(children)

    def _refine(self, jobs: list[tuple[_Tree, Node]]) -> list[list[str]]:
        """``branch`` refiner outputs for each (tree, node), in one backend call."""
        conversations = [[refine_turn(self.template, tree.record["prompt"], node.response, node.critique)]
                         for tree, node in jobs]
        self.backend_calls += 1
        return self.backend.chat(conversations, self.config.sampling(), progress="refine")

    def _judge(self, items: list[tuple[_Tree, Node]]) -> None:
        """Judge children in one judge call; set their judgement, value and critique."""
        if not items:
            return
        self.judge_calls += 1
        judgements = self.judge.judge([(tree.record, node.response) for tree, node in items])
        for (_, node), judgement in zip(items, judgements):
            node.judgement = judgement
            node.value = judgement.value
            node.critique = refinement_critique(judgement)
