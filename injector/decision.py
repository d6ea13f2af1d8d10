"""Whether a pod gets a sidecar, and why: Istio's rules, as a pure function.

Two layers decide in Istio, and :func:`should_inject` applies both:

1. the MutatingWebhookConfiguration's selectors, evaluated by the API server (namespace label
   ``istio-injection``, revision label ``istio.io/rev``, pod label ``sidecar.istio.io/inject``).
   The webhook does not see namespace labels, so it passes ``namespace_labels=None`` ("the API
   server already selected this pod") and only layer 2 runs; ``kube-inject`` and tests may pass
   the labels to get the whole decision;
2. the server-side ``injectRequired``: host network, system namespaces, the pod's label (or
   deprecated annotation) ``sidecar.istio.io/inject``, ``neverInjectSelector`` then
   ``alwaysInjectSelector``, then the policy. As in Istio, the label's value is read case-blind
   as a YAML 1.1 "yes" (``y``, ``yes``, ``true``, ``on``: inject); any other non-empty value
   (``false``, ``no``, ``maybe``) is an explicit opt-out, and only an absent or empty value
   leaves the choice to the selectors and the policy.

Every outcome carries a stable ``code`` (a metric label) and a sentence for humans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from injector._data import mapping
from injector.annotations import INJECT, NAMESPACE_INJECTION_LABEL, REVISION
from injector.config import InjectorConfig

INJECT_YES = frozenset(("y", "yes", "true", "on"))
"""The values of ``sidecar.istio.io/inject`` that ask for injection, lower-cased (Istio's
``injectRequired`` takes http://yaml.org/type/bool.html's "yes" spellings). Any other
non-empty value opts out."""
INJECT_NO = frozenset(("n", "no", "false", "off"))  # opt-outs that need no explanation


@dataclass(frozen=True)
class Decision:
    inject: bool
    code: str  # low-cardinality reason, e.g. "host_network"; used as a metric label
    reason: str  # one sentence for logs, warnings and kube-inject's stderr

    def __bool__(self) -> bool:
        return self.inject


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes ``LabelSelector`` semantics: every matchLabels and matchExpressions term holds."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op = expr.get("key"), expr.get("operator")
        values = [str(v) for v in expr.get("values") or ()]
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _selector_is_empty(selector: Mapping[str, Any]) -> bool:
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def _webhook_selects(
    pod_labels: Mapping[str, str], namespace_labels: Mapping[str, str], config: InjectorConfig
) -> Decision | None:
    """What the shipped webhook selectors would do; ``None`` when a webhook would be called."""
    revision = config.revision_name
    if pod_labels.get(INJECT) == "false":
        return Decision(False, "pod_label_false", f"the pod is labelled {INJECT}=false")
    if NAMESPACE_INJECTION_LABEL in namespace_labels:
        value = namespace_labels[NAMESPACE_INJECTION_LABEL]
        if value != "enabled":
            return Decision(
                False,
                "namespace_disabled",
                f"the namespace is labelled {NAMESPACE_INJECTION_LABEL}={value}",
            )
        if config.revision:
            return Decision(
                False,
                "other_revision",
                f"the namespace uses {NAMESPACE_INJECTION_LABEL}=enabled, which selects the "
                f"default revision, not {config.revision!r}",
            )
        return None
    if REVISION in namespace_labels:
        if namespace_labels[REVISION] != revision:
            return Decision(
                False,
                "other_revision",
                f"the namespace selects revision {namespace_labels[REVISION]!r}, "
                f"this injector serves {revision!r}",
            )
        return None
    if REVISION in pod_labels:
        if pod_labels[REVISION] != revision:
            return Decision(
                False,
                "other_revision",
                f"the pod selects revision {pod_labels[REVISION]!r}, "
                f"this injector serves {revision!r}",
            )
        return None
    if pod_labels.get(INJECT) == "true" and not config.revision:
        return None
    if config.enable_namespaces_by_default and INJECT not in pod_labels and not config.revision:
        return None
    return Decision(
        False,
        "namespace_not_enabled",
        f"the namespace is not labelled {NAMESPACE_INJECTION_LABEL}=enabled or {REVISION}=<revision>",
    )


def should_inject(
    pod: Mapping[str, Any],
    namespace_labels: Mapping[str, str] | None,
    config: InjectorConfig,
    *,
    namespace: str | None = None,
) -> Decision:
    """Decide for ``pod`` (a Pod or pod template as plain data).

    ``namespace`` defaults to the pod's ``metadata.namespace``; the webhook passes the
    AdmissionRequest's namespace, which is authoritative for pods created without one.
    """
    metadata = mapping(pod.get("metadata"))
    spec = mapping(pod.get("spec"))
    labels: dict[str, str] = mapping(metadata.get("labels"))
    annotations: dict[str, str] = mapping(metadata.get("annotations"))
    namespace = namespace or metadata.get("namespace") or ""

    if spec.get("hostNetwork"):
        return Decision(False, "host_network", "the pod uses the host network (hostNetwork: true)")
    if namespace in config.ignored_namespaces or namespace == config.mesh_namespace:
        return Decision(False, "system_namespace", f"namespace {namespace!r} is a system namespace")
    if namespace_labels is not None:
        selected = _webhook_selects(labels, namespace_labels, config)
        if selected is not None:
            return selected

    # The label is the current API; the annotation is deprecated but still honoured.
    explicit, source = annotations.get(INJECT), "annotation"
    if INJECT in labels:
        explicit, source = labels[INJECT], "label"
    if explicit:  # any non-empty value is the pod's own choice: selectors and policy do not apply
        said = f'the pod\'s {source} {INJECT} is "{explicit}"'
        if explicit.lower() in INJECT_YES:
            return Decision(True, "explicit", said)
        if explicit.lower() not in INJECT_NO:
            said += " (only y, yes, true or on asks for injection)"
        return Decision(False, "explicit_false", said)

    for selector in config.never_inject_selector:
        if not _selector_is_empty(selector) and label_selector_matches(selector, labels):
            return Decision(False, "never_inject_selector", "the pod matches neverInjectSelector")
    for selector in config.always_inject_selector:
        if not _selector_is_empty(selector) and label_selector_matches(selector, labels):
            return Decision(True, "always_inject_selector", "the pod matches alwaysInjectSelector")

    if config.policy == "enabled":
        return Decision(True, "policy_enabled", "the injection policy is enabled")
    return Decision(False, "policy_disabled", "the injection policy is disabled")
