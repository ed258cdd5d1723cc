"""The verifier sandbox: runs AutoIF's model-written ``evaluate(response)`` functions safely and fast.

AutoIF's reference release ``exec``s verifier code inside its own process. Here every call runs in a
persistent worker process (:mod:`ifplay.sandbox.worker`) that is locked down before it sees any
untrusted code; docs/sandbox.md states the policy. In short:

* **Operating-system layer** (the security boundary): each worker runs as its own unprivileged
  uid/gid, in an empty chroot (no project files, no /proc, no /etc), in fresh network and IPC
  namespaces (no network), with an empty environment, ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``,
  ``RLIMIT_FSIZE=0`` (no file writes), ``RLIMIT_NPROC`` (no new processes or threads),
  ``RLIMIT_NOFILE``, no core dumps, ``PR_SET_NO_NEW_PRIVS`` and ``PR_SET_PDEATHSIG``. Its stdout
  and stderr are /dev/null; results come back on a separate pipe as length-prefixed JSON that the
  parent validates (never unpickles).
* **Python layer** (containment of honest mistakes, a clear ``forbidden`` verdict, no state leaking
  between calls): restricted builtins, an import allow-list served as per-worker module facades, no
  access to underscore attributes or frames, a fresh namespace per call, and shared state restored
  after every call.
* **Time**: a per-call wall-clock timer inside the worker (``timeout``), and a watchdog in the
  parent that kills and replaces a worker stuck in C code, re-running the other calls of its batch.

Speed: workers persist, each distinct code is compiled once per worker, calls travel in batches
grouped by code; ``benchmarks/sandbox_throughput.py`` measures it.

Results: ``True``/``False`` returned by ``evaluate`` are the result; so are the strings "true" and
"false" in any case with surrounding white space (as some of AutoIF's sample verifiers return
them); any other return value is ``invalid-return``.
"""

from __future__ import annotations

import json
import logging
import marshal
import mmap
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

from ifplay.sandbox import worker as _policy
from ifplay.core.records import RecordError, numbered_jsonl, write_jsonl


@dataclass(frozen=True)
class SandboxLimits:
    """The sandbox's limits as stages take them (config ``autoif.sandbox``)."""

    timeout: float  # wall-clock seconds per verifier call
    memory_mb: int  # address-space limit per sandbox worker

log = logging.getLogger(__name__)

WORKER_PATH = Path(_policy.__file__).resolve()
DEFAULT_MODULES = _policy.DEFAULT_MODULES
ERRORS = ("timeout", "memory", "exception:<Type>", "forbidden", "invalid-return", "no-evaluate", "syntax")
#: A worker that died while running a call (segfault, os._exit, killed by a limit) reports this.
WORKER_DIED = "exception:WorkerDied"
MAX_ATTEMPTS = 3          # times a call is re-run after its worker died on another call
CODE_CACHE_LIMIT = 4096   # distinct codes a worker keeps compiled before the parent resets its cache
_FRAME = _policy.FRAME
_PROGRESS = _policy.PROGRESS
_DECODE = {code: ((value, None) if isinstance(value, bool) else (None, value))
           for code, value in _policy.CODES.items() if code != "e"}


class SandboxError(RuntimeError):
    """The sandbox cannot start (isolation unavailable, worker start-up failed) or was misused."""


class Result(NamedTuple):
    """One call's outcome: ``result`` is True/False, or None with ``error`` set."""

    id: Any
    result: bool | None
    error: str | None

    def to_json(self) -> dict:
        return {"id": self.id, "result": self.result, "error": self.error}


