"""The harness node: a network namespace with a bridge that pods plug into.

The test bed has no kubelet and no node; :class:`Node` plays one. Its namespace holds a
bridge ``br0`` with ``10.77.0.1/24`` (the node's ``hostIP``), each pod a veth into it and an
address from that /24 (:meth:`Node.plug`), and forwarders from the node's address to services
on the root namespace's loopback (the control plane: :meth:`Node.forward`). Those addresses
exist only inside namespaces created here; nothing is routed out of them and nothing in the
root namespace (addresses, routes, iptables) is changed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from pathlib import Path

from testbed.errors import NetworkError
from testbed.mount_points import MountPointClaims
from testbed.netns import http_in_netns, in_netns, ip

NODE_SUBNET = "10.77.0"  # /24, only inside namespaces this module creates
NODE_ADDRESS = f"{NODE_SUBNET}.1"


class Node:
    """A node: a network namespace with a bridge that pods plug into, and its forwarders."""

    def __init__(self, name: str | None = None) -> None:
        self.suffix = secrets.token_hex(3)
        self.name = name or f"node-{self.suffix}"
        self.netns = f"rmnode-{self.suffix}"
        self.address = NODE_ADDRESS
        self._next_host = 2
        self._forwarders: list[_Forwarder] = []
        # The cluster's names as pods resolve them (no DNS here): written into every
        # container's /etc/hosts, the file the kubelet manages in every container too.
        self.hosts: dict[str, str] = {}
        self._mount_points = MountPointClaims(f"{os.getpid()}:{self.netns}")
        self._lock = threading.Lock()
        ip("netns", "add", self.netns)
        try:
            for argv in (
                ("link", "set", "lo", "up"),
                ("link", "add", "br0", "type", "bridge"),
                ("addr", "add", f"{self.address}/24", "dev", "br0"),
                ("link", "set", "br0", "up"),
            ):
                ip("-n", self.netns, *argv)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forward(self, port: int, target: tuple[str, int]) -> str:
        """Serve ``NODE_ADDRESS:port`` to pods by relaying to ``target`` on the root loopback."""
        self._forwarders.append(_Forwarder(self.netns, (self.address, port), target))
        return f"{self.address}:{port}"

    def add_host(self, name: str, address: str) -> None:
        """Let pods resolve ``name`` to ``address`` (e.g. the control plane's Service name)."""
        self.hosts[name] = address

    def http(
        self, method: str, address: str, port: int, path: str, timeout: float = 3.0
    ) -> tuple[int, str]:
        """An HTTP request from the node itself (as the kubelet probes, or a client outside
        the mesh); status and body. Raises OSError when the connection fails or is closed."""
        return http_in_netns(self.netns, method, address, port, path, timeout=timeout)

    def allocate_address(self) -> str:
        with self._lock:
            if self._next_host > 254:
                raise NetworkError("the node's /24 is full")
            address = f"{NODE_SUBNET}.{self._next_host}"
            self._next_host += 1
            return address

    def plug(self, netns: str, address: str) -> None:
        """Give the pod namespace ``netns`` (made here) an ``eth0`` on the node's bridge with
        ``address`` (from :meth:`allocate_address`) and a default route via the node."""
        ip("netns", "add", netns)
        host_side = f"v{netns.removeprefix('rmpod-')}"
        veth_into_pod = ("type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("-n", self.netns, "link", "add", host_side, *veth_into_pod)
        ip("-n", self.netns, "link", "set", host_side, "master", "br0", "up")
        for argv in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{address}/24", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("route", "add", "default", "via", self.address),
        ):
            ip("-n", netns, *argv)

    def ensure_mount_point(self, path: Path) -> None:
        """Create ``path`` on the host if missing, for as long as any node needs it
        (:mod:`testbed.mount_points`: other nodes, also of other processes, may use it)."""
        self._mount_points.ensure(path)

    def close(self) -> None:
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders.clear()
        ip("netns", "del", self.netns, check=False)
        self._mount_points.release()


class _Forwarder:
    """Accepts TCP in the node's namespace and relays each connection to the root loopback."""

    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        with in_netns(netns):
            self._sock = socket.create_server(listen)
        self._sock.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"forward-{listen}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                downstream, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                downstream.close()
                continue
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stopped.set()
        self._sock.close()
        self._thread.join(timeout=2)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(None)
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
