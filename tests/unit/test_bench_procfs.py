"""bench/procfs.py reads /proc right: on samples and on the real files of live processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import procfs

BUSY = "import time\nend = time.process_time() + 30\nwhile time.process_time() < end: pass\n"


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    """A child process burning CPU (for at most 30 s of CPU), stopped after the test."""
    child = subprocess.Popen([sys.executable, "-c", BUSY, "busy-marker"])
    try:
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


def test_stat_fields_are_counted_after_the_last_parenthesis() -> None:
    # A command name with a space and a parenthesis, as /proc shows it; then fields 3..
    stat = (
        "4242 (envoy: main) 1) S 4200 4242 4200 0 -1 4194560 1234 0 0 0 "
        "1500 250 7 3 20 0 3 0 99 123456789 4321 18446744073709551615 0\n"
    )
    parsed = procfs.parse_stat(stat)
    assert parsed == procfs.ProcessStat(
        pid=4242, comm="envoy: main) 1", state="S", ppid=4200, utime=1500, stime=250
    )
    assert parsed.cpu_ticks == 1500 + 250  # not the reaped children's 7 + 3
    assert parsed.cpu_seconds == pytest.approx(1750 / procfs.CLK_TCK)


def test_a_truncated_stat_line_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a /proc/<pid>/stat line"):
        procfs.parse_stat("4242 envoy S 1")
    with pytest.raises(ValueError, match="too few fields"):
        procfs.parse_stat("4242 (envoy) S 1 4242")


def test_stat_of_this_process_matches_the_kernels_other_accounts() -> None:
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    stat = procfs.read_stat(os.getpid())
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert (stat.pid, stat.ppid, stat.state) == (os.getpid(), os.getppid(), "R")
    assert stat.comm == procfs.comm(os.getpid())
    rusage = [u.ru_utime + u.ru_stime for u in (before, after)]
    # /proc counts whole ticks; getrusage is finer: agree within a tick or two.
    assert rusage[0] - 2 / procfs.CLK_TCK <= stat.cpu_seconds <= rusage[1] + 2 / procfs.CLK_TCK
    assert stat.cpu_seconds >= 0.2 - 2 / procfs.CLK_TCK


def test_a_busy_childs_cpu_grows_and_it_is_found_as_our_child(
    busy_child: subprocess.Popen[bytes],
) -> None:
    first, started = procfs.read_stat(busy_child.pid), time.monotonic()
    second = first
    while second.cpu_ticks <= first.cpu_ticks and time.monotonic() - started < 10:
        time.sleep(0.2)  # a shared machine may give the child no CPU for a moment
        second = procfs.read_stat(busy_child.pid)
    waited = time.monotonic() - started
    assert second.ppid == os.getpid()
    assert second.cpu_ticks > first.cpu_ticks
    assert second.cpu_seconds - first.cpu_seconds <= waited + 2 / procfs.CLK_TCK  # one thread
    assert busy_child.pid in procfs.children(os.getpid())
    assert busy_child.pid in procfs.pids()
    argv = procfs.cmdline(busy_child.pid)
    assert argv[0] == sys.executable and argv[-1] == "busy-marker"


def test_memory_of_a_child_and_of_this_process(busy_child: subprocess.Popen[bytes]) -> None:
    for pid in (os.getpid(), busy_child.pid):
        status = procfs.status_kib(pid)
        rollup = procfs.smaps_rollup_kib(pid)
        assert status["VmRSS"] > 1024  # a Python interpreter holds more than 1 MiB
        assert status["VmHWM"] >= status["VmRSS"] >= status["RssAnon"] > 0
        assert rollup["Rss"] >= rollup["Pss"] > 0
        assert rollup["Rss"] >= rollup["Anonymous"] > 0
    # What this process holds now: status and smaps_rollup agree within a few MiB.
    assert (
        abs(procfs.status_kib(os.getpid())["VmRSS"] - procfs.smaps_rollup_kib(os.getpid())["Rss"])
        < 8192
    )


def test_kib_fields_keep_only_sizes() -> None:
    status = (
        "Name:\tenvoy\nVmHWM:\t  70000 kB\nVmRSS:\t   66560 kB\nThreads:\t12\nRssAnon:\t 15360 kB\n"
    )
    assert procfs.parse_kib_fields(status) == {"VmHWM": 70000, "VmRSS": 66560, "RssAnon": 15360}
    assert procfs.parse_kib_fields("Name:\tzombie\nState:\tZ (zombie)\n") == {}


def test_system_cpu_reads_the_all_cpu_line() -> None:
    sample = "cpu  100 2 30 4000 5 0 6 77 0 0\ncpu0 50 1 15 2000 2 0 3 40 0 0\nintr 1\n"
    assert procfs.parse_system_cpu(sample) == procfs.SystemCpu(100, 2, 30, 4000, 5, 0, 6, 77)
    with pytest.raises(ValueError, match="all-CPU line"):
        procfs.parse_system_cpu("intr 1 2 3\n")
    first = procfs.read_system_cpu()
    end = time.process_time() + 0.1
    while time.process_time() < end:
        pass
    second = procfs.read_system_cpu()
    assert second.user + second.system > first.user + first.system
    assert second.steal >= first.steal >= 0


def test_load_average_is_three_numbers() -> None:
    words = procfs.load_average().split()
    assert len(words) == 3
    assert all(float(word) >= 0 for word in words)


def test_a_process_that_is_gone_raises_oserror(busy_child: subprocess.Popen[bytes]) -> None:
    busy_child.kill()
    busy_child.wait(timeout=10)  # reaped: its /proc directory is gone
    with pytest.raises(OSError):
        procfs.read_stat(busy_child.pid)
    with pytest.raises(OSError):
        procfs.status_kib(busy_child.pid)
