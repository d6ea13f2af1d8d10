"""Debouncing config events: one push per burst, at the latest state.

Kubernetes delivers changes one object at a time (a rollout is dozens of EndpointSlice
updates); translating and pushing after each would burn the CPU on states that are
already outdated. The debouncer waits for ``quiet`` seconds without events, but never
more than ``max_delay`` after the first event of a burst, then calls the push once. The
push reads the latest snapshot, so whatever arrived meanwhile is included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEFAULT_QUIET = 0.1
DEFAULT_MAX_DELAY = 1.0


def fire_at(first_event: float, last_event: float, quiet: float, max_delay: float) -> float:
    """When a burst that started at ``first_event`` and last grew at ``last_event`` is pushed."""
    return min(last_event + quiet, first_event + max_delay)


class Debouncer:
    """Calls ``action(first_event_time)`` once per burst of :meth:`notify` calls.

    ``first_event_time`` (monotonic clock) lets the push measure convergence from the
    moment the config changed, debounce included.
    """

    def __init__(
        self,
        action: Callable[[float], Awaitable[None]],
        quiet: float = DEFAULT_QUIET,
        max_delay: float = DEFAULT_MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError(f"debounce needs 0 <= quiet ({quiet}) <= max_delay ({max_delay})")
        self._action = action
        self.quiet = quiet
        self.max_delay = max_delay
        self._clock = clock
        self._first: float | None = None
        self._last = 0.0
        self._wakeup = asyncio.Event()

    def notify(self) -> None:
        now = self._clock()
        if self._first is None:
            self._first = now
        self._last = now
        self._wakeup.set()

    @property
    def pending(self) -> bool:
        return self._first is not None

    async def run(self) -> None:
        """Push bursts until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._first is not None:
                delay = fire_at(self._first, self._last, self.quiet, self.max_delay) - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                first, self._first = self._first, None
                await self._action(first)
