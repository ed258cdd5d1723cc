"""Warm job starts: one process that has imported torch and transformers forks each ``ifplay`` job.

Every Snakemake job is a fresh ``ifplay`` process, and before it reads a line of input it pays for
its imports: torch, transformers, NLTK, lm-eval's checkers, datasets (``benchmarks/startup.py``; 4.5
to 9 s a job on the 2-core machines of ``benchmarks/README.md``, "Per-job start-up"), while most of
the default's jobs do seconds of work. For a local run (``snakemake --cores N``, not ``--executor
slurm``) the workflow's ``onstart`` hook (``workflow/rules/common.smk``) starts one *warm server*:
a process that imports those modules once and listens on a Unix socket. The ``ifplay`` command of
a job then sends its argv, working directory, environment and its stdin/stdout/stderr (the job's
log) to the server instead of importing anything; the server forks a child that becomes the job
(same files, same environment, same working directory) and sends back the child's exit status. The
job's own ``ifplay`` process waits, forwards signals (Snakemake cancelling a job) to the child, and
exits with the child's status; if it is killed, the child is killed too.

What a job computes does not change: the child runs the same ``ifplay`` code on the same files
with the same environment and thread count (``OMP_NUM_THREADS``, which Snakemake sets per job, is
applied with ``torch.set_num_threads`` as a fresh process would read it). The server refuses a job
(which then runs as a fresh process, "cold") whose Python or ``ifplay`` differs from its own (a
rule's conda environment) or whose environment differs from the server's in anything but the
variables Snakemake sets per job (threads, temporary directory). ``tests/test_warm.py`` checks that
a stage's outputs are byte-identical warm and cold.

Off: ``IFPLAY_WARM_START=0`` in the environment of ``snakemake``. Not used under SLURM or another
cluster executor (jobs run on other machines), nor in a job's own Snakemake (remote execution).
A warm job's ``benchmark:`` file has the right wall time (``s``) but counts the CPU time and memory
of the waiting client, not of the job: its log ends with a ``warm start:`` line giving the job's
own CPU seconds and peak memory.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = "ifplay.cli:run"  # what a job's process calls with the job's argv (the CLI, in this process)
SOCKET_ENV = "IFPLAY_WARM"  # the server's socket, in the environment Snakemake gives its jobs
SWITCH_ENV = "IFPLAY_WARM_START"  # "0": no warm server

# Imported once by the server: what ifplay's stages import inside their commands (each optional:
# an environment without one still serves the others). Keep heavy, import-only modules here; never
# anything that starts threads of its own work or an engine (vLLM).
PRELOAD = (
    "torch",
    "ifplay.core.hf:import_transformers()",
    "transformers:AutoModelForCausalLM,AutoTokenizer,AutoConfig,DynamicCache",
    "transformers.masking_utils",
    "transformers.integrations.sdpa_attention",
    "datasets",
    "pandas",
    "matplotlib",
    "nltk",
    "langdetect",
    "lm_eval.tasks.ifeval.instructions_registry",
    "if_verifiable",
    "requests",
    "ifplay.cli:build_parser()",
)

# Variables a job's environment may have that the server's lacks or sets otherwise: Snakemake's
# per-job thread counts and temporary directory, the shell's own, and the rule's PATH prefix.
# Any other difference (HF_HUB_OFFLINE, NLTK_DATA, a cache directory: read by modules at import)
# makes the job run cold.
PER_JOB_ENV = {"OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TMPDIR", "TMP", "TEMP", "TEMPDIR",
               "PATH", "PWD", "OLDPWD", "SHLVL", "_", SOCKET_ENV}

_HEADER = struct.Struct("!I")
_server: subprocess.Popen | None = None
_socket_dir: str | None = None


# -- the wire: length-prefixed JSON messages, the first one carrying the job's three file descriptors --
def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    conn.sendmsg([_HEADER.pack(len(data)) + data], ancillary)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    chunks = b""
    while len(chunks) < n:
        chunk = conn.recv(n - len(chunks))
        if not chunk:
            raise EOFError("warm start: the other end closed the connection")
        chunks += chunk
    return chunks


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    fds: list[int] = []
    if with_fds:
        msg, ancillary, _flags, _addr = conn.recvmsg(_HEADER.size, socket.CMSG_LEN(with_fds * 4))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        if not msg:
            raise EOFError("warm start: the other end closed the connection")
        header = msg + _recv_exactly(conn, _HEADER.size - len(msg))
    else:
        header = _recv_exactly(conn, _HEADER.size)
    (length,) = _HEADER.unpack(header)
    return json.loads(_recv_exactly(conn, length)), fds


def identity() -> dict:
    """What must be equal in client and server for a warm start: the interpreter and ifplay itself."""
    return {"executable": os.path.realpath(sys.executable), "prefix": sys.prefix,
            "ifplay": str(Path(__file__).resolve().parents[1])}


def env_mismatch(server_env: dict, job_env: dict) -> list[str]:
    """The variables (other than PER_JOB_ENV) whose values differ between the server and a job."""
    keys = (set(server_env) | set(job_env)) - PER_JOB_ENV
    return sorted(k for k in keys if server_env.get(k) != job_env.get(k) and not k.startswith("SNAKEMAKE"))


# -- the client: the `ifplay` command of a job -------------------------------------------------------
def run_client(argv: list[str]) -> int | None:
    """Run ``ifplay ARGV`` in a child of the warm server; its exit status, or None to run it here
    (no server, or the server refused: then nothing has run)."""
    path = os.environ.get(SOCKET_ENV)
    if not path or os.environ.get(SWITCH_ENV) == "0":
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask(),
                     "identity": identity()}, fds=[0, 1, 2])
        reply, _ = _recv(conn)
    except (OSError, EOFError):
        conn.close()
        return None
    if "cold" in reply:
        conn.close()
        return None
    child = int(reply["pid"])

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    try:
        status, _ = _recv(conn)
    except (OSError, EOFError):
        print("ifplay: the warm server ended before the job did (its log: the workflow's "
              "logs/warm-server.log)", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if status.get("signal"):
        print(f"ifplay: the job was killed by signal {status['signal']}", file=sys.stderr)
        return 128 + int(status["signal"])
    return int(status["returncode"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the server ------------------------------------------------------------------------------------
def preload(modules=PRELOAD) -> dict[str, float]:
    """Import each entry: ``module``, ``module:attr,attr`` (attributes resolved: transformers' lazy
    classes) or ``module:function()`` (called); seconds per entry, those not installed skipped."""
    import importlib

    seconds = {}
    for entry in modules:
        start = time.perf_counter()
        name, _, attrs = entry.partition(":")
        try:
            module = importlib.import_module(name)
            for attr in filter(None, attrs.split(",")):
                value = getattr(module, attr.removesuffix("()"))
                if attr.endswith("()"):
                    value()
        except ImportError:
            continue
        seconds[entry] = round(time.perf_counter() - start, 3)
    return seconds


def serve(path: str, parent: int | None, modules=PRELOAD) -> None:
    """Import MODULES, then serve jobs on the Unix socket PATH until SIGTERM or until PARENT (the
    Snakemake process) is gone."""
    server_env = dict(os.environ)  # before the imports, which set some variables of their own
    seconds = preload(modules)
    print(f"warm server {os.getpid()}: imported {json.dumps(seconds)}", flush=True)
    # The imported modules' objects out of the garbage collector's sight: a job's collections would
    # otherwise walk them all (and copy the pages they touch), which made warm generation ~10% slower
    # than cold on a 2-core Xeon (benchmarks/README.md, "Per-job start-up"); with this it is not.
    gc.collect()
    gc.freeze()
    imports_set = {k: v for k, v in os.environ.items() if server_env.get(k) != v}
    imports_set.update({k: None for k in server_env if k not in os.environ})
    own = identity()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    os.replace(tmp, path)  # the socket appears only when it accepts
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-job supervisors are reaped by the kernel
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    sys.stdout.flush()
    sys.stderr.flush()
    while not stop:
        if parent is not None and os.getppid() != parent:
            break
        try:
            ready, _, _ = select.select([listener], [], [], 1.0)
        except InterruptedError:
            continue
        if not ready:
            continue
        conn, _ = listener.accept()
        if os.fork() == 0:  # the job's supervisor
            listener.close()
            try:
                _supervise(conn, server_env, imports_set, own)
            finally:
                os._exit(0)
        conn.close()
    listener.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _supervise(conn: socket.socket, server_env: dict, imports_set: dict, own: dict) -> None:
    """In a fork of the server: read one job, fork it, wait for it, report its status. SERVER_ENV is
    the server's environment before its imports, IMPORTS_SET what they changed in it (torch's KMP_*,
    for instance), which the job gets as a fresh process would have after the same imports."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    request, fds = _recv(conn, with_fds=3)
    refused = []
    if request["identity"] != own:
        refused.append(f"another interpreter or ifplay ({request['identity']})")
    mismatch = env_mismatch(server_env, request["env"])
    if mismatch:
        refused.append(f"environment differs in {', '.join(mismatch)}")
    if refused or len(fds) != 3:
        print(f"warm server: cold start of {request['argv'][:1]}: {'; '.join(refused) or 'no file descriptors'}",
              flush=True)
        _send(conn, {"cold": "; ".join(refused)})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        conn.close()
        _become_job(request, fds, imports_set)  # never returns
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": child})
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        ready, _, _ = select.select([conn], [], [], 0.2)
        if ready and not conn.recv(1):  # the job's ifplay process is gone (killed): so is the job
            _kill(child)
            return
    if os.WIFSIGNALED(status):
        _send(conn, {"signal": os.WTERMSIG(status)})
    else:
        _send(conn, {"returncode": os.WEXITSTATUS(status)})


