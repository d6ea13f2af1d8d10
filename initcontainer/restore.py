"""iptables-restore text: one transaction that installs, replaces or removes our rules.

The same builder serves three purposes, so install, re-run and clean-up can never disagree
about what "our rules" are:

* a fresh install is ``transaction(rules, SavedState())``;
* a re-run passes what ``iptables-save`` shows now: our chains are flushed (``:CHAIN - [0:0]``
  creates *or* flushes), our old hook rules in the built-in chains are deleted (``-D`` with
  the text ``iptables-save`` printed), chains no longer planned are removed (``-X``), and the
  plan is added again, all before the single ``COMMIT`` of each table;
* a clean-up is the same with no rules.

The text is fed to ``iptables-restore --noflush``: tables are never flushed as a whole, so
rules of other tools (CNI plugins, kube-proxy, the user) stay where they are.
"""

from __future__ import annotations

from initcontainer.records import NamedTuple
from initcontainer.rules import (
    BUILTIN_CHAINS,
    OWNER_COMMENT,
    Rule,
    chains_in_order,
    is_own_chain,
    tables_in_order,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


class SavedRule(NamedTuple):
    """A rule as ``iptables-save`` printed it: ``-A <chain> <spec>``."""

    chain: str
    spec: str

    @property
    def target(self) -> str | None:
        tokens = self.spec.split()
        for index, token in enumerate(tokens[:-1]):
            if token in ("-j", "-g"):
                return tokens[index + 1]
        return None

    @property
    def has_owner_comment(self) -> bool:
        tokens = self.spec.split()
        return any(
            token == "--comment" and tokens[index + 1].strip('"') == OWNER_COMMENT
            for index, token in enumerate(tokens[:-1])
        )

    @property
    def is_own(self) -> bool:
        """Ours: any rule in an ISTIO_* chain, a jump into one, or a rule carrying our marker."""
        target = self.target
        return (
            is_own_chain(self.chain)
            or (target is not None and is_own_chain(target))
            or self.has_owner_comment
        )


class SavedTable:
    """One table of ``iptables-save``: its user-defined chains and rules, in save order."""

    __slots__ = ("chains", "rules")

    def __init__(self) -> None:
        self.chains: list[str] = []
        self.rules: list[SavedRule] = []


class SavedState:
    """The parsed output of ``iptables-save`` (or ``ip6tables-save``) for one family."""

    __slots__ = ("tables",)

    def __init__(self) -> None:
        self.tables: dict[str, SavedTable] = {}

    def own_chains(self, table: str) -> list[str]:
        saved = self.tables.get(table)
        return [c for c in saved.chains if is_own_chain(c)] if saved else []

    def own_hook_rules(self, table: str) -> list[SavedRule]:
        """Our rules in the kernel's built-in chains (those survive a flush of our chains)."""
        saved = self.tables.get(table)
        if saved is None:
            return []
        return [r for r in saved.rules if r.chain in BUILTIN_CHAINS and r.is_own]

    def own_rule_count(self) -> int:
        return sum(1 for t in self.tables.values() for r in t.rules if r.is_own)

    def own_tables(self) -> list[str]:
        """Tables holding a chain or a hook rule of ours."""
        return [t for t in self.tables if self.own_chains(t) or self.own_hook_rules(t)]

    def has_own_state(self) -> bool:
        return bool(self.own_tables())


def parse_save(text: str) -> SavedState:
    """Parse ``iptables-save`` output. Comments, counters and policies are ignored."""
    state = SavedState()
    current: SavedTable | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = state.tables.setdefault(line[1:].strip(), SavedTable())
        elif current is None or line == "COMMIT":
            continue
        elif line.startswith(":"):
            chain = line[1:].split(None, 1)[0]
            if chain not in BUILTIN_CHAINS:
                current.chains.append(chain)
        elif line.startswith("-A "):
            parts = line.split(None, 2)
            if len(parts) >= 2:
                current.rules.append(SavedRule(parts[1], parts[2] if len(parts) == 3 else ""))
    return state


def count_rules(save_text: str) -> int:
    """Real rules in ``*-save`` output. Lines are not rules: an empty table prints 8 lines."""
    return sum(1 for line in save_text.splitlines() if line.startswith("-A "))


def transaction(rules: Sequence[Rule], existing: SavedState) -> str:
    """The restore text that turns ``existing`` into exactly ``rules`` for our part of it.

    Empty when there is nothing to add and nothing of ours to remove.
    """
    tables = sorted({*tables_in_order(rules), *existing.own_tables()})
    lines: list[str] = []
    for table in tables:
        table_rules = [r for r in rules if r.table == table]
        planned_chains = chains_in_order(table_rules, table)
        stale_chains = [c for c in existing.own_chains(table) if c not in planned_chains]
        lines.append(f"*{table}")
        lines.extend(f":{chain} - [0:0]" for chain in (*planned_chains, *stale_chains))
        lines.extend(f"-D {r.chain} {r.spec}".rstrip() for r in existing.own_hook_rules(table))
        lines.extend(f"-X {chain}" for chain in stale_chains)
        lines.extend(r.restore_line() for r in table_rules)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


def install_text(rules: Sequence[Rule]) -> str:
    """What a fresh network namespace is fed: the plan and nothing else."""
    return transaction(rules, SavedState())


def cleanup_text(existing: SavedState) -> str:
    """Removes every chain and hook rule of ours; empty (a no-op) when there are none."""
    return transaction((), existing)
