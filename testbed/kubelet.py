"""Run stored Pods on this machine: a kubelet stand-in for end-to-end tests of the mesh.

The test bed has no kubelet, so Pods stay Pending. :func:`run_pod` plays the kubelet for one
stored Pod on a :class:`~testbed.node.Node`, exactly as the API server returned it (so as the
injector wrote it):

* the pod gets a network namespace plugged into the node's bridge (:meth:`Node.plug`);
* its volumes are materialised under a per-pod directory (:mod:`testbed.volumes`), and its
  ``/etc/hosts`` written: its name, ``hostAliases``, and :attr:`Node.hosts`, the stand-in for
  cluster DNS;
* init containers run in order and must exit 0; native sidecars (``restartPolicy: Always``)
  keep running; then the containers start (:mod:`testbed.containers`, their processes as
  :mod:`testbed.podspec` reads the spec);
* the Pod's status (``podIP``, ``hostIP``, phase, conditions) is written through the API, as
  the kubelet would, so that EndpointSlices and the control plane can use the address;
  readiness probes (httpGet, tcpSocket) are run from the node, and the ``Ready`` condition
  follows them.

Not emulated: image layers (processes see the host's root filesystem outside the mounted
volumes), exec probes and lifecycle hooks, restarts, cgroups/resource limits, Service
environment variables (``enableServiceLinks``), DNS.

Everything is stopped and removed by :meth:`RunningPod.stop` / :meth:`Node.close` (use them
as context managers), also when starting fails half-way.
"""

from __future__ import annotations

import http.client
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.containers import start_container
from testbed.errors import NotEmulated, PodError, TestBedError
from testbed.images import Image
from testbed.netns import in_netns
from testbed.node import Node
from testbed.podspec import PodContext, hosts_file
from testbed.running_pod import ContainerProcess, RunningPod
from testbed.volumes import PodVolumes

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api


def run_pod(
    node: Node,
    pod: Mapping[str, Any],
    api_client: ApiClient,
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
    address = node.allocate_address()
    netns = f"rmpod-{secrets.token_hex(3)}"
    directory = Path(tempfile.mkdtemp(prefix=f"remora-pod-{meta['name'][:20]}-"))
    directory.chmod(0o755)
    running = RunningPod(node, meta["name"], meta["namespace"], netns, address, directory)
    try:
        node.plug(netns, address)
        context = PodContext(pod_ip=address, host_ip=node.address, node_name=node.name)
        hosts = directory / "hosts"
        hosts.write_text(hosts_file(pod, address, node.hosts))
        hosts.chmod(0o644)
        volumes = PodVolumes(pod, directory / "volumes", context, core)
        volumes.materialise()

        def lookup(kind: str, name: str, key: str, optional: bool) -> str | None:
            data = volumes.read(kind, name, optional)
            return None if data is None else data.get(key)

        def start(container: Mapping[str, Any]) -> ContainerProcess:
            return start_container(
                running,
                pod=pod,
                container=container,
                images=images,
                context=context,
                lookup=lookup,
                volumes=volumes.paths,
            )

        for init in spec.get("initContainers") or []:
            running.containers[init["name"]] = start(init)
            if init.get("restartPolicy") != "Always":  # else a native sidecar: keeps running
                _wait_exited_zero(running.containers[init["name"]], init_timeout)
        for container in spec.get("containers") or []:
            running.containers[container["name"]] = start(container)
        _write_status(core, pod, address, node.address, ready=False)
        _wait_ready(running, spec, ready_timeout)
        _write_status(core, pod, address, node.address, ready=True)
        return running
    except BaseException as exc:
        logs = running.logs()
        running.stop(grace=1.0)
        if isinstance(exc, TestBedError):
            raise PodError(f"pod {meta['namespace']}/{meta['name']}: {exc}\n{logs}") from exc
        raise


def _wait_exited_zero(init: ContainerProcess, timeout: float) -> None:
    """An init container's end: it must exit 0 within ``timeout``, as the kubelet requires."""
    try:
        code = init.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PodError(f"init container {init.name} still runs after {timeout}s") from exc
    if code != 0:
        raise PodError(f"init container {init.name} exited {code}:\n{init.log()}")


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
    raise NotEmulated(f"probe {sorted(probe)} is not supported by the harness")


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


def _write_status(
    core: CoreV1Api, pod: Mapping[str, Any], ip: str, host_ip: str, *, ready: bool
) -> None:
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
