"""Full push: 1,000 services x 10 endpoints to one connected Envoy, time to the last ACK.

The Envoy is connected and synced on an empty mesh first; the clock starts just before the
control plane publishes the full mesh (translation included) and stops when every xDS type
of that proxy is ACKed at the published version. Each run uses a fresh control plane and
Envoy. Envoy runs with the sidecar agent's own bootstrap and command line
(:class:`xds_common.SidecarEnvoy`): ``--bootstrap product`` is that bootstrap (Istio's stats
inclusion list, deferred stats and worker clusters), ``--bootstrap before`` the same without
them (every stat created up front, every worker builds every cluster: the bootstrap before).

Run: .venv/bin/python bench/xds_full_push.py [--runs 5] [--concurrency 2] [--bootstrap product,before]
     [--modes delta,sotw] [--pods] [--timeline]

``--pods`` adds a pod with a sidecar behind every endpoint (10,000 by default): every cluster
then carries the mTLS transport socket matches and every endpoint its ``tlsMode`` metadata,
as in a real mesh (the default mesh has no pods, hence no mTLS).

``--timeline`` prints, for the median run, when the control plane got each request (ACKs,
subscriptions) and built each response, in ms since publish: the gaps between a response
and the next request are Envoy's.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Iterator
from typing import NamedTuple

from bench import procfs
from bench.xds_common import SidecarEnvoy, mesh
from controlplane.app import DiscoveryOptions
from controlplane.resources import PUSH_ORDER, SHORT_NAMES, ProxyResources
from controlplane.sources.files import load_into
from controlplane.store import MeshStore
from controlplane.xds.protocol import Event, Request, Response
from controlplane.xds.server import ProxyConnection
from harness.control_plane import ControlPlaneThread
from harness.polling import wait_for


def fully_acked(conn: ProxyConnection) -> bool:
    desired = conn.desired
    if desired is None:
        return False
    for type_url in PUSH_ORDER:
        state = conn.protocol.types.get(type_url)
        if state is None or state.in_flight is not None:
            return False
        if state.acked_version != desired[type_url].version:
            return False
    return True


class Run(NamedTuple):
    last_ack_s: float
    first_response_s: float  # when the control plane's first response left
    publish_s: float  # how long publish() (computing the proxy's config, clusters lazy) took
    timeline: list[tuple[float, str]]  # (ms since publish, what the control plane saw or sent)
    envoy_cpu_s: float  # Envoy's CPU time (all threads) from publish to the last ACK
    process_cpu_s: float  # the bench process (control plane, its gRPC threads, the SDS server)
    clusters: int
    memory: dict[str, float]
    stats: int


class PushTimeline:
    """What the control plane saw and sent on ``conn`` during a push, and the GC pauses:
    ``events`` are (``perf_counter`` time, what), ``first_send`` the first response's time.

    Installed on the connection's protocol (and as a GC callback) for the ``with`` block.
    """

    def __init__(self, conn: ProxyConnection) -> None:
        self.events: list[tuple[float, str]] = []
        self.first_send: list[float] = []
        self._gc_started: list[float] = []
        self._conn = conn
        self._iter_responses = conn.protocol.iter_responses
        self._on_request = conn.protocol.on_request

    def __enter__(self) -> PushTimeline:
        self._conn.protocol.iter_responses = self._timed  # type: ignore[method-assign]
        self._conn.protocol.on_request = self._timed_request  # type: ignore[method-assign]
        gc.callbacks.append(self._gc_timer)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._gc_timer)
        self._conn.protocol.iter_responses = self._iter_responses  # type: ignore[method-assign]
        self._conn.protocol.on_request = self._on_request  # type: ignore[method-assign]

    def _timed(self, desired: ProxyResources | None) -> Iterator[Response]:
        building = time.perf_counter()
        for response in self._iter_responses(desired):
            now = time.perf_counter()
            if not self.first_send:
                self.first_send.append(now)
            short = SHORT_NAMES[response.type_url]
            self.events.append((building, f"{short} building"))
            self.events.append((now, f"{short} response built ({len(response.resources)})"))
            yield response
            building = time.perf_counter()

    def _timed_request(self, request: Request, now: float) -> list[Event]:
        arrived = time.perf_counter()
        handled = self._on_request(request, now)
        kinds = ",".join(e.kind for e in handled) or "request"
        self.events.append((arrived, f"{SHORT_NAMES[request.type_url]} {kinds}"))
        return handled

    def _gc_timer(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started[:] = [time.perf_counter()]
        elif self._gc_started:
            took = (time.perf_counter() - self._gc_started[0]) * 1000
            if took >= 0.5:
                self.events.append(
                    (self._gc_started[0], f"gc gen{info['generation']} {took:.1f} ms")
                )


def one_run(
    services: int, endpoints: int, delta: bool, before: bool, concurrency: int, *, pods: bool
) -> Run:
    store = MeshStore()
    load_into(store, mesh(services, endpoints, pods=pods))
    snapshot = store.snapshot()
    cp = ControlPlaneThread(DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None))
    try:
        with SidecarEnvoy(
            "client-0",
            "bench",
            "10.200.0.1",
            cp.xds_port,
            delta=delta,
            concurrency=concurrency,
            before=before,
        ) as envoy:
            conn = wait_for(lambda: next(iter(cp.server.hub.connections), None), what="the proxy")
            wait_for(lambda: "virtualOutbound" in envoy.listener_names(), what="the empty mesh")
            with PushTimeline(conn) as timeline:
                cpu_before = envoy.cpu_seconds(), time.process_time()
                published: list[float] = []

                def publish() -> None:
                    published.append(time.perf_counter())
                    cp.server.hub.publish(snapshot)
                    published.append(time.perf_counter())

                started = time.perf_counter()
                cp.call(publish)
                wait_for(
                    lambda: cp.call(lambda: fully_acked(conn)),
                    timeout=30,
                    interval=0.002,
                    what="the last ACK",
                )
                elapsed = time.perf_counter() - started
            return Run(
                elapsed,
                timeline.first_send[0] - started,
                published[1] - published[0],
                [(round((t - started) * 1000, 1), what) for t, what in sorted(timeline.events)],
                envoy.cpu_seconds() - cpu_before[0],
                time.process_time() - cpu_before[1],
                envoy.active_clusters(),
                envoy.memory(),
                envoy.stat_count(),
            )
    finally:
        cp.stop()


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others (``/proc/stat`` steal, all CPUs): on a shared
    host, a session with steal measures the neighbours as much as the code."""
    return procfs.read_system_cpu().steal / procfs.CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="Envoy worker threads (the agent's default without a CPU limit is 2)",
    )
    parser.add_argument("--bootstrap", default="product,before", help="product, before, or both")
    parser.add_argument("--modes", default="delta,sotw", help="delta, sotw, or both")
    parser.add_argument(
        "--pods",
        action="store_true",
        help="every endpoint is a pod with a sidecar: clusters and endpoints carry auto-mTLS",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print what the control plane received and sent during the median run",
    )
    args = parser.parse_args()
    steal_before = steal_seconds()
    load = procfs.load_average()
    print(
        f"full push: {args.services} services x {args.endpoints} endpoints to one Envoy "
        f"(--concurrency {args.concurrency}){', every endpoint a meshed pod' if args.pods else ''}, "
        f"{args.runs} runs each, load average {load}"
    )
    for bootstrap in args.bootstrap.split(","):
        for mode in args.modes.split(","):
            results = [
                one_run(
                    args.services,
                    args.endpoints,
                    mode == "delta",
                    bootstrap == "before",
                    args.concurrency,
                    pods=args.pods,
                )
                for _ in range(args.runs)
            ]
            totals = [r.last_ack_s * 1000 for r in results]

            def median_ms(values: list[float]) -> str:
                return f"{statistics.median(values) * 1000:.0f} ms"

            last = results[-1]
            print(
                f"  {mode:5} bootstrap={bootstrap:7}: last ACK median {median_ms([r.last_ack_s for r in results])} "
                f"(runs {', '.join(f'{t:.0f}' for t in totals)}); first response sent after "
                f"{median_ms([r.first_response_s for r in results])} (publish "
                f"{median_ms([r.publish_s for r in results])}); Envoy CPU "
                f"{median_ms([r.envoy_cpu_s for r in results])}, control plane process CPU "
                f"{median_ms([r.process_cpu_s for r in results])}; Envoy holds {last.clusters} "
                f"clusters, {last.stats} stats, RSS {last.memory['Rss']:.0f} MiB "
                f"({last.memory['Anonymous']:.0f} MiB anonymous)"
            )
            if args.timeline:
                run = sorted(results, key=lambda r: r.last_ack_s)[len(results) // 2]
                print(f"    timeline of the median run ({run.last_ack_s * 1000:.0f} ms), ms:")
                for at, what in run.timeline:
                    print(f"      {at:7.1f}  {what}")
    print(
        f"load average after: {procfs.load_average()}; CPU steal during "
        f"the runs: {steal_seconds() - steal_before:.2f} s"
    )


if __name__ == "__main__":
    main()
