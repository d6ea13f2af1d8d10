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

import base64
import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from injector._data import mapping
from injector.config import InjectorConfig
from injector.decision import should_inject
from injector.errors import AnnotationError, PodError, ReviewError
from injector.patch import ADMISSION_VERSIONS, build_response, create_patch, encode_patch
from injector.render import inject_in_place

WARNING_PREFIX = "remora sidecar injector"


# The ServiceAccount admission plugin, which runs before webhooks, mounts the token as a volume
# named ``kube-api-access-<5 random characters>``: the one difference between the pods of a
# ReplicaSet when they reach us.
_SA_TOKEN_VOLUME = re.compile(r"kube-api-access-[a-z0-9]{5}")


class PatchCache:
    """The patches of recent injections, keyed by exactly what the result depends on.

    Injection is a pure function of the pod, the namespace and the config, and the pods a
    ReplicaSet, Job or DaemonSet creates reach the webhook identical (the API server assigns
    name and uid after admission) except for the generated name of the service-account token
    volume. The key is the pod as received, less ``managedFields`` (never used), with that one
    name replaced by a placeholder, plus the namespace. Injection treats volume names as opaque
    labels, so two such pods get patches that differ at most by that name; a patch is therefore
    kept only if the name does not occur in it, and then serves them all. An entry is used only
    with the very config object it was computed with, so a reloaded config starts afresh.
    Entries are encoded patches (:func:`encode_patch`).
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[InjectorConfig, str]] = OrderedDict()
        self.hits = 0

    @staticmethod
    def key(pod_json: str, namespace: str) -> tuple[bytes, str | None]:
        """The cache key of a pod given as JSON text, and the generated volume name it hides."""
        generated = set(_SA_TOKEN_VOLUME.findall(pod_json))
        name = generated.pop() if len(generated) == 1 else None
        if name is not None:
            pod_json = pod_json.replace(name, "kube-api-access-*****")
        digest = hashlib.blake2b(namespace.encode(), digest_size=32)
        digest.update(b"\0" + pod_json.encode())
        return digest.digest(), name

    def get(self, key: bytes, config: InjectorConfig) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] is not config:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(
        self,
        key: bytes,
        config: InjectorConfig,
        ops: list[dict[str, Any]],
        generated_name: str | None,
    ) -> str:
        """Remember ``ops`` when they hold for every pod with this key; return them encoded."""
        text = json.dumps(ops, separators=(",", ":"))
        encoded = base64.b64encode(text.encode()).decode()
        if generated_name is not None and generated_name in text:
            return encoded  # specific to this pod's volume name: not reusable
        self._entries[key] = (config, encoded)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return encoded


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
    cached: bool = False  # the patch came from the PatchCache


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _pod_name(pod: dict[str, Any], request: dict[str, Any]) -> tuple[str, str]:
    metadata = mapping(pod.get("metadata"))
    namespace = str(metadata.get("namespace") or request.get("namespace") or "")
    name = str(metadata.get("name") or request.get("name") or "")
    if not name and metadata.get("generateName"):
        name = f"{metadata['generateName']}<generated>"
    return namespace, name


def review(
    body: bytes,
    content_type: str | None,
    config: InjectorConfig,
    cache: PatchCache | None = None,
) -> Outcome:
    """Answer one ``POST /inject`` (with ``cache``, reuse the patch of an identical pod)."""
    try:
        api_version, uid, request = _read_review(body, content_type)
    except ReviewError as exc:
        result = "unsupported" if exc.status == 415 else "bad_request"
        return Outcome(exc.status, _json({"error": str(exc)}), result, result, str(exc))
    try:
        return _review_request(api_version, uid, request, config, cache)
    except Exception as exc:  # never a 500: the API server gets an answer it can show
        message = f"internal error in the sidecar injector: {type(exc).__name__}: {exc}"
        out = build_response(api_version, uid, allowed=False, message=message, code=500)
        return Outcome(200, _json(out), "rejected", "internal_error", message, uid=uid, error=exc)


def _read_review(body: bytes, content_type: str | None) -> tuple[str, str, dict[str, Any]]:
    """The AdmissionReview's apiVersion, request uid and request; a :class:`ReviewError` names
    what is wrong with anything else."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ReviewError(f"Content-Type must be application/json, got {content_type!r}", 415)
    if not body:
        raise ReviewError("no body found: send an AdmissionReview as JSON")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ReviewError(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ReviewError("the body is not an AdmissionReview object")
    api_version = document.get("apiVersion")
    if document.get("kind") != "AdmissionReview" or api_version not in ADMISSION_VERSIONS:
        raise ReviewError(
            f"expected kind AdmissionReview with apiVersion in {list(ADMISSION_VERSIONS)}, got "
            f"kind {document.get('kind')!r} apiVersion {api_version!r}"
        )
    request = document.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise ReviewError("the AdmissionReview has no request with a uid")
    return str(api_version), request["uid"], request


def _review_request(
    api_version: str,
    uid: str,
    request: dict[str, Any],
    config: InjectorConfig,
    cache: PatchCache | None,
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

    if isinstance(pod.get("metadata"), dict):
        pod["metadata"].pop("managedFields", None)
    # Serialized once: the text is the cache key and, on a miss, the source of the private
    # copy that injection edits (a JSON round trip is faster than copy.deepcopy).
    pod_json = json.dumps(pod, separators=(",", ":"))
    key, generated_name = PatchCache.key(pod_json, namespace) if cache is not None else (b"", None)
    cached = cache.get(key, config) if cache is not None else None
    if cached is not None:
        out = build_response(api_version, uid, patch=cached)
        return Outcome(
            200, _json(out), "injected", decision.code, decision.reason, where, uid, cached=True
        )

    original = pod
    injected = json.loads(pod_json)
    try:
        inject_in_place(injected, config, namespace=namespace)
    except AnnotationError as exc:
        out = build_response(api_version, uid, allowed=False, message=str(exc), code=400)
        return Outcome(200, _json(out), "rejected", "invalid_annotation", str(exc), where, uid)
    except PodError as exc:
        message = f"cannot inject the sidecar: {exc}"
        out = build_response(api_version, uid, allowed=False, message=message, code=400)
        return Outcome(200, _json(out), "rejected", "invalid_pod", message, where, uid)
    ops = create_patch(original, injected)
    patch = encode_patch(ops) if cache is None else cache.put(key, config, ops, generated_name)
    out = build_response(api_version, uid, patch=patch)
    return Outcome(200, _json(out), "injected", decision.code, decision.reason, where, uid)
