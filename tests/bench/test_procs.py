"""The benches' process trees (bench/_procs.py) and stopping a server with its workers."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bench import _procs as procs
from bench._server import BenchError, Server, free_port, stop_servers


def stat_line(pid: int, ppid: int, comm: str = "python3", ticks: int = 1, start: int = 7) -> str:
    """A /proc/<pid>/stat line: utime, stime, cutime, cstime = ticks, 2, 3, 4 x ticks."""
    after = ["S", str(ppid)] + ["0"] * 9 + [str(ticks * k) for k in (1, 2, 3, 4)]
    after += ["20", "0", "1", "0", str(start), "0"]
    return f"{pid} ({comm}) {' '.join(after)}\n"


def fake_proc(tmp_path: Path, lines: dict[int, str]) -> Path:
    for pid, line in lines.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(line)
    (tmp_path / "self").mkdir()  # not a pid: skipped
    return tmp_path


def test_a_command_name_with_spaces_and_parentheses_is_skipped_whole() -> None:
    found = procs.parse_stat(stat_line(42, 7, comm="a) (b c)", ticks=5, start=99))
    assert found == procs.Stat(pid=42, state="S", ppid=7, cpu_ticks=50, start=99)


def test_parse_stat_reads_this_process_as_ps_does() -> None:
    me = procs.stat(os.getpid())
    assert me is not None and me.ppid == os.getppid() and me.state in "RS"


def test_a_tree_is_the_root_and_every_descendant_and_sums_their_cpu(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: stat_line(10, 1, ticks=1),  # the server
            11: stat_line(11, 10, ticks=2),  # its worker
            12: stat_line(12, 11, comm="worker (x)", ticks=4),  # the worker's child
            13: stat_line(13, 1, ticks=100),  # someone else's
        },
    )
    assert sorted(s.pid for s in procs.tree(10, proc)) == [10, 11, 12]
    ticks = (1 + 2 + 4) * 10
    assert procs.tree_cpu_seconds(10, proc) == ticks / os.sysconf("SC_CLK_TCK")
    assert procs.tree(99, proc) == []  # gone: nothing


def test_kill_leftovers_spares_a_pid_that_now_names_another_process(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {os.getpid(): stat_line(os.getpid(), 1, start=123)})
    earlier = procs.Stat(pid=os.getpid(), state="S", ppid=1, cpu_ticks=0, start=122)
    assert not procs.alive(earlier, proc)
    assert procs.kill_leftovers([earlier], proc) == 0  # this test still runs


#: A server that starts a worker in a session of its own, as BentoML's does, and waits.
SPAWNS_A_WORKER = """
import os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                          start_new_session=True)
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(300)
"""


def spawner(tmp_path: Path, detach: bool) -> tuple[Server, Path]:
    """A server running SPAWNS_A_WORKER, and the file it writes its worker's pid to."""
    pid_file = tmp_path / "worker.pid"
    cmd = [sys.executable, "-c", SPAWNS_A_WORKER, str(pid_file)]
    server = Server("spawner", cmd, dict(os.environ), free_port(), tmp_path / "log", detach=detach)
    return server, pid_file


def worker_of(server: Server, pid_file: Path) -> procs.Stat:
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.05)
    worker = procs.stat(int(pid_file.read_text()))
    assert worker is not None and worker.ppid == server.pid
    return worker


def wait_gone(process: procs.Stat, timeout: float = 5) -> bool:
    """Whether the process ended within ``timeout`` s (killed; init reaps it)."""
    deadline = time.monotonic() + timeout
    while procs.alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not procs.alive(process)


@pytest.mark.parametrize("detach", [True, False])
def test_stopping_a_server_ends_the_worker_it_left_in_another_session(
    tmp_path: Path, detach: bool
) -> None:
    server, pid_file = spawner(tmp_path, detach)
    worker = None
    try:
        worker = worker_of(server, pid_file)
        server.stop(timeout=5)
        assert server.process.returncode is not None
        assert wait_gone(worker)
    finally:
        stop_servers()
        if worker is not None:  # however the test went, nothing of it is left running
            procs.kill_leftovers([worker])


def test_a_detached_server_that_died_first_still_has_its_workers_ended(tmp_path: Path) -> None:
    """MLflow's or BentoML's server dying mid-run: the bench stops with an error, and the
    workers the server had are not left running."""
    server, pid_file = spawner(tmp_path, detach=True)
    worker = None
    try:
        worker = worker_of(server, pid_file)
        server.check_alive()  # seen alive, with its worker
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait()
        with pytest.raises(BenchError):
            server.check_alive()
        server.stop(timeout=5)
        assert wait_gone(worker)
    finally:
        stop_servers()
        if worker is not None:
            procs.kill_leftovers([worker])
