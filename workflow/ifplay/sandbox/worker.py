"""The verifier sandbox's worker process: runs model-written ``evaluate(response)`` code.

This file is a stand-alone program (standard library only). :mod:`ifplay.sandbox.runner` starts it as
``python -I -S sandbox_worker.py CONFIG_JSON`` and speaks to it over two inherited pipes; the parent
also imports it (without side effects) for the policy constants below. Everything up to
:func:`serve` is trusted start-up code; :func:`serve` runs untrusted code.

Start-up, in this order, before any untrusted code: import the allowed modules (the file system is
gone afterwards, so nothing can be imported later) and build their facades; point stdout/stderr at a
null writer (fd 1 and 2 already are /dev/null); unshare the network and IPC namespaces; chroot into
an empty directory; clear the environment; set resource limits; forbid new privileges; drop to an
unprivileged uid/gid of its own; ask the kernel to kill it when the parent dies.

Per call: a fresh globals dict with a fresh copy of the restricted builtins; the code object
(compiled once per worker) is executed into it, ``evaluate(response)`` is called under a wall-clock
timer (SIGALRM); afterwards the facades of the allowed modules and every mutable standard-library
object reachable from them are checked and restored if the call could have changed them, and the
shared random generator is re-seeded if the call could reach it.
"""

from __future__ import annotations

import ast
import gc
import itertools
import json
import os
import signal
import struct
import sys
import time
import types

# -- policy (imported by ifplay.sandbox.runner for its documentation and defaults) --------------------

#: Modules a verifier may import (standard library only). Each is imported at start-up and handed
#: to the verifier as a facade: a module object holding the public names of the real module, minus
#: module-level mutable containers and sub-modules that are not themselves allowed.
DEFAULT_MODULES = (
    "__future__", "bisect", "cmath", "collections", "collections.abc", "datetime", "difflib",
    "fractions", "functools", "heapq", "html", "itertools", "json", "math", "operator", "random",
    "re", "statistics", "string", "textwrap", "time", "typing", "unicodedata",
)

#: Names a verifier may use from ``typing`` (the rest, e.g. ``get_type_hints``, evaluates strings).
TYPING_NAMES = frozenset(
    "Any AnyStr Callable ClassVar Counter DefaultDict Deque Dict Final FrozenSet Generator Generic "
    "Iterable Iterator List Literal Mapping MutableMapping NamedTuple NoReturn Optional Pattern Match "
    "Sequence Set Text Tuple Type TypeVar TypedDict Union cast".split())

#: Builtins a verifier sees unchanged (``open``, ``compile``, ``input``, ``breakpoint``, ``help``,
#: ``exit``/``quit`` are absent; ``__import__``, ``getattr``, ``hasattr``, ``setattr``,
#: ``delattr``, ``vars``, ``globals``, ``locals``, ``eval`` and ``exec`` are guarded versions).
PLAIN_BUILTINS = tuple(
    "abs aiter all anext any ascii bin bool bytearray bytes callable chr classmethod complex dict dir "
    "divmod enumerate filter float format frozenset hash hex id int isinstance issubclass iter len list "
    "map max memoryview min next object oct ord pow print property range repr reversed round set slice "
    "sorted staticmethod str sum super tuple type zip NotImplemented Ellipsis __build_class__ __debug__"
    .split())

#: Underscore attribute names a verifier may read (every other ``_name`` is forbidden).
ALLOWED_UNDERSCORE = frozenset({
    "__name__", "__qualname__", "__doc__", "__class__", "__init__", "__len__", "__iter__", "__next__",
    "__contains__", "__getitem__", "__str__", "__repr__", "__eq__", "__lt__", "__hash__",
    "_asdict", "_replace", "_fields", "_make", "_field_defaults",
})

#: Public attribute names that reach frames, code or global registries, forbidden as well.
BLOCKED_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "cr_origin",
    "ag_frame", "ag_code", "ag_await", "f_back", "f_globals", "f_locals", "f_builtins", "f_code",
    "f_trace", "tb_frame", "tb_next", "func_globals", "func_code", "register", "mro",
    "get_type_hints",
})

