"""``helm install`` of the chart into the real test bed, and the roles run as its accounts.

One release per module, in its own namespace, with every cluster-scoped name suffixed
(``fullnameOverride``) so other tests on the shared test bed are not disturbed; everything it
created (namespaces, each CRD that was absent, ClusterRoles, the webhook configuration) is
removed; a CRD that was already there is left alone.

What a wrong chart breaks here and not in the render tests: the API server's own admission of
every object (CRDs established, RBAC accepted), the CRD schemas as the API server applies them
(Istio's documentation samples, ``tests/golden/chart/istio-samples/``, taken whole in every
served version; misspelt fields and wrong types refused, naming the field), the permissions
as the authorizer sees them (``kubectl auth can-i --as`` the ServiceAccounts), and the
end-to-end path: with the injector run locally under the injector's ServiceAccount token (the
chart's ``injector.webhookURL`` for out-of-cluster runs), Pods in a namespace labelled
``istio-injection=enabled`` are injected and the mesh namespace, kube-system and opted-out
Pods are not; the caBundle is written and rotated with the injector account's permissions.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from injector.runtime_certs import write_self_signed
from testbed.launcher import TestBed, free_port

pytestmark = [pytest.mark.testbed]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "remora"
SAMPLES = ROOT / "tests" / "golden" / "chart" / "istio-samples"
PA_CRD = "peerauthentications.security.istio.io"
NETWORKING = "networking.istio.io"
NETWORKING_PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "ServiceEntry": "serviceentries",
    "Sidecar": "sidecars",
}
NETWORKING_CRDS = tuple(f"{plural}.{NETWORKING}" for plural in NETWORKING_PLURALS.values())
CRDS = (PA_CRD, *NETWORKING_CRDS)


def helm_path() -> str:
    out = subprocess.run(
        [str(ROOT / "hack/testbed/build.sh"), "--print-helm"],
        capture_output=True,
        text=True,
        check=False,
    )
    path = out.stdout.strip()
    if out.returncode != 0 or not path or not Path(path).is_file():
        pytest.fail(
            f"helm is missing ({out.stderr.strip() or path!r}): run hack/testbed/build.sh",
            pytrace=False,
        )
    return path


@dataclass
class Release:
    bed: TestBed
    helm: str
    name: str
    namespace: str
    fullname: str
    webhook_port: int
    notes: str
    created_crds: frozenset[str]

    @property
    def mwc(self) -> str:
        return f"{self.fullname}-sidecar-injector-{self.namespace}"

    def sa(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-{component}"

    def can(self, component: str, *args: str) -> bool:
        out = self.bed.kubectl("auth", "can-i", f"--as={self.sa(component)}", *args, check=False)
        assert out.stdout.strip() in {"yes", "no"}, out.stderr
        return out.stdout.strip() == "yes"

    def kubeconfig_for(self, component: str, directory: Path) -> Path:
        """A kubeconfig holding a TokenRequest token of the component's ServiceAccount."""
        token = self.bed.kubectl(
            "create",
            "token",
            f"{self.fullname}-{component}",
            "-n",
            self.namespace,
            "--duration=1h",
        ).stdout.strip()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.bed.server,
                        "certificate-authority-data": base64.b64encode(self.bed.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": component, "user": {"token": token}}],
            "contexts": [{"name": component, "context": {"cluster": "testbed", "user": component}}],
            "current-context": component,
        }
        path = directory / f"{component}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path


