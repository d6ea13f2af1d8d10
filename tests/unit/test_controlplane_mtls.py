"""Mutual TLS between sidecars: PeerAuthentication semantics, auto-mTLS, the TLS resources.

The golden cases (``tests/golden/controlplane/mtls-*.yaml``) pin whole snapshots; these
tests pin the rules one at a time, and that the incremental generator follows pod and
policy changes exactly like a translation from scratch.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format
from kubernetes import client
from kubernetes.client.rest import ApiException

from controlplane import convert
from controlplane.model import MtlsMode, PeerAuthentication, Protocol
from controlplane.proxy import parse_proxy_identity
from controlplane.resources import CLUSTER, ENDPOINT, LISTENER, ProxyResources
from controlplane.sources.files import load_into
from controlplane.sources.kube import KubeSource, _Resource
from controlplane.store import Kind, MeshStore
from controlplane.translate import listeners, tls
from controlplane.translate.auto_mtls import service_mtls
from controlplane.translate.generate import ConfigGenerator, policy_index, translate
from controlplane.translate.listeners import InboundPort
from controlplane.translate.peer_authentication import PolicyIndex, WorkloadMtls
from harness.kube_objects import endpoint_slice_object, service_object

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "controlplane"
ROOT = "istio-system"


def policy(
    name: str,
    namespace: str,
    mode: MtlsMode = MtlsMode.UNSET,
    *,
    selector: dict[str, str] | None = None,
    ports: dict[int, MtlsMode] | None = None,
    created: str = "",
) -> PeerAuthentication:
    return PeerAuthentication(
        name=name,
        namespace=namespace,
        mode=mode,
        selector=tuple(sorted(selector.items())) if selector else None,
        port_modes=tuple(sorted((ports or {}).items())),
        created=created,
    )


def modes(policies: list[PeerAuthentication], ns: str = "shop", **labels: str) -> WorkloadMtls:
    return PolicyIndex.build(policies, ROOT).workload_mtls(ns, labels)


# --- PeerAuthentication semantics ------------------------------------------------------


def test_no_policy_means_permissive() -> None:
    assert modes([]) == WorkloadMtls(MtlsMode.PERMISSIVE)


def test_workload_beats_namespace_beats_mesh() -> None:
    mesh = policy("default", ROOT, MtlsMode.STRICT)
    namespace = policy("default", "shop", MtlsMode.DISABLE)
    workload = policy("cart", "shop", MtlsMode.PERMISSIVE, selector={"app": "cart"})
    assert modes([mesh]).mode is MtlsMode.STRICT
    assert modes([mesh, namespace]).mode is MtlsMode.DISABLE
    assert modes([mesh, namespace, workload], app="cart").mode is MtlsMode.PERMISSIVE
    assert modes([mesh, namespace, workload], app="web").mode is MtlsMode.DISABLE
    # A mesh policy reaches every namespace; a namespace policy only its own.
    assert modes([mesh, namespace], ns="other").mode is MtlsMode.STRICT


def test_unset_inherits_from_the_parent_scope() -> None:
    mesh = policy("default", ROOT, MtlsMode.STRICT)
    namespace = policy("default", "shop")  # no mode
    workload = policy("cart", "shop", selector={"app": "cart"}, ports={8080: MtlsMode.DISABLE})
    result = modes([mesh, namespace, workload], app="cart")
    assert result.mode is MtlsMode.STRICT
    assert result.for_port(8080) is MtlsMode.DISABLE
    assert result.for_port(9090) is MtlsMode.STRICT


def test_port_level_unset_inherits_the_workload_mode() -> None:
    workload = policy(
        "cart",
        "shop",
        MtlsMode.STRICT,
        selector={"app": "cart"},
        ports={8080: MtlsMode.UNSET, 9090: MtlsMode.PERMISSIVE},
    )
    result = modes([policy("default", "shop", MtlsMode.DISABLE), workload], app="cart")
    assert result.for_port(8080) is MtlsMode.STRICT
    assert result.for_port(9090) is MtlsMode.PERMISSIVE
    assert result.modes == {MtlsMode.STRICT, MtlsMode.PERMISSIVE}


def test_the_oldest_policy_of_a_level_wins_then_the_name() -> None:
    older = policy("zz-old", "shop", MtlsMode.DISABLE, created="2024-01-01T00:00:00+00:00")
    newer = policy("aa-new", "shop", MtlsMode.STRICT, created="2025-01-01T00:00:00+00:00")
    assert modes([newer, older]).mode is MtlsMode.DISABLE
    twin_a = policy("a", "shop", MtlsMode.STRICT, selector={"app": "x"}, created="2024")
    twin_b = policy("b", "shop", MtlsMode.DISABLE, selector={"app": "x"}, created="2024")
    assert modes([twin_b, twin_a], app="x").mode is MtlsMode.STRICT


def test_a_selector_policy_in_the_root_namespace_is_not_mesh_wide() -> None:
    scoped = policy("only-gw", ROOT, MtlsMode.STRICT, selector={"app": "gw"})
    assert modes([scoped]).mode is MtlsMode.PERMISSIVE
    assert modes([scoped], ns=ROOT, app="gw").mode is MtlsMode.STRICT


# --- conversion ------------------------------------------------------------------------


def pa_object(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "p", "namespace": "shop", **meta},
        "spec": spec,
    }


def test_peer_authentication_converts_with_ports_and_time() -> None:
    converted = convert.peer_authentication_from_object(
        pa_object(
            {
                "selector": {"matchLabels": {"app": "pay"}},
                "mtls": {"mode": "strict"},
                "portLevelMtls": {"9090": {"mode": "DISABLE"}, 8081: {}},
            },
            creationTimestamp="2026-01-02T03:04:05Z",
        )
    )
    assert converted.mode is MtlsMode.STRICT
    assert converted.selector == (("app", "pay"),)
    assert converted.port_modes == ((8081, MtlsMode.UNSET), (9090, MtlsMode.DISABLE))
    # A datetime (as YAML parses it) and the API's text become the same sortable value.
    parsed = convert.peer_authentication_from_object(
        pa_object({}, creationTimestamp=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    )
    assert parsed.created == converted.created == "2026-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mtls": {"mode": "MAYBE"}}, "use one of UNSET, DISABLE, PERMISSIVE, STRICT"),
        (
            {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"http": {}}},
            "is not a port number",
        ),
        ({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"70000": {}}}, "out of range"),
    ],
)
def test_bad_peer_authentications_are_refused_with_the_reason(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(convert.ObjectError, match=message):
        convert.peer_authentication_from_object(pa_object(spec))


def test_port_settings_without_a_selector_are_dropped_and_the_mode_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refusing the whole object would leave its namespace in the previous, weaker mode."""
    converted = convert.peer_authentication_from_object(
        pa_object({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"80": {"mode": "DISABLE"}}})
    )
    assert converted.mode is MtlsMode.STRICT and converted.port_modes == ()
    assert "ignoring spec.portLevelMtls" in caplog.text


