"""The generated mTLS resources carry real traffic between two real Envoys.

The client Envoy gets the translated outbound cluster and load assignment (made static),
the server Envoy the translated inbound listener, bound to a loopback port instead of
sitting behind the capture rules (the workload port is that loopback port, so the chains
match as they would); both fetch their certificates over SDS from the test mesh CA
(:mod:`harness.sds`). What is checked is what a user relies on: the
request arrives, the application learns the caller's SPIFFE id in XFCC, plaintext is
refused, and a server with the wrong identity is not trusted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from google.protobuf import json_format

from controlplane.model import MtlsMode, Protocol
from controlplane.proxy import parse_proxy_identity
from controlplane.resources import CLUSTER, ENDPOINT, LISTENER
from controlplane.sources.files import load_into
from controlplane.store import MeshStore
from controlplane.translate import listeners
from controlplane.translate.generate import translate
from controlplane.translate.listeners import InboundPort
from controlplane.translate.peer_authentication import WorkloadMtls
from harness.envoy import EnvoyProcess
from harness.kube_objects import endpoint_slice_object, service_object
from harness.polling import wait_for
from harness.sds import shared_sds
from meshlib.ports import free_port

pytestmark = pytest.mark.envoy

WEB_CLUSTER = "outbound|80||web.shop.svc.cluster.local"


class _EchoXfcc(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (self.headers.get("x-forwarded-client-cert") or "none").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoXfcc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _mesh(server_port: int, server_account: str, mode: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "shop"},
            "spec": {"mtls": {"mode": mode}},
        },
        service_object(
            "web",
            "shop",
            "10.96.0.10",
            {"http": 80},
            target_ports={"http": server_port},
            selector={"app": "web"},
        ),
        {
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "namespace": "shop",
                "labels": {"app": "web", "security.istio.io/tlsMode": "istio"},
            },
            "spec": {
                "serviceAccountName": server_account,
                "containers": [{"name": "app", "ports": [{"containerPort": server_port}]}],
            },
            "status": {"podIP": "127.0.0.1"},
        },
        # The endpoint is the server Envoy's listener (no capture redirects here).
        endpoint_slice_object(
            "web",
            "shop",
            {"http": server_port},
            ["127.0.0.1"],
            name="web-x",
            pods={"127.0.0.1": "web-1"},
        ),
    ]


def _node(pod: str, account: str) -> dict[str, Any]:
    return {
        "id": f"sidecar~127.0.0.1~{pod}.shop~shop.svc.cluster.local",
        "cluster": f"{pod}.shop",
        "metadata": {"NAME": pod, "NAMESPACE": "shop", "SERVICE_ACCOUNT": account},
    }


def _http_listener(port: int, cluster: str) -> dict[str, Any]:
    return {
        "name": "client",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "client",
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "route": {"cluster": cluster},
                                            }
                                        ],
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
                        },
                    }
                ]
            }
        ],
    }


def _wait_ready(envoy: EnvoyProcess) -> None:
    wait_for(lambda: envoy.get("/ready").status_code == 200, what="envoy ready")


def _get_ok(port: int) -> httpx.Response | None:
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    return response if response.status_code == 200 else None


def _start_pair(
    app_port: int, expected_account: str, mode: str = "STRICT"
) -> tuple[EnvoyProcess, EnvoyProcess, int]:
    """A client Envoy (port returned) and a server Envoy with the translated resources."""
    server_port, client_port = free_port(), free_port()
    store = MeshStore()
    load_into(store, _mesh(server_port, expected_account, mode))
    client = parse_proxy_identity(
        "sidecar~127.0.0.2~client-1.shop~shop.svc.cluster.local", {"SERVICE_ACCOUNT": "client"}
    )
    server = parse_proxy_identity("sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local", {})
    client_resources = translate(store.snapshot(), client)
    server_resources = translate(store.snapshot(), server)

    cluster = json_format.MessageToDict(
        client_resources[CLUSTER].by_name[WEB_CLUSTER].message, preserving_proto_field_name=True
    )
    assert "transport_socket_matches" in cluster
    cluster.pop("eds_cluster_config")
    cluster["type"] = "STATIC"
    cluster["load_assignment"] = json_format.MessageToDict(
        client_resources[ENDPOINT].by_name[WEB_CLUSTER].message, preserving_proto_field_name=True
    )
    sds = shared_sds().cluster()

    server_listener = json_format.MessageToDict(
        server_resources[LISTENER].by_name["virtualInbound"].message,
        preserving_proto_field_name=True,
    )
    server_listener["address"] = {
        "socket_address": {"address": "127.0.0.1", "port_value": server_port}
    }
    # No capture here: the destination is the listener's own address already.
    server_listener["listener_filters"] = [
        f
        for f in server_listener["listener_filters"]
        if f["name"] == listeners.TLS_INSPECTOR_FILTER
    ]
    # Every way in leads to the app; which chain was taken shows in what the app sees.
    server_clusters = [
        _static_cluster(name, app_port)
        for name in (f"inbound|{server_port}||", "InboundPassthroughCluster")
    ]
    server_envoy = EnvoyProcess(
        "web-1",
        "shop",
        "127.0.0.1",
        1,
        bootstrap_overrides={
            "node": _node("web-1", "web"),
            "dynamic_resources": {},
            "static_resources": {
                "clusters": [*server_clusters, sds],
                "listeners": [server_listener],
            },
        },
    )
    client_envoy = EnvoyProcess(
        "client-1",
        "shop",
        "127.0.0.2",
        1,
        bootstrap_overrides={
            "node": _node("client-1", "client"),
            "dynamic_resources": {},
            "static_resources": {
                "clusters": [cluster, sds],
                "listeners": [_http_listener(client_port, WEB_CLUSTER)],
            },
        },
    )
    for envoy in (server_envoy, client_envoy):
        _wait_ready(envoy)
    return client_envoy, server_envoy, client_port


def test_mtls_carries_the_caller_identity_and_strict_refuses_plaintext(app_port: int) -> None:
    client_envoy, server_envoy, client_port = _start_pair(app_port, "web")
    with client_envoy, server_envoy:
        response = wait_for(lambda: _get_ok(client_port), what="a request through both Envoys")
        xfcc = response.text
        assert "URI=spiffe://cluster.local/ns/shop/sa/client" in xfcc, xfcc
        assert "By=spiffe://cluster.local/ns/shop/sa/web" in xfcc, xfcc
        assert client_envoy.stat(f"cluster.{WEB_CLUSTER}.ssl.handshake") >= 1
        # Straight to the server Envoy without TLS: refused.
        server_port = server_envoy.bootstrap["static_resources"]["listeners"][0]["address"][
            "socket_address"
        ]["port_value"]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server_port}/", timeout=5)


def test_permissive_terminates_mesh_mtls_by_its_alpn_and_still_takes_plaintext(
    app_port: int,
) -> None:
    client_envoy, server_envoy, client_port = _start_pair(app_port, "web", "PERMISSIVE")
    with client_envoy, server_envoy:
        # The client's mesh ALPN picked the mTLS chain (the app-TLS passthrough would have
        # handed TLS bytes to a plaintext app, and no XFCC would exist).
        response = wait_for(lambda: _get_ok(client_port), what="a request through both Envoys")
        assert "URI=spiffe://cluster.local/ns/shop/sa/client" in response.text, response.text
        server_port = server_envoy.bootstrap["static_resources"]["listeners"][0]["address"][
            "socket_address"
        ]["port_value"]
        plain = httpx.get(
            f"http://127.0.0.1:{server_port}/",
            headers={"x-forwarded-client-cert": "URI=spiffe://forged"},
            timeout=5,
        )
        assert plain.status_code == 200
        assert plain.text == "none"  # a forged XFCC does not get through


def test_a_server_with_another_identity_is_not_trusted(app_port: int) -> None:
    # The model says the pod runs as "db", but the server presents ".../sa/web".
    client_envoy, server_envoy, client_port = _start_pair(app_port, "db")
    with client_envoy, server_envoy:
        response = httpx.get(f"http://127.0.0.1:{client_port}/", timeout=5)
        assert response.status_code == 503
        assert client_envoy.stat(f"cluster.{WEB_CLUSTER}.ssl.fail_verify_san") >= 1


def _static_cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def test_plaintext_to_a_strict_port_is_refused_while_a_permissive_port_takes_it(
    app_port: int,
) -> None:
    """Envoy narrows by port first and does not fall back to port-less chains.

    The translated listener, bound to two loopback ports instead of behind the capture
    rules: port ``strict`` is STRICT by a port-level override, port ``open`` follows the
    workload's PERMISSIVE. Every cluster leads to the app, the passthrough included, so
    were plaintext to fall through to the passthrough chain it would get a 200.
    """
    strict, open_port = free_port(), free_port()
    mtls = WorkloadMtls(MtlsMode.PERMISSIVE, ((strict, MtlsMode.STRICT),))
    listener = listeners.inbound_listener(
        [InboundPort(strict, Protocol.HTTP), InboundPort(open_port, Protocol.HTTP)], mtls=mtls
    )
    as_dict = json_format.MessageToDict(listener, preserving_proto_field_name=True)
    as_dict["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": strict}}
    as_dict["additional_addresses"] = [
        {"address": {"socket_address": {"address": "127.0.0.1", "port_value": open_port}}}
    ]
    # No capture here: the destination is the listener's own address already.
    as_dict["listener_filters"] = [
        f for f in as_dict["listener_filters"] if f["name"] == listeners.TLS_INSPECTOR_FILTER
    ]
    assert {c["name"] for c in as_dict["filter_chains"]} >= {"InboundPassthroughCluster"}
    clusters = [
        _static_cluster(name, app_port)
        for name in (f"inbound|{strict}||", f"inbound|{open_port}||", "InboundPassthroughCluster")
    ]
    envoy = EnvoyProcess(
        "web-1",
        "shop",
        "127.0.0.1",
        1,
        bootstrap_overrides={
            "node": _node("web-1", "web"),
            "dynamic_resources": {},
            "static_resources": {
                "clusters": [*clusters, shared_sds().cluster()],
                "listeners": [as_dict],
            },
        },
    )
    with envoy:
        _wait_ready(envoy)
        plain = wait_for(lambda: _get_ok(open_port), what="plaintext to the PERMISSIVE port")
        assert plain.text == "none"  # no client certificate, no XFCC
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{strict}/", timeout=5)
        assert envoy.stat(f"listener.127.0.0.1_{strict}.no_filter_chain_match") >= 1
