"""One AdmissionReview in, one HTTP answer out: the webhook's behaviour without the HTTP server.

:func:`review` never raises. Its :class:`Outcome` says what to send (status code and body) and
what happened (``result`` and a reason code for metrics and logs):

=============  ======  =====================================================================
result         HTTP    when
=============  ======  =====================================================================
injected       200     the pod was selected; ``allowed`` with a JSON Patch
skipped        200     the pod is not to be injected; ``allowed``, no patch, a warning why
ignored        200     not a Pod, or not a CREATE; ``allowed``, unchanged
rejected       200     an invalid annotation or an injection error; ``allowed: false`` and
                       the message (the webhook's ``failurePolicy`` does not apply: the API
                       server got an answer, and the pod is refused with our message)
bad_request    400     the body is not JSON or not an AdmissionReview
unsupported    415     the Content-Type is not JSON
=============  ======  =====================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from injector._data import mapping
from injector.annotations import AnnotationError
from injector.config import InjectorConfig
from injector.decision import should_inject
from injector.patch import ADMISSION_VERSIONS, build_response, create_patch
from injector.render import PodError, inject_in_place

WARNING_PREFIX = "remora sidecar injector"


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: bytes
    result: str  # injected | skipped | ignored | rejected | bad_request | unsupported
    code: str  # reason code (a metric label)
    reason: str  # for the log
    pod: str = ""  # namespace/name of the pod, for the log
    uid: str = ""
    error: BaseException | None = None  # an unexpected exception, for the log's stack trace


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _bad_request(message: str, status: int = 400, result: str = "bad_request") -> Outcome:
    return Outcome(status, _json({"error": message}), result, result, message)


def _pod_name(pod: dict[str, Any], request: dict[str, Any]) -> tuple[str, str]:
    metadata = mapping(pod.get("metadata"))
    namespace = str(metadata.get("namespace") or request.get("namespace") or "")
    name = str(metadata.get("name") or request.get("name") or "")
    if not name and metadata.get("generateName"):
        name = f"{metadata['generateName']}<generated>"
    return namespace, name


def review(body: bytes, content_type: str | None, config: InjectorConfig) -> Outcome:
    """Answer one ``POST /inject``."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return _bad_request(
            f"Content-Type must be application/json, got {content_type!r}", 415, "unsupported"
        )
    if not body:
        return _bad_request("no body found: send an AdmissionReview as JSON")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return _bad_request(f"the body is not JSON: {exc}")
    if not isinstance(document, dict):
        return _bad_request("the body is not an AdmissionReview object")
    api_version = document.get("apiVersion")
    if document.get("kind") != "AdmissionReview" or api_version not in ADMISSION_VERSIONS:
        return _bad_request(
            f"expected kind AdmissionReview with apiVersion in {list(ADMISSION_VERSIONS)}, got "
            f"kind {document.get('kind')!r} apiVersion {api_version!r}"
        )
    request = document.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        return _bad_request("the AdmissionReview has no request with a uid")
    uid: str = request["uid"]
    try:
        return _review_request(str(api_version), uid, request, config)
    except Exception as exc:  # never a 500: the API server gets an answer it can show
        message = f"internal error in the sidecar injector: {type(exc).__name__}: {exc}"
        out = build_response(str(api_version), uid, allowed=False, message=message, code=500)
        return Outcome(200, _json(out), "rejected", "internal_error", message, uid=uid, error=exc)


def _review_request(
    api_version: str, uid: str, request: dict[str, Any], config: InjectorConfig
) -> Outcome:
    kind = mapping(request.get("kind"))
    pod = request.get("object")
    is_pod = kind.get("kind") == "Pod" and kind.get("group", "") == "" and isinstance(pod, dict)
    if not is_pod or request.get("operation", "CREATE") != "CREATE":
        what = f"{kind.get('kind')} {request.get('operation', '')}".strip()
        out = build_response(api_version, uid)
        return Outcome(
            200, _json(out), "ignored", "not_a_pod_create", f"{what}: nothing to do", uid=uid
        )
    assert isinstance(pod, dict)
    namespace, name = _pod_name(pod, request)
    where = f"{namespace}/{name}"

    decision = should_inject(pod, None, config, namespace=namespace)
    if not decision.inject:
        warning = f"{WARNING_PREFIX}: pod not injected: {decision.reason}"
        out = build_response(api_version, uid, warnings=[warning])
        return Outcome(200, _json(out), "skipped", decision.code, decision.reason, where, uid)

    original = pod
    injected = json.loads(json.dumps(pod))  # a private copy; faster than copy.deepcopy
    for copy_ in (original, injected):
        if isinstance(copy_.get("metadata"), dict):
            copy_["metadata"].pop("managedFields", None)
    try:
        inject_in_place(injected, config, namespace=namespace)
    except AnnotationError as exc:
        out = build_response(api_version, uid, allowed=False, message=str(exc), code=400)
        return Outcome(200, _json(out), "rejected", "invalid_annotation", str(exc), where, uid)
    except PodError as exc:
        message = f"cannot inject the sidecar: {exc}"
        out = build_response(api_version, uid, allowed=False, message=message, code=400)
        return Outcome(200, _json(out), "rejected", "invalid_pod", message, where, uid)
    patch = create_patch(original, injected)
    out = build_response(api_version, uid, patch=patch)
    return Outcome(200, _json(out), "injected", decision.code, decision.reason, where, uid)