def test_a_bad_policy_is_skipped_by_the_store_and_the_rest_applies() -> None:
    store = MeshStore()
    store.replace(
        Kind.PEER_AUTHENTICATION,
        [
            pa_object({"mtls": {"mode": "NOPE"}}),
            {
                **pa_object({"mtls": {"mode": "STRICT"}}),
                "metadata": {"name": "ok", "namespace": "a"},
            },
        ],
    )
    assert list(store.snapshot().peer_authentications) == [("a", "ok")]


@pytest.mark.parametrize(
    ("labels", "annotations", "meshed"),
    [
        ({}, {}, False),
        ({}, {"sidecar.istio.io/status": "{}"}, True),
        ({"security.istio.io/tlsMode": "istio"}, {}, True),
        ({"security.istio.io/tlsMode": "disabled"}, {"sidecar.istio.io/status": "{}"}, False),
    ],
)
def test_a_pod_is_meshed_by_its_tls_mode_label_else_its_sidecar_status(
    labels: dict[str, str], annotations: dict[str, str], meshed: bool
) -> None:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "labels": labels, "annotations": annotations},
    }
    assert convert.workload_from_pod(pod).meshed is meshed


# --- auto-mTLS on the client side ------------------------------------------------------


def mesh_objects(*, meshed: bool, policies: list[dict[str, Any]] | None = None) -> list[Any]:
    pod_meta: dict[str, Any] = {"name": "db-0", "namespace": "data", "labels": {"app": "db"}}
    if meshed:
        pod_meta["annotations"] = {"sidecar.istio.io/status": "{}"}
    ports = {"tcp": 5432, "http-admin": 8080}
    return [
        service_object("db", "data", "10.96.0.5", ports, selector={"app": "db"}),
        {
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": {"serviceAccountName": "db-sa", "containers": [{"name": "db"}]},
            "status": {"podIP": "10.1.0.5"},
        },
        # No targetRef: the endpoint is resolved to its pod by IP.
        endpoint_slice_object("db", "data", ports, ["10.1.0.5", "10.1.0.6"], name="db-x"),
        *(policies or []),
    ]


