"""The python-iptables backend: the same plan, written through libiptc (``import iptc``).

Kept because it is the library the design card named; read its limits before choosing it:

* **IPv4 only.** python-iptables (1.2.0 and, as of writing, upstream) writes the interface
  mask of IPv6 rules as ``\\x01`` bytes instead of ``\\xff`` (ldx/python-iptables #244), so
  ``-o lo`` also matches other interfaces and IPv6 app traffic silently bypasses the sidecar.
  This backend refuses any plan with IPv6 rules instead of installing them wrongly.
* **Legacy x_tables only.** libiptc cannot see or write nf_tables; on a node whose rules live
  in iptables-nft it would create a second, competing NAT table, so it refuses there too.
* **Slow to start.** ``import iptc`` costs ~150-200 ms (it runs ldconfig and imports
  distutils); iptables-restore does the whole job in ~25 ms.
* **Atomic per table, not per family.** Each table is one commit (``autocommit=False``: the
  library's default commits every single rule). A failure in a later table is rolled back
  by removing everything of ours.

``iptc`` is imported inside this module only, and this module only when it is chosen.
"""

from __future__ import annotations

import subprocess
from typing import Any

from initcontainer.errors import CaptureError, hint_for
from initcontainer.log import getLogger
from initcontainer.plan import CapturePlan
from initcontainer.restore import SavedState, count_rules, parse_save
from initcontainer.rules import (
    BUILTIN_CHAINS,
    BUILTIN_TARGETS,
    OWNER_COMMENT,
    Family,
    Rule,
    chains_in_order,
    is_own_chain,
    tables_in_order,
)

log = getLogger("initcontainer.backend")

IPV6_REFUSAL = (
    "the python-iptables backend cannot install IPv6 rules: python-iptables writes IPv6 "
    "interface masks wrongly (ldx/python-iptables #244), so IPv6 traffic would bypass the "
    "sidecar"
)
IPV6_REFUSAL_HINT = "use --backend=iptables-restore (the default) for IPv6 and dual-stack pods"


