"""Running untrusted submissions: limits, isolation levels and the worker's audit hook.

The judge decides a :class:`Policy` (what the worker may see, read and write) and
:class:`Limits` (memory, time, processes, output); the worker applies them to itself with
:func:`enter` after importing what it needs and before running any student code. Levels,
strongest first:

``namespace``
    Running as root where ``unshare`` works (CI runners, this machine): a new mount and
    network namespace; the repository is replaced by a read-only view holding only the
    public packages and the virtual environment (``autograder/hidden`` and
    ``course_lib/reference`` are empty there); the submissions, the output folder, ``/tmp``
    and ``/dev/shm`` are private or empty; no network; then privileges drop to a uid of
    its own (one per judge process, so one submission's processes never count against
    another's).
``userns``
    Anyone else where unprivileged user namespaces work (most Linux servers): a private user
    namespace mapping only the grader's own uid, and inside it the same mount and network
    namespaces and filesystem view as ``namespace``, plus a PID namespace with its own
    ``/proc``: the submission cannot see, signal (SIGKILL, SIGSTOP) or trace the judge or any
    other process, every process it starts dies with the worker (the worker is the
    namespace's init), and its capabilities are dropped once the mounts are made. Files keep
    the grader's uid, so what the grader may write outside the view (nothing is mounted
    there) is its own.
``privdrop``
    Root without namespaces (a Docker container without ``CAP_SYS_ADMIN``): the same uid
    drop; file permissions (see ``scripts/gradescope_bundle.py``) hide the secrets.
``rlimits``
    Anyone else: resource limits, a fresh working directory and the audit hook only. Pure
    Python can defeat an audit hook, so this level does not isolate: ``autograde`` refuses it
    unless ``--insecure`` is given.

Where the grader may create a control group (root; cgroup v2 or v1), the worker first joins
one of its own (:func:`join_group`): it and every process it starts, whatever session or
process group they make, share :attr:`Limits.cpus` cores, ``max_processes`` tasks and a
memory limit, and the judge kills and counts them together (:func:`release_group`). Where it
may not (``userns`` as an ordinary user), each process has its own CPU-seconds limit and the
PID namespace kills them all with the worker.

Every level sets the resource limits (address space, CPU seconds, processes, file size,
open files), ``PR_SET_NO_NEW_PRIVS`` and a parent-death signal, and installs an audit hook
(:pep:`578`) that refuses, and reports to the judge, any attempt to import or read the
hidden checks or the reference, to read the rest of the repository or the other
submissions, or to write outside the working directory; it also refuses sockets,
``ctypes`` and more than a few child processes. The hook is defence in depth: in the
``namespace`` level the files are not there at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import pwd
import resource
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograder.secrets import SECRET_MODULES, secret_dirs

if TYPE_CHECKING:
    from autograder.grader.wire import SandboxOp

__all__ = [
    "LEVELS",
    "Limits",
    "Policy",
    "enter",
    "die_with_parent",
    "group_usage",
    "join_group",
    "release_group",
    "install_audit_hook",
    "kill_uid",
    "isolation_available",
    "levels_to_try",
    "user_namespaces_work",
    "plan",
]

#: Isolation levels, strongest first.
LEVELS = ("namespace", "userns", "privdrop", "rlimits")
#: The levels that isolate a submission from the judge and the secrets by the kernel.
ISOLATING = ("namespace", "userns", "privdrop")
_UID_BASE = 100_000


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Times are seconds, sizes megabytes unless named bytes."""

    #: Address space the worker may add to what it uses after its imports.
    memory_mb: int = 2048
    #: Wall clock for the whole submission: running the notebook and every check.
    timeout_s: float = 600.0
    #: Wall clock for one notebook cell.
    cell_timeout_s: float = 120.0
    #: Largest file the worker may write (its stdout and stderr are drained separately).
    file_mb: int = 64
    #: Size of the private /tmp in the namespace level.
    tmp_mb: int = 256
    #: Processes and threads of the worker's uid (namespace and privdrop levels).
    max_processes: int = 64
    #: fork/exec/subprocess calls the submission may make in all (all its processes together).
    max_spawns: int = 16
    #: Largest result the judge reads back from one probe call.
    result_mb: int = 512
    #: CPU cores the worker and every process it starts may use together (a control
    #: group's quota, where the machine has one): a submission that starts many busy
    #: processes slows only itself.
    cpus: float = 1.0

    @property
    def cpu_s(self) -> int:
        """CPU seconds for the worker process (a safety net under the wall-clock budget)."""
        return int(self.timeout_s) + 30


