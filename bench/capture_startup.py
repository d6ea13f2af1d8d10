"""Wall time of ``remora init`` from process start to rules installed, per backend.

Each figure is one whole process run (interpreter start, imports, reading the current
rules, writing ours, exit) inside a network namespace this script creates and deletes.
Between timed runs the rules are removed (untimed), so every run is a fresh install, the
init container's case; the "re-run" rows time a run over rules already in place.

Two interpreters are timed, because a development checkout is not what a pod runs:

* ``image``: ``python -S -m initcontainer`` with the source on PYTHONPATH: no ``site``, as in
  an image where the package is a plain install and nothing else is on the start-up path;
* ``venv``: ``.venv/bin/python -m initcontainer`` and ``.venv/bin/remora init``: this
  checkout's editable install, whose import hook alone costs ~15 ms, and (for ``remora``)
  the click CLI module.

Usage (as root): ``.venv/bin/python bench/capture_startup.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PY = str(REPO / ".venv" / "bin" / "python")
# The args the injector renders for a default pod.
DEFAULT = shlex.split(
    "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs

    site_packages = sysconfig.get_paths()["purelib"]
    image_env = {**os.environ, "PYTHONPATH": str(REPO)}
    # python -S drops site-packages; python-iptables lives there, so add it for that backend.
    image_iptc_env = {**os.environ, "PYTHONPATH": f"{REPO}:{site_packages}"}
    venv_env = dict(os.environ)

    netns = f"rmcap-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    ns = ["ip", "netns", "exec", netns]
    try:
        subprocess.run([*ns, "ip", "link", "set", "lo", "up"], check=True)
        image = [*ns, sys.executable, "-S", "-m", "initcontainer"]
        venv = [*ns, VENV_PY, "-m", "initcontainer"]
        remora = [*ns, str(REPO / ".venv" / "bin" / "remora"), "init"]
        v4, dual = ["--enable-ipv6=false"], ["--dual-stack"]
        nft, legacy = ["--iptables-mode=nft"], ["--iptables-mode=legacy"]
        iptc = ["--backend=python-iptables"]
        cases: list[tuple[str, list[str], dict[str, str], bool]] = [
            ("interpreter floor: python -S -c pass", [*ns, sys.executable, "-S", "-c", "pass"], image_env, False),
            ("interpreter floor: venv python -c pass", [*ns, VENV_PY, "-c", "pass"], venv_env, False),
            ("import only: python -S -c 'import initcontainer.cli'", [*ns, sys.executable, "-S", "-c", "import initcontainer.cli"], image_env, False),
            ("image  iptables-restore nft     IPv4", [*image, *DEFAULT, *v4, *nft], image_env, True),
            ("image  iptables-restore nft     dual-stack", [*image, *DEFAULT, *dual, *nft], image_env, True),
            ("image  iptables-restore legacy  IPv4", [*image, *DEFAULT, *v4, *legacy], image_env, True),
            ("image  iptables-restore legacy  dual-stack", [*image, *DEFAULT, *dual, *legacy], image_env, True),
            ("image  iptables-restore auto    IPv4", [*image, *DEFAULT, *v4], image_env, True),
            ("image  iptables-restore auto    dual-stack", [*image, *DEFAULT, *dual], image_env, True),
            ("image  re-run over our rules    IPv4 (auto)", [*image, *DEFAULT, *v4], image_env, False),
            ("image  python-iptables legacy   IPv4", [*image, *DEFAULT, *v4, *iptc], image_iptc_env, True),
            ("venv   python -m initcontainer  IPv4 (auto)", [*venv, *DEFAULT, *v4], venv_env, True),
            ("venv   remora init              IPv4 (auto)", [*remora, *DEFAULT, *v4], venv_env, True),
        ]  # fmt: skip
        cleanup = [*image, "--cleanup-only", "--enable-ipv6=false"]
        print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
              f"kernel {platform.release()}, Python {platform.python_version()}, runs={runs}")  # fmt: skip
        print(f"| {'case':<52} | median ms | min | max |")
        print(f"|{'-' * 54}|----------:|----:|----:|")
        for name, argv, env, fresh in cases:
            samples = []
            for _ in range(runs):
                if fresh:
                    subprocess.run(cleanup, env=image_env, capture_output=True, check=True)
                samples.append(timed(argv, env))
            print(
                f"| {name:<52} | {statistics.median(samples):9.1f} | "
                f"{min(samples):4.1f} | {max(samples):4.1f} |",
                flush=True,
            )
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