#: Names whose use means a call may change shared state (restored after the call).
MUTATING_NAMES = frozenset({"setattr", "delattr", "exec", "eval", "vars", "update_wrapper", "wraps",
                            "total_ordering", "singledispatch", "singledispatchmethod", "__init__"})

#: Result codes on the wire, worker -> parent.
CODES = {"1": True, "0": False, "t": "timeout", "m": "memory", "f": "forbidden", "i": "invalid-return",
         "n": "no-evaluate", "s": "syntax", "e": "exception"}

RANDOM_SEED = 20240613
FRAME = struct.Struct("<I")
PROGRESS = struct.Struct("<QQ")  # (batch nonce, index of the call in progress) in shared memory


def blocked_attribute(name: str) -> bool:
    return (name.startswith("_") and name not in ALLOWED_UNDERSCORE) or name in BLOCKED_ATTRIBUTES


class PolicyError(Exception):
    """Raised by :func:`check_tree` (compile time)."""


def check_tree(tree: ast.AST) -> bool:
    """Reject forbidden syntax; return whether the code may change shared state."""
    mutates = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if blocked_attribute(node.attr):
                raise PolicyError(f"attribute {node.attr!r} (line {node.lineno})")
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                if node.attr.startswith("_"):
                    raise PolicyError(f"assignment to attribute {node.attr!r} (line {node.lineno})")
                mutates = True
            elif node.attr in MUTATING_NAMES:
                mutates = True
        elif isinstance(node, ast.Name):
            if node.id in MUTATING_NAMES:
                mutates = True
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise PolicyError(f"relative import (line {node.lineno})")
            for alias in node.names:
                if alias.name == "*" or alias.name in MUTATING_NAMES:
                    mutates = True
                elif blocked_attribute(alias.name):
                    raise PolicyError(f"import of name {alias.name!r} (line {node.lineno})")
        elif isinstance(node, ast.MatchClass):
            for attr in node.kwd_attrs:
                if blocked_attribute(attr):
                    raise PolicyError(f"match on attribute {attr!r} (line {node.lineno})")
    return mutates


# -- worker state ------------------------------------------------------------------------------
class Forbidden(BaseException):
    """A policy violation at run time; the call's result is ``forbidden`` even if it is caught."""


class ForbiddenImport(ImportError):
    """Import of a module that is not allowed (``forbidden`` unless the verifier catches it)."""


class CallTimeout(BaseException):
    """Raised by the SIGALRM handler; the call's result is ``timeout`` even if it is caught."""


class _State:
    __slots__ = ("armed", "deadline", "timed_out", "forbidden", "dirty", "reseed", "retire", "builtins",
                 "globals")

    def __init__(self):
        self.armed = self.timed_out = self.forbidden = self.dirty = self.reseed = self.retire = False
        self.deadline = 0.0
        self.builtins = self.globals = None


STATE = _State()
_MISSING = object()
_is = __import__("operator").is_
_keys = __import__("operator").methodcaller("keys")
_values = __import__("operator").methodcaller("values")
_TYPE_NAME = type.__dict__["__name__"].__get__  # a class's real name, without running its metaclass
FACADES: dict[str, types.ModuleType] = {}
REACHES_RANDOM: set[str] = set()
SAFE_BUILTINS: dict = {}
_WATCH_DICTS: list = []      # (dict, snapshot): facades, function and instance __dict__s
_WATCH_CLASSES: list = []    # (class, snapshot of its __dict__)
_WATCH_CONTAINERS: list = []  # (container, snapshot): mutable containers held by classes, always checked
_WATCH_SLOTS: list = []      # (function or class, attribute names, values) kept outside __dict__
_FUNCTION_SLOTS = ("__name__", "__qualname__", "__doc__", "__module__", "__defaults__", "__kwdefaults__",
                   "__annotations__")
_CLASS_SLOTS = ("__name__", "__qualname__")
_RANDOM = None


