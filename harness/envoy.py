"""A real Envoy on loopback, started as the sidecar agent starts it, for tests and benches.

:class:`EnvoyProcess` runs Envoy with the product's own bootstrap and command line
(:mod:`sidecar.bootstrap`, from the agent's decisions for a pod on loopback:
:func:`loopback_sidecar`): ADS in plaintext to a control plane on this machine, every port a
free one on ``127.0.0.1``, workload certificates from the harness's SDS server
(:mod:`harness.sds`). What a test needs differently is said where it is changed: every stat
exists from the start (:data:`PRODUCT_STATS_SETTINGS`, unless ``product_stats``), a short
xDS reconnect backoff for tests that restart the control plane, Envoy's log in a file. Always
stop what you start (use it as a context manager): an Envoy left behind keeps its ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from harness.sds import shared_sds
from meshlib.envoy_binary import envoy_path
from meshlib.ports import free_port
from meshlib.processes import stop_process
from sidecar.bootstrap import build_bootstrap, envoy_args
from sidecar.config import AgentConfig, AgentOptions, build_config

PRODUCT_STATS_SETTINGS = ("stats_config", "deferred_stat_options")
"""The product bootstrap's stats inclusion list and deferred stat creation. A harness Envoy
leaves them out unless asked (``product_stats``): a test reads stats the inclusion list drops,
and counts a cluster's traffic stats before its first request."""


def loopback_sidecar(
    pod: str,
    namespace: str,
    ip: str,
    xds_port: int,
    *,
    workdir: str,
    delta: bool = True,
    concurrency: int = 1,
    drain_duration_s: float | None = None,
) -> AgentConfig:
    """The agent's decisions for ``pod`` with Envoy on loopback: plaintext xDS to
    ``xds_port``, every port a free one, certificates from the harness's SDS server (the
    agent's role: the inbound listener's TLS chains wait for them). ``drain_duration_s``
    None is the agent's default."""
    options = AgentOptions(
        discovery_address=f"127.0.0.1:{xds_port}",
        xds_tls=False,
        xds_api="DELTA_GRPC" if delta else "GRPC",
        admin_port=free_port(),
        status_port=free_port(),
        health_port=free_port(),
        prometheus_port=free_port(),
        bind_address="127.0.0.1",
        concurrency=concurrency,
        config_dir=workdir,
        sds_socket=str(shared_sds().socket_path),
        drain_duration_s=drain_duration_s,
    )
    env = {"POD_NAME": pod, "POD_NAMESPACE": namespace, "INSTANCE_IP": ip}
    return build_config(env, options, host_cpus=os.cpu_count() or 1)


def with_reconnect_backoff(
    bootstrap: dict[str, Any], base_s: float, max_s: float
) -> dict[str, Any]:
    """``bootstrap`` with Envoy's xDS reconnect backoff (0.5 s base, 30 s max, jittered, by
    default) shortened, for tests that restart the control plane."""
    ads = bootstrap["dynamic_resources"]["ads_config"]
    ads["grpc_services"] = [
        {
            **service,
            "retry_policy": {
                "retry_back_off": {"base_interval": f"{base_s}s", "max_interval": f"{max_s}s"}
            },
        }
        for service in ads["grpc_services"]
    ]
    return bootstrap


class EnvoyProcess:
    """A real Envoy on loopback with a sidecar's bootstrap; stopped (killed if need be) on exit.

    ``bootstrap_overrides`` replaces whole top-level sections of the bootstrap (a test that
    gives Envoy static listeners and clusters replaces ``static_resources``);
    ``reconnect_backoff`` is (base, max) seconds (:func:`with_reconnect_backoff`).
    """

    def __init__(
        self,
        pod: str,
        namespace: str,
        ip: str,
        xds_port: int,
        *,
        delta: bool = True,
        bootstrap_overrides: dict[str, Any] | None = None,
        reconnect_backoff: tuple[float, float] | None = None,
        product_stats: bool = False,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="remora-envoy-")
        # A 1 s drain: a listener the control plane replaces is gone at once, as tests expect.
        config = loopback_sidecar(
            pod, namespace, ip, xds_port, workdir=self._dir.name, delta=delta, drain_duration_s=1.0
        )
        self.admin_port = config.ports.admin
        bootstrap = build_bootstrap(config)
        if not product_stats:
            for key in PRODUCT_STATS_SETTINGS:
                bootstrap.pop(key, None)
        if reconnect_backoff is not None:
            bootstrap = with_reconnect_backoff(bootstrap, *reconnect_backoff)
        bootstrap.update(bootstrap_overrides or {})
        self.bootstrap = bootstrap
        self.node_id: str = bootstrap["node"]["id"]
        self.log_path = Path(self._dir.name) / "envoy.log"
        bootstrap_path = Path(self._dir.name) / "envoy-rev.json"
        bootstrap_path.write_text(json.dumps(bootstrap))
        self.process = subprocess.Popen(
            [
                str(envoy_path()),
                *envoy_args(config, str(bootstrap_path)),
                *("--log-path", str(self.log_path)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.admin = httpx.Client(base_url=f"http://127.0.0.1:{self.admin_port}", timeout=5.0)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        stop_process(self.process)
        self.admin.close()
        self._dir.cleanup()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def get(self, path: str) -> httpx.Response:
        if self.process.poll() is not None:
            raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log()}")
        return self.admin.get(path)

    def config_dump(self, resource: str) -> list[dict[str, Any]]:
        """``/config_dump?resource=...`` entries, e.g. ``dynamic_active_clusters``."""
        response = self.get(f"/config_dump?resource={resource}&include_eds")
        response.raise_for_status()
        return list(response.json().get("configs", []))

    def active_clusters(self) -> dict[str, dict[str, Any]]:
        return {c["cluster"]["name"]: c for c in self.config_dump("dynamic_active_clusters")}

    def endpoints(self) -> dict[str, list[str]]:
        """Cluster name -> sorted ``ip:port (HEALTH)`` of each EDS endpoint Envoy holds."""
        out: dict[str, list[str]] = {}
        for cla in self.config_dump("dynamic_endpoint_configs"):
            config = cla.get("endpoint_config", {})
            hosts = []
            for group in config.get("endpoints", []):
                for lb in group.get("lb_endpoints", []):
                    sa = lb["endpoint"]["address"]["socket_address"]
                    hosts.append(
                        f"{sa['address']}:{sa['port_value']} ({lb.get('health_status', 'UNKNOWN')})"
                    )
            out[config.get("cluster_name", "")] = sorted(hosts)
        return out

    def listener_names(self) -> set[str]:
        return {
            entry["name"]
            for entry in self.config_dump("dynamic_listeners")
            if "active_state" in entry
        }

    def route_configs(self) -> dict[str, dict[str, Any]]:
        return {
            r["route_config"]["name"]: r["route_config"]
            for r in self.config_dump("dynamic_route_configs")
        }

    def stat(self, name: str) -> int:
        response = self.get(f"/stats?filter=^{name}$&format=json")
        for entry in response.json().get("stats", []):
            if entry.get("name") == name:
                return int(entry.get("value", 0))
        return 0