def default_workers() -> int:
    """One worker per usable core (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _pick_uid() -> int:
    """A random uid (used as gid too) that no account uses, inside this user namespace's mapped range."""
    ranges = []
    try:
        for line in Path("/proc/self/uid_map").read_text().splitlines():
            inside, _, count = (int(x) for x in line.split())
            ranges.append((inside, inside + count))
    except (OSError, ValueError):
        ranges = [(0, 1 << 32)]
    for lo, hi in ranges:  # prefer a range far from any real account
        lo, hi = max(lo, 1_500_000_000), min(hi, 2_000_000_000)
        if hi - lo > 1000:
            return lo + secrets.randbelow(hi - lo)
    lo, hi = max(ranges, key=lambda r: r[1] - r[0])
    lo, hi = max(lo, 10_000), min(hi, 65_534)
    if hi - lo < 100:
        raise SandboxError("no unprivileged uid is mapped in this user namespace for sandbox workers")
    return lo + secrets.randbelow(hi - lo)


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, box: "Sandbox"):
        self.box = box
        self.uid = _pick_uid()
        self.jail = tempfile.mkdtemp(prefix="ifplay-sandbox-")
        os.chmod(self.jail, 0o100)  # root-owned, nothing to list or create for the worker's uid
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        shm_fd = os.memfd_create("ifplay-sandbox-progress", 0)
        os.ftruncate(shm_fd, _PROGRESS.size)
        self.shm = mmap.mmap(shm_fd, _PROGRESS.size)
        self.stderr = tempfile.TemporaryFile()
        self.alive = False
        cfg = {
            "req_fd": req_r, "rep_fd": rep_w, "shm_fd": shm_fd, "jail": self.jail, "uid": self.uid,
            "gid": self.uid, "parent_pid": os.getpid(), "modules": list(box.modules), "guard": box.guard,
            "call_timeout": box.call_timeout,
            "limits": {"memory_bytes": box.memory_mb << 20, "cpu_seconds": box.cpu_seconds,
                       "processes": box.processes, "open_files": 8},
        }
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(WORKER_PATH), json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr, env={},
                cwd="/", pass_fds=(req_r, rep_w, shm_fd), close_fds=True, start_new_session=True)
        except OSError as err:
            for fd in (self.req_w, self.rep_r):
                os.close(fd)
            self.shm.close()
            self.stderr.close()
            self._drop_jail()
            raise SandboxError(f"cannot start a sandbox worker: {err}") from err
        finally:
            for fd in (req_r, rep_w, shm_fd):
                os.close(fd)
        self.alive = True
        os.set_blocking(self.rep_r, False)
        self.buf = bytearray()
        self.known: set[int] = set()   # code ids this worker has been sent
        self.batch: list[int] | None = None
        self.nonce = 0
        self.sent_at = 0.0
        self.progress = (0, 0)
        self.progress_since = 0.0
        self.layers: dict = {}
        self.problems: dict = {}

    # -- framing --
    def read_frame(self) -> tuple[str, Any]:
        """('frame', obj) | ('eof', None) | ('none', None) | ('bad', reason)."""
        while True:
            try:
                chunk = os.read(self.rep_r, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                return "eof", None
            if not chunk:
                if len(self.buf) >= _FRAME.size:
                    break  # parse what is there first
                return "eof", None
            self.buf += chunk
        if len(self.buf) < _FRAME.size:
            return "none", None
        (length,) = _FRAME.unpack_from(self.buf)
        if length > (1 << 20):
            return "bad", f"frame of {length} bytes"
        if len(self.buf) < _FRAME.size + length:
            return "none", None
        body = bytes(self.buf[_FRAME.size:_FRAME.size + length])
        del self.buf[:_FRAME.size + length]
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return "bad", "frame is not JSON"
        if not isinstance(obj, dict):
            return "bad", "frame is not a JSON object"
        return "frame", obj

    def send(self, obj) -> None:
        body = marshal.dumps(obj)
        data = memoryview(_FRAME.pack(len(body)) + body)
        while data:
            data = data[os.write(self.req_w, data):]

    def read_progress(self) -> tuple[int, int]:
        return _PROGRESS.unpack_from(self.shm)

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            kind, obj = self.read_frame()
            if kind == "frame":
                if "error" in obj:
                    raise SandboxError(f"sandbox worker failed to start: {obj['error']}")
                if obj.get("ready") is True:
                    self.layers = obj.get("layers", {})
                    self.problems = obj.get("problems", {})
                    self._drop_jail()
                    return
                raise SandboxError(f"sandbox worker sent an unexpected first frame: {obj}")
            if kind in ("eof", "bad"):
                self.stderr.seek(0)
                detail = self.stderr.read()[-2000:].decode(errors="replace")
                raise SandboxError(f"sandbox worker exited during start-up (status {self.proc.poll()}): {detail}")
            sel = selectors.DefaultSelector()
            sel.register(self.rep_r, selectors.EVENT_READ)
            sel.select(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            sel.close()
        raise SandboxError("sandbox worker did not start within 60 s")

    def _drop_jail(self) -> None:
        try:
            os.rmdir(self.jail)  # the worker is chrooted into it already; nothing else needs it
        except OSError:
            pass

    def kill(self) -> None:
        if not self.alive:
            return
        self.alive = False
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.box.processes > 1:
            _kill_uid(self.uid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("sandbox worker %d did not exit after SIGKILL", self.proc.pid)
        for fd in (self.req_w, self.rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.shm.close()
        self.stderr.close()
        self._drop_jail()


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (a worker's children, if it was allowed any): kill(-1) as that uid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # also kills this helper
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _item_fields(item) -> tuple[Any, str, str]:
    if isinstance(item, dict):
        try:
            return item["id"], item["code"], item["response"]
        except KeyError as err:
            raise SandboxError(f"sandbox item lacks field {err.args[0]!r}") from None
    ident, code, response = item
    return ident, code, response


class Sandbox:
    """A pool of locked-down verifier workers. Use as a context manager; not thread-safe.

    ``run(items)`` takes ``{"id", "code", "response"}`` dicts (or ``(id, code, response)`` tuples)
    and returns one :class:`Result` per item, in order. ``code`` defines ``evaluate(response)``;
    ``response`` is a string.

    call_timeout: wall-clock seconds per call (executing the code's top level plus ``evaluate``).
    memory_mb:    address-space limit per worker (``RLIMIT_AS``).
    cpu_seconds:  CPU-time limit per worker (``RLIMIT_CPU``); a worker retires and is replaced
                  after using half of it.
    processes:    ``RLIMIT_NPROC`` of the worker's uid: 1 means no new processes or threads.
    batch_size:   calls sent to a worker at a time (fewer for short runs, to spread them).
    modules:      modules verifiers may import (standard library; see ``DEFAULT_MODULES``).
    guard:        the Python-level policy (restricted builtins, imports, attributes, state
                  restoration). ``guard=False`` leaves only the operating-system layer, with real
                  builtins: for testing that layer, never for real work.
    strict:       refuse to start unless every operating-system layer is in force (needs root);
                  ``strict=False`` allows running without root with rlimits and the Python layer.
    """

    def __init__(self, workers: int | None = None, call_timeout: float = 2.0, memory_mb: int = 512,
                 cpu_seconds: int = 600, processes: int = 1, batch_size: int = 512,
                 modules: Iterable[str] = DEFAULT_MODULES, guard: bool = True, strict: bool = True,
                 grace: float | None = None):
        if call_timeout <= 0 or memory_mb < 64 or cpu_seconds < 1 or processes < 1 or batch_size < 1:
            raise SandboxError("sandbox limits must be positive (memory_mb at least 64)")
        self.workers = workers or default_workers()
        self.call_timeout = float(call_timeout)
        self.memory_mb = int(memory_mb)
        self.cpu_seconds = int(cpu_seconds)
        self.processes = int(processes)
        self.batch_size = int(batch_size)
        self.modules = tuple(modules)
        self.guard = bool(guard)
        self.strict = bool(strict)
        # The worker's own timer handles ordinary timeouts; the parent's watchdog is the backstop.
        self.grace = float(grace) if grace is not None else max(1.0, 0.5 * self.call_timeout)
        self._slots: list[_Worker | None] = []
        self._warned = False
        self._code_ids: dict[str, int] = {}
        self.stats = {"calls": 0, "worker_starts": 0, "worker_kills": 0, "worker_deaths": 0}
        if self.strict and os.geteuid() != 0:
            raise SandboxError("the verifier sandbox needs root for its namespaces, chroot and uid drop "
                               "(or strict=False for rlimits and the Python-level policy only)")

    # -- life cycle --
    def __enter__(self) -> "Sandbox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self._slots:
            return
        self._slots = [None] * self.workers
        self._spawn([i for i in range(self.workers)])

    def _spawn(self, slots: list[int]) -> None:
        fresh = []
        try:
            for slot in slots:
                worker = _Worker(self)
                self._slots[slot] = worker
                fresh.append(worker)
            deadline = time.monotonic() + 60
            for worker in fresh:
                worker.wait_ready(deadline)
                self._check_layers(worker)
        except BaseException:
            for worker in fresh:
                worker.kill()
            for slot in slots:
                self._slots[slot] = None
            raise
        self.stats["worker_starts"] += len(fresh)

    def _check_layers(self, worker: _Worker) -> None:
        missing = sorted(k for k, v in worker.layers.items() if not v)
        if not missing:
            return
        detail = ", ".join(f"{k} ({worker.problems[k]})" if k in worker.problems else k for k in missing)
        if self.strict:
            raise SandboxError(f"sandbox isolation layer(s) not in force: {detail}; the sandbox needs root "
                               "with CAP_SYS_ADMIN (or strict=False to run without them)")
        if not self._warned:
            log.warning("sandbox running without %s (strict=False)", detail)
            self._warned = True

    @property
    def layers(self) -> dict:
        """Which operating-system isolation layers the workers report (after start)."""
        for worker in self._slots:
            if worker is not None:
                return dict(worker.layers)
        return {}

    def close(self) -> None:
        for worker in self._slots:
            if worker is not None:
                worker.kill()
        self._slots = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- running --
    def verify(self, code: str, responses: Iterable[str]) -> list[Result]:
        """One verifier on many responses (ids are the response indices)."""
        return self.run([(i, code, r) for i, r in enumerate(responses)])

    def run(self, items: Iterable, progress: bool = False) -> list[Result]:
        """Run every item's ``evaluate(response)``; results in input order."""
        items = [_item_fields(item) for item in items]
        for ident, code, response in items:
            if not isinstance(code, str) or not isinstance(response, str):
                raise SandboxError(f"sandbox item {ident!r}: code and response must be strings")
        if not items:
            return []
        self.start()
        if len(self._code_ids) > 100_000:
            self._code_ids.clear()
            for worker in self._slots:
                if worker is not None:
                    worker.known.clear()
                    worker.known.add(-1)  # forces a cache reset with the next batch
        cids = [self._code_ids.setdefault(code, len(self._code_ids)) for _, code, _ in items]
        order = sorted(range(len(items)), key=cids.__getitem__)
        # Batches of batch_size, smaller for short runs so that every worker gets several.
        size = max(1, min(self.batch_size, -(-len(items) // (4 * self.workers))))
        queue = deque(order[i:i + size] for i in range(0, len(order), size))
        run = _Run(self, items, cids, queue, progress)
        return run.execute()


class _Run:
    """One ``Sandbox.run``: dispatch batches, collect replies, recover from dead or stuck workers."""

    def __init__(self, box: Sandbox, items, cids, queue, progress):
        self.box, self.items, self.cids, self.queue = box, items, cids, queue
        self.results: list[Result | None] = [None] * len(items)
        self.attempts: dict[int, int] = {}
        self.done = 0
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(items), unit="call", desc="verify", disable=None)

    def execute(self) -> list[Result]:
        box = self.box
        selector = selectors.DefaultSelector()
        try:
            while self.queue or any(w is not None and w.batch is not None for w in box._slots):
                self._dispatch()
                busy = {w.rep_r: w for w in box._slots if w is not None and w.batch is not None}
                for fd in busy:
                    selector.register(fd, selectors.EVENT_READ)
                events = selector.select(timeout=0.05)
                for key, _ in events:
                    self._on_readable(busy[key.fd])
                for fd in busy:
                    selector.unregister(fd)
                self._watchdog()
        finally:
            selector.close()
            if self.bar is not None:
                self.bar.close()
            for worker in list(box._slots):  # interrupted (e.g. Ctrl-C): drop workers mid-batch
                if worker is not None and worker.batch is not None:
                    worker.batch = None
                    self._replace(worker, died=False)
        box.stats["calls"] += len(self.items)
        assert all(r is not None for r in self.results)
        return self.results  # type: ignore[return-value]

    # -- sending --
    def _dispatch(self) -> None:
        box = self.box
        dead = [i for i, w in enumerate(box._slots) if w is None]
        if dead and self.queue:
            box._spawn(dead)
        for worker in box._slots:
            if worker is None or worker.batch is not None or not self.queue:
                continue
            batch = self.queue.popleft()
            reset = len(worker.known) > CODE_CACHE_LIMIT or -1 in worker.known
            if reset:
                worker.known.clear()
            new_codes = []
            for i in batch:
                cid = self.cids[i]
                if cid not in worker.known:
                    worker.known.add(cid)
                    new_codes.append((cid, self.items[i][1]))
            worker.nonce = secrets.randbits(62) + 1
            message = (worker.nonce, reset, new_codes, [(self.cids[i], self.items[i][2]) for i in batch])
            worker.batch = batch
            worker.sent_at = worker.progress_since = time.monotonic()
            worker.progress = (0, 0)
            try:
                worker.send(message)
            except OSError:  # it died before reading: nothing of the batch ran
                self.queue.appendleft(batch)
                worker.batch = None
                self._replace(worker, died=True)

    # -- receiving --
    def _on_readable(self, worker: _Worker) -> None:
        kind, obj = worker.read_frame()
        if kind == "none":
            return
        if kind == "eof":
            self._fail(worker, WORKER_DIED)
            return
        if kind == "bad":
            log.warning("sandbox worker %d broke the protocol (%s); replacing it", worker.proc.pid, obj)
            self._fail(worker, "forbidden")
            return
        reason = self._accept(worker, obj)
        if reason:
            log.warning("sandbox worker %d sent an invalid reply (%s); replacing it", worker.proc.pid, reason)
            self._fail(worker, "forbidden")

    def _accept(self, worker: _Worker, obj: dict) -> str | None:
        batch = worker.batch
        codes, excs = obj.get("codes"), obj.get("exc")
        if obj.get("nonce") != worker.nonce:
            return "wrong nonce"
        if not isinstance(codes, str) or len(codes) != len(batch) or not isinstance(excs, dict):
            return "wrong shape"
        if worker.buf:
            return "bytes after the reply"
        decoded = []
        for index, code in enumerate(codes):
            value = _DECODE.get(code)
            if value is None:
                if code != "e":
                    return f"unknown result code {code!r}"
                name = excs.get(str(index))
                if not (isinstance(name, str) and name.isidentifier() and name.isascii() and len(name) <= 64):
                    return "bad exception name"
                value = (None, f"exception:{name}")
            decoded.append(value)
        items, results = self.items, self.results
        for i, (value, error) in zip(batch, decoded):
            if results[i] is None:
                self.done += 1
            results[i] = Result(items[i][0], value, error)
        if self.bar is not None:
            self.bar.update(len(batch))
        worker.batch = None
        if obj.get("retire") is True:
            self._replace(worker, died=False)
        return None

    def _set(self, i: int, value, error) -> None:
        if self.results[i] is None:
            self.done += 1
            if self.bar is not None:
                self.bar.update(1)
        self.results[i] = Result(self.items[i][0], value, error)

    # -- failures --
    def _watchdog(self) -> None:
        now = time.monotonic()
        box = self.box
        for worker in box._slots:
            if worker is None or worker.batch is None:
                continue
            progress = worker.read_progress()
            if progress != worker.progress:
                worker.progress, worker.progress_since = progress, now
            stuck = now - worker.progress_since > box.call_timeout + box.grace
            overdue = now - worker.sent_at > len(worker.batch) * (box.call_timeout + 0.5) + box.grace + 5
            if stuck or overdue:
                log.warning("sandbox worker %d stuck in a call for %.1f s; killing it",
                            worker.proc.pid, now - worker.progress_since)
                box.stats["worker_kills"] += 1
                self._fail(worker, "timeout")

    def _fail(self, worker: _Worker, error: str) -> None:
        """The worker died, hung or lied: blame the call in progress, re-run the rest elsewhere."""
        batch = worker.batch
        nonce, index = worker.read_progress()
        if error == WORKER_DIED:
            self.box.stats["worker_deaths"] += 1
        worker.batch = None
        self._replace(worker, died=True)
        if not batch:
            return
        if error == "forbidden" and len(batch) > 1:
            # A forged or broken reply: the worker ran on after it, so its progress proves nothing.
            for i in reversed(batch):
                self._requeue([i], error)
            return
        if nonce == worker.nonce and 0 <= index < len(batch):
            culprit = batch[index]
            self._set(culprit, None, error)
            rest = batch[:index] + batch[index + 1:]
        elif len(batch) == 1:
            self._set(batch[0], None, error)
            rest = []
        else:  # no trustworthy progress: re-run one by one to find the culprit
            for i in reversed(batch):
                self._requeue([i], error)
            return
        if rest:
            self._requeue(rest, error)

    def _requeue(self, batch: list[int], error: str) -> None:
        keep = []
        for i in batch:
            self.attempts[i] = self.attempts.get(i, 0) + 1
            if self.attempts[i] > MAX_ATTEMPTS:
                self._set(i, None, error)
            else:
                keep.append(i)
        if keep:
            self.queue.appendleft(keep)

    def _replace(self, worker: _Worker, died: bool) -> None:
        worker.kill()
        slots = self.box._slots
        slots[slots.index(worker)] = None  # re-spawned by the next dispatch that has work


# -- files and command line ---------------------------------------------------------------------
def read_items(path: str | os.PathLike) -> list[dict]:
    """Read ``{"id", "code", "response"}`` lines; errors name the file and line."""
    items = []
    for lineno, record in numbered_jsonl(path, required=("id", "code", "response")):
        for field in ("code", "response"):
            if not isinstance(record[field], str):
                raise RecordError(f"{path}:{lineno}: field {field!r} must be a string, "
                                  f"got {type(record[field]).__name__}")
        items.append({"id": record["id"], "code": record["code"], "response": record["response"]})
    return items


def summarize(results: list[Result]) -> dict:
    counts: dict[str, int] = {"true": 0, "false": 0}
    for r in results:
        key = "true" if r.result is True else "false" if r.result is False else r.error
        counts[key] = counts.get(key, 0) + 1
    return counts


def verify_file(in_path: str | os.PathLike, out_path: str | os.PathLike, progress: bool = False,
                **sandbox_args) -> dict:
    """``ifplay verify``: results of every input line, written atomically in input order."""
    items = read_items(in_path)
    start = time.perf_counter()
    with Sandbox(**sandbox_args) as box:
        results = box.run(items, progress=progress)
    seconds = time.perf_counter() - start
    write_jsonl(out_path, (r.to_json() for r in results))
    return {"calls": len(results), "seconds": round(seconds, 3), "counts": summarize(results)}


def unsafe_in_process(items: Iterable) -> list[Result]:
    """UNSAFE reference: AutoIF's way (``exec`` in this process), for equivalence tests and benchmarks
    only. Each code is executed once; its ``evaluate`` is called per response; same return rule."""
    namespaces: dict[str, Any] = {}
    results = []
    for ident, code, response in (_item_fields(item) for item in items):
        ns = namespaces.get(code)
        if ns is None:
            ns = {"__name__": "__verifier__"}
            try:
                exec(compile(code, "<verifier>", "exec"), ns)  # noqa: S102 - the point of this reference
            except SyntaxError:
                ns = "syntax"
            except Exception as exc:  # noqa: BLE001
                ns = f"exception:{type(exc).__name__}"
            namespaces[code] = ns
        if isinstance(ns, str):
            results.append(Result(ident, None, ns))
            continue
        fn = ns.get("evaluate")
        if not callable(fn):
            results.append(Result(ident, None, "no-evaluate"))
            continue
        try:
            value = fn(response)
        except Exception as exc:  # noqa: BLE001
            results.append(Result(ident, None, f"exception:{type(exc).__name__}"))
            continue
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        results.append(Result(ident, value, None) if isinstance(value, bool) else Result(ident, None, "invalid-return"))
    return results


def _cmd_verify(args) -> None:
    summary = verify_file(args.input, args.out, progress=True, workers=args.workers,
                          call_timeout=args.timeout, memory_mb=args.memory_mb, batch_size=args.batch_size)
    rate = summary["calls"] / summary["seconds"] if summary["seconds"] else 0.0
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    print(f"{summary['calls']} calls in {summary['seconds']:.2f} s ({rate:.0f}/s): {counts} -> {args.out}")


def add_cli(sub) -> None:
    """Register ``verify`` on the ``ifplay`` subparsers."""
    p = sub.add_parser("verify", help="run AutoIF verifier code on responses in the sandbox")
    p.add_argument("--input", required=True, help="JSONL: id, code (defines evaluate(response)), response")
    p.add_argument("--out", required=True, help="JSONL in input order: id, result (true/false/null), error")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--timeout", type=float, default=2.0, help="wall-clock seconds per call")
    p.add_argument("--memory-mb", type=int, default=512, help="address-space limit per worker")
    p.add_argument("--batch-size", type=int, default=512, help="calls sent to a worker at a time (at most)")
    p.set_defaults(func=_cmd_verify)


def make_sandbox(timeout: float, memory_mb: int, workers: int | None = None):
    """The verifier sandbox with every isolation layer when running as root; otherwise (a cluster
    login without root) its rlimits and Python-level policy only, said in the log."""
    strict = os.geteuid() == 0
    if not strict:
        log.warning("not root: the verifier sandbox runs without namespaces, chroot and uid drop")
    return Sandbox(workers=workers, call_timeout=timeout, memory_mb=memory_mb, strict=strict)


def execute(box, jobs: list[tuple[list[str], list[str]]], progress: bool = False) -> list[list[list]]:
    """For each job ``(functions, texts)``: the sandbox :class:`~ifplay.sandbox.runner.Result` of every function
    on every text (``[f][t]``), all jobs in one ``box.run``."""
    items = [((j, f, t), code, text) for j, (funcs, texts) in enumerate(jobs)
             for f, code in enumerate(funcs) for t, text in enumerate(texts)]
    out = [[[None] * len(texts) for _ in funcs] for funcs, texts in jobs]
    for ((j, f, t), _, _), result in zip(items, box.run(items, progress=progress) if items else []):
        out[j][f][t] = result
    return out
