"""Everything the agent needs to know, decided once at start-up from the pod's env and flags.

The injector passes the pod's identity and settings as environment variables, exactly as
Istio's template does (``POD_NAME``, ``PROXY_CONFIG``, ``ISTIO_META_*``...); flags override
them for local runs and tests. :func:`build_config` is pure (env, flags, CPU count and pod
labels in; a frozen :class:`AgentConfig` out) so that every decision is testable without a
pod, and every bad value fails here with a message that says what to set.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshlib.meshconfig import MeshConfigError, ProxyConfig, parse_proxy_config
from meshlib.spiffe import WorkloadIdentity
from meshlib.syntax import SyntaxProblem, parse_bool, parse_duration, parse_port, split_list
from sidecar.errors import ConfigError
from sidecar.node import metadata_from_env, node_id, service_cluster
from sidecar.probes import PROBERS_ENV, AppProbe, parse_app_probers
from sidecar.promtext import AppScrape, parse_scrape_annotations
from sidecar.stats import StatsInclusion, stats_inclusion

PLAINTEXT_XDS_PORT = 15010  # Istio's plaintext discovery port; anything else means TLS
DEFAULT_CONCURRENCY = 2  # Istio's default when neither ProxyConfig nor a CPU limit says


@dataclass(frozen=True)
class Ports:
    """The agent's and Envoy's well-known ports (Istio's defaults)."""

    admin: int = 15000  # Envoy admin, loopback only
    status: int = 15020  # agent: app probes, merged metrics, /quitquitquit, /drain
    health: int = 15021  # Envoy listener -> agent /healthz/ready (the proxy's own probe)
    prometheus: int = 15090  # Envoy listener -> admin /stats/prometheus


@dataclass(frozen=True)
class XdsUpstream:
    """Where Envoy gets its configuration (ADS) and how it trusts it."""

    host: str
    port: int
    tls: bool
    root_cert_path: str  # the mesh root the control plane's certificate must chain to
    server_name: str  # SNI and the DNS SAN expected on the control plane's certificate
    api: Literal["DELTA_GRPC", "GRPC"] = "DELTA_GRPC"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AgentOptions:
    """Command-line overrides; ``None`` means "take it from the environment or the default"."""

    discovery_address: str | None = None
    xds_tls: bool | None = None
    xds_root_cert: str = "/var/run/secrets/istio/root-cert.pem"
    xds_server_name: str | None = None
    xds_api: Literal["DELTA_GRPC", "GRPC"] = "DELTA_GRPC"
    admin_port: int | None = None
    status_port: int | None = None
    health_port: int | None = None
    prometheus_port: int | None = None
    bind_address: str | None = None
    concurrency: int | None = None
    cluster_domain: str | None = None
    config_dir: str = "/etc/istio/proxy"  # the injector's istio-envoy emptyDir
    sds_socket: str | None = None
    proxy_log_level: str = "warning"
    component_log_level: str = "misc:error"
    log_json: bool = False  # Envoy logs JSON lines like the agent's
    drain_duration_s: float | None = None
    termination_drain_duration_s: float | None = None
    minimum_drain_duration_s: float | None = None
    drain_poll_interval_s: float = 1.0
    workload_certificates: bool = True  # a certificate provider serves SDS "default"
    bootstrap_override: Mapping[str, Any] | None = None  # ISTIO_BOOTSTRAP_OVERRIDE, parsed


@dataclass(frozen=True)
class AgentConfig:
    pod_name: str
    namespace: str
    instance_ips: tuple[str, ...]
    service_account: str
    trust_domain: str
    cluster_domain: str
    node_id: str
    node_cluster: str
    node_metadata: Mapping[str, Any]
    proxy_config: ProxyConfig
    xds: XdsUpstream
    ports: Ports
    bind_address: str
    concurrency: int
    config_dir: str
    sds_socket: str
    proxy_log_level: str
    component_log_level: str
    log_json: bool
    drain_duration_s: float  # Envoy's --drain-time-s: how long a drained listener lives
    termination_drain_duration_s: float  # upper bound of the SIGTERM drain
    minimum_drain_duration_s: float  # never quit earlier: endpoints need time to update
    exit_on_zero_active_connections: bool
    drain_poll_interval_s: float
    workload_certificates: bool = True
    bootstrap_override: Mapping[str, Any] | None = None
    probers: Mapping[str, AppProbe] = field(default_factory=dict)
    probe_via_localhost: bool = False
    app_scrape: AppScrape | None = None
    stats: StatsInclusion | None = None  # Envoy's stats inclusion list; None: every stat

    @property
    def spiffe_id(self) -> str:
        return WorkloadIdentity(self.namespace, self.service_account).spiffe_id(self.trust_domain)

    @property
    def ipv6(self) -> bool:
        """Whether the proxy's own listeners are IPv6 (``::``, ``::1``...)."""
        return ":" in self.bind_address

    @property
    def loopback(self) -> str:
        """The pod-local address of the family the proxy listens on (admin, app metrics)."""
        return "::1" if self.ipv6 else "127.0.0.1"

    @property
    def probe_host(self) -> str:
        """Where rewritten probes go when they name no host: the pod IP, like the kubelet."""
        if self.probe_via_localhost or not self.instance_ips:
            return "127.0.0.1"
        return self.instance_ips[0]


def build_config(
    env: Mapping[str, str],
    options: AgentOptions,
    *,
    host_cpus: int,
    pod_labels: Mapping[str, str] | None = None,
    pod_annotations: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Decide every setting of the agent; raise :class:`ConfigError` on anything unusable.

    ``pod_labels``/``pod_annotations`` come from the downward-API files the injector mounts
    (``/etc/istio/pod/labels`` and ``annotations``); they go into the node metadata.
    """
    pod = _pod(env)
    raw_proxy_config, proxy_config = _proxy_config(env)
    xds = _xds_upstream(options, proxy_config)
    ports = _ports(options, proxy_config)
    drain = _drain(env, options, proxy_config)
    exit_on_zero = _bool_env(env, "EXIT_ON_ZERO_ACTIVE_CONNECTIONS", True)
    from_env = metadata_from_env(env)
    labels = dict(pod_labels or {}) or _labels_from_metadata(from_env)
    cluster_domain = options.cluster_domain or "cluster.local"
    return AgentConfig(
        pod_name=pod.name,
        namespace=pod.namespace,
        instance_ips=pod.instance_ips,
        service_account=pod.service_account,
        trust_domain=pod.trust_domain,
        cluster_domain=cluster_domain,
        node_id=node_id(
            instance_ip=pod.instance_ips[0],
            pod_name=pod.name,
            namespace=pod.namespace,
            cluster_domain=cluster_domain,
        ),
        node_cluster=service_cluster(
            labels, str(from_env.get("WORKLOAD_NAME") or pod.name), pod.namespace
        ),
        node_metadata=_node_metadata(
            from_env,
            pod,
            labels=labels,
            annotations=pod_annotations or {},
            xds=xds,
            ports=ports,
            raw_proxy_config=raw_proxy_config,
        ),
        proxy_config=proxy_config,
        xds=xds,
        ports=ports,
        bind_address=options.bind_address or _wildcard_address(pod.instance_ips),
        concurrency=concurrency_for(
            flag=options.concurrency,
            proxy_config=proxy_config,
            cpu_limit=env.get("ISTIO_CPU_LIMIT"),
            host_cpus=host_cpus,
        ),
        config_dir=options.config_dir,
        sds_socket=options.sds_socket or f"{options.config_dir.rstrip('/')}/SDS",
        proxy_log_level=options.proxy_log_level,
        component_log_level=options.component_log_level,
        log_json=options.log_json,
        drain_duration_s=drain.duration_s,
        termination_drain_duration_s=drain.termination_s,
        minimum_drain_duration_s=drain.minimum_s,
        exit_on_zero_active_connections=exit_on_zero,
        drain_poll_interval_s=options.drain_poll_interval_s,
        workload_certificates=options.workload_certificates,
        bootstrap_override=options.bootstrap_override,
        probers=parse_app_probers(env.get(PROBERS_ENV)),
        probe_via_localhost=_bool_env(env, "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", False),
        app_scrape=parse_scrape_annotations(env.get("ISTIO_PROMETHEUS_ANNOTATIONS")),
        stats=stats_inclusion(
            annotations=pod_annotations or {},
            proxy_stats_matcher=proxy_config.extra.get("proxyStatsMatcher"),
            pod_ips=pod.instance_ips,
            drain_on_zero_connections=exit_on_zero,
        ),
    )


# --- who the pod is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pod:
    """The pod's identity, from the variables the injector fills from the downward API."""

    name: str
    namespace: str
    instance_ips: tuple[str, ...]
    service_account: str
    trust_domain: str
    host_ip: str


def _pod(env: Mapping[str, str]) -> _Pod:
    hint = "the injector sets it from the pod (set it by hand for a local run)"
    return _Pod(
        name=_require(env, "POD_NAME", hint),
        namespace=_require(env, "POD_NAMESPACE", hint),
        instance_ips=_instance_ips(env),
        service_account=env.get("SERVICE_ACCOUNT", "").strip() or "default",
        trust_domain=env.get("TRUST_DOMAIN", "").strip() or "cluster.local",
        host_ip=env.get("HOST_IP", ""),
    )


def _require(env: Mapping[str, str], name: str, hint: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: {hint}")
    return value


def _instance_ips(env: Mapping[str, str]) -> tuple[str, ...]:
    """``INSTANCE_IP`` (the pod IP; a comma list is taken too, first one first); loopback
    for a local run."""
    raw = env.get("INSTANCE_IP", "")
    ips = []
    for ip in split_list(raw) or ["127.0.0.1"]:
        try:
            ips.append(str(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise ConfigError(f"INSTANCE_IP={raw.strip()!r}: {ip!r} is not an IP address") from exc
    return tuple(ips)


def _labels_from_metadata(from_env: Mapping[str, Any]) -> dict[str, str]:
    """Without the downward-API labels file, the labels Istio's template also passes as
    ``ISTIO_METAJSON_LABELS``."""
    labels = from_env.get("LABELS")
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


def _node_metadata(
    from_env: Mapping[str, Any],
    pod: _Pod,
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    xds: XdsUpstream,
    ports: Ports,
    raw_proxy_config: Mapping[str, Any],
) -> dict[str, Any]:
    """Envoy's node metadata: the pod's ``ISTIO_META_*`` first, then the agent's own keys.

    The agent's keys win: a pod cannot claim another pod's name.
    """
    meta = dict(from_env)
    meta.update(
        {
            "NAME": pod.name,
            "NAMESPACE": pod.namespace,
            "INSTANCE_IPS": ",".join(pod.instance_ips),
            "SERVICE_ACCOUNT": pod.service_account,
            "LABELS": dict(labels),
            "MESH_ID": str(from_env.get("MESH_ID") or pod.trust_domain),
            "CLUSTER_ID": str(from_env.get("CLUSTER_ID") or "Kubernetes"),
            "ENVOY_STATUS_PORT": ports.health,
            "ENVOY_PROMETHEUS_PORT": ports.prometheus,
            "PILOT_SAN": [xds.server_name] if xds.tls else [],
            "PROXY_CONFIG": raw_proxy_config,
        }
    )
    if annotations:
        meta["ANNOTATIONS"] = dict(annotations)
    if pod.host_ip:
        meta["HOST_IP"] = pod.host_ip
    return meta


# --- where Envoy and the agent listen and connect ---------------------------------------------


def _wildcard_address(instance_ips: tuple[str, ...]) -> str:
    """``::`` for an IPv6-only pod, else ``0.0.0.0``: the status, health and stats ports."""
    ipv6_only = all(ipaddress.ip_address(ip).version == 6 for ip in instance_ips)
    return "::" if ipv6_only else "0.0.0.0"


def _xds_upstream(options: AgentOptions, proxy_config: ProxyConfig) -> XdsUpstream:
    discovery = options.discovery_address or proxy_config.discovery_address
    host, port = split_host_port(discovery, "discovery address")
    return XdsUpstream(
        host=host,
        port=port,
        tls=options.xds_tls if options.xds_tls is not None else port != PLAINTEXT_XDS_PORT,
        root_cert_path=options.xds_root_cert,
        server_name=options.xds_server_name or host,
        api=options.xds_api,
    )


def _ports(options: AgentOptions, proxy_config: ProxyConfig) -> Ports:
    ports = Ports(
        admin=options.admin_port or proxy_config.proxy_admin_port,
        status=options.status_port or proxy_config.status_port,
        health=options.health_port or Ports.health,
        prometheus=options.prometheus_port or Ports.prometheus,
    )
    used: dict[int, str] = {}
    for name, value in vars(ports).items():
        if not 1 <= value <= 65535:
            raise ConfigError(f"{name} port {value} is outside 1-65535")
        if value in used:
            raise ConfigError(
                f"the {name} and {used[value]} ports are both {value}: pick distinct ports"
            )
        used[value] = name
    return ports


def split_host_port(address: str, where: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), with an error that shows the format."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ConfigError(
            f"{where}: {address!r} is not host:port (e.g. istiod.istio-system.svc:15012)"
        )
    try:
        port = parse_port(port_text)
    except SyntaxProblem as exc:
        raise ConfigError(f"{where}: {address!r} has a bad port: {exc}") from None
    return host.strip("[]"), port


# --- how Envoy runs: ProxyConfig, worker threads, draining ------------------------------------


def _proxy_config(env: Mapping[str, str]) -> tuple[dict[str, Any], ProxyConfig]:
    """``PROXY_CONFIG`` as given (for the node metadata) and parsed, with Istio's defaults."""
    try:
        raw = json.loads(env.get("PROXY_CONFIG") or "{}")
        return (raw if isinstance(raw, dict) else {}), parse_proxy_config(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"PROXY_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    except MeshConfigError as exc:
        raise ConfigError(f"PROXY_CONFIG: {exc}") from exc


def concurrency_for(
    *, flag: int | None, proxy_config: ProxyConfig, cpu_limit: str | None, host_cpus: int
) -> int:
    """Envoy worker threads: the flag, else ProxyConfig, else the CPU limit, else 2.

    ProxyConfig ``concurrency: 0`` means "one per host CPU". The CPU limit (``ISTIO_CPU_LIMIT``,
    whole cores rounded up by the downward API) is capped at the host's CPUs, because more
    workers than cores only adds context switches.
    """
    if flag is not None:
        if flag < 1:
            raise ConfigError(f"--concurrency {flag}: use 1 or more worker threads")
        return flag
    if proxy_config.concurrency is not None:
        if proxy_config.concurrency < 0:
            raise ConfigError(f"PROXY_CONFIG concurrency {proxy_config.concurrency} is negative")
        return proxy_config.concurrency or max(1, host_cpus)
    if cpu_limit and cpu_limit.strip():
        try:
            cores = float(cpu_limit)
        except ValueError as exc:
            raise ConfigError(
                f"ISTIO_CPU_LIMIT={cpu_limit!r} is not a number of cores "
                "(the injector sets it from resources.limits.cpu with divisor 1)"
            ) from exc
        if cores > 0:
            return max(1, min(math.ceil(cores), max(1, host_cpus)))
    return DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class _Drain:
    duration_s: float
    termination_s: float
    minimum_s: float


def _drain(env: Mapping[str, str], options: AgentOptions, proxy_config: ProxyConfig) -> _Drain:
    """Flags win over Istio's env variables, which win over ProxyConfig."""

    def pick(flag: float | None, from_env: float | None, fallback: float) -> float:
        if flag is not None:
            return flag
        return from_env if from_env is not None else fallback

    termination = pick(
        options.termination_drain_duration_s,
        # An integer of seconds in Istio; a duration with a unit is taken as well.
        _duration_env(env, "TERMINATION_DRAIN_DURATION_SECONDS", bare_seconds=True),
        proxy_config.termination_drain_duration_seconds,
    )
    minimum = pick(
        options.minimum_drain_duration_s,
        _duration_env(env, "MINIMUM_DRAIN_DURATION", bare_seconds=False),  # a Go duration
        1.0,
    )
    duration = pick(options.drain_duration_s, None, proxy_config.drain_duration_seconds)
    if duration <= 0 or termination < 0 or options.drain_poll_interval_s <= 0:
        raise ConfigError("drain durations must be positive (e.g. --drain-duration 45s)")
    return _Drain(duration, termination, min(minimum, termination))


# --- the pod's environment, each variable read by its rule -------------------------------------


def _bool_env(env: Mapping[str, str], name: str, default: bool) -> bool:
    """An Istio boolean variable, read as its ``env.Register`` reads it (Go's ``ParseBool``).

    Empty counts as unset (Kubernetes cannot tell the two apart). Istio would log a warning
    and take the default for anything else unreadable; the agent refuses to start instead,
    because a drain or probe setting silently ignored shows only when a pod misbehaves.
    """
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        return parse_bool(raw)
    except SyntaxProblem as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _duration_env(env: Mapping[str, str], name: str, *, bare_seconds: bool) -> float | None:
    """A duration variable (Go syntax, ``45s``); ``bare_seconds`` where Istio's knob counts
    seconds (``TERMINATION_DRAIN_DURATION_SECONDS=5``). Empty or unset: None."""
    raw = env.get(name, "")
    if not raw.strip():
        return None
    try:
        return parse_duration(raw, bare_seconds=bare_seconds)
    except SyntaxProblem as exc:
        raise ConfigError(f"{name}: {exc}") from None
