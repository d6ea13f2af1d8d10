"""Added latency, CPU and memory of a sidecar pair at a fixed request rate (issue #6).

    .venv/bin/python bench/mesh_latency.py [--qps 1000] [--connections 4] [--duration 30]
        [--rounds 1] [--payload 1024] [--warmup 2] [--settle 5] [--breakdown] [--save-json DIR]

    # what docs/benchmarks.md "Sidecar latency" shows (about 10 minutes):
    .venv/bin/python bench/mesh_latency.py --duration 30 --rounds 3 --breakdown

Four pods on one harness node (:mod:`testbed.kubelet`), created through the real test-bed API
server with Remora's injection webhook registered and ``remora discovery`` (control plane and
mesh CA) serving them, as in the mesh end-to-end tests (``tests/mesh``):

* **mesh**: ``client`` -> ClusterIP -> capture -> client Envoy -> mTLS -> server Envoy ->
  ``fortio server`` in ``server``; both pods injected, Envoy with 2 workers as Istio's;
* **direct**: ``client-direct`` -> pod IP -> ``fortio server`` in ``server-direct``; both pods
  labelled ``sidecar.istio.io/inject: "false"``. There is no kube-proxy on the harness node, so
  the direct path addresses the pod; both paths cross the same bridge and veths.

``--breakdown`` adds **server-sidecar** (``client-direct`` -> ``server``'s pod IP: its inbound
sidecar only, plaintext), **client-sidecar** (``client`` -> a Service of ``server-direct``: the
outbound sidecar only, plaintext) and **bare-envoy**: the same Envoy binary with the smallest
static HTTP proxy config inside ``client-direct``, the yardstick for one Envoy hop here.

The load generator is fortio (``fortio load -qps Q -c C -t D``; built on first use by
``hack/tools/build.sh fortio``, pinned by ``hack/tools/go.mod``), run inside the client pod's
network namespace as the app's uid (the pod runner's ``exec``: ``ip netns exec`` + ``setpriv``,
as ``kubectl exec`` would in a cluster), as in Istio's own benchmark: HTTP/1.1,
keep-alive, ``-payload-size`` bytes POSTed and echoed. Latency is what fortio measures for each
request, in a histogram of 10 µs resolution, percentiles interpolated within buckets. Before
each measured run a short warm-up run on the same path is discarded; each round runs every
path in turn, so a change of the machine's load hits all of them.

CPU is ``utime + stime`` from ``/proc/<pid>/stat`` of every process of each ``istio-proxy``
container (the agent and its Envoy), over the measured run; memory is ``VmRSS``/``RssAnon``
from ``/proc/<pid>/status``, once idle (after ``--settle`` seconds with no traffic) and the peak
of samples every 0.5 s under load. Everything is in namespaces this script creates; the only
traffic outside them is the pods' control-plane connections to ``remora discovery`` on the
root loopback (the harness node's forwarders). Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api, DiscoveryV1Api

from bench import procfs
from harness.mesh import open_mesh
from harness.mesh_workloads import service_and_slice
from meshlib.envoy_binary import envoy_path
from meshlib.processes import stop_process
from testbed.binaries import Binaries
from testbed.errors import PodError
from testbed.images import Image
from testbed.kubelet import run_pod
from testbed.launcher import TestBed
from testbed.node import Node
from testbed.running_pod import RunningPod

REPO = Path(__file__).resolve().parents[1]
FORTIO_IMAGE = "remora-bench/fortio"
CLIENT_IMAGE = "remora-e2e/client:1"  # the mesh tests' idle client: fortio is exec'd into it
APP_UID = 1000
SERVER_PORT = 8080
SERVICE_PORT = 80
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
HISTOGRAM_RESOLUTION_S = 0.00001  # fortio's -r: 10 µs buckets below 0.2 ms, ~10-20 % above
_RUNS = itertools.count(1)  # numbers the saved fortio outputs


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- pure: fortio's answer, /proc, the tables --------------------------------------------------


class FortioOutputError(ValueError):
    """fortio's output is not the JSON result of one ``fortio load`` run."""


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """One ``fortio load`` run. Latencies in milliseconds."""

    requested_qps: float
    actual_qps: float
    duration_s: float
    connections: int
    requests: int
    ok: int
    failed: int
    status_codes: dict[str, int]
    avg_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float


