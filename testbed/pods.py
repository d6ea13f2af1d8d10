"""Run stored Pods on this machine: a kubelet stand-in for end-to-end tests of the mesh.

The test bed has no kubelet, so Pods stay Pending. :class:`Node` plays one node: a network
namespace holding a bridge (``10.77.0.1/24``, the node's ``hostIP``) and forwarders from that
address to services on the root namespace's loopback (the control plane). :func:`run_pod`
plays the kubelet for one stored Pod, exactly as the API server returned it (so as the
injector wrote it):

* the pod gets a network namespace, a veth into the node's bridge, an address from
  ``10.77.0.0/24`` and a default route via the node. Those addresses exist only inside
  namespaces created here; nothing is routed out of them and nothing in the root
  namespace (addresses, routes, iptables) is changed;
* volumes are materialised under a per-pod directory: emptyDir, configMap, secret,
  downwardAPI, and projected (service-account tokens from the TokenRequest API with the
  spec's audience and lifetime, bound to the Pod);
* every container runs in its own private mount namespace (``unshare --mount``) in which
  each ``volumeMount`` is bind-mounted at its ``mountPath`` (read-only when the mount says
  so) and the image's working directory is a per-container directory, read-only when
  ``readOnlyRootFilesystem`` is set; ``/etc/hosts`` is the pod's own (its name,
  ``hostAliases``, and :attr:`Node.hosts`, the stand-in for cluster DNS). Missing mount points are created as empty directories
  on the host and removed when the last node using them stops (in any process: see
  :meth:`Node.ensure_mount_point`): bind mounts need a directory to land on,
  and no path inside the container's view is rewritten, so what the injected spec says is
  what the process sees;
* ``command``/``args`` as the kubelet combines them with the image's entrypoint (an
  :class:`Image` maps image names to local programs), ``$(VAR)`` expansion, ``env`` with
  ``fieldRef``/``resourceFieldRef``/``configMapKeyRef``/``secretKeyRef`` resolved from the
  stored Pod, ``runAsUser``/``runAsGroup`` (``setpriv --reuid --regid --clear-groups``),
  capabilities (the bounding set: the runtime's defaults, minus ``drop``, plus ``add``) and
  ``allowPrivilegeEscalation: false`` (``--no-new-privs``);
* init containers run in order and must exit 0; native sidecars (``restartPolicy:
  Always``) keep running; then the containers start; the Pod's status (``podIP``,
  ``hostIP``, phase, conditions) is written through the API, as the kubelet would, so that
  EndpointSlices and the control plane can use the address; readiness probes (httpGet,
  tcpSocket) are run from the node, and the ``Ready`` condition follows them.

Not emulated: image layers (processes see the host's root filesystem outside the mounted
volumes), exec probes and lifecycle hooks, restarts, cgroups/resource limits, Service
environment variables (``enableServiceLinks``), DNS.

Everything is stopped and removed by :meth:`RunningPod.stop` / :meth:`Node.close` (use them
as context managers), also when starting fails half-way.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import http.client
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger("testbed.pods")

REPO = Path(__file__).resolve().parents[1]
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
NODE_SUBNET = "10.77.0"  # /24, only inside namespaces this module creates
NODE_ADDRESS = f"{NODE_SUBNET}.1"
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
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class PodError(RuntimeError):
    """The pod cannot run as specified; the message says which container or volume and why."""


# -- images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """What the harness runs for an image: its entrypoint, working directory and environment.

    ``workdir`` None means ``/`` and no per-container directory is mounted there.
    """

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user: tuple[int, int] = (0, 0)


def image_repository(image: str) -> str:
    """``docker.io/remora/remora:0.1.0`` -> ``docker.io/remora/remora`` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


