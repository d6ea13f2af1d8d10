"""Istio's networking kinds in the store: kept in the snapshot, and never silent about them.

Objects go in through the store (as both sources feed it) or a directory (the file source);
what comes out is the snapshot's maps, the two gauges as Prometheus scrapes them, and the
log lines, each said once per object version however often the object is listed again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from controlplane.config_status import WHOLE_KIND, metric_field
from controlplane.metrics import ControlPlaneMetrics
from controlplane.networking.model import DestinationRule, ServiceEntry, Sidecar, VirtualService
from controlplane.sources.files import FileSource
from controlplane.sources.kube import KubeSource, _Resource
from controlplane.store import Kind, MeshStore

VS_SPEC = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
TLS_ROUTE = {
    "match": [{"port": 443, "sniHosts": ["reviews.example.com"]}],
    "route": [{"destination": {"host": "reviews"}}],
}
BAD_WEIGHTS = {
    "hosts": ["reviews"],
    "http": [
        {
            "route": [
                {"destination": {"host": "a"}, "weight": 80},
                {"destination": {"host": "b"}, "weight": 10},
            ]
        }
    ],
}
DR_SPEC = {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
SE_SPEC = {
    "hosts": ["api.example.com"],
    "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
    "resolution": "DNS",
    "location": "MESH_EXTERNAL",
}
SIDECAR_SPEC = {"egress": [{"hosts": ["./*", "istio-system/*"]}]}


@pytest.fixture(autouse=True)
def _no_kind_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status machinery is tested with every kind untranslated, as before translation
    learnt any: these tests use VirtualServices as the example of an untranslated kind.
    What translation honours is checked where it is wired (test_discovery_cli)."""
    monkeypatch.setattr("controlplane.config_status.TRANSLATED_KINDS", frozenset())


def istio(
    kind: str,
    spec: dict[str, Any],
    *,
    name: str = "reviews",
    namespace: str = "shop",
    version: str = "v1",
    resource_version: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": kind,
        "metadata": meta,
        "spec": spec,
    }


def observed() -> tuple[MeshStore, ControlPlaneMetrics]:
    store = MeshStore()
    metrics = ControlPlaneMetrics()
    metrics.report_config_status(store.status)
    return store, metrics


def invalid(metrics: ControlPlaneMetrics, kind: str) -> float | None:
    return metrics.registry.get_sample_value("remora_config_invalid", {"kind": kind})


def unsupported(metrics: ControlPlaneMetrics, kind: str, field: str) -> float | None:
    return metrics.registry.get_sample_value(
        "remora_config_unsupported", {"kind": kind, "field": field}
    )


def warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str | None]]:
    """(message, object, field) of each warning logged so far, then forget them."""
    found = [
        (r.getMessage(), getattr(r, "object", ""), getattr(r, "field", None))
        for r in caplog.records
        if r.levelno == logging.WARNING
    ]
    caplog.clear()
    return found


# --- the snapshot --------------------------------------------------------------------------


def test_each_kind_lands_in_its_snapshot_map_by_namespace_and_name() -> None:
    store = MeshStore()
    store.replace(Kind.VIRTUAL_SERVICE, [istio("VirtualService", VS_SPEC)])
    store.replace(Kind.DESTINATION_RULE, [istio("DestinationRule", DR_SPEC, version="v1beta1")])
    store.replace(Kind.SERVICE_ENTRY, [istio("ServiceEntry", SE_SPEC, name="api")])
    store.replace(
        Kind.SIDECAR, [istio("Sidecar", SIDECAR_SPEC, name="default", version="v1alpha3")]
    )
    snapshot = store.snapshot()
    assert isinstance(snapshot.virtual_services[("shop", "reviews")], VirtualService)
    assert snapshot.virtual_services[("shop", "reviews")].hosts == ("reviews",)
    assert isinstance(snapshot.destination_rules[("shop", "reviews")], DestinationRule)
    assert isinstance(snapshot.service_entries[("shop", "api")], ServiceEntry)
    assert isinstance(snapshot.sidecars[("shop", "default")], Sidecar)
    assert store.counts()["VirtualService"] == 1
    assert snapshot.revisions["Sidecar"] > 0


def test_an_unchanged_kind_keeps_its_very_map_and_an_equal_object_its_very_value() -> None:
    store = MeshStore()
    store.replace(Kind.VIRTUAL_SERVICE, [istio("VirtualService", VS_SPEC)])
    store.replace(Kind.DESTINATION_RULE, [istio("DestinationRule", DR_SPEC)])
    first = store.snapshot()
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", VS_SPEC, name="ratings"))
    second = store.snapshot()
    assert second is not first
    assert second.destination_rules is first.destination_rules
    assert second.services is first.services
    assert second.virtual_services is not first.virtual_services
    assert (
        second.virtual_services[("shop", "reviews")] is first.virtual_services[("shop", "reviews")]
    )
    # A re-list with nothing new is no change at all.
    assert not store.replace(Kind.DESTINATION_RULE, [istio("DestinationRule", DR_SPEC)])
    assert store.snapshot() is second


