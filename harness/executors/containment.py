"""A cell is its worker's whole process tree: its memory is the tree's, and it all dies with the cell.

(Kept whole, at about 600 lines: the three strategies share one interface and one end, the stop,
kill and reap of a tree; split apart, that end would be written three times.)

Runtimes start processes of their own (compiler workers, data loaders, servers they talk to); those
may start more, leave their process group with ``setsid`` or outlive their parent. Three ways to
hold them, picked at run time by probing what the kernel lets this process do:

``cgroup-v2``
    A child of this process's cgroup with the memory controller: ``memory.max`` is the cap (the
    kernel enforces it), ``memory.peak`` the high-water mark, ``memory.events``' ``oom_kill`` the
    kernel's kills at the cap, ``cgroup.kill`` the end. The controller is handed down to our
    cgroup's children where it is not yet, which v2 allows only at the root or in a cgroup that
    holds no process; elsewhere (a login session's scope) this strategy is not available.
``cgroup-v1``
    A child of this process's memory cgroup: ``memory.limit_in_bytes``,
    ``memory.max_usage_in_bytes`` and ``memory.oom_control``'s ``oom_kill``; ended by signalling
    every pid in ``cgroup.procs`` until it is empty.
``process-tree``
    No cgroup: the worker is a child subreaper, so orphans stay in its tree while it lives, and this
    parent is one while a cell runs, so they come here once the worker is gone; the parent sums the
    resident sets of all of them and kills them all, frozen first.

The worker joins the cgroup itself as its first act (:func:`join_cell_cgroup`) and says so; the
parent checks the kernel agrees and otherwise follows the tree. The tree is walked at the end in every
case, so a process that got outside the cgroup is not missed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.measure.memory import rss_mb

#: the cell's cgroup folder, for the worker to join (set by the parent, read by the worker)
CGROUP_ENV = "BENCH_CELL_CGROUP"
#: auto (default: the first of cgroup-v2, cgroup-v1 that works here), or one strategy by name
STRATEGY_ENV = "BENCH_CELL_CONTAINMENT"
CGROUP_V2, CGROUP_V1, PROCESS_TREE = "cgroup-v2", "cgroup-v1", "process-tree"
STRATEGIES = (CGROUP_V2, CGROUP_V1, PROCESS_TREE)

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_MIB = 1024 * 1024
#: rounds of freeze-and-kill before giving up on a tree that keeps forking (with a growing pause)
_KILL_ROUNDS = 60
#: how long a killed cgroup may take to become removable
_REMOVE_WAIT_S = 2.0
#: bench-<owner pid>-<owner start time>-<sequence>: the owner tells a live run's cgroup from a stale one
_NAME = re.compile(r"^bench-(\d+)-(\d+)-\d+$")


# --- the worker's side ---------------------------------------------------------------------------


def join_cell_cgroup() -> bool:
    """Move this process into the cell's cgroup named by the parent; False where there is none or
    the kernel refused. Called first in the worker, before it loads anything that allocates."""
    path = os.environ.pop(CGROUP_ENV, "")  # the cell's own processes inherit the cgroup, not the name
    if not path:
        return False
    try:
        Path(path, "cgroup.procs").write_text(f"{os.getpid()}\n")
    except OSError:
        return False
    return True


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, arg: int | ctypes.c_int | ctypes._CArgObject) -> bool:
    libc = _libc()
    try:
        return libc is not None and libc.prctl(option, arg, 0, 0, 0) == 0
    except AttributeError:  # no prctl: not Linux
        return False


def set_child_subreaper(on: bool) -> bool:
    """Make this process adopt its descendants' orphans (instead of init); False where not allowed."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, int(on))


def is_child_subreaper() -> bool:
    value = ctypes.c_int(0)
    return _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value)) and bool(value.value)