def _get_json(bed: TestBed, *args: str) -> Any:
    return json.loads(bed.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def release(testbed: TestBed) -> Iterator[Release]:
    helm = helm_path()
    suffix = uuid.uuid4().hex[:6]
    namespace, fullname = f"remora-{suffix}", f"remora-{suffix}"
    testbed.create_namespace(namespace)
    absent = frozenset(
        crd for crd in CRDS if testbed.kubectl("get", "crd", crd, check=False).returncode != 0
    )
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(testbed.kubeconfig)}
    install = subprocess.run(
        [
            helm, "install", f"r{suffix}", str(CHART), "-n", namespace,
            "--set", f"fullnameOverride={fullname}",
            "--set", f"injector.webhookURL=https://127.0.0.1:{port}/inject",
            "--timeout", "60s",
        ],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    rel = Release(testbed, helm, f"r{suffix}", namespace, fullname, port, install.stdout, absent)
    try:
        assert install.returncode == 0, install.stderr
        yield rel
    finally:
        subprocess.run(
            [helm, "uninstall", rel.name, "-n", namespace, "--wait", "--timeout", "60s"],
            capture_output=True, env=env, check=False,
        )  # fmt: skip
        # Should uninstall fail, never leave a failurePolicy Fail webhook to later tests.
        for kind, name in (
            ("mutatingwebhookconfiguration", rel.mwc),
            *((k, f"{fullname}-{c}-{namespace}") for k in ("clusterrole", "clusterrolebinding")
              for c in ("discovery", "injector")),
        ):  # fmt: skip
            testbed.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        for crd in rel.created_crds:  # a CRD that was there before is left alone
            testbed.kubectl("delete", "crd", crd, "--ignore-not-found", check=False)
        testbed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_install_tells_the_user_the_next_step(release: Release) -> None:
    assert "kubectl label namespace <namespace> istio-injection=enabled" in release.notes
    assert f"deploy/{release.fullname}-injector" in release.notes
    assert release.mwc in release.notes  # where the runtime caBundle shows up
    status = subprocess.run(
        [release.helm, "status", release.name, "-n", release.namespace, "-o", "json"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "KUBECONFIG": str(release.bed.kubeconfig)},
    )  # fmt: skip
    assert json.loads(status.stdout)["info"]["status"] == "deployed"


def test_crd_is_established_and_enforces_its_schema(release: Release) -> None:
    crd = _get_json(release.bed, "crd", PA_CRD)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    if PA_CRD not in release.created_crds:
        pytest.skip("PeerAuthentication CRD was already installed: helm left it alone")

    def apply(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        doc = {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": f"pa-{uuid.uuid4().hex[:6]}", "namespace": release.namespace},
            "spec": spec,
        }
        return release.bed.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)

    ok = apply({"mtls": {"mode": "STRICT"}})
    assert ok.returncode == 0, ok.stderr
    listed = _get_json(release.bed, "peerauthentications", "-n", release.namespace)
    assert [i["spec"]["mtls"]["mode"] for i in listed["items"]] == ["STRICT"]
    bad_mode = apply({"mtls": {"mode": "SOMETIMES"}})
    assert bad_mode.returncode != 0 and "SOMETIMES" in bad_mode.stderr
    needs_selector = apply({"portLevelMtls": {"8080": {"mode": "DISABLE"}}})
    assert needs_selector.returncode != 0
    assert "portLevelMtls requires selector" in needs_selector.stderr


@pytest.mark.parametrize(
    ("crd", "short_name"),
    list(zip(NETWORKING_CRDS, ("vs", "dr", "se", None), strict=True)),
)
def test_networking_crd_is_established_with_istios_names(
    release: Release, crd: str, short_name: str | None
) -> None:
    status = _get_json(release.bed, "crd", crd)["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Established"] == "True"
    if crd in release.created_crds:
        assert status["acceptedNames"].get("shortNames", []) == ([short_name] if short_name else [])
        assert status["storedVersions"] == ["v1"]
        # What helm sent is the chart's file as read here: its YAML anchors and merge keys
        # resolved alike, each version with the whole schema.
        installed = _get_json(release.bed, "crd", crd)["spec"]["versions"]
        charted = yaml.safe_load((CHART / "crds" / f"{crd}.yaml").read_text())["spec"]["versions"]
        assert [v["schema"] for v in installed] == [v["schema"] for v in charted]
    # kubectl's discovery finds the kind by its short name and its categories, as with Istio.
    for name in (short_name, "istio-io", "networking-istio-io"):
        if name:
            out = release.bed.kubectl("get", name, "-n", release.namespace, check=False)
            assert out.returncode == 0, out.stderr


def _samples() -> list[dict[str, Any]]:
    docs = [
        doc
        for path in sorted(SAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert {d["kind"] for d in docs} == set(NETWORKING_PLURALS)
    return docs


def _in_version(doc: dict[str, Any], number: int, version: str, namespace: str) -> dict[str, Any]:
    """Sample ``number`` in another served version, under a name of its own (two samples of a
    task share a name: the delay and the abort VirtualService are both ``ratings``)."""
    assert doc["apiVersion"] == f"{NETWORKING}/v1"
    name = f"{doc['metadata']['name']}-{number}-{version}"
    return {
        **doc,
        "apiVersion": f"{NETWORKING}/{version}",
        "metadata": {"name": name, "namespace": namespace},
    }


def _networking_crds_or_skip(release: Release) -> None:
    if not set(NETWORKING_CRDS) <= release.created_crds:
        pytest.skip("networking CRDs were already installed: helm left them alone")


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_istios_documentation_samples_apply_unchanged(release: Release, version: str) -> None:
    """Every field of Istio's doc samples is in our schemas: applied in each served version,
    read back in it, nothing pruned, nothing refused."""
    _networking_crds_or_skip(release)
    bed, ns = release.bed, release.namespace
    samples = [_in_version(doc, n, version, ns) for n, doc in enumerate(_samples())]
    out = bed.kubectl(
        "apply", "--validate=strict", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": samples}), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    stored: dict[tuple[str, str], Any] = {}
    for kind, plural in NETWORKING_PLURALS.items():
        listed = _get_json(bed, f"{plural}.{version}.{NETWORKING}", "-n", ns)
        for item in listed["items"]:
            assert item["apiVersion"] == f"{NETWORKING}/{version}"
            stored[kind, item["metadata"]["name"]] = item["spec"]
    for sample in samples:
        key = (sample["kind"], sample["metadata"]["name"])
        assert stored.get(key) == sample["spec"], key


def _reviews_90_10(namespace: str, name: str) -> dict[str, Any]:
    doc = yaml.safe_load((SAMPLES / "virtual-service-reviews-90-10.yaml").read_text())
    return {**doc, "metadata": {"name": name, "namespace": namespace}}


def test_a_misspelt_field_is_refused_and_pruned_without_validation(release: Release) -> None:
    """As with Istio's CRDs: kubectl's default, --validate=strict, has the API server refuse an
    unknown field (naming it); with --validate=false the API server accepts the object and
    prunes the field."""
    _networking_crds_or_skip(release)
    bed = release.bed
    doc = _reviews_90_10(release.namespace, "misspelt")
    route = doc["spec"]["http"][0]["route"][0]
    route["wieght"] = route.pop("weight")
    strict = bed.kubectl(
        "apply", "--validate=strict", "-f", "-", input=json.dumps(doc), check=False
    )
    assert strict.returncode != 0
    assert 'unknown field "spec.http[0].route[0].wieght"' in strict.stderr
    assert (
        bed.kubectl(
            "get", f"virtualservices.{NETWORKING}", "misspelt", "-n", release.namespace, check=False
        ).returncode
        != 0
    )
    loose = bed.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(doc), check=False)
    assert loose.returncode == 0, loose.stderr
    stored = _get_json(bed, f"virtualservices.{NETWORKING}", "misspelt", "-n", release.namespace)
    assert stored["spec"]["http"][0]["route"][0] == {"destination": route["destination"]}


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        (
            ("http", 0, "route", 0, "weight"),
            "ninety",
            "spec.http[0].route[0].weight in body must be of type integer",
        ),
        (("http", 0, "timeout"), "3 seconds", "spec.http[0].timeout: Invalid value"),
        (
            ("http", 0, "route", 0, "destination"),
            {"subset": "v1"},
            "spec.http[0].route[0].destination.host: Required value",
        ),
    ],
)
def test_a_wrong_value_is_refused_by_the_api_server_naming_the_field(
    release: Release, path: tuple[str | int, ...], value: Any, complaint: str
) -> None:
    _networking_crds_or_skip(release)
    doc = _reviews_90_10(release.namespace, f"wrong-{uuid.uuid4().hex[:6]}")
    node: Any = doc["spec"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    # --validate=false: the API server, not kubectl, is what refuses it.
    out = release.bed.kubectl(
        "apply", "--validate=false", "-f", "-", input=json.dumps(doc), check=False
    )
    assert out.returncode != 0
    assert complaint in out.stderr


def test_service_entry_rules_are_istios(release: Release) -> None:
    _networking_crds_or_skip(release)
    entry = {
        "apiVersion": f"{NETWORKING}/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "bad-entry", "namespace": release.namespace},
        "spec": {
            "hosts": ["httpbin.org"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "DSN",
        },
    }
    out = release.bed.kubectl("apply", "-f", "-", input=json.dumps(entry), check=False)
    assert out.returncode != 0 and 'Unsupported value: "DSN"' in out.stderr
    entry["spec"] |= {"resolution": "NONE", "endpoints": [{"address": "1.2.3.4"}]}
    out = release.bed.kubectl("apply", "-f", "-", input=json.dumps(entry), check=False)
    assert out.returncode != 0 and "NONE mode cannot set endpoints" in out.stderr


def test_an_existing_crd_is_left_alone(release: Release) -> None:
    """A second install finds the CRD present: helm skips it instead of failing or owning it."""
    ns = f"remora2-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KUBECONFIG": str(release.bed.kubeconfig)}

    def versions() -> dict[str, str]:
        return {
            crd: _get_json(release.bed, "crd", crd)["metadata"]["resourceVersion"] for crd in CRDS
        }

    before = versions()
    release.bed.create_namespace(ns)
    try:
        out = subprocess.run(
            [release.helm, "install", "second", str(CHART), "-n", ns,
             "--set", f"fullnameOverride={ns}", "--timeout", "60s"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert versions() == before
        mwc = f"{ns}-sidecar-injector-{ns}"
        assert (
            release.bed.kubectl("get", "mutatingwebhookconfiguration", mwc, check=False).returncode
            == 0
        )
    finally:
        subprocess.run(
            [release.helm, "uninstall", "second", "-n", ns, "--wait"],
            capture_output=True, env=env, check=False,
        )  # fmt: skip
        release.bed.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        # Uninstalling removes every cluster-scoped object of the release, and not the CRD.
        leftovers = [
            (kind, name)
            for kind, name in (
                ("mutatingwebhookconfiguration", f"{ns}-sidecar-injector-{ns}"),
                ("clusterrole", f"{ns}-discovery-{ns}"),
                ("clusterrole", f"{ns}-injector-{ns}"),
                ("clusterrolebinding", f"{ns}-injector-{ns}"),
            )
            if release.bed.kubectl("get", kind, name, check=False).returncode == 0
        ]
        for kind, name in leftovers:  # never leave them to later tests
            release.bed.kubectl("delete", kind, name, check=False)
    assert leftovers == []
    for crd in CRDS:
        assert release.bed.kubectl("get", "crd", crd, check=False).returncode == 0, crd


CONTROL_PLANE_CAN = [
    ("list", "pods", "--all-namespaces"),
    ("watch", "services", "--all-namespaces"),
    ("watch", "namespaces"),
    ("list", "endpointslices.discovery.k8s.io", "--all-namespaces"),
    ("watch", "peerauthentications.security.istio.io", "--all-namespaces"),
    *((verb, crd, "--all-namespaces") for crd in NETWORKING_CRDS for verb in ("list", "watch")),
    ("create", "tokenreviews.authentication.k8s.io"),
    ("create", "configmaps", "-n", "default"),
    ("update", "configmaps/istio-ca-root-cert", "-n", "default"),
    ("watch", "configmaps/istio-ca-root-cert", "-n", "default"),
]
CONTROL_PLANE_CANNOT = [
    ("create", "pods", "-n", "default"),
    ("delete", "pods", "-n", "default"),
    ("update", "services", "-n", "default"),
    ("get", "secrets", "-n", "default"),
    ("update", "configmaps/kube-root-ca.crt", "-n", "default"),
    ("delete", "configmaps/istio-ca-root-cert", "-n", "default"),
    ("create", "peerauthentications.security.istio.io", "-n", "default"),
    *((verb, crd, "-n", "default") for crd in NETWORKING_CRDS for verb in ("create", "update")),
    ("list", f"gateways.{NETWORKING}", "--all-namespaces"),  # not a kind it reads
    ("patch", "mutatingwebhookconfigurations"),
]


def test_control_plane_account_can_do_what_it_needs_and_no_more(release: Release) -> None:
    for args in CONTROL_PLANE_CAN:
        assert release.can("discovery", *args), args
    for args in CONTROL_PLANE_CANNOT:
        assert not release.can("discovery", *args), args
    ns = ("-n", release.namespace)
    assert release.can("discovery", "watch", "configmaps/istio", *ns)  # the mesh config
    assert not release.can("discovery", "get", "configmaps/other", *ns)
    assert release.can("discovery", "get", "secrets/cacerts", *ns)  # a plugged-in CA
    assert release.can("discovery", "get", "secrets/istio-ca-secret", *ns)  # its own root
    assert not release.can("discovery", "get", "secrets/istio-ca-secret", "-n", "default")
    assert not release.can("discovery", "get", f"secrets/{release.fullname}-injector-tls", *ns)
    assert not release.can("discovery", "update", "configmaps/istio", *ns)


def test_injector_account_can_only_manage_its_own_webhook_and_secret(release: Release) -> None:
    ns = ("-n", release.namespace)
    secret = f"secrets/{release.fullname}-injector-tls"
    assert release.can("injector", "patch", f"mutatingwebhookconfigurations/{release.mwc}")
    assert release.can("injector", "get", f"mutatingwebhookconfigurations/{release.mwc}")
    assert not release.can("injector", "patch", "mutatingwebhookconfigurations/someone-elses")
    assert not release.can("injector", "create", "mutatingwebhookconfigurations")
    assert not release.can("injector", "delete", f"mutatingwebhookconfigurations/{release.mwc}")
    assert release.can("injector", "create", "secrets", *ns)
    assert release.can("injector", "update", secret, *ns)
    assert not release.can("injector", "get", "secrets/cacerts", *ns)
    assert not release.can("injector", "get", "secrets", "-n", "default")
    assert release.can("injector", "list", "nodes")
    for args in (("list", "pods", "--all-namespaces"), ("create", "pods", "-n", "default")):
        assert not release.can("injector", *args), args


def test_webhook_configuration_is_registered_as_istio_ships_it(release: Release) -> None:
    mwc = _get_json(release.bed, "mutatingwebhookconfiguration", release.mwc)
    hooks = {h["name"]: h for h in mwc["webhooks"]}
    assert set(hooks) == {
        f"{p}.sidecar-injector.istio.io"
        for p in ("rev.namespace", "rev.object", "namespace", "object")
    }
    for hook in hooks.values():
        assert hook["clientConfig"] == {"url": f"https://127.0.0.1:{release.webhook_port}/inject"}
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 10
        assert hook["sideEffects"] == "None"


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(
    what: str, check: Callable[[], bool], log: Path | None = None, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _https_ok(url: str, ca_file: str) -> bool:
    import ssl

    try:
        with urllib.request.urlopen(
            url, context=ssl.create_default_context(cafile=ca_file), timeout=1
        ) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pod(name: str, namespace: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {
                "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "1d"]}]
            },
        }
    )


def _containers(pod: dict[str, Any]) -> set[str]:
    spec = pod["spec"]
    return {c["name"] for c in spec.get("initContainers", []) + spec["containers"]}


def test_local_injector_as_its_account_injects_labelled_namespaces_only(
    release: Release, tmp_path: Path
) -> None:
    bed, ns = release.bed, release.namespace
    kubeconfig = release.kubeconfig_for("injector", tmp_path)
    for key, name in (("config", "istio-sidecar-injector"), ("mesh", "istio")):
        (tmp_path / key).write_text(
            bed.kubectl("get", "configmap", name, "-n", ns, "-o", "yaml").stdout
        )
    certs = write_self_signed(tmp_path / "certs", ("127.0.0.1",))
    as_injector = ("--kubeconfig", str(kubeconfig))
    app = f"app-{uuid.uuid4().hex[:6]}"
    bed.create_namespace(app, {"istio-injection": "enabled"})
    # The mesh namespace, mislabelled: still never injected.
    bed.kubectl("label", "namespace", ns, "istio-injection=enabled")
    log = tmp_path / "webhook.log"
    argv = [
        sys.executable, "-m", "remora", "webhook", "--host", "127.0.0.1",
        "--port", str(release.webhook_port), "--tls-cert", certs.cert_file,
        "--tls-key", certs.key_file, "--config", str(tmp_path / "config"),
        "--mesh-config", str(tmp_path / "mesh"), "--kubeconfig", str(kubeconfig),
        "--reload-interval", "0.3", "--log-format", "text",
    ]  # fmt: skip
    created: list[tuple[str, str]] = []
    try:
        with running(argv, log):
            url = f"https://127.0.0.1:{release.webhook_port}/readyz"
            wait_for("the webhook's /readyz", lambda: _https_ok(url, certs.ca_file), log)

            # Before the runtime caBundle is written, the API server cannot trust the webhook
            # and failurePolicy Fail refuses the Pod: nothing escapes the mesh.
            refused = bed.kubectl("apply", "-f", "-", input=_pod("early", app), check=False)
            assert refused.returncode != 0
            assert "failed calling webhook" in refused.stderr

            # What the injector does at runtime, with the injector account's own token.
            patch = [
                {
                    "op": "add",
                    "path": f"/webhooks/{i}/clientConfig/caBundle",
                    "value": certs.ca_bundle,
                }
                for i in range(4)
            ]
            bed.kubectl(
                "patch", "mutatingwebhookconfiguration", release.mwc, "--type=json",
                "-p", json.dumps(patch), *as_injector,
            )  # fmt: skip
            other = bed.kubectl(
                "patch", "mutatingwebhookconfiguration", "not-ours", "--type=json",
                "-p", json.dumps(patch), *as_injector, check=False,
            )  # fmt: skip
            assert "forbidden" in other.stderr

            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": app},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": json.loads(_pod("web", app))["spec"],
                    },
                },
            }
            bed.kubectl("apply", "-f", "-", input=json.dumps(deployment))
            for name, namespace, labels in (
                ("opted-out", app, {"sidecar.istio.io/inject": "false"}),
                ("in-mesh-ns", ns, {}),
                ("asks-in-mesh-ns", ns, {"sidecar.istio.io/inject": "true"}),
                (f"asks-{app}", "kube-system", {"sidecar.istio.io/inject": "true"}),
            ):
                bed.kubectl("apply", "-f", "-", input=_pod(name, namespace, labels))
                created.append((namespace, name))

            def web_pods() -> list[dict[str, Any]]:
                items = _get_json(bed, "pods", "-n", app, "-l", "app=web")["items"]
                return list(items)

            wait_for("the Deployment's 2 pods", lambda: len(web_pods()) == 2, log)
            for pod in web_pods():
                assert {"istio-init", "istio-proxy", "app"} <= _containers(pod)
                assert "sidecar.istio.io/status" in pod["metadata"]["annotations"]
            for namespace, name in created:
                pod = _get_json(bed, "pod", name, "-n", namespace)
                assert _containers(pod) == {"app"}, (namespace, name)

            # Rotation: a new CA and certificate; the webhook reloads them, the caBundle is
            # replaced (as the injector account), and the API server, which builds a new client
            # for the new bundle, injects again through the rotated certificate.
            old_ca = tmp_path / "old-ca.crt"
            old_ca.write_bytes(certs.ca_pem)
            rotated = write_self_signed(tmp_path / "certs", ("127.0.0.1",))
            assert rotated.ca_bundle != certs.ca_bundle
            wait_for(
                "the webhook to serve the rotated certificate",
                lambda: _https_ok(url, rotated.ca_file),
                log,
            )
            # The old caBundle cannot verify it (the API server keeps its open connection, so
            # the stale bundle is checked here rather than through a Pod creation).
            assert not _https_ok(url, str(old_ca))
            patch = [{**op, "op": "replace", "value": rotated.ca_bundle} for op in patch]
            bed.kubectl(
                "patch", "mutatingwebhookconfiguration", release.mwc, "--type=json",
                "-p", json.dumps(patch), *as_injector,
            )  # fmt: skip
            mwc = _get_json(bed, "mutatingwebhookconfiguration", release.mwc)
            assert {h["clientConfig"]["caBundle"] for h in mwc["webhooks"]} == {rotated.ca_bundle}
            bed.kubectl("apply", "-f", "-", input=_pod("after-rotation", app))
            pod = _get_json(bed, "pod", "after-rotation", "-n", app)
            assert {"istio-init", "istio-proxy"} <= _containers(pod)
    finally:
        for namespace, name in created:
            bed.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
        bed.kubectl("delete", "namespace", app, "--wait=false", check=False)


def test_control_plane_as_its_account_lists_everything_it_watches(
    release: Release, tmp_path: Path
) -> None:
    kubeconfig = release.kubeconfig_for("discovery", tmp_path)
    monitoring = free_port()
    log = tmp_path / "discovery.log"
    argv = [
        sys.executable, "-m", "remora", "discovery", "--kubeconfig", str(kubeconfig),
        "--listen-address", "127.0.0.1", "--xds-port", str(free_port()),
        "--monitoring-port", str(monitoring), "--mesh-namespace", release.namespace,
        "--log-format", "text",
    ]  # fmt: skip
    with running(argv, log):
        # /ready turns 200 only once every watch has listed: a missing permission keeps it 503.
        wait_for("discovery /ready", lambda: _http_ok(f"http://127.0.0.1:{monitoring}/ready"), log)
    assert "forbidden" not in log.read_text().lower()


def test_injector_runtime_certificates_work_with_the_charts_flags_and_rbac(
    release: Release, tmp_path: Path
) -> None:
    """The chart's own injector arguments, run locally as the injector ServiceAccount: the
    injector creates its Secret and writes the caBundle, which the API server then trusts."""
    bed, ns = release.bed, release.namespace
    deploy = _get_json(bed, "deployment", f"{release.fullname}-injector", "-n", ns)
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "webhook"
    local = {  # where the pod's mounts would be
        "--config": str(tmp_path / "config"),
        "--mesh-config": str(tmp_path / "mesh"),
        "--tls-cert": str(tmp_path / "certs" / "tls.crt"),
        "--tls-key": str(tmp_path / "certs" / "tls.key"),
        "--port": str(release.webhook_port),
    }
    argv = [sys.executable, "-m", "remora"]
    for arg in args:
        flag, _, value = arg.partition("=")
        argv.append(f"{flag}={local.get(flag, value)}" if value else arg)
    (tmp_path / "certs").mkdir()
    for key, name in (("config", "istio-sidecar-injector"), ("mesh", "istio")):
        (tmp_path / key).write_text(
            bed.kubectl("get", "configmap", name, "-n", ns, "-o", "yaml").stdout
        )
    kubeconfig = release.kubeconfig_for("injector", tmp_path)
    # Out of the cluster the API server calls 127.0.0.1 (injector.webhookURL): add that name.
    argv += [
        "--host=127.0.0.1",
        "--san=127.0.0.1",
        f"--kubeconfig={kubeconfig}",
        "--log-format=text",
    ]
    app = f"rt-{uuid.uuid4().hex[:6]}"
    bed.create_namespace(app, {"istio-injection": "enabled"})
    log = tmp_path / "webhook.log"
    env_argv = ["env", f"POD_NAMESPACE={ns}", *argv]
    try:
        with running(env_argv, log):
            secret_name = f"{release.fullname}-injector-tls"

            def secret_ca() -> bytes | None:
                out = bed.kubectl("get", "secret", secret_name, "-n", ns, "-o", "json", check=False)
                if out.returncode != 0:
                    return None
                return base64.b64decode(json.loads(out.stdout)["data"]["ca.crt"])

            wait_for("the injector to store its certificate", lambda: secret_ca() is not None, log)
            ca = secret_ca()
            assert ca is not None
            (tmp_path / "ca.crt").write_bytes(ca)
            url = f"https://127.0.0.1:{release.webhook_port}/readyz"
            wait_for(
                "/readyz with the stored certificate",
                lambda: _https_ok(url, str(tmp_path / "ca.crt")),
                log,
            )

            def bundles() -> set[str]:
                mwc = _get_json(bed, "mutatingwebhookconfiguration", release.mwc)
                return {h["clientConfig"].get("caBundle", "") for h in mwc["webhooks"]}

            wait_for("the caBundle", lambda: bundles() == {base64.b64encode(ca).decode()}, log)
            bed.kubectl("apply", "-f", "-", input=_pod("runtime", app))
            assert {"istio-init", "istio-proxy"} <= _containers(
                _get_json(bed, "pod", "runtime", "-n", app)
            )
        assert "forbidden" not in log.read_text().lower()
    finally:
        bed.kubectl("delete", "namespace", app, "--wait=false", check=False)


def test_helm_upgrade_keeps_the_runtime_ca_bundle(release: Release) -> None:
    """The chart renders no caBundle in runtime mode, so an upgrade must not wipe the one the
    injector wrote (Helm's three-way merge leaves fields it never owned)."""
    bed = release.bed
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nruntime\n").decode()
    patch = [
        {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
        for i in range(4)
    ]
    bed.kubectl(
        "patch", "mutatingwebhookconfiguration", release.mwc, "--type=json", "-p", json.dumps(patch)
    )
    upgrade = subprocess.run(
        [release.helm, "upgrade", release.name, str(CHART), "-n", release.namespace,
         "--reuse-values", "--set", "injector.timeoutSeconds=5", "--timeout", "60s"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "KUBECONFIG": str(bed.kubeconfig)},
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    hooks = _get_json(bed, "mutatingwebhookconfiguration", release.mwc)["webhooks"]
    assert {h["timeoutSeconds"] for h in hooks} == {5}  # the upgrade applied...
    assert {h["clientConfig"].get("caBundle") for h in hooks} == {bundle}  # ...and kept this