def _policy(what: str):
    STATE.forbidden = True
    raise Forbidden(what)


def _check_name(name):
    if isinstance(name, str):
        name = str.__str__(name)  # an exact str: a subclass cannot fake startswith or equality
        if blocked_attribute(name):
            _policy(f"attribute {name!r}")
        if name in MUTATING_NAMES:
            STATE.dirty = True
    return name


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or not isinstance(name, str):
        raise ForbiddenImport("relative imports are not allowed in the verifier sandbox")
    name = str.__str__(name)
    facade = FACADES.get(name)
    if facade is None:
        raise ForbiddenImport(f"import of {name!r} is not allowed in the verifier sandbox")
    if name in REACHES_RANDOM:
        STATE.reseed = True
    if fromlist:
        for item in fromlist:
            if isinstance(item, str) and item != "*":
                _check_name(item)
        return facade
    top = name.partition(".")[0]
    if top in REACHES_RANDOM:
        STATE.reseed = True
    return FACADES[top]


def _getattr(obj, name, *default):
    return getattr(obj, _check_name(name), *default)


def _hasattr(obj, name):
    return hasattr(obj, _check_name(name))


def _setattr(obj, name, value):
    name = _check_name(name)
    if isinstance(name, str) and name.startswith("_"):
        _policy(f"assignment to attribute {name!r}")
    STATE.dirty = True
    setattr(obj, name, value)


def _delattr(obj, name):
    name = _check_name(name)
    if isinstance(name, str) and name.startswith("_"):
        _policy(f"deletion of attribute {name!r}")
    STATE.dirty = True
    delattr(obj, name)


def _is_verifier_frame(frame) -> bool:
    return dict.get(frame.f_globals, "__builtins__") is STATE.builtins


def _globals():
    return STATE.globals


def _locals():
    frame = sys._getframe(1)
    return frame.f_locals if _is_verifier_frame(frame) else {}


def _vars(*args):
    if not args:
        frame = sys._getframe(1)
        return frame.f_locals if _is_verifier_frame(frame) else {}
    if len(args) != 1:
        raise TypeError(f"vars expected at most 1 argument, got {len(args)}")
    STATE.dirty = True  # the copy holds e.g. functools.update_wrapper
    return {k: v for k, v in vars(args[0]).items() if not (isinstance(k, str) and blocked_attribute(str.__str__(k)))}


def _prepare_source(source, mode: str, caller, globals_, locals_):
    STATE.dirty = True
    if isinstance(source, (bytes, bytearray)):
        source = bytes(source).decode("utf-8")
    if not isinstance(source, str):
        raise TypeError(f"{mode}() arg 1 must be a string in the verifier sandbox")
    if mode == "eval":
        source = source.lstrip(" \t")
    tree = ast.parse(source, mode=mode)
    try:
        check_tree(tree)
    except PolicyError as err:
        _policy(str(err))
    code = compile(tree, "<string>", mode)
    if globals_ is None:
        if _is_verifier_frame(caller):
            globals_ = caller.f_globals
            if locals_ is None:
                locals_ = caller.f_locals
        else:
            globals_ = {"__builtins__": STATE.builtins}
    elif not isinstance(globals_, dict):
        raise TypeError(f"{mode}() globals must be a dict")
    elif not dict.__contains__(globals_, "__builtins__"):
        dict.__setitem__(globals_, "__builtins__", STATE.builtins)
    return code, globals_, (globals_ if locals_ is None else locals_)


def _eval(source, globals=None, locals=None):
    code, g, l = _prepare_source(source, "eval", sys._getframe(1), globals, locals)
    return eval(code, g, l)


def _exec(source, globals=None, locals=None):
    code, g, l = _prepare_source(source, "exec", sys._getframe(1), globals, locals)
    exec(code, g, l)


def _safe_attrgetter(*names):
    import operator

    for name in names:
        if isinstance(name, str):
            for part in name.split("."):
                _check_name(part)
    return operator.attrgetter(*names)


