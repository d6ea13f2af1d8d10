"""The default backend: ``iptables-save`` to read, ``iptables-restore --noflush`` to write.

One restore transaction per family: the kernel (nf_tables, or x_tables' whole-table
replace for legacy) applies it entirely or not at all. IPv4 and IPv6 are two transactions,
so when the second fails the first is rolled back by a clean-up, and the pod is left with
none of our rules rather than half of them.
"""

from __future__ import annotations

from initcontainer import process
from initcontainer.errors import CaptureError, hint_for
from initcontainer.iptables_mode import MODES, ModeChoice, ModeProbe, choose_mode
from initcontainer.log import getLogger
from initcontainer.records import NamedTuple
from initcontainer.restore import SavedState, count_rules, parse_save, transaction
from initcontainer.rules import FAMILIES, Family

TYPE_CHECKING = False
if TYPE_CHECKING:
    from initcontainer.iptables_mode import Mode
    from initcontainer.plan import CapturePlan
    from initcontainer.rules import Rule

log = getLogger("initcontainer.backend")

# Legacy restores take the xtables lock; wait for it like istio-iptables does (--wait=30).
_LEGACY_LOCK_WAIT = "--wait=30"
# iptables-legacy-restore: "line 3 failed"; iptables-nft-restore: "Error occurred at line: 3".
_FAILED_LINE = r"(?:line:?\s*(\d+)\s*failed|Error occurred at line:\s*(\d+))"


def tool(family: Family, mode: Mode, action: str) -> str:
    """``iptables-nft-save``, ``ip6tables-legacy-restore``, ..."""
    return f"{family.tool}-{mode}-{action}"


class _Saved(NamedTuple):
    text: str
    ok: bool
    error: str


_INSTALL_HINT = (
    "install the iptables package (1.8 or later) in the init container image: it provides "
    "iptables and ip6tables, in both flavours (nft and legacy)"
)


def _run(argv: list[str], stdin: str | None = None) -> process.Result:
    try:
        return process.run(argv, stdin)
    except OSError as error:
        raise process.failure(argv[0], error, _INSTALL_HINT) from None