@dataclass
class Policy:
    """What the worker may see, read and write; decided by the judge, applied by the worker."""

    level: str
    workdir: str
    uid: int | None = None
    #: Repository root whose contents are off limits except ``keep_paths`` (None: installed package).
    repo_root: str | None = None
    #: Paths that stay readable: the public packages, the interpreter, the virtual environment.
    keep_paths: list[str] = field(default_factory=list)
    #: Reading or importing these is an attempt on the secrets (flagged, zero).
    deny_paths: list[str] = field(default_factory=list)
    deny_modules: list[str] = field(default_factory=lambda: list(SECRET_MODULES))
    #: Directories covered by an empty read-only view of ``keep_paths`` (namespace level).
    whitelist_roots: list[str] = field(default_factory=list)
    #: Directories covered by an empty tmpfs (namespace level).
    hide_paths: list[str] = field(default_factory=list)
    #: Mount a private /tmp and /dev/shm (namespace level).
    private_tmp: bool = True
    #: Name of the control group the worker joins (:func:`join_group`); None: none.
    cgroup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, sent to the worker."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


# --------------------------------------------------------------------------- the judge's side


def _package_dir(name: str) -> Path:
    module = sys.modules.get(name) or __import__(name)
    return Path(module.__file__).resolve().parent  # type: ignore[arg-type]


def repo_root() -> Path | None:
    """The source checkout the packages run from (an editable install), if any."""
    root = _package_dir("autograder").parent
    if (root / "pyproject.toml").is_file() and (root / "course_lib").is_dir():
        return root
    return None


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(
        path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes
    )


def _world_traversable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return False


def _outermost(paths: Iterable[str]) -> list[str]:
    unique = sorted(set(paths), key=len)
    kept: list[str] = []
    for p in unique:
        if not _under(p, kept):
            kept.append(p)
    return kept


def plan(
    level: str,
    workdir: str,
    *,
    uid: int | None = None,
    secret_paths: Iterable[str] = (),
    secret_modules: Iterable[str] = (),
) -> Policy:
    """The policy for one worker of this judge process.

    Args:
        level: One of :data:`LEVELS`.
        workdir: A fresh directory for the worker (its cwd where /tmp is not private).
        uid: The uid to drop to (namespace, privdrop); defaults to one derived from this pid.
        secret_paths: More paths the worker must not read (the output folder, the
            submissions, judge-only plugin modules).
        secret_modules: More module prefixes the worker must not import.
    """
    root = repo_root()
    autograder_dir, course_dir = _package_dir("autograder"), _package_dir("course_lib")
    deny = [*map(str, secret_dirs()), *map(str, secret_paths)]
    interpreter = [
        os.path.realpath(p)
        for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    ]
    keep = [str(autograder_dir), str(course_dir), *interpreter]
    covered = [str(root)] if root else []
    # Ancestors the sandbox uid could not traverse (/root holding pyenv, say).
    for path in keep:
        for ancestor in Path(path).parents:
            if str(ancestor) != "/" and not _world_traversable(ancestor):
                covered.append(str(ancestor))
    covered = _outermost(covered)
    hide = [p for p in deny if not _under(p, covered) or _under(p, keep)]
    uid = uid if uid is not None else _UID_BASE + os.getpid()
    return Policy(
        level=level,
        workdir=workdir,
        uid=uid,
        repo_root=str(root) if root else None,
        keep_paths=_outermost(keep),
        deny_paths=deny,
        deny_modules=[*SECRET_MODULES, *secret_modules],
        whitelist_roots=covered,
        hide_paths=hide,
        private_tmp=not any(_under(p, ["/tmp"]) for p in keep),
        cgroup=f"autograde-{uid}",
    )


