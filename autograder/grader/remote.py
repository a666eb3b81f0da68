"""The judge's side of the sandbox: worker processes and the subject that reaches them.

A :class:`Session` owns the worker of one submission. It starts a sandboxed
``python -m autograder.grader.worker`` (the strongest :mod:`~autograder.grader.sandbox` level that works
here), sends it the notebook's code cells and watches them run: a cell that hangs past its
limit or kills the worker is skipped in a fresh worker. :class:`RemoteSubject` is the
:class:`~autograder.subject.Subject` the checks see: ``call(probe, ...)`` pickles the
arguments, names the probe by module and qualified name, and decodes the reply with
:func:`autograder.transport.decode` (JSON and raw tensor bytes); the judge never unpickles
anything the worker sends.
When the worker dies or hangs during a check, the task at hand fails with the reason and a
fresh worker serves the next task.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from autograder import transport
from autograder.core import Property
from autograder.flags import Flag
from autograder.grader import sandbox, wire
from autograder.probes import held_names, probe_model
from autograder.secrets import is_secret
from autograder.subject import StudentError

__all__ = ["Event", "GraderError", "RemoteSubject", "Session", "probe_address"]

T = TypeVar("T")
#: Seconds the judge waits past a soft time limit before it kills the worker.
GRACE_S = 5.0
#: How long a worker may take to answer an audit (the check itself takes about 2 ms; only a
#: submission that keeps the worker busy between calls comes near this).
AUDIT_S = GRACE_S
#: How long a worker may take to import torch and friends and enter the sandbox.
STARTUP_S = 120.0
#: Worker restarts allowed per submission after crashes or hangs during the checks.
MAX_RESTARTS = 4
_OUTPUT_KEPT = 64 * 1024
#: The level that worked in this judge process, per list of levels to try.
_LEVEL_CACHE: dict[tuple[str, ...], str] = {}


class GraderError(RuntimeError):
    """Grading itself could not be done (the worker cannot even start)."""


#: Why a worker is gone: it closed its channel (exited, killed), its zygote exited, it sent
#: bytes that are not a message, a payload past the size cap, or a message out of turn.
GoneReason = Literal["closed", "zygote_exited", "malformed", "too_large", "unexpected"]


class _WorkerGone(Exception):
    """The worker exited, was killed, or broke the protocol; ``reason`` says which."""

    def __init__(self, reason: GoneReason, message: str) -> None:
        super().__init__(message)
        self.reason: GoneReason = reason


@dataclass
class Event:
    """Something the sandbox refused: ``op`` is ``forbidden`` or ``refused``."""

    op: wire.SandboxOp
    what: str
    cell: int | None = None
    task: str | None = None


def probe_address(probe: Callable[..., Any]) -> tuple[str, str]:
    """``(module, qualified name)`` of a probe; refuses closures, lambdas and hidden modules."""
    module = getattr(probe, "__module__", None)
    name = getattr(probe, "__qualname__", None)
    if not module or not name or "<" in name or module == "__main__":
        raise TypeError(
            f"{probe!r} is not a module-level function: probes must live in a public module"
        )
    if is_secret(module):
        raise TypeError(
            f"probe {module}.{name} lives in a module the worker cannot import"
        )
    return module, name


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hints = {
            "SIGKILL": " (killed: too much memory or time?)",
            "SIGXCPU": " (its CPU time limit)",
            "SIGSEGV": " (a crash inside native code)",
        }
        return f"was killed by {name}{hints.get(name, '')}"
    return f"exited with status {code} (os._exit or a crash?)"


class _Channel:
    """Length-prefixed messages over a pipe pair, with deadlines and size caps."""

    def __init__(self, read_fd: int, write_fd: int, max_payload: int) -> None:
        self.read_fd, self.write_fd, self.max_payload = read_fd, write_fd, max_payload
        self.buffer = bytearray()
        for fd in (read_fd, write_fd):
            fcntl.fcntl(
                fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK
            )

    def send(self, header: dict[str, Any], payload: bytes, deadline: float) -> None:
        view = memoryview(wire.pack(header, payload))
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            _, ready, _ = select.select([], [self.write_fd], [], left)
            if ready:
                try:
                    view = view[os.write(self.write_fd, view[: 1 << 16]) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise _WorkerGone(
                        "closed", "the worker closed its channel"
                    ) from None

    def _fill(self, size: int, deadline: float) -> None:
        while len(self.buffer) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise _WorkerGone("closed", "the worker closed its channel")
            self.buffer += chunk

    def receive(self, deadline: float) -> tuple[dict[str, Any], bytes]:
        self._fill(wire.PREFIX_SIZE, deadline)
        try:
            head_len, payload_len = wire.unpack_header(
                bytes(self.buffer[: wire.PREFIX_SIZE])
            )
        except (wire.ProtocolError, ValueError) as error:
            raise _WorkerGone("malformed", "the worker sent malformed data") from error
        if payload_len > self.max_payload:
            raise _WorkerGone(
                "too_large",
                f"the worker sent a result larger than {self.max_payload >> 20} MB",
            )
        total = wire.PREFIX_SIZE + head_len + payload_len
        self._fill(total, deadline)
        head = bytes(self.buffer[wire.PREFIX_SIZE : wire.PREFIX_SIZE + head_len])
        payload = bytes(self.buffer[wire.PREFIX_SIZE + head_len : total])
        del self.buffer[:total]
        try:
            header = json.loads(head)
        except (ValueError, RecursionError, MemoryError) as error:
            raise _WorkerGone("malformed", "the worker sent malformed data") from error
        if not wire.well_formed(header) or "op" not in header:
            raise _WorkerGone("malformed", "the worker sent malformed data")
        return header, payload


class _PopenHandle:
    """A worker started as its own ``python -m autograder.grader.worker`` process."""

    def __init__(
        self, fds: tuple[int, int, int], cwd: str, env: dict[str, str]
    ) -> None:
        in_fd, out_fd, output_fd = fds
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autograder.grader.worker", str(in_fd), str(out_fd)],
            pass_fds=(in_fd, out_fd),
            stdin=subprocess.DEVNULL,
            stdout=output_fd,
            stderr=output_fd,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.pid = self.process.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def _clean_interpreter(
    flag: str, preload: Sequence[str], env: dict[str, str]
) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """A fresh ``python -m autograder.grader.worker FLAG FD`` told to import ``preload``: the
    socket to it and the process (a zygote or a mother, which never see a secret)."""
    ours, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    cache = os.path.join(tempfile.gettempdir(), f"autograde-matplotlib-{os.getuid()}")
    process = subprocess.Popen(
        [sys.executable, "-m", "autograder.grader.worker", flag, str(child.fileno())],
        pass_fds=(child.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd="/",
        env={**env, "MPLCONFIGDIR": cache},  # the font cache, built once and kept
    )
    child.close()
    ours.sendall(
        _json({"preload": list(preload), "sys_path": [p for p in sys.path if p]})
    )
    return ours, process


class Mother:
    """The batch's one clean interpreter that imported the worker's modules; it forks a
    zygote for each judge (:func:`autograder.grader.worker.mother`).

    The pool starts it before its judges and hands each judge :attr:`socket` (pickled into
    the judge's start arguments, so the forkserver passes a duplicate of the descriptor);
    a judge then gets its zygote by a fork instead of about 6 CPU s of imports. Only the
    batch and its judges hold the socket.
    """

    def __init__(
        self, preload: Sequence[str], env: dict[str, str] | None = None
    ) -> None:
        self.socket, self.process = _clean_interpreter(
            "--mother", preload, _worker_env(env)
        )

    def close(self) -> None:
        self.socket.close()
        self.process.kill()
        self.process.wait()


#: The mother socket this judge was handed (``use_mother``), and the preload it serves.
_MOTHER: tuple[socket.socket, tuple[str, ...]] | None = None


def use_mother(mother: socket.socket | None, preload: Sequence[str]) -> None:
    """Get this judge's zygotes for ``preload`` from the batch's :class:`Mother`."""
    global _MOTHER
    _MOTHER = None if mother is None else (mother, tuple(preload))


class _Zygote:
    """A process that imported the worker's modules once and forks a worker per request.

    Starting a worker then costs a fork instead of importing torch. The zygote is a fresh
    interpreter, or a fork of the batch's :class:`Mother` (one): it never imports the hidden
    checks and never runs student code.
    """

    def __init__(self, preload: Sequence[str], env: dict[str, str]) -> None:
        global _MOTHER
        self.process: subprocess.Popen[bytes] | None = None
        self.closed = False
        forked: socket.socket | None = None
        if _MOTHER is not None and _MOTHER[1] == tuple(preload):
            # A fork of the mother, which speaks to us alone over our end of this pair.
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                socket.send_fds(
                    _MOTHER[0], [_json({"op": "zygote"})], [theirs.fileno()]
                )
                forked = ours
            except OSError:  # the mother is gone: this judge starts its own from now on
                ours.close()
                _MOTHER = None
            finally:
                theirs.close()
        if forked is not None:
            self.socket = forked
        else:
            self.socket, self.process = _clean_interpreter("--zygote", preload, env)
        self.exits: dict[int, int] = {}
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the zygote has imported everything (it starts importing at once)."""
        if not self.ready:
            self._expect("ready", time.monotonic() + STARTUP_S)
            self.ready = True

    def _next(self, deadline: float) -> dict[str, Any] | None:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([self.socket], [], [], max(left, 0))
        if not ready:
            return None
        data = self.socket.recv(1 << 16)
        if not data:
            self.closed = True
            raise _WorkerGone("zygote_exited", "the zygote exited")
        message: dict[str, Any] = json.loads(data)
        if message.get("op") == "exit":
            self.exits[int(message["pid"])] = int(message["code"])
        return message

    def _expect(self, op: str, deadline: float) -> dict[str, Any]:
        while time.monotonic() < deadline:
            message = self._next(deadline)
            if message is not None and message.get("op") == op:
                return message
        raise TimeoutError(f"the zygote did not answer {op!r}")

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return not self.closed

    def spawn(self, fds: tuple[int, int, int], cwd: str) -> _ZygoteHandle:
        try:
            socket.send_fds(
                self.socket, [_json({"op": "spawn", "cwd": cwd})], list(fds)
            )
        except OSError:
            self.closed = True
            raise
        pid = int(self._expect("spawned", time.monotonic() + 30)["pid"])
        return _ZygoteHandle(self, pid)

    def wait(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while pid not in self.exits:
            if time.monotonic() >= deadline:
                return None
            self._next(deadline)
        return self.exits.pop(pid)

    def close(self) -> None:
        self.socket.close()  # a forked zygote ends its workers and exits on this
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class _ZygoteHandle:
    def __init__(self, zygote: _Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.code: int | None = None

    def wait(self, timeout: float) -> int | None:
        if self.code is None:
            try:
                self.code = self.zygote.wait(self.pid, timeout)
            except (_WorkerGone, OSError):
                return None
        return self.code


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


_ZYGOTES: dict[tuple[str, ...], _Zygote] = {}


def prestart_zygote(preload: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Start this judge's zygote now, so its imports overlap with the judge's own."""
    key = tuple(preload)
    if key not in _ZYGOTES:
        with contextlib.suppress(OSError, ValueError):
            _ZYGOTES[key] = _Zygote(preload, _worker_env(env))


def _zygote(preload: Sequence[str], env: dict[str, str]) -> _Zygote | None:
    """This judge's zygote for ``preload`` (started on first use); None if it cannot start."""
    key = tuple(preload)
    existing = _ZYGOTES.get(key)
    try:
        if existing is None or not existing.alive():
            existing = _ZYGOTES[key] = _Zygote(preload, env)
        existing.wait_ready()
    except (OSError, TimeoutError, _WorkerGone, ValueError):
        _ZYGOTES.pop(key, None)
        return None
    return existing


class _Worker:
    """One sandboxed worker process, its channel and the drain of its stdout/stderr."""

    def __init__(
        self,
        init: dict[str, Any],
        cells: bytes,
        policy: sandbox.Policy,
        limits: sandbox.Limits,
        env: dict[str, str],
        zygote: _Zygote | None,
    ) -> None:
        self.policy = policy
        to_worker, from_worker, output = os.pipe(), os.pipe(), os.pipe()
        child_fds = (to_worker[0], from_worker[1], output[1])
        try:
            self.handle: _PopenHandle | _ZygoteHandle = (
                zygote.spawn(child_fds, policy.workdir)
                if zygote is not None
                else _PopenHandle(child_fds, policy.workdir, env)
            )
        finally:
            for fd in child_fds:
                os.close(fd)
        self.pid = self.handle.pid
        self.usage: dict[str, float] | None = None
        self.channel = _Channel(from_worker[0], to_worker[1], limits.result_mb << 20)
        self.output_fd = output[0]
        self.output = bytearray()
        self.output_bytes = 0
        self._drain = threading.Thread(target=self._drain_output, daemon=True)
        self._drain.start()
        # The cells travel as the payload: a notebook may hold more code than a header may.
        self.channel.send(
            {"op": "init", **init, "policy": policy.to_dict()},
            cells,
            time.monotonic() + 30,
        )

    def _drain_output(self) -> None:
        """Read the student's stdout/stderr so printing never blocks; keep only the start."""
        while True:
            try:
                chunk = os.read(self.output_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.output_bytes += len(chunk)
            if len(self.output) < _OUTPUT_KEPT:
                self.output += chunk[: _OUTPUT_KEPT - len(self.output)]

    def exit_description(self) -> str:
        return _describe_exit(self.handle.wait(2))

    def kill(self) -> None:
        """Kill the worker, everything in its process group, and every process of its uid."""
        for kill in (
            lambda: os.killpg(self.pid, signal.SIGKILL),
            lambda: os.kill(self.pid, signal.SIGKILL),
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill()
        if (
            self.policy.level in ("namespace", "privdrop")
            and self.policy.uid is not None
        ):
            sandbox.kill_uid(self.policy.uid)
        # Every process the worker started, whatever session it made: killed, counted.
        self.usage = sandbox.release_group(self.policy.cgroup)
        self.handle.wait(10)
        for fd in (self.channel.read_fd, self.channel.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._drain.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self.output_fd)


def _worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "NBGRADER_EXECUTION": "autograde",
        "CUDA_VISIBLE_DEVICES": "",
        "HYPOTHESIS_STORAGE_DIRECTORY": ".hypothesis",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("COURSE_")})
    env.update(extra or {})
    return env


@dataclass
class Session:
    """The worker of one submission: notebook execution, restarts, events, poisoned tasks.

    Args:
        cells: ``(cell number, source)`` of the code cells to run, grade cells removed.
        limits: The submission's limits.
        preload: Modules the worker imports before it enters the sandbox.
        probe_modules: Module prefixes the worker may resolve probes from.
        secret_paths: More paths the worker may not read (output folder, submissions).
        secret_modules: More module prefixes the worker may not import.
        levels: Sandbox levels to try, strongest first (default: what this process can do).
    """

    cells: list[tuple[int, str]]
    limits: sandbox.Limits
    preload: Sequence[str] = ()
    probe_modules: Sequence[str] = ("autograder", "course_lib")
    secret_paths: Sequence[str] = ()
    secret_modules: Sequence[str] = ()
    levels: Sequence[str] | None = None
    env: dict[str, str] | None = None
    #: Fork workers from a zygote that imported torch once (else start each from scratch).
    use_zygote: bool = True
    started: float = field(default_factory=time.monotonic)
    level: str | None = None
    skip: set[int] = field(default_factory=set)
    cell_errors: dict[int, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    poisoned: dict[str, tuple[str, str]] = field(default_factory=dict)
    restarts: int = 0
    calls: int = 0
    output_bytes: int = 0
    #: What the workers' control group counted (``sandbox.group_usage``); empty without one.
    cpu: dict[str, float] = field(default_factory=dict)
    notebook_ran: bool = False
    _worker: _Worker | None = None
    _workdir: str | None = None
    _task: str | None = None
    _cell: int | None = None

    # ------------------------------------------------------------------ budget

    @property
    def deadline(self) -> float:
        """When the submission's wall-clock budget runs out."""
        return self.started + self.limits.timeout_s

    def time_left(self) -> float:
        """Seconds left in the submission's budget."""
        return self.deadline - time.monotonic()

    # ------------------------------------------------------------------ events

    def _record(self, op: wire.SandboxOp, what: str) -> None:
        event = Event(
            op, str(what)[:500], self._cell if self._task is None else None, self._task
        )
        if event not in self.events and len(self.events) < 100:
            self.events.append(event)

    def _handle_side_message(self, header: dict[str, Any]) -> bool:
        op: wire.Op = header["op"]
        if op == "forbidden" or op == "refused":
            self._record(op, header.get("what", ""))
            return True
        return False

    def _record_tampering(self, header: dict[str, Any]) -> None:
        tampered = header.get("tampered") or []
        if isinstance(tampered, list) and tampered:
            names = ", ".join(str(t) for t in tampered[:5])
            self._record("forbidden", f"replace {names}")

    # ------------------------------------------------------------------ the worker

    def _launch(self, level: str) -> _Worker:
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix=f"autograde-{os.getpid()}-")
            os.chmod(self._workdir, 0o755)
        workdir = tempfile.mkdtemp(dir=self._workdir)
        os.chmod(workdir, 0o755)
        policy = sandbox.plan(
            level,
            workdir,
            secret_paths=self.secret_paths,
            secret_modules=self.secret_modules,
        )
        judge_path = [p for p in sys.path if p]
        init = {
            "skip": sorted(self.skip),
            "limits": asdict(self.limits),
            "preload": list(self.preload),
            "probe_modules": list(self.probe_modules),
            "sys_path": judge_path,
            "sys_path_after": [
                p
                for p in judge_path
                if not (policy.repo_root and os.path.realpath(p) == policy.repo_root)
            ],
        }
        env = _worker_env(self.env)
        return _Worker(
            init,
            _json([list(c) for c in self.cells]),
            policy,
            self.limits,
            env,
            _zygote(self.preload, env) if self.use_zygote else None,
        )

    def _start(self) -> _Worker:
        """A worker that said hello, at the strongest level that works here."""
        key = tuple(self.levels or sandbox.levels_to_try())
        levels = [_LEVEL_CACHE[key]] if key in _LEVEL_CACHE else list(key)
        failures = []
        for level in levels:
            candidate = self._launch(level)
            try:
                header = self._await_hello(candidate)
            except (_WorkerGone, TimeoutError):
                failures.append(
                    f"{level}: the worker {candidate.exit_description()}: {bytes(candidate.output[-2000:]).decode(errors='replace')}"
                )
                candidate.kill()
                continue
            if header.get("level") == level:
                _LEVEL_CACHE.setdefault(key, level)
                self.level = level
                return candidate
            failures.append(f"{level}: {header.get('error')}")
            candidate.kill()
        raise GraderError("could not start a sandboxed worker: " + "; ".join(failures))

    def _await_hello(self, candidate: _Worker) -> dict[str, Any]:
        deadline = time.monotonic() + STARTUP_S
        while True:
            header, _ = candidate.channel.receive(deadline)
            if header["op"] == "hello":
                return header

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self.output_bytes += self._worker.output_bytes
            for key, value in (self._worker.usage or {}).items():
                # CPU seconds and throttled periods add up over restarts; the rest do not.
                added = key in ("cpu_s", "throttled")
                self.cpu[key] = self.cpu.get(key, 0) + value if added else value
            self._worker = None

    def restart_worker(self) -> None:
        """Drop the worker (a fresh one serves the next call): its channel is not trusted."""
        self._stop_worker()

    def close(self) -> None:
        """Kill the worker and remove its directories."""
        self._stop_worker()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def run_notebook(self) -> None:
        """Start a worker and run the cells; skip (in a fresh worker) any cell that hangs or kills it."""
        self._stop_worker()
        while True:
            if self.time_left() <= 0:
                raise TimeoutError
            self._worker = self._start()
            self._cell = None
            try:
                self._watch_cells(self._worker)
                self.notebook_ran = True
                return
            except TimeoutError:
                reason = f"did not finish within {self.limits.cell_timeout_s:.0f} s, and ignored the interruption; the grader skipped it"
            except _WorkerGone as error:
                reason = f"stopped the worker process, which {self._worker.exit_description()}; the grader skipped it"
                if error.reason == "malformed":
                    reason = "sent the grader a malformed message (is it writing to the grader's channel?); the grader skipped it"
            cell = self._cell
            self._stop_worker()
            if cell is None:
                if self.time_left() <= 0:
                    raise TimeoutError
                raise GraderError(
                    f"the worker failed before running any cell: {reason}"
                )
            self.cell_errors[cell] = reason
            self.skip.add(cell)

    def _watch_cells(self, current: _Worker) -> None:
        while True:
            limit = (
                self.limits.cell_timeout_s + GRACE_S
                if self._cell is not None
                else STARTUP_S
            )
            deadline = min(time.monotonic() + limit, self.deadline)
            header, body = current.channel.receive(deadline)
            op: wire.Op = header["op"]
            if self._handle_side_message(header):
                continue
            if op == "helper":
                self._serve_helper(current, header, body, frozenset(), deadline)
                continue
            if op == "cell":
                self._cell = int(header.get("cell", -1))
            elif op == "cell_done":
                cell = int(header.get("cell", -1))
                error = header.get("error")
                if error:
                    self.cell_errors[cell] = str(error)[:2000]
                else:
                    self.cell_errors.pop(cell, None)
                self._record_tampering(header)
                self._cell = None
            elif op == "ready":
                return
            else:
                raise _WorkerGone("unexpected", "the worker sent an unexpected message")

    # ------------------------------------------------------------------ calls

    def begin_task(self, task: str | None) -> None:
        """Attribute what happens next (events, crashes) to ``task``."""
        self._task = task

    def _serve_helper(
        self,
        current: _Worker,
        header: dict[str, Any],
        body: bytes,
        held: frozenset[str],
        deadline: float,
        model: Any = None,
    ) -> None:
        """Answer a held helper's ``helper`` message: its value or gradient, computed here
        with judge-only code (:mod:`autograder.hidden.held`), when the probe running now
        holds that helper; otherwise refuse it and record the attempt (``forbidden``: the
        task being checked scores zero, or the whole notebook when no check is running)."""
        name = str(header.get("name", ""))[:100]
        payload = b""
        if name not in held:
            where = f"while {self._task} was checked" if self._task else "in a cell"
            self._record(
                "forbidden",
                f"call the grader's own {name} (a held-correct stand-in) {where}",
            )
            reply = {
                "op": "helper_refused",
                "summary": f"the grader's own {name} may not be called here: "
                "compute every graded task yourself",
            }
        else:
            try:
                request = transport.decode(body)
                if not isinstance(request, dict):
                    raise transport.TransportError("a malformed helper request")
                from autograder.hidden.held import answer

                value = answer(
                    name,
                    str(header.get("mode")),
                    request.get("args"),
                    request.get("cotangent"),
                    request.get("wrt") or (),
                    model=model,
                )
                payload = transport.pickle_args((value,), {})
                reply = {"op": "helper_result"}
            except (transport.TransportError, ValueError) as error:
                reply = {"op": "helper_error", "summary": str(error)[:1000]}
        current.channel.send(reply, payload, deadline)

    def call(
        self,
        module: str,
        name: str,
        payload: bytes,
        seconds: float,
        held: frozenset[str] = frozenset(),
        model: Any = None,
    ) -> tuple[dict[str, Any], bytes]:
        """One probe call with a soft limit of ``seconds``; restarts the worker if needed.

        ``held``: the helpers this probe holds correct (it may ask for their values);
        ``model``: the probe's ``log_joint`` argument, which the judge evaluates them with.

        Raises:
            StudentError: ``timeout`` or ``crashed`` (the worker is then gone).
        """
        if self._worker is None:
            if self.restarts >= MAX_RESTARTS:
                raise StudentError(
                    "crashed",
                    "stopped the worker process too many times; the remaining checks were not run",
                )
            self.restarts += 1
            task = self._task
            self._task = None
            try:
                self.run_notebook()
            except TimeoutError:
                raise StudentError(
                    "timeout", "ran out of time: this submission used up its time limit"
                ) from None
            finally:
                self._task = task
        current = self._worker
        assert current is not None
        self.calls += 1
        message = {
            "op": "call",
            "module": module,
            "name": name,
            "timeout": max(seconds, 0.01),
            "seq": self.calls,
        }
        try:
            header, body = self._exchange(
                current, message, payload, seconds + GRACE_S, held, model
            )
        except TimeoutError:
            self._stop_worker()
            raise StudentError(
                "timeout",
                f"did not finish within {seconds:.0f} s and ignored the interruption: look for an infinite loop",
            ) from None
        except _WorkerGone as error:
            why = _why_gone(current, error)  # before the kill, which would be its cause
            self._stop_worker()
            raise StudentError("crashed", why) from None
        except BaseException:
            # The property's own time limit, or an interrupt: the worker is mid-call.
            self._stop_worker()
            raise
        return header, body

    def _exchange(
        self,
        current: _Worker,
        message: dict[str, Any],
        payload: bytes,
        seconds: float,
        held: frozenset[str] = frozenset(),
        model: Any = None,
        op: str | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Send ``message`` (within ``seconds``), then read, within ``seconds`` more, until
        the reply that carries its ``seq`` (and is an ``op``, when given), answering the held
        helpers' requests and recording side messages on the way. A reply to an earlier
        message (a forged extra one shifted the channel) is dropped.

        Raises:
            TimeoutError, _WorkerGone: from the channel; the caller stops the worker.
        """
        current.channel.send(message, payload, time.monotonic() + seconds)
        deadline = time.monotonic() + seconds
        while True:
            header, body = current.channel.receive(deadline)
            if header["op"] == "helper":
                self._serve_helper(current, header, body, held, deadline, model)
            elif (
                not self._handle_side_message(header)
                and header.get("seq") == message["seq"]
                and op in (None, header["op"])
            ):
                return header, body

    def audit(self) -> str | None:
        """After a property: the worker compares what the probes and the codec run with
        against its snapshot and undoes any change, which is recorded (``forbidden``) against
        the task being checked, so the whole task scores zero.

        Once per property is as strict as once per call: tampering found at any call zeros
        the whole task, and the check runs before the next property (the next task) starts.

        Returns:
            None when the worker answered (or there is none: a fresh one will be started);
            otherwise why it did not, and the worker is stopped: the property's results
            cannot be trusted.
        """
        current = self._worker
        if current is None:
            return None
        self.calls += 1
        try:
            # No probe runs now: nothing is held.
            header, _ = self._exchange(
                current, {"op": "audit", "seq": self.calls}, b"", AUDIT_S, op="audited"
            )
        except TimeoutError:
            self._stop_worker()
            return f"did not let the grader check the worker process within {AUDIT_S:.0f} s after the check"
        except _WorkerGone as error:
            why = _why_gone(current, error)
            self._stop_worker()
            return why
        except BaseException:
            self._stop_worker()
            raise
        self._record_tampering(header)
        return None


def _why_gone(worker: _Worker, error: _WorkerGone) -> str:
    """What the submission did to its worker, in the feedback's words."""
    if error.reason in ("malformed", "too_large"):
        return str(error).replace("the worker", "the worker process")
    return f"stopped the worker process, which {worker.exit_description()}"


class RemoteSubject:
    """A :class:`~autograder.subject.Subject` whose probes run in the submission's worker."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.prop: Property | None = None
        self.deadline = 0.0
        self.flags: list[Flag] = []

    def begin(self, prop: Property) -> None:
        """Called before each property: its time limit and its flags start here."""
        self.prop = prop
        self.flags = []
        self.deadline = min(
            time.monotonic() + prop.timeout_s - 1.0, self.session.deadline
        )
        self.session.begin_task(prop.task)

    def _poison(self, kind: str, summary: str) -> StudentError:
        if self.prop is not None:
            self.session.poisoned.setdefault(self.prop.task, (kind, summary))
        return StudentError(kind, summary)

    def call(self, probe: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``probe(student, *args, **kwargs)`` in the worker and return its decoded result."""
        outcome = self._outcome(probe, args, kwargs)
        if isinstance(outcome, StudentError):
            # One raise site, outside any except block: Hypothesis sees the same failure
            # every time (a different origin would be reported as flaky).
            raise outcome
        return outcome  # type: ignore[no-any-return]

    def _outcome(
        self, probe: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self.prop is not None and self.prop.task in self.session.poisoned:
            return StudentError(*self.session.poisoned[self.prop.task])
        module, name = probe_address(probe)
        payload = transport.pickle_args(args, kwargs)
        seconds = self.deadline - time.monotonic()
        if seconds <= 0:
            return self._poison(
                "timeout",
                "ran out of time: the checks of this submission used up their time limit",
            )
        try:
            header, body = self.session.call(
                module,
                name,
                payload,
                seconds,
                frozenset(held_names((args, kwargs))),
                probe_model(probe, args, kwargs),
            )
        except StudentError as error:
            if error.kind in ("timeout", "crashed"):
                return self._poison(error.kind, error.summary)
            return StudentError(error.kind, error.summary)
        op: wire.Op = header["op"]
        if op == "result":
            # What the judge cannot read is the worker's doing (a tampered encoder): zero on
            # this check, flagged, never a grader error.
            try:
                value = transport.decode(body)
                problem = transport.result_problem(probe, value)
            except transport.TransportError as error:
                problem = str(error)
            except MemoryError:
                problem = "it does not fit in the grader's memory"
            if problem is None:
                return value
            if "malformed_result" not in self.flags:
                self.flags.append("malformed_result")
            return StudentError(
                "bad_result", f"returned something the grader cannot read: {problem}"
            )
        if op == "error":
            kind = (
                header.get("kind")
                if header.get("kind") in wire.ERROR_KINDS
                else "raised"
            )
            summary = str(header.get("summary", ""))[:2000]
            if (
                header.get("flag") in ("memory", "processes")
                and header["flag"] not in self.flags
            ):
                self.flags.append(header["flag"])
            if kind == "timeout":
                return self._poison(kind, summary)
            return StudentError(str(kind), summary)
        if op == "grader_error":
            self.session.restart_worker()
            # The notebook has run: whatever the worker reports now is the submission's
            # doing (a poisoned sys.modules, a forged message), never the grader's own error.
            said = str(header.get("summary", ""))[:300]
            return self._poison(
                "crashed",
                "the grader could not call its check function in your worker process: your code "
                f"changed something the grader relies on (the worker said: {said!r})",
            )
        return self._poison("crashed", "the worker process sent an unexpected reply")

    def __repr__(self) -> str:
        return "<submission>"