class RestoreBackend:
    """iptables-restore, in the nft or legacy flavour chosen by :func:`choose_mode`."""

    name = "iptables-restore"

    def __init__(self, forced_mode: Mode | None = None) -> None:
        self._forced_mode = forced_mode
        self._choice: ModeChoice | None = None
        self._saved: dict[tuple[Family, Mode], _Saved] = {}

    # --- reading -------------------------------------------------------------------------

    def _read_all(self, modes: tuple[Mode, ...]) -> None:
        """Run every ``*-save`` we need at once: they are independent and each costs ~2 ms.

        A missing tool only makes its backend unavailable; one that cannot be run for
        another reason (not executable, wrong architecture, out of descriptors) is an
        error, raised once the tools already started are stopped and reaped.
        """
        started: list[tuple[Family, Mode, process.Process | None]] = []
        try:
            for mode in modes:
                for family in FAMILIES:
                    name = tool(family, mode, "save")
                    try:
                        proc: process.Process | None = process.Process([name])
                    except FileNotFoundError:
                        proc = None
                    except OSError as error:
                        raise process.failure(name, error, _INSTALL_HINT) from None
                    started.append((family, mode, proc))
            for family, mode, proc in started:
                name = tool(family, mode, "save")
                if proc is None:
                    self._saved[family, mode] = _Saved("", False, f"{name} not found")
                    continue
                try:
                    result = proc.communicate()
                except OSError as error:
                    raise process.failure(name, error, _INSTALL_HINT) from None
                self._saved[family, mode] = _Saved(
                    result.stdout, result.returncode == 0, result.stderr
                )
        finally:  # a no-op for the tools that were communicated with
            for _family, _mode, proc in started:
                if proc is not None:
                    proc.kill()

    def _reread(self, family: Family, mode: Mode) -> SavedState:
        result = _run([tool(family, mode, "save")])
        if result.returncode != 0:
            raise CaptureError(
                f"{tool(family, mode, 'save')} failed: {result.stderr.strip()}",
                hint_for(result.stderr),
            )
        self._saved[family, mode] = _Saved(result.stdout, True, "")
        return parse_save(result.stdout)

    def _probe(self, mode: Mode) -> ModeProbe:
        v4, v6 = self._saved[Family.IPV4, mode], self._saved[Family.IPV6, mode]
        if not v4.ok:
            return ModeProbe(mode, available=False, error=v4.error)
        texts = [v4.text] + ([v6.text] if v6.ok else [])
        return ModeProbe(
            mode,
            available=True,
            rules=sum(count_rules(t) for t in texts),
            own_rules=sum(parse_save(t).own_rule_count() for t in texts),
        )

    def select_mode(self) -> ModeChoice:
        """Read both backends (or only the forced one) and choose; logged with the reason."""
        if self._choice is None:
            modes = (self._forced_mode,) if self._forced_mode else MODES
            self._read_all(modes)
            probes = {mode: self._probe(mode) for mode in modes}
            if self._forced_mode and not probes[self._forced_mode].available:
                mode = self._forced_mode
                raise CaptureError(
                    f"iptables-{mode} is not usable here: {probes[mode].error.strip()}",
                    hint_for(probes[mode].error)
                    if probes[mode].error
                    else "install the iptables package, or pick the other --iptables-mode",
                )
            for mode in MODES:  # a forced mode probes only itself
                probes.setdefault(mode, ModeProbe(mode, available=False, error="not probed"))
            self._choice = choose_mode(self._forced_mode, probes["nft"], probes["legacy"])
            log.info(
                "iptables backend chosen",
                extra={"mode": self._choice.mode, "reason": self._choice.reason},
            )
        return self._choice

    def _state(self, family: Family, mode: Mode) -> SavedState | None:
        saved = self._saved.get((family, mode))
        if saved is None or not saved.ok:
            return None
        return parse_save(saved.text)

    # --- writing -------------------------------------------------------------------------

    def _restore(self, family: Family, mode: Mode, rules: tuple[Rule, ...]) -> None:
        """One transaction; retried once if a concurrent change made a ``-D`` line stale."""
        state = self._state(family, mode)
        if state is None:
            state = self._reread(family, mode)
        for attempt in (1, 2):
            text = transaction(rules, state)
            if not text:
                return
            argv = [tool(family, mode, "restore"), "--noflush"]
            if mode == "legacy":
                argv.append(_LEGACY_LOCK_WAIT)
            result = _run(argv, stdin=text)
            if result.returncode == 0:
                self._saved.pop((family, mode), None)  # stale now
                return
            failed_line = _failed_line(result.stderr, text)
            if attempt == 1 and failed_line.startswith("-D "):
                log.warning(
                    "rules changed between save and restore; reading them again",
                    extra={"family": family.value, "line": failed_line},
                )
                state = self._reread(family, mode)
                continue
            where = f" at {failed_line!r}" if failed_line else ""
            raise CaptureError(
                f"{argv[0]} rejected the {family.value} rules{where}: {_first_line(result.stderr)}",
                hint_for(result.stderr),
            )

    def install(self, plan: CapturePlan) -> None:
        mode = self.select_mode().mode
        planned = dict(plan.families())
        try:
            for family in FAMILIES:
                rules = planned.get(family)
                if rules is None:
                    # Not planned (IPv4-only pod), but an earlier run may have left rules.
                    state = self._state(family, mode)
                    if state is None or not state.has_own_state():
                        continue
                    rules = ()
                self._restore(family, mode, rules)
        except CaptureError:
            self._rollback(mode, planned)
            raise

    def _rollback(self, mode: Mode, planned: dict[Family, tuple[Rule, ...]]) -> None:
        """Best effort: leave no rule of ours behind after a failed install."""
        for family in FAMILIES:
            state = self._state(family, mode)
            if family not in planned and (state is None or not state.has_own_state()):
                continue  # never written, nothing of ours (or no such family here)
            try:
                self._restore(family, mode, ())
            except CaptureError as error:
                log.error(
                    "rollback failed; rules of ours may remain",
                    extra={"family": family.value, "error": str(error)},
                )

    def cleanup(self) -> int:
        """Remove our rules from every backend that holds some (or the forced one)."""
        if self._forced_mode:
            modes: tuple[Mode, ...] = (self._forced_mode,)
            self._read_all(modes)
        else:
            self._read_all(MODES)
            modes = MODES
        removed = 0
        for mode in modes:
            for family in FAMILIES:
                state = self._state(family, mode)
                if state is None or not state.has_own_state():
                    continue
                count = state.own_rule_count()
                self._restore(family, mode, ())
                log.info(
                    "capture rules removed",
                    extra={"mode": mode, "family": family.value, "rules": count},
                )
                removed += count
        return removed

    def saved_state(self) -> dict[Family, str]:
        mode = self.select_mode().mode
        out = {}
        for family in FAMILIES:
            result = _run([tool(family, mode, "save")])
            out[family] = result.stdout if result.returncode == 0 else result.stderr
        return out


def _first_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no error message"


def _failed_line(stderr: str, text: str) -> str:
    """The restore line the tool complained about (both flavours print its number)."""
    import re  # only on failure: compiling costs milliseconds at every pod start

    match = re.search(_FAILED_LINE, stderr, re.IGNORECASE)
    if not match:
        return ""
    number = int(match.group(1) or match.group(2))
    lines = text.splitlines()
    return lines[number - 1] if 0 < number <= len(lines) else ""