def levels_to_try() -> list[str]:
    """Levels this process can attempt, strongest first."""
    if os.geteuid() == 0:
        return ["namespace", "privdrop", "userns", "rlimits"]
    return ["userns", "rlimits"]


def user_namespaces_work() -> bool:
    """Whether this process may create a user and mount namespace (tried in a child)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if _libc().unshare(_CLONE_NEWUSER | _CLONE_NEWNS) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def isolation_available() -> bool:
    """Whether some isolating level (:data:`ISOLATING`) can work here."""
    return os.geteuid() == 0 or user_namespaces_work()


def kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (a sandbox uid): forks that left the process group too."""
    if uid is None or os.geteuid() != 0:
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# --------------------------------------------------------------------------- the worker's side

_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_CLONE_NEWUSER, _CLONE_NEWPID = 0x10000000, 0x20000000
_MS_NOEXEC = 8
_CAP_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MS_REMOUNT, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def die_with_parent(libc: ctypes.CDLL | None = None) -> None:
    """Have the kernel kill this process (SIGKILL) when its parent exits.

    Linux's ``PR_SET_PDEATHSIG``: a judge dies with the batch, a zygote with its judge, a
    worker with its judge (or the placeholder of its PID namespace), so no grading process
    outlives the one that started it. Does nothing where ``prctl`` is missing.

    Args:
        libc: The C library to call (default: the one this process already loaded).
    """
    with contextlib.suppress(OSError, AttributeError):
        (libc or ctypes.CDLL(None)).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    libc: ctypes.CDLL,
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    _check(
        libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _whitelist(libc: ctypes.CDLL, root: str, keeps: list[str], stage: str) -> None:
    """Cover ``root`` with an empty read-only tmpfs that holds only ``keeps`` (bind mounts)."""
    staged = []
    for index, keep in enumerate(keeps):
        slot = os.path.join(stage, f"{len(os.listdir(stage))}-{index}")
        os.mkdir(slot)
        _mount(libc, keep, slot, None, _MS_BIND | _MS_REC)
        staged.append((slot, keep))
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
    for slot, keep in staged:
        os.makedirs(keep, mode=0o755, exist_ok=True)
        _mount(libc, slot, keep, None, _MS_MOVE)
    _mount(
        libc,
        None,
        root,
        None,
        _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
        "size=1m,mode=755",
    )


def world_writable_dirs(depth: int = 2) -> list[str]:
    """Directories anyone may write to, within ``depth`` levels of ``/`` (``/var/tmp``,
    ``/run/lock``, ``/dev/mqueue``...), links and ``/proc``, ``/sys`` aside: places where a
    submission could leave files for a later one or fill the disk."""
    found: list[str] = []
    level = ["/"]
    for _ in range(depth):
        below = []
        for parent in level:
            try:
                entries = list(os.scandir(parent))
            except OSError:
                continue
            for entry in entries:
                if entry.path in ("/proc", "/sys"):
                    continue
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if mode & stat.S_IWOTH:
                    found.append(entry.path)
                else:
                    below.append(entry.path)
        level = below
    return sorted(found)


def _enter_namespace(policy: Policy, limits: Limits, user: bool = False) -> str:
    """New mount and network namespaces; a view of the filesystem without the secrets.

    With ``user``, first a user namespace that maps only this process's uid and gid (what an
    unprivileged process may do), which gives it the capabilities to make the mounts.
    """
    libc = _libc()
    stage = os.path.join(policy.workdir, ".stage")
    os.makedirs(stage, exist_ok=True)
    if user:
        uid, gid = os.getuid(), os.getgid()
        _check(libc.unshare(_CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    _check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET), "unshare")
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount(libc, "tmpfs", stage, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=700")
    for root in policy.whitelist_roots:
        keeps = [k for k in policy.keep_paths if _under(k, [root]) and k != root]
        _whitelist(libc, root, keeps, stage)
    for path in policy.hide_paths:
        if os.path.isdir(path):
            _mount(
                libc,
                "tmpfs",
                path,
                "tmpfs",
                _MS_RDONLY | _MS_NOSUID | _MS_NODEV,
                "size=4k,mode=555",
            )
    workdir = policy.workdir
    if policy.private_tmp:
        _mount(
            libc,
            "tmpfs",
            "/tmp",
            "tmpfs",
            _MS_NOSUID | _MS_NODEV,
            f"size={limits.tmp_mb}m,mode=1777",
        )
        if os.path.isdir("/dev/shm"):
            _mount(
                libc,
                "tmpfs",
                "/dev/shm",
                "tmpfs",
                _MS_NOSUID | _MS_NODEV,
                f"size={limits.tmp_mb}m,mode=1777",
            )
        workdir = "/tmp/work"
        os.makedirs(workdir, exist_ok=True)
    # Every other world-writable directory gets a private, empty tmpfs too: nothing written
    # there outlives the worker or reaches a later submission.
    for path in world_writable_dirs():
        if path in ("/tmp", "/dev/shm") or _under(path, ["/tmp"]):
            continue
        if any(_under(k, [path]) for k in (*policy.keep_paths, policy.workdir)):
            continue
        with contextlib.suppress(OSError):
            _mount(
                libc,
                "tmpfs",
                path,
                "tmpfs",
                _MS_NOSUID | _MS_NODEV,
                f"size={limits.tmp_mb}m,mode=1777",
            )
    return workdir


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    """No capabilities left (in the user namespace): the mounts can no longer be changed."""
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def _enter_pid_namespace(libc: ctypes.CDLL) -> None:
    """Become init of a new PID namespace with its own ``/proc``.

    The process that called this stays outside as a placeholder: it waits for the namespace's
    init (the process that returns from here) and exits as it did, so the judge's view of the
    worker (its pid, process group and exit status) is unchanged. When the placeholder is
    killed the init dies (parent-death signal), and with it every process of the namespace.
    """
    _check(libc.unshare(_CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    die_with_parent(libc)
    child = os.fork()
    if child:  # the placeholder: never runs student code
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code if code >= 0 else 1)
    die_with_parent(libc)
    _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    # No user namespaces inside the sandbox: less kernel to attack (best effort).
    with (
        contextlib.suppress(OSError),
        open("/proc/sys/user/max_user_namespaces", "w") as handle,
    ):
        handle.write("0")


def _drop_privileges(uid: int, workdir: str) -> None:
    os.chown(workdir, uid, uid)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _usable_by(uid: int, paths: Iterable[str]) -> bool:
    """Whether ``uid`` (not root) could traverse to every path: checked from the mode bits."""
    for path in paths:
        for part in [Path(path), *Path(path).parents]:
            try:
                mode = part.stat().st_mode
            except OSError:
                return False
            if not mode & stat.S_IXOTH:
                return False
    return True


def _tasks_of_current_user() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{entry}").st_uid == uid
    return count


def _vm_size_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


def _set_limits(limits: Limits, level: str, tasks: int = 0) -> None:
    def limit(which: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        _current_soft, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))

    mb = 1 << 20
    limit(resource.RLIMIT_AS, (_vm_size_mb() + limits.memory_mb) * mb)
    limit(resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 5)
    limit(resource.RLIMIT_FSIZE, limits.file_mb * mb)
    limit(resource.RLIMIT_NOFILE, 256)
    limit(resource.RLIMIT_CORE, 0)
    # The process limit counts every process of the real uid: where the worker keeps the
    # grader's uid (userns, rlimits), the grader's own processes count too.
    processes = (
        limits.max_processes
        if level in ("namespace", "privdrop")
        else (tasks or _tasks_of_current_user()) + limits.max_processes
    )
    limit(resource.RLIMIT_NPROC, processes)
    # Past the file-size limit a write fails (EFBIG) instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def enter(policy: Policy, limits: Limits) -> str:
    """Apply ``policy`` and ``limits`` to this process (the worker); return the level reached.

    Raises:
        OSError: when the requested level cannot be set up; the judge then tries a weaker one.
    """
    level = policy.level
    workdir = policy.workdir
    if policy.cgroup:
        join_group(policy.cgroup, limits)
    tasks = _tasks_of_current_user() if level in ("userns", "rlimits") else 0
    if level == "namespace":
        workdir = _enter_namespace(policy, limits)
    if level == "userns":
        workdir = _enter_namespace(policy, limits, user=True)
        libc = _libc()
        _enter_pid_namespace(libc)
        _drop_capabilities(libc)
    if level in ("namespace", "privdrop"):
        if policy.uid is None:
            raise OSError("no sandbox uid")
        if level == "privdrop" and not _usable_by(policy.uid, policy.keep_paths):
            raise OSError(
                "the interpreter or the packages are not readable by an unprivileged uid"
            )
        _drop_privileges(policy.uid, workdir)
    os.chdir(workdir)
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "MPLCONFIGDIR": workdir})
    with contextlib.suppress(KeyError):
        os.environ["USER"] = pwd.getpwuid(os.getuid()).pw_name
    _set_limits(limits, level, tasks)
    libc = _libc()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    die_with_parent(libc)
    if os.getppid() == 1:  # the judge died before the death signal was armed
        os._exit(1)
    return level


