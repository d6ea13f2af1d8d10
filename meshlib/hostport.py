"""``host:port`` with IPv6 literals in brackets, as URLs and Host headers need (RFC 3986).

An IPv6 address has colons of its own, so where a port follows it the address is written
``[::1]:15000``. Every role formats such addresses, the init container included, so this
module imports nothing: it adds no start-up cost to ``remora init``.
"""


def bracket_host(host: str) -> str:
    """``::1`` -> ``[::1]``; names and IPv4 addresses are returned unchanged."""
    return f"[{host}]" if ":" in host else host


def host_port(host: str, port: int) -> str:
    """``10.0.0.1:80``, ``[fd00::1]:80`` or ``name:80``: the authority of a URL."""
    return f"{bracket_host(host)}:{port}"
