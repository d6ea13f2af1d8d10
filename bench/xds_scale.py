"""Endpoint-change convergence to 50 connected Envoys, and control plane memory, at 1,000 services.

Runs ``remora discovery --config-dir`` as its own process (so its RSS is its own), writes a
mesh of 1,000 services x 10 endpoints, connects 50 real Envoys (delta ADS, with the
sidecar bootstrap's stats settings: the stats inclusion list, deferred stats and deferred
worker clusters), then changes one service's endpoints ``--changes`` times.

Convergence, as Istio's ``pilot_proxy_convergence_time`` defines it: from the config change
reaching the control plane (the store event) to a proxy ACKing everything, debounce
included; read per proxy from /debug/syncz. Also printed: wall time from the file write to
the last of the 50 proxies converging (adds the file source's poll interval).

Run: .venv/bin/python bench/xds_scale.py   (about a minute; needs ~7 GB of RAM for the Envoys)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import procfs
from bench.percentiles import percentile
from bench.xds_common import NAMESPACE, endpoint_slice, service
from harness.envoy import EnvoyProcess
from harness.polling import wait_for
from meshlib.ports import free_port

# The first services' slices live in their own files, so a change re-reads one small file.
CHANGING = 10


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """``field`` of ``/proc/<pid>/status`` in MiB (printed as "MB"); NaN if it has none."""
    kib = procfs.status_kib(pid).get(field)
    return float("nan") if kib is None else kib / 1024


def write_mesh(directory: Path, services: int, endpoints: int) -> None:
    big = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    for i in range(services):
        big.append(service(i))
        if i >= CHANGING:
            big.append(endpoint_slice(i, endpoints))
    (directory / "mesh.yaml").write_text(yaml.safe_dump_all(big))
    for i in range(CHANGING):
        write_slice(directory, i, endpoints, 0)


def write_slice(directory: Path, i: int, endpoints: int, generation: int) -> None:
    path = directory / f"slice-{i}.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(endpoint_slice(i, endpoints, generation)))
    os.replace(tmp, path)  # atomic: the file source never reads half a file


def syncz(monitoring: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{monitoring}/debug/syncz", timeout=10).json())


def all_synced(statuses: list[dict[str, Any]], proxies: int) -> bool:
    return len(statuses) == proxies and all(
        t["status"] == "SYNCED" for s in statuses for t in s["types"].values()
    )


@contextlib.contextmanager
def discovery(directory: Path, xds_port: int, monitoring_port: int) -> Iterator[int]:
    """``remora discovery --config-dir directory`` in its own process, ready; yields its pid."""
    monitoring = f"http://127.0.0.1:{monitoring_port}"
    cp = subprocess.Popen(
        [
            *(sys.executable, "-m", "remora", "discovery", "--config-dir", str(directory)),
            *("--listen-address", "127.0.0.1", "--xds-port", str(xds_port)),
            *("--monitoring-port", str(monitoring_port)),
            *("--poll-interval", "20ms", "--log-level", "warning"),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            if cp.poll() is not None:
                raise SystemExit(f"remora discovery exited with {cp.returncode}")
            return httpx.get(f"{monitoring}/ready").status_code == 200

        wait_for(ready, timeout=60, what="discovery ready")
        yield cp.pid
    finally:
        cp.terminate()
        cp.wait(timeout=10)


def connect_envoys(
    stack: contextlib.ExitStack, proxies: int, xds_port: int, monitoring: str
) -> list[EnvoyProcess]:
    """``proxies`` Envoys with the sidecar bootstrap's stats settings, all SYNCED."""
    started = time.monotonic()
    envoys = [
        stack.enter_context(
            EnvoyProcess(
                f"client-{i}",
                NAMESPACE,
                f"10.200.{i // 250}.{i % 250 + 1}",
                xds_port,
                product_stats=True,
            )
        )
        for i in range(proxies)
    ]
    wait_for(
        lambda: all_synced(syncz(monitoring), proxies),
        timeout=600,
        interval=0.5,
        what=f"{proxies} proxies synced",
    )
    print(f"{proxies} Envoys started and fully synced in {time.monotonic() - started:.1f} s")
    return envoys


def endpoint_changes(
    directory: Path, args: argparse.Namespace, monitoring: str
) -> tuple[list[float], list[float]]:
    """Change one service's endpoints ``args.changes`` times; each proxy's convergence
    seconds (all changes), and each change's wall time from the file write to the last ACK."""
    samples: list[float] = []
    walls: list[float] = []
    for change in range(1, args.changes + 1):
        before = {s["node_id"]: s["convergences"] for s in syncz(monitoring)}
        written = time.monotonic()
        write_slice(directory, change % CHANGING, args.endpoints, change)

        def converged(before: dict[str, int] = before) -> list[dict[str, Any]] | None:
            statuses = syncz(monitoring)
            done = [s for s in statuses if s["convergences"] > before.get(s["node_id"], 0)]
            return statuses if len(done) == args.proxies else None

        statuses = wait_for(converged, timeout=30, interval=0.1, what="all proxies converged")
        walls.append(time.monotonic() - written)
        samples.extend(s["last_convergence_seconds"] for s in statuses)
        time.sleep(0.3)
    return samples, walls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="remora-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        directory = Path(tmp)
        write_mesh(directory, args.services, args.endpoints)
        xds_port, monitoring_port = free_port(), free_port()
        monitoring = f"http://127.0.0.1:{monitoring_port}"
        cp_pid = stack.enter_context(discovery(directory, xds_port, monitoring_port))
        print(
            f"control plane RSS, {args.services} services x {args.endpoints} endpoints, no proxy: {rss_mb(cp_pid):.0f} MB"
        )
        envoys = connect_envoys(stack, args.proxies, xds_port, monitoring)
        rss_connected = rss_mb(cp_pid)
        samples, walls = endpoint_changes(directory, args, monitoring)
        rss_after = rss_mb(cp_pid)
        hwm = rss_mb(cp_pid, "VmHWM")
        print(
            f"endpoint change -> {args.proxies} proxies, {args.changes} changes ({len(samples)} proxy samples):"
        )
        print(
            f"  convergence (store event -> ACK, debounce 100 ms included): "
            f"p50 {percentile(samples, 50) * 1000:.0f} ms, p99 {percentile(samples, 99) * 1000:.0f} ms, "
            f"max {max(samples) * 1000:.0f} ms"
        )
        print(
            f"  file write -> last proxy ACK (adds the 20 ms file poll; seen by polling every 100 ms): "
            f"p50 {percentile(walls, 50) * 1000:.0f} ms, p99 {percentile(walls, 99) * 1000:.0f} ms"
        )
        print(
            f"control plane RSS with {args.proxies} proxies: {rss_connected:.0f} MB after sync, "
            f"{rss_after:.0f} MB after the changes, peak {hwm:.0f} MB"
        )
        envoy_rss = [rss_mb(e.process.pid) for e in envoys]
        print(f"Envoy RSS (each): median {percentile(envoy_rss, 50):.0f} MB")


if __name__ == "__main__":
    main()
