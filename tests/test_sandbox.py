"""The verifier sandbox: result kinds, the return rule, order, the CLI, hostile code, AutoIF equivalence.

The hostile corpus runs twice: with the full policy, and with the Python-level guard off
(``guard=False``, real builtins, extra modules preloaded) so that the operating-system layer alone
must contain file writes, network, fork and thread bombs, signals, segfaults and forged frames.
Every hostile verifier returns True if its attack worked, so "contained" means "not True" (plus the
expected error kind, plus canaries checked from outside).
"""

from __future__ import annotations

import json
import os
import random
import socket
import time

import pytest

from conftest import run, shared
from ifplay.core.records import RecordError
from ifplay.sandbox.runner import Result, Sandbox, SandboxError, read_items, unsafe_in_process, verify_file
from ifplay.sandbox.worker import RANDOM_SEED

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's isolation needs root (as in CI)")

TIMEOUT = 0.5  # per call, for these tests


def code(body: str, *, head: str = "") -> str:
    """A verifier whose evaluate(response) has ``body`` (indented here)."""
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"{head}\ndef evaluate(response):\n{lines}\n"


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, call_timeout=TIMEOUT) as sandbox:
        yield sandbox


def outcome(result: Result):
    return result.result if result.error is None else result.error


# -- result kinds and the return rule ----------------------------------------------------------
KINDS = [
    ("true", code("return len(response) > 2"), True),
    ("false", code("return response == 'nope'"), False),
    ("string true", code("return '  TRUE\\n'"), True),
    ("string false", code("return 'False'"), False),
    ("none", code("return None"), "invalid-return"),
    ("int", code("return 1"), "invalid-return"),
    ("other string", code("return 'yes'"), "invalid-return"),
    ("str subclass", code("return S('true')", head="class S(str):\n    pass"), "invalid-return"),
    ("eq trick", code("return T()", head="class T:\n    def __eq__(self, other):\n        return True"),
     "invalid-return"),
    ("exception", code("raise ValueError('bad input')"), "exception:ValueError"),
    ("own exception", code("raise Oops()", head="class Oops(Exception):\n    pass"), "exception:Oops"),
    ("top-level exception", "x = 1 / 0\ndef evaluate(response):\n    return True", "exception:ZeroDivisionError"),
    ("system exit", code("raise SystemExit(0)"), "exception:SystemExit"),
    ("no evaluate", "def evaluat(response):\n    return True", "no-evaluate"),
    ("evaluate not callable", "evaluate = 3", "no-evaluate"),
    ("syntax", "def evaluate(response)\n    return True", "syntax"),
    ("null byte", "def evaluate(response):\n    return True\x00", "syntax"),
    ("timeout", code("while True:\n    pass"), "timeout"),
    ("memory", code("return len('x' * 10**10) > 0"), "memory"),
    ("forbidden import", code("import os\nreturn True"), "forbidden"),
    ("forbidden attribute", code("return ().__class__.__base__ is object"), "forbidden"),
    ("recursion", code("return f(0)", head="def f(n):\n    return f(n + 1)"), "exception:RecursionError"),
]


def test_each_result_kind(box):
    results = box.run([(name, source, "hello") for name, source, _ in KINDS])
    assert [r.id for r in results] == [name for name, _, _ in KINDS]
    assert {r.id: outcome(r) for r in results} == {name: expected for name, _, expected in KINDS}
    for r in results:
        assert (r.result is None) == (r.error is not None)


