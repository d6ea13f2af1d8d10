"""Running Envoy: start it, talk to its admin API, drain it, stop it (the thin edge).

The admin API stays on loopback; every mutating call is a POST (Envoy refuses GET for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Sequence

import httpx

from meshlib.hostport import host_port
from sidecar.readiness import (
    ACTIVE_CONNECTIONS_FILTER,
    READINESS_STATS_FILTER,
    Readiness,
    active_connections,
    decide_readiness,
    parse_stats,
)

log = logging.getLogger(__name__)


class EnvoyAdmin:
    """A small client for the admin endpoints the agent uses."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 2.0) -> None:
        # Plain HTTP on loopback: ``verify=False`` only skips loading a CA bundle it never uses.
        self._client = httpx.AsyncClient(
            base_url=f"http://{host_port(host, port)}",
            timeout=timeout_s,
            verify=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stats(self, regex: str) -> dict[str, int]:
        response = await self._client.get("/stats", params={"filter": regex})
        response.raise_for_status()
        return parse_stats(response.text)

    async def readiness(self, *, draining: bool = False) -> Readiness:
        """Envoy's live state from ``/ready`` (the ``server.state`` stat is only refreshed
        at each stats flush, and reads 0 = LIVE before the first one), plus the CDS/LDS
        counters from ``/stats``."""
        try:
            state = await self._client.get("/ready")
            stats = await self.stats(READINESS_STATS_FILTER)
        except httpx.HTTPError as exc:
            return Readiness(False, f"Envoy's admin API does not answer ({type(exc).__name__})")
        return decide_readiness(stats, server_state=state.text.strip(), draining=draining)

    async def active_connections(self, ignore_listeners: Sequence[str]) -> int:
        return active_connections(await self.stats(ACTIVE_CONNECTIONS_FILTER), ignore_listeners)

    async def prometheus(self) -> str:
        response = await self._client.get("/stats/prometheus")
        response.raise_for_status()
        return response.text

    async def post(self, path: str, **params: str) -> None:
        response = await self._client.post(path, params=params)
        response.raise_for_status()


class EnvoyProcess:
    """One Envoy child process. Its exit code is the agent's exit code.

    Envoy must not outlive the agent: an orphan keeps the pod's ports, so the restarted
    agent's Envoy could not bind them (with ``shareProcessNamespace`` the container's death
    does not kill it). Envoy is started through util-linux ``setpriv --pdeathsig KILL``
    (Debian's essential set), which execs Envoy with the kernel's parent-death signal set.
    Python's own ``preexec_fn`` is not safe to use in a process with gRPC's threads.
    """

    def __init__(self, binary: str, args: Sequence[str], *, die_with_agent: bool = True) -> None:
        setpriv = shutil.which("setpriv") if die_with_agent else None
        if die_with_agent and setpriv is None:
            log.warning("setpriv not found: Envoy would outlive a killed agent")
        prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        self.argv = [*prefix, binary, *args]
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        log.info("starting Envoy", extra={"argv": self.argv})
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            # Envoy logs to our stderr/stdout: one container log, as with pilot-agent. Its own
            # process group keeps a terminal's Ctrl-C (sent to the whole foreground group)
            # from killing Envoy before the agent has drained it.
            process_group=0,
        )

    async def wait(self) -> int:
        """Wait for Envoy to exit; returns the exit code (128+N when killed by signal N)."""
        assert self._proc is not None, "start() first"
        code = await self._proc.wait()
        return 128 - code if code < 0 else code

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    async def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                log.warning("Envoy ignored SIGTERM; killing it", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return await self.wait()