def test_an_update_refused_takes_the_previous_version_out_of_the_model() -> None:
    store, metrics = observed()
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", VS_SPEC))
    assert unsupported(metrics, "VirtualService", WHOLE_KIND) == 1
    assert store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", BAD_WEIGHTS))
    assert store.snapshot().virtual_services == {}
    assert invalid(metrics, "VirtualService") == 1
    assert unsupported(metrics, "VirtualService", WHOLE_KIND) == 0


# --- refused objects -----------------------------------------------------------------------


def test_a_refused_object_is_logged_once_per_version_counted_and_uncounted_when_fixed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, metrics = observed()
    caplog.set_level(logging.WARNING)
    bad = istio("VirtualService", BAD_WEIGHTS, resource_version="7")
    assert not store.upsert(Kind.VIRTUAL_SERVICE, bad)
    logged = warnings(caplog)
    assert len(logged) == 1
    assert logged[0][0] == "configuration refused, ignored"
    assert invalid(metrics, "VirtualService") == 1
    # Re-listed, re-sent: the same version is not news.
    store.replace(Kind.VIRTUAL_SERVICE, [bad])
    store.upsert(Kind.VIRTUAL_SERVICE, bad)
    assert warnings(caplog) == []
    assert invalid(metrics, "VirtualService") == 1
    # A new version, still refused: said again.
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", BAD_WEIGHTS, resource_version="8"))
    assert [w[0] for w in warnings(caplog)] == ["configuration refused, ignored"]
    # Fixed: counted no more, and in the model.
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", VS_SPEC, resource_version="9"))
    assert invalid(metrics, "VirtualService") == 0
    assert ("shop", "reviews") in store.snapshot().virtual_services


def test_the_refusal_logged_names_the_object_and_the_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, _ = observed()
    caplog.set_level(logging.WARNING)
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", BAD_WEIGHTS))
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.error == (  # type: ignore[attr-defined]
        "VirtualService shop/reviews: spec.http[0].route[1].weight: "
        "weights must add up to 100, they add up to 90"
    )


def test_refused_objects_deleted_or_gone_from_a_relist_are_no_longer_counted() -> None:
    store, metrics = observed()
    store.replace(
        Kind.DESTINATION_RULE,
        [
            istio("DestinationRule", {"host": ""}, name="a"),
            istio("DestinationRule", {"host": ""}, name="b"),
        ],
    )
    assert invalid(metrics, "DestinationRule") == 2
    store.delete(Kind.DESTINATION_RULE, "shop", "a")
    assert invalid(metrics, "DestinationRule") == 1
    store.replace(Kind.DESTINATION_RULE, [])
    assert invalid(metrics, "DestinationRule") == 0


def test_a_core_kind_refused_is_counted_too() -> None:
    store, metrics = observed()
    store.upsert(Kind.SERVICE, {"kind": "Service", "metadata": {"namespace": "shop"}, "spec": {}})
    assert invalid(metrics, "Service") == 1
    store.delete(Kind.SERVICE, "shop", "")
    assert invalid(metrics, "Service") == 0


def sidecar(name: str, created: str, selector: dict[str, str] | None = None) -> dict[str, Any]:
    obj = istio("Sidecar", dict(SIDECAR_SPEC), name=name)
    obj["metadata"]["creationTimestamp"] = created
    if selector is not None:
        obj["spec"]["workloadSelector"] = {"labels": selector}
    return obj


def test_a_namespace_has_one_default_sidecar_the_oldest_and_a_newer_one_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, metrics = observed()
    caplog.set_level(logging.WARNING)
    older = sidecar("older", "2024-01-01T00:00:00Z")
    newer = sidecar("newer", "2024-06-01T00:00:00Z")
    selecting = sidecar("web", "2024-07-01T00:00:00Z", {"app": "web"})
    elsewhere = sidecar("other", "2024-08-01T00:00:00Z")
    elsewhere["metadata"]["namespace"] = "blog"
    store.replace(Kind.SIDECAR, [newer, selecting, older, elsewhere])
    assert set(store.snapshot().sidecars) == {
        ("shop", "older"),
        ("shop", "web"),
        ("blog", "other"),
    }
    assert invalid(metrics, "Sidecar") == 1
    refusals = [r for r in caplog.records if r.getMessage() == "configuration refused, ignored"]
    assert [r.error for r in refusals] == [  # type: ignore[attr-defined]
        "Sidecar shop/newer: spec.workloadSelector: unset, and the older Sidecar shop/older "
        "already has none: a namespace has one default Sidecar, the oldest (as in Istio); give "
        "this one a workloadSelector or delete one of them"
    ]
    caplog.clear()
    # Re-listed as is: nothing new to say.
    store.replace(Kind.SIDECAR, [newer, selecting, older, elsewhere])
    store.upsert(Kind.SIDECAR, older)
    assert warnings(caplog) == []
    # The older one goes: the newer one is the namespace's default now.
    store.delete(Kind.SIDECAR, "shop", "older")
    assert ("shop", "newer") in store.snapshot().sidecars
    assert invalid(metrics, "Sidecar") == 0
    assert warnings(caplog) == [
        (
            "accepted but not applied yet: Remora does not translate this kind yet",
            "Sidecar shop/newer",
            None,
        )
    ]


