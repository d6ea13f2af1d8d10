"""A stored Pod read as the kubelet reads it (pure: no root, no cluster, no processes).

Everything a container's process is made of that the spec decides: ``command``/``args``
combined with the image's entrypoint and ``$(VAR)`` expanded (:func:`container_argv`), the
environment with ``fieldRef``/``resourceFieldRef``/``configMapKeyRef``/``secretKeyRef``
resolved (:func:`container_env`), the user, group and capability bounding set
(:func:`process_identity`: the runtime's defaults, minus ``drop``, plus ``add``), and the
pod's ``/etc/hosts`` (:func:`hosts_file`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from testbed.errors import NotEmulated, PodError
from testbed.images import Image

# What containerd grants a container unless its securityContext says otherwise.
DEFAULT_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    }
)

KeyLookup = Callable[[str, str, str, bool], str | None]
"""``lookup(kind, name, key, optional)``: a key of a ConfigMap or Secret (kind ``configmap``
or ``secret``), as the kubelet reads them from the API server; None when absent."""

_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Fraction:
    """A Kubernetes resource quantity (``2000m``, ``1024Mi``, ``1.5``) as an exact number."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise PodError(f"{value!r} is not a Kubernetes quantity")
    return Fraction(match.group(1)) * _SUFFIXES[match.group(2)]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: known names replaced, unknown kept, ``$$`` -> ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(one, text)


@dataclass(frozen=True)
class PodContext:
    """What the kubelet knows about a pod beyond its spec: where it runs and its address."""

    pod_ip: str
    host_ip: str
    node_name: str
    host_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    host_memory: int = field(
        default_factory=lambda: os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    )


def _labels_file(values: Mapping[str, str]) -> str:
    """The downward API's ``key="value"`` lines, sorted (values quoted as Go's %q does)."""
    return "\n".join(f"{k}={json.dumps(values[k])}" for k in sorted(values))


def field_value(pod: Mapping[str, Any], path: str, context: PodContext) -> str:
    """A ``fieldRef.fieldPath`` of the stored Pod, as the kubelet resolves it."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or context.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": context.pod_ip,
        "status.podIPs": context.pod_ip,
        "status.hostIP": context.host_ip,
        "status.hostIPs": context.host_ip,
    }
    if path in simple:
        return str(simple[path])
    if path == "metadata.labels":
        return _labels_file(meta.get("labels") or {})
    if path == "metadata.annotations":
        return _labels_file(meta.get("annotations") or {})
    subscript = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    raise NotEmulated(f"fieldRef {path!r} is not supported by the harness")


def resource_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], context: PodContext
) -> str:
    """A ``resourceFieldRef``: the limit or request divided by ``divisor``, rounded up.

    Without a limit the kubelet uses the node's allocatable amount; here the host's.
    """
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    if kind not in {"limits", "requests"} or name not in {"cpu", "memory", "ephemeral-storage"}:
        raise NotEmulated(f"resourceFieldRef {resource!r} is not supported by the harness")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        amount = Fraction(context.host_cpus if name == "cpu" else context.host_memory)
        if kind == "requests":
            amount = Fraction(0)
    else:
        amount = parse_quantity(raw)
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(amount / divisor))


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    context: PodContext,
    lookup: KeyLookup,
    image: Image,
) -> dict[str, str]:
    """The container's environment: the image's, ``HOSTNAME``, then ``envFrom`` and ``env``.

    ``lookup(kind, name, key, optional)`` reads a ConfigMap or Secret key (kind
    ``configmap``/``secret``); None means absent.
    """
    env = dict(image.env)
    env["HOSTNAME"] = str((pod.get("metadata") or {}).get("name", ""))
    if container.get("envFrom"):
        raise NotEmulated(f"container {container['name']}: envFrom is not supported by the harness")
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        ref = item["valueFrom"]
        if "fieldRef" in ref:
            env[name] = field_value(pod, ref["fieldRef"]["fieldPath"], context)
        elif "resourceFieldRef" in ref:
            env[name] = resource_value(container, ref["resourceFieldRef"], context)
        elif "configMapKeyRef" in ref or "secretKeyRef" in ref:
            kind = "configmap" if "configMapKeyRef" in ref else "secret"
            key_ref = ref.get("configMapKeyRef") or ref.get("secretKeyRef")
            optional = bool(key_ref.get("optional"))
            value = lookup(kind, key_ref["name"], key_ref["key"], optional)
            if value is None:
                if optional:
                    continue
                raise PodError(f"env {name}: {kind} {key_ref['name']} has no key {key_ref['key']}")
            env[name] = value
        else:
            raise NotEmulated(f"env {name}: valueFrom {sorted(ref)} is not supported")
    return env


def container_argv(container: Mapping[str, Any], image: Image, env: Mapping[str, str]) -> list[str]:
    """The kubelet's rule: ``command`` replaces the entrypoint, ``args`` replaces the image CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [expand(part, env) for part in command]
        argv += [expand(part, env) for part in args or []]
    else:
        argv = list(image.entrypoint)
        argv += [expand(part, env) for part in args] if args is not None else list(image.cmd)
    if not argv:
        raise PodError(f"container {container['name']}: no command, no args and no entrypoint")
    return argv


def capability_set(security: Mapping[str, Any]) -> set[str]:
    """The bounding set: the runtime's defaults, minus ``drop``, plus ``add`` (all for privileged)."""
    if security.get("privileged"):
        return {"ALL"}
    caps = security.get("capabilities") or {}
    drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    add = {c.upper().removeprefix("CAP_") for c in caps.get("add") or []}
    kept = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES - drop)
    return kept | add


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a container's process runs as: user, group, and ``setpriv``'s arguments for them
    (``--reuid --regid --clear-groups``, the bounding set, ``--no-new-privs``)."""

    uid: int
    gid: int
    setpriv: tuple[str, ...]


def process_identity(
    pod: Mapping[str, Any], container: Mapping[str, Any], image: Image
) -> ProcessIdentity:
    """The container's ``securityContext`` over the pod's, over the image's user."""
    pod_security = pod["spec"].get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    uid = int(security.get("runAsUser", image.user[0]))
    gid = int(security.get("runAsGroup", image.user[1] if "runAsUser" not in security else uid))
    if security.get("runAsNonRoot") and uid == 0:
        raise PodError(f"container {container['name']}: runAsNonRoot but it would run as root")
    caps = capability_set(security)
    bounding = (
        "+all" if "ALL" in caps else ",".join(["-all", *(f"+{c.lower()}" for c in sorted(caps))])
    )
    setpriv = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", f"--bounding-set={bounding}"]
    if uid == 0:
        setpriv.append(f"--inh-caps={bounding}")
    if security.get("allowPrivilegeEscalation") is False:
        setpriv.append("--no-new-privs")
    return ProcessIdentity(uid, gid, tuple(setpriv))


def hosts_file(pod: Mapping[str, Any], ip: str, cluster_hosts: Mapping[str, str]) -> str:
    """The kubelet's /etc/hosts for a pod: loopback, the pod's own name, ``hostAliases``,
    then the node's stand-in for cluster DNS."""
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{ip}\t{pod['metadata']['name']}",
    ]
    for alias in pod["spec"].get("hostAliases") or []:
        lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames') or [])}")
    lines += [f"{address}\t{name}" for name, address in sorted(cluster_hosts.items())]
    return "\n".join(lines) + "\n"
