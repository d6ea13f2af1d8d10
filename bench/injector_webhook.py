"""Admission latency and throughput of ``remora webhook`` over HTTPS on loopback.

Starts the real webhook (``python -m remora webhook --self-signed``) with 1 and with N worker
processes, and drives it with realistic AdmissionReviews (bench/injector_pods.py) over
keep-alive TLS connections from this process:

* fixed rate (open loop): requests are sent on a schedule; latency is measured from the
  scheduled send time, so a slow server cannot hide queueing (no coordinated omission);
* maximum throughput (closed loop): C connections each send the next request as soon as the
  previous answer arrives; reports the sustained rate and its latencies.

Also measures the in-process cost of one review (parse, decide, inject, diff, encode) and prints
a profile of it with --profile. Everything stays on 127.0.0.1 and every loop is bounded.

    .venv/bin/python bench/injector_webhook.py                 # the table for docs/benchmarks.md
    .venv/bin/python bench/injector_webhook.py --profile       # where the time goes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import procfs
from bench.injector_pods import admission_review_body
from bench.percentiles import percentile
from meshlib.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


class Webhook:
    """``remora webhook`` in a subprocess, self-signed, on a free loopback port."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="remora-bench-")
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Webhook:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "remora", "webhook",
                "--self-signed", self.dir.name, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers), "--kubernetes-version", "config",
                "--log-level", "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        ca = Path(self.dir.name) / "ca.crt"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ca.exists():
                try:
                    ctx = ssl.create_default_context(cafile=str(ca))
                    with socket.create_connection(("127.0.0.1", self.port), 1) as raw:
                        ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
                    self.ssl = ctx
                    time.sleep(0.5 * self.workers)  # let every worker come up
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("the webhook did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.dir.cleanup()


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /inject?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head[:40]!r}")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length)
    if b'"allowed":true' not in body or b'"patch"' not in body:
        raise RuntimeError("the pod was not injected")


async def _connect(hook: Webhook) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", hook.port, ssl=hook.ssl, server_hostname="127.0.0.1"
    )


def requests_for(port: int, count: int, distinct: bool) -> list[bytes]:
    """``count`` requests: pods of one ReplicaSet (a rollout: the same but for the generated
    token volume) or pods of as many different workloads."""
    return [
        request_bytes(port, admission_review_body(i if distinct else None, uid=i))
        for i in range(count)
    ]


async def fixed_rate(
    hook: Webhook, rate: float, seconds: float, connections: int, distinct: bool
) -> dict[str, float]:
    """Open loop: one request every 1/rate s, on whichever connection is free."""
    requests = requests_for(hook.port, int(rate * seconds), distinct)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await _connect(hook))
    latencies: list[float] = []
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        conn = await pool.get()
        try:
            await _exchange(*conn, requests[i])
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)

    await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(total))), timeout=seconds * 4 + 30
    )
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return _summary(latencies, elapsed)


async def closed_loop(
    hook: Webhook, seconds: float, connections: int, distinct: bool
) -> dict[str, float]:
    """Closed loop: each connection sends its next request when the answer arrives."""
    requests = requests_for(hook.port, 12000, distinct)
    sent_total = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent_total
        reader, writer = await _connect(hook)
        try:
            while time.perf_counter() < stop_at and sent_total < len(requests):
                sent = time.perf_counter()
                sent_total += 1
                await _exchange(reader, writer, requests[sent_total - 1])
                latencies.append(time.perf_counter() - sent)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(connections))), timeout=seconds + 30
    )
    return _summary(latencies, time.perf_counter() - start)


def _summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def in_process(profile: bool) -> dict[str, float]:
    from injector.admission import review
    from injector.config import default_config

    config, body = default_config(), admission_review_body()
    for _ in range(50):
        review(body, "application/json", config)
    n = 1000
    started = time.process_time()
    for _ in range(n):
        review(body, "application/json", config)
    per_call = (time.process_time() - started) / n
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            review(body, "application/json", config)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    return {"review_us": per_call * 1e6, "reviews_per_s_one_core": 1 / per_call}


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the webhook process and its workers (user + system), from /proc.

    Processes gone by the time they are read count nothing.
    """
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += procfs.children(pid)
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += procfs.read_stat(p).cpu_seconds
    return total


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (max 60)")
    parser.add_argument("--rate", type=float, default=200.0, help="fixed-rate test, reviews/s")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seconds = min(args.seconds, 60.0)

    results: dict[str, object] = {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "in_process": in_process(args.profile),
    }
    rows: list[tuple[int, str, str, dict[str, float]]] = []
    for workers in args.workers:
        with Webhook(workers) as hook:
            asyncio.run(closed_loop(hook, 2.0, args.connections, distinct=True))  # warm up
            assert hook.proc is not None
            pid = hook.proc.pid
            for pods, distinct in (("rollout", False), ("distinct", True)):
                cpu0, srv0 = cpu_seconds(), server_cpu_seconds(pid)
                fixed = asyncio.run(fixed_rate(hook, args.rate, seconds, 4, distinct))
                fixed["client_cpu"] = (cpu_seconds() - cpu0) / seconds
                fixed["server_cpu_ms"] = (server_cpu_seconds(pid) - srv0) * 1000 / fixed["requests"]
                cpu0, srv0 = cpu_seconds(), server_cpu_seconds(pid)
                peak = asyncio.run(closed_loop(hook, seconds, args.connections, distinct))
                peak["client_cpu"] = (cpu_seconds() - cpu0) / seconds
                peak["server_cpu_ms"] = (server_cpu_seconds(pid) - srv0) * 1000 / peak["requests"]
                results[f"workers_{workers}_{pods}"] = {"fixed_rate": fixed, "max": peak}
                rows.append((workers, pods, f"fixed {args.rate:.0f}/s", fixed))
                rows.append((workers, pods, f"max, {args.connections} conns", peak))
    results["load_average_after"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(results, indent=2))
        return
    ip = results["in_process"]
    assert isinstance(ip, dict)
    print(
        f"in-process review(), distinct pods: {ip['review_us']:.0f} µs CPU "
        f"({ip['reviews_per_s_one_core']:.0f}/s on one core); load average "
        f"{results['load_average']:.1f} before, {results['load_average_after']:.1f} after"
    )
    print()
    print(
        "| workers | pods | load | achieved/s | p50 ms | p90 ms | p99 ms | max ms "
        "| server CPU ms/review | client CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for workers, pods, label, row in rows:
        print(
            f"| {workers} | {pods} | {label} | {row['rate']:.0f} | {row['p50_ms']:.2f} "
            f"| {row['p90_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.1f} "
            f"| {row['server_cpu_ms']:.2f} | {row['client_cpu'] * 100:.0f}% |"
        )


if __name__ == "__main__":
    main()