CLIENT = parse_proxy_identity("sidecar~10.1.9.9~client-1.app~app.svc.cluster.local", {})
DB_CLUSTER = "outbound|5432||db.data.svc.cluster.local"
ADMIN_CLUSTER = "outbound|8080||db.data.svc.cluster.local"


def tls_endpoints(resources: ProxyResources, cluster: str) -> list[str]:
    out = []
    for group in resources[ENDPOINT].by_name[cluster].message.endpoints:
        for lb in group.lb_endpoints:
            meta = lb.metadata.filter_metadata.get(tls.TRANSPORT_SOCKET_MATCH)
            if meta is not None and meta.fields[tls.TLS_MODE_KEY].string_value == "istio":
                out.append(lb.endpoint.address.socket_address.address)
    return out


def upstream_context(resources: ProxyResources, cluster: str) -> tls_pb2.UpstreamTlsContext | None:
    message = resources[CLUSTER].by_name[cluster].message
    matches = message.transport_socket_matches
    if not matches:
        return None
    assert [m.name for m in matches] == ["tlsMode-istio", "tlsMode-disabled"]
    assert dict(matches[0].match.fields) == {"tlsMode": matches[0].match.fields["tlsMode"]}
    assert not matches[1].HasField("match")
    context = tls_pb2.UpstreamTlsContext()
    matches[0].transport_socket.typed_config.Unpack(context)
    return context


def render(objects: list[Any], proxy: Any = CLIENT) -> ProxyResources:
    store = MeshStore()
    load_into(store, objects)
    return translate(store.snapshot(), proxy)


def test_only_endpoints_with_a_sidecar_are_upgraded_and_their_identity_verified() -> None:
    resources = render(mesh_objects(meshed=True))
    assert tls_endpoints(resources, DB_CLUSTER) == ["10.1.0.5"]  # 10.1.0.6 has no pod
    context = upstream_context(resources, DB_CLUSTER)
    assert context is not None
    assert context.sni == "outbound_.5432_._.db.data.svc.cluster.local"
    common = context.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    validation = common.combined_validation_context
    assert validation.validation_context_sds_secret_config.name == "ROOTCA"
    sans = validation.default_validation_context.match_typed_subject_alt_names
    assert [(s.san_type, s.matcher.exact) for s in sans] == [
        (3, "spiffe://cluster.local/ns/data/sa/db-sa")
    ]
    sds = common.tls_certificate_sds_secret_configs[0].sds_config.api_config_source
    assert sds.grpc_services[0].envoy_grpc.cluster_name == "sds-grpc"
    # Mesh tokens first, then the protocol the cluster speaks (never h2 from HTTP/1.1).
    assert list(common.alpn_protocols) == ["istio-peer-exchange", "istio"]
    admin = upstream_context(resources, ADMIN_CLUSTER)
    assert admin is not None
    assert list(admin.common_tls_context.alpn_protocols) == ["istio-http/1.1", "istio", "http/1.1"]


def test_no_sidecar_behind_a_service_means_plaintext() -> None:
    resources = render(mesh_objects(meshed=False))
    assert tls_endpoints(resources, DB_CLUSTER) == []
    assert upstream_context(resources, DB_CLUSTER) is None


def test_a_disabled_destination_port_is_plaintext_and_the_others_stay_mtls() -> None:
    disable_admin = {
        "kind": "PeerAuthentication",
        "metadata": {"name": "db", "namespace": "data"},
        "spec": {
            "selector": {"matchLabels": {"app": "db"}},
            "portLevelMtls": {"8080": {"mode": "DISABLE"}},
        },
    }
    resources = render(mesh_objects(meshed=True, policies=[disable_admin]))
    assert tls_endpoints(resources, DB_CLUSTER) == ["10.1.0.5"]
    assert tls_endpoints(resources, ADMIN_CLUSTER) == []


def test_the_trust_domain_comes_from_the_mesh_config() -> None:
    mesh = {
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": "trustDomain: corp.example\n"},
    }
    context = upstream_context(render([*mesh_objects(meshed=True), mesh]), DB_CLUSTER)
    assert context is not None
    sans = context.common_tls_context.combined_validation_context.default_validation_context
    assert sans.match_typed_subject_alt_names[0].matcher.exact.startswith("spiffe://corp.example/")


