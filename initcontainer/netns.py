"""``--network-namespace``: do all the work inside another network namespace.

Python 3.11 has no ``os.setns``, so this calls libc's ``setns(2)`` through ctypes. The
process is single-threaded at this point, and the iptables tools it starts inherit the
namespace.
"""

from __future__ import annotations

import ctypes
import os

from initcontainer.errors import CAPABILITY_HINT, CaptureError

CLONE_NEWNET = 0x40000000


def enter(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise CaptureError(
            f"cannot open the network namespace {path}: {error.strerror}",
            "pass a path such as /var/run/netns/<name> or /proc/<pid>/ns/net",
        ) from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise CaptureError(
                f"cannot enter the network namespace {path}: {os.strerror(errno)}",
                "setns needs CAP_SYS_ADMIN; " + CAPABILITY_HINT,
            )
    finally:
        os.close(fd)
