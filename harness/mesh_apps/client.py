"""The client app of the mesh tests.

``python client.py idle``: the container's main process (waits to be stopped).
``python client.py get URL [--attempts N]``: one HTTP GET, retried up to N times (and for at
most 15 s) while the route is not there yet, printed as JSON ``{"status": ..., "body": ...}``.
``python client.py loop URL [--max-seconds S]``: GET after GET (one at a time, each on a new
connection, 20 ms apart) until SIGTERM or ``S`` seconds (default 120), never retried; then
prints ``{"ok": n, "failed": n, "failures": [the first 20]}``: continuous traffic whose every
failure counts.
``python client.py burst URL --requests N [--concurrency C] [--header NAME:VALUE]``: N GETs
(C at a time, each on a new connection), never retried; prints ``{"statuses": {status: n},
"versions": {version: n}, "results": [[status, version, seconds], ...]}`` (the echo server's
``version``; the status ``error`` when there was no answer): what the traffic-management
tests count.
Run in the client pod, as its app user, like ``kubectl exec``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import signal
import sys
import time
import urllib.error
import urllib.request


def get(url: str, attempts: int) -> int:
    result: dict[str, object] = {}
    deadline = time.monotonic() + 15  # and never longer than this, whatever the attempts
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                result = {"status": response.status, "body": response.read().decode()}
                break
        except urllib.error.HTTPError as error:
            result = {"status": error.code, "body": error.read().decode(errors="replace")}
        except OSError as error:
            result = {"status": None, "error": str(error)}
        if attempt + 1 < attempts and time.monotonic() < deadline:
            time.sleep(0.2)
        else:
            break
    result["attempts"] = attempt + 1
    print(json.dumps(result), flush=True)
    return 0 if result.get("status") == 200 else 1


def loop(url: str, max_seconds: float) -> int:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    ok, failures = 0, []
    began = time.monotonic()
    while not stopping and time.monotonic() - began < max_seconds:
        at = round(time.monotonic() - began, 3)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                ok += 1
        except urllib.error.HTTPError as error:
            failures.append({"at": at, "status": error.code, "body": error.read().decode()[:200]})
        except OSError as error:
            failures.append({"at": at, "error": str(error)})
        time.sleep(0.02)
    summary = {
        "ok": ok,
        "failed": len(failures),
        "failures": failures[:20],
        "seconds": round(time.monotonic() - began, 3),
    }
    print(json.dumps(summary), flush=True)
    return 0 if not failures else 1


def _one(url: str, headers: dict[str, str]) -> tuple[int | str, str, float]:
    """One GET: the status (``error`` without an answer), the answering version, seconds."""
    began = time.monotonic()
    status: int | str = "error"
    version = ""
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
            version = json.loads(response.read()).get("version", "")
    except urllib.error.HTTPError as error:
        status = error.code
        error.read()
    except (OSError, ValueError):
        pass
    return status, version, round(time.monotonic() - began, 4)


def burst(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> int:
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: _one(url, headers), range(requests)))
    summary = {
        "statuses": collections.Counter(str(status) for status, _, _ in results),
        "versions": collections.Counter(version for _, version, _ in results if version),
        "results": results,
    }
    print(json.dumps(summary), flush=True)
    return 0


def _headers() -> dict[str, str]:
    """Every ``--header NAME:VALUE`` of the command line."""
    pairs = [sys.argv[i + 1] for i, arg in enumerate(sys.argv) if arg == "--header"]
    return {name.strip(): value.strip() for name, value in (p.split(":", 1) for p in pairs)}


def _option(name: str, default: float) -> float:
    return float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def main() -> int:
    if sys.argv[1] == "idle":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("client idle", flush=True)
        while True:
            time.sleep(3600)
    if sys.argv[1] == "loop":
        return loop(sys.argv[2], _option("--max-seconds", 120.0))
    if sys.argv[1] == "burst":
        requests = int(_option("--requests", 100))
        return burst(sys.argv[2], requests, int(_option("--concurrency", 1)), _headers())
    return get(sys.argv[2], int(_option("--attempts", 1)))


if __name__ == "__main__":
    sys.exit(main())
