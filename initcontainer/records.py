"""``NamedTuple`` for the init container, without importing ``typing`` at run time.

``import typing`` costs ~13 ms of the init container's 40 ms start-up budget on the shared
2-core VM (it loads ``re``, ``enum``, ``collections``, ``functools`` and ``contextlib``), and
``typing.NamedTuple`` then evaluates every field's annotation. The capture code only needs
what a named tuple gives: immutable plain data built by position or keyword, with defaults,
equality, hashing, ``repr`` and ``_replace``. So:

* mypy sees ``typing.NamedTuple`` (the ``TYPE_CHECKING`` branch): fields, defaults and
  constructor calls are type-checked exactly as before;
* at run time, :class:`NamedTuple` is a tuple subclass whose fields are the names of the
  class annotations, which ``from __future__ import annotations`` keeps as plain strings,
  never evaluated.

``tests/unit/test_capture_records.py`` holds it to ``typing.NamedTuple``'s behaviour.
"""

from __future__ import annotations

from _operator import itemgetter

__all__ = ["NamedTuple"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:

    class _NamedTupleType(type):
        """Turns ``field: type [= default]`` lines of the class body into tuple fields."""

        def __new__(mcs, name, bases, namespace):
            if namespace.get("__module__") == __name__:  # the base class itself
                return super().__new__(mcs, name, bases, namespace)
            fields = tuple(namespace.get("__annotations__", {}))
            defaults = {field: namespace.pop(field) for field in fields if field in namespace}
            required = fields[: len(fields) - len(defaults)]
            if any(field in defaults for field in required):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            for index, field in enumerate(fields):
                namespace[field] = property(itemgetter(index), doc=f"Alias for field {index}")
            namespace["_fields"] = fields
            namespace["_field_defaults"] = defaults
            namespace.setdefault("__slots__", ())
            return super().__new__(mcs, name, bases, namespace)

    class NamedTuple(tuple, metaclass=_NamedTupleType):
        __slots__ = ()
        _fields: tuple[str, ...] = ()
        _field_defaults: dict[str, object] = {}

        def __new__(cls, *args, **kwargs):
            fields = cls._fields
            if len(args) > len(fields):
                raise TypeError(f"{cls.__name__} takes {len(fields)} arguments, got {len(args)}")
            values = list(args)
            for field in fields[len(args) :]:
                if field in kwargs:
                    values.append(kwargs.pop(field))
                elif field in cls._field_defaults:
                    values.append(cls._field_defaults[field])
                else:
                    raise TypeError(f"{cls.__name__}() missing argument {field!r}")
            if kwargs:
                raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kwargs)}")
            return tuple.__new__(cls, values)

        def __repr__(self):
            inner = ", ".join(
                f"{field}={value!r}" for field, value in zip(self._fields, self, strict=True)
            )
            return f"{type(self).__name__}({inner})"

        def __getnewargs__(self):
            return tuple(self)

        def _asdict(self):
            return dict(zip(self._fields, self, strict=True))

        def _replace(self, **changes):
            return type(self)(**{**self._asdict(), **changes})