def test_auto_mtls_off_in_the_mesh_config_means_plaintext_clients() -> None:
    mesh = {
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": "enableAutoMtls: false\n"},
    }
    resources = render([*mesh_objects(meshed=True), mesh])
    assert upstream_context(resources, DB_CLUSTER) is None
    assert tls_endpoints(resources, DB_CLUSTER) == []


def test_service_mtls_counts_only_endpoints_that_get_traffic() -> None:
    store = MeshStore()
    objects = mesh_objects(meshed=True)
    objects[2]["endpoints"] = [
        {"addresses": ["10.1.0.5"]},
        {"addresses": ["10.1.0.6"], "conditions": {"ready": False, "serving": False}},
    ]
    load_into(store, objects)
    snapshot = store.snapshot()
    service = snapshot.services[("data", "db")]
    view = service_mtls(snapshot, service, snapshot.slices_for(service), policy_index(snapshot))
    assert view.all_mtls_ports == {"tcp", "http-admin"}  # the unready endpoint does not count
    assert view.endpoints == {("10.1.0.5", 5432), ("10.1.0.5", 8080)}


# --- the incremental generator follows changes exactly ---------------------------------


def as_dicts(resources: ProxyResources) -> dict[str, Any]:
    return {
        type_url: {r.name: json_format.MessageToDict(r.message) for r in resources[type_url]}
        for type_url in (CLUSTER, ENDPOINT, LISTENER)
    }


def test_the_generator_follows_a_pod_gaining_its_sidecar_and_a_policy_change() -> None:
    store = MeshStore()
    load_into(store, mesh_objects(meshed=False))
    generator = ConfigGenerator()
    server = parse_proxy_identity("sidecar~10.1.0.5~db-0.data~data.svc.cluster.local", {})
    before = generator.generate(store.snapshot(), CLIENT)
    assert upstream_context(before, DB_CLUSTER) is None

    store.upsert(Kind.POD, mesh_objects(meshed=True)[1])
    after = generator.generate(store.snapshot(), CLIENT)
    assert tls_endpoints(after, DB_CLUSTER) == ["10.1.0.5"]
    assert as_dicts(after) == as_dicts(translate(store.snapshot(), CLIENT))

    strict = {
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "data"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }
    permissive_inbound = generator.generate(store.snapshot(), server)[LISTENER]
    store.upsert(Kind.PEER_AUTHENTICATION, strict)
    strict_inbound = generator.generate(store.snapshot(), server)[LISTENER]
    assert strict_inbound.by_name["virtualInbound"].version != (
        permissive_inbound.by_name["virtualInbound"].version
    )
    assert as_dicts(generator.generate(store.snapshot(), server)) == as_dicts(
        translate(store.snapshot(), server)
    )
    disable = {**strict, "spec": {"mtls": {"mode": "DISABLE"}}}
    store.upsert(Kind.PEER_AUTHENTICATION, disable)
    assert tls_endpoints(generator.generate(store.snapshot(), CLIENT), DB_CLUSTER) == []


def test_an_unrelated_endpoint_change_keeps_the_cluster_set() -> None:
    store = MeshStore()
    load_into(store, mesh_objects(meshed=True))
    generator = ConfigGenerator()
    first = generator.generate(store.snapshot(), CLIENT)[CLUSTER]
    slice_object = mesh_objects(meshed=True)[2]
    slice_object["endpoints"] = [*slice_object["endpoints"], {"addresses": ["10.1.0.7"]}]
    store.upsert(Kind.ENDPOINT_SLICE, slice_object)
    assert generator.generate(store.snapshot(), CLIENT)[CLUSTER] is first


# --- the inbound listener --------------------------------------------------------------


def workload_chains(listener: listener_pb2.Listener) -> list[listener_components_pb2.FilterChain]:
    """The chains for the workload's traffic: all but the 15006 black hole, which every
    inbound listener starts with (tests/unit/test_controlplane_listeners.py checks it)."""
    first = listener.filter_chains[0]
    assert first.name == listeners.INBOUND_BLACKHOLE_CHAIN
    return list(listener.filter_chains[1:])


def chains(listener: listener_pb2.Listener) -> list[tuple[str, int | None, str, bool]]:
    return [
        (
            c.name,
            c.filter_chain_match.destination_port.value
            if c.filter_chain_match.HasField("destination_port")
            else None,
            c.filter_chain_match.transport_protocol,
            c.HasField("transport_socket"),
        )
        for c in workload_chains(listener)
    ]


