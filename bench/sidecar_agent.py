"""Sidecar agent figures: start-to-ready time, idle memory (agent + Envoy), SIGTERM exit time.

Runs the real ``remora proxy sidecar`` (with a local CA, so SDS is live) against a minimal
in-process delta-ADS server that serves one cluster and one listener, all on loopback.

    .venv/bin/python bench/sidecar_agent.py [--runs 5] [--idle 3]

"Ready" is the kubelet's view: the first 200 from Envoy's health listener
(``:15021/healthz/ready`` -> agent -> Envoy admin), counted from process start.

Memory, per process from ``/proc/<pid>/smaps_rollup``: RSS; PSS (shared pages divided among
the processes mapping them); anonymous (heap, stacks, interpreter and library data: what each
pod pays for itself); file-backed (RSS minus anonymous: the Envoy binary, libpython, the
extension modules). Kubernetes' ``container_memory_working_set_bytes`` (what the kubelet
evicts on and Istio's dashboards report) is the container cgroup's usage minus its inactive
file pages: the anonymous memory, plus page cache *charged to that cgroup*, plus tmpfs (the
agent's config directory is an in-memory emptyDir). Page cache is charged to the cgroup that
first reads a page, so the image's binary pages count for the first pod on a node that
touches them and for none of the others: the bench prints both ends, "first pod on the node"
(anonymous + file-backed + tmpfs) and "other pods" (anonymous + tmpfs). Kernel memory
(sockets, page tables) is left out of both (a few hundred KiB here).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - Any registry
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

from bench import procfs
from meshlib.certs import new_ca
from meshlib.ports import free_port

REMORA = str(Path(sys.executable).parent / "remora")


def resources(listener_port: int) -> dict[str, list[Any]]:
    cluster = json_format.ParseDict(
        {
            "name": "app",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "app",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": 9,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        },
        cluster_pb2.Cluster(),
    )
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inbound",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "app",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = json_format.ParseDict(
        {
            "name": "inbound",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        },
        listener_pb2.Listener(),
    )
    return {
        "type.googleapis.com/envoy.config.cluster.v3.Cluster": [cluster],
        "type.googleapis.com/envoy.config.listener.v3.Listener": [listener],
    }


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self) -> None:
        self.listener_port = free_port()
        self.resources = resources(self.listener_port)

    def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        for request in request_iterator:
            if request.response_nonce:
                continue
            items = []
            for message in self.resources.get(request.type_url, []):
                packed = any_pb2.Any()
                packed.Pack(message)
                items.append(
                    discovery_pb2.Resource(name=message.name, version="1", resource=packed)
                )
            yield discovery_pb2.DeltaDiscoveryResponse(
                type_url=request.type_url, resources=items, nonce="1", system_version_info="1"
            )


def memory(pid: int) -> dict[str, float]:
    """MiB: ``rss``, ``pss``, ``anon`` (what each pod pays for itself) and ``file`` (binary
    and shared-library pages, shared by every pod using the same image)."""
    fields = {name: kib / 1024 for name, kib in procfs.smaps_rollup_kib(pid).items()}
    rss, anon = fields["Rss"], fields["Anonymous"]
    return {"rss": rss, "pss": fields["Pss"], "anon": anon, "file": rss - anon}


def tmpfs_mib(directory: Path) -> float:
    """What the config directory would hold in its in-memory emptyDir."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20


