"""Wall time of ``remora init`` from process start to rules installed, per backend.

Each figure is one whole process run (interpreter start, imports, reading the current
rules, writing ours, exit) inside a network namespace this script creates and deletes. The
timing loop itself runs inside that namespace, so ``ip netns exec`` is not in the figures.
Before each timed run our rules are removed (untimed), so every run is a fresh install (the
init container's case); the "re-run" row times a run over rules already in place. Cases
are timed round robin, so that other work on the machine weighs on all of them alike.

How it is started matters, so three ways are timed:

* ``remora init``: this checkout's console script, i.e. what a pod's init container runs
  (the image's entrypoint is ``remora``, a console script in a virtualenv): the interpreter
  with ``site`` (~3 ms here; the editable install adds one path, as the image's
  site-packages does), then ``remora.entry``, which hands ``init`` over at once. The rows
  per backend use it.
* ``python -S -m initcontainer`` with the byte-compiled source on PYTHONPATH: no ``site``,
  but ``-m`` loads ``runpy`` and ``importlib.util`` (with ``contextlib``, ``collections``,
  ``functools``), ~5-7 ms here;
* ``.venv/bin/python -m initcontainer``: both.

CPU time (user + system of the run and the iptables tools it starts) is printed beside the
wall time: it is much less sensitive to other work on the machine than wall time is.

Usage (as root): ``.venv/bin/python bench/capture_startup.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import procfs

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
# The args the injector renders for a default pod.
DEFAULT = shlex.split(
    "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"
)

# What each case starts from (set up untimed): no rules of ours, or ours installed by the
# same command (a re-run).
FRESH, INSTALLED = "fresh", "installed"

ANCHOR = "import subprocess; subprocess.run(['iptables-nft-save'], capture_output=True)"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the process and its children) in ms."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(argv)}\n{result.stderr}")
    return elapsed, (_children_cpu() - cpu_before) * 1000


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(runs: int) -> None:
    """The timing loop; runs inside the benchmark's network namespace."""
    plain_env = {**os.environ, "PYTHONPATH": str(REPO)}
    venv_env = dict(os.environ)
    py = sys.executable
    venv_py = str(VENV_BIN / "python")
    remora = [str(VENV_BIN / "remora"), "init", *DEFAULT]
    plain_m = [py, "-S", "-m", "initcontainer", *DEFAULT]
    venv_m = [venv_py, "-m", "initcontainer", *DEFAULT]
    v4, dual = ["--enable-ipv6=false"], ["--dual-stack"]
    nft, legacy = ["--iptables-mode=nft"], ["--iptables-mode=legacy"]
    cases: list[tuple[str, list[str], dict[str, str], str]] = [
        ("floor: python -S -c pass", [py, "-S", "-c", "pass"], plain_env, FRESH),
        ("floor: venv python -c pass (site)", [venv_py, "-c", "pass"], venv_env, FRESH),
        ("import: venv python -c 'import initcontainer.cli'", [venv_py, "-c", "import initcontainer.cli"], venv_env, FRESH),
        ("floor: iptables-nft-save (one process)", ["iptables-nft-save"], plain_env, FRESH),
        # capture-notes.md: 21 ms for python + subprocess.run(iptables-nft-restore) and 9.4 ms for
        # python -c pass, on a quieter day. Yardsticks for the load when these figures are taken.
        ("anchor: python -S + subprocess.run(iptables-nft-save)", [py, "-S", "-c", ANCHOR], plain_env, FRESH),
        ("remora init  auto    IPv4", [*remora, *v4], venv_env, FRESH),
        ("remora init  auto    dual-stack", [*remora, *dual], venv_env, FRESH),
        ("remora init  nft     IPv4", [*remora, *v4, *nft], venv_env, FRESH),
        ("remora init  nft     dual-stack", [*remora, *dual, *nft], venv_env, FRESH),
        ("remora init  legacy  IPv4", [*remora, *v4, *legacy], venv_env, FRESH),
        ("remora init  legacy  dual-stack", [*remora, *dual, *legacy], venv_env, FRESH),
        ("remora init  re-run over our rules, auto IPv4", [*remora, *v4], venv_env, INSTALLED),
        ("remora init  python-iptables (legacy), IPv4", [*remora, *v4, "--backend=python-iptables"], venv_env, FRESH),
        ("python -S -m initcontainer, auto IPv4", [*plain_m, *v4], plain_env, FRESH),
        ("venv python -m initcontainer, auto IPv4", [*venv_m, *v4], venv_env, FRESH),
    ]  # fmt: skip
    cleanup = [py, "-S", "-m", "initcontainer", "--cleanup-only", "--enable-ipv6=false"]
    # Round robin (every case once, then again) so that all cases see the same mix of other
    # work on the machine; each row is still `runs` separate processes.
    walls: dict[str, list[float]] = {name: [] for name, *_ in cases}
    cpus: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for _ in range(runs):
        for name, argv, env, before in cases:
            subprocess.run(cleanup, env=plain_env, capture_output=True, check=True)
            if before == INSTALLED:
                subprocess.run(argv, env=env, capture_output=True, check=True)
            wall, cpu = timed(argv, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(f"| {'case':<54} | wall median ms | wall min | wall max | CPU median ms |")
    print(f"|{'-' * 56}|---------------:|---------:|---------:|--------------:|")
    for name, *_ in cases:
        print(
            f"| {name:<54} | {statistics.median(walls[name]):14.1f} | {min(walls[name]):8.1f} | "
            f"{max(walls[name]):8.1f} | {statistics.median(cpus[name]):13.1f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args.runs)
        return 0

    # Byte-compile first, as a package install does: this machine sets PYTHONDONTWRITEBYTECODE,
    # and compiling the sources on every start would be timed otherwise.
    sources = [str(REPO / "initcontainer"), str(REPO / "meshlib"), str(REPO / "remora")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], check=True)
    load = procfs.load_average()
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}, "
        f"Python {platform.python_version()}, runs={args.runs}, load average {load}"
    )
    netns = f"rmcap-bench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        inside = [sys.executable, str(Path(__file__).resolve()), "--inside", f"--runs={args.runs}"]
        subprocess.run(["ip", "netns", "exec", netns, *inside], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