# --------------------------------------------------------------------------- control groups

#: The controllers a worker's group uses: CPU quota, CPU accounting, process count, memory.
_CONTROLLERS = ("cpu", "cpuacct", "pids", "memory")
_CPU_PERIOD_US = 100_000


def _cgroup_mounts() -> dict[str, str]:
    """Mount point per cgroup v1 controller, and ``""`` for the v2 hierarchy."""
    mounts: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as info:
        for line in info:
            before, _, after = line.partition(" - ")
            fields, extra = before.split(), after.split()
            if len(fields) < 5 or len(extra) < 3:
                continue
            if extra[0] == "cgroup2":
                mounts.setdefault("", fields[4])
            elif extra[0] == "cgroup":
                for option in extra[2].split(","):
                    if option in _CONTROLLERS:
                        mounts.setdefault(option, fields[4])
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller, and ``""`` for its v2 cgroup."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as lines:
        for line in lines:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    return own


def group_dirs(name: str) -> tuple[str, list[str]] | None:
    """Where the control group ``name`` lives, below this process's own cgroup: ``("v2",
    [dir])`` where the v2 hierarchy offers the cpu controller, else ``("v1", [one dir per
    controller mount])`` where a v1 cpu controller is mounted, else None."""
    mounts, own = _cgroup_mounts(), _own_cgroups()
    if "" in mounts and "" in own:
        parent = os.path.join(mounts[""], own[""].lstrip("/"))
        try:
            with open(os.path.join(parent, "cgroup.controllers")) as handle:
                available = handle.read().split()
        except OSError:
            available = []
        if "cpu" in available:
            return "v2", [os.path.join(parent, name)]
    if "cpu" in mounts:
        dirs = []
        for controller in _CONTROLLERS:
            if controller in mounts:
                base = os.path.join(
                    mounts[controller], own.get(controller, "/").lstrip("/")
                )
                path = os.path.join(base, name)
                if path not in dirs:
                    dirs.append(path)
        return "v1", dirs
    return None