def _safe_methodcaller(name, /, *args, **kwargs):
    import operator

    return operator.methodcaller(_check_name(name), *args, **kwargs)


def _safe_get_field(self, field_name, args, kwargs):
    """string.Formatter.get_field with guarded attribute access."""
    import _string

    first, rest = _string.formatter_field_name_split(field_name)
    obj = self.get_value(first, args, kwargs)
    for is_attr, i in rest:
        obj = _getattr(obj, i) if is_attr else obj[i]
    return obj, first


class _NullWriter:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


# -- start-up (trusted) ------------------------------------------------------------------------
def _preload(modules) -> None:
    import codecs
    import importlib

    for name in modules:
        importlib.import_module(name)
    # Imported lazily by allowed functions; after the chroot nothing can be imported any more.
    import _strptime  # noqa: F401  (datetime.strptime, time.strptime)
    datetime_mod = sys.modules.get("datetime")
    if datetime_mod is not None:
        datetime_mod.datetime.strptime("2024-01-02", "%Y-%m-%d")
    for encoding in ("ascii", "latin-1", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                     "utf-32", "cp1252", "idna", "punycode", "unicode_escape", "raw_unicode_escape"):
        codecs.lookup(encoding)
    "Ünïcödé".encode("idna")
    time.strptime("2024", "%Y")


def _mutable_class(value) -> bool:
    return isinstance(value, type) and not (value.__flags__ & (1 << 8))  # Py_TPFLAGS_IMMUTABLETYPE


_CONTAINER_TYPES = (list, dict, set, bytearray)


class _Facade(types.ModuleType):
    """An allowed module as a verifier sees it: its public names, read-only."""

    def __setattr__(self, name, value):
        _policy(f"assignment to module attribute {name!r}")

    def __delattr__(self, name):
        _policy(f"deletion of module attribute {name!r}")


def _build_facades(modules) -> None:
    global _RANDOM
    import random
    import string

    _set = types.ModuleType.__setattr__  # facades refuse the verifier's setattr, not ours
    string.Formatter.get_field = _safe_get_field
    _RANDOM = random._inst
    allowed = set(modules)
    for name in modules:
        if "." in name and name.rpartition(".")[0] not in allowed:
            raise ValueError(f"allowed module {name!r} needs its parent package allowed too")
    for name in modules:
        real = sys.modules[name]
        facade = _Facade(name, getattr(real, "__doc__", None))
        _set(facade, "__loader__", None)
        _set(facade, "__spec__", None)
        for key, value in vars(real).items():
            if key.startswith("_"):
                continue
            if name == "typing" and key not in TYPING_NAMES:
                continue
            if isinstance(value, types.ModuleType) or type(value) in _CONTAINER_TYPES:
                continue  # sub-modules are linked below; module-level containers would leak state
            _set(facade, key, value)
        FACADES[name] = facade
    if "operator" in FACADES:
        _set(FACADES["operator"], "attrgetter", _safe_attrgetter)
        _set(FACADES["operator"], "methodcaller", _safe_methodcaller)
    for name in modules:  # link allowed sub-modules and module attributes to their facades
        real = sys.modules[name]
        for key, value in vars(real).items():
            if isinstance(value, types.ModuleType) and not key.startswith("_") and value.__name__ in FACADES:
                _set(FACADES[name], key, FACADES[value.__name__])
    # Which facades reach random's shared generator (through attributes)?
    if "random" in FACADES:
        changed = True
        REACHES_RANDOM.add("random")
        while changed:
            changed = False
            for name, facade in FACADES.items():
                if name not in REACHES_RANDOM and any(
                        isinstance(v, types.ModuleType) and v.__name__ in REACHES_RANDOM for v in vars(facade).values()):
                    REACHES_RANDOM.add(name)
                    changed = True