# --- valid but not honoured ----------------------------------------------------------------


def test_valid_objects_are_accepted_but_not_applied_yet_said_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, metrics = observed()
    caplog.set_level(logging.WARNING)
    spec = {**VS_SPEC, "tls": [TLS_ROUTE, TLS_ROUTE]}
    vs = istio("VirtualService", spec, resource_version="1")
    store.upsert(Kind.VIRTUAL_SERVICE, vs)
    assert warnings(caplog) == [
        (
            "accepted but not applied yet: Remora does not translate this kind yet",
            "VirtualService shop/reviews",
            None,
        ),
        ("accepted but a field is not applied yet", "VirtualService shop/reviews", "spec.tls[0]"),
        ("accepted but a field is not applied yet", "VirtualService shop/reviews", "spec.tls[1]"),
    ]
    assert unsupported(metrics, "VirtualService", WHOLE_KIND) == 1
    assert unsupported(metrics, "VirtualService", "spec.tls[]") == 1  # one object, twice
    # Snapshots, re-lists and the same version again say nothing new.
    store.snapshot()
    store.replace(Kind.VIRTUAL_SERVICE, [vs])
    store.upsert(Kind.VIRTUAL_SERVICE, vs)
    store.snapshot()
    assert warnings(caplog) == []
    # A second object with the field counts too; deleting brings the gauges down.
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", spec, name="ratings"))
    assert unsupported(metrics, "VirtualService", "spec.tls[]") == 2
    store.delete(Kind.VIRTUAL_SERVICE, "shop", "reviews")
    store.delete(Kind.VIRTUAL_SERVICE, "shop", "ratings")
    assert unsupported(metrics, "VirtualService", "spec.tls[]") == 0
    assert unsupported(metrics, "VirtualService", WHOLE_KIND) == 0


def test_removing_the_unsupported_field_uncounts_it_and_keeps_the_whole_kind_count() -> None:
    store, metrics = observed()
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", {**VS_SPEC, "tls": [TLS_ROUTE]}))
    assert unsupported(metrics, "VirtualService", "spec.tls[]") == 1
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", VS_SPEC))
    assert unsupported(metrics, "VirtualService", "spec.tls[]") == 0
    assert unsupported(metrics, "VirtualService", WHOLE_KIND) == 1


def test_every_networking_kind_is_counted_as_not_translated_yet() -> None:
    store, metrics = observed()
    store.upsert(Kind.DESTINATION_RULE, istio("DestinationRule", DR_SPEC))
    store.upsert(Kind.SERVICE_ENTRY, istio("ServiceEntry", SE_SPEC))
    store.upsert(Kind.SIDECAR, istio("Sidecar", SIDECAR_SPEC))
    for kind in ("DestinationRule", "ServiceEntry", "Sidecar"):
        assert unsupported(metrics, kind, WHOLE_KIND) == 1


def test_a_translated_kind_reports_only_its_unsupported_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from controlplane import config_status

    monkeypatch.setattr(config_status, "TRANSLATED_KINDS", frozenset({"VirtualService"}))
    store, metrics = observed()
    store.upsert(Kind.VIRTUAL_SERVICE, istio("VirtualService", {**VS_SPEC, "tls": [TLS_ROUTE]}))
    assert unsupported(metrics, "VirtualService", WHOLE_KIND) is None
    assert unsupported(metrics, "VirtualService", "spec.tls[]") == 1


def test_field_labels_drop_indexes_and_map_keys() -> None:
    assert metric_field("spec.http[3].route[12].headers") == "spec.http[].route[].headers"
    assert metric_field("spec.tls[0]") == "spec.tls[]"
    assert metric_field("spec.trafficPolicy") == "spec.trafficPolicy"


# --- the file source -----------------------------------------------------------------------


def write(directory: Path, name: str, *objects: dict[str, Any]) -> None:
    (directory / name).write_text(yaml.safe_dump_all(objects))


