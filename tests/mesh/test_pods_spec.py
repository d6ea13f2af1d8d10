"""The harness's reading of a Pod spec, as the kubelet reads it (pure; no root, no cluster)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from testbed.errors import PodError
from testbed.images import Image, image_repository
from testbed.podspec import (
    PodContext,
    capability_set,
    container_argv,
    container_env,
    expand,
    field_value,
    hosts_file,
    parse_quantity,
    resource_value,
)

CONTEXT = PodContext(
    pod_ip="10.77.0.5", host_ip="10.77.0.1", node_name="node-1", host_cpus=4, host_memory=2**33
)
POD: dict[str, Any] = {
    "metadata": {
        "name": "web-0",
        "namespace": "shop",
        "uid": "u-1",
        "labels": {"app": "web", "version": 'v"1'},
        "annotations": {"a": "b"},
    },
    "spec": {"serviceAccountName": "web-sa"},
}
IMAGE = Image(entrypoint=("/bin/remora",), cmd=("--help",), env={"PATH": "/bin"})


def _no_lookup(kind: str, name: str, key: str, optional: bool) -> str | None:
    raise AssertionError("no ConfigMap or Secret expected")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("2000m", Fraction(2)),
        ("100m", Fraction(1, 10)),
        ("1", Fraction(1)),
        ("1.5", Fraction(3, 2)),
        ("1024Mi", Fraction(2**30)),
        ("1G", Fraction(10**9)),
        (2, Fraction(2)),
    ],
)
def test_quantities(raw: str | int, value: Fraction) -> None:
    assert parse_quantity(raw) == value


def test_a_bad_quantity_is_refused() -> None:
    with pytest.raises(PodError, match="not a Kubernetes quantity"):
        parse_quantity("2 cores")


def test_expansion_follows_the_kubelet() -> None:
    env = {"POD_NAMESPACE": "shop"}
    assert expand("$(POD_NAMESPACE).svc.cluster.local", env) == "shop.svc.cluster.local"
    assert expand("$(UNKNOWN)-$$(POD_NAMESPACE)", env) == "$(UNKNOWN)-$(POD_NAMESPACE)"


def test_field_refs_come_from_the_stored_pod_and_the_node() -> None:
    assert field_value(POD, "metadata.name", CONTEXT) == "web-0"
    assert field_value(POD, "spec.serviceAccountName", CONTEXT) == "web-sa"
    assert field_value(POD, "status.podIP", CONTEXT) == "10.77.0.5"
    assert field_value(POD, "status.hostIP", CONTEXT) == "10.77.0.1"
    assert field_value(POD, "spec.nodeName", CONTEXT) == "node-1"
    assert field_value(POD, "metadata.labels['app']", CONTEXT) == "web"
    # The downward API's file format: sorted key="value" lines, quotes escaped.
    assert field_value(POD, "metadata.labels", CONTEXT) == 'app="web"\nversion="v\\"1"'
    with pytest.raises(PodError, match="not supported"):
        field_value(POD, "status.phase", CONTEXT)


def test_resource_refs_round_up_and_fall_back_to_the_node() -> None:
    limited = {"resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}
    assert resource_value(limited, {"resource": "limits.cpu", "divisor": "1"}, CONTEXT) == "2"
    assert (
        resource_value(limited, {"resource": "limits.memory", "divisor": "1Mi"}, CONTEXT) == "1024"
    )
    assert resource_value({}, {"resource": "limits.cpu"}, CONTEXT) == "4"


def test_env_in_order_with_refs_and_expansion() -> None:
    container = {
        "name": "istio-proxy",
        "env": [
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "DOMAIN", "value": "$(POD_NAMESPACE).svc"},
            {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
    }
    env = container_env(POD, container, CONTEXT, _no_lookup, IMAGE)
    assert env == {
        "PATH": "/bin",
        "HOSTNAME": "web-0",
        "POD_NAMESPACE": "shop",
        "DOMAIN": "shop.svc",
        "INSTANCE_IP": "10.77.0.5",
    }


def test_command_replaces_the_entrypoint_and_args_the_cmd() -> None:
    env = {"NS": "shop"}
    assert container_argv({"name": "c", "args": ["proxy", "$(NS)"]}, IMAGE, env) == [
        "/bin/remora",
        "proxy",
        "shop",
    ]
    assert container_argv({"name": "c"}, IMAGE, env) == ["/bin/remora", "--help"]
    assert container_argv({"name": "c", "command": ["python3"], "args": ["-V"]}, IMAGE, env) == [
        "python3",
        "-V",
    ]


def test_capabilities_as_the_runtime_grants_them() -> None:
    init = {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}}
    assert capability_set(init) == {"NET_ADMIN", "NET_RAW"}
    assert "NET_ADMIN" not in capability_set({})
    assert "KILL" not in capability_set({"capabilities": {"drop": ["KILL"]}})


def test_image_repository_drops_tag_and_digest() -> None:
    assert image_repository("docker.io/remora/remora:0.1.0") == "docker.io/remora/remora"
    assert image_repository("localhost:5000/app@sha256:ab") == "localhost:5000/app"
    assert image_repository("localhost:5000/app") == "localhost:5000/app"


def test_hosts_file_has_the_pod_its_aliases_and_the_cluster_names() -> None:
    pod = {
        "metadata": {"name": "web-0"},
        "spec": {"hostAliases": [{"ip": "10.9.9.9", "hostnames": ["db", "db.local"]}]},
    }
    lines = hosts_file(pod, "10.77.0.5", {"istiod.mesh.svc": "10.77.0.1"}).splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert "10.77.0.5\tweb-0" in lines
    assert "10.9.9.9\tdb db.local" in lines
    assert lines[-1] == "10.77.0.1\tistiod.mesh.svc"
