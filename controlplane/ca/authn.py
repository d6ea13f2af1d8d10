"""Who is calling the CA: the projected service-account token, checked by the apiserver.

The decision is the apiserver's: a TokenReview with our audience (``istio-ca`` by default)
says whether the token is valid, unexpired, bound to live objects and meant for us, and for
which service account. Before that, the token's claims are read *without* verifying the
signature, only to refuse early (no apiserver round trip) with a precise message when they
already show the token is expired or meant for another audience: unverified claims can make
us refuse, never accept.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Protocol

import urllib3
from kubernetes import client

from controlplane.ca.csr import Refusal
from meshlib.spiffe import WorkloadIdentity, identity_from_username

DEFAULT_AUDIENCE = "istio-ca"  # Istio's global.sds.token.aud
BEARER = "bearer "


def _unauthenticated(reason: str, message: str) -> Refusal:
    return Refusal(reason, "UNAUTHENTICATED", message)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    """The token of the ``authorization: Bearer <token>`` gRPC metadata entry."""
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            if text[: len(BEARER)].lower() == BEARER and text[len(BEARER) :].strip():
                return text[len(BEARER) :].strip()
            raise _unauthenticated(
                "no_token", "the authorization metadata must be 'Bearer <service-account token>'"
            )
    raise _unauthenticated(
        "no_token",
        "no 'authorization: Bearer <token>' metadata: send the pod's projected service-account "
        f"token (audience {DEFAULT_AUDIENCE})",
    )


def unverified_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, not verified; None when the token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def precheck_claims(token: str, audiences: Sequence[str], now: dt.datetime) -> None:
    """Refuse early when the (unverified) claims already show expiry or a wrong audience."""
    claims = unverified_claims(token)
    if claims is None:
        return  # not ours to judge: the apiserver will say why
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now.timestamp():
        when = dt.datetime.fromtimestamp(exp, dt.UTC).isoformat()
        raise _unauthenticated(
            "token_expired",
            f"the service-account token expired at {when}: the kubelet refreshes projected "
            "tokens; read the token file again for every request",
        )
    aud = claims.get("aud")
    token_audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
    if token_audiences is not None and not set(token_audiences) & set(audiences):
        raise _unauthenticated(
            "wrong_audience",
            f"the token's audience is {token_audiences}, not {list(audiences)}: mount a projected "
            f"service-account token with audience {audiences[0]}",
        )


def caller_from_review(status: Any, audiences: Sequence[str]) -> WorkloadIdentity:
    """A TokenReview's ``status`` → the calling service account; raises :class:`Refusal`."""
    if not getattr(status, "authenticated", False):
        error = getattr(status, "error", None) or "the token was not accepted"
        lowered = error.lower()
        reason = (
            "token_expired"
            if "expired" in lowered
            else "wrong_audience"
            if "audience" in lowered
            else "invalid_token"
        )
        raise _unauthenticated(reason, f"the apiserver rejected the token: {error}")
    granted = list(getattr(status, "audiences", None) or [])
    if not set(granted) & set(audiences):
        raise _unauthenticated(
            "wrong_audience",
            f"the token is valid for {granted}, not for {list(audiences)}",
        )
    user = getattr(status, "user", None)
    username = getattr(user, "username", None) or ""
    identity = identity_from_username(username)
    if identity is None:
        raise Refusal(
            "not_a_service_account",
            "PERMISSION_DENIED",
            f"the token belongs to {username!r}, not to a service account "
            "(system:serviceaccount:<namespace>:<name>)",
        )
    return identity


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> WorkloadIdentity: ...


class TokenReviewAuthenticator:
    """Checks tokens with the apiserver's TokenReview API (needs ``create tokenreviews``)."""

    def __init__(
        self, api: client.ApiClient, audiences: Sequence[str] = (DEFAULT_AUDIENCE,)
    ) -> None:
        if not audiences:
            raise ValueError("at least one token audience is needed")
        self._auth = client.AuthenticationV1Api(api)
        self.audiences = tuple(audiences)

    async def authenticate(self, token: str) -> WorkloadIdentity:
        precheck_claims(token, self.audiences, dt.datetime.now(dt.UTC))
        review = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=list(self.audiences))
        )
        try:
            result = await asyncio.to_thread(self._auth.create_token_review, review)
        except client.ApiException as exc:
            raise Refusal(
                "tokenreview_failed",
                "UNAVAILABLE",
                f"could not review the token with the apiserver ({exc.status} {exc.reason}); "
                "the control plane needs RBAC to create tokenreviews.authentication.k8s.io",
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Connection refused, TLS failure, timeout: the apiserver is out of reach, which
            # says nothing about the token; UNAVAILABLE tells the agent to retry.
            raise Refusal(
                "tokenreview_failed",
                "UNAVAILABLE",
                f"the TokenReview could not reach the API server ({type(exc).__name__}: {exc}); "
                "check the control plane's kubeconfig or in-cluster access to the apiserver",
            ) from exc
        return caller_from_review(result.status, self.audiences)
