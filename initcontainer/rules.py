"""The rule model shared by the plan, the restore renderer and the python-iptables backend.

A rule is plain data: the table, the chain, the iptables match/target arguments, and an
optional insert position. Nothing here knows how rules reach the kernel.
"""

# Annotations are evaluated eagerly (no ``from __future__ import annotations``): NamedTuple
# compiles every *string* annotation into a ForwardRef, ~0.1 ms per field on each pod start.

import enum
from collections.abc import Sequence
from typing import NamedTuple

# Every chain Remora creates starts with this prefix, as istio-iptables' chains do, so that
# a pod set up by istio-iptables is taken over (and cleaned up) by Remora and vice versa.
OWN_CHAIN_PREFIX = "ISTIO_"

ISTIO_INBOUND = "ISTIO_INBOUND"
ISTIO_IN_REDIRECT = "ISTIO_IN_REDIRECT"
ISTIO_OUTPUT = "ISTIO_OUTPUT"
ISTIO_REDIRECT = "ISTIO_REDIRECT"
ISTIO_OUTPUT_DNS = "ISTIO_OUTPUT_DNS"
ISTIO_DIVERT = "ISTIO_DIVERT"
ISTIO_TPROXY = "ISTIO_TPROXY"
ISTIO_DROP = "ISTIO_DROP"

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
BUILTIN_TARGETS = frozenset({"ACCEPT", "DROP", "RETURN", "QUEUE"})

# Rules we add to the built-in chains carry this comment. Jumps into ISTIO_* chains would be
# recognisable without it, but interface exclusions and the TPROXY mark rules are not:
# the marker is how a re-run or a clean-up finds exactly our rules among other tools' rules.
OWNER_COMMENT = "remora-capture"


class Family(enum.Enum):
    """An IP family and the names of its iptables tools."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"

    @property
    def tool(self) -> str:
        return "iptables" if self is Family.IPV4 else "ip6tables"

    @property
    def version(self) -> int:
        return 4 if self is Family.IPV4 else 6


def is_own_chain(chain: str) -> bool:
    return chain.startswith(OWN_CHAIN_PREFIX)


class Rule(NamedTuple):
    """One iptables rule: ``-A chain params...`` or, with a position, ``-I chain N params...``."""

    table: str
    chain: str
    params: tuple[str, ...]
    position: int | None = None

    @property
    def target(self) -> str | None:
        """The ``-j`` target, if any."""
        params = self.params
        for index, token in enumerate(params[:-1]):
            if token == "-j":
                return params[index + 1]
        return None

    def restore_line(self) -> str:
        """The rule as an iptables-restore line."""
        head = f"-A {self.chain}" if self.position is None else f"-I {self.chain} {self.position}"
        return " ".join((head, *(quote(p) for p in self.params)))


def quote(token: str) -> str:
    """Quote a token for iptables-restore, which splits on whitespace and honours ``"``."""
    if token and not any(ch.isspace() or ch == '"' for ch in token):
        return token
    escaped = token.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def chains_in_order(rules: Sequence[Rule], table: str) -> list[str]:
    """Our chains in ``table``, in order of first appearance (as rule owner or jump target)."""
    seen: dict[str, None] = {}
    for rule in rules:
        if rule.table != table:
            continue
        for chain in (rule.chain, rule.target):
            if chain is not None and is_own_chain(chain):
                seen.setdefault(chain, None)
    return list(seen)


def tables_in_order(rules: Sequence[Rule]) -> list[str]:
    """The tables ``rules`` touch, sorted by name (filter, mangle, nat, raw) as Istio does."""
    return sorted({rule.table for rule in rules})