def _kill(child: int) -> None:
    try:
        os.kill(child, signal.SIGTERM)
        for _ in range(50):
            if os.waitpid(child, os.WNOHANG)[0]:
                return
            time.sleep(0.2)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def job_environment(job_env: dict, imports_set: dict) -> dict:
    """The environment of a job's process: its own, with what the server's imports changed in theirs
    (a fresh process's imports would change the same), and without the socket (what the job starts,
    subprocesses or other ifplay commands, runs cold)."""
    env = dict(job_env)
    for key, value in imports_set.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.pop(SOCKET_ENV, None)
    return env


def _become_job(request: dict, fds: list[int], imports_set: dict) -> None:
    """In the job's process: take over the client's files, directory and environment, run ifplay."""
    import atexit
    import importlib
    import logging
    import resource
    import traceback

    for signum, handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGCHLD, signal.SIG_DFL),
                            (signal.SIGTERM, signal.SIG_DFL), (signal.SIGHUP, signal.SIG_DFL),
                            (signal.SIGPIPE, signal.SIG_IGN)):  # SIGPIPE: as Python sets it at start-up
        signal.signal(signum, handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    env = job_environment(request["env"], imports_set)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # read again from TMPDIR
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    sys.argv = ["ifplay", *request["argv"]]
    code = 1
    try:
        module, _, function = ENTRY.partition(":")
        code = getattr(importlib.import_module(module), function)(request["argv"])
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what a fresh interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"warm start: pid {os.getpid()}, {usage.ru_utime + usage.ru_stime:.1f} CPU s, "
              f"peak memory {usage.ru_maxrss / 1024:.0f} MiB", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# -- the workflow's hooks ------------------------------------------------------------------------------
def start_for_workflow(workflow, log_dir: str = "logs") -> str | None:
    """Snakemake's onstart: start the warm server for a local run and give its socket to the jobs
    (their environment inherits it); the socket's path, or None when off or remote. Snakemake does
    not wait for it: jobs that start before it listens (its imports take seconds) run cold."""
    global _server, _socket_dir
    from snakemake.settings.types import ExecMode

    if os.environ.get(SWITCH_ENV) == "0" or not workflow.local_exec or workflow.exec_mode != ExecMode.DEFAULT:
        return None
    ifplay = Path(sys.executable).parent / "ifplay"
    if not ifplay.exists():
        return None
    _socket_dir = tempfile.mkdtemp(prefix="ifplay-warm-")
    path = os.path.join(_socket_dir, "socket")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    with open(Path(log_dir) / "warm-server.log", "ab") as log:
        _server = subprocess.Popen([str(ifplay), "warm-server", "--socket", path, "--parent", str(os.getpid())],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    os.environ[SOCKET_ENV] = path
    return path


def stop_for_workflow() -> None:
    """Snakemake's onsuccess and onerror: stop the warm server (it also stops when Snakemake is gone)."""
    global _server, _socket_dir
    os.environ.pop(SOCKET_ENV, None)
    if _server is not None:
        if _server.poll() is None:
            _server.terminate()
            try:
                _server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _server.kill()
        _server = None
    if _socket_dir is not None:
        import shutil

        shutil.rmtree(_socket_dir, ignore_errors=True)
        _socket_dir = None


def add_cli(sub) -> None:
    p = sub.add_parser("warm-server", help="serve warm job starts on a Unix socket (the workflow starts it "
                                           "for local runs: ifplay.core.warm)")
    p.add_argument("--socket", required=True, help="the Unix socket's path")
    p.add_argument("--parent", type=int, default=None, help="stop when this process (Snakemake) is gone")
    p.add_argument("--preload", nargs="*", default=list(PRELOAD), metavar="MODULE",
                   help="what to import before serving (default: ifplay.core.warm.PRELOAD)")
    p.set_defaults(func=lambda args: serve(args.socket, args.parent, tuple(args.preload)))
