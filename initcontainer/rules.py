"""The rule model shared by the plan, the restore renderer and the python-iptables backend.

A rule is plain data: the table, the chain, the iptables match/target arguments, and an
optional insert position. Nothing here knows how rules reach the kernel.
"""

from __future__ import annotations

from initcontainer.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import ClassVar

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


class Family:
    """An IP family and the names of its iptables tools: ``Family.IPV4`` or ``Family.IPV6``.

    Two instances, compared by identity; a plain class rather than an enum, whose import
    costs ~5 ms of every pod start.
    """

    __slots__ = ("tool", "value", "version")
    IPV4: ClassVar[Family]
    IPV6: ClassVar[Family]

    def __init__(self, value: str, tool: str, version: int) -> None:
        self.value = value  # "ipv4": as logged, and in --dry-run's "# ipv4" headers
        self.tool = tool
        self.version = version

    def __repr__(self) -> str:
        return f"Family.{self.value.upper()}"


Family.IPV4 = Family("ipv4", "iptables", 4)
Family.IPV6 = Family("ipv6", "ip6tables", 6)
FAMILIES = (Family.IPV4, Family.IPV6)


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