HTTP_8080 = InboundPort(8080, Protocol.HTTP)
TCP_5000 = InboundPort(5000, Protocol.TCP)


def test_strict_has_no_plaintext_chain_and_no_default_chain() -> None:
    listener = listeners.inbound_listener([HTTP_8080, TCP_5000], mtls=WorkloadMtls(MtlsMode.STRICT))
    assert chains(listener) == [
        ("inbound|5000||-mtls", 5000, "tls", True),
        ("inbound|8080||-mtls", 8080, "tls", True),
        ("InboundPassthroughCluster-mtls", None, "tls", True),
    ]
    assert not listener.HasField("default_filter_chain")
    assert [f.name for f in listener.listener_filters][-1] == listeners.TLS_INSPECTOR_FILTER


def test_permissive_has_both_chains_per_port_and_for_the_passthrough() -> None:
    listener = listeners.inbound_listener([HTTP_8080])
    assert chains(listener) == [
        ("inbound|8080||-mtls", 8080, "tls", True),
        ("inbound|8080||-tls", 8080, "tls", False),
        ("inbound|8080||", 8080, "raw_buffer", False),
        ("InboundPassthroughCluster-mtls", None, "tls", True),
        ("InboundPassthroughCluster-tls", None, "tls", False),
        ("InboundPassthroughCluster", None, "raw_buffer", False),
    ]
    assert listener.continue_on_listener_filters_timeout
    # Mesh mTLS is recognised by Istio's ALPN tokens; other TLS is the app's, passed through.
    mesh, app_tls = workload_chains(listener)[:2]
    assert list(mesh.filter_chain_match.application_protocols) == [
        "istio-peer-exchange",
        "istio",
        "istio-http/1.0",
        "istio-http/1.1",
        "istio-h2",
    ]
    assert not app_tls.filter_chain_match.application_protocols
    assert app_tls.filters[0].name == listeners.TCP_PROXY_FILTER
    tcp = json_format.MessageToDict(app_tls.filters[0].typed_config)
    assert tcp["cluster"] == "inbound|8080||"


def test_disable_is_plaintext_without_inspecting_tls() -> None:
    listener = listeners.inbound_listener([HTTP_8080], mtls=WorkloadMtls(MtlsMode.DISABLE))
    assert chains(listener) == [("inbound|8080||", 8080, "", False)]
    assert [f.name for f in listener.listener_filters] == [listeners.ORIGINAL_DST_FILTER]
    assert listener.default_filter_chain.name == "InboundPassthroughCluster"


def test_a_strict_port_in_a_disabled_workload_gets_no_plaintext_fallback() -> None:
    mtls = WorkloadMtls(MtlsMode.DISABLE, ((8080, MtlsMode.STRICT),))
    listener = listeners.inbound_listener([HTTP_8080], mtls=mtls)
    # A default chain would catch plaintext to 8080 (Envoy does not fall back to portless
    # chains, it falls back to the default chain): the passthrough must be a real chain.
    assert not listener.HasField("default_filter_chain")
    assert chains(listener) == [
        ("inbound|8080||-mtls", 8080, "tls", True),
        ("InboundPassthroughCluster", None, "", False),
    ]


def test_mtls_chains_require_a_mesh_client_certificate_and_pass_its_identity_on() -> None:
    listener = listeners.inbound_listener(
        [HTTP_8080, TCP_5000], mtls=WorkloadMtls(MtlsMode.STRICT), trust_domain="corp.example"
    )
    tcp_chain, http_chain = workload_chains(listener)[:2]
    context = tls_pb2.DownstreamTlsContext()
    http_chain.transport_socket.typed_config.Unpack(context)
    assert context.require_client_certificate.value
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    validation = common.combined_validation_context
    assert validation.validation_context_sds_secret_config.name == "ROOTCA"
    sans = validation.default_validation_context.match_typed_subject_alt_names
    assert [s.matcher.prefix for s in sans] == ["spiffe://corp.example/"]
    hcm = json_format.MessageToDict(http_chain.filters[0].typed_config)
    assert hcm["forwardClientCertDetails"] == "SANITIZE_SET"
    assert hcm["setCurrentClientCertDetails"] == {"uri": True}
    assert tcp_chain.filters[0].name == listeners.TCP_PROXY_FILTER
    tcp_context = tls_pb2.DownstreamTlsContext()
    tcp_chain.transport_socket.typed_config.Unpack(tcp_context)
    assert not tcp_context.common_tls_context.alpn_protocols