def envoy_child(pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in procfs.children(pid):
            if any("envoy" in arg for arg in procfs.cmdline(child)):
                return child
        time.sleep(0.01)
    raise RuntimeError("Envoy did not start")


# Dev-only packages that httpx's optional command-line module imports when they are present
# (pulled in here by pytest and import-linter); a production install has neither.
DEV_ONLY_HTTPX_CLI_DEPS = ("rich", "pygments")


def shadow_dev_packages(directory: Path) -> Path:
    """A PYTHONPATH entry that makes the dev-only packages unimportable, so the agent loads
    what it would in a production install."""
    for name in DEV_ONLY_HTTPX_CLI_DEPS:
        (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / name / "__init__.py").write_text(
            f"raise ImportError('{name} is a dev-only package (benchmark shadow)')\n"
        )
    return directory


def one_run(
    ads_port: int, ca_dir: Path, workdir: Path, idle_s: float, pythonpath: str | None
) -> dict[str, float]:
    ports = {name: free_port() for name in ("admin", "status", "health", "prometheus")}
    argv = [
        REMORA, "proxy", "sidecar",
        "--discovery-address", f"127.0.0.1:{ads_port}", "--xds-plaintext",
        "--bind-address", "127.0.0.1", "--config-dir", str(workdir),
        "--admin-port", str(ports["admin"]), "--status-port", str(ports["status"]),
        "--health-port", str(ports["health"]), "--prometheus-port", str(ports["prometheus"]),
        "--ca-dir", str(ca_dir), "--pod-info-dir", str(workdir),
        "--concurrency", "2", "--log_output_level", "default:warning",
    ]  # fmt: skip
    env = {
        "PATH": os.environ["PATH"],
        "POD_NAME": "bench-0",
        "POD_NAMESPACE": "bench",
        "INSTANCE_IP": "127.0.0.1",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        envoy = envoy_child(proc.pid)
        url = f"http://127.0.0.1:{ports['health']}/healthz/ready"
        ready_s = None
        while time.monotonic() - started < 20:
            try:
                if httpx.get(url, timeout=0.5).status_code == 200:
                    ready_s = time.monotonic() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
        if ready_s is None:
            raise RuntimeError("agent not ready within 20 s")
        time.sleep(idle_s)
        agent_mem = memory(proc.pid)
        envoy_mem = memory(envoy)
        heap = httpx.get(f"http://127.0.0.1:{ports['admin']}/memory", timeout=5).json()
        config_dir = tmpfs_mib(workdir)
        # Merged scrapes (Envoy + agent), the agent's heaviest request: median of 10.
        timings = []
        text = ""
        with httpx.Client() as client:
            for _ in range(10):
                scrape_started = time.monotonic()
                text = client.get(
                    f"http://127.0.0.1:{ports['status']}/stats/prometheus", timeout=5
                ).text
                timings.append(time.monotonic() - scrape_started)
        scrape_s = statistics.median(timings)
        # The agent's own view: from its start (after Python imports) to ready.
        agent_ready_s = next(
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("remora_agent_startup_duration_seconds ")
        )
        stop_started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        exit_s = time.monotonic() - stop_started
        anon = agent_mem["anon"] + envoy_mem["anon"]
        return {
            "ready_s": ready_s,
            "agent_ready_s": agent_ready_s,
            **{f"agent_{k}": v for k, v in agent_mem.items()},
            **{f"envoy_{k}": v for k, v in envoy_mem.items()},
            "envoy_heap_allocated": int(heap["allocated"]) / 2**20,
            "envoy_heap_size": int(heap["heap_size"]) / 2**20,
            "total_rss": agent_mem["rss"] + envoy_mem["rss"],
            "total_pss": agent_mem["pss"] + envoy_mem["pss"],
            "total_anon": anon,
            "ws_first_pod": anon + agent_mem["file"] + envoy_mem["file"] + config_dir,
            "ws_other_pods": anon + config_dir,
            "scrape_ms": scrape_s * 1000,
            "sigterm_exit_s": exit_s,
        }
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds idle before measuring memory"
    )
    parser.add_argument(
        "--with-dev-packages",
        action="store_true",
        help="let the agent import the dev-only packages of this venv (rich, pygments)",
    )
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ads = Ads()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    ads_port = free_port()
    server.add_insecure_port(f"127.0.0.1:{ads_port}")
    server.start()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ca = new_ca("bench-root")
        ca_dir = Path(tmp) / "ca"
        ca_dir.mkdir()
        (ca_dir / "ca-cert.pem").write_bytes(ca.cert_pem)
        (ca_dir / "ca-key.pem").write_bytes(ca.key_pem)
        pythonpath = (
            None if args.with_dev_packages else str(shadow_dev_packages(Path(tmp) / "shadow"))
        )
        for i in range(args.runs):
            workdir = Path(tmp) / f"run{i}"
            workdir.mkdir()
            results.append(one_run(ads_port, ca_dir, workdir, args.idle, pythonpath))
    server.stop(0)
    threading.Event().wait(0.1)

    packages = "with" if args.with_dev_packages else "without"
    print(
        f"sidecar agent, {args.runs} runs, {os.cpu_count()} CPUs, Envoy --concurrency 2, "
        f"{packages} dev-only packages"
    )
    print(f"load average {procfs.load_average()}")
    print(f"{'metric':<52} {'median':>9} {'min':>9} {'max':>9}")
    labels = {
        "ready_s": "start -> ready (s)",
        "agent_ready_s": "  of which after imports (s)",
        "agent_rss": "agent RSS idle (MiB)",
        "agent_pss": "agent PSS idle (MiB)",
        "agent_anon": "agent anonymous idle (MiB)",
        "agent_file": "agent file-backed idle (MiB)",
        "envoy_rss": "Envoy RSS idle (MiB)",
        "envoy_pss": "Envoy PSS idle (MiB)",
        "envoy_anon": "Envoy anonymous idle (MiB)",
        "envoy_file": "Envoy file-backed idle (MiB)",
        "envoy_heap_allocated": "Envoy heap allocated, admin /memory (MiB)",
        "envoy_heap_size": "Envoy heap size, admin /memory (MiB)",
        "total_rss": "agent + Envoy RSS idle (MiB)",
        "total_pss": "agent + Envoy PSS idle (MiB)",
        "total_anon": "agent + Envoy anonymous idle (MiB)",
        "ws_first_pod": "working set, first pod on the node (MiB)",
        "ws_other_pods": "working set, other pods of the image (MiB)",
        "scrape_ms": "merged /stats/prometheus (ms)",
        "sigterm_exit_s": "SIGTERM -> exit, idle (s)",
    }
    for key, label in labels.items():
        values = [r[key] for r in results]
        print(
            f"{label:<52} {statistics.median(values):>9.3f} {min(values):>9.3f} {max(values):>9.3f}"
        )


if __name__ == "__main__":
    main()
