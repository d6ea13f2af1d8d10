"""Start and stop a real Kubernetes control plane on loopback: etcd, kube-apiserver and,
optionally, kube-controller-manager and kube-scheduler.

The flags follow controller-runtime's envtest (random loopback ports, a generated CA, client
certificate authentication, RBAC), with the ServiceAccount admission plugin kept on because
the controller-manager creates the ``default`` ServiceAccounts. There is no kubelet: Pods are
stored, scheduled nowhere and stay Pending.

Two ways to hold one:

* in-process (``with TestBed.start() as bed``, the pytest fixture): the children die with
  the Python process (``PR_SET_PDEATHSIG``), and ``stop()`` removes the work directory;
* detached (``remora testbed up``): the children outlive the command; ``state.json`` in the work
  directory records their PIDs so that ``remora testbed down`` can stop them.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from meshlib.ports import free_port
from meshlib.processes import stop_process
from testbed import pki as pki_mod
from testbed.binaries import Binaries, cache_root
from testbed.errors import ClusterError
from testbed.versions import KUBERNETES_VERSION

log = logging.getLogger("remora.testbed")

SERVICE_CIDR = "10.96.0.0/16"
STATE_FILE = "state.json"
READY_TIMEOUT_S = 60.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ComponentState:
    name: str
    pid: int
    log: str
    argv: list[str]


@dataclass
class TestBedState:
    """What ``state.json`` holds: enough to find, use and stop a running test bed."""

    workdir: str
    server: str
    etcd_url: str
    kubeconfig: str
    version: str
    kubectl: str
    components: list[ComponentState] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.workdir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, workdir: Path) -> TestBedState:
        raw = json.loads((workdir / STATE_FILE).read_text())
        raw["components"] = [ComponentState(**c) for c in raw["components"]]
        return cls(**raw)


def _kubeconfig(server: str, ca_pem_file: Path, user: str, cert: Path, key: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "remora-testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_pem_file)},
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {"name": "remora-testbed", "context": {"cluster": "remora-testbed", "user": user}}
        ],
        "current-context": "remora-testbed",
    }


def _etcd_argv(bins: Binaries, data_dir: Path, client_url: str, peer_port: int) -> list[str]:
    """A one-member etcd on loopback, without fsync: the test bed's data is thrown away."""
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(bins.etcd),
        "--name=testbed",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=testbed={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _apiserver_flags(etcd_url: str, port: int, keys: pki_mod.Pki) -> dict[str, str]:
    """kube-apiserver's flags (``--name=value``), as envtest sets them, plus RBAC and the
    admission webhooks."""
    return {
        "etcd-servers": etcd_url,
        "bind-address": "127.0.0.1",
        "secure-port": str(port),
        "advertise-address": "127.0.0.1",
        "endpoint-reconciler-type": "none",  # loopback cannot back the `kubernetes` Service
        "tls-cert-file": str(keys.serving_cert_file),
        "tls-private-key-file": str(keys.serving_key_file),
        "client-ca-file": str(keys.ca_file),
        "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
        "service-account-key-file": str(keys.sa_pub_file),
        "service-account-signing-key-file": str(keys.sa_key_file),
        "service-cluster-ip-range": SERVICE_CIDR,
        "authorization-mode": "RBAC",
        "allow-privileged": "true",
        "enable-admission-plugins": "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
        "profiling": "false",
        "v": "0",
    }


class TestBed:
    """A running (or attached) loopback control plane. Create with :meth:`start` or :meth:`attach`."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        state: TestBedState,
        *,
        owns_workdir: bool,
        processes: Mapping[str, subprocess.Popen[bytes]] | None = None,
    ) -> None:
        self.state = state
        self._owns_workdir = owns_workdir
        self._processes = dict(processes or {})

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(
        cls,
        *,
        workdir: Path | None = None,
        binaries: Binaries | None = None,
        controllers: bool = True,
        detached: bool = False,
        progress: Callable[[str], None] | None = None,
        extra_apiserver_flags: Mapping[str, str] | None = None,
    ) -> TestBed:
        """Start etcd, kube-apiserver (and the controllers), wait for ``/readyz``, return the bed.

        ``workdir`` defaults to a new temporary directory, removed again by :meth:`stop`.
        ``detached`` keeps the children alive after this process exits.
        """
        say = progress or log.info
        bins = binaries or Binaries.locate()
        owns = workdir is None
        root = Path(tempfile.mkdtemp(prefix="remora-testbed-")) if workdir is None else workdir
        root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        bed: TestBed | None = None
        try:
            say(f"generating certificates in {root}")
            keys = pki_mod.generate(root / "pki")
            etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
            server = f"https://127.0.0.1:{api_port}"
            kubeconfig = root / "kubeconfig"
            kubeconfig.write_text(
                yaml.safe_dump(
                    _kubeconfig(server, keys.ca_file, "admin", *keys.client_files("admin"))
                )
            )
            state = TestBedState(
                workdir=str(root),
                server=server,
                etcd_url=f"http://127.0.0.1:{etcd_port}",
                kubeconfig=str(kubeconfig),
                version=KUBERNETES_VERSION,
                kubectl=str(bins.kubectl),
            )
            bed = cls(state, owns_workdir=owns)
            say(f"starting etcd on 127.0.0.1:{etcd_port}")
            bed._spawn("etcd", _etcd_argv(bins, root / "etcd", state.etcd_url, etcd_peer), detached)
            flags = {
                **_apiserver_flags(state.etcd_url, api_port, keys),
                **(extra_apiserver_flags or {}),
            }
            say(f"starting kube-apiserver {KUBERNETES_VERSION} on {server}")
            bed._spawn(
                "kube-apiserver",
                [str(bins.kube_apiserver), *(f"--{k}={v}" for k, v in flags.items())],
                detached,
            )
            bed.wait_ready()
            say(f"kube-apiserver ready in {time.monotonic() - started:.1f}s")
            if controllers:
                bed._start_controllers(bins, keys, detached)
            state.save()
            return bed
        except BaseException:
            if bed is not None:
                bed.stop()
            elif owns:
                shutil.rmtree(root, ignore_errors=True)
            raise

    def _start_controllers(self, bins: Binaries, keys: pki_mod.Pki, detached: bool) -> None:
        root = Path(self.state.workdir)
        for user, binary, extra in (
            (
                "system:kube-controller-manager",
                bins.kube_controller_manager,
                [
                    f"--service-account-private-key-file={keys.sa_key_file}",
                    f"--root-ca-file={keys.ca_file}",
                    f"--cluster-signing-cert-file={keys.ca_file}",
                    f"--cluster-signing-key-file={keys.ca_key_file}",
                    "--use-service-account-credentials=true",
                    # Everything a kubelet-less cluster can use; nothing cloud-shaped.
                    "--controllers=*,-cloud-node-lifecycle-controller,-node-route-controller,"
                    "-service-lb-controller,-node-ipam-controller",
                ],
            ),
            ("system:kube-scheduler", bins.kube_scheduler, []),
        ):
            name = binary.name
            config_path = root / f"{name}.kubeconfig"
            config_path.write_text(
                yaml.safe_dump(
                    _kubeconfig(self.state.server, keys.ca_file, user, *keys.client_files(user))
                )
            )
            self._spawn(
                name,
                [
                    str(binary),
                    f"--kubeconfig={config_path}",
                    f"--authentication-kubeconfig={config_path}",
                    f"--authorization-kubeconfig={config_path}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    *extra,
                ],
                detached,
            )

    def _spawn(self, name: str, argv: list[str], detached: bool) -> None:
        log_path = Path(self.state.workdir) / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Only a prctl() between fork and exec: the one use preexec_fn is safe for,
                # and the only way the children die with a killed test run.
                preexec_fn=None if detached else _die_with_parent,  # noqa: PLW1509
            )
        self._processes[name] = proc
        self.state.components.append(ComponentState(name, proc.pid, str(log_path), argv))

    @classmethod
    def attach(cls, workdir: Path) -> TestBed:
        """A handle on a detached test bed started earlier in ``workdir``."""
        try:
            state = TestBedState.load(workdir)
        except FileNotFoundError as exc:
            raise ClusterError(
                f"no test bed in {workdir} (start one with 'remora testbed up')"
            ) from exc
        return cls(state, owns_workdir=False)

    def stop(self, *, remove_workdir: bool | None = None, timeout: float = 10.0) -> None:
        """Stop every component (SIGTERM, then SIGKILL) in reverse start order and clean up."""
        for comp in reversed(self.state.components):
            proc = self._processes.get(comp.name)
            if proc is not None:
                stop_process(proc, timeout)
            else:
                _terminate_pid(comp.pid, comp.argv[0], timeout)
        self.state.components.clear()
        self._processes.clear()
        if remove_workdir if remove_workdir is not None else self._owns_workdir:
            shutil.rmtree(self.state.workdir, ignore_errors=True)
        elif (Path(self.state.workdir) / STATE_FILE).exists():
            (Path(self.state.workdir) / STATE_FILE).unlink()

    def __enter__(self) -> TestBed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ readiness
    def _ssl_context(self) -> ssl.SSLContext:
        keys_dir = Path(self.state.workdir) / "pki"
        ctx = ssl.create_default_context(cafile=str(keys_dir / "ca.crt"))
        ctx.load_cert_chain(str(keys_dir / "admin.crt"), str(keys_dir / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` on the apiserver as admin; returns (status, body)."""
        try:
            with urllib.request.urlopen(
                self.state.server + path, context=self._ssl_context(), timeout=timeout
            ) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``/readyz`` until it answers 200; fail with the log's tail if a component died."""
        deadline = time.monotonic() + timeout
        while True:
            for comp in self.state.components:
                proc = self._processes.get(comp.name)
                if proc is not None and proc.poll() is not None:
                    raise ClusterError(
                        f"{comp.name} exited with {proc.returncode}:\n{_tail(comp.log)}"
                    )
            with contextlib.suppress(OSError):
                status, _ = self.get("/readyz", timeout=2.0)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"kube-apiserver not ready after {timeout:.0f}s:\n{_tail(self._log('kube-apiserver'))}"
                )
            time.sleep(0.1)

    def _log(self, name: str) -> str:
        return str(Path(self.state.workdir) / f"{name}.log")

    # ------------------------------------------------------------------ using it
    @property
    def kubeconfig(self) -> Path:
        return Path(self.state.kubeconfig)

    @property
    def server(self) -> str:
        return self.state.server

    @property
    def ca_pem(self) -> bytes:
        return (Path(self.state.workdir) / "pki" / "ca.crt").read_bytes()

    @property
    def workdir(self) -> Path:
        return Path(self.state.workdir)

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.state.components}

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` authenticated as the admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the test bed's own kubectl against it."""
        return subprocess.run(
            [self.state.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
        )

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Create a namespace that Pods can be created in right away.

        The ServiceAccount admission plugin refuses Pods until the namespace's ``default``
        ServiceAccount exists. The controller-manager creates it, but only once its informers
        have synced (seconds after start), so create it here too; whoever is second gets a
        harmless conflict.
        """
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace(
                client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {}))
                )
            )
            try:
                core.create_namespaced_service_account(
                    name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
                )
            except client.ApiException as exc:
                if exc.status != 409:
                    raise

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each component, from ``/proc/<pid>/status``."""
        out = {}
        for comp in self.state.components:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{comp.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[comp.name] = int(line.split()[1]) * 1024
        return out


def _tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _pid_runs(pid: int, executable: str) -> bool:
    """True when ``pid`` is alive and still the process we started (not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    return cmdline == executable and state != "Z"


def _terminate_pid(pid: int, executable: str, timeout: float) -> None:
    if not _pid_runs(pid, executable):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_runs(pid, executable):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def default_detached_workdir(name: str = "default") -> Path:
    """Where ``remora testbed up --name NAME`` keeps a detached test bed."""
    return cache_root() / "run" / name


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[TestBed]:
    """``with running() as bed:`` start a test bed and always stop it."""
    bed = TestBed.start(**kwargs)
    try:
        yield bed
    finally:
        bed.stop()
