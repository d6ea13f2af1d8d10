"""The wire side of admission: RFC 6902 patches and ``AdmissionReview`` responses, as pure functions.

The patch is the difference between the pod the API server sent and the pod :func:`inject`
returned, computed by ``jsonpatch``: no hand-written patch paths that can drift from what the
renderer does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

import jsonpatch

ADMISSION_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class Status(TypedDict):
    code: int
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]
    status: NotRequired[Status]


class AdmissionReviewOut(TypedDict):
    apiVersion: str
    kind: Literal["AdmissionReview"]
    response: AdmissionResponse


_MISSING = object()


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text would be. Python's ``==`` alone says ``0 == False`` and ``1 == 1.0``;
    ``repr`` keeps them apart (and may call equal objects with differently ordered members
    different, which only costs a little pruning)."""
    return type(a) is type(b) and a == b and repr(a) == repr(b)


def _without_common_members(
    original: Mapping[str, Any], modified: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both objects minus the members that are equal in both, recursively outside arrays.

    jsonpatch compares objects member by member and emits nothing for an equal member, so
    leaving such members out of both sides yields the same operations with the same paths for
    less work (a pod's status, tolerations, owner references, managed fields ...). Arrays are
    passed whole: jsonpatch may emit an array item whole, so nothing inside one may be dropped.
    """
    left: dict[str, Any] = {}
    right: dict[str, Any] = {}
    for key in original.keys() | modified.keys():
        a, b = original.get(key, _MISSING), modified.get(key, _MISSING)
        if a is not _MISSING and b is not _MISSING and _same_json(a, b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            left[key], right[key] = _without_common_members(a, b)
            continue
        if a is not _MISSING:
            left[key] = a
        if b is not _MISSING:
            right[key] = b
    return left, right


def create_patch(original: Mapping[str, Any], modified: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch operations that turn ``original`` into ``modified``, as jsonpatch finds them.

    Only add, remove and replace operations (no move/copy, as Istio's Go library emits), and
    ``repr`` as jsonpatch's equality key: on JSON-decoded data it tells 1, 1.0, True and "1"
    apart just as JSON text does, at a fraction of the cost of ``json.dumps``.
    """
    left, right = _without_common_members(original, modified)
    patch = jsonpatch.JsonPatch.from_diff(left, right, optimization=False, dumps=repr)
    ops: list[dict[str, Any]] = patch.patch
    return ops


def apply_patch(document: Mapping[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply JSON Patch ``ops`` to a copy of ``document`` (as the API server would)."""
    result: dict[str, Any] = jsonpatch.apply_patch(document, ops)
    return result


def build_response(
    api_version: str,
    uid: str,
    *,
    allowed: bool = True,
    patch: list[dict[str, Any]] | str | None = None,
    warnings: list[str] | None = None,
    message: str | None = None,
    code: int | None = None,
) -> AdmissionReviewOut:
    """An AdmissionReview response echoing the request's ``apiVersion`` and ``uid``.

    ``patch`` is a list of operations, or one already encoded by :func:`encode_patch`.
    """
    response: AdmissionResponse = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = encode_patch(patch) if isinstance(patch, list) else patch
    if warnings:
        response["warnings"] = warnings
    if message is not None:
        response["status"] = {"code": code or (200 if allowed else 403), "message": message}
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def encode_patch(patch: list[dict[str, Any]]) -> str:
    """The ``patch`` field of an AdmissionResponse: base64 of the JSON Patch."""
    return base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch carried by an AdmissionReview response (``[]`` when there is none)."""
    encoded = (response.get("response") or {}).get("patch")
    if not encoded:
        return []
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(encoded))
    return ops
