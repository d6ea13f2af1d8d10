"""Facts istio-iptables reads from the machine, each behind one small function.

The CLI calls these only when the matching flag was left on "derive it" (``--enable-ipv6=auto``,
no ``--dns-servers``, an empty ``-u``: the predicates of ``initcontainer.config_from_flags``),
logs what it found, and hands it to the pure ``config_from_args`` as ``MachineFacts``, so
every plan can be reproduced elsewhere by passing the logged values explicitly.
"""

from __future__ import annotations

import pwd

from initcontainer.config import DEFAULT_PROXY_ID

# Plain paths, not pathlib: pathlib and its imports cost milliseconds on every pod start.
PROC_IF_INET6 = "/proc/net/if_inet6"

# Scope values in /proc/net/if_inet6 (the kernel's IPV6_ADDR_* scope bits).
_SCOPE_GLOBAL = 0x00


def has_global_ipv6(if_inet6: str = PROC_IF_INET6) -> bool:
    """True when any interface has a global (non-loopback, non-link-local) IPv6 address.

    Istio looks at the *first* address only, so a dual-stack pod whose IPv4 address is
    listed first gets no IPv6 rules and its IPv6 traffic bypasses the sidecar. We install
    the IPv6 rules whenever the pod has an IPv6 address at all.
    """
    try:
        with open(if_inet6, encoding="ascii") as file:
            text = file.read()
    except FileNotFoundError:  # IPv6 disabled in this kernel: nothing to capture
        return False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and int(fields[3], 16) == _SCOPE_GLOBAL and fields[5] != "lo":
            return True
    return False


def resolv_conf_nameservers(path: str) -> list[str]:
    """The ``nameserver`` entries of resolv.conf (``--resolv-conf``), in order (missing file: none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return []
    servers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers


def proxy_id_for_user(user: str) -> str:
    """Istio's fallback for an empty ``-u``: the uid of ``$ENVOY_USER``, else 1337."""
    try:
        return str(pwd.getpwnam(user).pw_uid)
    except KeyError:
        return DEFAULT_PROXY_ID
