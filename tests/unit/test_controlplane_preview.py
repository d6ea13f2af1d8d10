"""``remora proxy-config POD all --config-dir DIR``: the config a pod would get, offline.

Driven through the CLI as a user runs it in CI, on a directory of YAML holding what a cluster
would: a Service with two versions behind it, their Pods (with addresses and labels), a
client Pod, and Istio's bookinfo routing (``end-user: jason`` to v2, others to v1) with the
DestinationRule that defines the subsets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from controlplane.cli import proxy_config
from harness.kube_objects import endpoint_slice_object, service_object

REVIEWS = "reviews.default.svc.cluster.local"
V1, V2, CLIENT = "10.1.0.11", "10.1.0.12", "10.1.0.20"


def pod(name: str, ip: str | None, labels: dict[str, str]) -> dict[str, Any]:
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "status": status,
    }


ROUTING = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


@pytest.fixture
def mesh_dir(tmp_path: Path) -> Path:
    slice_ = endpoint_slice_object(
        "reviews",
        "default",
        {"http": 9080},
        [V1, V2],
        pods={V1: "reviews-v1", V2: "reviews-v2"},
    )
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        service_object(
            "reviews", "default", "10.96.0.21", {"http": 9080}, selector={"app": "reviews"}
        ),
        slice_,
        pod("reviews-v1", V1, {"app": "reviews", "version": "v1"}),
        pod("reviews-v2", V2, {"app": "reviews", "version": "v2"}),
        pod("client", CLIENT, {"app": "client"}),
        pod("pending", None, {"app": "client"}),
    ]
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump_all(objects))
    (tmp_path / "istio.yaml").write_text(ROUTING)
    return tmp_path


def run(*args: str) -> Any:
    return CliRunner().invoke(proxy_config, list(args), catch_exceptions=False)


def test_all_resources_of_a_pod_offline_with_the_virtual_service_applied(mesh_dir: Path) -> None:
    result = run("client.default", "all", "--config-dir", str(mesh_dir), "-o", "json")
    assert result.exit_code == 0, result.output
    dump = json.loads(result.output)
    assert set(dump) == {"clusters", "listeners", "routes", "endpoints"}

    (config,) = [r for r in dump["routes"] if r["name"] == "9080"]
    (vhost,) = [v for v in config["virtualHosts"] if f"{REVIEWS}:9080" in v["domains"]]
    jason, others = vhost["routes"]
    assert jason["match"]["headers"][0]["name"] == "end-user"
    assert jason["route"]["cluster"] == f"outbound|9080|v2|{REVIEWS}"
    assert others["route"]["cluster"] == f"outbound|9080|v1|{REVIEWS}"

    clusters = {c["name"] for c in dump["clusters"]}
    assert {f"outbound|9080||{REVIEWS}", f"outbound|9080|v1|{REVIEWS}"} <= clusters
    endpoints = {
        e["clusterName"]: [
            lb["endpoint"]["address"]["socketAddress"]["address"]
            for locality in e.get("endpoints", [])
            for lb in locality["lbEndpoints"]
        ]
        for e in dump["endpoints"]
    }
    assert endpoints[f"outbound|9080|v2|{REVIEWS}"] == [V2]
    assert endpoints[f"outbound|9080|v1|{REVIEWS}"] == [V1]


def test_one_kind_as_a_table(mesh_dir: Path) -> None:
    result = run("client", "routes", "-n", "default", "--config-dir", str(mesh_dir))
    assert result.exit_code == 0, result.output
    assert f"outbound|9080|v2|{REVIEWS}" in result.output


@pytest.mark.parametrize(
    ("pod_ref", "problem"),
    [
        ("nobody.default", "no Pod default/nobody in"),
        ("pending.default", "has no address: set status.podIP"),
    ],
)
def test_a_pod_the_directory_cannot_preview_is_one_line_saying_what_to_add(
    mesh_dir: Path, pod_ref: str, problem: str
) -> None:
    result = run(pod_ref, "all", "--config-dir", str(mesh_dir))
    assert result.exit_code == 1
    assert problem in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_config_dir_does_not_mix_with_a_running_proxys_sources(mesh_dir: Path) -> None:
    result = run("client", "all", "--config-dir", str(mesh_dir), "--from-pod")
    assert result.exit_code == 2
    assert "--config-dir" in result.output
