"""The Helm chart, rendered with helm itself and checked offline.

Every value set in ``charts/remora/ci/`` is linted (``helm lint --strict``), rendered
(``helm template --include-crds``) and every object validated strictly against the OpenAPI
schemas of the test bed's Kubernetes minor (``kubernetes-validate``). On top of schema
validity, the checks below are the ones a wrong chart would break: labels and selectors that
match, security contexts, names that Services and RBAC rules point at, the webhook's Istio
selector matrix evaluated on namespaces and pods, and config the injector really loads.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness.golden import updating
from injector.config import parse_config
from meshlib.meshconfig import parse_mesh_config
from testbed.versions import KUBERNETES_VERSION

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "remora"
VALUE_SETS = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "mesh-ns"
RELEASE = "rel"
# kubernetes-validate ships schemas per minor (vX.Y.0); the test bed runs KUBERNETES_VERSION.
SCHEMA_VERSION = ".".join(KUBERNETES_VERSION.lstrip("v").split(".")[:2]) + ".0"
KUBE_VERSION = KUBERNETES_VERSION.lstrip("v")
RECOMMENDED_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
)
# Istio's networking kinds the control plane reads: plural -> kind, short names and printer
# columns (name: jsonPath) as Istio's own CRDs (manifests/charts/base/files/crd-all.gen.yaml).
NETWORKING_CRDS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "virtualservices": (
        "VirtualService",
        ["vs"],
        {
            "Gateways": ".spec.gateways",
            "Hosts": ".spec.hosts",
            "Age": ".metadata.creationTimestamp",
        },
    ),
    "destinationrules": (
        "DestinationRule",
        ["dr"],
        {"Host": ".spec.host", "Age": ".metadata.creationTimestamp"},
    ),
    "serviceentries": (
        "ServiceEntry",
        ["se"],
        {
            "Hosts": ".spec.hosts",
            "Location": ".spec.location",
            "Resolution": ".spec.resolution",
            "Age": ".metadata.creationTimestamp",
        },
    ),
    "sidecars": ("Sidecar", [], {}),
}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "CustomResourceDefinition",
}


@functools.cache
def helm() -> str:
    """helm, as built by hack/testbed/build.sh; a missing helm is a broken setup, not a skip."""
    out = subprocess.run(
        [str(ROOT / "hack/testbed/build.sh"), "--print-helm"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = out.stdout.strip()
    if out.returncode != 0 or not path or not Path(path).is_file():
        pytest.fail(
            f"helm is missing ({out.stderr.strip() or path!r}): run hack/testbed/build.sh "
            "(make setup) to build it",
            pytrace=False,
        )
    return path


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, check=False)


def render(
    values: Path | None = None,
    *sets: str,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
    crds: bool = True,
) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
    args += ["--include-crds"] if crds else []
    args += ["-f", str(values)] if values else []
    for item in sets:
        args += ["--set", item]
    out = run_helm(*args)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@functools.cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(CHART / "ci" / name))


def by_kind(docs: Any, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: Any, kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in by_kind(docs, kind)
        if component is None
        or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]


def values_of(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / name).read_text()) or {}


set_names = [p.name for p in VALUE_SETS]


def test_there_are_at_least_four_value_sets_including_the_defaults() -> None:
    assert len(VALUE_SETS) >= 4
    assert values_of("default-values.yaml") == {}


@pytest.mark.parametrize("name", set_names)
def test_helm_lint_strict_passes(name: str) -> None:
    out = run_helm(
        "lint",
        str(CHART),
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(CHART / "ci" / name),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("name", set_names)
def test_every_object_is_valid_for_the_test_beds_kubernetes(name: str) -> None:
    docs = rendered(name)
    assert {"Deployment", "MutatingWebhookConfiguration", "CustomResourceDefinition"} <= {
        d["kind"] for d in docs
    }
    for doc in docs:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue  # not a Kubernetes API: checked in test_cert_manager_mode
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def test_the_validator_rejects_what_it_should() -> None:
    """Guards the check above: a misspelt field or a wrong type must fail validation."""
    deploy = json.loads(json.dumps(one(rendered("default-values.yaml"), "Deployment", "injector")))
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, SCHEMA_VERSION, strict=True)
    deploy = json.loads(json.dumps(one(rendered("default-values.yaml"), "Deployment", "injector")))
    deploy["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("name", set_names)
def test_labels_follow_helm_conventions_and_nothing_is_hard_coded_to_a_namespace(name: str) -> None:
    for doc in rendered(name):
        meta = doc["metadata"]
        if doc["kind"] == "CustomResourceDefinition":
            assert "namespace" not in meta
            continue
        labels = meta.get("labels", {})
        missing = [key for key in RECOMMENDED_LABELS if key not in labels]
        assert not missing, f"{doc['kind']}/{meta['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == NAMESPACE, f"{doc['kind']}/{meta['name']}"


def _pod_specs(docs: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, d["spec"]["template"]) for d in by_kind(docs, "Deployment")]


@pytest.mark.parametrize("name", set_names)
def test_pods_are_hardened_with_requests_and_probes(name: str) -> None:
    for deploy, template in _pod_specs(rendered(name)):
        spec = template["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] != 0
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
        assert spec["serviceAccountName"]
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
            port_names = {p["name"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["port"] in port_names
            # A read-only root needs a writable /tmp for Python.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
        mounted = {m["name"] for c in spec["containers"] for m in c["volumeMounts"]}
        assert mounted == {v["name"] for v in spec["volumes"]}, deploy["metadata"]["name"]


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", set_names)
def test_services_and_budgets_select_exactly_their_component(name: str) -> None:
    docs = rendered(name)
    pods = {d["metadata"]["labels"]["app.kubernetes.io/component"]: t for d, t in _pod_specs(docs)}
    assert set(pods) == {"discovery", "injector"}
    for kind, get_selector in (
        ("Service", lambda d: d["spec"]["selector"]),
        ("PodDisruptionBudget", lambda d: d["spec"]["selector"]["matchLabels"]),
    ):
        for obj in by_kind(docs, kind):
            component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
            selector = get_selector(obj)
            matched = [c for c, t in pods.items() if _selects(selector, t["metadata"]["labels"])]
            assert matched == [component], f"{kind}/{obj['metadata']['name']} selects {matched}"
    for deploy, template in _pod_specs(docs):
        assert _selects(deploy["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    # Every Service targetPort names a port of the pods it selects.
    for svc in by_kind(docs, "Service"):
        component = svc["metadata"]["labels"]["app.kubernetes.io/component"]
        names = {p["name"] for c in pods[component]["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names


def test_injector_is_highly_available_by_default() -> None:
    docs = rendered("default-values.yaml")
    deploy = one(docs, "Deployment", "injector")
    assert deploy["spec"]["replicas"] >= 2
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert _selects(
        term["labelSelector"]["matchLabels"], deploy["spec"]["template"]["metadata"]["labels"]
    )
    pdb = one(docs, "PodDisruptionBudget", "injector")
    assert pdb["spec"]["maxUnavailable"] == 1
    one(docs, "PodDisruptionBudget", "discovery")
    # hard anti-affinity: one replica per node
    canary = one(rendered("canary-revision-values.yaml"), "Deployment", "injector")
    assert canary["spec"]["replicas"] == 3
    assert (
        "requiredDuringSchedulingIgnoredDuringExecution"
        in (canary["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"])
    )


# --- the MutatingWebhookConfiguration ------------------------------------------------------


def _expr_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values", [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"unknown operator {op}")


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    selector = selector or {}
    return _selects(selector.get("matchLabels", {}), labels) and all(
        _expr_matches(e, labels) for e in selector.get("matchExpressions", [])
    )


def firing(
    mwc: Mapping[str, Any],
    namespace: str,
    ns_labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> list[str]:
    """The webhook entries the API server would call for a Pod (as the API server decides)."""
    ns = {"kubernetes.io/metadata.name": namespace, **ns_labels}
    return [
        w["name"].split(".sidecar-injector")[0]
        for w in mwc["webhooks"]
        if _selector_matches(w.get("namespaceSelector"), ns)
        and _selector_matches(w.get("objectSelector"), pod_labels)
    ]


INJ, REV = {"istio-injection": "enabled"}, {"istio.io/rev": "default"}
OPT_OUT, OPT_IN = {"sidecar.istio.io/inject": "false"}, {"sidecar.istio.io/inject": "true"}
DEFAULT_REVISION_TABLE = [
    # namespace, namespace labels, pod labels, entries that fire
    ("shop", INJ, {}, ["namespace"]),
    ("shop", INJ, {"app": "web"}, ["namespace"]),
    ("shop", INJ, OPT_OUT, []),
    ("shop", {"istio-injection": "disabled"}, {}, []),
    ("shop", {"istio-injection": "disabled"}, OPT_IN, []),
    ("shop", {}, {}, []),
    ("shop", {}, OPT_IN, ["object"]),
    ("shop", {}, {"istio.io/rev": "default"}, ["rev.object"]),
    ("shop", REV, {}, ["rev.namespace"]),
    ("shop", REV, OPT_OUT, []),
    ("shop", {"istio.io/rev": "canary"}, {}, []),
    ("shop", {**INJ, **REV}, {}, ["namespace"]),  # istio-injection wins over istio.io/rev
    # never: the mesh's own namespace and the system ones, however labelled
    (NAMESPACE, INJ, {}, []),
    (NAMESPACE, {}, OPT_IN, []),
    ("kube-system", INJ, {}, []),
    ("kube-system", {}, OPT_IN, []),
    ("kube-public", REV, {}, []),
    ("kube-node-lease", {}, {"istio.io/rev": "default"}, []),
]


@pytest.mark.parametrize(
    ("namespace", "ns_labels", "pod_labels", "expected"), DEFAULT_REVISION_TABLE
)
def test_webhook_selectors_match_istios_matrix(
    namespace: str, ns_labels: dict[str, str], pod_labels: dict[str, str], expected: list[str]
) -> None:
    mwc = one(rendered("default-values.yaml"), "MutatingWebhookConfiguration")
    assert firing(mwc, namespace, ns_labels, pod_labels) == expected


def test_a_named_revision_answers_only_its_revision_label() -> None:
    docs = rendered("canary-revision-values.yaml")
    mwc = one(docs, "MutatingWebhookConfiguration")
    assert [w["name"] for w in mwc["webhooks"]] == [
        "rev.namespace.sidecar-injector.istio.io",
        "rev.object.sidecar-injector.istio.io",
    ]
    assert firing(mwc, "shop", {"istio.io/rev": "canary"}, {}) == ["rev.namespace"]
    assert firing(mwc, "shop", {}, {"istio.io/rev": "canary"}) == ["rev.object"]
    assert firing(mwc, "shop", INJ, {}) == []
    assert firing(mwc, "shop", REV, {}) == []
    assert firing(mwc, "monitoring", {"istio.io/rev": "canary"}, {}) == []  # excludedNamespaces
    assert mwc["metadata"]["labels"]["istio.io/rev"] == "canary"
    names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    assert names == {"istio-canary", "istio-sidecar-injector-canary"}


def test_enable_namespaces_by_default_adds_the_auto_entry() -> None:
    mwc = one(rendered("cert-manager-values.yaml"), "MutatingWebhookConfiguration")
    assert firing(mwc, "shop", {}, {}) == ["auto"]
    assert firing(mwc, "shop", {}, OPT_OUT) == []
    assert firing(mwc, "kube-system", {}, {}) == []


@pytest.mark.parametrize("name", set_names)
def test_webhook_entries_are_safe_and_call_the_injector(name: str) -> None:
    docs = rendered(name)
    values = values_of(name).get("injector", {})
    mwc = one(docs, "MutatingWebhookConfiguration")
    svc = one(docs, "Service", "injector")
    for hook in mwc["webhooks"]:
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["failurePolicy"] == values.get("failurePolicy", "Fail")
        assert hook["timeoutSeconds"] == values.get("timeoutSeconds", 10)
        assert hook["reinvocationPolicy"] == values.get("reinvocationPolicy", "Never")
        assert hook["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        client = hook["clientConfig"]
        if "webhookURL" in values:
            assert client == {
                "url": values["webhookURL"],
                "caBundle": values["certificates"]["secret"]["caBundle"],
            }
        else:
            assert client["service"] == {
                "name": svc["metadata"]["name"],
                "namespace": NAMESPACE,
                "path": "/inject",
                "port": svc["spec"]["ports"][0]["port"],
            }
            # runtime: the injector writes it; certManager: cert-manager's cainjector does.
            assert "caBundle" not in client


def test_cluster_scoped_names_differ_between_releases_in_two_namespaces() -> None:
    def cluster_names(namespace: str) -> set[tuple[str, str]]:
        return {
            (d["kind"], d["metadata"]["name"])
            for d in render(None, namespace=namespace, crds=False)
            if d["kind"] in CLUSTER_SCOPED
        }

    first, second = cluster_names("team-a"), cluster_names("team-b")
    assert len(first) == 5  # 2 ClusterRoles, 2 bindings, the webhook configuration
    assert first.isdisjoint(second)


# --- RBAC ---------------------------------------------------------------------------------


def _rules(docs: Any, kind: str, component: str) -> list[dict[str, Any]]:
    return one(docs, kind, component)["rules"]


def _grants(
    rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None
) -> bool:
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


def _container_args(docs: Any, component: str) -> list[str]:
    return one(docs, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]["args"]


def _arg(args: list[str], flag: str) -> str:
    found = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    assert len(found) == 1, f"{flag} in {args}"
    return found[0]


def test_no_role_grants_wildcards_or_deletes() -> None:
    for name in set_names:
        for kind in ("ClusterRole", "Role"):
            for role in by_kind(rendered(name), kind):
                for rule in role["rules"]:
                    for key in ("apiGroups", "resources", "verbs"):
                        assert "*" not in rule[key], role["metadata"]["name"]
                    assert not {
                        "delete",
                        "deletecollection",
                        "escalate",
                        "bind",
                        "impersonate",
                    } & set(rule["verbs"])


def test_injector_rbac_names_exactly_its_webhook_and_secret_in_runtime_mode() -> None:
    docs = rendered("default-values.yaml")
    mwc_name = one(docs, "MutatingWebhookConfiguration")["metadata"]["name"]
    args = _container_args(docs, "injector")
    assert _arg(args, "--webhook-configuration") == mwc_name
    secret = _arg(args, "--cert-secret")
    cluster = _rules(docs, "ClusterRole", "injector")
    assert _grants(
        cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", mwc_name
    )
    assert not _grants(
        cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", "other"
    )
    role = _rules(docs, "Role", "injector")
    assert _grants(role, "", "secrets", "update", secret)
    assert not _grants(role, "", "secrets", "get", "cacerts")
    assert not _grants(cluster, "", "pods", "list")
    # The serving certificate's names are the Service's DNS names.
    svc = one(docs, "Service", "injector")["metadata"]["name"]
    sans = [a.split("=", 1)[1] for a in args if a.startswith("--san=")]
    assert f"{svc}.{NAMESPACE}.svc" in sans


@pytest.mark.parametrize("name", ["cert-manager-values.yaml", "dev-url-values.yaml"])
def test_injector_gets_no_write_access_when_it_does_not_manage_certificates(name: str) -> None:
    docs = rendered(name)
    cluster = _rules(docs, "ClusterRole", "injector")
    mwc_name = one(docs, "MutatingWebhookConfiguration")["metadata"]["name"]
    assert not _grants(
        cluster, "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", mwc_name
    )
    assert not by_kind([d for d in docs if d["kind"] == "Role"], "Role") or all(
        r["metadata"]["labels"]["app.kubernetes.io/component"] != "injector"
        for r in by_kind(docs, "Role")
    )
    args = _container_args(docs, "injector")
    assert not [a for a in args if a.startswith(("--cert-secret", "--webhook-configuration"))]


def test_control_plane_rbac_reads_what_it_watches_and_the_ca_part_is_optional() -> None:
    docs = rendered("default-values.yaml")
    cluster = _rules(docs, "ClusterRole", "discovery")
    for group, resource in (
        ("", "namespaces"),
        ("", "services"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
        ("security.istio.io", "peerauthentications"),
        *(("networking.istio.io", plural) for plural in NETWORKING_CRDS),
    ):
        assert _grants(cluster, group, resource, "list") and _grants(
            cluster, group, resource, "watch"
        )
        assert not _grants(cluster, group, resource, "update")
    # Only the four kinds the control plane reads: no Gateway, EnvoyFilter, WorkloadEntry...
    networking = [r for r in cluster if "networking.istio.io" in r["apiGroups"]]
    assert networking == [
        {
            "apiGroups": ["networking.istio.io"],
            "resources": list(NETWORKING_CRDS),
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert _grants(cluster, "authentication.k8s.io", "tokenreviews", "create")
    assert _grants(cluster, "", "configmaps", "update", "istio-ca-root-cert")
    # The CA repairs the root ConfigMap everywhere: a name-filtered watch across namespaces.
    assert _grants(cluster, "", "configmaps", "watch", "istio-ca-root-cert")
    assert not _grants(cluster, "", "configmaps", "update", "istio")
    assert not _grants(cluster, "", "secrets", "get", "cacerts")  # only in its own namespace
    role = _rules(docs, "Role", "discovery")
    assert _grants(role, "", "configmaps", "watch", "istio")
    assert not _grants(role, "", "configmaps", "get", "other")
    assert _grants(role, "", "secrets", "get", "cacerts")
    assert _grants(role, "", "secrets", "get", "istio-ca-secret")  # the self-signed root
    assert _grants(role, "", "secrets", "create")
    assert not _grants(role, "", "secrets", "get", "other")
    assert not _grants(role, "", "secrets", "update", "istio-ca-secret")
    no_ca = rendered("cert-manager-values.yaml")
    assert not _grants(
        _rules(no_ca, "ClusterRole", "discovery"), "authentication.k8s.io", "tokenreviews", "create"
    )
    assert not _grants(_rules(no_ca, "Role", "discovery"), "", "secrets", "get", "cacerts")


# --- config the roles load ------------------------------------------------------------------


@pytest.mark.parametrize("name", set_names)
def test_injector_and_mesh_config_load_in_remora(name: str) -> None:
    docs = rendered(name)
    values = values_of(name)
    maps = {d["metadata"]["name"]: d["data"] for d in by_kind(docs, "ConfigMap")}
    suffix = f"-{values['revision']}" if values.get("revision") else ""
    injector = parse_config(yaml.safe_load(maps[f"istio-sidecar-injector{suffix}"]["config"]))
    mesh = parse_mesh_config(yaml.safe_load(maps[f"istio{suffix}"]["mesh"]))
    image = values.get("image", {})
    assert injector.proxy.hub == image.get("hub", "docker.io/remora")
    assert injector.proxy.tag == image.get("tag", "0.1.0")
    assert injector.mesh_namespace == NAMESPACE
    assert injector.revision == values.get("revision", "")
    assert {NAMESPACE, "kube-system"} <= set(injector.ignored_namespaces)
    assert mesh.root_namespace == NAMESPACE
    # Sidecars are pointed at the control plane Service, on the port it exposes.
    svc = one(docs, "Service", "discovery")
    host, port = mesh.default_config.discovery_address.rsplit(":", 1)
    assert host == f"{svc['metadata']['name']}.{NAMESPACE}.svc"
    assert int(port) in {p["port"] for p in svc["spec"]["ports"] if p["name"] != "http-monitoring"}
    tls = values.get("controlPlane", {}).get("tls", {}).get("enabled", True)
    assert int(port) == (15012 if tls else 15010)


def test_values_reach_the_injector_config() -> None:
    docs = rendered("canary-revision-values.yaml")
    config = parse_config(yaml.safe_load(one(docs, "ConfigMap", "injector")["data"]["config"]))
    assert config.native_sidecars == "true"
    assert config.policy == "disabled"
    assert config.always_inject_selector == ({"matchLabels": {"mesh": "always"}},)
    assert "monitoring" in config.ignored_namespaces
    mesh = parse_mesh_config(yaml.safe_load(one(docs, "ConfigMap", "discovery")["data"]["mesh"]))
    assert mesh.trust_domain == "canary.example.org"
    assert mesh.outbound_traffic_policy == "REGISTRY_ONLY"


def test_control_plane_args_follow_the_values() -> None:
    docs = rendered("default-values.yaml")
    args = _container_args(docs, "discovery")
    assert args[0] == "discovery"
    assert _arg(args, "--mesh-namespace") == NAMESPACE
    assert _arg(args, "--xds-port") == "15010"
    assert _arg(args, "--monitoring-port") == "15014"
    inj = _container_args(docs, "injector")
    assert inj[0] == "webhook"
    assert _arg(inj, "--config") == "/etc/remora/injector/config"
    dev = _container_args(rendered("dev-url-values.yaml"), "discovery")
    assert _arg(dev, "--log-format") == "text"


def test_cert_manager_mode() -> None:
    docs = rendered("cert-manager-values.yaml")
    mwc = one(docs, "MutatingWebhookConfiguration")
    svc = one(docs, "Service", "injector")["metadata"]["name"]
    certs = {d["metadata"]["name"]: d for d in by_kind(docs, "Certificate")}
    serving = certs[svc]
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{svc}"
    assert f"{svc}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    issuers = {d["metadata"]["name"] for d in by_kind(docs, "Issuer")}
    assert serving["spec"]["issuerRef"]["name"] in issuers
    volumes = one(docs, "Deployment", "injector")["spec"]["template"]["spec"]["volumes"]
    secret = next(v for v in volumes if v["name"] == "webhook-certs")["secret"]["secretName"]
    assert secret == serving["spec"]["secretName"]
    # A user's issuer replaces the chart's CA.
    custom = render(
        CHART / "ci" / "cert-manager-values.yaml",
        "injector.certificates.certManager.issuerRef.name=corp-ca",
        "injector.certificates.certManager.issuerRef.kind=ClusterIssuer",
        crds=False,
    )
    assert by_kind(custom, "Issuer") == []
    assert one(custom, "Certificate")["spec"]["issuerRef"]["name"] == "corp-ca"


def crd_named(docs: Any, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, "CustomResourceDefinition") if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one CRD {name}, got {len(found)}"
    return found[0]


def test_crds_are_the_istio_kinds_the_control_plane_reads() -> None:
    names = {
        d["metadata"]["name"]
        for d in by_kind(rendered("default-values.yaml"), "CustomResourceDefinition")
    }
    assert names == {"peerauthentications.security.istio.io"} | {
        f"{plural}.networking.istio.io" for plural in NETWORKING_CRDS
    }
    assert not by_kind(render(crds=False), "CustomResourceDefinition")


def test_crd_is_istios_peer_authentication() -> None:
    crd = crd_named(rendered("default-values.yaml"), "peerauthentications.security.istio.io")
    assert crd["spec"]["names"]["kind"] == "PeerAuthentication"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(versions) == {"v1", "v1beta1"}
    assert [v["name"] for v in versions.values() if v["storage"]] == ["v1beta1"]
    mode = versions["v1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["mtls"]
    assert mode["properties"]["mode"]["enum"] == ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


def _structural_problems(node: Mapping[str, Any], path: str = "") -> list[str]:
    """What the API server would refuse as a non-structural schema: a node without a type, or
    a value validation (oneOf/anyOf/allOf/not) that declares types or descriptions."""
    problems = []
    if not (
        {"type", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"} & set(node)
    ):
        problems.append(f"{path or '.'}: no type")
    if "additionalProperties" in node and "properties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            problems += _validation_problems(branch, f"{path}.{key}")
    if "not" in node:
        problems += _validation_problems(node["not"], f"{path}.not")
    for name, child in node.get("properties", {}).items():
        problems += _structural_problems(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), Mapping):
            problems += _structural_problems(node[key], f"{path}[{key}]")
    return problems


def _validation_problems(node: Mapping[str, Any], path: str) -> list[str]:
    allowed = {"required", "oneOf", "anyOf", "allOf", "not"}
    problems = [f"{path}: {key} in a value validation" for key in set(node) - allowed]
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            problems += _validation_problems(branch, f"{path}.{key}")
    if "not" in node:
        problems += _validation_problems(node["not"], f"{path}.not")
    return problems


@pytest.mark.parametrize("plural", list(NETWORKING_CRDS))
def test_networking_crds_are_istios(plural: str) -> None:
    kind, short_names, columns = NETWORKING_CRDS[plural]
    crd = crd_named(rendered("default-values.yaml"), f"{plural}.networking.istio.io")
    spec = crd["spec"]
    assert spec["group"] == "networking.istio.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        **({"shortNames": short_names} if short_names else {}),
        "categories": ["istio-io", "networking-istio-io"],
    }
    versions = {v["name"]: v for v in spec["versions"]}
    assert set(versions) == {"v1", "v1beta1", "v1alpha3"}
    assert all(v["served"] for v in versions.values())
    # One stored version, v1, as Istio's CRDs since 1.27; the others are the same schema, so
    # the API server converts between them with no webhook (conversion strategy None).
    assert [name for name, v in versions.items() if v["storage"]] == ["v1"]
    assert "conversion" not in spec
    for version in versions.values():
        assert version["subresources"] == {"status": {}}
        assert version["schema"] == versions["v1"]["schema"]
        printed = {c["name"]: c["jsonPath"] for c in version.get("additionalPrinterColumns", [])}
        assert printed == columns
    schema = versions["v1"]["schema"]["openAPIV3Schema"]
    assert _structural_problems(schema) == []
    assert "x-kubernetes-preserve-unknown-fields" not in schema["properties"]["spec"]
    assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_networking_schemas_have_istios_enums_and_types() -> None:
    docs = rendered("default-values.yaml")

    def spec_of(plural: str) -> Mapping[str, Any]:
        crd = crd_named(docs, f"{plural}.networking.istio.io")
        return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    route = spec_of("virtualservices")["properties"]["http"]["items"]["properties"]["route"]
    assert route["items"]["properties"]["weight"]["type"] == "integer"
    assert route["items"]["required"] == ["destination"]
    entry = spec_of("serviceentries")
    assert entry["required"] == ["hosts"]
    assert entry["properties"]["resolution"]["enum"] == [
        "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"
    ]  # fmt: skip
    assert entry["properties"]["location"]["enum"] == ["MESH_EXTERNAL", "MESH_INTERNAL"]
    rule = spec_of("destinationrules")
    assert rule["required"] == ["host"]
    policy = rule["properties"]["trafficPolicy"]["properties"]
    assert policy["tls"]["properties"]["mode"]["enum"] == [
        "DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"
    ]  # fmt: skip
    assert (
        rule["properties"]["subsets"]["items"]["properties"]["trafficPolicy"]
        == rule["properties"]["trafficPolicy"]
    )
    sidecar = spec_of("sidecars")["properties"]
    assert sidecar["egress"]["items"]["required"] == ["hosts"]
    assert sidecar["outboundTrafficPolicy"]["properties"]["mode"]["enum"] == [
        "REGISTRY_ONLY", "ALLOW_ANY"
    ]  # fmt: skip


def test_the_structural_check_finds_what_it_should() -> None:
    """Guards the check above with the two mistakes a hand-written schema makes."""
    assert _structural_problems({"type": "object", "properties": {"a": {"description": "x"}}})
    assert _structural_problems(
        {"type": "object", "oneOf": [{"type": "object", "required": ["a"]}]}
    )


# --- values: documented and schema-checked ------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("injector.failurePolicy=Maybe", "failurePolicy"),
        ("injector.timeoutSeconds=31", "timeoutSeconds"),
        ("injector.typo=1", "typo"),
        ("injector.certificates.mode=helm", "mode"),
        ("controlPlane.debounceAfter=fast", "debounceAfter"),
        ("injector.webhookURL=http://insecure", "webhookURL"),
        ("revision=Not_A_Label", "revision"),
    ],
)
def test_schema_refuses_bad_values(setting: str, complaint: str) -> None:
    out = run_helm("template", "r", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting)
    assert out.returncode != 0
    assert complaint in out.stderr


def test_secret_mode_requires_its_secret() -> None:
    out = run_helm(
        "template",
        "r",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "injector.certificates.mode=secret",
    )
    assert out.returncode != 0
    assert "is required when injector.certificates.mode is secret" in out.stderr


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values.yaml keys users set (maps documented as a whole are leaves)."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if (
            isinstance(value, Mapping)
            and value
            and not path.endswith(("resources", "SecurityContext", "meshConfig"))
        ):
            out |= _leaves(value, path + ".")
        else:
            out.add(path)
    return out


def test_every_value_is_documented_in_values_yaml_and_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    documented: set[str] = set()
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            if lines[j].strip().startswith("# --"):
                documented.add(".".join(k for _, k in stack))
                break
            j -= 1
    undocumented = sorted(_leaves(values) - documented)
    assert not undocumented, f"values without a '# --' comment: {undocumented}"

    def schema_node(path: str) -> Mapping[str, Any]:
        node: Mapping[str, Any] = schema
        for key in path.split("."):
            node = node["properties"][key]
        return node

    for path in _leaves(values):
        assert schema_node(path), path

    # ...and the schema has nothing values.yaml does not show.
    def schema_paths(node: Mapping[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, sub in node.get("properties", {}).items():
            out.add(prefix + key)
            if (
                sub.get("type") == "object"
                and "properties" in sub
                and not (prefix + key).endswith(("resources", "issuerRef"))
            ):
                out |= schema_paths(sub, prefix + key + ".")
        return out

    def value_paths(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            out.add(prefix + key)
            if isinstance(value, Mapping) and not (prefix + key).endswith(
                ("resources", "issuerRef")
            ):
                out |= value_paths(value, prefix + key + ".")
        return out

    assert schema_paths(schema) - value_paths(values) == set()


def test_kind_demo_app_is_valid_and_deployed_unchanged_into_an_injected_namespace() -> None:
    """tests/e2e/manifests/demo.yaml cannot be applied here (no kind): validate it instead."""
    text = (ROOT / "tests/e2e/manifests/demo.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text.replace("REMORA_IMAGE", "remora:test")) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
    namespace = one(docs, "Namespace")
    assert namespace["metadata"]["labels"] == {"istio-injection": "enabled"}
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    assert set(deployments) == {"server", "client", "legacy-client"}
    for name, deploy in deployments.items():
        spec = deploy["spec"]["template"]["spec"]
        assert not [c for c in spec["containers"] if c["name"].startswith("istio")]
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert labels.get("sidecar.istio.io/inject") == (
            "false" if name == "legacy-client" else None
        )
    service = one(docs, "Service")
    assert _selects(
        service["spec"]["selector"], deployments["server"]["spec"]["template"]["metadata"]["labels"]
    )


def test_control_plane_tls_and_ca_values_reach_the_pod() -> None:
    # TLS xDS and the CA are on by default: sidecars need their certificates.
    on = one(rendered("default-values.yaml"), "Deployment", "discovery")
    container = on["spec"]["template"]["spec"]["containers"][0]
    assert _arg(container["args"], "--secure-xds-port") == "15012"
    assert _arg(container["args"], "--ca-dir") == "/etc/cacerts"
    assert _arg(container["args"], "--workload-cert-ttl") == "24h"
    assert "https-xds" in {p["name"] for p in container["ports"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["cacerts"] == "/etc/cacerts"
    volume = next(v for v in on["spec"]["template"]["spec"]["volumes"] if v["name"] == "cacerts")
    assert volume["secret"] == {"secretName": "cacerts", "optional": True}
    # A plugged-in CA without the CA role: TLS, but no workload-certificate settings.
    plugged = one(rendered("cert-manager-values.yaml"), "Deployment", "discovery")
    args = plugged["spec"]["template"]["spec"]["containers"][0]["args"]
    assert _arg(args, "--secure-xds-port") == "15012"
    assert not [a for a in args if a.startswith("--workload-cert-ttl")]
    # The plaintext local-experiment set turns TLS off.
    off = one(rendered("dev-url-values.yaml"), "Deployment", "discovery")
    args = off["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--secure-xds-port", "--ca-dir"))]


def test_chart_app_version_is_the_version_the_image_is_tagged_with() -> None:
    """image.tag defaults to appVersion; `make images` tags with pyproject's version."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert version and chart["appVersion"] == version.group(1)
    deploy = one(rendered("default-values.yaml"), "Deployment", "injector")
    image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"docker.io/remora/remora:{version.group(1)}"


def values_table() -> str:
    """The values table of charts/remora/README.md, from values.yaml's ``# --`` comments."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))
    rows: list[str] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if comment and stripped.startswith("#"):
            comment.append(stripped[1:].strip())
            continue
        match = re.match(r"^( *)([A-Za-z]\w*):", line)
        if not match:
            comment = [] if not stripped else comment
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if comment:
            path = ".".join(k for _, k in stack)
            node: Any = values
            for key in path.split("."):
                node = node[key]
            default = json.dumps(node, separators=(", ", ": "))
            rows.append(f"| `{path}` | `{default}` | {' '.join(comment)} |")
            comment = []
    return "\n".join(["| value | default | what it does |", "|---|---|---|", *rows]) + "\n"


def test_chart_readme_lists_every_value() -> None:
    """charts/remora/README.md's table is generated; REMORA_UPDATE_GOLDEN=1 rewrites it."""
    readme = CHART / "README.md"
    text = readme.read_text()
    begin, end = "<!-- values:begin -->\n", "<!-- values:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    expected = head + begin + values_table() + end + tail
    if updating():
        readme.write_text(expected)
    assert text == expected, (
        "charts/remora/README.md is stale: REMORA_UPDATE_GOLDEN=1 pytest -k readme"
    )
