"""What every way of programming the kernel must offer: install all or nothing, clean up."""

from __future__ import annotations

from typing import Protocol

from initcontainer.plan import CapturePlan
from initcontainer.rules import Family


class Backend(Protocol):
    """A way to put a :class:`CapturePlan` into the kernel.

    ``install`` either leaves exactly the plan's rules (replacing any earlier set of ours) or
    raises :class:`~initcontainer.errors.CaptureError` having removed every rule of ours.
    ``cleanup`` removes every rule of ours and reports how many there were (0: a no-op).
    """

    name: str

    def install(self, plan: CapturePlan) -> None: ...

    def cleanup(self) -> int: ...

    def saved_state(self) -> dict[Family, str]:
        """``*-save`` output per family, for the debug log of the final state."""
        ...