def _save(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return ""
    return result.stdout if result.returncode == 0 else ""


class IptcBackend:
    """python-iptables: IPv4, legacy x_tables, one commit per table."""

    name = "python-iptables"

    def __init__(self) -> None:
        self._iptc: Any = None

    def _module(self) -> Any:
        if self._iptc is None:
            try:
                import iptc  # the slow import: only here
            except Exception as error:  # ImportError, or XTablesError when libs are missing
                raise CaptureError(
                    f"python-iptables cannot be loaded: {error}",
                    "install python-iptables and the iptables package (it provides "
                    "libxtables and the xt extensions), or use --backend=iptables-restore",
                ) from None
            self._iptc = iptc
        return self._iptc

    def _check_not_nft(self) -> None:
        nft_rules = count_rules(_save(["iptables-nft-save"]))
        if nft_rules:
            raise CaptureError(
                f"iptables-nft holds {nft_rules} rules in this network namespace, but "
                "python-iptables can only write iptables-legacy tables; two NAT tables at the "
                "same hook make capture depend on registration order",
                "use --backend=iptables-restore, which follows the backend in use",
            )

    def install(self, plan: CapturePlan) -> None:
        if plan.ipv6 is not None:
            raise CaptureError(IPV6_REFUSAL, IPV6_REFUSAL_HINT)
        self._check_not_nft()
        log.info("iptables backend chosen", extra={"mode": "legacy", "reason": "python-iptables"})
        existing = parse_save(_save(["iptables-legacy-save"]))
        try:
            self._write(plan.ipv4, existing)
        except CaptureError:
            self._rollback()
            raise

    def _write(self, rules: tuple[Rule, ...], existing: SavedState) -> None:
        tables = sorted({*tables_in_order(rules), *existing.own_tables()})
        for table in tables:
            try:
                self._write_table(table, [r for r in rules if r.table == table])
            except CaptureError:
                raise
            except Exception as error:  # IPTCError, XTablesError, ValueError from libiptc
                raise CaptureError(
                    f"python-iptables failed on the {table} table: {error}", hint_for(str(error))
                ) from None

    def _write_table(self, table_name: str, rules: list[Rule]) -> None:
        """Replace our part of one table in a single commit."""
        iptc = self._module()
        table = iptc.Table(table_name, autocommit=False)
        table.refresh()
        planned = chains_in_order(rules, table_name)
        chains = {chain.name: chain for chain in table.chains}
        for name, chain in chains.items():
            if name in BUILTIN_CHAINS:
                for rule in list(chain.rules):
                    if _is_own_iptc_rule(rule):
                        chain.delete_rule(rule)
        own = [name for name in chains if is_own_chain(name)]
        for name in own:
            chains[name].flush()
        for name in own:
            if name not in planned:
                table.delete_chain(name)
        for name in planned:
            if name not in chains:
                table.create_chain(name)
        for rule in rules:
            chain = iptc.Chain(table, rule.chain)
            built = to_iptc_rule(iptc, rule)
            if rule.position is None:
                chain.append_rule(built)
            else:
                chain.insert_rule(built, rule.position - 1)
        table.commit()
        table.refresh()
        table.autocommit = True

    def _rollback(self) -> None:
        try:
            self.cleanup()
        except CaptureError as error:
            log.error("rollback failed; rules of ours may remain", extra={"error": str(error)})

    def cleanup(self) -> int:
        existing = parse_save(_save(["iptables-legacy-save"]))
        removed = existing.own_rule_count()
        if existing.has_own_state():
            self._write((), existing)
            log.info("capture rules removed", extra={"mode": "legacy", "rules": removed})
        return removed

    def saved_state(self) -> dict[Family, str]:
        return {Family.IPV4: _save(["iptables-legacy-save"])}


def _is_own_iptc_rule(rule: Any) -> bool:
    target = rule.target.name if rule.target is not None else ""
    if is_own_chain(target):
        return True
    return any(
        m.name == "comment" and str(m.comment).strip('"') == OWNER_COMMENT for m in rule.matches
    )


_CORE_OPTIONS = {
    "-p": "protocol",
    "-s": "src",
    "-d": "dst",
    "-i": "in_interface",
    "-o": "out_interface",
}


def to_iptc_rule(iptc: Any, rule: Rule) -> Any:
    """Translate iptables arguments into an ``iptc.Rule``.

    Handles the grammar the plan uses: ``[!] -p/-s/-d/-i/-o VALUE``, ``-m MODULE`` followed
    by its ``[!] --option [VALUE]``s, implicit protocol matches (``-p tcp --dport 80``), and
    ``-j TARGET`` with its options.
    """
    built = iptc.Rule()
    tokens = list(rule.params)
    module: Any = None
    negate = False
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "!":
            negate = True
            continue
        prefix = "!" if negate else ""
        negate = False
        if token in _CORE_OPTIONS:
            value = prefix + tokens[index]
            index += 1
            setattr(built, _CORE_OPTIONS[token], value)
        elif token == "-m":
            module = built.create_match(tokens[index])
            index += 1
        elif token == "-j":
            name = tokens[index]
            index += 1
            module = built.create_target(name)
            if name in BUILTIN_TARGETS or is_own_chain(name):
                module = None
        elif token.startswith("--"):
            if module is None:  # an implicit match: "-p tcp --dport 80"
                module = built.create_match(built.protocol.lstrip("!"))
            has_value = (
                index < len(tokens) and not tokens[index].startswith("-") and tokens[index] != "!"
            )
            value = tokens[index] if has_value else ""
            if has_value:
                index += 1
            module.parse(token[2:], prefix + value)
        else:
            raise CaptureError(f"cannot translate {token!r} in rule {rule.restore_line()!r}")
    return built