# --- /proc ---------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process in /proc."""
    table = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                fields = _stat(int(entry.name))
                if fields:
                    table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(roots: Iterable[int], table: dict[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _children_of(pid: int) -> list[int] | None:
    """The children of ``pid`` from its threads' ``children`` files: a walk of the tree alone, not of
    all /proc. None where the kernel has no such files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for tid in tasks:
        try:
            found += [int(child) for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:
            if not Path(f"/proc/{pid}/task/{tid}").exists():
                continue  # the thread ended
            return None
        except OSError:
            continue
    return found


def walk_tree(roots: Iterable[int]) -> set[int] | None:
    """``roots`` and all their descendants, by the children files (None where there are none)."""
    found = set(roots)
    todo = list(found)
    while todo:
        children = _children_of(todo.pop())
        if children is None:
            return None
        for child in children:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _gone(state: str) -> bool:
    return state in ("Z", "X")  # zombie or dead: nothing left to kill, only to reap


def kill_until_gone(live: Callable[[], Iterable[int]]) -> bool:
    """Stop every process ``live()`` names, then kill them, until it names none (bounded). Stopping
    first means none of them forks or restarts a sibling between the listing and the kill."""
    me = os.getpid()
    for round_ in range(_KILL_ROUNDS):
        pids = [pid for pid in live() if pid > 1 and pid != me]
        if not pids:
            return True
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        time.sleep(min(0.001 * 2**round_, 0.05))  # a process with much memory takes a while to exit
    return False


# --- cgroups -------------------------------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text()


def _keyed_count(path: Path, key: str) -> int:
    """``key N`` from a flat-keyed cgroup file (memory.events, memory.oom_control); 0 if absent."""
    try:
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _bytes_mb(path: Path) -> float | None:
    try:
        return int(_read(path)) / _MIB
    except (OSError, ValueError):
        return None


class Cgroup:
    """One cell's cgroup folder; the subclasses know their version's file names."""

    kind = ""
    limit_files: tuple[str, ...] = ()
    usage_file = ""
    peak_file = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, parent: Path, name: str, memory_mb: int | None) -> Cgroup:
        path = parent / name
        path.mkdir()
        cgroup = cls(path)
        try:
            if memory_mb is not None:
                cgroup.limit(memory_mb)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def limit(self, memory_mb: int) -> None:
        """The cap, on memory and on memory plus swap: a cell over its cap is killed, not swapped out."""
        limit = str(memory_mb * _MIB)
        (self.path / self.limit_files[0]).write_text(limit)
        for extra in self.limit_files[1:]:  # absent without swap accounting: the cap holds anyway
            with contextlib.suppress(OSError):
                (self.path / extra).write_text(self._swap_limit(limit))

    def _swap_limit(self, limit: str) -> str:
        return limit

    def procs(self) -> list[int]:
        try:
            return [int(pid) for pid in _read(self.path / "cgroup.procs").split()]
        except (OSError, ValueError):
            return []

    def usage_mb(self) -> float | None:
        return _bytes_mb(self.path / self.usage_file)

    def peak_mb(self) -> float | None:
        return _bytes_mb(self.path / self.peak_file)

    def oom_kills(self) -> int:
        raise NotImplementedError

    def was_joined(self) -> bool:
        """Some process got in: it holds a member or was charged memory (we made it empty, and only
        the worker joins; its descendants are born in it)."""
        return bool(self.procs()) or (self.peak_mb() or self.usage_mb() or 0.0) > 0

    def kill(self) -> None:
        kill_until_gone(self.procs)

    def remove(self) -> None:
        """rmdir once empty: the kernel lets go of a killed cgroup a moment after its last exit."""
        deadline = time.monotonic() + _REMOVE_WAIT_S
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # left for the stale-cgroup sweep of a later run
                self.kill()
                time.sleep(0.01)


class CgroupV2(Cgroup):
    kind = CGROUP_V2
    limit_files = ("memory.max", "memory.swap.max")
    usage_file = "memory.current"
    peak_file = "memory.peak"

    def limit(self, memory_mb: int) -> None:
        super().limit(memory_mb)
        with contextlib.suppress(OSError):  # an OOM kill takes the whole cell at once, not one helper
            (self.path / "memory.oom.group").write_text("1")

    def _swap_limit(self, limit: str) -> str:
        return "0"  # v2 counts swap apart from memory.max

    def oom_kills(self) -> int:
        return _keyed_count(self.path / "memory.events", "oom_kill")

    def kill(self) -> None:
        with contextlib.suppress(OSError):  # cgroup.kill: one atomic SIGKILL to all (kernel 5.14+)
            (self.path / "cgroup.kill").write_text("1")
        super().kill()


class CgroupV1(Cgroup):
    kind = CGROUP_V1
    limit_files = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    usage_file = "memory.usage_in_bytes"
    peak_file = "memory.max_usage_in_bytes"

    def oom_kills(self) -> int:
        return _keyed_count(self.path / "memory.oom_control", "oom_kill")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root within its hierarchy, fs type, super options) of every mount."""
    found = []
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3:
            found.append((_unescape(fields[4]), _unescape(fields[3]), tail[0], set(tail[2].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under "" its v2 path."""
    paths = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _folder(point: str, root: str, own: str) -> Path | None:
    """Where this process's cgroup ``own`` lies under a hierarchy mounted at ``point`` from ``root``."""
    if root not in ("/", own) and not own.startswith(root.rstrip("/") + "/"):
        return None  # our cgroup is outside what is mounted here
    relative = own[len(root) :] if root != "/" else own
    return Path(point) / relative.lstrip("/")


def _v2_parent() -> Path | None:
    """Our v2 cgroup, if the memory controller can be given to a child of it."""
    own = _own_cgroups().get("")
    point = next(((p, r) for p, r, fstype, _ in _mounts() if fstype == "cgroup2"), None)
    if own is None or point is None:
        return None
    folder = _folder(*point, own)
    if folder is None or "memory" not in _read(folder / "cgroup.controllers").split():
        return None
    if "memory" not in _read(folder / "cgroup.subtree_control").split():
        # hand the controller down to our children; refused (EBUSY) where our cgroup holds
        # processes and is not the root, as v2 keeps processes in leaves only
        (folder / "cgroup.subtree_control").write_text("+memory")
    return folder


def _v1_parent() -> Path | None:
    """Our v1 memory cgroup."""
    own = _own_cgroups().get("memory")
    point = next(((p, r) for p, r, fstype, opts in _mounts() if fstype == "cgroup" and "memory" in opts), None)
    if own is None or point is None:
        return None
    folder = _folder(*point, own)
    return folder if folder is not None and (folder / "memory.limit_in_bytes").exists() else None


_KINDS: dict[str, tuple[type[Cgroup], Callable[[], Path | None]]] = {
    CGROUP_V2: (CgroupV2, _v2_parent),
    CGROUP_V1: (CgroupV1, _v1_parent),
}


def _choice() -> str:
    choice = os.environ.get(STRATEGY_ENV, "auto") or "auto"
    if choice != "auto" and choice not in STRATEGIES:
        raise ValueError(f"{STRATEGY_ENV}={choice!r}: expected auto or one of {', '.join(STRATEGIES)}")
    return choice


@functools.cache
def _parents(choice: str) -> tuple[tuple[type[Cgroup], Path], ...]:
    """The cgroup folders a cell's cgroup may be made in, best first (probed once per process);
    stale cgroups of killed runs found there are removed on the way."""
    found = []
    for name, (kind, find) in _KINDS.items():
        if choice not in ("auto", name):
            continue
        try:
            folder = find()
        except (OSError, ValueError):
            continue
        if folder is not None and os.access(folder, os.W_OK):
            _remove_stale(kind, folder)
            found.append((kind, folder))
    return tuple(found)


def _remove_stale(kind: type[Cgroup], folder: Path) -> None:
    """Cgroups a killed bench left behind (its pid gone or reused): kill what is in them, remove them."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _NAME.match(entry.name)
            if match and entry.is_dir() and _start_time(int(match.group(1))) != int(match.group(2)):
                stale = kind(Path(entry.path))
                stale.kill()
                stale.remove()


_sequence = itertools.count(1)


def _new_cgroup(memory_mb: int | None) -> Cgroup | None:
    me = os.getpid()
    name = f"bench-{me}-{_start_time(me)}-{next(_sequence)}"
    for kind, folder in _parents(_choice()):
        try:
            return kind.create(folder, name, memory_mb)
        except OSError:
            continue
    return None


def available() -> str:
    """The strategy a cell started now would use (before its worker confirms joining)."""
    parents = _parents(_choice())
    return parents[0][0].kind if parents else PROCESS_TREE


def cgroup_folder() -> Path | None:
    """The folder the cells' cgroups are made in (None: no cgroup here)."""
    parents = _parents(_choice())
    return parents[0][1] if parents else None


# --- one cell ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    accounting: str
    peak_mb: float | None
    oom_kills: int


class CellProcesses:
    """Every process of one cell: the worker and all it started. A context manager around the cell:
    on the way in this parent becomes a child subreaper; on the way out all of them are killed,
    those it adopted reaped, and the cgroup removed."""

    def __init__(self, memory_mb: int | None) -> None:
        self.memory_mb = memory_mb
        self.cgroup = _new_cgroup(memory_mb)
        self.joined = False
        self._kernel_peak = False
        self._worker: subprocess.Popen[bytes] | None = None
        self._before: set[int] = set()
        self._was_subreaper = False
        self._polled_peak_mb: float | None = None
        self._usage: Usage | None = None

    def __enter__(self) -> CellProcesses:
        self._was_subreaper = is_child_subreaper()
        set_child_subreaper(True)
        self._before = self._children(process_table())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.finish()
        finally:
            if not self._was_subreaper:
                set_child_subreaper(False)

    def worker_env(self) -> dict[str, str]:
        return {CGROUP_ENV: str(self.cgroup.path)} if self.cgroup else {}

    def started(self, worker: subprocess.Popen[bytes]) -> None:
        self._worker = worker

    def confirm_joined(self) -> bool:
        """The worker says it joined its cgroup: believe the kernel, not the worker."""
        self.joined = self.cgroup is not None and self.cgroup.was_joined()
        self._kernel_peak = self.joined and self.cgroup is not None and self.cgroup.peak_mb() is not None
        return self.joined

    @property
    def accounting(self) -> str:
        return self.cgroup.kind if self.joined and self.cgroup else PROCESS_TREE

    @property
    def kernel_caps_memory(self) -> bool:
        """The kernel enforces the cap: the parent need not kill for memory."""
        return self.joined and self.memory_mb is not None

    def poll_interval_s(self, cap_poll_s: float, peak_poll_s: float) -> float | None:
        """How often to sample memory: often under a cap the parent enforces, seldom where only
        the peak needs it, never where the kernel keeps the peak."""
        if self._kernel_peak:
            return None
        if self.memory_mb is not None and not self.kernel_caps_memory:
            return cap_poll_s
        return peak_poll_s

    def sample_mb(self) -> float:
        """The cell's memory now: the cgroup's charge, or the sum of the tree's resident sets."""
        if self.joined and self.cgroup:
            mb = self.cgroup.usage_mb() or 0.0
        else:
            mb = sum(rss_mb(pid) or 0.0 for pid in self._tree_now())  # a zombie has no resident set
        self._polled_peak_mb = max(self._polled_peak_mb or 0.0, mb)
        return mb

    def kill(self) -> None:
        """Kill every process of the cell, frozen first so none forks behind the kill."""
        if self.cgroup:
            self.cgroup.kill()
        kill_until_gone(self._live)
        worker = self._live_worker()
        if worker is not None:  # its group too: a process can leave the tree (ptrace, a foreign subreaper)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker, signal.SIGKILL)
        self._reap()

    def finish(self) -> Usage:
        """Kill what is left of the cell (whether it ended ok or not), then say what it used."""
        if self._usage is None:
            self.kill()
            if not self.joined:  # a worker killed before its word was read may have joined all the same
                self.confirm_joined()
            peak = self.cgroup.peak_mb() if self.joined and self.cgroup else None
            kills = self.cgroup.oom_kills() if self.joined and self.cgroup else 0
            self._usage = Usage(self.accounting, peak if peak is not None else self._polled_peak_mb, kills)
            if self.cgroup:
                self.cgroup.remove()
        return self._usage

    def _live_worker(self) -> int | None:
        """The worker's pid while it is not yet reaped (after that the number may be someone else's)."""
        worker = self._worker
        return worker.pid if worker is not None and worker.returncode is None else None

    def _children(self, table: dict[int, tuple[int, str]]) -> set[int]:
        me = os.getpid()
        return {pid for pid, (ppid, _) in table.items() if ppid == me}

    def _adopted(self, table: dict[int, tuple[int, str]]) -> set[int]:
        """Children of this parent that it did not start: orphans of the cell, reparented here."""
        worker = self._worker.pid if self._worker is not None else None
        return {pid for pid in self._children(table) - self._before if pid != worker}

    def tree_pids(self) -> set[int]:
        """The cell's processes now: the worker and all it started (for the noise guard's watch)."""
        return self._tree_now()

    def _tree_now(self) -> set[int]:
        """The tree, walked from its roots while the worker lives (cheap enough to poll often); from
        a scan of all /proc otherwise."""
        worker = self._live_worker()
        mine = _children_of(os.getpid())
        if worker is not None and mine is not None:
            tree = walk_tree({worker} | (set(mine) - self._before))
            if tree is not None:
                return tree
        return self._tree(process_table())

    def _tree(self, table: dict[int, tuple[int, str]]) -> set[int]:
        worker = self._live_worker()
        roots = self._adopted(table) | ({worker} if worker in table else set())
        return roots | descendants(roots, table)

    def _live(self) -> set[int]:
        table = process_table()
        pids = {pid for pid in self._tree(table) if not _gone(table[pid][1])}
        if self.cgroup:  # cgroup.procs lists no zombies; a pid not yet in the table is alive
            pids.update(pid for pid in self.cgroup.procs() if not _gone(table.get(pid, (0, "?"))[1]))
        return pids

    def _reap(self) -> None:
        """Collect the exit status of the orphans this parent adopted, so no zombie is left."""
        deadline = time.monotonic() + 1.0
        while True:
            table = process_table()
            waiting = [pid for pid in self._adopted(table) if _gone(table[pid][1])]
            for pid in waiting:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if not waiting or time.monotonic() > deadline:
                return
            time.sleep(0.005)