def test_autoif_style_verifiers_work(box):
    """Helpers beside evaluate, imports inside the function, the allowed modules, eval of arithmetic."""
    helpers = ("def evaluate(response):\n    return all(count(w) >= 1 for w in response.split())\n\n"
               "def count(word):\n    return sum(ch in 'aeiou' for ch in word.lower())")
    modules = code("import re, math, string, json, statistics, unicodedata, difflib, textwrap\n"
                   "from collections import Counter\nfrom datetime import datetime\n"
                   "from typing import List\n"
                   "words: List[str] = re.findall(r'\\w+', response)\n"
                   "assert json.loads(json.dumps(words)) == words and math.isclose(math.pi, 3.14159, rel_tol=1e-3)\n"
                   "assert datetime.strptime('2024-03-01', '%Y-%m-%d').month == 3\n"
                   "assert statistics.mean([1, 2, 3]) == 2 and unicodedata.category('a') == 'Ll'\n"
                   "assert difflib.SequenceMatcher(None, 'ab', 'ab').ratio() == 1.0\n"
                   "return Counter(words).most_common(1)[0][1] == 2 and textwrap.dedent(' x') == 'x'")
    arithmetic = code("left, right = response.split('=')\nreturn eval(left) == int(right)")
    results = box.run([(1, helpers, "hello world"), (2, helpers, "hll wrld"), (3, modules, "a b a"),
                       (4, arithmetic, "2 + 2 * 3 = 8"), (5, arithmetic, "2 + 2 = 5"),
                       (6, code("import os\nreturn True", head="from __future__ import annotations"), "x")])
    assert [outcome(r) for r in results] == [True, False, True, True, False, "forbidden"]


def test_order_is_input_order_across_workers_and_batches():
    with Sandbox(workers=2, call_timeout=TIMEOUT, batch_size=7) as sandbox:
        sources = [code(f"return len(response) % {m} == 0") for m in (2, 3, 5)]
        items = [{"id": f"i{i}", "code": sources[i % 3], "response": "x" * i} for i in range(300)]
        results = sandbox.run(items)
        assert [r.id for r in results] == [f"i{i}" for i in range(300)]
        assert [r.result for r in results] == [i % (2, 3, 5)[i % 3] == 0 for i in range(300)]
        assert sandbox.run([]) == []
        assert [r.result for r in sandbox.verify(sources[0], ["ab", "abc"])] == [True, False]


def test_no_state_leaks_between_calls():
    """Globals, patched builtins, patched modules, classes and the random generator start fresh."""
    patchers = [
        "count = 0\ndef evaluate(response):\n    global count\n    count += 1\n    return count == 1",
        code("__builtins__['len'] = lambda x: 0\nreturn len('abc') == 0"),
        code("import re, math\ntry:\n    re.match = lambda *a: None\nexcept BaseException:\n    pass\nreturn True"),
        code("from collections import Counter\nCounter.most_common = lambda self, n=None: []\nreturn True"),
        code("import textwrap\ntextwrap.TextWrapper.unicode_whitespace_trans[ord('x')] = ord('y')\nreturn True"),
        code("import functools, textwrap\nfunctools.update_wrapper(textwrap.dedent, len)\n"
             "return textwrap.dedent.__name__ == 'len'"),
        code("import random\nrandom.seed(1)\nreturn True"),
        code("import textwrap\nsetattr(textwrap.dedent, 'x', 1)\nreturn True"),
    ]
    checker = code(
        "import re, math, random, string, textwrap\nfrom collections import Counter\n"
        "state = [len('abc') == 3, re.match('a', 'a') is not None, math.pi > 3.14,\n"
        "         Counter('aab').most_common(1) == [('a', 2)], '__wrapped__' not in dir(string),\n"
        "         textwrap.TextWrapper.unicode_whitespace_trans.get(ord('x')) is None,\n"
        "         not hasattr(textwrap.dedent, 'x'), FIRST == %r, textwrap.dedent.__name__ == 'dedent',\n"
        "         '__wrapped__' not in dir(textwrap.dedent)]\n"
        "return all(state)" % random.Random(RANDOM_SEED).random(),
        head="import random\nFIRST = random.random()")  # every call starts from the same random state
    with Sandbox(workers=1, call_timeout=TIMEOUT) as sandbox:
        items = [(f"p{i}", p, "r") for i, p in enumerate(patchers)]
        items += [(f"c{i}", checker + f"# {i}\n", "r") for i in range(3)]
        items += [(f"again{i}", patchers[0], "r") for i in range(3)]
        results = {r.id: outcome(r) for r in sandbox.run(items)}
    assert all(results[f"c{i}"] is True for i in range(3)), results
    assert all(results[f"again{i}"] is True for i in range(3)), results  # fresh globals every call
    assert results["p2"] == "forbidden"  # allowed modules are read-only
    assert all(results[f"p{i}"] is True for i in (0, 1, 3, 4, 5, 6, 7)), results


