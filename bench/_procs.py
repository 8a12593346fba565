"""Process trees from /proc: what a server and the workers it spawned used, and ending them.

MLflow's and BentoML's servers start worker processes (BentoML's in sessions of their own,
out of reach of a signal to the server's process group), so a server's CPU is the sum over
its tree, and stopping it ends every process of that tree it leaves behind. A process is
named by its pid *and* its start time, so a pid the system reused for someone else's
process is never touched.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/<pid>/stat`` the benches use (CPU in clock ticks)."""

    pid: int
    state: str  # R, S, D, Z (a zombie: exited, not yet reaped) ...
    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime: itself and its reaped children
    start: int  # start time after boot, in ticks: with the pid, names the process


def parse_stat(text: str) -> Stat:
    """One ``/proc/<pid>/stat`` line. The command name (field 2) is in parentheses and may
    hold spaces and parentheses itself, so fields are counted after its last ``)``."""
    head, _, tail = text.rpartition(")")
    fields = tail.split()  # fields[0] is field 3 (state)
    pid = int(head.partition("(")[0])
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14))  # fields 14-17
    return Stat(pid=pid, state=fields[0], ppid=int(fields[1]), cpu_ticks=cpu, start=int(fields[19]))


def stat(pid: int, proc: Path = PROC) -> Stat | None:
    """The process' stat, or None if it is gone."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def all_stats(proc: Path = PROC) -> list[Stat]:
    stats = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and (found := stat(int(entry.name), proc)) is not None:
            stats.append(found)
    return stats


def tree(root: int, proc: Path = PROC) -> list[Stat]:
    """``root`` and every live descendant (none if ``root`` is gone)."""
    stats = all_stats(proc)
    children: dict[int, list[Stat]] = {}
    for s in stats:
        children.setdefault(s.ppid, []).append(s)
    found = [s for s in stats if s.pid == root]
    for s in found:  # grows as it goes: breadth first
        found += children.get(s.pid, [])
    return found


def tree_cpu_seconds(root: int, proc: Path = PROC) -> float:
    """CPU seconds used so far by ``root``'s tree: every live process of it, and the
    processes it reaped (a process' cutime/cstime), so a worker that exited still counts
    once its parent waited for it."""
    return sum(s.cpu_ticks for s in tree(root, proc)) / os.sysconf("SC_CLK_TCK")


def alive(process: Stat, proc: Path = PROC) -> bool:
    """Whether the process still runs (not a zombie; its pid not reused since: same start
    time)."""
    now = stat(process.pid, proc)
    return now is not None and now.start == process.start and now.state != "Z"


def kill_leftovers(processes: list[Stat], proc: Path = PROC) -> int:
    """SIGKILL those of ``processes`` still alive; how many."""
    killed = 0
    for s in processes:
        if alive(s, proc):
            try:
                os.kill(s.pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed
