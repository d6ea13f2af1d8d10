"""The sidecar agent's exceptions form one tree under SidecarError, drawn in sidecar.errors."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import sidecar
from sidecar import errors
from sidecar.errors import SidecarError


def _sidecar_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module_info in pkgutil.iter_modules(sidecar.__path__, "sidecar."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("sidecar."):
                found.add(value)
    return found


def test_every_exception_of_the_agent_is_a_sidecar_error() -> None:
    """`remora proxy` catches SidecarError once; an exception outside the tree would escape
    as a traceback instead of a message."""
    exceptions = _sidecar_exceptions()
    assert len(exceptions) >= 8
    assert {e.__name__ for e in exceptions if not issubclass(e, SidecarError)} == set()
    assert {e.__module__ for e in exceptions} == {"sidecar.errors"}


def test_the_docstring_draws_the_real_tree() -> None:
    """Each line of the drawing names a class and, by its indentation, the class's parent."""
    doc = errors.__doc__ or ""
    drawn: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z]\w+(?:Error|Refused))\s", line + " ")
        if not match or "::" in line:
            continue
        depth = len(line) - len(line.lstrip(" │├└─"))
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            drawn[match.group(2)] = parents[-1][1]
        parents.append((depth, match.group(2)))
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, SidecarError) and cls is not SidecarError
    }
    assert set(drawn) == set(classes)
    for name, parent in drawn.items():
        assert classes[name].__bases__ == (getattr(errors, parent),), name