def test_an_interrupted_run_leaves_the_sandbox_usable(monkeypatch):
    from ifplay.sandbox import runner as module

    accept = module._Run._accept
    calls = []

    def interrupt_once(self, worker, obj):
        if not calls:
            calls.append(1)
            raise KeyboardInterrupt
        return accept(self, worker, obj)

    source = code("return response == 'a'")
    with Sandbox(workers=2, call_timeout=TIMEOUT, batch_size=3) as sandbox:
        monkeypatch.setattr(module._Run, "_accept", interrupt_once)
        with pytest.raises(KeyboardInterrupt):
            sandbox.run([(i, source, "a") for i in range(30)])  # all True
        results = sandbox.run([(i, source, "b") for i in range(30)])  # no stale reply may leak in
        assert sandbox.stats["worker_kills"] == 0  # no worker left waiting for a lost batch
    assert [r.result for r in results] == [False] * 30


def test_worker_reports_every_isolation_layer(box):
    assert box.layers == {"network_namespace": True, "chroot": True, "environment_cleared": True, "rlimits": True,
                          "no_new_privileges": True, "unprivileged_user": True, "dies_with_parent": True}


def test_bad_arguments_are_clear_errors():
    with pytest.raises(SandboxError, match="must be strings"):
        Sandbox(workers=1).run([(1, "def evaluate(r): return True", 42)])
    with pytest.raises(SandboxError, match="lacks field 'code'"):
        Sandbox(workers=1).run([{"id": 1, "response": "x"}])
    with pytest.raises(SandboxError, match="limits must be positive"):
        Sandbox(call_timeout=0)


# -- files and the command line -----------------------------------------------------------------
def test_cli_round_trip(tmp_path):
    items = [{"id": i, "code": code(f"return response.count('a') == {i % 3}"), "response": "a" * (i % 4)}
             for i in range(40)]
    items.append({"id": "bad", "code": code("import socket\nreturn True"), "response": ""})
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")
    out = tmp_path / "out" / "results.jsonl"
    proc = run(["ifplay", "verify", "--input", str(inp), "--out", str(out), "--workers", "2", "--timeout", "1"])
    assert "41 calls" in proc.stdout and "forbidden 1" in proc.stdout
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == [x["id"] for x in items]
    assert [x["result"] for x in lines[:40]] == [(i % 4) == (i % 3) for i in range(40)]
    assert lines[40] == {"id": "bad", "result": None, "error": "forbidden"}
    assert all(set(x) == {"id", "result", "error"} for x in lines)


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('["a"]', "expected a JSON object, got list"),
    ('{"id": 1, "code": "x"}', "missing field\\(s\\) response"),
    ('{"id": 1, "code": 5, "response": "x"}', "field 'code' must be a string, got int"),
])
def test_malformed_input_names_file_and_line(tmp_path, line, message):
    inp = tmp_path / "in.jsonl"
    good = json.dumps({"id": 0, "code": code("return True"), "response": "x"})
    inp.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(RecordError, match=f"{inp}:3: {message}"):
        read_items(inp)
    out = tmp_path / "out.jsonl"
    proc = run(["ifplay", "verify", "--input", str(inp), "--out", str(out)], check=False)
    assert proc.returncode == 2 and f"{inp}:3:" in proc.stderr and not out.exists()


