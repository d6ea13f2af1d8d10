"""Token handling of the CA without an apiserver: metadata, claim pre-checks, review results."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from controlplane.ca.authn import (
    TokenReviewAuthenticator,
    bearer_token,
    caller_from_review,
    precheck_claims,
)
from controlplane.ca.csr import Refusal
from meshlib.spiffe import WorkloadIdentity

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
AUD = ("istio-ca",)


def jwt(**claims: Any) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def refused(fn: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as info:
        fn(*args)
    return info.value


def test_bearer_token_from_metadata() -> None:
    assert bearer_token([("x", "y"), ("authorization", "Bearer abc.def")]) == "abc.def"
    assert bearer_token([("Authorization", b"bearer tok")]) == "tok"
    for metadata in ([], [("authorization", "Basic dTpw")], [("authorization", "Bearer ")]):
        r = refused(bearer_token, metadata)
        assert (r.code, r.reason) == ("UNAUTHENTICATED", "no_token")


def test_expired_claim_is_refused_with_the_time() -> None:
    token = jwt(exp=int((NOW - dt.timedelta(seconds=1)).timestamp()), aud=["istio-ca"])
    r = refused(precheck_claims, token, AUD, NOW)
    assert (r.code, r.reason) == ("UNAUTHENTICATED", "token_expired")
    assert "expired at 2025-12-31T23:59:59+00:00" in r.message


def test_wrong_audience_claim_is_refused() -> None:
    token = jwt(
        exp=int((NOW + dt.timedelta(hours=1)).timestamp()), aud="https://kubernetes.default.svc"
    )
    r = refused(precheck_claims, token, AUD, NOW)
    assert (r.code, r.reason) == ("UNAUTHENTICATED", "wrong_audience")
    assert "https://kubernetes.default.svc" in r.message and "istio-ca" in r.message


def test_good_or_unreadable_claims_are_left_to_the_apiserver() -> None:
    precheck_claims(jwt(exp=int(NOW.timestamp()) + 60, aud=["x", "istio-ca"]), AUD, NOW)
    precheck_claims("opaque-token", AUD, NOW)
    precheck_claims("a.!!!.c", AUD, NOW)


def review(**status: Any) -> Any:
    user = SimpleNamespace(username=status.pop("username", ""))
    return SimpleNamespace(user=user, **status)


def test_review_gives_the_service_account() -> None:
    status = review(
        authenticated=True, audiences=["istio-ca"], username="system:serviceaccount:shop:cart"
    )
    assert caller_from_review(status, AUD) == WorkloadIdentity("shop", "cart")


@pytest.mark.parametrize(
    ("status", "code", "reason", "words"),
    [
        (
            review(
                authenticated=False,
                error="[invalid bearer token, service account token has expired]",
            ),
            "UNAUTHENTICATED",
            "token_expired",
            "has expired",
        ),
        (
            review(
                authenticated=False,
                error='token audiences ["x"] is invalid for the target audiences',
            ),
            "UNAUTHENTICATED",
            "wrong_audience",
            "target audiences",
        ),
        (
            review(authenticated=False, error=None),
            "UNAUTHENTICATED",
            "invalid_token",
            "not accepted",
        ),
        (
            review(authenticated=True, audiences=["other"], username="system:serviceaccount:a:b"),
            "UNAUTHENTICATED",
            "wrong_audience",
            "['other']",
        ),
        (
            review(authenticated=True, audiences=["istio-ca"], username="kubernetes-admin"),
            "PERMISSION_DENIED",
            "not_a_service_account",
            "kubernetes-admin",
        ),
    ],
)
def test_review_refusals(status: Any, code: str, reason: str, words: str) -> None:
    r = refused(caller_from_review, status, AUD)
    assert (r.code, r.reason) == (code, reason)
    assert words in r.message


def test_unreachable_apiserver_is_unavailable_not_unknown() -> None:
    """A connection error (not an ApiException) must still come back as a clear status."""
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = client.Configuration(host=f"https://127.0.0.1:{port}")
    config.retries = False
    authenticator = TokenReviewAuthenticator(client.ApiClient(config))
    with pytest.raises(Refusal) as info:
        asyncio.run(authenticator.authenticate("opaque-token"))
    assert (info.value.code, info.value.reason) == ("UNAVAILABLE", "tokenreview_failed")
    assert "could not reach the API server" in info.value.message
