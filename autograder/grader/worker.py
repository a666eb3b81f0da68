"""The sandboxed worker: runs one submission's code and serves probe calls from the judge.

Started by :class:`autograder.grader.remote.Session` as
``python -m autograder.grader.worker IN_FD OUT_FD``.
It reads one ``init`` message (the code cells, the limits, the sandbox policy), imports what
the probes need while it still may, enters the sandbox (:mod:`autograder.grader.sandbox`), executes
the cells in order in one namespace (continuing past cells that raise), then answers ``call``
messages: ``probe(Student(namespace), *args, **kwargs)`` encoded with
:func:`autograder.transport.encode`.

The judge trusts nothing that comes back: every message is a size-capped JSON header plus an
optional payload that it reads with :func:`autograder.transport.decode` (JSON and raw bytes only). The worker's own
stdout and stderr (fd 1 and 2) belong to the student and are drained by the judge; the
protocol uses two dedicated pipes.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import functools
import gc
import importlib
import itertools
import json
import linecache
import operator
import os
import select
import signal
import socket
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from autograder import probes, transport
from autograder.grader import sandbox
from autograder.grader.wire import HEADER_LIMIT, receive, send
from autograder.randomness import seed_globals
from autograder.secrets import SECRET_MODULES
from autograder.subject import Student, StudentError, describe_exception
from autograder.timelimit import time_limit

__all__ = ["main", "serve", "zygote"]

# --------------------------------------------------------------------------- time limits


class _SoftTimeout(BaseException):
    """Raised by SIGALRM inside student code; a BaseException so ``except Exception`` misses it."""


# --------------------------------------------------------------------------- tampering

#: Modules (and classes) whose functions a submission may not replace: the probes and the
#: libraries they compute with. Replacing one cannot change the judge (another process), but
#: a submission that tries is flagged.
_WATCHED_MODULES = (
    "builtins",
    "numpy",
    "numpy.linalg",
    "numpy.random",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.linalg",
    "torch.special",
    "torch.autograd",
    "torch.distributions",
    "hypothesis",
    "course_lib",
    # What the audit hook and the protocol call: replacing one could switch the hook off.
    "os",
    "posixpath",
    "json",
    "gc",
    "threading",
)
_WATCHED_PREFIXES = ("autograder", "course_lib.")
#: The grader's modules that run in the worker around every probe call: walked whole.
_CORE = (
    "autograder.grader.worker",
    "autograder.grader.wire",
    "autograder.transport",
    "autograder.subject",
    "autograder.timelimit",
    "autograder.probes",
)


def _watched() -> Iterator[tuple[str, Any]]:
    for name, module in list(sys.modules.items()):
        if module is None:
            continue
        if name in _WATCHED_MODULES or name.startswith(_WATCHED_PREFIXES):
            yield name, module
    yield "torch.Tensor", torch.Tensor
    yield "torch.nn.Module", torch.nn.Module


def _is_code(value: Any) -> bool:
    return isinstance(
        value,
        (
            types.FunctionType,
            types.BuiltinFunctionType,
            types.MethodType,
            type,
            types.ModuleType,
        ),
    ) or callable(value)


_FUNCTION_PARTS = ("__code__", "__defaults__", "__kwdefaults__")


def _function_state(function: types.FunctionType, closure: bool) -> tuple[Any, ...]:
    """What a function runs with besides its identity: code, defaults and (for the grader's
    own functions, whose closures never change) closure cell contents."""
    cells = tuple(
        cell.cell_contents if _filled(cell) else _MISSING
        for cell in (function.__closure__ or () if closure else ())
    )
    return (*(getattr(function, part) for part in _FUNCTION_PARTS), cells)


def _same(state: tuple[Any, ...], now: tuple[Any, ...]) -> bool:
    """Identity, element by element (``==`` on an array default would be ambiguous)."""
    return (
        len(state) == len(now)
        and all(a is b for a, b in zip(state[:-1], now[:-1], strict=True))
        and len(state[-1]) == len(now[-1])
        and all(a is b for a, b in zip(state[-1], now[-1], strict=True))
    )


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


class Snapshot:
    """Identity of every function and class in the watched modules, of each function's code
    object, defaults and closure cells, and of the watched ``sys.modules`` entries, to detect
    monkeypatching (``probes.invoke_probe = ...``, ``transport.encode.__code__ = ...``,
    ``sys.modules["autograder.probes"] = ...``); and, by content, everything the probes and
    the codec reach (:class:`Contents`: what is edited in place).

    Args:
        roots: Prefixes of the probe modules (the judge's ``probe_modules``).
    """

    def __init__(self, roots: Iterable[str] = ("autograder", "course_lib")) -> None:
        self.entries: list[tuple[str, Any, str, Any]] = []
        self.functions: list[tuple[str, types.FunctionType, bool, tuple[Any, ...]]] = []
        self.modules: dict[str, types.ModuleType] = {}
        seen: set[int] = set()
        for label, owner in _watched():
            if isinstance(owner, types.ModuleType) and label != "builtins":
                self.modules[label] = owner
            for attr, value in list(vars(owner).items()):
                if _is_code(value):
                    self.entries.append((label, owner, attr, value))
                    if isinstance(value, types.FunctionType) and id(value) not in seen:
                        seen.add(id(value))
                        own = label.startswith(("autograder", "course_lib"))
                        self.functions.append(
                            (
                                f"{label}.{attr}",
                                value,
                                own,
                                _function_state(value, own),
                            )
                        )
        prefixes = tuple(roots)
        self.contents = Contents(
            [
                module
                for name, module in sorted(sys.modules.items())
                if module is not None
                and (
                    name in prefixes
                    or name.startswith(tuple(p + "." for p in prefixes))
                )
                and not name.startswith(SECRET_MODULES)
            ],
            core=_CORE,
        )
        # Every function the probes reach, wherever it lives (``copy.deepcopy``): its code
        # and defaults are compared too (closure cells: by Contents).
        for label, function, _ in self.contents.dicts_of:
            if id(function) not in seen:
                seen.add(id(function))
                name = label.removesuffix(".__dict__")
                self.functions.append(
                    (name, function, False, _function_state(function, False))
                )
        self._prepare_fast_path()

    def _prepare_fast_path(self) -> None:
        """Getters that read, in C, every watched value whose identity :meth:`changes` checks.

        The full comparison in :meth:`changes` is a Python loop over thousands of entries
        (about 5 ms in a worker, once per probe call then: half of a probe call's cost). Reading the
        same values with :func:`operator.itemgetter`/:func:`operator.attrgetter` and comparing
        them with :func:`operator.is_` is as exact (identity, never ``==``, which a replaced
        object could answer as it likes) and about 20 times cheaper.
        """
        by_owner: dict[int, tuple[Any, list[str]]] = {}
        for _label, owner, attr, _value in self.entries:
            by_owner.setdefault(id(owner), (owner, []))[1].append(attr)
        # itemgetter of one key returns the value itself: repeat the first key for a tuple.
        self._owner_getters = [
            (owner, operator.itemgetter(*attrs, attrs[0]))
            for owner, attrs in by_owner.values()
        ]
        self._module_getter = operator.itemgetter(*self.modules, "builtins")
        self._function_list = [function for _, function, _, _ in self.functions]
        self._function_getter = operator.attrgetter(*_FUNCTION_PARTS)
        cells = [
            cell
            for _, function, own, _ in self.functions
            if own
            for cell in function.__closure__ or ()
        ]
        self._empty_cells = [cell for cell in cells if not _filled(cell)]
        self._cells = [cell for cell in cells if _filled(cell)]
        self._cell_getter = operator.attrgetter("cell_contents")
        # Reading a function's code, defaults or keyword defaults raises an audit event each
        # (thousands per check, about 2 ms with the sandbox's hook installed). Once that hook
        # reports every assignment to them (trust_hook), they are compared only after one.
        self._hooked = False
        self._code_writes = self._writes_checked = 0
        self._originals = self._current(functions=True)
        # The same with the functions' group empty, as _current(functions=False) reads it.
        self._originals_hooked = (
            None if self._originals is None else [*self._originals[:-1], ()]
        )

    def trust_hook(self) -> None:
        """The sandbox's audit hook now calls :meth:`code_written` on every assignment to a
        function's code, defaults or keyword defaults (the only ways to change them)."""
        self._hooked = True

    def code_written(self) -> None:
        """Called by the audit hook: some function's code or defaults were assigned."""
        self._code_writes += 1

    def _current(self, functions: bool) -> list[tuple[Any, ...]] | None:
        """Every watched value now, in a fixed order, or None where one is missing; the
        functions' parts as an empty group unless ``functions``."""
        try:
            values = [self._module_getter(sys.modules)]
            values.extend(get(vars(owner)) for owner, get in self._owner_getters)
            values.append(tuple(map(self._cell_getter, self._cells)))
            values.append(
                tuple(
                    itertools.chain.from_iterable(
                        map(self._function_getter, self._function_list)
                    )
                )
                if functions
                else ()
            )
        except (KeyError, ValueError, AttributeError, TypeError):
            return None
        return values

    def unchanged(self) -> bool:
        """Whether nothing watched was replaced, deleted or rewritten (fast and exact)."""
        functions = not self._hooked or self._code_writes != self._writes_checked
        now = self._current(functions)
        originals = self._originals if functions else self._originals_hooked
        if now is None or originals is None or len(now) != len(originals):
            return False
        return (
            all(
                len(a) == len(b) and all(map(operator.is_, a, b))
                for a, b in zip(now, originals, strict=True)
            )
            and not any(map(_filled, self._empty_cells))
            and self.contents.unchanged()
        )

    def changes(self) -> list[str]:
        """Names that were replaced, deleted or rewritten since the snapshot; restores them."""
        writes = self._code_writes
        same = self.unchanged()
        self._writes_checked = (
            writes  # the slow path below compares the functions anyway
        )
        if same:
            return []
        changed = self.contents.changes()
        for name, module in self.modules.items():
            if sys.modules.get(name) is not module:
                changed.append(f"sys.modules[{name!r}]")
                sys.modules[name] = module
        for label, owner, attr, original in self.entries:
            current = vars(owner).get(attr, _MISSING)
            if current is not original:
                changed.append(f"{label}.{attr}")
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(owner, attr, original)
        for name, function, own, state in self.functions:
            if not _same(state, _function_state(function, own)):
                changed.append(f"{name} (its code, defaults or closure)")
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    for part, value in zip(_FUNCTION_PARTS, state, strict=False):
                        setattr(function, part, value)
                    for cell, value in zip(
                        function.__closure__ or (), state[-1], strict=True
                    ):
                        if value is not _MISSING:
                            cell.cell_contents = value
        return changed


_MISSING = object()


# --------------------------------------------------------------------------- contents

#: Modules never walked: their entries change as the interpreter runs (``sys``), are
#: watched by identity above (``builtins``), or belong to the student (``__main__``).
_UNWALKED = frozenset({"sys", "builtins", "__main__"})
#: Module hops from the probe modules whose namespaces are verified: 1 reaches what the probe
#: modules import (``copy``, ``numpy``, ``torch``), 2 the modules those modules' functions
#: look their globals up in (``numpy._core.numeric`` for ``numpy.allclose``).
_DEPTH = 64
#: Libraries whose functions and classes are recorded by identity where the walk meets them
#: but not walked into: compilers and symbolic maths that eager probe code reaches only through
#: ``torch._dynamo``'s disable wrapper around ``torch.manual_seed`` (their code names reach
#: thousands of functions: 5,000 more to compare at every audit).
_OPAQUE = (
    "torch._dynamo",
    "torch._inductor",
    "torch.fx",
    "torch.export",
    "torch.utils._sympy",
    "sympy",
    "mpmath",
)
#: Keys the interpreter adds to a namespace by itself: a warning issued from a module's code,
#: a class's ``__annotations__`` created on first read.
_ADDED_BY_PYTHON = frozenset({"__warningregistry__", "__annotations__"})
#: Instance attributes the grader itself reassigns between calls, by class name (none today:
#: held-correct stand-ins, ``probes.Held``, keep no per-call state; list any that do here, or
#: honest submissions are flagged).
_REASSIGNED: dict[str, frozenset[str]] = {}
#: Containers in the probe modules' globals above this size are data, checked by identity.
_CONTAINER_CAP = 4096
_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: a class whose dict cannot change
_SCALARS = (str, bytes, int, float, complex, bool, type(None))
_CELL = operator.attrgetter("cell_contents")
_DICT = operator.attrgetter("__dict__")


def _mutable_class(value: Any) -> bool:
    return isinstance(value, type) and not value.__flags__ & _IMMUTABLE_TYPE


def _added_by_python(owner: str, key: Any, value: Any, library: bool = False) -> bool:
    """A key the interpreter may add to a verified namespace: a submodule imported late; in
    a library module's namespace (``library``) also what a lazily loaded module fills in,
    unless it shadows a builtin its code would otherwise call (dunders are looked up in
    builtins only)."""
    if key in _ADDED_BY_PYTHON:
        return True
    dunder = isinstance(key, str) and key.startswith("__") and key.endswith("__")
    if library and (dunder or key not in vars(builtins)):
        return True
    return isinstance(value, types.ModuleType) and value.__name__ == f"{owner}.{key}"


class Contents:
    """Everything the probes and the codec run with, verified by content after each call.

    :class:`Snapshot`'s identity checks see a replaced function; they cannot see an object
    edited in place, and such edits raise no audit event: a key of a probe's
    ``__kwdefaults__``, ``copy.deepcopy`` rebound in its module, a closure cell, a function's
    ``__dict__``, a class attribute of the transport encoder, an entry of a held-correct table.
    This class enumerates them once, before any student code runs, by walking from the probe
    modules (``roots``: ``autograder``, ``course_lib``, the public plugins) through module
    globals and functions' ``__globals__`` up to :data:`_DEPTH` modules away. In every module
    reached it records the namespace, and for each function found there its closure cells,
    ``__dict__``, keyword defaults and defaults, for each class its ``__dict__`` (and its
    bases'); in the probe modules themselves also the containers and the instances of their
    own classes that their globals hold (a ``HELD`` table, a known-bug catalogue).

    Every recorded mapping is compared after each call in C (:meth:`unchanged`): the same
    length and the same object under every key (identity, never ``==``). A namespace may gain
    only what the interpreter adds by itself (:func:`_added_by_python`).
    """

    def __init__(
        self, roots: Iterable[types.ModuleType], core: Iterable[str] = ()
    ) -> None:
        #: (label, mapping, keys, values at the snapshot, length at the snapshot)
        self.maps: list[tuple[str, Any, tuple[Any, ...], tuple[Any, ...], int]] = []
        self.lists: list[tuple[str, list[Any], tuple[Any, ...]]] = []
        self.sets: list[tuple[str, set[Any], frozenset[Any]]] = []
        self.cells: list[tuple[str, Any, Any]] = []
        #: (label, function, its __dict__): ``function.__dict__ = {...}`` replaces it.
        self.dicts_of: list[tuple[str, Any, dict[str, Any]]] = []
        #: The class whose ``__dict__`` a recorded mappingproxy is (to restore through it).
        self._classes: dict[int, type] = {}
        self._class_dicts: dict[type, Any] = {}
        #: (module or class, names) pairs walked: each code's names, once.
        self._visits: set[tuple[int, int]] = set()
        self._seen: set[int] = set()
        self._keep: list[
            Any
        ] = []  # walked objects stay alive, so their ids stay unique
        #: Namespaces looked into: id -> (label, mapping, the keys the walked code uses,
        #: whether every key is recorded).
        self._spaces: dict[int, tuple[str, Any, set[Any], bool]] = {}
        #: Functions still to walk, with their distance in calls from a probe.
        self._functions: list[tuple[str, types.FunctionType, bool, int]] = []
        core = frozenset(core)
        for module in roots:
            name = module.__name__
            namespace = vars(module)
            # A probe module's namespace is recorded whole: a global added or rebound there
            # (one shadowing a builtin, say) changes what its functions look up.
            self._space(name, namespace, whole=True)
            for key, value in list(namespace.items()):
                if key == "__builtins__":
                    continue  # builtins: watched by identity (Snapshot)
                if name in core or (isinstance(key, str) and key.endswith("_probe")):
                    self._value(f"{name}.{key}", value, None, True, 0)
        while self._functions:
            self._functions.sort(key=operator.itemgetter(3))
            self._function(*self._functions.pop(0))
        #: Libraries' namespaces (not the grader's): they may gain entries (a module loaded
        #: lazily fills its namespace) and keep counters and flags (``next_id``).
        self._libraries: set[int] = set()
        for label, mapping, keys, whole in self._spaces.values():
            cls = self._classes.get(id(mapping))
            home = cls.__module__ if cls is not None else mapping.get("__name__")
            library = not str(home).startswith(("autograder", "course_lib"))
            if library:
                self._libraries.add(id(mapping))
            present = tuple(
                k
                for k in mapping
                if (whole or k in keys)
                and not (library and type(mapping[k]) in (int, bool))
            )
            values = tuple(mapping[k] for k in present)
            self.maps.append((label, mapping, present, values, len(mapping)))
        self._compile()

    # ------------------------------------------------------------------ enumeration

    def _first(self, value: Any) -> bool:
        if id(value) in self._seen:
            return False
        self._seen.add(id(value))
        self._keep.append(value)
        return True

    def _record(
        self, label: str, mapping: Any, skip: frozenset[str] = frozenset()
    ) -> None:
        keys = tuple(k for k in mapping if k not in skip)
        values = tuple(mapping[k] for k in keys)
        self.maps.append((label, mapping, keys, values, len(mapping)))

    def _space(self, label: str, mapping: Any, whole: bool = False) -> set[Any]:
        """The keys of ``mapping`` walked so far; ``whole``: record every key."""
        if id(mapping) not in self._spaces:
            self._keep.append(mapping)
            self._spaces[id(mapping)] = (label, mapping, set(), whole)
        return self._spaces[id(mapping)][2]

    def _lookup(
        self,
        label: str,
        mapping: Any,
        key: Any,
        names: frozenset[str] | None,
        own: bool,
        depth: int,
    ) -> None:
        """Record ``mapping[key]`` (the code looks it up) and walk what it holds."""
        used = self._space(label, mapping)
        if key not in mapping:
            return
        value = mapping[key]
        if key in used:
            # A module or class met again is walked again under this code's names (each
            # function reaches its own attributes of ``np``); once per value and names.
            if not isinstance(value, (types.ModuleType, type)) or names is None:
                return
            visit = (id(value), id(names))
            if visit in self._visits:
                return
            self._visits.add(visit)
        used.add(key)
        self._value(f"{label}.{key}", value, names, own, depth)

    @staticmethod
    def _code_names(code: types.CodeType, names: set[str]) -> set[str]:
        """The globals and attributes ``code`` names, and its identifier-like strings
        (``getattr(module, "name")``), nested functions' included."""
        names.update(code.co_names)
        for constant in code.co_consts:
            if type(constant) is str and constant.isidentifier():
                names.add(constant)
            elif type(constant) is types.CodeType:
                Contents._code_names(constant, names)
        return names

    def _value(
        self,
        label: str,
        value: Any,
        names: frozenset[str] | None,
        own: bool,
        depth: int,
    ) -> None:
        """Record what ``value`` runs with, as code that uses ``names`` reaches it (None: a
        grader class or module, walked whole). ``own``: it hangs off a probe module, so its
        containers and instances are recorded too."""
        # type(), never isinstance(): a lazy object's __class__ may run code (and warn).
        kind = type(value)
        if issubclass(kind, _SCALARS):
            return
        if issubclass(kind, types.ModuleType):
            name = getattr(value, "__name__", None)
            if names is not None and isinstance(name, str) and name not in _UNWALKED:
                # Containers count only in the grader's own modules: a library's (such as
                # linecache.cache) change as it runs.
                mine = name.startswith(("autograder", "course_lib"))
                namespace = vars(value)
                for key in names & namespace.keys():
                    self._lookup(name, namespace, key, names, mine, depth)
        elif kind is types.FunctionType:
            if depth <= _DEPTH and id(value) not in self._seen:
                self._functions.append((label, value, own, depth))
        elif issubclass(kind, type):
            if _mutable_class(value):
                self._class(label, value, names, own, depth)
        elif kind in (types.MethodType, classmethod, staticmethod):
            self._value(label, value.__func__, names, own, depth)
        elif kind is property:
            for part in (value.fget, value.fset, value.fdel):
                self._value(label, part, names, own, depth)
        elif kind is functools.partial:
            self._value(f"{label}.func", value.func, names, own, depth)
            self._value(f"{label}.args", value.args, names, True, depth)
            self._container(f"{label}.keywords", value.keywords, depth)
        elif kind.__name__ == "_ArrayFunctionDispatcher":  # numpy's public functions
            self._value(label, value._implementation, names, own, depth)
        elif own:
            self._container(label, value, depth)

    def _function(
        self, label: str, function: types.FunctionType, own: bool, depth: int
    ) -> None:
        if not self._first(function) or str(function.__module__).startswith(_OPAQUE):
            return
        names = frozenset(self._code_names(function.__code__, set()))
        self._keep.append(names)  # its id keys self._visits
        namespace = function.__globals__
        home = str(namespace.get("__name__", label))
        mine = home.startswith(("autograder", "course_lib"))
        for key in names & namespace.keys():
            self._lookup(home, namespace, key, names, mine, depth + 1)
        attributes = vars(function)
        self.dicts_of.append((f"{label}.__dict__", function, attributes))
        self._record(f"{label}.__dict__", attributes)
        for key, value in list(attributes.items()):
            self._value(f"{label}.{key}", value, names, own, depth)
        keywords = function.__kwdefaults__
        if keywords:
            self._record(f"{label}.__kwdefaults__", keywords)
            for key, value in list(keywords.items()):
                where = f"{label}.__kwdefaults__[{key!r}]"
                self._value(where, value, names, True, depth)
        for index, value in enumerate(function.__defaults__ or ()):
            self._value(f"{label}.__defaults__[{index}]", value, names, True, depth)
        for index, cell in enumerate(function.__closure__ or ()):
            if _filled(cell):
                where = f"{label}.__closure__[{index}]"
                self.cells.append((where, cell, cell.cell_contents))
                self._value(where, cell.cell_contents, names, own, depth)

    def _class(
        self,
        label: str,
        cls: type,
        names: frozenset[str] | None,
        own: bool,
        depth: int,
    ) -> None:
        if str(cls.__module__).startswith(_OPAQUE):
            return
        whole = str(cls.__module__).startswith(("autograder", "course_lib"))
        # The class's own dict behind its mappingproxy: read in C much faster (and vars()
        # makes a new proxy each time). Restored through the class, never written directly.
        if cls not in self._class_dicts:
            behind = gc.get_referents(vars(cls))
            self._class_dicts[cls] = (
                behind[0] if len(behind) == 1 and type(behind[0]) is dict else vars(cls)
            )
        namespace = self._class_dicts[cls]
        self._classes[id(namespace)] = cls
        for key in list(namespace):
            if (
                whole
                or names is None
                or not isinstance(key, str)
                or key in names
                or (key.startswith("__") and key.endswith("__"))
            ):
                self._lookup(
                    label, namespace, key, None if whole else names, own, depth
                )
        if self._first(cls):
            for base in cls.__mro__[1:]:
                if _mutable_class(base):
                    where = f"{base.__module__}.{base.__qualname__}"
                    self._class(where, base, names, own, depth)

    def _container(self, label: str, value: Any, depth: int) -> None:
        kind = type(value)
        if kind in (dict, list, tuple, set, frozenset):
            if len(value) > _CONTAINER_CAP or not self._first(value):
                return
            if kind is dict:
                self._record(label, value)
            elif kind is list:
                self.lists.append((label, value, tuple(value)))
            elif kind is set:
                self.sets.append((label, value, frozenset(value)))
            items = value.items() if kind is dict else enumerate(value)
            for key, item in list(items):
                self._value(f"{label}[{key!r}]", item, None, True, depth)
        elif str(kind.__module__).startswith(("autograder", "course_lib")) and (
            type(getattr(value, "__dict__", None)) is dict
        ):
            if not self._first(value):
                return
            skip = _REASSIGNED.get(kind.__name__, frozenset())
            self._record(f"{label}.__dict__", vars(value), skip)
            for key, item in list(vars(value).items()):
                if key not in skip:
                    self._value(f"{label}.{key}", item, None, True, depth)

    # ------------------------------------------------------------------ verification

    def _compile(self) -> None:
        """The getters :meth:`unchanged` runs: one C-level pass over every recorded value."""
        full = [(m, k, v) for _, m, k, v, _ in self.maps if k]
        self._full_maps = [m for m, _, _ in full]
        self._getters = [operator.itemgetter(*k, k[0]) for _, k, _ in full]
        self._flat = tuple(
            itertools.chain.from_iterable((*v, v[0]) for _, _, v in full)
        )
        self._all_maps = [m for _, m, _, _, _ in self.maps]
        self._lengths = [n for _, _, _, _, n in self.maps]
        self._lists = [lst for _, lst, _ in self.lists]
        self._list_flat = tuple(
            itertools.chain.from_iterable(t for _, _, t in self.lists)
        )
        self._list_lengths = [len(t) for _, _, t in self.lists]
        self._cells = [cell for _, cell, _ in self.cells]
        self._cell_values = tuple(value for _, _, value in self.cells)
        self._functions = [function for _, function, _ in self.dicts_of]
        self._function_dicts = tuple(d for _, _, d in self.dicts_of)

    def size(self) -> dict[str, int]:
        """How much is verified (for the measurements in docs/DEVELOPING.md)."""
        return {
            "mappings": len(self.maps),
            "values": len(self._flat) - len(self._getters),
            "cells": len(self.cells),
            "lists": len(self.lists),
            "functions": len(self.dicts_of),
        }

    def unchanged(self) -> bool:
        """Whether every recorded value is still in place (exact: identity and lengths)."""
        try:
            return (
                list(map(len, self._all_maps)) == self._lengths
                and all(
                    map(
                        operator.is_,
                        itertools.chain.from_iterable(
                            map(operator.call, self._getters, self._full_maps)
                        ),
                        self._flat,
                    )
                )
                and all(map(operator.is_, map(_CELL, self._cells), self._cell_values))
                and all(
                    map(operator.is_, map(_DICT, self._functions), self._function_dicts)
                )
                and list(map(len, self._lists)) == self._list_lengths
                and all(
                    map(
                        operator.is_,
                        itertools.chain.from_iterable(self._lists),
                        self._list_flat,
                    )
                )
                and all(s == frozen for _, s, frozen in self.sets)
            )
        except (KeyError, ValueError, TypeError):
            return False

    def changes(self) -> list[str]:
        """What was edited since the snapshot (restored); additions the interpreter makes by
        itself are accepted."""
        if self.unchanged():
            return []
        changed: list[str] = []
        for index, (label, mapping, keys, values, _) in enumerate(self.maps):
            namespace = id(mapping) in self._spaces  # a module's or a class's
            for key, value in zip(keys, values, strict=True):
                if mapping.get(key, _MISSING) is not value:
                    changed.append(
                        f"{label}.{key}" if namespace else f"{label}[{key!r}]"
                    )
                    self._put(mapping, key, value)
            if len(mapping) != self._lengths[index]:
                owner = label if isinstance(mapping, dict) else ""
                # A class gaining an attribute shadows its bases': never accepted.
                library = (
                    id(mapping) in self._libraries and id(mapping) not in self._classes
                )
                for key in [k for k in list(mapping) if k not in keys]:
                    if not _added_by_python(owner, key, mapping[key], library):
                        where = f"{label}.{key}" if namespace else f"{label}[{key!r}]"
                        changed.append(f"{where} (added)")
                        self._put(mapping, key, _MISSING)
                self._lengths[index] = len(mapping)
        for label, cell, value in self.cells:
            if not _filled(cell) or cell.cell_contents is not value:
                changed.append(label)
                cell.cell_contents = value
        for label, function, attributes in self.dicts_of:
            if function.__dict__ is not attributes:
                changed.append(f"{label} (replaced)")
                with contextlib.suppress(TypeError, AttributeError):
                    function.__dict__ = attributes
        for label, items, values in self.lists:
            if len(items) != len(values) or any(map(operator.is_not, items, values)):
                changed.append(label)
                items[:] = values
        for label, members, frozen in self.sets:
            if members != frozen:
                changed.append(label)
                members.clear()
                members.update(frozen)
        return changed

    def _put(self, mapping: Any, key: Any, value: Any) -> None:
        """Restore ``mapping[key]`` (``_MISSING``: delete it); a class's dict via its class."""
        with contextlib.suppress(Exception):
            if (cls := self._classes.get(id(mapping))) is not None:
                if value is _MISSING:
                    delattr(cls, key)
                else:
                    setattr(cls, key, value)
            elif isinstance(mapping, dict):
                if value is _MISSING:
                    mapping.pop(key, None)
                else:
                    mapping[key] = value


# --------------------------------------------------------------------------- running cells


def _warm_up() -> None:
    """Run once, before the snapshot, what sets itself up on first use: the snapshot must
    see it done, or an honest first use looks like tampering. ``torch._dynamo`` wraps
    ``torch.manual_seed`` and caches a wrapper in its ``__dict__`` on the first call.

    It also starts the global random states from seed 0
    (:func:`autograder.randomness.seed_globals`). They would otherwise come from the OS, once
    per batch (every worker forks from the batch's mother): a submission that draws unseeded
    randomness would get other feedback, or other points, each time the class is graded. Every
    worker, after a restart too, starts the notebook from the same state."""
    torch.manual_seed(0)
    seed_globals()


def _display(*objects: Any, **kwargs: Any) -> None:
    """IPython's ``display`` builtin does nothing while grading."""


def _new_main() -> types.ModuleType:
    """A fresh ``__main__`` for the notebook, as IPython gives each kernel."""
    main = types.ModuleType("__main__")
    main.__dict__.update({"__builtins__": builtins, "display": _display})
    sys.modules["__main__"] = main
    return main


def _cell_filename(number: int) -> str:
    return f"<cell {number}>"


def _run_cell(
    namespace: dict[str, Any], number: int, source: str, seconds: float
) -> str | None:
    """Execute one cell; return None, or what went wrong in words."""
    filename = _cell_filename(number)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as error:
        return f"has a syntax error on line {error.lineno}: {error.msg}"
    try:
        with time_limit(seconds, _SoftTimeout, wall=seconds):
            exec(code, namespace)
    except _SoftTimeout:
        return f"did not finish within {seconds:.0f} s (an infinite loop, or too much work for grading?)"
    except BaseException as error:
        return describe_exception(error).summary
    return None


def _exited() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of each child that has exited, collected without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def _reap() -> None:
    """Collect exited children (a fork bomb's zombies count against the process limit)."""
    for _ in _exited():
        pass


# --------------------------------------------------------------------------- probe calls


def _resolve_probe(
    module: str,
    name: str,
    allowed: tuple[str, ...],
    denied: tuple[str, ...],
    known: dict[str, types.ModuleType] | None = None,
) -> Callable[..., Any]:
    if module.startswith(denied) or not (
        module in allowed or module.startswith(tuple(p + "." for p in allowed))
    ):
        raise PermissionError(f"probe module {module!r} is not public")
    # The module as imported before the sandbox, not whatever sys.modules holds now.
    target: Any = (known or {}).get(module) or importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{module}.{name} is not callable")
    return target  # type: ignore[no-any-return]


def _memory_error(error: BaseException) -> bool:
    text = str(error)
    return (
        isinstance(error, MemoryError)
        or "can't allocate memory" in text
        or "Cannot allocate memory" in text
    )


def _call(
    probe: Callable[..., Any],
    namespace: dict[str, Any],
    payload: bytes,
    seconds: float,
    memory_mb: int,
) -> tuple[dict[str, Any], bytes]:
    args, kwargs = transport.unpickle_args(payload)
    try:
        with time_limit(seconds, _SoftTimeout, wall=seconds):
            result = probe(Student(namespace), *args, **kwargs)
        return {"op": "result"}, transport.encode(result)
    except _SoftTimeout:
        return {
            "op": "error",
            "kind": "timeout",
            "summary": f"did not finish within {seconds:.0f} s: look for an infinite loop or very slow code",
        }, b""
    except BaseException as error:
        if _memory_error(error):
            summary = f"ran out of memory (the grader allows about {memory_mb} MB): {type(error).__name__}"
            return {
                "op": "error",
                "kind": "raised",
                "summary": summary,
                "flag": "memory",
            }, b""
        described = (
            error if isinstance(error, StudentError) else describe_exception(error)
        )
        reply = {"op": "error", "kind": described.kind, "summary": described.summary}
        if isinstance(error, BlockingIOError) and error.errno == errno.EAGAIN:
            reply["flag"] = "processes"  # the process limit: a fork bomb, contained
        return reply, b""


class _JudgeHelpers:
    """The worker's backend of :class:`autograder.probes.Held`: each value or gradient of a
    held helper is asked of the judge (a ``helper`` message, answered before the probe
    call's reply), which computes it with judge-only code or refuses the call."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd, self.out_fd = in_fd, out_fd

    def __call__(
        self,
        name: str,
        mode: str,
        args: tuple[Any, ...],
        cotangent: Any = None,
        wrt: tuple[int, ...] = (),
    ) -> Any:
        body = transport.encode(
            {"args": list(args), "cotangent": cotangent, "wrt": list(wrt)}
        )
        send(self.out_fd, {"op": "helper", "name": str(name), "mode": str(mode)}, body)
        header, payload = receive(self.in_fd)
        if header.get("op") == "helper_result":
            (value,), _ = transport.unpickle_args(payload)
            return value
        summary = str(header.get("summary", "the grader refused the call"))
        if header.get("op") == "helper_refused":
            raise StudentError("forbidden", summary)
        raise ValueError(summary)


def serve(in_fd: int, out_fd: int) -> int:
    """The worker's life: init, imports, sandbox, cells, then probe calls until ``exit``."""
    main_pid = os.getpid()
    init, cells_json = receive(in_fd)
    cells = json.loads(cells_json) if cells_json else init.get("cells", [])
    sys.path[:] = [p for p in init.get("sys_path", sys.path) if p]
    for module in init.get("preload", []):
        importlib.import_module(module)
    sys.path[:] = [p for p in init.get("sys_path_after", sys.path) if p]
    torch.set_num_threads(1)
    probes.set_held_backend(_JudgeHelpers(in_fd, out_fd))
    _warm_up()
    policy = sandbox.Policy.from_dict(init["policy"])
    limits = sandbox.Limits(**init["limits"])
    try:
        level = sandbox.enter(policy, limits)
    except Exception as error:  # the judge retries with a weaker level
        send(
            out_fd,
            {"op": "hello", "level": None, "error": f"{type(error).__name__}: {error}"},
        )
        return 3
    # The userns level leaves this process as init of a PID namespace (a new pid).
    main_pid = os.getpid()
    # After enter(): its fork (the userns level) re-creates threading's locks in the child.
    snapshot = Snapshot(init["probe_modules"])
    # From here on the process runs untrusted code: report forbidden attempts at once.
    sandbox.install_audit_hook(
        policy, limits, lambda header: send(out_fd, header), snapshot.code_written
    )
    snapshot.trust_hook()
    send(out_fd, {"op": "hello", "level": level, "pid": main_pid})

    namespace = _new_main().__dict__
    skip = set(init.get("skip", []))
    for number, source in cells:
        if number in skip:
            continue
        send(out_fd, {"op": "cell", "cell": number})
        failure = _run_cell(namespace, number, source, limits.cell_timeout_s)
        # A fork of the student's that fell through the cell: it must not speak for the worker.
        if os.getpid() != main_pid:
            os._exit(0)
        _reap()
        tampered = snapshot.changes()
        send(
            out_fd,
            {"op": "cell_done", "cell": number, "error": failure, "tampered": tampered},
        )
    send(out_fd, {"op": "ready"})

    allowed, denied = tuple(init["probe_modules"]), tuple(policy.deny_modules)
    while True:
        try:
            header, payload = receive(in_fd)
        except EOFError:
            return 0
        started = time.perf_counter()
        reply: dict[str, Any]
        if header.get("op") == "audit":
            # Once a property's last call has returned (the judge asks): what the probes
            # and the codec run with, compared with the snapshot and restored. Tampering
            # zeros the whole task being checked, so once per property decides the same as
            # once per call, for a twentieth of the cost (see docs/DEVELOPING.md).
            _reap()
            reply, body = {"op": "audited", "tampered": snapshot.changes()}, b""
        elif header.get("op") == "call":
            try:
                probe = _resolve_probe(
                    header["module"], header["name"], allowed, denied, snapshot.modules
                )
                reply, body = _call(
                    probe,
                    namespace,
                    payload,
                    float(header["timeout"]),
                    limits.memory_mb,
                )
            except Exception as error:
                reply, body = (
                    {
                        "op": "grader_error",
                        "summary": f"{type(error).__name__}: {error}",
                    },
                    b"",
                )
            if os.getpid() != main_pid:
                os._exit(0)
            _reap()
        else:
            return 0
        if isinstance(header.get("seq"), int):
            reply["seq"] = header["seq"]
        reply["seconds"] = round(time.perf_counter() - started, 4)
        send(out_fd, reply, body)


# --------------------------------------------------------------------------- the zygote


def _close_other_fds(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _spawn_from_zygote(
    control: socket.socket, request: dict[str, Any], fds: list[int]
) -> int:
    """Fork one worker; in the child, wire its descriptors and serve (never returns there)."""
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    code = 1
    try:
        control.close()
        os.setsid()
        in_fd, out_fd, output_fd = fds
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        _close_other_fds({in_fd, out_fd})
        os.chdir(request["cwd"])
        code = serve(in_fd, out_fd)
    except BaseException:
        code = 4
    finally:
        os._exit(code)


def _import_preload(control: socket.socket) -> None:
    """Read the setup message (modules, ``sys.path``) from ``control`` and import them."""
    message, _, _, _ = socket.recv_fds(control, HEADER_LIMIT, 0)
    setup = json.loads(message)
    sys.path[:] = [p for p in setup["sys_path"] if p]
    for module in setup["preload"]:
        importlib.import_module(module)
    torch.set_num_threads(1)


def _serve_spawns(control: socket.socket) -> int:
    """A zygote's life after its imports: say ``ready``, then fork a worker per request and
    report each child's exit, until the judge closes ``control``; then end its workers."""
    control.sendall(json.dumps({"op": "ready"}).encode())
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([control], [], [], 0.05)
        for pid, status in _exited():
            children.discard(pid)
            control.sendall(
                json.dumps(
                    {
                        "op": "exit",
                        "pid": pid,
                        "code": os.waitstatus_to_exitcode(status),
                    }
                ).encode()
            )
        if not ready:
            continue
        message, fds, _, _ = socket.recv_fds(control, HEADER_LIMIT, 3)
        if not message:
            # The judge is gone (exited or killed): its workers go too, as they would with
            # a zygote that dies with its judge (each one's placeholder dies with us).
            for pid in children:
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(pid, signal.SIGKILL)
            return 0
        request = json.loads(message)
        pid = _spawn_from_zygote(control, request, list(fds))
        children.add(pid)
        control.sendall(json.dumps({"op": "spawned", "pid": pid}).encode())


def zygote(control_fd: int) -> int:
    """Import the worker's modules once, then fork a fresh worker for each request.

    The zygote never runs student code and never sees a secret: it imports only public
    modules, forks, and reports each child's pid and exit status to the judge over a Unix
    socket; the judge sends the child's three pipes (in, out, stdout+stderr) with the request.
    """
    sandbox.die_with_parent()
    control = socket.socket(fileno=control_fd)
    _import_preload(control)
    return _serve_spawns(control)


def mother(control_fd: int) -> int:
    """The batch's one clean interpreter: import the worker's modules once, then fork a
    zygote for each judge that asks, so that no judge pays those imports (about 6 CPU s).

    A judge asks by sending one end of a fresh socket pair over ``control`` (every judge of
    the batch holds a copy of it, handed over when the pool starts the judge; no worker ever
    does: zygotes close it first thing, and workers keep only their own pipes). The forked
    zygote serves that judge alone over its end (:func:`_serve_spawns`), exactly as a zygote
    the judge started itself, and exits, ending its workers, when the judge is gone. The
    mother dies with the batch.
    """
    sandbox.die_with_parent()
    control = socket.socket(fileno=control_fd)
    _import_preload(control)
    while True:
        ready, _, _ = select.select([control], [], [], 0.5)
        _reap()  # zygotes whose judge is gone
        if not ready:
            continue
        message, fds, _, _ = socket.recv_fds(control, HEADER_LIMIT, 1)
        if not message:
            return 0  # the batch and every judge closed their copies
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid:
            os.close(fds[0])
            continue
        code = 1
        try:
            # No parent-death signal: a zygote serves its judge until the judge is gone
            # (killing the mother, which a submission at the rlimits level can reach, must
            # not take a neighbour's worker with it; judges then start their own).
            control.close()
            code = _serve_spawns(socket.socket(fileno=fds[0]))
        except BaseException:
            code = 4
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m autograder.grader.worker IN_FD OUT_FD``, ``--zygote CONTROL_FD``
    or ``--mother CONTROL_FD``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "--zygote":
        return zygote(int(argv[1]))
    if argv[0] == "--mother":
        return mother(int(argv[1]))
    in_fd, out_fd = int(argv[0]), int(argv[1])
    return serve(in_fd, out_fd)


if __name__ == "__main__":
    sys.exit(main())
