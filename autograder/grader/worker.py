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
import importlib
import itertools
import json
import linecache
import operator
import os
import select
import socket
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from autograder import probes, transport
from autograder.grader import sandbox
from autograder.grader.wire import HEADER_LIMIT, receive, send
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
    ``sys.modules["autograder.probes"] = ...``)."""

    def __init__(self) -> None:
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
        self._prepare_fast_path()

    def _prepare_fast_path(self) -> None:
        """Getters that read, in C, every watched value whose identity :meth:`changes` checks.

        The full comparison in :meth:`changes` is a Python loop over thousands of entries
        (about 5 ms in a worker, once per probe call: half of a probe call's cost). Reading the
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
        return all(
            len(a) == len(b) and all(map(operator.is_, a, b))
            for a, b in zip(now, originals, strict=True)
        ) and not any(map(_filled, self._empty_cells))

    def changes(self) -> list[str]:
        """Names that were replaced, deleted or rewritten since the snapshot; restores them."""
        writes = self._code_writes
        same = self.unchanged()
        self._writes_checked = (
            writes  # the slow path below compares the functions anyway
        )
        if same:
            return []
        changed = []
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


# --------------------------------------------------------------------------- running cells


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
        with time_limit(seconds, _SoftTimeout, cpu=False):
            exec(code, namespace)
    except _SoftTimeout:
        return f"did not finish within {seconds:.0f} s (an infinite loop, or too much work for grading?)"
    except BaseException as error:
        return describe_exception(error).summary
    return None


def _reap() -> None:
    """Collect exited children (a fork bomb's zombies count against the process limit)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


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
        with time_limit(seconds, _SoftTimeout, cpu=False):
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
    snapshot = Snapshot()
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
        if header.get("op") != "call":
            return 0
        started = time.perf_counter()
        try:
            probe = _resolve_probe(
                header["module"], header["name"], allowed, denied, snapshot.modules
            )
            reply, body = _call(
                probe, namespace, payload, float(header["timeout"]), limits.memory_mb
            )
        except Exception as error:
            reply, body = (
                {"op": "grader_error", "summary": f"{type(error).__name__}: {error}"},
                b"",
            )
        if os.getpid() != main_pid:
            os._exit(0)
        _reap()
        reply["tampered"] = snapshot.changes()
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


def zygote(control_fd: int) -> int:
    """Import the worker's modules once, then fork a fresh worker for each request.

    The zygote never runs student code and never sees a secret: it imports only public
    modules, forks, and reports each child's pid and exit status to the judge over a Unix
    socket; the judge sends the child's three pipes (in, out, stdout+stderr) with the request.
    """
    sandbox.die_with_parent()
    control = socket.socket(fileno=control_fd)
    message, _, _, _ = socket.recv_fds(control, HEADER_LIMIT, 0)
    setup = json.loads(message)
    sys.path[:] = [p for p in setup["sys_path"] if p]
    for module in setup["preload"]:
        importlib.import_module(module)
    torch.set_num_threads(1)
    control.sendall(json.dumps({"op": "ready"}).encode())
    while True:
        ready, _, _ = select.select([control], [], [], 0.05)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
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
            return 0  # the judge is gone
        request = json.loads(message)
        pid = _spawn_from_zygote(control, request, list(fds))
        control.sendall(json.dumps({"op": "spawned", "pid": pid}).encode())


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m autograder.grader.worker IN_FD OUT_FD`` or ``--zygote CONTROL_FD``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "--zygote":
        return zygote(int(argv[1]))
    in_fd, out_fd = int(argv[0]), int(argv[1])
    return serve(in_fd, out_fd)


if __name__ == "__main__":
    sys.exit(main())
