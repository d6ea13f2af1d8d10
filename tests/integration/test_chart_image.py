"""The Remora image, built by ``make images`` and run with Docker.

Checks what the chart and the injector rely on: ``remora version`` runs, the version labels,
the default user 1337 (the sidecar), the installed distributions equal the lock exactly, both
iptables backends, ``ip`` (iproute2) and Envoy are there, and the capture init container works
as root with NET_ADMIN and NET_RAW only (and fails without them), TPROXY and IPv6 included.

Needs a Docker engine: the running one, or the ``dockerd`` the suite's ``docker_engine``
fixture starts; when neither works the module skips with what Docker said. The image is
built when missing, built from another uv.lock, or older than the Dockerfile (minutes the
first time).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
assert _match, "pyproject.toml has no version"
VERSION = _match.group(1)
IMAGE = f"docker.io/remora/remora:{VERSION}"

# A cold image build (no base, no cache) takes ~5 minutes on 2 cores: more than the
# suite-wide 300 s timeout allows the first test, whose fixture builds it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def image(docker_engine: str | None) -> str:
    if docker_engine:
        pytest.skip(docker_engine)
    # Built from the current lock (the label records uv.lock's hash) and after the last change
    # of the Dockerfile (the build-time label, to the second)? Else rebuild.
    labels = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or "null"  # fmt: skip
    label = json.loads(labels) or {}
    try:
        built = datetime.strptime(label["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%S%z")
    except (KeyError, ValueError):  # no image, or not one of `make images`
        built = datetime.fromtimestamp(0, UTC)
    stale = built.timestamp() < (ROOT / "Dockerfile").stat().st_mtime
    lock = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    if label.get("io.remora.uv-lock-sha256") != lock or stale:
        build = subprocess.run(
            ["make", "images"], cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False
        )
        assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    return IMAGE


def run(
    image: str, *args: str, entrypoint: str | None = None, docker_args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    argv = ["docker", "run", "--rm", "--network=none", *docker_args]
    argv += ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(
        [*argv, image, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_remora_version_runs_in_the_image(image: str) -> None:
    out = run(image, "version")
    assert out.returncode == 0, out.stderr
    assert f"remora: {VERSION}" in out.stdout


def test_image_carries_version_labels_and_runs_as_the_proxy_user(image: str) -> None:
    config = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config}}", image],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] not in {"", "unknown"}
    assert config["User"] == "1337:1337"
    assert config["Entrypoint"] == ["remora"]
    uid = run(image, "-u", entrypoint="id")
    assert uid.stdout.strip() == "1337"


def _locked() -> dict[str, str]:
    """Runtime packages of uv.lock for this platform: name -> version."""
    from packaging.markers import Marker

    uv = [shutil.which("uv")] if shutil.which("uv") else ["python3", "-m", "uv"]
    export = subprocess.run(
        [*uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
         "--format", "requirements-txt", "--no-header"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64",
           "platform_python_implementation": "CPython", "implementation_name": "cpython",
           "os_name": "posix"}  # fmt: skip
    pins: dict[str, str] = {}
    for line in export.splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(env):
            continue
        name, version = requirement.strip().split("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_installed_distributions_are_exactly_the_lock(image: str) -> None:
    code = (
        "import importlib.metadata as m, json, re;"
        "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
        " for d in m.distributions()}))"
    )
    out = run(image, "-c", code, entrypoint="/opt/remora/bin/python")
    assert out.returncode == 0, out.stderr
    installed = json.loads(out.stdout)
    assert installed.pop("remora") == VERSION
    assert installed == _locked()


def test_both_iptables_backends_and_envoy_are_present(image: str) -> None:
    for binary, expected in (("iptables-legacy", "(legacy)"), ("iptables-nft", "(nf_tables)")):
        out = run(image, "--version", entrypoint=binary)
        assert expected in out.stdout, out.stderr
    envoy = run(
        image,
        "-c",
        "from meshlib.envoy_binary import envoy_path; import subprocess;"
        "print(subprocess.run([str(envoy_path()), '--version'], capture_output=True, text=True).stdout)",
        entrypoint="/opt/remora/bin/python",
    )
    assert "envoy" in envoy.stdout.lower() and "version" in envoy.stdout.lower(), envoy.stderr


def test_ip_is_present_and_runs(image: str) -> None:
    # Debian's iptables does not pull in iproute2; without it IPv6 and TPROXY pods cannot start.
    out = run(image, "-V", entrypoint="ip")
    assert out.returncode == 0, out.stderr
    assert "iproute2" in out.stdout


INIT = "remora init -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' && iptables-save -t nat"


def test_init_container_needs_only_net_admin_and_net_raw_as_root(image: str) -> None:
    caps = ("--user", "0", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW")
    out = run(image, "-c", INIT, entrypoint="sh", docker_args=caps)
    assert out.returncode == 0, out.stderr
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in out.stdout
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in out.stdout
    without = run(
        image, "-c", INIT, entrypoint="sh", docker_args=("--user", "0", "--cap-drop", "ALL")
    )
    assert without.returncode != 0


TPROXY = (
    "remora init -p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -b '*' --enable-ipv6=true"
    " && iptables-save -t mangle && ip -6 addr show dev lo && ip rule show && ip -6 rule show"
    " && ip route show table 133 && ip -6 route show table 133"
    " && remora init --cleanup-only -m TPROXY && echo CLEANED-UP"
    " && iptables-save -t mangle && ip rule show && ip -6 rule show && ip route show table 133"
)


def test_init_container_sets_up_and_removes_tproxy_routing_and_the_ipv6_address(
    image: str,
) -> None:
    caps = ("--user", "0", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW")
    ipv6 = ("--sysctl", "net.ipv6.conf.all.disable_ipv6=0")  # Docker may turn it off
    out = run(image, "-c", TPROXY, entrypoint="sh", docker_args=(*caps, *ipv6))
    assert out.returncode == 0, out.stdout + out.stderr
    installed, _, cleaned = out.stdout.partition("CLEANED-UP\n")
    assert "-j TPROXY --on-port 15006" in installed
    assert "inet6 ::6/128" in installed
    assert installed.count("from all fwmark 0x539 lookup 133") == 2  # IPv4 and IPv6
    assert "local default dev lo" in installed
    assert "TPROXY" not in cleaned and "fwmark" not in cleaned and "local default" not in cleaned
