"""The CA's part of ``remora discovery``: its flags, and starting it beside the xDS server.

Kept here so that ``controlplane/cli.py`` needs three small hooks (the decorator, starting,
stopping) and the CA's options stay next to the CA. Importing this module costs only click.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from meshlib.clitypes import Duration

if TYPE_CHECKING:
    from kubernetes import client

    from controlplane.ca.runtime import MeshCA

F = TypeVar("F", bound=Callable[..., Any])
# Certificate lifetimes: 45s, 1h, 24h... (or plain seconds); under a second is a typo.
CERT_TTL = Duration(minimum=1.0)

_OPTIONS = [
    click.option(
        "--ca-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Sign with the CA in this directory of Istio 'cacerts' files (ca-cert.pem, "
        "ca-key.pem, root-cert.pem, cert-chain.pem). Empty or absent: the cluster's 'cacerts' "
        "Secret, else a self-signed root kept in Secret istio-ca-secret.",
    ),
    click.option(
        "--secure-xds-port",
        type=int,
        default=0,
        show_default=True,
        help="Serve xDS and the CA over TLS on this port (Istio's 15012), with a serving "
        "certificate from the mesh CA; 0 = off.",
    ),
    click.option(
        "--ca-port",
        type=int,
        default=0,
        show_default=True,
        help="Serve the CA in plaintext on this port, for local runs; 0 = off.",
    ),
    click.option(
        "--trust-domain",
        default=None,
        help="Trust domain of the mesh: the SPIFFE IDs the CA signs and the listeners accept. "
        "[default: the mesh ConfigMap's trustDomain when discovery starts, else cluster.local]",
    ),
    click.option(
        "--workload-cert-ttl",
        type=CERT_TTL,
        default="24h",
        show_default=True,
        help="Lifetime of workload certificates when the request asks for none.",
    ),
    click.option(
        "--max-workload-cert-ttl",
        type=CERT_TTL,
        default="2160h",
        show_default=True,
        help="Longest lifetime signed (Istio's MAX_WORKLOAD_CERT_TTL). A longer request is "
        "signed for this long, where Istio refuses it: a mesh-wide cap then shortens every "
        "pod's certificates without touching the pods (e.g. 1h to force frequent rotation).",
    ),
    click.option(
        "--token-audience",
        default="istio-ca",
        show_default=True,
        help="Audience the pods' projected service-account tokens must carry.",
    ),
]


def ca_options(fn: F) -> F:
    """Add the CA's flags to a click command (they arrive as keyword arguments)."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


CA_FLAGS = (
    "ca_dir",
    "secure_xds_port",
    "ca_port",
    "trust_domain",
    "workload_cert_ttl",
    "max_workload_cert_ttl",
    "token_audience",
)


def check_ca_flags(flags: dict[str, Any], *, has_cluster: bool) -> None:
    """Refuse flag combinations before anything starts (a CA needs a cluster for TokenReview)."""
    if (flags.get("secure_xds_port") or flags.get("ca_port")) and not has_cluster:
        raise click.UsageError(
            "the mesh CA (--secure-xds-port, --ca-port) needs a cluster to review service-account "
            "tokens: use --kubeconfig, not --config-dir (sidecars can sign locally with --ca-dir)"
        )
    if flags.get("secure_xds_port") and flags.get("secure_xds_port") == flags.get("ca_port"):
        raise click.UsageError("--secure-xds-port and --ca-port must differ")


def read_mesh_trust_domain(api: client.ApiClient, namespace: str) -> str:
    """The trust domain of the mesh ConfigMap (``istio`` in ``namespace``), for the CA.

    Read once, when discovery starts: the CA's identities and the listeners must agree, and a
    changed ``trustDomain`` then takes a restart (the store logs a warning when the ConfigMap
    later says otherwise). No ConfigMap: Istio's default, ``cluster.local``.
    """
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from controlplane.convert import MESH_CONFIGMAP_NAME, ObjectError, mesh_config_from_configmap
    from meshlib.meshconfig import MeshConfig

    try:
        found = k8s.CoreV1Api(api).read_namespaced_config_map(MESH_CONFIGMAP_NAME, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return MeshConfig().trust_domain
        raise click.ClickException(
            f"cannot read the mesh ConfigMap {namespace}/{MESH_CONFIGMAP_NAME} for the trust "
            f"domain ({exc.status} {exc.reason}): grant get on configmaps in {namespace}, or "
            "pass --trust-domain"
        ) from exc
    try:
        mesh = mesh_config_from_configmap(api.sanitize_for_serialization(found))
    except ObjectError as exc:
        raise click.ClickException(f"{exc}; fix it, or pass --trust-domain") from exc
    return mesh.trust_domain


async def start_mesh_ca(
    flags: dict[str, Any],
    *,
    api: client.ApiClient | None,
    listen_address: str,
    namespace: str,
    domain_suffix: str,
    hub: Any,
    registry: Any,
) -> MeshCA | None:
    """Start the CA when ``--secure-xds-port`` or ``--ca-port`` asks for it; else None.

    ``hub`` is the control plane's push hub: with a secure port, ADS is served there too.
    ``registry`` is the control plane's metrics registry (one /metrics for everything).
    """
    if not flags.get("secure_xds_port") and not flags.get("ca_port"):
        return None
    from controlplane.ca.runtime import MeshCA, MeshCAConfig
    from controlplane.ca.service import CAMetrics, CAOptions

    ttl = dt.timedelta(seconds=flags["workload_cert_ttl"])
    max_ttl = dt.timedelta(seconds=flags["max_workload_cert_ttl"])
    if ttl > max_ttl:
        raise click.UsageError(
            f"--workload-cert-ttl ({ttl}) is longer than --max-workload-cert-ttl ({max_ttl}): "
            "lower the first or raise the second"
        )
    config = MeshCAConfig(
        secure_address=f"{listen_address}:{flags['secure_xds_port']}"
        if flags.get("secure_xds_port")
        else None,
        plain_address=f"{listen_address}:{flags['ca_port']}" if flags.get("ca_port") else None,
        ca_dir=flags.get("ca_dir"),
        namespace=namespace,
        options=CAOptions(trust_domain=flags["trust_domain"], default_ttl=ttl, max_ttl=max_ttl),
        audiences=(flags["token_audience"],),
        domain_suffix=domain_suffix,
    )
    check_ca_flags(flags, has_cluster=api is not None)
    ca = MeshCA(config, api, metrics=CAMetrics(registry))

    def add_ads(server: Any) -> None:
        if config.secure_address:
            from envoy.service.discovery.v3 import ads_pb2_grpc

            from controlplane.xds.server import AggregatedDiscoveryService

            ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
                AggregatedDiscoveryService(hub), server
            )

    await ca.start(extra_services=add_ads)
    return ca
