"""Property tests: random pods and random bytes never crash the injector, and injection is
idempotent for every pod it accepts."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from injector import annotations as A
from injector.admission import PatchCache, review
from injector.config import default_config, parse_config
from injector.errors import AnnotationError, PodError
from injector.patch import apply_patch, create_patch
from injector.render import inject
from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION

# More with REMORA_FUZZ_EXAMPLES=5000 for a deeper run than CI's.
EXAMPLES = int(os.environ.get("REMORA_FUZZ_EXAMPLES", "300"))

CONFIGS = [
    default_config(),
    parse_config({"nativeSidecars": "true"}),
    parse_config({"holdApplicationUntilProxyStarts": True}),
    parse_config(
        {
            "revision": "canary",
            "proxy": {"imagePullSecrets": ["mesh"], "containerName": "remora-proxy"},
            "init": {"containerName": "remora-init"},
            "meshConfig": {"enablePrometheusMerge": False, "defaultConfig": {"statusPort": 15099}},
        }
    ),
]

names = st.sampled_from(["app", "web", "db", "side", "worker", "istio-proxy", "istio-init", "x"])
port_numbers = st.integers(min_value=1, max_value=65535)
port_names = st.sampled_from(["http", "grpc", "metrics", "admin", "nosuch"])
ports = st.one_of(port_numbers, port_names, port_numbers.map(str))

http_get = st.fixed_dictionaries(
    {"port": ports},
    optional={
        "path": st.sampled_from(["/", "/ready", "/app-health/app/livez"]),
        "scheme": st.sampled_from(["HTTP", "HTTPS"]),
        "host": st.just("127.0.0.1"),
    },
)
handler = st.one_of(
    st.builds(lambda h: {"httpGet": h}, http_get),
    st.builds(lambda p: {"tcpSocket": {"port": p}}, ports),
    st.builds(lambda p: {"grpc": {"port": p}}, port_numbers),
    st.just({"exec": {"command": ["true"]}}),
)
probe = st.builds(
    lambda h, t: {**h, **({"timeoutSeconds": t} if t else {})},
    handler,
    st.one_of(st.none(), st.integers(min_value=1, max_value=30)),
)


@st.composite
def containers(draw: st.DrawFn, init: bool = False) -> list[dict[str, Any]]:
    chosen = draw(st.lists(names, min_size=0 if init else 1, max_size=3, unique=True))
    result = []
    for name in chosen:
        c: dict[str, Any] = {"name": name, "image": f"{name}:1"}
        declared = draw(
            st.lists(st.tuples(port_names, port_numbers), max_size=2, unique_by=lambda t: t[0])
        )
        if declared:
            c["ports"] = [{"name": n, "containerPort": p} for n, p in declared]
        for key in ("livenessProbe", "readinessProbe", "startupProbe"):
            if draw(st.booleans()):
                c[key] = draw(probe)
        if draw(st.booleans()):
            c["lifecycle"] = {"preStop": draw(handler)}
        if init and draw(st.booleans()):
            c["restartPolicy"] = "Always"
        result.append(c)
    return result


ANNOTATION_VALUES = {
    A.INTERCEPTION_MODE: ["REDIRECT", "TPROXY", "NONE", "bogus"],
    A.STATUS_PORT: ["15020", "0", "15099", "x"],
    A.INCLUDE_INBOUND_PORTS: ["*", "80,8080", "", "http"],
    A.EXCLUDE_INBOUND_PORTS: ["80", "4,5,6", ""],
    A.INCLUDE_OUTBOUND_IP_RANGES: ["*", "10.0.0.0/8", "", "10.0.0.1"],
    A.EXCLUDE_OUTBOUND_PORTS: ["5432", ""],
    A.NATIVE_SIDECAR: ["true", "false", "maybe"],
    A.REWRITE_PROBES: ["true", "false"],
    A.MERGE_METRICS: ["true", "false"],
    A.PROXY_CPU: ["100m", "lots"],
    A.PROXY_CONFIG: [
        "holdApplicationUntilProxyStarts: true",
        "{}",
        "concurrency: [",
        "proxyMetadata: {A: b}",
    ],
    A.INJECT: ["true", "false", "x"],
    SIDECAR_STATUS_ANNOTATION: [
        '{"containers":["istio-proxy"]}',
        "not json",
        "null",
        '{"containers": 3}',
    ],
    A.OVERRIDES: [
        '{"containers":[{"name":"istio-proxy","env":[{"name":"A","value":"1"}]}]}',
        "[]",
        "{",
    ],
    "prometheus.io/scrape": ["true", "false"],
    "prometheus.io/port": ["9090", "15020"],
    A.DEFAULT_CONTAINER: ["app"],
    A.USER_VOLUME: ['{"v":{"emptyDir":{}}}', "nope"],
}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    annotations = {
        key: draw(st.sampled_from(values))
        for key, values in ANNOTATION_VALUES.items()
        if draw(st.integers(0, 4)) == 0
    }
    labels = draw(
        st.dictionaries(st.sampled_from(["app", "version", "app.kubernetes.io/name"]), names)
    )
    spec: dict[str, Any] = {"containers": draw(containers())}
    inits = draw(containers(init=True))
    if inits:
        spec["initContainers"] = inits
    if draw(st.booleans()):
        spec["volumes"] = [
            {"name": "istio-envoy", "emptyDir": {}},
            {"name": "data", "emptyDir": {}},
        ]
    if draw(st.booleans()):
        spec["imagePullSecrets"] = [{"name": "mesh"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "demo",
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), st.sampled_from(CONFIGS))
def test_injection_is_idempotent_and_the_patch_reproduces_it(
    pod: dict[str, Any], config: Any
) -> None:
    pod = json.loads(json.dumps(pod))  # as decoded from the wire: no shared sub-objects
    given_names = [
        c["name"] for c in (*pod["spec"].get("initContainers", ()), *pod["spec"]["containers"])
    ]
    assume(len(given_names) == len(set(given_names)))  # the API server refuses duplicates anyway
    try:
        once = inject(pod, config)
    except (AnnotationError, PodError):
        return  # a refusal with a message is a legitimate answer
    assert inject(once, config) == once
    assert apply_patch(pod, create_patch(pod, once)) == once
    spec = once["spec"]
    all_names = [c["name"] for c in (*spec.get("initContainers", ()), *spec["containers"])]
    assert len(all_names) == len(set(all_names)), f"duplicate containers: {all_names}"
    assert len({v["name"] for v in spec["volumes"]}) == len(spec["volumes"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pods(), min_size=1, max_size=4), st.sampled_from(CONFIGS))
def test_the_patch_cache_never_changes_an_answer(batch: list[dict[str, Any]], config: Any) -> None:
    cache = PatchCache(size=3)
    rounds = []
    for suffix in ("6ddh8", "gtczr"):  # the second round hits, with another generated name
        for given_pod in batch:
            pod = json.loads(json.dumps(given_pod))
            name = f"kube-api-access-{suffix}"
            pod["spec"].setdefault("volumes", []).append({"name": name, "emptyDir": {}})
            for container in pod["spec"]["containers"]:
                container["volumeMounts"] = [{"name": name, "mountPath": "/var/run/secrets/sa"}]
            rounds.append(pod)
    for pod in rounds:
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "demo",
                    "operation": "CREATE",
                    "object": pod,
                },
            }
        ).encode()
        assert (
            review(body, "application/json", config, cache).body
            == review(body, "application/json", config).body
        )


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(["application/json", "text/plain", None]))
def test_random_bytes_never_crash(body: bytes, content_type: str | None) -> None:
    outcome = review(body, content_type, default_config())
    assert outcome.status_code in {200, 400, 415}
    json.loads(outcome.body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.fixed_dictionaries(
        {"apiVersion": st.just("admission.k8s.io/v1"), "kind": st.just("AdmissionReview")},
        optional={
            "request": st.fixed_dictionaries(
                {"uid": st.text(max_size=5)},
                optional={
                    "kind": st.one_of(
                        json_values, st.just({"group": "", "version": "v1", "kind": "Pod"})
                    ),
                    "operation": st.sampled_from(["CREATE", "UPDATE", 7]),
                    "namespace": json_values,
                    "object": st.one_of(json_values, pods()),
                },
            )
        },
    )
)
def test_random_admission_reviews_never_crash_or_500(document: dict[str, Any]) -> None:
    outcome = review(json.dumps(document).encode(), "application/json", default_config())
    assert outcome.status_code in {200, 400}
    assert outcome.code != "internal_error", outcome.reason
    body = json.loads(outcome.body)
    if outcome.status_code == 200:
        assert body["response"]["uid"] == document["request"]["uid"]


@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(
    st.fixed_dictionaries(
        {"metadata": st.one_of(json_values, st.just({"name": "x"})), "spec": json_values}
    )
)
def test_garbage_pods_are_refused_not_crashed(pod: dict[str, Any]) -> None:
    try:
        out = inject(pod, default_config())
    except (AnnotationError, PodError) as exc:
        assert str(exc)  # a refusal always says why
        return
    spec = out["spec"]
    assert "istio-proxy" in [
        c["name"] for c in (*spec.get("initContainers", ()), *spec["containers"])
    ]


scalars = st.sampled_from([0, 1, True, False, 1.0, "1", "", None, "a"])
json_docs = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~f"]), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["metadata", "spec", "x"]), json_docs, max_size=3),
    st.dictionaries(st.sampled_from(["metadata", "spec", "x"]), json_docs, max_size=3),
)
def test_create_patch_turns_any_document_into_any_other(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    patched = apply_patch(a, create_patch(a, b))
    # Compared as JSON text: 1, 1.0 and True must stay distinct, as they are on the wire.
    assert json.dumps(patched, sort_keys=True) == json.dumps(b, sort_keys=True)