# -- the node --------------------------------------------------------------------------------


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise PodError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block's socket calls in network namespace ``name`` (this thread only).

    A socket stays in the namespace it was created in, so a listener made here keeps
    serving that namespace after the block.
    """
    with open("/proc/thread-self/ns/net") as here, open(f"/run/netns/{name}") as there:
        if _libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if _libc.setns(here.fileno(), _CLONE_NEWNET) != 0:  # pragma: no cover
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace")


def http_in_netns(
    netns: str, method: str, host: str, port: int, path: str, *, timeout: float = 3.0
) -> tuple[int, str]:
    """One HTTP request from inside network namespace ``netns``: status and body (undecodable
    bytes replaced, so a binary answer is still an answer).

    Only the connect happens in the namespace (the socket stays in it afterwards). Raises
    OSError when the connection fails, or ConnectionError when it closes before a complete
    answer; the socket is closed in every case.
    """
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        with in_netns(netns):
            connection.connect()
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except http.client.HTTPException as exc:  # e.g. closed before any answer
        raise ConnectionError(f"{method} {host}:{port}{path} in {netns}: {exc!r}") from exc
    finally:
        connection.close()


class _Forwarder:
    """Accepts TCP in the node's namespace and relays each connection to the root loopback."""

    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        with in_netns(netns):
            self._sock = socket.create_server(listen)
        self._sock.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"forward-{listen}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                downstream, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                downstream.close()
                continue
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stopped.set()
        self._sock.close()
        self._thread.join(timeout=2)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(None)
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class Node:
    """A node: a network namespace with a bridge that pods plug into, and its forwarders."""

    def __init__(self, name: str | None = None) -> None:
        self.suffix = secrets.token_hex(3)
        self.name = name or f"node-{self.suffix}"
        self.netns = f"rmnode-{self.suffix}"
        self.address = NODE_ADDRESS
        self._next_host = 2
        self._forwarders: list[_Forwarder] = []
        # The cluster's names as pods resolve them (no DNS here): written into every
        # container's /etc/hosts, the file the kubelet manages in every container too.
        self.hosts: dict[str, str] = {}
        self._mount_points: set[str] = set()  # host directories this node relies on
        self._lock = threading.Lock()
        _run("ip", "netns", "add", self.netns)
        try:
            for argv in (
                ("link", "set", "lo", "up"),
                ("link", "add", "br0", "type", "bridge"),
                ("addr", "add", f"{self.address}/24", "dev", "br0"),
                ("link", "set", "br0", "up"),
            ):
                _run("ip", "-n", self.netns, *argv)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forward(self, port: int, target: tuple[str, int]) -> str:
        """Serve ``NODE_ADDRESS:port`` to pods by relaying to ``target`` on the root loopback."""
        self._forwarders.append(_Forwarder(self.netns, (self.address, port), target))
        return f"{self.address}:{port}"

    def add_host(self, name: str, address: str) -> None:
        """Let pods resolve ``name`` to ``address`` (e.g. the control plane's Service name)."""
        self.hosts[name] = address

    def http(
        self, method: str, address: str, port: int, path: str, timeout: float = 3.0
    ) -> tuple[int, str]:
        """An HTTP request from the node itself (as the kubelet probes, or a client outside
        the mesh); status and body. Raises OSError when the connection fails or is closed."""
        return http_in_netns(self.netns, method, address, port, path, timeout=timeout)

    def allocate_address(self) -> str:
        with self._lock:
            if self._next_host > 254:
                raise PodError("the node's /24 is full")
            address = f"{NODE_SUBNET}.{self._next_host}"
            self._next_host += 1
            return address

    def ensure_mount_point(self, path: Path) -> None:
        """Create ``path`` on the host if missing, for as long as any node needs it.

        Mount points are shared by every node on the machine, also of other processes
        (another test run, a benchmark): removing a directory that is a mount point in some
        container's mount namespace silently detaches that mount there. So who relies on a
        created directory is kept in a registry under ``/run``; the last node to close
        removes it (see :func:`_mount_point_registry`).
        """
        with _mount_point_registry() as registry:
            missing = []
            probe = path
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            for directory in reversed(missing):
                directory.mkdir()
                # Recorded as it is made: if a deeper mkdir fails, close() still removes it.
                registry.setdefault(str(directory), [])
                registry[str(directory)].append(self._owner)
                self._mount_points.add(str(directory))
            # Ours too when another node created it: it must outlive our pods as well.
            for directory in (path, *path.parents):
                if str(directory) in registry and self._owner not in registry[str(directory)]:
                    registry[str(directory)].append(self._owner)
                    self._mount_points.add(str(directory))

    @property
    def _owner(self) -> str:
        return f"{os.getpid()}:{self.netns}"

    def close(self) -> None:
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders.clear()
        _run("ip", "netns", "del", self.netns, check=False)
        if self._mount_points:
            with _mount_point_registry() as registry:
                for directory in sorted(registry, key=len, reverse=True):  # deepest first
                    owners = [o for o in registry[directory] if o != self._owner and _alive(o)]
                    registry[directory] = owners
                    if not owners:
                        with contextlib.suppress(OSError):
                            Path(directory).rmdir()  # only if empty: never removes anything else
                        del registry[directory]
            self._mount_points.clear()


