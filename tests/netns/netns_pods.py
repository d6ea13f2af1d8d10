"""Network namespaces standing in for pods, and what runs in them, for the capture tests.

The ``pods`` fixture (conftest.py) creates ``rmcap-a-<random>`` and ``rmcap-b-<random>`` and
always deletes them; every iptables command runs inside them through ``Pod.run`` and the root
namespace's rules are never touched. Addresses (10.240.0.0/24, fd00:240::/64) exist only on
their veth pair.

These tests need root, ``ip`` (iproute2) and the iptables package (both the nft and the
legacy tools); hack/setup.sh installs them. They fail, rather than skip, without them.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).with_name("pod_agent.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
# Ports the agent listens on: Envoy's two capture ports and three app ports (TCP), and the
# agent's DNS port and DNS itself (UDP).
AGENT_PORTS = (15001, 15006, 8080, 9090, 5432)
AGENT_UDP_PORTS = (15053, 53)

_COUNTERS = re.compile(r" \[\d+:\d+\]$")

A_V4, B_V4, B_V4_EXTRA = "10.240.0.1", "10.240.0.2", "10.240.0.3"
A_V6, B_V6 = "fd00:240::1", "fd00:240::2"


def run_host(
    *argv: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in the test's own namespace (only ``ip netns``/``ip link`` set-up)."""
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=check, env=ENV)


@dataclass(frozen=True)
class Flavour:
    """A backend and the iptables flavour it writes to."""

    backend: str
    mode: str

    @property
    def flags(self) -> list[str]:
        return [f"--backend={self.backend}", f"--iptables-mode={self.mode}"]

    @property
    def ipv6(self) -> bool:
        return self.backend == "iptables-restore"

    def __str__(self) -> str:
        return f"{self.backend}-{self.mode}"


FLAVOURS = [
    Flavour("iptables-restore", "nft"),
    Flavour("iptables-restore", "legacy"),
    Flavour("python-iptables", "legacy"),
]


@dataclass
class Agent:
    """A running pod_agent ``serve``: read where connections landed."""

    proc: subprocess.Popen[bytes]
    buffer: bytes = b""

    def _lines(self, timeout: float) -> list[str]:
        """Complete lines available within ``timeout`` (raw fd reads: no hidden buffering)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]

    def events(self, timeout: float = 0.3) -> list[dict[str, Any]]:
        """Connections accepted since the last call (waiting up to ``timeout`` for the first)."""
        lines = self._lines(timeout)
        if lines:
            lines += self._lines(0.05)  # and whatever else is already on its way
        return [json.loads(line) for line in lines if line]


class Pod:
    """One network namespace standing in for a pod."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.agent: Agent | None = None

    def run(
        self, *argv: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_host("ip", "netns", "exec", self.name, *argv, check=check, stdin=stdin)

    def init(self, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``remora init`` (as ``python -m initcontainer``) inside this pod."""
        result = self.run(sys.executable, "-m", "initcontainer", *flags, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"remora init {' '.join(flags)} failed:\n{result.stderr}")
        return result

    def save(self, mode: str, family: int = 4) -> str:
        tool = "iptables" if family == 4 else "ip6tables"
        return self.run(f"{tool}-{mode}-save").stdout

    def rules(self, mode: str, family: int = 4) -> list[str]:
        """Tables, chains and rules of ``*-save``, without counters and timestamps."""
        lines = self.save(mode, family).splitlines()
        return [_COUNTERS.sub("", line) for line in lines if line.startswith(("*", ":", "-A"))]

    def own_rules(self, mode: str, family: int = 4) -> list[str]:
        return [r for r in self.rules(mode, family) if "ISTIO_" in r or "remora-capture" in r]

    def start_agent(self) -> Agent:
        ports = [*map(str, AGENT_PORTS), *(f"--udp={port}" for port in AGENT_UDP_PORTS)]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, str(AGENT), "serve", *ports],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        agent = Agent(proc)
        self.agent = agent  # stopped by the fixture even if it never gets ready
        if agent._lines(10) != ["ready"]:
            raise AssertionError(f"pod agent in {self.name} did not start")
        return agent

    def connect(
        self, host: str, port: int, uid: int = 1000, gid: int = 1000, udp: bool = False
    ) -> dict[str, Any]:
        ids = ["--uid", str(uid), "--gid", str(gid), *(["--udp"] if udp else [])]
        result = self.run(sys.executable, str(AGENT), "connect", host, str(port), *ids, check=False)
        return json.loads(result.stdout) if result.stdout else {"ok": False, "error": result.stderr}

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.proc.kill()
            self.agent.proc.wait(timeout=5)
            self.agent = None