def _write(directory: str, name: str, value: str) -> bool:
    try:
        with open(os.path.join(directory, name), "w") as handle:
            handle.write(value)
    except OSError:
        return False
    return True


def _read(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name)) as handle:
            return handle.read()
    except OSError:
        return ""


def _vm_rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def join_group(name: str, limits: Limits) -> bool:
    """Put this process (the worker, before it runs student code) in control group ``name``
    with :class:`Limits`' CPU quota (``cpus``), process count and memory: every process it
    starts is born there, and no unprivileged process can leave it (the group's files belong
    to root), whatever session or process group it makes for itself.

    Needs the right to create a cgroup (root, or a delegated v2 subtree). Returns whether
    the CPU quota is in force; without it the worker relies on the other levels' limits
    (per-process CPU seconds, the PID namespace that dies with the worker).
    """
    where = group_dirs(name)
    if where is None:
        return False
    version, dirs = where
    memory = str((_vm_rss_mb() + limits.memory_mb + limits.tmp_mb) << 20)
    quota = str(max(1000, int(limits.cpus * _CPU_PERIOD_US)))
    capped = False
    for directory in dirs:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            continue
        _kill_members(directory)  # a worker of this judge that was not released
        if version == "v2":
            parent = os.path.dirname(directory)
            _write(parent, "cgroup.subtree_control", "+cpu +pids +memory")
            capped = _write(directory, "cpu.max", f"{quota} {_CPU_PERIOD_US}")
            _write(directory, "pids.max", str(limits.max_processes))
            _write(directory, "memory.max", memory)
        else:
            if _write(directory, "cpu.cfs_period_us", str(_CPU_PERIOD_US)):
                capped = _write(directory, "cpu.cfs_quota_us", quota) or capped
            _write(directory, "pids.max", str(limits.max_processes))
            _write(directory, "memory.limit_in_bytes", memory)
        if not _write(directory, "cgroup.procs", str(os.getpid())):
            return False
    return capped