def _build_builtins(guard: bool) -> None:
    import builtins

    if not guard:
        SAFE_BUILTINS.update(vars(builtins))
        return
    for name in PLAIN_BUILTINS:
        SAFE_BUILTINS[name] = getattr(builtins, name)
    for name, value in vars(builtins).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            SAFE_BUILTINS[name] = value
    SAFE_BUILTINS.update({
        "__import__": _import, "getattr": _getattr, "hasattr": _hasattr, "setattr": _setattr,
        "delattr": _delattr, "vars": _vars, "globals": _globals, "locals": _locals, "eval": _eval,
        "exec": _exec,
    })


def _build_watch_lists() -> None:
    """Snapshot every mutable object a verifier can reach by name from the facades (two levels)."""
    seen: set[int] = set()

    def watch_dict_of(obj):
        d = getattr(obj, "__dict__", None)
        if type(d) is dict and id(d) not in seen:
            seen.add(id(d))
            _WATCH_DICTS.append((d, _snapshot(d)))
            if isinstance(obj, types.FunctionType):
                _WATCH_SLOTS.append((obj, _FUNCTION_SLOTS, tuple(getattr(obj, a) for a in _FUNCTION_SLOTS)))

    def watch_class(cls):
        if id(cls) in seen or not _mutable_class(cls):
            return
        seen.add(id(cls))
        _WATCH_CLASSES.append((cls, (tuple(cls.__dict__.keys()), tuple(cls.__dict__.values()))))
        _WATCH_SLOTS.append((cls, _CLASS_SLOTS, tuple(getattr(cls, a) for a in _CLASS_SLOTS)))
        for key, value in list(cls.__dict__.items()):
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            if isinstance(value, types.FunctionType):
                watch_dict_of(value)
            elif type(value) in _CONTAINER_TYPES and id(value) not in seen and not key.startswith("_"):
                # (containers under underscore names are out of a verifier's reach)
                seen.add(id(value))
                _WATCH_CONTAINERS.append((value, _snapshot(value)))
            elif _mutable_class(value):
                watch_class(value)

    for facade in FACADES.values():
        d = vars(facade)  # read-only (see _Facade): nothing to watch
        seen.add(id(d))
        for value in list(d.values()):
            if isinstance(value, types.ModuleType):
                continue
            if isinstance(value, type):
                watch_class(value)
            else:
                watch_dict_of(value)
    for value in SAFE_BUILTINS.values():
        if isinstance(value, types.FunctionType):
            watch_dict_of(value)
        elif isinstance(value, type):
            watch_class(value)


def _unchanged(container, snapshot) -> bool:
    """Identity comparison in C (no __eq__ of whatever a verifier may have put there)."""
    if len(container) != len(snapshot[0]):
        return False
    if isinstance(container, dict):
        return all(map(_is, dict.keys(container), snapshot[0])) and all(map(_is, dict.values(container), snapshot[1]))
    if isinstance(container, list):
        return all(map(_is, container, snapshot[0]))
    if isinstance(container, set):
        return all(map(set.__contains__, itertools.repeat(container), snapshot[0]))
    return bytes(container) == snapshot[0]


def _put_back(container, snapshot) -> None:
    if isinstance(container, dict):
        dict.clear(container)
        dict.update(container, zip(snapshot[0], snapshot[1]))
    elif isinstance(container, list):
        list.__setitem__(container, slice(None), snapshot[0])
    elif isinstance(container, set):
        set.clear(container)
        set.update(container, snapshot[0])
    else:
        container[:] = snapshot[0]


def _snapshot(container) -> tuple:
    if isinstance(container, dict):
        return tuple(dict.keys(container)), tuple(dict.values(container))
    if isinstance(container, (list, set)):
        return (tuple(container),)
    return (bytes(container),)


_FLAT: dict = {}


def _flatten_watch_lists() -> None:
    """All watched dicts and class dicts as flat tuples, for one C-level identity comparison."""
    dicts = [d for d, _ in _WATCH_DICTS] + [cls.__dict__ for cls, _ in _WATCH_CLASSES]
    full = [d for d in dicts if len(d)]  # most are empty function __dict__s: their lengths suffice
    _FLAT.update(dicts=dicts, lens=list(map(len, dicts)), full=full,
                 keys=tuple(itertools.chain.from_iterable(map(_keys, full))),
                 values=tuple(itertools.chain.from_iterable(map(_values, full))))


