"""Each marker an injection leaves is read back by un-injection as it was written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from injector import prometheus
from injector.config import default_config
from injector.render import inject
from injector.status import InjectionStatus
from injector.volumes import PROXY_VOLUMES, pod_volumes, proxy_volume_mounts

FALLBACK = InjectionStatus(("init", "proxy"), ("proxy",), ("v",), ("s",))


def test_the_status_reads_back_as_written() -> None:
    status = InjectionStatus(("istio-init",), ("istio-proxy",), ("a", "b"), ())
    raw = status.encode("canary")
    assert raw == (
        '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["a","b"],'
        '"imagePullSecrets":null,"revision":"canary"}'
    )
    assert InjectionStatus.decode(raw, FALLBACK) == status


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("not json", FALLBACK),
        ("[1]", FALLBACK),
        ('{"containers": 3}', FALLBACK),  # not a list: ours; missing members: ours
        (
            '{"containers": null, "volumes": [1]}',
            InjectionStatus(("init", "proxy"), (), ("1",), ("s",)),
        ),
    ],
)
def test_an_unreadable_status_falls_back_member_by_member(raw: str, want: InjectionStatus) -> None:
    assert InjectionStatus.decode(raw, FALLBACK) == want


def test_the_proxy_mounts_every_injected_volume_and_nothing_else() -> None:
    names = {volume.name for volume in PROXY_VOLUMES}
    assert {v["name"] for v in pod_volumes(default_config())} == names
    assert [m["name"] for m in proxy_volume_mounts()] == [v.name for v in PROXY_VOLUMES]


@pytest.mark.parametrize(
    ("annotations", "restored"),
    [
        ({}, {}),
        (
            {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        ),
        # Any spelling that sanitises alike is the app's; it comes back canonically spelt.
        ({"prometheus_io_path": "/m"}, {"prometheus.io/path": "/m"}),
    ],
)
def test_prometheus_unmerge_restores_what_merge_replaced(
    annotations: dict[str, str], restored: dict[str, str]
) -> None:
    merged = dict(annotations)
    env: list[dict[str, Any]] = []
    prometheus.merge(merged, 15020, env)
    assert merged == {
        "prometheus.io/port": "15020",
        "prometheus.io/path": prometheus.PROMETHEUS_PATH,
        "prometheus.io/scrape": "true",
    }
    prometheus.unmerge(merged, env[0]["value"] if env else None, 15020)
    assert merged == restored


def test_injecting_twice_equals_injecting_once_with_metrics_merged() -> None:
    pod = {
        "metadata": {"annotations": {"prometheus.io/port": "9090"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }
    once = inject(pod, default_config())
    env = {e["name"]: e.get("value") for e in once["spec"]["containers"][-1]["env"]}
    assert json.loads(env[prometheus.PROMETHEUS_ENV]) == {"port": "9090"}
    again = inject(once, default_config())
    assert again == once


@pytest.mark.parametrize(
    ("value", "merged"),
    [("false", False), ("FALSE", False), ("0", False), ("f", False), ("true", True),
     ("no", True), ("fAlSe", True), ("", True)],
)  # fmt: skip
def test_only_a_go_boolean_false_opts_out_of_the_metrics_merge(value: str, merged: bool) -> None:
    """Istio reads the scrape annotation with strconv.ParseBool; what does not parse scrapes."""
    annotations = {"prometheus.io/scrape": value, "prometheus.io/port": "8080"}
    env: list[dict[str, object]] = []
    prometheus.merge(annotations, 15020, env)
    assert (annotations.get("prometheus.io/port") == "15020") is merged
