"""Network namespaces from this process: ``ip`` commands, and sockets opened inside one.

The node and its pods are named network namespaces (``/run/netns/<name>``). :func:`ip` sets
them up; :func:`in_netns` switches this thread into one for the socket calls of a block (a
socket stays in the namespace it was created in), which is how the harness probes a pod,
asks its loopback-only admin port, or listens on the node's address.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import subprocess
from collections.abc import Iterator

from testbed.errors import NetworkError

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip *args``; with ``check``, a failure raises :class:`NetworkError` with its stderr."""
    argv = ("ip", *args)
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block's socket calls in network namespace ``name`` (this thread only).

    A socket stays in the namespace it was created in, so a listener made here keeps
    serving that namespace after the block.
    """
    with open("/proc/thread-self/ns/net") as here, open(f"/run/netns/{name}") as there:
        if _libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if _libc.setns(here.fileno(), _CLONE_NEWNET) != 0:  # pragma: no cover
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace")


def http_in_netns(
    netns: str, method: str, host: str, port: int, path: str, *, timeout: float = 3.0
) -> tuple[int, str]:
    """One HTTP request from inside network namespace ``netns``: status and body (undecodable
    bytes replaced, so a binary answer is still an answer).

    Only the connect happens in the namespace (the socket stays in it afterwards). Raises
    OSError when the connection fails, or ConnectionError when it closes before a complete
    answer; the socket is closed in every case.
    """
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        with in_netns(netns):
            connection.connect()
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except http.client.HTTPException as exc:  # e.g. closed before any answer
        raise ConnectionError(f"{method} {host}:{port}{path} in {netns}: {exc!r}") from exc
    finally:
        connection.close()
