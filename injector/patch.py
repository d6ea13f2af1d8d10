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


def create_patch(original: Mapping[str, Any], modified: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch operations that turn ``original`` into ``modified``."""
    ops: list[dict[str, Any]] = jsonpatch.make_patch(original, modified).patch
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
    patch: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
    message: str | None = None,
    code: int | None = None,
) -> AdmissionReviewOut:
    """An AdmissionReview response echoing the request's ``apiVersion`` and ``uid``."""
    response: AdmissionResponse = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(patch, separators=(",", ":")).encode()
        ).decode()
    if warnings:
        response["warnings"] = warnings
    if message is not None:
        response["status"] = {"code": code or (200 if allowed else 403), "message": message}
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch carried by an AdmissionReview response (``[]`` when there is none)."""
    encoded = (response.get("response") or {}).get("patch")
    if not encoded:
        return []
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(encoded))
    return ops
