"""SPIFFE identities of Kubernetes workloads: ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``.

Shared by the mesh CA (which signs them) and the agent (which asks for them), so that both
read and write the same form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
SERVICE_ACCOUNT_USER_PREFIX = "system:serviceaccount:"
# A trust domain is a DNS-like name; namespaces and service accounts are DNS-1123 names.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class InvalidSpiffeId(ValueError):
    """A string that is not a Kubernetes workload SPIFFE ID."""


@dataclass(frozen=True, order=True)
class WorkloadIdentity:
    """A Kubernetes service account, optionally placed in a trust domain."""

    namespace: str
    service_account: str

    def spiffe_id(self, trust_domain: str) -> str:
        return f"{SCHEME}{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"


def parse_spiffe_id(uri: str) -> tuple[str, WorkloadIdentity]:
    """``spiffe://td/ns/NS/sa/SA`` → ``(td, WorkloadIdentity(NS, SA))``; anything else raises."""
    if not uri.startswith(SCHEME):
        raise InvalidSpiffeId(f"{uri!r} is not a SPIFFE ID (it must start with {SCHEME})")
    trust_domain, _, path = uri[len(SCHEME) :].partition("/")
    parts = path.split("/")
    if (
        not _TRUST_DOMAIN.match(trust_domain)
        or len(parts) != 4
        or parts[0] != "ns"
        or parts[2] != "sa"
        or not all(_NAME.match(p) for p in (parts[1], parts[3]))
    ):
        raise InvalidSpiffeId(
            f"{uri!r} is not a workload SPIFFE ID of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
        )
    return trust_domain, WorkloadIdentity(parts[1], parts[3])


def identity_from_username(username: str) -> WorkloadIdentity | None:
    """``system:serviceaccount:NS:SA`` (a TokenReview's user name) → identity; else None."""
    if not username.startswith(SERVICE_ACCOUNT_USER_PREFIX):
        return None
    namespace, sep, name = username[len(SERVICE_ACCOUNT_USER_PREFIX) :].partition(":")
    if not sep or not _NAME.match(namespace) or not _NAME.match(name):
        return None
    return WorkloadIdentity(namespace, name)