def parse_fortio_json(text: str) -> LoadResult:
    """The figures of fortio's ``-json`` result (fortio 1.x ``HTTPRunnerResults``).

    ``failed`` counts every request that did not answer 200: other HTTP codes and transport
    errors (fortio files those under code ``-1``); fortio's own warm-up calls are not counted.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FortioOutputError(f"fortio did not print a JSON result: {exc}") from exc
    if not isinstance(data, dict) or "DurationHistogram" not in data:
        raise FortioOutputError("fortio's JSON has no DurationHistogram: not a load result")
    histogram = data["DurationHistogram"]
    wanted: dict[float, float | None] = dict.fromkeys(PERCENTILES)
    for entry in histogram.get("Percentiles") or []:
        if float(entry["Percentile"]) in wanted:
            wanted[float(entry["Percentile"])] = float(entry["Value"]) * 1000
    missing = [p for p, v in wanted.items() if v is None]
    if missing:
        raise FortioOutputError(
            f"fortio's result lacks percentiles {missing}: run it with -p 50,90,99,99.9"
        )
    codes = {str(k): int(v) for k, v in (data.get("RetCodes") or {}).items()}
    requests = int(histogram["Count"])
    ok = codes.get("200", 0)
    requested = str(data.get("RequestedQPS", "0"))
    return LoadResult(
        requested_qps=0.0 if requested == "max" else float(requested),
        actual_qps=float(data["ActualQPS"]),
        duration_s=int(data["ActualDuration"]) / 1e9,
        connections=int(data["NumThreads"]),
        requests=requests,
        ok=ok,
        failed=requests - ok,
        status_codes=codes,
        avg_ms=float(histogram["Avg"]) * 1000,
        p50_ms=wanted[50.0] or 0.0,
        p90_ms=wanted[90.0] or 0.0,
        p99_ms=wanted[99.0] or 0.0,
        p999_ms=wanted[99.9] or 0.0,
        max_ms=float(histogram["Max"]) * 1000,
    )


@dataclasses.dataclass(frozen=True)
class Memory:
    """Resident memory in KiB: all of it, and the anonymous part (the process's own)."""

    rss_kib: int
    anon_kib: int

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss_kib + other.rss_kib, self.anon_kib + other.anon_kib)


def memory_of(fields: Mapping[str, int]) -> Memory:
    """``VmRSS`` and ``RssAnon`` of ``/proc/<pid>/status`` (``procfs.status_kib``)."""
    if "VmRSS" not in fields:
        raise ValueError("no VmRSS in /proc/<pid>/status: the process has exited")
    return Memory(fields["VmRSS"], fields.get("RssAnon", 0))


