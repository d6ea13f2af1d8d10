"""should_inject: Istio's server-side rules and the shipped webhook selectors, case by case."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from injector.config import default_config, parse_config
from injector.decision import label_selector_matches, should_inject


def pod(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    *,
    namespace: str = "demo",
    host_network: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app:1"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {
        "metadata": {
            "namespace": namespace,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": spec,
    }


ENABLED = default_config()
DISABLED = replace(ENABLED, policy="disabled")
INJECT = "sidecar.istio.io/inject"


# The server-side table, after Istio's TestInjectRequired.
@pytest.mark.parametrize(
    ("config", "p", "want", "code"),
    [
        (ENABLED, pod(), True, "policy_enabled"),
        (ENABLED, pod(annotations={INJECT: "false"}), False, "explicit_false"),
        (DISABLED, pod(annotations={INJECT: "true"}), True, "explicit"),
        (DISABLED, pod(), False, "policy_disabled"),
        (ENABLED, pod(host_network=True), False, "host_network"),
        (ENABLED, pod(labels={INJECT: "true"}, host_network=True), False, "host_network"),
        (DISABLED, pod(labels={INJECT: "true"}, annotations={INJECT: "false"}), True, "explicit"),
        (
            DISABLED,
            pod(labels={INJECT: "false"}, annotations={INJECT: "true"}),
            False,
            "explicit_false",
        ),
        # Any other non-empty value opts out, as in Istio; only an empty one means "default".
        (ENABLED, pod(annotations={INJECT: "maybe"}), False, "explicit_false"),
        (DISABLED, pod(annotations={INJECT: "maybe"}), False, "explicit_false"),
        (ENABLED, pod(labels={INJECT: "no"}), False, "explicit_false"),
        (ENABLED, pod(labels={INJECT: ""}), True, "policy_enabled"),
        (DISABLED, pod(labels={INJECT: ""}), False, "policy_disabled"),
        (ENABLED, pod(namespace="kube-system"), False, "system_namespace"),
        (ENABLED, pod(namespace="kube-public"), False, "system_namespace"),
        (ENABLED, pod(namespace="kube-node-lease"), False, "system_namespace"),
        (ENABLED, pod(namespace="istio-system"), False, "system_namespace"),
        (ENABLED, pod(labels={INJECT: "true"}, namespace="kube-system"), False, "system_namespace"),
    ],
)
def test_server_side_rules(config: Any, p: dict[str, Any], want: bool, code: str) -> None:
    decision = should_inject(p, None, config)
    assert (decision.inject, decision.code) == (want, code), decision.reason
    assert decision.reason


@pytest.mark.parametrize("value", ["y", "yes", "true", "on", "Y", "YES", "True", "On", "TRUE"])
def test_yaml_yes_spellings_opt_in_case_blind(value: str) -> None:
    for source in ("labels", "annotations"):
        decision = should_inject(pod(**{source: {INJECT: value}}), None, DISABLED)
        assert (decision.inject, decision.code) == (True, "explicit"), decision.reason


def test_an_explicit_opt_out_beats_the_always_inject_selector() -> None:
    config = parse_config({"alwaysInjectSelector": [{"matchLabels": {"app": "web"}}]})
    decision = should_inject(pod({"app": "web", INJECT: "maybe"}), None, config)
    assert (decision.inject, decision.code) == (False, "explicit_false")
    assert decision.reason.endswith('is "maybe" (only y, yes, true or on asks for injection)')


def test_selectors_never_wins_over_always_and_explicit_wins_over_both() -> None:
    config = parse_config(
        {
            "policy": "disabled",
            "alwaysInjectSelector": [
                {"matchExpressions": [{"key": "always", "operator": "Exists"}]}
            ],
            "neverInjectSelector": [{"matchLabels": {"never": "yes"}}, {}],
        }
    )
    assert should_inject(pod({"always": ""}), None, config).code == "always_inject_selector"
    both = pod({"always": "", "never": "yes"})
    assert should_inject(both, None, config).code == "never_inject_selector"
    explicit = pod({"never": "yes", INJECT: "true"})
    assert should_inject(explicit, None, config).code == "explicit"
    # An empty selector matches nothing (Istio skips empty selectors).
    assert should_inject(pod({"x": "y"}), None, config).code == "policy_disabled"


def test_the_mesh_namespace_follows_the_config() -> None:
    config = replace(ENABLED, mesh_namespace="remora-system")
    assert should_inject(pod(namespace="remora-system"), None, config).code == "system_namespace"
    assert should_inject(pod(namespace="istio-system"), None, config).inject


def test_explicit_namespace_argument_overrides_the_pods() -> None:
    p = pod(namespace="")
    assert should_inject(p, None, ENABLED, namespace="kube-system").code == "system_namespace"


@pytest.mark.parametrize(
    ("ns_labels", "pod_labels", "revision", "want", "code"),
    [
        ({"istio-injection": "enabled"}, {}, "", True, "policy_enabled"),
        ({"istio-injection": "disabled"}, {}, "", False, "namespace_disabled"),
        ({"istio-injection": "disabled"}, {INJECT: "true"}, "", False, "namespace_disabled"),
        ({"istio-injection": "enabled"}, {INJECT: "false"}, "", False, "pod_label_false"),
        ({}, {}, "", False, "namespace_not_enabled"),
        ({}, {INJECT: "true"}, "", True, "explicit"),
        ({"istio.io/rev": "default"}, {}, "", True, "policy_enabled"),
        ({"istio.io/rev": "canary"}, {}, "", False, "other_revision"),
        ({"istio.io/rev": "canary"}, {}, "canary", True, "policy_enabled"),
        (
            {"istio-injection": "enabled", "istio.io/rev": "canary"},
            {},
            "canary",
            False,
            "other_revision",
        ),
        ({}, {"istio.io/rev": "canary"}, "canary", True, "policy_enabled"),
        ({}, {"istio.io/rev": "canary"}, "", False, "other_revision"),
        ({}, {INJECT: "true"}, "canary", False, "namespace_not_enabled"),
    ],
)
def test_webhook_selectors_when_namespace_labels_are_known(
    ns_labels: dict[str, str], pod_labels: dict[str, str], revision: str, want: bool, code: str
) -> None:
    config = replace(ENABLED, revision=revision)
    decision = should_inject(pod(pod_labels), ns_labels, config)
    assert (decision.inject, decision.code) == (want, code), decision.reason


def test_namespaces_by_default_when_enabled() -> None:
    config = replace(ENABLED, enable_namespaces_by_default=True)
    assert should_inject(pod(), {}, config).inject
    assert not should_inject(pod(), {}, ENABLED).inject


@pytest.mark.parametrize(
    ("selector", "labels", "want"),
    [
        ({"matchLabels": {"a": "1"}}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        (
            {"matchLabels": {"b": "x"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]},
            {"a": "", "b": "y"},
            False,
        ),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, Any], labels: dict[str, str], want: bool
) -> None:
    assert label_selector_matches(selector, labels) is want


def test_garbage_shapes_do_not_crash() -> None:
    for thing in (
        {},
        {"metadata": None},
        {"metadata": [], "spec": "x"},
        {"metadata": {"labels": 3}},
    ):
        assert should_inject(thing, None, ENABLED).code in {"policy_enabled", "system_namespace"}
