"""``remora proxy``: the sidecar agent (Istio's pilot-agent) and its helper commands."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from meshlib.clitypes import DURATION, Duration
from meshlib.hostport import host_port
from meshlib.logs import setup_logging
from sidecar.errors import AgentError, ConfigError, SidecarError

if TYPE_CHECKING:
    from sidecar.config import AgentConfig, AgentOptions
    from sidecar.identity import CertificateProvider

log = logging.getLogger("sidecar")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# A certificate lifetime: whole seconds on the wire, and one under a second cannot be renewed.
CERT_TTL = Duration(minimum=1.0)


@click.group(context_settings=CONTEXT)
def proxy() -> None:
    """The sidecar agent that runs Envoy next to every meshed pod (Istio's pilot-agent).

    \b
    The injector starts 'remora proxy sidecar' in the istio-proxy container, runs
    'remora proxy wait' as its postStart hook when the application must wait for the
    proxy, and 'remora proxy request --debug-port=15020 POST drain' before a native
    sidecar stops.
    """


@proxy.command(context_settings=CONTEXT)
@click.option(
    "--discovery-address",
    envvar="REMORA_DISCOVERY_ADDRESS",
    help="Control plane host:port for ADS. [default: PROXY_CONFIG discoveryAddress]",
)
@click.option(
    "--xds-plaintext/--xds-tls",
    "xds_plaintext",
    default=None,
    help="Plaintext or TLS to the control plane. [default: plaintext on port 15010, else TLS]",
)
@click.option(
    "--xds-root-cert",
    default="/var/run/secrets/istio/root-cert.pem",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Mesh root certificate that the control plane's TLS certificate must chain to.",
)
@click.option(
    "--xds-server-name", help="SNI and SAN expected from the control plane. [default: its host]"
)
@click.option(
    "--xds-api",
    type=click.Choice(["delta", "sotw"]),
    default="delta",
    show_default=True,
    help="xDS flavour: incremental (delta) or state of the world.",
)
@click.option(
    "--admin-port",
    type=int,
    envvar="REMORA_ADMIN_PORT",
    help="Envoy admin port (loopback). [default: 15000]",
)
@click.option(
    "--status-port",
    type=int,
    envvar="REMORA_STATUS_PORT",
    help="Agent status port. [default: 15020]",
)
@click.option(
    "--health-port",
    type=int,
    envvar="REMORA_HEALTH_PORT",
    help="Envoy health listener. [default: 15021]",
)
@click.option(
    "--prometheus-port",
    type=int,
    envvar="REMORA_PROMETHEUS_PORT",
    help="Envoy stats listener. [default: 15090]",
)
@click.option(
    "--bind-address",
    help="Address for the status, health and stats ports. [default: 0.0.0.0, or :: for IPv6 pods]",
)
@click.option(
    "--concurrency",
    type=int,
    help="Envoy worker threads. [default: PROXY_CONFIG, else ISTIO_CPU_LIMIT, else 2]",
)
@click.option(
    "--config-dir",
    default="/etc/istio/proxy",
    show_default=True,
    help="Where the bootstrap (envoy-rev.json) and the SDS socket go.",
)
@click.option("--sds-socket", help="Unix socket of the SDS server. [default: CONFIG_DIR/SDS]")
@click.option(
    "--ca-dir",
    envvar="REMORA_LOCAL_CA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Sign workload certificates locally with ca-cert.pem/ca-key.pem from this directory.",
)
@click.option(
    "--ca-address",
    envvar="CA_ADDR",
    help="The mesh CA (host:port) that signs workload certificates; used when --ca-dir is not "
    "given. The injector sets CA_ADDR. Empty: no workload certificates.",
)
@click.option(
    "--ca-root-cert",
    default="/var/run/secrets/istio/root-cert.pem",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The mesh root that the CA's serving certificate must chain to (istio-ca-root-cert).",
)
@click.option(
    "--ca-token",
    default="/var/run/secrets/tokens/istio-token",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The projected service-account token that proves this pod's identity to the CA.",
)
@click.option(
    "--ca-plaintext",
    is_flag=True,
    help="Talk to the CA without TLS (local runs only; the token then travels in clear).",
)
@click.option(
    "--cert-ttl",
    envvar="SECRET_TTL",
    type=CERT_TTL,
    default="24h",
    show_default=True,
    help="Lifetime asked for the workload certificate, from the mesh CA or the local signer "
    "(Istio's SECRET_TTL, e.g. set per pod through proxyMetadata; the CA may cap it).",
)
@click.option(
    "--pod-info-dir",
    default="/etc/istio/pod",
    show_default=True,
    help="Downward-API files (labels).",
)
@click.option(
    "--drain-duration",
    type=DURATION,
    help="Envoy's --drain-time-s. [default: PROXY_CONFIG drainDuration, 45s]",
)
@click.option(
    "--termination-drain-duration",
    type=DURATION,
    help="Longest SIGTERM drain. [default: TERMINATION_DRAIN_DURATION_SECONDS, else PROXY_CONFIG, 5s]",
)
@click.option(
    "--minimum-drain-duration",
    type=DURATION,
    help="Shortest SIGTERM drain, even with no connection left. [default: MINIMUM_DRAIN_DURATION, 1s]",
)
@click.option(
    "--drain-poll-interval",
    type=DURATION,
    default="1s",
    show_default=True,
    help="How often to count connections while draining.",
)
@click.option(
    "--domain", help="Pod DNS domain, e.g. default.svc.cluster.local (sets the cluster domain)."
)
@click.option(
    "--proxyLogLevel",
    "proxy_log_level",
    default="warning",
    show_default=True,
    help="Envoy's log level.",
)
@click.option(
    "--proxyComponentLogLevel",
    "component_log_level",
    default="misc:error",
    show_default=True,
    help="Envoy's per-component log levels.",
)
@click.option(
    "--log_output_level",
    "log_output_level",
    default="default:info",
    show_default=True,
    help="The agent's log level (Istio syntax).",
)
@click.option(
    "--log_as_json/--log-as-text",
    "log_as_json",
    default=True,
    show_default=True,
    help="JSON or text agent logs.",
)
@click.option("--stsPort", "sts_port", type=int, hidden=True)
@click.option("--outlierLogPath", "outlier_log_path", hidden=True)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the bootstrap, Envoy's command line and the app probes, then exit.",
)
def sidecar(  # noqa: PLR0913 - one keyword per click option
    *,
    discovery_address: str | None,
    xds_plaintext: bool | None,
    xds_root_cert: str,
    xds_server_name: str | None,
    xds_api: str,
    admin_port: int | None,
    status_port: int | None,
    health_port: int | None,
    prometheus_port: int | None,
    bind_address: str | None,
    concurrency: int | None,
    config_dir: str,
    sds_socket: str | None,
    ca_dir: Path | None,
    ca_address: str | None,
    ca_root_cert: str,
    ca_token: str,
    ca_plaintext: bool,
    cert_ttl: float,
    pod_info_dir: str,
    drain_duration: float | None,
    termination_drain_duration: float | None,
    minimum_drain_duration: float | None,
    drain_poll_interval: float,
    domain: str | None,
    proxy_log_level: str,
    component_log_level: str,
    log_output_level: str,
    log_as_json: bool,
    sts_port: int | None,
    outlier_log_path: str | None,
    dry_run: bool,
) -> None:
    """Run Envoy as this pod's sidecar: bootstrap, supervision, health, probes, metrics, SDS.

    \b
    The pod's identity and settings come from the environment the injector sets
    (POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, PROXY_CONFIG, ISTIO_META_*,
    ISTIO_KUBE_APP_PROBERS, ISTIO_PROMETHEUS_ANNOTATIONS, ISTIO_CPU_LIMIT, TRUST_DOMAIN,
    ISTIO_BOOTSTRAP_OVERRIDE). See docs/sidecar.md for each.
    Envoy exiting ends the agent with Envoy's exit code; SIGTERM drains first.

    \b
    Examples:
      # What would run, without running it:
      POD_NAME=web-0 POD_NAMESPACE=default remora proxy sidecar --dry-run
    \b
      # A local sidecar against a plaintext control plane, with a local CA:
      POD_NAME=web-0 POD_NAMESPACE=default INSTANCE_IP=127.0.0.1 \\
        remora proxy sidecar --discovery-address 127.0.0.1:15010 --ca-dir ./ca \\
        --config-dir /tmp/web-0 --bind-address 127.0.0.1
    """
    from sidecar.config import AgentOptions

    _setup_agent_logging(log_output_level, log_as_json)
    if sts_port or outlier_log_path:
        log.warning("--stsPort and --outlierLogPath are accepted for compatibility and ignored")
    options = AgentOptions(
        discovery_address=discovery_address,
        xds_tls=None if xds_plaintext is None else not xds_plaintext,
        xds_root_cert=xds_root_cert,
        xds_server_name=xds_server_name,
        xds_api="GRPC" if xds_api == "sotw" else "DELTA_GRPC",
        admin_port=admin_port,
        status_port=status_port,
        health_port=health_port,
        prometheus_port=prometheus_port,
        bind_address=bind_address,
        concurrency=concurrency,
        cluster_domain=_cluster_domain(domain),
        # Absolute, so Envoy (our child, same working directory today) and any reader of
        # the logs agree on where the bootstrap and the SDS socket are.
        config_dir=os.path.abspath(config_dir),
        sds_socket=os.path.abspath(sds_socket) if sds_socket else None,
        proxy_log_level=proxy_log_level,
        component_log_level=component_log_level,
        log_json=log_as_json,
        drain_duration_s=drain_duration,
        termination_drain_duration_s=termination_drain_duration,
        minimum_drain_duration_s=minimum_drain_duration,
        drain_poll_interval_s=drain_poll_interval,
        workload_certificates=ca_dir is not None or bool(ca_address),
    )
    try:
        config = _agent_config(options, Path(pod_info_dir))
        if dry_run:
            click.echo(json.dumps(_dry_run_plan(config), indent=2))
            return
        _require_xds_root(config)
        binary = _envoy_binary()
        provider = _certificate_provider(
            ca_dir=ca_dir,
            ca_address=ca_address,
            root_cert=Path(ca_root_cert),
            token=Path(ca_token),
            plaintext=ca_plaintext,
            ttl_s=cert_ttl,
        )
        code = _run_agent(config, binary, provider)
    except SidecarError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


# --- the steps of 'proxy sidecar': each raises a SidecarError saying what to do -----------------


def _setup_agent_logging(log_output_level: str, as_json: bool) -> None:
    setup_logging(_agent_log_level(log_output_level), "json" if as_json else "text")
    for noisy in ("httpx", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _agent_log_level(value: str) -> str:
    """Istio's ``--log_output_level=default:info`` (or ``info``) -> ``info``."""
    level = value.split(",", maxsplit=1)[0].rpartition(":")[2].strip().lower() or "info"
    return {"warn": "warning", "none": "critical", "fatal": "critical"}.get(level, level)


def _cluster_domain(domain: str | None) -> str | None:
    """``--domain shop.svc.corp.internal`` (Istio's pod DNS domain) -> ``corp.internal``."""
    if domain and ".svc." in domain:
        return domain.split(".svc.", 1)[1]
    return None


def _agent_config(options: AgentOptions, pod_info_dir: Path) -> AgentConfig:
    """The agent's settings from this process's environment, the downward-API files and
    the pod's bootstrap override."""
    from sidecar.config import build_config
    from sidecar.node import parse_downward_api_map

    def downward_api(name: str) -> dict[str, str]:
        path = pod_info_dir / name
        return parse_downward_api_map(path.read_text()) if path.is_file() else {}

    override_path = os.environ.get("ISTIO_BOOTSTRAP_OVERRIDE", "").strip()
    if override_path:
        options = dataclasses.replace(options, bootstrap_override=_load_override(override_path))
    return build_config(
        dict(os.environ),
        options,
        host_cpus=os.cpu_count() or 1,
        pod_labels=downward_api("labels"),
        pod_annotations=downward_api("annotations"),
    )


def _load_override(path: str) -> dict[str, Any]:
    """The pod's custom bootstrap (``sidecar.istio.io/bootstrapOverride``), JSON or YAML."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"ISTIO_BOOTSTRAP_OVERRIDE={path}: {exc.strerror}; is the ConfigMap named in "
            "sidecar.istio.io/bootstrapOverride mounted?"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"ISTIO_BOOTSTRAP_OVERRIDE={path} is not JSON or YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"ISTIO_BOOTSTRAP_OVERRIDE={path} must hold an object (a partial Envoy bootstrap)"
        )
    return data


def _dry_run_plan(config: AgentConfig) -> dict[str, Any]:
    """What 'proxy sidecar' would run: the bootstrap, Envoy's command line, the app probes."""
    from sidecar.bootstrap import build_bootstrap, envoy_args
    from sidecar.probes import describe

    scrape = config.app_scrape
    return {
        "bootstrap": build_bootstrap(config),
        "envoy_args": envoy_args(config, "<bootstrap>"),
        "app_probes": {path: describe(probe) for path, probe in sorted(config.probers.items())},
        "probe_destination": config.probe_host,
        "app_metrics": _http_url(config.loopback, scrape.port, scrape.path) if scrape else None,
    }


def _http_url(host: str, port: int, path: str) -> str:
    return f"http://{host_port(host, port)}{path}"


def _require_xds_root(config: AgentConfig) -> None:
    if config.xds.tls and not Path(config.xds.root_cert_path).is_file():
        raise ConfigError(
            f"TLS to the control plane needs the mesh root at {config.xds.root_cert_path}: mount it "
            "(the istio-ca-root-cert ConfigMap), pass --xds-root-cert, or use --xds-plaintext"
        )


def _envoy_binary() -> str:
    from meshlib.envoy_binary import envoy_path

    try:
        return str(envoy_path())
    except FileNotFoundError as exc:
        raise AgentError(str(exc)) from exc


def _certificate_provider(
    *,
    ca_dir: Path | None,
    ca_address: str | None,
    root_cert: Path,
    token: Path,
    plaintext: bool,
    ttl_s: float,
) -> CertificateProvider | None:
    """Who signs the workload certificate: a local CA (--ca-dir), the mesh CA, or nobody."""
    from sidecar.identity import LocalCAProvider

    if ca_dir is not None:
        return LocalCAProvider(ca_dir, ttl=dt.timedelta(seconds=ttl_s))
    if not ca_address:
        return None
    from sidecar.ca_client import GrpcCAProvider

    if not plaintext and not root_cert.is_file():
        raise ConfigError(
            f"the mesh CA at {ca_address} is verified against {root_cert}, which is missing: "
            "mount the istio-ca-root-cert ConfigMap there, pass --ca-root-cert, or "
            "--ca-plaintext for a local run"
        )
    return GrpcCAProvider(
        ca_address, token_path=token, root_cert_path=None if plaintext else root_cert, ttl=ttl_s
    )


def _run_agent(config: AgentConfig, binary: str, provider: CertificateProvider | None) -> int:
    """Run until Envoy exits or the agent is stopped; Envoy's exit code."""
    from sidecar.agent import Agent

    return asyncio.run(Agent(config, envoy_binary=binary, provider=provider).run())


@proxy.command(context_settings=CONTEXT)
@click.option(
    "--url", help="Readiness URL to poll. [default: http://localhost:HEALTH_PORT/healthz/ready]"
)
@click.option(
    "--health-port", type=int, default=15021, show_default=True, envvar="REMORA_HEALTH_PORT"
)
@click.option(
    "--timeoutSeconds",
    "--timeout",
    "timeout_s",
    type=DURATION,
    default="60s",
    show_default=True,
    help="Give up after this long (e.g. 90s or 2m; a bare number is seconds).",
)
@click.option(
    "--periodMillis",
    "--period-ms",
    "period_ms",
    type=int,
    default=500,
    show_default=True,
    help="Poll interval.",
)
@click.option(
    "--requestTimeoutMillis",
    "request_timeout_ms",
    type=int,
    default=500,
    show_default=True,
    help="Timeout of one poll.",
)
def wait(
    *, url: str | None, health_port: int, timeout_s: float, period_ms: int, request_timeout_ms: int
) -> None:
    """Block until the proxy is ready (a postStart hook for holdApplicationUntilProxyStarts).

    Exits 0 once the readiness URL answers 200, 1 after --timeoutSeconds.

    \b
    Example (what the injector puts in the proxy's postStart hook):
      remora proxy wait --timeoutSeconds 60
    """
    import httpx

    # "localhost": IPv4 or IPv6, whichever the pod has (Envoy's IPv6 listeners are v6-only).
    target = url or f"http://localhost:{health_port}/healthz/ready"
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=request_timeout_ms / 1000) as client:
        while True:
            try:
                response = client.get(target)
                if response.status_code == 200:
                    click.echo(f"proxy ready ({target})")
                    return
                last = f"HTTP {response.status_code}: {response.text.strip()[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            if time.monotonic() + period_ms / 1000 > deadline:
                raise click.ClickException(
                    f"the proxy was not ready after {timeout_s:g}s ({target}: {last}); "
                    "check the istio-proxy container's logs"
                )
            time.sleep(period_ms / 1000)


@proxy.command(context_settings=CONTEXT)
@click.option(
    "--debug-port",
    type=int,
    default=15000,
    show_default=True,
    help="Port to send to: Envoy admin 15000, agent status 15020.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=DURATION,
    default="10s",
    show_default=True,
    help="How long to wait for the answer (e.g. 30s; a bare number is seconds).",
)
@click.argument("method", type=click.Choice(["GET", "POST"], case_sensitive=False))
@click.argument("path")
def request(*, debug_port: int, timeout_s: float, method: str, path: str) -> None:
    """Send METHOD PATH to Envoy's admin API or the agent, on localhost, and print the answer.

    \b
    Examples:
      remora proxy request GET server_info          # Envoy admin
      remora proxy request GET 'stats?filter=ssl'
      remora proxy request --debug-port=15020 POST drain   # a native sidecar's preStop
    """
    import httpx

    url = f"http://localhost:{debug_port}/{path.lstrip('/')}"
    try:
        response = httpx.request(method.upper(), url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"{method.upper()} {url} failed: {exc}; is the proxy running?"
        ) from exc
    click.echo(response.text, nl=False)
    if response.status_code >= 400:
        raise click.ClickException(f"{method.upper()} {url}: HTTP {response.status_code}")
