"""Network interface names as both the injector (admission) and the init container accept them.

One rule in one place, so a name the webhook admits is never one the init container then
refuses in a crash loop. It is the kernel's (``dev_valid_name``: at most IFNAMSIZ - 1 = 15
bytes, not ``.`` or ``..``, no ``/``, ``:`` or whitespace) narrowed to what survives an
iptables-restore line unquoted: printable ASCII (so 15 characters are 15 bytes), no ``!`` or
quotes, and no leading ``-`` (it would read as an option). ``+`` stays allowed: iptables takes
``veth+`` as a prefix match, as istio-iptables passes it through.

Imported by the init container on every pod start: it must import nothing.
"""

from __future__ import annotations

MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1
_FORBIDDEN = frozenset("/:!'\"")
RULE = (
    f"1 to {MAX_INTERFACE_NAME} printable ASCII characters, not '.' or '..', "
    "no leading '-', no spaces, '/', ':', '!' or quotes"
)


def interface_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an interface name in capture rules, or None when it can."""
    if not name:
        return "it is empty"
    if len(name) > MAX_INTERFACE_NAME:
        return f"it is longer than {MAX_INTERFACE_NAME} characters"
    if not all("!" <= ch <= "~" for ch in name):
        return "only printable ASCII characters without spaces are allowed"
    if name in {".", ".."} or name[0] == "-" or not _FORBIDDEN.isdisjoint(name):
        return f"expected {RULE}"
    return None
