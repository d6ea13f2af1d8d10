"""Full push: 1,000 services x 10 endpoints to one connected Envoy, time to the last ACK.

The Envoy is connected and synced on an empty mesh first; the clock starts just before the
control plane publishes the full mesh (translation included) and stops when every xDS type
of that proxy is ACKed at the published version. Run: .venv/bin/python bench/xds_full_push.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xds_common import mesh  # noqa: E402

from controlplane.app import DiscoveryOptions  # noqa: E402
from controlplane.resources import PUSH_ORDER  # noqa: E402
from controlplane.sources.files import load_into  # noqa: E402
from controlplane.store import MeshStore  # noqa: E402
from controlplane.testing import ControlPlaneThread, EnvoyProcess, wait_for  # noqa: E402
from controlplane.xds.server import ProxyConnection  # noqa: E402


def fully_acked(conn: ProxyConnection) -> bool:
    desired = conn.desired
    if desired is None:
        return False
    for type_url in PUSH_ORDER:
        state = conn.protocol.types.get(type_url)
        if state is None or state.in_flight is not None or state.acked_version != desired[type_url].version:
            return False
    return True


def one_run(services: int, endpoints: int, delta: bool) -> tuple[float, float, int]:
    store = MeshStore()
    load_into(store, mesh(services, endpoints))
    snapshot = store.snapshot()
    cp = ControlPlaneThread(DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None))
    try:
        with EnvoyProcess("client-0", "bench", "10.200.0.1", cp.xds_port, delta=delta) as envoy:
            conn = wait_for(lambda: next(iter(cp.server.hub.connections), None), what="the proxy to connect")
            wait_for(lambda: "virtualOutbound" in envoy.listener_names(), what="the empty-mesh sync")
            build: list[float] = []

            def publish() -> None:
                started = time.perf_counter()
                cp.server.hub.publish(snapshot)
                build.append(time.perf_counter() - started)

            started = time.perf_counter()
            cp.call(publish)
            wait_for(lambda: cp.call(lambda: fully_acked(conn)), timeout=30, interval=0.002, what="the last ACK")
            elapsed = time.perf_counter() - started
            clusters = len(envoy.active_clusters())
            return elapsed, build[0], clusters
    finally:
        cp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"full push: {args.services} services x {args.endpoints} endpoints, one Envoy, {args.runs} runs per mode")
    for mode in ("delta", "sotw"):
        results = [one_run(args.services, args.endpoints, mode == "delta") for _ in range(args.runs)]
        totals = [r[0] for r in results]
        builds = [r[1] for r in results]
        print(
            f"  {mode:5}: last ACK median {statistics.median(totals) * 1000:.0f} ms "
            f"(runs: {', '.join(f'{t * 1000:.0f}' for t in totals)} ms); "
            f"translation {statistics.median(builds) * 1000:.0f} ms; Envoy holds {results[-1][2]} clusters"
        )


if __name__ == "__main__":
    main()
