"""Reading one object's fields with the path of each, refusing what Istio's schema refuses.

Istio's CRD schemas refuse unknown fields and wrong types before istiod sees an object; a
config directory has no API server to do that, so :class:`Fields` does it for both sources.
Every getter knows the field's path (``spec.http[0].route[1].weight``), so every problem,
here or in the parsers, is reported as :class:`~controlplane.errors.InvalidConfig` with
``<Kind> <namespace>/<name>: <path>: <problem>``.

A field Istio knows and Remora does not model yet is accepted and its path recorded in
:attr:`Context.unmodelled`, so the control plane can say it is not honoured.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from controlplane.errors import InvalidConfig
from meshlib.syntax import SyntaxProblem, parse_duration

E = TypeVar("E", bound=enum.Enum)

MIN_DURATION = 0.001
"""Istio refuses durations under 1ms wherever a timeout or interval is set."""


@dataclass
class Context:
    """The object being read: its name for messages and what it holds Remora does not model."""

    ref: str
    unmodelled: list[str] = field(default_factory=list)

    def fail(self, path: str, problem: str) -> NoReturn:
        raise InvalidConfig(f"{self.ref}: {path}: {problem}")


class Fields:
    """The JSON object at ``path``: typed getters that name the field in every refusal.

    ``known`` are the fields Remora models; ``unmodelled`` the fields Istio's API has that
    Remora accepts without honouring (recorded on the context). Any other key is refused.
    """

    def __init__(
        self,
        ctx: Context,
        path: str,
        raw: Any,
        known: Collection[str],
        unmodelled: Collection[str] = (),
    ) -> None:
        if not isinstance(raw, Mapping):
            ctx.fail(path, f"must be an object, not {_type_name(raw)}")
        for key in raw:
            if key in unmodelled:
                ctx.unmodelled.append(f"{path}.{key}")
            elif key not in known:
                ctx.fail(f"{path}.{key}", "unknown field (Istio's API has no such field)")
        self.ctx = ctx
        self.path = path
        self.raw: Mapping[str, Any] = raw

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def fail(self, key: str, problem: str) -> NoReturn:
        self.ctx.fail(self.at(key), problem)

    def text(self, key: str) -> str:
        """A string field; "" when unset."""
        value = self.raw.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_type_name(value)}")
        return value

    def integer(
        self, key: str, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        """An integer field within ``minimum``..``maximum``; None when unset."""
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, not {_type_name(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be {minimum} or more, not {value}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be {maximum} or less, not {value}")
        return value

    def port(self, key: str) -> int | None:
        return self.integer(key, 1, 65535)

    def number(self, key: str, minimum: float, maximum: float) -> float | None:
        """A double within ``minimum``..``maximum`` (percentages); None when unset."""
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, not {_type_name(value)}")
        if not minimum <= value <= maximum:
            self.fail(key, f"must be between {minimum:g} and {maximum:g}, not {value:g}")
        return float(value)

    def flag(self, key: str) -> bool | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {_type_name(value)}")
        return value

    def duration(self, key: str, minimum: float = MIN_DURATION) -> float | None:
        """A protobuf duration (``5s``, ``0.5s``, ``1m``) in seconds; None when unset."""
        text = self.text(key)
        if not text:
            return None
        try:
            seconds = parse_duration(text)
        except SyntaxProblem as exc:
            self.fail(key, str(exc))
        if seconds < minimum:
            self.fail(key, f"{text!r} is too short: a duration here must be at least 1ms")
        if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
            self.fail(key, f"{text!r} is finer than Istio takes: durations are whole milliseconds")
        return seconds

    def enum(self, key: str, kind: type[E]) -> E | None:
        """One of ``kind``'s values, spelled as Istio does (upper case); None when unset."""
        text = self.text(key)
        if not text:
            return None
        try:
            return kind(text)
        except ValueError:
            choices = ", ".join(str(member.value) for member in kind)
            self.fail(key, f"{text!r} is not one of {choices}")

    def fields(
        self, key: str, known: Collection[str], unmodelled: Collection[str] = ()
    ) -> Fields | None:
        """The nested object ``key``; None when unset."""
        value = self.raw.get(key)
        if value is None:
            return None
        return Fields(self.ctx, self.at(key), value, known, unmodelled)

    def items(self, key: str) -> Iterator[tuple[str, Any]]:
        """The list ``key``'s items with their paths (``spec.http[2]``); none when unset."""
        value = self.raw.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.fail(key, f"must be a list, not {_type_name(value)}")
        for i, item in enumerate(value):
            yield f"{self.at(key)}[{i}]", item

    def list_of(
        self, key: str, known: Collection[str], unmodelled: Collection[str] = ()
    ) -> Iterator[Fields]:
        """The list of objects ``key``, each read with ``known`` fields."""
        for path, item in self.items(key):
            yield Fields(self.ctx, path, item, known, unmodelled)

    def strings(self, key: str) -> tuple[str, ...]:
        """A list of strings; () when unset."""
        values = []
        for path, item in self.items(key):
            if not isinstance(item, str):
                self.ctx.fail(path, f"must be a string, not {_type_name(item)}")
            values.append(item)
        return tuple(values)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        """A ``map<string, string>`` as sorted pairs (labels, headers to set)."""
        value = self.raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.fail(key, f"must be an object, not {_type_name(value)}")
        for name, item in value.items():
            if not isinstance(item, str):
                self.ctx.fail(f"{self.at(key)}.{name}", f"must be a string, not {_type_name(item)}")
        return tuple(sorted((str(name), item) for name, item in value.items()))

    def mapping(self, key: str) -> Mapping[str, Any]:
        """A map with values the caller reads; {} when unset."""
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f"must be an object, not {_type_name(value)}")
        return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