def _members(directory: str) -> list[int]:
    return [int(p) for p in _read(directory, "cgroup.procs").split() if p.isdigit()]


def _kill_members(directory: str) -> None:
    """SIGKILL every process of the group until none is left (a few seconds at most)."""
    deadline = time.monotonic() + 5
    while (members := _members(directory)) and time.monotonic() < deadline:
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def group_usage(name: str) -> dict[str, float] | None:
    """CPU seconds used by every process that was ever in group ``name`` (``cpu_s``), its
    quota in cores (``cpus``, -1: none), the periods the quota stopped it (``throttled``) and
    the most tasks it held at once (``peak_processes``, where the kernel counts it; 0
    otherwise), or None where there is no such group."""
    where = group_dirs(name)
    if where is None:
        return None
    version, dirs = where
    if not any(os.path.isdir(d) for d in dirs):
        return None
    used = throttled = peak = 0.0
    quota = -1.0
    for directory in dirs:
        most = _read(directory, "pids.peak").strip()
        if most.isdigit():
            peak = max(peak, float(most))
        stat_lines = dict(
            line.split(maxsplit=1)
            for line in _read(directory, "cpu.stat").splitlines()
            if " " in line
        )
        throttled = max(throttled, float(stat_lines.get("nr_throttled", 0)))
        if version == "v2":
            used = float(stat_lines.get("usage_usec", 0)) / 1e6
            limit = _read(directory, "cpu.max").split()
            if limit and limit[0] != "max":
                quota = float(limit[0]) / float(limit[1])
        else:
            usage = _read(directory, "cpuacct.usage").strip()
            if usage.isdigit():
                used = float(usage) / 1e9
            raw = _read(directory, "cpu.cfs_quota_us").strip()
            if raw.lstrip("-").isdigit() and int(raw) > 0:
                period = float(_read(directory, "cpu.cfs_period_us") or _CPU_PERIOD_US)
                quota = int(raw) / period
    return {
        "cpu_s": round(used, 3),
        "throttled": throttled,
        "cpus": quota,
        "peak_processes": peak,
    }


