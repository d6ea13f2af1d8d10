"""The Linux ``/proc`` files the benches measure with: one small reader per file kind.

Every bench that reports CPU time or memory reads it here, so the figures of different
benches are computed alike (the same fields, the same parsing of the command name, the
same units). Each file kind has a pure parser over the file's text, tested on samples, and
a reader that takes a pid. See proc(5) for the fields.

Units are the kernel's and are converted at the call site, where the bench says what it
prints: CPU time in clock ticks (``CLK_TCK`` per second), memory in KiB (what the kernel
labels ``kB`` is 1024 bytes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Final

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
"""Clock ticks per second: the unit of the CPU times in ``/proc/<pid>/stat`` and ``/proc/stat``."""


@dataclasses.dataclass(frozen=True)
class ProcessStat:
    """The fields of ``/proc/<pid>/stat`` the benches use.

    ``utime`` and ``stime`` cover all threads of the process, alive or exited, but not its
    children (those are ``cutime``/``cstime``, counted only once the children are reaped).
    """

    pid: int
    comm: str  # the command name, up to 15 bytes, without the parentheses
    state: str  # R, S, D, Z, ...
    ppid: int
    utime: int  # clock ticks in user mode
    stime: int  # clock ticks in kernel mode

    @property
    def cpu_ticks(self) -> int:
        """``utime + stime``: all the CPU time of the process, in clock ticks."""
        return self.utime + self.stime

    @property
    def cpu_seconds(self) -> float:
        """``utime + stime`` in seconds."""
        return self.cpu_ticks / CLK_TCK


def parse_stat(text: str) -> ProcessStat:
    """One ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may hold spaces and ``)`` itself, so
    the fields after it are counted from the *last* ``)``.
    """
    pid, _, rest = text.partition(" (")
    close = rest.rfind(")")
    if not rest or close < 0:
        raise ValueError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    after_comm = rest[close + 1 :].split()
    if len(after_comm) < 13:
        raise ValueError(f"/proc/<pid>/stat line has too few fields: {text[:80]!r}")
    # after_comm[0] is field 3 (state); ppid is field 4, utime and stime fields 14 and 15.
    return ProcessStat(
        pid=int(pid),
        comm=rest[:close],
        state=after_comm[0],
        ppid=int(after_comm[1]),
        utime=int(after_comm[11]),
        stime=int(after_comm[12]),
    )


def read_stat(pid: int) -> ProcessStat:
    """``/proc/<pid>/stat`` of a live process (``OSError`` once it is gone)."""
    return parse_stat(_read(f"/proc/{pid}/stat"))


def parse_kib_fields(text: str) -> dict[str, int]:
    """The ``Name:   1234 kB`` lines of ``/proc/<pid>/status`` or ``/proc/<pid>/smaps_rollup``,
    in KiB; lines with another unit (or none) are left out."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        words = value.split()
        if len(words) == 2 and words[1] == "kB":
            fields[name] = int(words[0])
    return fields


def status_kib(pid: int) -> dict[str, int]:
    """The memory fields of ``/proc/<pid>/status`` in KiB: ``VmRSS`` (resident), ``RssAnon``
    (its anonymous part), ``VmHWM`` (peak resident), ...

    A zombie has none of them: the caller decides whether a missing field is an error.
    """
    return parse_kib_fields(_read(f"/proc/{pid}/status"))


def smaps_rollup_kib(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in KiB: ``Rss``, ``Pss`` (shared pages divided among the
    processes that map them), ``Anonymous``, ... summed over all mappings.

    Costlier than ``status`` (the kernel walks the page tables) but it has ``Pss``.
    """
    return parse_kib_fields(_read(f"/proc/{pid}/smaps_rollup"))


@dataclasses.dataclass(frozen=True)
class SystemCpu:
    """The ``cpu`` line of ``/proc/stat``: clock ticks since boot, summed over all CPUs."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int  # time a hypervisor ran other guests while this one wanted to run


def parse_system_cpu(text: str) -> SystemCpu:
    """The first (all-CPU) line of ``/proc/stat``."""
    words = text.split("\n", 1)[0].split()
    if len(words) < 9 or words[0] != "cpu":
        raise ValueError(f"/proc/stat does not start with the all-CPU line: {text[:80]!r}")
    return SystemCpu(*(int(word) for word in words[1:9]))


def read_system_cpu() -> SystemCpu:
    return parse_system_cpu(_read("/proc/stat"))


def children(pid: int) -> list[int]:
    """The child processes of ``pid``'s main thread (``/proc/<pid>/task/<pid>/children``).

    Children forked by another thread are not listed; ``pids`` and ``ProcessStat.ppid``
    find those.
    """
    return [int(child) for child in _read(f"/proc/{pid}/task/{pid}/children").split()]


def pids() -> list[int]:
    """Every process id in ``/proc`` (some may be gone by the time they are read)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def comm(pid: int) -> str:
    """The command name (``/proc/<pid>/comm``), up to 15 bytes."""
    return _read(f"/proc/{pid}/comm").rstrip("\n")


def cmdline(pid: int) -> list[str]:
    """The argument vector (``/proc/<pid>/cmdline``); empty for a zombie or kernel thread."""
    text = _read(f"/proc/{pid}/cmdline")
    return text.removesuffix("\0").split("\0") if text else []


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as the kernel prints them (``0.52 0.61 0.70``)."""
    return " ".join(_read("/proc/loadavg").split()[:3])


def _read(path: str) -> str:
    # /proc files report a size of 0: read them whole, in one go.
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()