def _all_unchanged() -> bool:
    full = _FLAT["full"]
    return (list(map(len, _FLAT["dicts"])) == _FLAT["lens"]
            and all(map(_is, itertools.chain.from_iterable(map(_values, full)), _FLAT["values"]))
            and all(map(_is, itertools.chain.from_iterable(map(_keys, full)), _FLAT["keys"])))


def _restore(full: bool) -> None:
    """Undo changes to shared objects (called with the call's timer still armed).

    Always (cheap): the mutable containers held by allowed classes under public names. When the call
    may have assigned attributes (``full``): every watched dict and class. (Facades are read-only.)
    """
    for container, snapshot in _WATCH_CONTAINERS:
        if not _unchanged(container, snapshot):
            _put_back(container, snapshot)
    if full and not _all_unchanged():
        for d, snapshot in _WATCH_DICTS:
            if not _unchanged(d, snapshot):
                _put_back(d, snapshot)
        for cls, (keys, values) in _WATCH_CLASSES:
            current = cls.__dict__
            if len(current) == len(keys) and all(map(_is, current.keys(), keys)) \
                    and all(map(_is, current.values(), values)):
                continue
            snapshot = dict(zip(keys, values))
            for key in [k for k in current if k not in snapshot]:
                type.__delattr__(cls, key)
            for key, value in snapshot.items():
                if current.get(key, _MISSING) is not value:
                    type.__setattr__(cls, key, value)
        # Names and defaults live outside __dict__; functools.update_wrapper (which always adds
        # __wrapped__ to a __dict__, so this branch runs) may have changed them.
        for obj, names, values in _WATCH_SLOTS:
            for name, value in zip(names, values):
                if getattr(obj, name) is not value:
                    (type.__setattr__ if isinstance(obj, type) else object.__setattr__)(obj, name, value)
    if STATE.reseed and _RANDOM is not None:
        _RANDOM.seed(RANDOM_SEED)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _lock_down(cfg: dict) -> tuple[dict, dict]:
    """Namespaces, chroot, environment, rlimits, privileges.

    Returns which layers are in force and why any is not; the parent refuses to use a worker that
    lacks one unless the sandbox was made with ``strict=False``.
    """
    import resource

    layers, problems = {}, {}

    def layer(name, step):
        try:
            layers[name] = bool(step())
        except OSError as err:
            layers[name], problems[name] = False, f"{err.strerror or err} (errno {err.errno})"

    root = os.geteuid() == 0
    libc = _libc()

    def unshare():
        flags = 0x40000000 | 0x08000000  # CLONE_NEWNET | CLONE_NEWIPC
        if hasattr(os, "unshare"):
            os.unshare(flags)
        elif libc.unshare(flags) != 0:
            raise OSError(_errno(), os.strerror(_errno()))
        return True

    def chroot():
        os.chroot(cfg["jail"])
        os.chdir("/")
        return True

    def rlimits():
        limits = cfg["limits"]
        memory, cpu, files = limits["memory_bytes"], limits["cpu_seconds"], limits["open_files"]
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        if root:  # for other users it would count all their processes
            resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
        return True

    def drop_privileges():
        uid, gid = cfg["uid"], cfg["gid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        return os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid) and not os.getgroups()

    if root:
        layer("network_namespace", unshare)
        layer("chroot", chroot)
    else:
        layers["network_namespace"] = layers["chroot"] = False
        problems["network_namespace"] = problems["chroot"] = "not root"
    os.environ.clear()
    layers["environment_cleared"] = not os.environ
    layer("rlimits", rlimits)
    PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
    layers["no_new_privileges"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    if root:
        layer("unprivileged_user", drop_privileges)
    else:
        layers["unprivileged_user"], problems["unprivileged_user"] = False, "not root"
    # The parent-death signal is cleared by credential changes, so it is set last.
    layers["dies_with_parent"] = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if os.getppid() != cfg["parent_pid"]:
        os._exit(0)
    return layers, problems


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def _on_alarm(signum, frame):
    """SIGALRM ticks while a batch runs; a call past its deadline gets CallTimeout (again each tick)."""
    if STATE.armed and time.monotonic() > STATE.deadline:
        STATE.timed_out = True
        raise CallTimeout()


# -- the serving loop (untrusted code runs here) -----------------------------------------------
class _Code:
    __slots__ = ("text", "status", "code", "mutates")

    def __init__(self, text):
        self.text, self.status, self.code, self.mutates = text, None, None, False


def _exception_name(exc) -> str:
    name = _TYPE_NAME(type(exc))
    return name if name.isidentifier() and len(name) <= 64 and name.isascii() else "Exception"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, obj) -> None:
    body = json.dumps(obj, separators=(",", ":")).encode()
    _write_all(fd, FRAME.pack(len(body)) + body)


def _read_exact(reader, n: int) -> bytes | None:
    data = reader.read(n)
    return data if data is not None and len(data) == n else None


def _compile(entry: _Code, guard: bool) -> None:
    try:
        tree = ast.parse(entry.text, "<verifier>", "exec")
    except (SyntaxError, ValueError):
        entry.status = "s"
        return
    if guard:
        try:
            entry.mutates = check_tree(tree)
        except PolicyError:
            entry.status = "f"
            return
    try:
        entry.code = compile(tree, "<verifier>", "exec")
    except (SyntaxError, ValueError):
        entry.status = "s"
        return
    entry.status = "ok"


def _call(entry: _Code, response, guard: bool, excs: dict, index: int) -> str:
    """One call, with STATE.armed already set: returns its result code (see CODES)."""
    if entry.status is None:
        _compile(entry, guard)
    if entry.status != "ok":
        return entry.status
    STATE.dirty = entry.mutates
    builtins_copy = SAFE_BUILTINS.copy()
    g = {"__builtins__": builtins_copy, "__name__": "__verifier__"}
    STATE.builtins, STATE.globals = builtins_copy, g
    res = "e"
    try:
        exec(entry.code, g)
        fn = g.get("evaluate")
        if fn is None or not callable(fn):
            res = "n"
        else:
            value = fn(response)
            if value is True:
                res = "1"
            elif value is False:
                res = "0"
            elif type(value) is str:
                text = value.strip().lower()
                res = "1" if text == "true" else "0" if text == "false" else "i"
            else:
                res = "i"
            value = None
        fn = None
    except Forbidden:
        res = "f"
    except CallTimeout:
        res = "t"
        STATE.deadline = time.monotonic() + 1.0  # a fresh window for the clean-up below
    except MemoryError:
        res = "m"
        STATE.retire = True
    except ForbiddenImport:
        res = "f"
    except BaseException as exc:  # the verifier's own exception, SystemExit included
        excs[index] = _exception_name(exc)
        exc = None
    g.clear()  # breaks the function <-> globals cycles; finalizers run now, under the deadline
    g = builtins_copy = None
    STATE.builtins = STATE.globals = None
    if guard:
        _restore(STATE.dirty)
    return res


def serve(cfg: dict, req_fd: int, rep_fd: int, shm) -> None:
    """Answer batches until the parent closes the pipe; retire (exit) when told to by _call."""
    import io
    import marshal

    call_timeout = float(cfg["call_timeout"])
    tick = min(0.05, call_timeout / 4)
    cpu_budget = float(cfg["limits"]["cpu_seconds"]) / 2
    max_calls = int(cfg.get("max_calls", 200_000))
    guard = bool(cfg["guard"])
    reader = io.open(req_fd, "rb", buffering=1 << 16)
    cache: dict[int, _Code] = {}
    setitimer, ITIMER_REAL, monotonic = signal.setitimer, signal.ITIMER_REAL, time.monotonic
    pack_into = PROGRESS.pack_into
    calls = 0
    while True:
        header = _read_exact(reader, FRAME.size)
        if header is None:
            os._exit(0)
        (length,) = FRAME.unpack(header)
        body = _read_exact(reader, length)
        if body is None:
            os._exit(0)
        nonce, reset, new_codes, items = marshal.loads(body)
        del body
        if reset:
            cache.clear()
        for cid, text in new_codes:
            cache[cid] = _Code(text)
        out = []
        excs: dict[int, str] = {}
        setitimer(ITIMER_REAL, tick, tick)
        for index, (cid, response) in enumerate(items):
            pack_into(shm, 0, nonce, index)
            STATE.timed_out = STATE.forbidden = STATE.reseed = False
            entry = cache.get(cid)
            if entry is None:  # a parent bug, reported as an exception of this call
                out.append("e")
                excs[index] = "UnknownCode"
                continue
            try:
                STATE.deadline = monotonic() + call_timeout
                STATE.armed = True
                try:
                    res = _call(entry, response, guard, excs, index)
                finally:
                    STATE.armed = False
            except CallTimeout:  # in the clean-up: shared state may not have been restored
                res = "t"
                STATE.retire = True
            except MemoryError:
                res = "m"
                STATE.retire = True
            if STATE.forbidden:
                res = "f"
            elif STATE.timed_out:
                res = "t"
            if res != "e":
                excs.pop(index, None)
            out.append(res)
        calls += len(items)
        pack_into(shm, 0, nonce, len(items))
        if time.process_time() > cpu_budget or calls > max_calls:
            STATE.retire = True
        send(rep_fd, {"nonce": nonce, "codes": "".join(out), "exc": {str(k): v for k, v in excs.items()},
                      "retire": STATE.retire})
        if STATE.retire:
            os._exit(0)
        # Collect cycles (classes, closures) now, under the deadline: finalizers are untrusted code.
        try:
            STATE.deadline = monotonic() + call_timeout
            STATE.armed = True
            try:
                gc.collect()
            finally:
                STATE.armed = False
        except BaseException:
            os._exit(0)  # the parent sees EOF while idle and starts a fresh worker
        setitimer(ITIMER_REAL, 0, 0)


def main() -> None:
    import mmap

    cfg = json.loads(sys.argv[1])
    rep_fd = cfg["rep_fd"]
    try:
        # Move the protocol pipes to fds 3 and 4 (below the open-files limit), map the progress page.
        import fcntl

        req = fcntl.fcntl(cfg["req_fd"], fcntl.F_DUPFD_CLOEXEC, 10)
        rep = fcntl.fcntl(rep_fd, fcntl.F_DUPFD_CLOEXEC, 10)
        shm = mmap.mmap(cfg["shm_fd"], PROGRESS.size)
        for fd in {cfg["req_fd"], rep_fd, cfg["shm_fd"]}:
            os.close(fd)
        os.dup2(req, 3)
        os.dup2(rep, 4)
        os.close(req)
        os.close(rep)
        rep_fd = 4
        modules = tuple(cfg["modules"])
        _preload(modules)
        _build_facades(modules)
        _build_builtins(bool(cfg["guard"]))
        _build_watch_lists()
        _flatten_watch_lists()
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        sys.stdout = sys.stderr = _NullWriter()
        sys.stdin = None
        layers, problems = _lock_down(cfg)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if _RANDOM is not None:
            _RANDOM.seed(RANDOM_SEED)  # every call starts from this state
        gc.collect()
        gc.freeze()
        gc.disable()
    except BaseException as exc:  # start-up failed: tell the parent why
        try:
            send(rep_fd, {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(3)
    send(rep_fd, {"ready": True, "layers": layers, "problems": problems, "facades": len(FACADES),
                  "watched": len(_WATCH_DICTS) + len(_WATCH_CLASSES) + len(_WATCH_CONTAINERS)})
    serve(cfg, 3, 4, shm)


if __name__ == "__main__":
    main()
