"""The server app of the mesh tests: answers every GET with JSON about the request.

``python echo_server.py PORT``. The answer names the pod (``$POD_NAME``), its version
(``$VERSION``, the pod's ``version`` label in the traffic-management tests), the peer address
the app saw (``127.0.0.6`` when the server's sidecar delivered the request) and the request
headers (``x-forwarded-client-cert`` once mTLS is on). ``GET /delay?seconds=S`` answers the
same after ``S`` seconds (at most 30): a request that is still in flight when a test stops
the sidecar, or one slower than a route's timeout. ``GET /flaky`` fails every other time
(500, starting with the first): what a route's retries must hide. ``GET /counts`` (asked
inside the pod, not through the mesh) says how many requests each path got and how many of
them the app failed, and the ``Host`` headers each path came with (Envoy adds ``-shadow`` to
the copies it mirrors): the server's own account of retries and mirroring. ``GET /failing?on=1`` (also asked
inside the pod) makes every request but the readiness probe's (``/``) answer 500 until ``/failing?on=0``: an endpoint
gone bad, for outlier detection. Runs inside a test pod only.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_answered: collections.Counter[str] = collections.Counter()
_failed: collections.Counter[str] = collections.Counter()
_hosts: collections.defaultdict[str, collections.Counter[str]] = collections.defaultdict(
    collections.Counter
)
_failing = threading.Event()


def _count(path: str, host: str) -> int:
    """Count a request to ``path`` with ``host``; its number (1 for the first)."""
    with _lock:
        _hosts[path][host] += 1
        _answered[path] += 1
        return _answered[path]


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/counts":
            with _lock:
                counts = {
                    "answered": dict(_answered),
                    "failed": dict(_failed),
                    "hosts": {path: dict(hosts) for path, hosts in _hosts.items()},
                }
            self._answer(200, json.dumps(counts).encode())
            return
        if url.path == "/failing":
            on = urllib.parse.parse_qs(url.query).get("on", ["1"])[0] == "1"
            if on:
                _failing.set()
            else:
                _failing.clear()
            self._answer(200, json.dumps({"failing": on}).encode())
            return
        number = _count(url.path, self.headers.get("host", ""))
        if url.path == "/delay":
            seconds = float(urllib.parse.parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(min(max(seconds, 0.0), 30.0))
        told_to_fail = _failing.is_set() and url.path != "/"
        if told_to_fail or (url.path == "/flaky" and number % 2 == 1):
            with _lock:
                _failed[url.path] += 1
            self._answer(500, b'{"error": "told to fail"}')
            return
        body = json.dumps(
            {
                "pod": os.environ.get("POD_NAME", ""),
                "version": os.environ.get("VERSION", ""),
                "peer": self.client_address[0],
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self._answer(200, body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"echo: {self.client_address[0]} {format % args}\n")


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Echo)
    print(f"echo server on :{sys.argv[1]} as uid {os.getuid()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