@dataclasses.dataclass(frozen=True)
class SidecarUsage:
    """One pod's sidecar over one measured run."""

    pod: str
    agent_cpu_s: float
    envoy_cpu_s: float
    wall_s: float
    requests: int  # answered in the run
    idle: dict[str, Memory]  # "agent", "envoy"
    loaded_peak: dict[str, Memory]

    @property
    def cores(self) -> float:
        return (self.agent_cpu_s + self.envoy_cpu_s) / self.wall_s

    @property
    def cores_per_krps(self) -> float:
        """CPU seconds per request x 1,000: the cores that 1,000 requests/s keep busy."""
        return (self.agent_cpu_s + self.envoy_cpu_s) / self.requests * 1000


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def render_latency(rows: Sequence[tuple[int, str, LoadResult]]) -> str:
    """Markdown: one row per (round, path) run and the mesh's added latency per round."""
    lines = [
        "| round | path | qps asked / done | conns | requests | failed "
        "| p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_round: dict[int, dict[str, LoadResult]] = {}
    for round_no, path, result in rows:
        by_round.setdefault(round_no, {})[path] = result
        lines.append(
            f"| {round_no} | {path} | {result.requested_qps:.0f} / {result.actual_qps:.1f} "
            f"| {result.connections} | {result.requests} | {result.failed} "
            f"| {result.p50_ms:.3f} | {result.p90_ms:.3f} | {result.p99_ms:.3f} "
            f"| {result.p999_ms:.3f} | {result.max_ms:.2f} |"
        )
    for round_no, paths in sorted(by_round.items()):
        if "direct" not in paths:
            continue
        d = paths["direct"]
        for path, m in paths.items():
            if path == "direct":
                continue
            lines.append(
                f"| {round_no} | **added** ({path} - direct) | | | | "
                f"| **{m.p50_ms - d.p50_ms:+.3f}** | **{m.p90_ms - d.p90_ms:+.3f}** "
                f"| **{m.p99_ms - d.p99_ms:+.3f}** | {m.p999_ms - d.p999_ms:+.3f} "
                f"| {m.max_ms - d.max_ms:+.2f} |"
            )
    return "\n".join(lines)


def added_latency(rows: Sequence[tuple[int, str, LoadResult]]) -> dict[str, float]:
    """Median over rounds of (mesh - direct) for p50, p90 and p99, in milliseconds."""
    by_round: dict[int, dict[str, LoadResult]] = {}
    for round_no, path, result in rows:
        by_round.setdefault(round_no, {})[path] = result
    pairs = [(p["direct"], p["mesh"]) for p in by_round.values() if {"direct", "mesh"} <= p.keys()]
    if not pairs:
        return {}
    return {
        name: statistics.median(
            getattr(m, f"{name}_ms") - getattr(d, f"{name}_ms") for d, m in pairs
        )
        for name in ("p50", "p90", "p99")
    }


def render_usage(rows: Sequence[tuple[int, SidecarUsage]]) -> str:
    """Markdown: CPU per 1,000 requests/s and memory of each sidecar (agent + Envoy)."""
    lines = [
        "| round | sidecar | CPU s agent + Envoy | vCPU | vCPU per 1k rps "
        "| idle RSS MiB agent + Envoy = total | idle anon MiB agent + Envoy = total "
        "| loaded peak RSS MiB total (anon) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for round_no, usage in rows:
        idle_total = usage.idle["agent"] + usage.idle["envoy"]
        peak_total = usage.loaded_peak["agent"] + usage.loaded_peak["envoy"]
        lines.append(
            f"| {round_no} | {usage.pod} "
            f"| {usage.agent_cpu_s:.2f} + {usage.envoy_cpu_s:.2f} "
            f"| {usage.cores:.3f} | **{usage.cores_per_krps:.3f}** "
            f"| {_mib(usage.idle['agent'].rss_kib)} + {_mib(usage.idle['envoy'].rss_kib)} "
            f"= **{_mib(idle_total.rss_kib)}** "
            f"| {_mib(usage.idle['agent'].anon_kib)} + {_mib(usage.idle['envoy'].anon_kib)} "
            f"= **{_mib(idle_total.anon_kib)}** "
            f"| **{_mib(peak_total.rss_kib)}** ({_mib(peak_total.anon_kib)}) |"
        )
    return "\n".join(lines)


def bare_envoy_config(
    upstream: tuple[str, int], listen_port: int, admin_port: int
) -> dict[str, Any]:
    """The smallest HTTP proxy Envoy can be: one listener, the router, one static upstream.

    The yardstick for one Envoy hop on this machine, without capture, TLS, Istio's filters
    or the agent.
    """
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "bare",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters"
                                        ".network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "bare",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "upstream"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions"
                                                    ".filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": upstream[0],
                                                    "port_value": upstream[1],
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def fortio_load_argv(
    fortio: str, url: str, *, qps: int, connections: int, duration: float, payload: int
) -> list[str]:
    """``fortio load`` at a constant rate; the JSON result on stdout, logs on stderr."""
    argv = [
        fortio,
        "load",
        "-qps",
        str(qps),
        "-c",
        str(connections),
        "-t",
        f"{duration:g}s",
        "-r",
        f"{HISTOGRAM_RESOLUTION_S:g}",
        "-p",
        ",".join(f"{p:g}" for p in PERCENTILES),
        "-json",
        "-",
        "-loglevel",
        "Warning",
    ]
    if payload:
        argv += ["-payload-size", str(payload)]
    return [*argv, url]


# -- edges: processes ------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for pid in procfs.pids():
        with contextlib.suppress(OSError, ValueError):
            children.setdefault(procfs.read_stat(pid).ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


@dataclasses.dataclass
class SidecarProcesses:
    """The live processes of one pod's ``istio-proxy`` container: the agent and its Envoy."""

    pod: str
    root: int
    agent: bool = True  # False: a bare Envoy, every process of the tree must be Envoy

    def roles(self) -> dict[str, list[int]]:
        roles: dict[str, list[int]] = {"agent": [], "envoy": []}
        for pid in process_tree(self.root):
            with contextlib.suppress(OSError):
                comm = procfs.comm(pid)
                roles["envoy" if comm.startswith("envoy") else "agent"].append(pid)
        if roles["agent"] and not self.agent:
            raise RuntimeError(f"{self.pod}: processes other than Envoy: {roles['agent']}")
        if not roles["envoy"]:
            raise RuntimeError(
                f"{self.pod}: no Envoy under the istio-proxy container ({self.root})"
            )
        return roles

    def describe(self) -> str:
        """The processes measured, with Envoy's worker count: what the figures are about."""
        parts = []
        for role, pids in self.roles().items():
            for pid in pids:
                argv = procfs.cmdline(pid) or [""]  # [] once the process is a zombie
                detail = ""
                if role == "envoy" and "--concurrency" in argv:
                    detail = f" --concurrency {argv[argv.index('--concurrency') + 1]}"
                parts.append(f"{role} pid {pid} ({Path(argv[0]).name}{detail})")
        return ", ".join(parts)

    def cpu_seconds(self) -> dict[str, float]:
        ticks = {}
        for role, pids in self.roles().items():
            ticks[role] = sum(procfs.read_stat(pid).cpu_ticks for pid in pids)
        return {role: t / procfs.CLK_TCK for role, t in ticks.items()}

    def memory(self) -> dict[str, Memory]:
        usage = {}
        for role, pids in self.roles().items():
            total = Memory(0, 0)
            for pid in pids:
                total = total + memory_of(procfs.status_kib(pid))
            usage[role] = total
        return usage


class PeakMemory:
    """Samples the sidecars' memory every ``period`` seconds in a thread; keeps the peaks."""

    def __init__(self, sidecars: Sequence[SidecarProcesses], period: float = 0.5) -> None:
        self.sidecars = sidecars
        self.period = period
        self.peaks: dict[str, dict[str, Memory]] = {
            s.pod: {"agent": Memory(0, 0), "envoy": Memory(0, 0)} for s in sidecars
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _sample(self) -> None:
        for sidecar in self.sidecars:
            for role, memory in sidecar.memory().items():
                peak = self.peaks[sidecar.pod][role]
                self.peaks[sidecar.pod][role] = Memory(
                    max(peak.rss_kib, memory.rss_kib), max(peak.anon_kib, memory.anon_kib)
                )

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


def build_fortio() -> str:
    """fortio's path, built on first use from hack/tools/go.mod (about a minute, cached)."""
    script = REPO / "hack" / "tools" / "build.sh"
    result = subprocess.run([str(script), "fortio"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"building fortio failed ({script} fortio):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


# -- edges: the mesh and its pods --------------------------------------------------------------


def _app_security() -> dict[str, Any]:
    return {"runAsUser": APP_UID, "runAsGroup": APP_UID, "allowPrivilegeEscalation": False}


def _pod(name: str, container: dict[str, Any], *, inject: bool) -> dict[str, Any]:
    """A bare Pod of one container as the app's user; opted out of injection when asked."""
    labels = {"app": name}
    if not inject:
        labels["sidecar.istio.io/inject"] = "false"
    container = {**container, "securityContext": _app_security()}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [container]},
    }


def server_pod(name: str, *, inject: bool) -> dict[str, Any]:
    disabled = ("-grpc-port", "-redirect-port", "-tcp-port", "-udp-port")
    return _pod(
        name,
        {
            "name": "fortio",
            "image": f"{FORTIO_IMAGE}:1",
            "args": [
                "server",
                "-http-port",
                str(SERVER_PORT),
                *(arg for flag in disabled for arg in (flag, "disabled")),
                "-loglevel",
                "Warning",
            ],
            "ports": [{"name": "http", "containerPort": SERVER_PORT}],
            "readinessProbe": {"httpGet": {"path": "/", "port": SERVER_PORT}},
        },
        inject=inject,
    )


def client_pod(name: str, *, inject: bool) -> dict[str, Any]:
    return _pod(name, {"name": "client", "image": CLIENT_IMAGE}, inject=inject)


@dataclasses.dataclass
class BenchMesh:
    """The running mesh: test bed, node, the injected namespace, the image -> program map."""

    bed: TestBed
    node: Node
    namespace: str
    images: dict[str, Image]  # image repository -> the local program
    stack: contextlib.ExitStack

    def start_pod(self, spec: Mapping[str, Any]) -> RunningPod:
        """Create ``spec`` through the API server (so the webhook mutates it) and run it.

        The pod is stopped when the mesh is torn down.
        """
        with self.bed.api_client() as api:
            stored = CoreV1Api(api).create_namespaced_pod(self.namespace, dict(spec))
            pod = api.sanitize_for_serialization(stored)
            say(
                f"running pod {spec['metadata']['name']} "
                f"({len(pod['spec']['containers'])} containers, "
                f"{len(pod['spec'].get('initContainers') or [])} init containers)"
            )
            running = run_pod(self.node, pod, api, self.images, ready_timeout=90.0)
        self.stack.callback(running.stop)
        return running


@contextlib.contextmanager
def mesh_environment(log_dir: Path, extra_images: Mapping[str, Image]) -> Iterator[BenchMesh]:
    """Test bed, node, control plane + CA, injector, an injected namespace; torn down after.

    The wiring is the ``mesh`` fixture's of tests/mesh (:func:`harness.mesh.open_mesh`).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        say("starting the test bed (etcd, kube-apiserver, controllers)")
        bed = TestBed.start(binaries=Binaries.locate())
        stack.callback(bed.stop)
        say("starting remora discovery (control plane and mesh CA) and the injection webhook")
        mesh = stack.enter_context(open_mesh(bed, log_dir, prefix="bench"))
        images = {**mesh.images, **extra_images}
        yield BenchMesh(bed, mesh.node, mesh.namespace, images, stack)


def service_for(bed: TestBed, namespace: str, name: str, server: RunningPod) -> str:
    """A selector-less Service ``name`` and its EndpointSlice at ``server``; the ClusterIP."""
    with bed.api_client() as api:
        return service_and_slice(CoreV1Api(api), DiscoveryV1Api(api), namespace, server, name)


@contextlib.contextmanager
def bare_envoy(pod: RunningPod, upstream: tuple[str, int], work: Path) -> Iterator[tuple[str, int]]:
    """The bare Envoy (:func:`bare_envoy_config`), 2 workers, inside ``pod``'s network
    namespace (a pod without sidecar); yields its URL there and its pid (``ip netns exec``
    execs in place). Stopped on exit."""
    listen_port, admin_port = 15999, 15998
    config = work / "bare-envoy.json"
    config.write_text(json.dumps(bare_envoy_config(upstream, listen_port, admin_port)))
    log_path = work / "bare-envoy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                pod.netns,
                str(envoy_path()),
                "-c",
                str(config),
                "--concurrency",
                "2",
                "--disable-hot-restart",
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the bare Envoy exited:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, PodError):
                if pod.http_get(admin_port, "/ready").strip() == "LIVE":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bare Envoy is not ready:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{listen_port}", process.pid
    finally:
        stop_process(process)


def wait_for_mtls_route(client_pod: RunningPod, fortio: str, url: str, namespace: str) -> None:
    """Until the client's Envoy routes ``url`` and the server sees the client's SPIFFE id.

    fortio's ``/debug`` echoes the request headers: the server's Envoy adds
    ``x-forwarded-client-cert`` only for a request that arrived over mTLS.
    """
    expected = f"URI=spiffe://cluster.local/ns/{namespace}/sa/default"
    deadline = time.monotonic() + 60
    last = ""
    while time.monotonic() < deadline:
        answer = client_pod.exec(
            "client", [fortio, "curl", "-loglevel", "Error", f"{url}/debug"], timeout=10
        )
        last = answer.stdout + answer.stderr
        # fortio curl: the status line and headers on stderr, the body on stdout.
        status = [line for line in answer.stderr.splitlines() if line.startswith("HTTP/")]
        if answer.returncode == 0 and status and " 200 " in status[-1]:
            if expected.lower() not in answer.stdout.lower():
                raise RuntimeError(f"the mesh path is not mTLS (no {expected} in):\n{last}")
            return
        time.sleep(0.5)
    raise TimeoutError(f"the client's Envoy never routed {url}:\n{last[-2000:]}")


def run_load(
    client_pod: RunningPod, fortio: str, url: str, args: argparse.Namespace, duration: float
) -> LoadResult:
    argv = fortio_load_argv(
        fortio,
        url,
        qps=args.qps,
        connections=args.connections,
        duration=duration,
        payload=args.payload,
    )
    answer = client_pod.exec("client", argv, timeout=duration + 60)
    if answer.returncode != 0:
        raise RuntimeError(
            f"fortio load exited {answer.returncode} against {url}:\n{answer.stderr[-3000:]}"
        )
    if args.save_json:
        args.save_json.mkdir(parents=True, exist_ok=True)
        saved = args.save_json / f"fortio-{next(_RUNS):02d}-{client_pod.name}-{duration:g}s"
        saved.with_suffix(".json").write_text(answer.stdout)
        saved.with_suffix(".txt").write_text(answer.stderr)  # fortio's own text summary
    return parse_fortio_json(answer.stdout)


def stage_fortio(fortio: str, directory: Path) -> str:
    """A copy the pods' users can run (the tools cache is under root's home)."""
    directory.chmod(0o755)
    staged = directory / "fortio"
    shutil.copy2(fortio, staged)
    staged.chmod(0o755)
    return str(staged)


@dataclasses.dataclass(frozen=True)
class Route:
    """One way from a client pod to a fortio server, and whose CPU its runs account for."""

    name: str
    client: RunningPod  # the pod the load runs in
    url: str
    accounted: tuple[str, ...] = ()  # SidecarProcesses.pod of the proxies on the way


def start_routes(
    stack: contextlib.ExitStack, mesh: BenchMesh, fortio: str, work: Path, *, breakdown: bool
) -> tuple[list[Route], list[SidecarProcesses]]:
    """The four pods, their Services, the routes between them and the proxies to watch."""
    server = mesh.start_pod(server_pod("server", inject=True))
    server_direct = mesh.start_pod(server_pod("server-direct", inject=False))
    cluster_ip = service_for(mesh.bed, mesh.namespace, "fortio", server)
    direct_ip = service_for(mesh.bed, mesh.namespace, "fortio-direct", server_direct)
    client = mesh.start_pod(client_pod("client", inject=True))
    client_direct = mesh.start_pod(client_pod("client-direct", inject=False))
    for pod, meshed in (
        (server, True),
        (client, True),
        (server_direct, False),
        (client_direct, False),
    ):
        if ("istio-proxy" in pod.containers) != meshed:
            raise RuntimeError(f"{pod.name}: injected={not meshed}, expected {meshed}")
    mesh_url = f"http://{cluster_ip}:{SERVICE_PORT}"
    say(f"waiting for the mesh route to {mesh_url} (mTLS)")
    wait_for_mtls_route(client, fortio, mesh_url, mesh.namespace)
    sidecars = [
        SidecarProcesses(pod.name, pod.containers["istio-proxy"].process.pid)
        for pod in (client, server)
    ]
    routes = [
        Route("direct", client_direct, f"http://{server_direct.ip}:{SERVER_PORT}/echo"),
        Route("mesh", client, f"{mesh_url}/echo", accounted=("client", "server")),
    ]
    if breakdown:
        # One sidecar at a time: the server's inbound only (plaintext, permissive), and the
        # client's outbound only (to a pod without sidecar: plaintext).
        routes.append(
            Route("server-sidecar", client_direct, f"http://{server.ip}:{SERVER_PORT}/echo")
        )
        routes.append(Route("client-sidecar", client, f"http://{direct_ip}:{SERVICE_PORT}/echo"))
        # One bare Envoy hop, in the direct client's pod: what any Envoy costs here.
        url, pid = stack.enter_context(
            bare_envoy(client_direct, (server_direct.ip, SERVER_PORT), work)
        )
        bare = SidecarProcesses("bare Envoy (no agent)", pid, agent=False)
        sidecars.append(bare)
        routes.append(Route("bare-envoy", client_direct, f"{url}/echo", accounted=(bare.pod,)))
    return routes, sidecars


def measured_run(
    route: Route,
    round_no: int,
    *,
    sidecars: Sequence[SidecarProcesses],
    idle_memory: Mapping[str, dict[str, Memory]],
    fortio: str,
    args: argparse.Namespace,
) -> tuple[LoadResult, list[SidecarUsage]]:
    """A warm-up, then one measured fortio run on ``route`` with its proxies' CPU and memory."""
    if args.warmup:
        say(f"round {round_no}: {route.name} warm-up {args.warmup:g}s")
        run_load(route.client, fortio, route.url, args, args.warmup)
    say(
        f"round {round_no}: {route.name} {args.qps} qps, {args.connections} connections, "
        f"{args.duration:g}s -> {route.url} (load {procfs.load_average()})"
    )
    watched = [s for s in sidecars if s.pod in route.accounted]
    cpu_before = {s.pod: s.cpu_seconds() for s in watched}
    started = time.monotonic()
    with PeakMemory(watched) as peaks:
        result = run_load(route.client, fortio, route.url, args, args.duration)
    wall = time.monotonic() - started
    usage = []
    for s in watched:
        cpu = s.cpu_seconds()
        usage.append(
            SidecarUsage(
                pod=s.pod,
                agent_cpu_s=cpu["agent"] - cpu_before[s.pod]["agent"],
                envoy_cpu_s=cpu["envoy"] - cpu_before[s.pod]["envoy"],
                wall_s=wall,
                requests=result.requests,
                idle=idle_memory[s.pod],
                loaded_peak=peaks.peaks[s.pod],
            )
        )
    say(
        f"round {round_no}: {route.name} p50 {result.p50_ms:.3f} p90 {result.p90_ms:.3f} "
        f"p99 {result.p99_ms:.3f} ms, {result.failed} failed, {result.actual_qps:.1f} qps"
    )
    return result, usage


def measure(args: argparse.Namespace) -> int:
    say(f"load average before: {procfs.load_average()}")
    fortio = build_fortio()
    latency_rows: list[tuple[int, str, LoadResult]] = []
    usage_rows: list[tuple[int, SidecarUsage]] = []
    loads = [procfs.load_average()]
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="remora-bench-mesh-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        fortio = stage_fortio(fortio, work)
        fortio_image = Image(entrypoint=(fortio,), cmd=("server",))
        mesh = stack.enter_context(mesh_environment(work / "logs", {FORTIO_IMAGE: fortio_image}))
        routes, sidecars = start_routes(stack, mesh, fortio, work, breakdown=args.breakdown)
        for sidecar in sidecars:
            say(f"{sidecar.pod}: {sidecar.describe()}")
        say(f"settling {args.settle:g}s with no traffic, then idle memory")
        before_idle = {s.pod: sum(s.cpu_seconds().values()) for s in sidecars}
        time.sleep(args.settle)
        idle_memory = {s.pod: s.memory() for s in sidecars}
        idle_mcpu = {
            s.pod: (sum(s.cpu_seconds().values()) - before_idle[s.pod]) / args.settle * 1000
            for s in sidecars
        }
        for round_no in range(1, args.rounds + 1):
            for route in routes:
                result, usage = measured_run(
                    route,
                    round_no,
                    sidecars=sidecars,
                    idle_memory=idle_memory,
                    fortio=fortio,
                    args=args,
                )
                latency_rows.append((round_no, route.name, result))
                usage_rows.extend((round_no, u) for u in usage)
                loads.append(procfs.load_average())
        say(f"load average after: {procfs.load_average()}")

    print(
        f"\nfortio {args.qps} qps, {args.connections} connections, {args.duration:g}s per run, "
        f"{args.payload} B payload, {args.rounds} round(s); load average (1/5/15 min) "
        f"before/between runs/after: {' | '.join(loads)}\n"
    )
    print(render_latency(latency_rows))
    print()
    print(render_usage(usage_rows))
    idle_text = ", ".join(f"{pod} {mcpu:.1f} mCPU" for pod, mcpu in idle_mcpu.items())
    print(f"\nidle CPU over {args.settle:g}s with no traffic: {idle_text}")
    for name, added in added_latency(latency_rows).items():
        print(f"added {name} (mesh - direct), median of {args.rounds} round(s): {added:+.3f} ms")
    failed = sum(r.failed for _, _, r in latency_rows)
    if failed:
        print(f"{failed} requests failed: the figures are not valid", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--qps", type=int, default=1000, help="constant request rate (default 1000)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="client connections, as Istio's benchmark (default 4)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds per measured run (default 30, at most 600)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="direct + mesh runs, alternated (default 1, at most 10)",
    )
    parser.add_argument(
        "--payload",
        type=int,
        default=1024,
        help="bytes POSTed and echoed per request; 0 = GET (default 1024)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of discarded load before each run (default 2)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds with no traffic before idle figures (default 5)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also measure each sidecar alone (server inbound only, client outbound only) "
        "and one bare Envoy hop (minimal static config, no capture, no TLS)",
    )
    parser.add_argument(
        "--save-json",
        type=Path,
        default=None,
        help="directory to keep every run's fortio JSON result and text summary in",
    )
    args = parser.parse_args(argv)
    if not (1 <= args.qps <= 20000 and 1 <= args.connections <= 256):
        parser.error("--qps must be 1..20000 and --connections 1..256")
    if not (0 < args.duration <= 600 and 1 <= args.rounds <= 10 and 0 <= args.warmup <= 60):
        parser.error("--duration must be 0..600 s, --rounds 1..10, --warmup 0..60 s")
    if not (0 <= args.payload <= 1 << 20 and 0 < args.settle <= 120):
        parser.error("--payload must be 0..1048576 bytes and --settle 0..120 s")
    if os.geteuid() != 0:
        parser.error("run as root: the pods are network namespaces")
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