MOUNT_POINT_REGISTRY = Path("/run/remora-testbed-mount-points.json")


@contextlib.contextmanager
def _mount_point_registry() -> Iterator[dict[str, list[str]]]:
    """The machine-wide registry of created mount points: directory -> its users
    (``<pid>:<node netns>``), read and written under an exclusive lock.

    Written also when the block fails (what it did before failing, e.g. directories it made,
    must be known), and atomically: a crash mid-write leaves the previous registry, not a
    truncated one that would forget every entry.
    """
    with open(MOUNT_POINT_REGISTRY.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            registry: dict[str, list[str]] = json.loads(MOUNT_POINT_REGISTRY.read_text())
        except (OSError, ValueError):
            registry = {}
        try:
            yield registry
        finally:
            _replace_file(MOUNT_POINT_REGISTRY, json.dumps(registry, indent=1, sort_keys=True))


def _replace_file(path: Path, text: str) -> None:
    """Write ``path`` atomically: a temporary file in the same directory (same filesystem),
    synced, then renamed over it; a failure before the rename leaves ``path`` as it was."""
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = Path(handle.name)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise


def _alive(owner: str) -> bool:
    """Whether the process of a registry entry still runs (a crashed run releases its dirs)."""
    try:
        os.kill(int(owner.split(":", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- resolving the spec (pure) -------------------------------------------------------------

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
    raise PodError(f"fieldRef {path!r} is not supported by the harness")


def resource_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], context: PodContext
) -> str:
    """A ``resourceFieldRef``: the limit or request divided by ``divisor``, rounded up.

    Without a limit the kubelet uses the node's allocatable amount; here the host's.
    """
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    if kind not in {"limits", "requests"} or name not in {"cpu", "memory", "ephemeral-storage"}:
        raise PodError(f"resourceFieldRef {resource!r} is not supported by the harness")
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
    lookup: Callable[[str, str, str, bool], str | None],
    image: Image,
) -> dict[str, str]:
    """The container's environment: the image's, ``HOSTNAME``, then ``envFrom`` and ``env``.

    ``lookup(kind, name, key, optional)`` reads a ConfigMap or Secret key (kind
    ``configmap``/``secret``); None means absent.
    """
    env = dict(image.env)
    env["HOSTNAME"] = str((pod.get("metadata") or {}).get("name", ""))
    if container.get("envFrom"):
        raise PodError(f"container {container['name']}: envFrom is not supported by the harness")
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
            raise PodError(f"env {name}: valueFrom {sorted(ref)} is not supported")
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


# -- running --------------------------------------------------------------------------------


@dataclass
class ContainerProcess:
    """A started container: its main process, log file, and the user and env it runs with."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    uid: int
    gid: int
    env: dict[str, str]

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@dataclass
class RunningPod:
    """One pod on a :class:`Node`: its namespace, directory, processes and address."""

    node: Node
    name: str
    namespace: str
    netns: str
    ip: str
    directory: Path
    containers: dict[str, ContainerProcess] = field(default_factory=dict)

    def __enter__(self) -> RunningPod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {self.name}/{name} (exit {c.process.poll()}):\n{c.log()}"
            for name, c in self.containers.items()
        )

    def _exec_argv(self, container: str, argv: Sequence[str]) -> list[str]:
        target = self.containers[container]
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            SETPRIV,
            f"--reuid={target.uid}",
            f"--regid={target.gid}",
            "--clear-groups",
            *argv,
        ]

    def exec(
        self, container: str, argv: Sequence[str], timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """Like ``kubectl exec``: ``argv`` in the pod's network with the container's user and env.

        Not in the container's mount namespace: the volumes are not mounted for it.
        """
        return subprocess.run(
            self._exec_argv(container, argv),
            check=False,
            env=self.containers[container].env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, container: str, argv: Sequence[str]) -> subprocess.Popen[str]:
        """:meth:`exec` in the background: the caller waits (``communicate``) or signals it.

        ``ip netns exec`` and ``setpriv`` exec in place, so the process's pid is ``argv``'s.
        """
        return subprocess.Popen(
            self._exec_argv(container, argv),
            env=self.containers[container].env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def http(
        self,
        method: str,
        port: int,
        path: str,
        host: str = "127.0.0.1",
        timeout: float = 3.0,
    ) -> tuple[int, str]:
        """An HTTP request inside the pod's network (e.g. to a loopback-only port); status and
        body. Raises OSError when the connection fails or is closed."""
        return http_in_netns(self.netns, method, host, port, path, timeout=timeout)

    def http_get(self, port: int, path: str, host: str = "127.0.0.1", timeout: float = 3.0) -> str:
        """GET inside the pod's network (e.g. Envoy's loopback-only admin); the body."""
        status, body = self.http("GET", port, path, host, timeout)
        if status != 200:
            raise PodError(f"GET {path} on {self.name}:{port}: {status} {body[:200]}")
        return body

    def pids_of(self, command: str) -> list[int]:
        """The pod's processes whose command name (``/proc/<pid>/comm``) is ``command``."""
        found = []
        for pid in _run("ip", "netns", "pids", self.netns, check=False).stdout.split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                    found.append(int(pid))
        return found

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every container, SIGKILL what is left after ``grace``, remove everything."""
        for container in self.containers.values():
            if container.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in self.containers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        # Whatever still runs in the pod's network namespace was started for this pod.
        pids = _run("ip", "netns", "pids", self.netns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for container in self.containers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(timeout=5)
        _run("ip", "netns", "del", self.netns, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


class _Volumes:
    """Materialises a pod's volumes under ``<pod dir>/volumes/<name>``."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        root: Path,
        context: PodContext,
        core: Any,
    ) -> None:
        self.pod = pod
        self.root = root
        self.context = context
        self.core = core
        self.namespace = pod["metadata"]["namespace"]
        self.paths: dict[str, Path] = {}

    def materialise(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            path = self.root / volume["name"]
            path.mkdir(parents=True)
            self.paths[volume["name"]] = path
            if "emptyDir" in volume:
                path.chmod(0o777)  # as the kubelet makes them: any container user may write
            elif "configMap" in volume:
                self._config_map(path, volume["configMap"])
            elif "secret" in volume:
                self._secret(path, volume["secret"])
            elif "downwardAPI" in volume:
                self._downward(path, volume["downwardAPI"].get("items") or [])
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    self._projected(path, source)
            else:
                kinds = sorted(set(volume) - {"name"})
                raise PodError(f"volume {volume['name']}: {kinds} is not supported by the harness")
            path.chmod(0o777 if "emptyDir" in volume else 0o755)

    @staticmethod
    def _write(path: Path, data: bytes | str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(0o644)

    def _items(self, path: Path, data: Mapping[str, str], spec: Mapping[str, Any]) -> None:
        items = spec.get("items")
        for key, target in (
            ((i["key"], i["path"]) for i in items) if items else ((k, k) for k in data)
        ):
            if key not in data:
                if spec.get("optional"):
                    continue
                raise PodError(f"{spec.get('name')}: no key {key!r}")
            self._write(path / target, data[key])

    def _config_map(self, path: Path, spec: Mapping[str, Any]) -> None:
        data = self.read("configmap", spec["name"], bool(spec.get("optional")))
        if data is not None:
            self._items(path, data, spec)

    def _secret(self, path: Path, spec: Mapping[str, Any]) -> None:
        name = spec.get("secretName", "")
        data = self.read("secret", name, bool(spec.get("optional")))
        if data is not None:
            self._items(path, data, {**spec, "name": name})

    def _downward(self, path: Path, items: Sequence[Mapping[str, Any]]) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise PodError(f"downwardAPI item {item.get('path')}: only fieldRef is supported")
            value = field_value(self.pod, item["fieldRef"]["fieldPath"], self.context)
            self._write(path / item["path"], value)

    def _projected(self, path: Path, source: Mapping[str, Any]) -> None:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            self._write(path / token["path"], self.token(token))
        elif "configMap" in source:
            self._config_map(path, source["configMap"])
        elif "secret" in source:
            self._secret(path, {**source["secret"], "secretName": source["secret"]["name"]})
        elif "downwardAPI" in source:
            self._downward(path, source["downwardAPI"].get("items") or [])
        else:
            raise PodError(f"projected source {sorted(source)} is not supported by the harness")

    def token(self, spec: Mapping[str, Any]) -> str:
        """A TokenRequest for the pod's service account, with the spec's audience, bound to the pod."""
        meta = self.pod["metadata"]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(spec.get("expirationSeconds") or 3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if spec.get("audience"):
            body["spec"]["audiences"] = [spec["audience"]]
        answer = self.core.create_namespaced_service_account_token(account, self.namespace, body)
        return str(answer.status.token)

    def read(
        self, kind: str, name: str, optional: bool, wait: float = 10.0
    ) -> dict[str, str] | None:
        """A ConfigMap's or Secret's data; a missing required one is waited for, as the kubelet does."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._read_once(kind, name, optional)
            except PodError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _read_once(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        from kubernetes.client import ApiException

        try:
            if kind == "configmap":
                return dict(self.core.read_namespaced_config_map(name, self.namespace).data or {})
            secret = self.core.read_namespaced_secret(name, self.namespace)
            return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        except ApiException as exc:
            if exc.status == 404 and optional:
                return None
            if exc.status == 404:
                raise PodError(
                    f"{kind} {self.namespace}/{name} does not exist; the kubelet would keep the "
                    "pod in ContainerCreating until it does"
                ) from exc
            raise


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


def _launch_spec(
    container: Mapping[str, Any],
    *,
    image: Image,
    volumes: Mapping[str, Path],
    workdir: Path,
    hosts: Path,
    node: Node,
) -> list[tuple[str, str, bool]]:
    """The bind mounts of one container: (source, target, read-only), parents first."""
    mounts: list[tuple[str, str, bool]] = [(str(hosts), "/etc/hosts", False)]
    security = container.get("securityContext") or {}
    # The working directory stands for the image's files there (the root itself is the host's).
    home = image.workdir if image.workdir not in (None, "/") else None
    if home:
        node.ensure_mount_point(Path(home))
        mounts.append((str(workdir), home, bool(security.get("readOnlyRootFilesystem"))))
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise PodError(f"container {container['name']}: no volume named {mount['name']!r}")
        source = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
        target = Path(mount["mountPath"])
        if home and target.is_relative_to(home):
            (workdir / target.relative_to(home)).mkdir(parents=True, exist_ok=True)
        else:
            node.ensure_mount_point(target)
        mounts.append((str(source), str(target), bool(mount.get("readOnly"))))
    return sorted(mounts, key=lambda m: len(Path(m[1]).parts))


def _launch(argv: Sequence[str]) -> int:
    """Inside the container's mount namespace: bind-mount, then exec the process (``launch``)."""
    spec = json.loads(Path(argv[0]).read_text())
    for source, target, read_only in spec["mounts"]:
        subprocess.run(["mount", "--bind", source, target], check=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
    os.chdir(spec["workdir"])
    os.execve(SETPRIV, [SETPRIV, *spec["setpriv"], "--", *spec["argv"]], spec["env"])
    return 127  # pragma: no cover - execve does not return


def _resolve_program(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """Resolve a bare program name with the container's own PATH (as the runtime does)."""
    if "/" in argv[0]:
        return argv
    found = shutil.which(argv[0], path=env.get("PATH", "/usr/bin:/bin"))
    if not found:
        raise PodError(f"executable {argv[0]!r} not found in the container's PATH")
    return [found, *argv[1:]]


def run_pod(
    node: Node,
    pod: Mapping[str, Any],
    api_client: Any,
    images: Mapping[str, Image],
    *,
    init_timeout: float = 30.0,
    ready_timeout: float = 30.0,
) -> RunningPod:
    """Run ``pod`` (a stored Pod, as a dict) on ``node``; returns once it is Ready.

    Raises :class:`PodError` with the failing container's log when an init container fails
    or a container exits or is not ready in time; everything started is stopped first.
    """
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    meta, spec = pod["metadata"], pod["spec"]
    ip = node.allocate_address()
    suffix = secrets.token_hex(3)
    netns = f"rmpod-{suffix}"
    directory = Path(tempfile.mkdtemp(prefix=f"remora-pod-{meta['name'][:20]}-"))
    directory.chmod(0o755)
    running = RunningPod(node, meta["name"], meta["namespace"], netns, ip, directory)
    try:
        _plug(node, netns, ip)
        context = PodContext(pod_ip=ip, host_ip=node.address, node_name=node.name)
        hosts = directory / "hosts"
        hosts.write_text(hosts_file(pod, ip, node.hosts))
        hosts.chmod(0o644)
        volumes = _Volumes(pod, directory / "volumes", context, core)
        volumes.materialise()

        def lookup(kind: str, name: str, key: str, optional: bool) -> str | None:
            data = volumes.read(kind, name, optional)
            return None if data is None else data.get(key)

        def start(container: Mapping[str, Any]) -> ContainerProcess:
            return _start_container(
                running,
                pod=pod,
                container=container,
                images=images,
                context=context,
                lookup=lookup,
                volumes=volumes.paths,
            )

        for init in spec.get("initContainers") or []:
            process = start(init)
            running.containers[init["name"]] = process
            if init.get("restartPolicy") == "Always":
                continue  # a native sidecar: keeps running beside the rest
            try:
                code = process.process.wait(timeout=init_timeout)
            except subprocess.TimeoutExpired as exc:
                raise PodError(
                    f"init container {init['name']} still runs after {init_timeout}s"
                ) from exc
            if code != 0:
                raise PodError(f"init container {init['name']} exited {code}:\n{process.log()}")
        for container in spec.get("containers") or []:
            running.containers[container["name"]] = start(container)
        _write_status(core, pod, ip, node.address, ready=False)
        _wait_ready(running, spec, ready_timeout)
        _write_status(core, pod, ip, node.address, ready=True)
        return running
    except BaseException as exc:
        logs = running.logs()
        running.stop(grace=1.0)
        if isinstance(exc, PodError):
            raise PodError(f"pod {meta['namespace']}/{meta['name']}: {exc}\n{logs}") from exc
        raise


def _plug(node: Node, netns: str, ip: str) -> None:
    _run("ip", "netns", "add", netns)
    host_side = f"v{netns.removeprefix('rmpod-')}"
    _run(
        "ip",
        "-n",
        node.netns,
        "link",
        "add",
        host_side,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns,
    )
    _run("ip", "-n", node.netns, "link", "set", host_side, "master", "br0", "up")
    for argv in (
        ("link", "set", "lo", "up"),
        ("addr", "add", f"{ip}/24", "dev", "eth0"),
        ("link", "set", "eth0", "up"),
        ("route", "add", "default", "via", node.address),
    ):
        _run("ip", "-n", netns, *argv)


def _start_container(
    running: RunningPod,
    *,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    images: Mapping[str, Image],
    context: PodContext,
    lookup: Callable[[str, str, str, bool], str | None],
    volumes: Mapping[str, Path],
) -> ContainerProcess:
    name = container["name"]
    repository = image_repository(container.get("image", ""))
    if repository not in images:
        raise PodError(f"container {name}: no local mapping for image {container.get('image')!r}")
    image = images[repository]
    env = container_env(pod, container, context, lookup, image)
    argv = _resolve_program(container_argv(container, image, env), env)
    pod_security = pod["spec"].get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    uid = int(security.get("runAsUser", image.user[0]))
    gid = int(security.get("runAsGroup", image.user[1] if "runAsUser" not in security else uid))
    if security.get("runAsNonRoot") and uid == 0:
        raise PodError(f"container {name}: runAsNonRoot but it would run as root")
    caps = capability_set(security)
    bounding = (
        "+all" if "ALL" in caps else ",".join(["-all", *(f"+{c.lower()}" for c in sorted(caps))])
    )
    setpriv = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", f"--bounding-set={bounding}"]
    if uid == 0:
        setpriv.append(f"--inh-caps={bounding}")
    if security.get("allowPrivilegeEscalation") is False:
        setpriv.append("--no-new-privs")
    home = running.directory / "containers" / name
    workdir = home / "workdir"
    workdir.mkdir(parents=True)
    os.chown(workdir, uid, gid)
    mounts = _launch_spec(
        container,
        image=image,
        volumes=volumes,
        workdir=workdir,
        hosts=running.directory / "hosts",
        node=running.node,
    )
    spec_file = home / "launch.json"
    spec_file.write_text(
        json.dumps(
            {
                "mounts": mounts,
                "workdir": image.workdir or "/",
                "setpriv": setpriv,
                "argv": argv,
                "env": env,
            }
        )
    )
    log_path = home / "log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                running.netns,
                UNSHARE,
                "--mount",
                "--propagation",
                "private",
                sys.executable,
                "-c",
                "import sys; from testbed.pods import _launch; sys.exit(_launch(sys.argv[1:]))",
                str(spec_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)},
        )
    log.info("started %s/%s: %s", running.name, name, " ".join(argv))
    return ContainerProcess(name, process, log_path, uid, gid, env)


def _probe_passes(running: RunningPod, probe: Mapping[str, Any]) -> bool:
    """One readiness probe from the node, as the kubelet runs it (httpGet, tcpSocket)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            with in_netns(running.node.netns):
                connection = http.client.HTTPConnection(
                    running.ip, int(get["port"]), timeout=timeout
                )
                connection.connect()
            try:
                connection.request("GET", get.get("path") or "/")
                return 200 <= connection.getresponse().status < 400
            finally:
                connection.close()
        if "tcpSocket" in probe:
            with in_netns(running.node.netns):
                sock = socket.create_connection(
                    (running.ip, int(probe["tcpSocket"]["port"])), timeout
                )
            sock.close()
            return True
    except OSError:
        return False
    raise PodError(f"probe {sorted(probe)} is not supported by the harness")


def _wait_ready(running: RunningPod, spec: Mapping[str, Any], timeout: float) -> None:
    pending = {
        c["name"]: c["readinessProbe"]
        for c in spec.get("containers") or []
        if c.get("readinessProbe")
    }
    long_running = [c["name"] for c in spec.get("containers") or []] + [
        c["name"] for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]
    deadline = time.monotonic() + timeout
    while True:
        for name in long_running:
            container = running.containers[name]
            if container.process.poll() is not None:
                raise PodError(f"container {name} exited {container.process.returncode}")
        for name, probe in list(pending.items()):
            if _probe_passes(running, probe):
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise PodError(f"containers {sorted(pending)} not ready after {timeout}s")
        time.sleep(0.1)


def _write_status(core: Any, pod: Mapping[str, Any], ip: str, host_ip: str, *, ready: bool) -> None:
    """What the kubelet reports: the addresses, Running, and the readiness conditions."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state = "True" if ready else "False"
    body = {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": now,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": state, "lastTransitionTime": now},
                {"type": "Ready", "status": state, "lastTransitionTime": now},
            ],
        }
    }
    meta = pod["metadata"]
    core.patch_namespaced_pod_status(meta["name"], meta["namespace"], body)