def test_the_file_source_reads_every_version_refuses_the_invalid_and_reports_other_istio_kinds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, metrics = observed()
    caplog.set_level(logging.WARNING)
    gateway = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": "shop"},
        "spec": {"servers": []},
    }
    authz = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {},
    }
    write(
        tmp_path,
        "routing.yaml",
        istio("VirtualService", VS_SPEC, version="v1alpha3"),
        istio("DestinationRule", DR_SPEC, version="v1beta1"),
        istio("Sidecar", SIDECAR_SPEC, name="default"),
    )
    write(tmp_path, "broken.yaml", istio("ServiceEntry", {"hosts": []}, name="api"))
    (tmp_path / "other.json").write_text(json.dumps({"kind": "List", "items": [gateway, authz]}))
    source = FileSource(tmp_path, store)
    assert source.load()
    snapshot = store.snapshot()
    assert set(snapshot.virtual_services) == {("shop", "reviews")}
    assert set(snapshot.destination_rules) == {("shop", "reviews")}
    assert set(snapshot.sidecars) == {("shop", "default")}
    assert snapshot.service_entries == {}
    assert invalid(metrics, "ServiceEntry") == 1
    assert unsupported(metrics, "Gateway", WHOLE_KIND) == 1
    assert unsupported(metrics, "AuthorizationPolicy", WHOLE_KIND) == 1
    logged = warnings(caplog)
    assert ("kind not supported by Remora, ignored", "Gateway shop/ingress", None) in logged
    assert len(logged) == 1 + 3 + 2  # the refusal, three "not applied yet", two kinds
    # An unrelated edit re-reads the directory: nothing said again.
    write(tmp_path, "routing.yaml", istio("VirtualService", VS_SPEC, version="v1alpha3"))
    source.load()
    assert warnings(caplog) == []
    # Fixing, deleting: the gauges come down.
    write(tmp_path, "broken.yaml", istio("ServiceEntry", SE_SPEC, name="api"))
    (tmp_path / "other.json").unlink()
    source.load()
    assert invalid(metrics, "ServiceEntry") == 0
    assert unsupported(metrics, "Gateway", WHOLE_KIND) == 0
    assert unsupported(metrics, "Sidecar", WHOLE_KIND) == 0
    assert unsupported(metrics, "ServiceEntry", WHOLE_KIND) == 1
    assert set(store.snapshot().service_entries) == {("shop", "api")}


# --- the Kubernetes source's versions --------------------------------------------------------


def test_the_kube_source_falls_back_to_the_versions_an_older_istio_serves() -> None:
    store = MeshStore()
    source = KubeSource(client.ApiClient(), store)
    (resource,) = [r for r in source._resources if r.kind is Kind.VIRTUAL_SERVICE]
    assert resource.kwargs["version"] == "v1"
    asked: list[str] = []

    class Listed:
        data = json.dumps(
            {
                "metadata": {"resourceVersion": "5"},
                "items": [istio("VirtualService", VS_SPEC, version="v1beta1")],
            }
        )

    def only_v1beta1(**kwargs: Any) -> Any:
        asked.append(kwargs["version"])
        if kwargs["version"] != "v1beta1":
            raise ApiException(status=404, reason="Not Found")
        return Listed()

    source._on_loop = lambda fn: fn()  # type: ignore[method-assign]
    fallback = _Resource(
        Kind.VIRTUAL_SERVICE,
        only_v1beta1,
        resource.kwargs,
        optional=True,
        fallback_versions=resource.fallback_versions,
    )
    assert source._list(fallback) == "5"
    assert asked == ["v1", "v1beta1"]
    assert source._served[Kind.VIRTUAL_SERVICE]["version"] == "v1beta1"
    assert ("shop", "reviews") in store.snapshot().virtual_services


def test_the_kube_source_counts_a_kind_no_version_of_which_is_served_as_empty() -> None:
    store = MeshStore()
    source = KubeSource(client.ApiClient(), store)
    (resource,) = [r for r in source._resources if r.kind is Kind.SIDECAR]
    asked: list[str] = []

    def not_found(**kwargs: Any) -> Any:
        asked.append(kwargs["version"])
        raise ApiException(status=404, reason="Not Found")

    def on_loop(fn: Any) -> None:
        fn()
        source.stop()

    source._on_loop = on_loop  # type: ignore[method-assign]
    source._run(
        _Resource(
            Kind.SIDECAR,
            not_found,
            resource.kwargs,
            optional=True,
            fallback_versions=resource.fallback_versions,
        )
    )
    assert asked == ["v1", "v1beta1", "v1alpha3"]
    assert Kind.SIDECAR in source._listed
    assert store.snapshot().sidecars == {}