def release_group(name: str | None) -> dict[str, float] | None:
    """Kill every process left in group ``name`` (forks in sessions of their own included),
    report its usage (:func:`group_usage`) and remove it."""
    if not name:
        return None
    where = group_dirs(name)
    if where is None:
        return None
    for directory in where[1]:
        if os.path.isdir(directory):
            _kill_members(directory)
    usage = group_usage(name)
    for directory in where[1]:
        for _ in range(50):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
    return usage


# --------------------------------------------------------------------------- the audit hook

_SPAWN_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.system",
        "subprocess.Popen",
        "pty.spawn",
    }
)
_NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.sendto",
    }
)
_CTYPES_EVENTS = frozenset(
    {
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
    }
)
_READ_EVENTS = frozenset(
    {
        "os.listdir",
        "os.scandir",
        "shutil.copyfile",
        "shutil.copytree",
        "shutil.make_archive",
    }
)
_WRITE_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.symlink": (1,),
    "os.link": (1,),
    "shutil.rmtree": (0,),
    "shutil.move": (0, 1),
}
#: Introspection that reaches any live object (the hook's own state among them).
_INTROSPECTION_EVENTS = frozenset(
    {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"}
)
#: Rewriting these attributes of a grader or library function changes what it runs.
_CODE_ATTRIBUTES = frozenset({"__code__", "__defaults__", "__kwdefaults__"})
_PROTECTED_MODULES = (
    "autograder",
    "course_lib",
    "torch",
    "numpy",
    "hypothesis",
    "os",
    "posixpath",
    "json",
    "threading",
    "builtins",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit_hook(
    policy: Policy,
    limits: Limits,
    report: Callable[[dict[str, Any]], None],
    code_written: Callable[[], None] | None = None,
) -> None:
    """Refuse (and report to the judge) what a submission must not do. Cannot be removed.

    ``report`` receives ``{"op": "forbidden" | "refused", "what": ...}``: *forbidden* is an
    attempt on the secrets or the judge (the affected task scores zero), *refused* a resource
    the grader does not offer (network, ctypes, many processes), recorded as a note.
    ``code_written`` is called whenever any function's code, defaults or keyword defaults are
    assigned (allowed or not): the worker's tamper check then compares them all, and only
    then (reading them costs an audit event each).
    """
    real = os.path.realpath
    deny = tuple(real(p) for p in policy.deny_paths)
    keep = tuple(real(p) for p in policy.keep_paths)
    root = real(policy.repo_root) if policy.repo_root else None
    workdir = real(os.getcwd())
    writable = (
        workdir,
        "/dev/null",
        "/dev/shm",
        *(
            ("/tmp",)
            if policy.level in ("namespace", "userns") and policy.private_tmp
            else ()
        ),
    )
    deny_modules = tuple(policy.deny_modules)
    max_spawns = limits.max_spawns
    allow_exec = policy.level in ("namespace", "userns")
    state = threading.local()
    counters = {"reports": 0}
    # Shared by every process the submission forks, so a fork bomb gets max_spawns in all.
    spawned = mmap.mmap(-1, 8)

    def tell(op: SandboxOp, what: str) -> None:
        if counters["reports"] < 40:
            counters["reports"] += 1
            with contextlib.suppress(OSError):
                report({"op": op, "what": what})

    def secret(path: str) -> bool:
        if _under(path, deny):
            return True
        return (
            root is not None
            and path != root
            and _under(path, [root])
            and not _under(path, keep)
        )

    def check_path(raw: Any, writing: bool, action: str) -> None:
        if isinstance(raw, int) or raw is None:
            return
        path = real(os.fsdecode(raw))
        if secret(path):
            tell("forbidden", f"{action} {path}")
            raise PermissionError(13, "not allowed while grading", os.fsdecode(raw))
        if writing and not _under(path, writable):
            tell("refused", f"{action} {path} (outside the working directory)")
            raise PermissionError(
                13,
                "writing outside the working directory is not allowed while grading",
                os.fsdecode(raw),
            )

    def check_module(name: str) -> None:
        if any(name == m or name.startswith(m + ".") for m in deny_modules):
            tell("forbidden", f"import {name}")
            raise ModuleNotFoundError(
                f"No module named {name!r} (not available to submissions)", name=name
            )

    # One handler per audited event (the event sets above are disjoint): a dict lookup, then
    # at most one check, on every audit event of the submission's process.
    def on_open(event: str, args: tuple[Any, ...]) -> None:
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        check_path(
            args[0],
            bool(flags & _WRITE_FLAGS) or any(c in mode for c in "wax+"),
            "open",
        )

    def on_import(event: str, args: tuple[Any, ...]) -> None:
        check_module(str(args[0]))

    def on_read(event: str, args: tuple[Any, ...]) -> None:
        check_path(args[0], False, event)

    def on_write(event: str, args: tuple[Any, ...]) -> None:
        for index in _WRITE_EVENTS[event]:
            if index < len(args):
                check_path(args[index], True, event)

    def on_spawn(event: str, args: tuple[Any, ...]) -> None:
        if not allow_exec and event not in ("os.fork", "os.forkpty"):
            # Without a mount namespace the files are only guarded by this hook, which
            # another program (cat, a second python) would not run.
            tell("refused", f"{event} (running other programs)")
            raise PermissionError("running other programs is not allowed while grading")
        count = int.from_bytes(spawned[:8], "little") + 1
        spawned[:8] = count.to_bytes(8, "little")
        if count > max_spawns:
            tell("refused", f"more than {max_spawns} child processes")
            # The error the process limit gives, so the outcome is the same whichever limit
            # a fork bomb meets first.
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    def on_socket(event: str, args: tuple[Any, ...]) -> None:
        family = args[1] if len(args) > 1 else None
        if family not in (socket.AF_UNIX, -1):
            tell("refused", "network socket")
            raise PermissionError("network access is disabled while grading")

    def on_network(event: str, args: tuple[Any, ...]) -> None:
        tell("refused", event)
        raise PermissionError("network access is disabled while grading")

    def on_ctypes(event: str, args: tuple[Any, ...]) -> None:
        tell("refused", event)
        raise PermissionError("ctypes is disabled while grading")

    def on_introspection(event: str, args: tuple[Any, ...]) -> None:
        # These reach every live object, this hook's state included.
        tell("refused", event)
        raise PermissionError(f"{event} is disabled while grading")

    def on_setattr(event: str, args: tuple[Any, ...]) -> None:
        if len(args) <= 1:
            return
        if code_written is not None and args[1] in _CODE_ATTRIBUTES:
            code_written()
        owner = getattr(args[0], "__module__", None) or ""
        if (
            args[1] in _CODE_ATTRIBUTES
            and callable(args[0])
            and owner.split(".")[0] in _PROTECTED_MODULES
        ):
            what = getattr(args[0], "__qualname__", "a function")
            tell("forbidden", f"rewrite {owner}.{what}.{args[1]}")
            raise PermissionError(
                "rewriting the grader's or a library's functions is not allowed"
            )

    handlers: dict[str, Callable[[str, tuple[Any, ...]], None]] = {
        "open": on_open,
        "import": on_import,
        **dict.fromkeys(_READ_EVENTS, on_read),
        **dict.fromkeys(_WRITE_EVENTS, on_write),
        **dict.fromkeys(_SPAWN_EVENTS, on_spawn),
        "socket.__new__": on_socket,
        **dict.fromkeys(_NETWORK_EVENTS, on_network),
        **dict.fromkeys(_CTYPES_EVENTS, on_ctypes),
        **dict.fromkeys(_INTROSPECTION_EVENTS, on_introspection),
        "object.__setattr__": on_setattr,
    }

    def hook(event: str, args: tuple[Any, ...]) -> None:
        handler = handlers.get(event)
        if handler is None or getattr(state, "busy", False):
            return
        state.busy = True
        try:
            handler(event, args)
        finally:
            state.busy = False

    sys.addaudithook(hook)