# --- sources ---------------------------------------------------------------------------


def test_the_file_source_reads_peer_authentications() -> None:
    store = MeshStore()
    load_into(store, [pa_object({"mtls": {"mode": "STRICT"}})])
    assert store.snapshot().peer_authentications[("shop", "p")].mode is MtlsMode.STRICT


def test_a_missing_peer_authentication_crd_counts_as_none_and_syncs() -> None:
    store = MeshStore()
    source = KubeSource(client.ApiClient(), store)
    calls: list[dict[str, Any]] = []

    def not_found(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise ApiException(status=404, reason="Not Found")

    def on_loop(fn: Any) -> None:
        fn()
        source.stop()  # one round is enough

    source._on_loop = on_loop  # type: ignore[method-assign]
    source._run(_Resource(Kind.PEER_AUTHENTICATION, not_found, {}, optional=True))
    assert Kind.PEER_AUTHENTICATION in source._listed
    assert len(calls) == 1
    assert store.snapshot().peer_authentications == {}


def test_every_golden_mtls_case_is_there() -> None:
    cases = {p.stem for p in GOLDEN.glob("mtls-*.yaml")}
    assert {
        "mtls-strict",
        "mtls-permissive",
        "mtls-disable",
        "mtls-port-level",
        "mtls-workload-selector",
        "mtls-mesh-wide",
        "mtls-auto-mixed",
    } <= cases
    for case in cases:
        assert (GOLDEN / f"{case}.json").exists()


def test_a_pod_change_recomputes_only_the_services_it_is_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import controlplane.translate.generate as generate_module

    store = MeshStore()
    other = [
        {**o, "metadata": {**o["metadata"], "name": o["metadata"]["name"].replace("db", "kv")}}
        for o in mesh_objects(meshed=True)
    ]
    other[0]["spec"] = {**other[0]["spec"], "clusterIP": "10.96.0.6", "selector": {"app": "kv"}}
    other[1]["status"] = {"podIP": "10.1.0.8"}
    other[2]["labels"] = {}
    other[2]["metadata"]["labels"] = {"kubernetes.io/service-name": "kv"}
    other[2]["endpoints"] = [{"addresses": ["10.1.0.8"]}]
    load_into(store, [*mesh_objects(meshed=True), *other])
    generator = ConfigGenerator()
    generator.generate(store.snapshot(), CLIENT)[ENDPOINT]

    computed: list[str] = []
    real = generate_module.service_mtls

    def counting(snapshot: Any, service: Any, slices: Any, policies: Any) -> Any:
        computed.append(service.name)
        return real(snapshot, service, slices, policies)

    monkeypatch.setattr(generate_module, "service_mtls", counting)
    store.upsert(Kind.POD, mesh_objects(meshed=False)[1])  # db-0 loses its sidecar
    resources = generator.generate(store.snapshot(), CLIENT)
    assert tls_endpoints(resources, DB_CLUSTER) == []
    assert tls_endpoints(resources, "outbound|5432||kv.data.svc.cluster.local") == ["10.1.0.8"]
    assert computed == ["db"]


def test_a_headless_service_uses_mtls_on_the_ports_where_every_endpoint_takes_it() -> None:
    objects = mesh_objects(
        meshed=True,
        policies=[
            {
                "kind": "PeerAuthentication",
                "metadata": {"name": "db", "namespace": "data"},
                "spec": {
                    "selector": {"matchLabels": {"app": "db"}},
                    "portLevelMtls": {"8080": {"mode": "DISABLE"}},
                },
            }
        ],
    )
    objects[0]["spec"] = {**objects[0]["spec"], "clusterIP": "None"}
    objects[2]["endpoints"] = [{"addresses": ["10.1.0.5"]}]  # only the meshed pod
    resources = render(objects)
    tcp = resources[CLUSTER].by_name[DB_CLUSTER].message
    admin = resources[CLUSTER].by_name[ADMIN_CLUSTER].message
    # Original-destination clusters: no endpoint metadata, so one transport socket for all.
    assert tcp.transport_socket.name == tls.TLS_SOCKET
    assert not tcp.transport_socket_matches
    assert not admin.HasField("transport_socket")  # DISABLE on 8080: plaintext