def test_verify_file_writes_atomically(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "code": code("return True"), "response": "x"}) + "\n", encoding="utf-8")
    summary = verify_file(inp, tmp_path / "out.jsonl", workers=1)
    assert summary["counts"] == {"true": 1, "false": 0} and summary["calls"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary left


# -- the hostile corpus -------------------------------------------------------------------------
SECRET = "ifplay-canary-" + os.urandom(6).hex()


@pytest.fixture
def canaries(tmp_path, monkeypatch):
    """A file, a directory, an environment variable and a listening socket that hostile code targets."""
    monkeypatch.setenv("IFPLAY_SANDBOX_SECRET", SECRET)
    directory = tmp_path / "canary"
    directory.mkdir()
    canary = directory / "canary.txt"
    canary.write_text(SECRET, encoding="utf-8")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield {"file": str(canary), "dir": str(directory), "port": server.getsockname()[1]}
    accepted = 0
    try:
        while True:
            server.accept()[0].close()
            accepted += 1
    except BlockingIOError:
        pass
    server.close()
    assert accepted == 0, "a verifier reached the parent's network"
    assert canary.read_text(encoding="utf-8") == SECRET, "a verifier changed a file outside the sandbox"
    assert sorted(p.name for p in directory.iterdir()) == ["canary.txt"], "a verifier wrote a file"
    assert os.environ["IFPLAY_SANDBOX_SECRET"] == SECRET


def hostile_corpus(c: dict) -> list[tuple[str, str, set]]:
    """(kind, code, acceptable errors) with the full policy; each returns True if its attack worked."""
    f, d, port = c["file"], c["dir"], c["port"]
    return [
        ("infinite loop", code("while True:\n    pass"), {"timeout"}),
        ("sleep", code("import time\ntime.sleep(30)\nreturn True"), {"timeout"}),
        ("C-level hang", code("import collections, itertools\n"
                              "collections.deque(itertools.repeat(1), maxlen=0)\nreturn True"), {"timeout"}),
        ("huge integer", code("return 10 ** (10 ** 9) > 0"), {"timeout", "memory"}),
        ("regex backtracking", code("import re\nreturn re.match(r'(a+)+$', 'a' * 64 + 'b') is None"), {"timeout"}),
        ("swallowed timeouts", code("while True:\n    try:\n        while True:\n            pass\n"
                                    "    except BaseException:\n        pass"), {"timeout"}),
        ("fork bomb", code("import os\nwhile True:\n    os.fork()"), {"forbidden"}),
        ("thread bomb", code("import threading\nwhile True:\n    threading.Thread(target=min).start()"), {"forbidden"}),
        ("memory bomb", code("chunks = []\nwhile True:\n    chunks.append(bytes(10 ** 8))"), {"memory"}),
        ("memory bomb at once", code("return len([0] * 10 ** 10) > 0"), {"memory"}),
        ("deep recursion", code("return f(1)", head="def f(n):\n    return f(n + 1) + 1"),
         {"exception:RecursionError"}),
        ("file write", code(f"open({f!r}, 'w').write('pwned')\nreturn True"), {"exception:NameError"}),
        ("file write via io", code(f"import io\nio.open({f!r}, 'w').write('pwned')\nreturn True"), {"forbidden"}),
        ("file delete", code(f"import os\nos.remove({f!r})\nreturn True"), {"forbidden"}),
        ("tree delete", code(f"import shutil\nshutil.rmtree({d!r})\nreturn True"), {"forbidden"}),
        ("pathlib write", code(f"import pathlib\npathlib.Path({d!r}, 'new').write_text('x')\nreturn True"),
         {"forbidden"}),
        ("environment", code(f"import os\nreturn os.environ.get('IFPLAY_SANDBOX_SECRET') == {SECRET!r}"),
         {"forbidden"}),
        ("file outside", code(f"return {SECRET!r} in open({f!r}).read()"), {"exception:NameError"}),
        ("socket", code(f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\nreturn True"),
         {"forbidden"}),
        ("subprocess", code("import subprocess\nreturn subprocess.run(['true']).returncode == 0"), {"forbidden"}),
        ("os.system", code(f"import os\nreturn os.system('touch {d}/x') == 0"), {"forbidden"}),
        ("signal to parent", code("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nreturn True"),
         {"forbidden"}),
        ("os._exit", code("import os\nos._exit(0)"), {"forbidden"}),
        ("ctypes segfault", code("import ctypes\nctypes.string_at(0)\nreturn True"), {"forbidden"}),
        ("huge prints", code("print('x' * 10 ** 7)\nfor _ in range(10 ** 4):\n    print('spam')\nreturn False"),
         {False}),
        ("forged protocol lines", code("for n in range(1000):\n"
                                       "    print('\\x00\\x00\\x00\\x0c{\"codes\":\"1\"}' * 50, flush=True)\n"
                                       "return False"), {False}),
        ("patched builtins", code("__builtins__['len'] = lambda x: 0\n__builtins__['isinstance'] = None\n"
                                  "return len('abc') == 0"), {True}),  # only its own copy
        ("patched module", code("import re\nre.match = lambda *a: True\nreturn True"), {"forbidden"}),
        ("patched class", code("from collections import Counter\nCounter.most_common = None\nreturn True"), {True}),
        ("import builtins", code("import builtins\nbuiltins.len = None\nreturn True"), {"forbidden"}),
        ("subclasses escape", code("return [c for c in ().__class__.__base__.__subclasses__()] != []"),
         {"forbidden"}),
        ("getattr escape", code("g = getattr(getattr, '__glob' + 'als__')\nreturn 'os' in g"), {"forbidden"}),
        ("frame escape", code("def gen():\n    yield\nit = gen()\nreturn it.gi_frame is not None"), {"forbidden"}),
        ("format escape", code("import string\n"
                               "return string.Formatter().get_field('0.__glob' + 'als__', [getattr], {}) is not None"),
         {"forbidden"}),
        ("attrgetter escape", code("import operator\nreturn operator.attrgetter('__glob' + 'als__')(getattr) != 0"),
         {"forbidden"}),
        ("eval with fresh globals", code("return eval(\"__import__('os')\", {}) is not None"), {"forbidden"}),
        ("exec escape", code("ns = {}\nexec('import os', ns)\nreturn 'os' in ns"), {"forbidden"}),
        ("loader", code("return __loader__.load_module('posix') is not None"), {"exception:NameError"}),
        ("globals via iter", code("import heapq\n"
                                  "g = next(heapq.merge(iter(globals, None)))\nreturn '__builtins__' in g and "
                                  "'open' in g['__builtins__']"), {False}),
        ("vars of a class", code("return 'mro' in vars(type) or '__subclasses__' in vars(type)"), {False}),
        ("exit", code("exit(0)"), {"exception:NameError"}),
        ("open missing", code("return open is not None"), {"exception:NameError"}),
        ("catch forbidden", code("try:\n    ().__class__.__base__\nexcept BaseException:\n    pass\nreturn True"),
         {"forbidden"}),
        ("finalizer loop", code("t = T()\nreturn True",
                                head="class T:\n    def __del__(self):\n        while True:\n            pass"),
         {"timeout"}),
        ("metaclass name", code("raise E()", head="class M(type):\n    @property\n    def __name__(cls):\n"
                                                  "        while True:\n            pass\n"
                                                  "class E(Exception, metaclass=M):\n    pass"), {"exception:E"}),
    ]


HONEST = [  # (code, response, expected), interleaved around every hostile verifier
    (code("return response.startswith('yes')"), "yes indeed", True),
    (code("import re, math\nreturn bool(re.match('yes', response)) and math.pi > 3.14 and "
          "len(response) > 2 and isinstance(response, str)"), "no way", False),
    (code("from collections import Counter\nreturn Counter(response)['e'] == 2 and "
          "'TRUE' == 'true'.upper()"), "eerie"[1:], True),
]


def interleave(hostile: list[tuple[str, str, set]]) -> tuple[list, dict]:
    """Honest, hostile, honest, ...; every honest code unique (a comment) so that batches, which are
    grouped by code, keep this order."""
    items, expected = [], {}
    n = 0
    for kind, source, _ in hostile:
        for _ in range(2):
            h_code, h_response, h_expected = HONEST[n % len(HONEST)]
            items.append((f"honest{n}", h_code + f"# {n}\n", h_response))
            expected[f"honest{n}"] = h_expected
            n += 1
        items.append((kind, source, "yes"))
    return items, expected


def check_run(sandbox: Sandbox, corpus: list[tuple[str, str, set]], budget: float) -> dict:
    items, honest = interleave(corpus)
    start = time.monotonic()
    results = sandbox.run(items)
    elapsed = time.monotonic() - start
    assert elapsed < budget, f"the hostile run took {elapsed:.1f} s"
    by_id = {r.id: r for r in results}
    assert [r.id for r in results] == [i[0] for i in items]
    wrong = {k: outcome(by_id[k]) for k, v in honest.items() if outcome(by_id[k]) is not v}
    assert not wrong, f"honest verifiers misjudged after hostile ones: {wrong}"
    observed = {kind: outcome(by_id[kind]) for kind, _, _ in corpus}
    unexpected = {kind: observed[kind] for kind, _, ok in corpus if observed[kind] not in ok}
    assert not unexpected, f"hostile verifiers not contained as expected: {unexpected}"
    return observed


def test_hostile_corpus_is_contained(canaries):
    corpus = hostile_corpus(canaries)
    with Sandbox(workers=2, call_timeout=TIMEOUT, batch_size=4) as sandbox:
        observed = check_run(sandbox, corpus, budget=40)
        # ... and the sandbox still works afterwards
        assert [r.result for r in sandbox.run([(0, HONEST[0][0], "yes"), (1, HONEST[0][0], "no")])] == [True, False]
    print("\n" + "\n".join(f"{kind:<24} {value}" for kind, value in observed.items()))


NOT_THERE = {"exception:FileNotFoundError", "exception:PermissionError"}  # the chroot is empty and unreadable


def os_layer_corpus(c: dict) -> list[tuple[str, str, set]]:
    """Hostile code with real builtins and os, socket, subprocess, ctypes, signal preloaded: only the
    operating-system layer stands in the way. Loops are bounded in case a layer were missing."""
    f, d, port = c["file"], c["dir"], c["port"]
    return [
        ("fork bomb", code("import os\nfor _ in range(20):\n    if os.fork() == 0:\n        os._exit(0)\n"
                           "return True"), {"exception:BlockingIOError"}),
        ("thread bomb", code("import _thread, time\nfor _ in range(20):\n"
                             "    _thread.start_new_thread(time.sleep, (5,))\nreturn True"),
         {"exception:RuntimeError"}),
        ("file write", code(f"open({f!r}, 'w').write('pwned')\nreturn True"), NOT_THERE),
        ("file write at root", code("open('/pwned', 'w').write('x')\nreturn True"),
         {"exception:PermissionError", "exception:FileNotFoundError"}),
        ("file delete", code(f"import os\nos.remove({f!r})\nreturn True"), NOT_THERE),
        ("list root", code("import os\nreturn len(os.listdir('/')) > 0"), {"exception:PermissionError", False}),
        ("project files", code("import os\nreturn os.path.exists('/work') or os.path.exists('/etc/passwd') or "
                               "os.path.exists('/proc/self')"), {False}),
        ("environment", code(f"import os\nreturn {SECRET!r} in repr(os.environ) or len(os.environ) > 0"), {False}),
        ("parent environment", code(f"import os\n"
                                    f"return {SECRET!r} in open('/proc/%d/environ' % os.getppid()).read()"),
         NOT_THERE),
        ("socket to parent", code(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.2)\n"
                                  "return True"), {"exception:OSError", "exception:ConnectionRefusedError"}),
        ("socket out", code("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=0.2)\nreturn True"),
         {"exception:OSError"}),
        ("subprocess", code(f"import subprocess\nsubprocess.run(['/bin/sh', '-c', 'touch {d}/x'])\nreturn True"),
         {"exception:BlockingIOError", "exception:FileNotFoundError", "exception:OSError"}),
        ("os.system", code(f"import os\nreturn os.system('touch {d}/x') == 0"), {False}),
        ("signal to parent", code("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nreturn True"),
         {"exception:PermissionError"}),
        ("privilege regain", code("import os\nos.setuid(0)\nreturn True"), {"exception:PermissionError"}),
        ("chroot escape", code("import os\nos.chroot('/')\nreturn True"), {"exception:PermissionError"}),
        ("ignore the timer", code("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                  "while True:\n    pass"), {"timeout"}),
        # kill(-1) reaches only processes of the worker's own uid, and spares the caller: nothing.
        ("kill everything", code("import os, signal\nos.kill(-1, signal.SIGKILL)\nreturn False"), {False}),
        ("os._exit", code("import os\nos._exit(0)"), {"exception:WorkerDied"}),
        ("ctypes segfault", code("import ctypes\nctypes.string_at(0)\nreturn True"), {"exception:WorkerDied"}),
        ("forged protocol frames", code("import os\nfor fd in range(3, 8):\n    try:\n"
                                        "        os.write(fd, b'\\x00\\x00\\x00\\x02{}')\n    except OSError:\n"
                                        "        pass\nreturn True"), {"forbidden"}),
        ("forged stdout", code("import os\nos.write(1, b'\\x00\\x00\\x00\\x02{}' * 1000)\nreturn False"), {False}),
        ("memory bomb", code("chunks = []\nwhile True:\n    chunks.append(bytes(10 ** 8))"), {"memory"}),
    ]


def test_os_layer_alone_contains_hostile_code(canaries):
    corpus = os_layer_corpus(canaries)
    modules = ("os", "socket", "subprocess", "ctypes", "signal", "_thread", "re", "math", "collections")
    with Sandbox(workers=2, call_timeout=TIMEOUT, batch_size=4, guard=False, modules=modules) as sandbox:
        observed = check_run(sandbox, corpus, budget=30)
    print("\n" + "\n".join(f"{kind:<24} {value}" for kind, value in observed.items()))


def test_workers_die_with_the_parent(tmp_path):
    script = ("import os, sys, time\nfrom ifplay.sandbox.runner import Sandbox\n"
              "box = Sandbox(workers=2)\nbox.start()\n"
              "print(' '.join(str(w.proc.pid) for w in box._slots), flush=True)\nos._exit(0)\n")
    proc = run(["python", "-c", script])
    pids = [int(p) for p in proc.stdout.split()]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


# -- AutoIF's sample verifiers: same answers as in-process exec --------------------------------
def autoif_calls() -> list[tuple[int, str, str]]:
    pairs = []
    for name in ("query_rft.jsonl", "dpo_query_w_funcs.jsonl"):
        for line in shared(f"autoif/{name}").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            pairs += [(c, r) for c, _ in record["eval_func"] for r in record["gpt-answer"]]
    for line in shared("autoif/back_trans.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        pairs += [(c, case[0]) for c, _ in record["eval_func"] for case in record["cases"]]
    for line in shared("autoif/eval_func_rft.jsonl").read_text(encoding="utf-8").splitlines():
        for answer in json.loads(line)["gpt-answer"]:
            try:
                parsed = json.loads(answer.split("```json", 1)[-1].split("```", 1)[0])
            except json.JSONDecodeError:
                continue  # AutoIF drops outputs whose JSON does not parse
            pairs += [(parsed["func"], case["input"]) for case in parsed["cases"]]
    return [(i, c, r) for i, (c, r) in enumerate(pairs)]


def test_autoif_samples_match_in_process_exec(box):
    calls = autoif_calls()
    assert len(calls) > 1000
    sandboxed = box.run(calls)
    reference = unsafe_in_process(calls)
    differ = [(s, r) for s, r in zip(sandboxed, reference) if s != r]
    assert not differ, differ[:5]
    kinds = {outcome(r) for r in sandboxed}
    assert {True, False} <= kinds and "exception:ValueError" in kinds  # they raise on ordinary inputs
