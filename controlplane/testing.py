"""Run the control plane and real Envoys side by side on loopback: for tests, benchmarks, demos.

:class:`ControlPlaneThread` runs a :class:`DiscoveryServer` on its own event loop in a
thread, so synchronous test code can change the model and poll Envoy. :class:`EnvoyProcess`
starts Envoy with a sidecar-like bootstrap (Istio's node id shape and the node metadata
keys the control plane reads, see :mod:`controlplane.proxy`), ADS to the control plane,
and admin on a free loopback port. Always stop what you start (use them as context
managers): an Envoy left behind keeps its ports.

:func:`service_object` and :func:`endpoint_slice_object` build the Kubernetes objects the
sources feed the store, as plain dicts in the API's shape, so that tests and benches write
only what their case is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from controlplane.app import DiscoveryOptions, DiscoveryServer
from controlplane.store import MeshStore
from controlplane.testing_sds import shared_sds
from meshlib.envoy_binary import envoy_path
from meshlib.ports import free_port
from meshlib.processes import stop_process

T = TypeVar("T")


def sidecar_bootstrap(
    *,
    pod: str,
    namespace: str,
    ip: str,
    xds_port: int,
    admin_port: int,
    delta: bool = True,
    service_account: str = "default",
    extra_metadata: dict[str, Any] | None = None,
    reconnect_backoff: tuple[float, float] | None = None,
    sds_cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A minimal sidecar bootstrap: ADS over plaintext gRPC on loopback, admin on loopback.

    ``sds_cluster`` is the static ``sds-grpc`` cluster the generated TLS contexts fetch
    their certificates from (:mod:`controlplane.testing_sds`), as a sidecar's bootstrap has.

    ``reconnect_backoff`` (base, max seconds) shortens Envoy's xDS reconnect backoff
    (0.5 s base, 30 s max, jittered, by default), for tests that restart the control plane.
    """
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "xds-grpc"}}
    if reconnect_backoff is not None:
        base, most = reconnect_backoff
        grpc_service["retry_policy"] = {
            "retry_back_off": {"base_interval": f"{base}s", "max_interval": f"{most}s"}
        }
    return {
        "node": {
            "id": f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
            "cluster": f"{pod}.{namespace}",
            "metadata": {
                "NAME": pod,
                "NAMESPACE": namespace,
                "INSTANCE_IPS": ip,
                "SERVICE_ACCOUNT": service_account,
                **(extra_metadata or {}),
            },
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [grpc_service],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                },
                *([sds_cluster] if sds_cluster is not None else []),
            ]
        },
    }


class EnvoyProcess:
    """A real Envoy on loopback; stopped (killed if need be) on exit."""

    def __init__(
        self,
        pod: str,
        namespace: str,
        ip: str,
        xds_port: int,
        *,
        delta: bool = True,
        extra_args: tuple[str, ...] = (),
        bootstrap_overrides: dict[str, Any] | None = None,
        reconnect_backoff: tuple[float, float] | None = None,
    ) -> None:
        self.admin_port = free_port()
        self.bootstrap = sidecar_bootstrap(
            pod=pod,
            namespace=namespace,
            ip=ip,
            xds_port=xds_port,
            admin_port=self.admin_port,
            delta=delta,
            reconnect_backoff=reconnect_backoff,
            sds_cluster=shared_sds().cluster(),
        )
        self.bootstrap.update(bootstrap_overrides or {})
        self.node_id = self.bootstrap["node"]["id"]
        self._dir = tempfile.TemporaryDirectory(prefix="remora-envoy-")
        self.log_path = Path(self._dir.name) / "envoy.log"
        config = Path(self._dir.name) / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap))
        self.process = subprocess.Popen(
            [
                str(envoy_path()),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--drain-time-s",
                "1",
                "-l",
                "warning",
                "--log-path",
                str(self.log_path),
                *extra_args,
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


def wait_for(
    condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what or condition}"
        + (f": {last_error}" if last_error else "")
    )


class ControlPlaneThread:
    """A :class:`DiscoveryServer` on its own loop in a thread, fed by the caller."""

    def __init__(
        self,
        options: DiscoveryOptions | None = None,
        synced: bool = True,
        store: MeshStore | None = None,
        source_name: str = "test",
    ) -> None:
        self.options = options or DiscoveryOptions(
            xds_address="127.0.0.1:0", monitoring_address=None
        )
        self.store = store or MeshStore()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="controlplane", daemon=True
        )
        self._thread.start()
        self.server = self.call(lambda: DiscoveryServer(self.store, self.options, source_name))
        self._run(self.server.start())
        if synced:
            self.call(self.server.mark_synced)

    @property
    def xds_port(self) -> int:
        return self.server.xds_port

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the control plane's loop (the store is not thread-safe) and return its result."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.server.stop(grace=0.2))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ControlPlaneThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def envoys(
    count: int, xds_port: int, delta: bool = True, namespace: str = "default"
) -> Iterator[list[EnvoyProcess]]:
    """``count`` Envoys named ``client-<i>`` with IPs ``10.200.<i/250>.<i%250+1>``."""
    started: list[EnvoyProcess] = []
    try:
        for i in range(count):
            ip = f"10.200.{i // 250}.{i % 250 + 1}"
            started.append(EnvoyProcess(f"client-{i}", namespace, ip, xds_port, delta=delta))
        yield started
    finally:
        for envoy in started:
            envoy.stop()


SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service."""


def service_object(
    name: str,
    namespace: str,
    cluster_ip: str | None,
    ports: Mapping[str, int],
    *,
    target_ports: Mapping[str, int] | None = None,
    selector: Mapping[str, str] | None = None,
    external_name: str | None = None,
    with_api_version: bool = False,
) -> dict[str, Any]:
    """A Service as the API returns it: ``ports`` maps each port's name to its number.

    The builder writes only what it is given, so an object is exactly what the test asked
    for: ``cluster_ip`` ``None`` leaves ``clusterIP`` out (``"None"`` is headless);
    ``target_ports`` sets ``targetPort`` on the ports it names; ``external_name`` makes an
    ExternalName service; ``with_api_version`` adds ``apiVersion``, which files read by the
    file source and objects sent to the API server need and the store does not.
    """
    spec: dict[str, Any] = {}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if selector is not None:
        spec["selector"] = dict(selector)
    if external_name is not None:
        spec.update(type="ExternalName", externalName=external_name)
    targets = target_ports or {}
    spec["ports"] = [
        {
            "name": port_name,
            "port": port,
            **({"targetPort": targets[port_name]} if port_name in targets else {}),
        }
        for port_name, port in ports.items()
    ]
    return {
        **({"apiVersion": "v1"} if with_api_version else {}),
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint_slice_object(
    service: str,
    namespace: str,
    ports: Mapping[str, int],
    addresses: Sequence[str],
    *,
    name: str | None = None,
    ready: bool | None = None,
    address_type: str | None = None,
    protocol: str | None = None,
    zones: Mapping[str, str] | None = None,
    pods: Mapping[str, str] | None = None,
    with_api_version: bool = False,
) -> dict[str, Any]:
    """An EndpointSlice of ``service``: one endpoint per address, ``ports`` name -> number.

    Like :func:`service_object` it writes only what it is given, and what it leaves out
    Kubernetes (and :mod:`controlplane.convert`) reads by its default: ``name`` defaults to
    the service's name; ``ready`` ``None`` writes no ``conditions`` (read as ready, serving,
    not terminating); ``address_type`` ``None`` writes no ``addressType`` (read as IPv4);
    ``protocol`` sets every port's protocol. ``zones`` and ``pods`` map an address to its
    endpoint's ``zone`` and to the Pod its ``targetRef`` names. Endpoints in other states
    than ready or not are a case for a literal the test spells out.
    """
    zone_of, pod_of = zones or {}, pods or {}

    def endpoint(address: str) -> dict[str, Any]:
        built: dict[str, Any] = {"addresses": [address]}
        if ready is not None:
            built["conditions"] = {"ready": ready}
        if address in zone_of:
            built["zone"] = zone_of[address]
        if address in pod_of:
            built["targetRef"] = {"kind": "Pod", "name": pod_of[address]}
        return built

    return {
        **({"apiVersion": "discovery.k8s.io/v1"} if with_api_version else {}),
        "kind": "EndpointSlice",
        "metadata": {
            "name": service if name is None else name,
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: service},
        },
        **({"addressType": address_type} if address_type is not None else {}),
        "ports": [
            {
                "name": port_name,
                "port": port,
                **({"protocol": protocol} if protocol is not None else {}),
            }
            for port_name, port in ports.items()
        ],
        "endpoints": [endpoint(address) for address in addresses],
    }
