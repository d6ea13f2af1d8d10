"""What a failed operation may leave behind in this process: open descriptors and children.

Shared by the unit tests of error paths (the capture init container's tool spawning, the
server sockets): take a reading before, provoke the failure, and compare. Compare children
with :func:`new_children`: in a whole run the session's test bed (etcd, kube-apiserver, ...)
are children of this process too.
"""

from __future__ import annotations

import os


def open_fds() -> set[str]:
    """This process's open file descriptors."""
    return set(os.listdir("/proc/self/fd"))


def child_pids() -> list[int]:
    """Our child processes, running or zombie: /proc's view, which waitpid cannot hide."""
    me = str(os.getpid())
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:  # exited while we looked
            continue
        if fields[1] == me:  # state, ppid, ...
            children.append(int(entry))
    return children


def new_children(before: set[int]) -> list[int]:
    """Children that were not there ``before`` (a :func:`child_pids` reading)."""
    return sorted(set(child_pids()) - before)
