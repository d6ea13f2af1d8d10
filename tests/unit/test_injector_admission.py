"""The webhook's answers without a server: every kind of input gets a deliberate response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from injector import admission
from injector.admission import review
from injector.config import default_config
from injector.patch import apply_patch, decode_patch

CONFIG = default_config()


def admission_review(
    obj: Any,
    *,
    kind: str = "Pod",
    group: str = "",
    operation: str = "CREATE",
    api_version: str = "admission.k8s.io/v1",
    namespace: str = "demo",
) -> bytes:
    return json.dumps(
        {
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "uid-1",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
                "namespace": namespace,
                "operation": operation,
                "object": obj,
                "dryRun": False,
            },
        }
    ).encode()


def a_pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "demo", "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
    }


def answer(body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any], str]:
    outcome = review(body, content_type, CONFIG)
    return outcome.status_code, json.loads(outcome.body), outcome.result


def test_a_pod_is_injected_with_a_json_patch() -> None:
    status, body, result = answer(admission_review(a_pod()))
    assert (status, result) == (200, "injected")
    response = body["response"]
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert response["uid"] == "uid-1" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patched = apply_patch(a_pod(), decode_patch(body))
    names = [c["name"] for c in patched["spec"]["containers"]]
    assert names == ["web", "istio-proxy"]
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["istio-init"]


def test_v1beta1_is_answered_in_kind() -> None:
    _, body, result = answer(admission_review(a_pod(), api_version="admission.k8s.io/v1beta1"))
    assert result == "injected"
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"


def test_an_invalid_annotation_is_refused_with_its_name_and_value() -> None:
    status, body, result = answer(admission_review(a_pod(**{"sidecar.istio.io/proxyCPU": "lots"})))
    assert (status, result) == (200, "rejected")
    response = body["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert response["status"]["message"] == (
        "invalid value 'lots' for annotation 'sidecar.istio.io/proxyCPU': "
        "not a Kubernetes quantity (e.g. 100m, 1, 128Mi)"
    )
    assert "patch" not in response


def test_a_skipped_pod_is_allowed_unchanged_with_a_warning_saying_why() -> None:
    _, body, result = answer(admission_review(a_pod(**{"sidecar.istio.io/inject": "false"})))
    assert result == "skipped"
    response = body["response"]
    assert response["allowed"] is True and "patch" not in response
    assert response["warnings"] == [
        'remora sidecar injector: pod not injected: the pod\'s annotation sidecar.istio.io/inject is "false"'
    ]


@pytest.mark.parametrize(
    ("kind", "group", "operation"),
    [
        ("Service", "", "CREATE"),
        ("Deployment", "apps", "CREATE"),
        ("Pod", "", "UPDATE"),
        ("Pod", "", "DELETE"),
    ],
)
def test_anything_but_a_pod_create_is_allowed_unchanged(
    kind: str, group: str, operation: str
) -> None:
    status, body, result = answer(
        admission_review(
            {"kind": kind, "metadata": {}}, kind=kind, group=group, operation=operation
        )
    )
    assert (status, result) == (200, "ignored")
    assert body["response"] == {"uid": "uid-1", "allowed": True}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"", "application/json", 400, "no body"),
        (b"{not json", "application/json", 400, "not JSON"),
        (b"[1, 2]", "application/json", 400, "not an AdmissionReview"),
        (b'{"kind": "Pod"}', "application/json", 400, "expected kind AdmissionReview"),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v2"}',
            "application/json",
            400,
            "apiVersion",
        ),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}',
            "application/json",
            400,
            "uid",
        ),
        (
            b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 5}}',
            "application/json",
            400,
            "uid",
        ),
        (b"{}", "text/plain", 415, "Content-Type"),
        (b"{}", None, 415, "Content-Type"),
        (b"\xff\xfe\x00", "application/json", 400, "not JSON"),
        (b"[" * 100000, "application/json", 400, "not JSON"),
    ],
)
def test_malformed_requests_get_4xx_with_a_message(
    body: bytes, content_type: str | None, status: int, says: str
) -> None:
    outcome = review(body, content_type, CONFIG)
    assert outcome.status_code == status
    assert says in json.loads(outcome.body)["error"]


def test_json_content_type_with_charset_is_accepted() -> None:
    assert (
        review(admission_review(a_pod()), "application/json; charset=utf-8", CONFIG).result
        == "injected"
    )


def test_an_internal_error_is_a_refusal_with_a_message_not_a_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(admission, "inject_in_place", broken)
    outcome = review(admission_review(a_pod()), "application/json", CONFIG)
    assert outcome.status_code == 200 and outcome.result == "rejected"
    response = json.loads(outcome.body)["response"]
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 500,
        "message": "internal error in the sidecar injector: KeyError: 'boom'",
    }
    assert "Traceback" not in outcome.body.decode()
    assert isinstance(outcome.error, KeyError)


def test_a_pod_without_containers_is_refused_clearly() -> None:
    pod = a_pod()
    pod["spec"] = {}
    _, body, result = answer(admission_review(pod))
    assert result == "rejected"
    assert (
        body["response"]["status"]["message"]
        == "cannot inject the sidecar: spec.containers is missing"
    )


def test_managed_fields_do_not_end_up_in_the_patch() -> None:
    pod = a_pod()
    pod["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    _, body, _ = answer(admission_review(pod))
    assert not any("managedFields" in op["path"] for op in decode_patch(body))


def test_namespace_comes_from_the_request_when_the_pod_has_none() -> None:
    pod = a_pod()
    del pod["metadata"]["namespace"]
    _, body, result = answer(admission_review(pod, namespace="kube-system"))
    assert result == "skipped"
    _, body, result = answer(admission_review(pod, namespace="shop"))
    patched = apply_patch(pod, decode_patch(body))
    proxy = patched["spec"]["containers"][-1]
    owner = next(e["value"] for e in proxy["env"] if e["name"] == "ISTIO_META_OWNER")
    assert owner == "kubernetes://apis/v1/namespaces/shop/pods/web"


def test_an_injected_pod_is_reinjected_to_the_same_result_so_the_patch_is_empty() -> None:
    _, body, _ = answer(admission_review(a_pod()))
    injected = apply_patch(a_pod(), decode_patch(body))
    _, again, result = answer(admission_review(injected))
    assert result == "injected"
    assert decode_patch(again) == []


def test_the_patch_cache_answers_identical_pods_only() -> None:
    from dataclasses import replace

    from injector.admission import PatchCache

    cache = PatchCache(size=3)
    first = review(admission_review(a_pod()), "application/json", CONFIG, cache)
    again = review(admission_review(a_pod()), "application/json", CONFIG, cache)
    assert (first.cached, again.cached) == (False, True)
    assert again.body == first.body

    managed = a_pod()
    managed["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    assert review(admission_review(managed), "application/json", CONFIG, cache).cached

    unplaced = a_pod()
    del unplaced["metadata"]["namespace"]  # the request's namespace decides
    review(admission_review(unplaced, namespace="demo"), "application/json", CONFIG, cache)
    different = [
        review(admission_review(unplaced, namespace="other"), "application/json", CONFIG, cache),
        review(admission_review(a_pod(x="1")), "application/json", CONFIG, cache),
        review(admission_review(a_pod()), "application/json", replace(CONFIG), cache),
    ]
    assert [o.cached for o in different] == [False, False, False]
    # Bounded (3 entries): the first pod's entry has gone.
    assert not review(admission_review(a_pod()), "application/json", CONFIG, cache).cached


def with_token_volume(
    pod: dict[str, Any], suffix: str, *, in_override: bool = False
) -> dict[str, Any]:
    """The pod as the ServiceAccount admission plugin leaves it: a generated token volume."""
    pod = json.loads(json.dumps(pod))
    name = f"kube-api-access-{suffix}"
    mount = {
        "name": name,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    pod["spec"]["volumes"] = [
        {"name": name, "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    ]
    for container in pod["spec"]["containers"]:
        container["volumeMounts"] = [mount]
    if in_override:
        pod["spec"]["containers"].append(
            {"name": "istio-proxy", "image": "auto", "volumeMounts": [mount]}
        )
    return pod


def test_pods_differing_only_in_the_generated_token_volume_share_a_patch() -> None:
    from injector.admission import PatchCache
    from injector.render import inject

    cache = PatchCache()
    first, second = with_token_volume(a_pod(), "6ddh8"), with_token_volume(a_pod(), "gtczr")
    assert not review(admission_review(first), "application/json", CONFIG, cache).cached
    hit = review(admission_review(second), "application/json", CONFIG, cache)
    assert hit.cached
    assert apply_patch(second, decode_patch(json.loads(hit.body))) == inject(second, CONFIG)


def test_a_patch_that_names_the_generated_volume_is_not_reused() -> None:
    from injector.admission import PatchCache
    from injector.render import inject

    cache = PatchCache()
    first = with_token_volume(a_pod(), "6ddh8", in_override=True)  # the mount reaches our proxy
    second = with_token_volume(a_pod(), "gtczr", in_override=True)
    review(admission_review(first), "application/json", CONFIG, cache)
    answer = review(admission_review(second), "application/json", CONFIG, cache)
    assert not answer.cached
    assert apply_patch(second, decode_patch(json.loads(answer.body))) == inject(second, CONFIG)


def test_an_out_of_range_proxy_config_port_gets_the_pod_rejected_naming_the_annotation() -> None:
    pod = a_pod(**{"proxy.istio.io/config": "statusPort: 70000"})
    status, body, result = answer(admission_review(pod))
    assert (status, result) == (200, "rejected")
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["message"] == (
        "invalid value 'statusPort: 70000' for annotation 'proxy.istio.io/config': "
        "defaultConfig.statusPort: 70000 is not an integer in 0..65535"
    )
