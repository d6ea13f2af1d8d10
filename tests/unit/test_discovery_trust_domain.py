"""``remora discovery --trust-domain`` is the mesh's trust domain for the CA *and* the listeners.

The CA signs ``spiffe://<--trust-domain>/...``; the translation checks peers against
``MeshConfig.trust_domain``. Before, the flag reached only the CA, so with ``--trust-domain
example.org`` every sidecar refused every other sidecar's certificate. Also: the CA's
``--max-workload-cert-ttl`` (Istio's ``MAX_WORKLOAD_CERT_TTL``) caps what a request asks for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import click
import pytest
from click.testing import CliRunner
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.ca.discovery import CERT_TTL, start_mesh_ca
from controlplane.ca.service import CAOptions, requested_ttl
from controlplane.cli import discovery
from controlplane.proxy import parse_proxy_identity
from controlplane.resources import CLUSTER, LISTENER
from controlplane.sources.files import load_into
from controlplane.store import Kind, MeshStore
from controlplane.translate.generate import translate
from harness.kube_objects import endpoint_slice_object, service_object

MESH_CONFIGMAP = {
    "kind": "ConfigMap",
    "metadata": {"name": "istio", "namespace": "istio-system"},
    "data": {"mesh": "rootNamespace: mesh-root\n"},
}


def _objects() -> list[dict[str, Any]]:
    meta = {"name": "db-0", "namespace": "data", "labels": {"app": "db"}}
    return [
        service_object(
            "db",
            "data",
            "10.96.0.5",
            {"http": 80},
            target_ports={"http": 8080},
            selector={"app": "db"},
        ),
        {
            "kind": "Pod",
            "metadata": {**meta, "annotations": {"sidecar.istio.io/status": "{}"}},
            "spec": {
                "serviceAccountName": "db-sa",
                "containers": [{"name": "db", "ports": [{"containerPort": 8080}]}],
            },
            "status": {"podIP": "10.1.0.5"},
        },
        endpoint_slice_object(
            "db", "data", {"http": 8080}, ["10.1.0.5"], name="db-x", pods={"10.1.0.5": "db-0"}
        ),
    ]


def test_the_flag_sets_the_trust_domain_with_or_without_a_mesh_configmap() -> None:
    store = MeshStore(trust_domain="example.org")
    assert store.snapshot().mesh.trust_domain == "example.org"
    store.upsert(Kind.MESH_CONFIG, MESH_CONFIGMAP)
    mesh = store.snapshot().mesh
    assert mesh.trust_domain == "example.org"
    assert mesh.root_namespace == "mesh-root"  # the rest of the ConfigMap still applies


def test_the_flag_wins_over_the_configmap_because_the_ca_signs_with_it() -> None:
    store = MeshStore(trust_domain="example.org")
    store.upsert(
        Kind.MESH_CONFIG,
        {**MESH_CONFIGMAP, "data": {"mesh": "trustDomain: other.org\n"}},
    )
    assert store.snapshot().mesh.trust_domain == "example.org"


def test_without_the_flag_the_configmap_decides() -> None:
    """The store's side (a discovery without CA follows the ConfigMap as it changes; with the
    CA on, discovery reads it at start: tests/integration/test_ca_discovery.py)."""
    store = MeshStore()
    store.upsert(
        Kind.MESH_CONFIG,
        {**MESH_CONFIGMAP, "data": {"mesh": "trustDomain: other.org\n"}},
    )
    assert store.snapshot().mesh.trust_domain == "other.org"


def test_an_unchanged_configmap_keeps_the_very_same_mesh_object() -> None:
    """Translation reuses work by identity: an endpoint change must not look like a mesh change."""
    store = MeshStore(trust_domain="example.org")
    store.upsert(Kind.MESH_CONFIG, MESH_CONFIGMAP)
    first = store.snapshot().mesh
    for obj in _objects():
        assert store.upsert(Kind(obj["kind"]), obj)
        assert store.snapshot().mesh is first


def test_listeners_and_clusters_use_the_flag_s_trust_domain() -> None:
    store = MeshStore(trust_domain="example.org")
    load_into(store, _objects())
    server = parse_proxy_identity("sidecar~10.1.0.5~db-0.data~data.svc.cluster.local", {})
    client = parse_proxy_identity("sidecar~10.1.9.9~c-0.data~data.svc.cluster.local", {})

    inbound = translate(store.snapshot(), server)[LISTENER].by_name["virtualInbound"].message
    prefixes = []
    for chain in inbound.filter_chains:
        if chain.transport_socket.name:
            context = tls_pb2.DownstreamTlsContext()
            chain.transport_socket.typed_config.Unpack(context)
            validation = context.common_tls_context.combined_validation_context
            for san in validation.default_validation_context.match_typed_subject_alt_names:
                prefixes.append(san.matcher.prefix)
    assert prefixes and set(prefixes) == {"spiffe://example.org/"}

    cluster = translate(store.snapshot(), client)[CLUSTER].by_name[
        "outbound|80||db.data.svc.cluster.local"
    ]
    upstream = tls_pb2.UpstreamTlsContext()
    cluster.message.transport_socket_matches[0].transport_socket.typed_config.Unpack(upstream)
    sans = upstream.common_tls_context.combined_validation_context.default_validation_context
    assert [s.matcher.exact for s in sans.match_typed_subject_alt_names] == [
        "spiffe://example.org/ns/data/sa/db-sa"
    ]


def test_max_workload_cert_ttl_caps_what_the_request_asks() -> None:
    max_ttl = dt.timedelta(seconds=CERT_TTL.convert("8s", None, None))
    options = CAOptions(default_ttl=dt.timedelta(hours=24), max_ttl=max_ttl)
    assert requested_ttl(86400, options) == dt.timedelta(seconds=8)
    assert requested_ttl(0, options) == dt.timedelta(seconds=8)
    assert requested_ttl(5, options) == dt.timedelta(seconds=5)


@pytest.mark.parametrize(
    ("value", "message"), [("soon", "is not a duration"), ("0s", "is shorter than 1s")]
)
def test_bad_ttl_flags_are_refused_before_anything_starts(value: str, message: str) -> None:
    result = CliRunner().invoke(
        discovery, ["--config-dir", "/nonexistent", "--max-workload-cert-ttl", value]
    )
    assert result.exit_code == 2
    assert "'--max-workload-cert-ttl'" in result.output and message in result.output


def test_help_teaches_the_ttl_cap() -> None:
    out = CliRunner().invoke(discovery, ["--help"]).output
    assert "--max-workload-cert-ttl" in out and "MAX_WORKLOAD_CERT_TTL" in out


def test_a_default_lifetime_over_the_maximum_is_refused_at_start() -> None:
    flags = {
        "secure_xds_port": 0,
        "ca_port": 15099,
        "ca_dir": None,
        "trust_domain": "cluster.local",
        "workload_cert_ttl": 48 * 3600.0,
        "max_workload_cert_ttl": 24 * 3600.0,
        "token_audience": "istio-ca",
    }
    with pytest.raises(
        click.UsageError,
        match=r"--workload-cert-ttl \(2 days, 0:00:00\) is longer than --max-workload-cert-ttl \(1 day",
    ):
        asyncio.run(
            start_mesh_ca(
                flags,
                api=None,
                listen_address="127.0.0.1",
                namespace="istio-system",
                domain_suffix="cluster.local",
                hub=None,
                registry=None,
            )
        )


def test_help_says_where_the_trust_domain_comes_from() -> None:
    out = CliRunner().invoke(discovery, ["--help"]).output
    assert "the mesh ConfigMap's trustDomain" in " ".join(out.split())
