"""Waiting for something that happens in another process or thread: poll it, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout.

    An exception from ``condition`` counts as "not yet" (what is polled may not be up yet);
    the last one is in the :class:`TimeoutError`'s message.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what or condition}"
        + (f": {last_error}" if last_error else "")
    )


CONVERGE_S = 30.0
"""How long a bounded wait of the mesh tests gives the shared 2-core machine; the assertions
after it are strict."""


def wait_until(what: str, check: Callable[[], T], timeout: float = CONVERGE_S) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``.

    Unlike :func:`wait_for`, an exception from ``check`` is the test's failure at once, and
    running out of time is an :class:`AssertionError` naming ``what`` and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f} s: {what} (last: {value!r})")
        time.sleep(0.2)
