"""SPIFFE IDs and service-account user names (shared by the CA and the agent)."""

from __future__ import annotations

import pytest

from meshlib.spiffe import (
    InvalidSpiffeId,
    WorkloadIdentity,
    identity_from_username,
    parse_spiffe_id,
)


def test_round_trip() -> None:
    ident = WorkloadIdentity("shop", "cart")
    uri = ident.spiffe_id("example.org")
    assert uri == "spiffe://example.org/ns/shop/sa/cart"
    assert parse_spiffe_id(uri) == ("example.org", ident)


@pytest.mark.parametrize(
    "uri",
    [
        "https://cluster.local/ns/a/sa/b",
        "spiffe://cluster.local/ns/a",
        "spiffe://cluster.local/ns/a/sa/b/extra",
        "spiffe://cluster.local/sa/b/ns/a",
        "spiffe://cluster.local/ns/A/sa/b",
        "spiffe://cluster.local/ns/a/sa/../b",
        "spiffe:///ns/a/sa/b",
    ],
)
def test_not_workload_ids(uri: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        parse_spiffe_id(uri)


def test_usernames() -> None:
    assert identity_from_username("system:serviceaccount:shop:cart") == WorkloadIdentity(
        "shop", "cart"
    )
    for name in (
        "kubernetes-admin",
        "system:serviceaccount:shop",
        "system:node:n1",
        "system:serviceaccount::x",
    ):
        assert identity_from_username(name) is None
