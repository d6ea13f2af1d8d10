"""The server app of the mesh tests: answers every GET with JSON about the request.

``python echo_server.py PORT``. The answer names the pod (``$POD_NAME``), the peer address
the app saw (``127.0.0.6`` when the server's sidecar delivered the request) and the request
headers (``x-forwarded-client-cert`` once mTLS is on). ``GET /delay?seconds=S`` answers the
same after ``S`` seconds (at most 30): a request that is still in flight when a test stops
the sidecar. Runs inside a test pod only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/delay":
            seconds = float(urllib.parse.parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(min(max(seconds, 0.0), 30.0))
        body = json.dumps(
            {
                "pod": os.environ.get("POD_NAME", ""),
                "peer": self.client_address[0],
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
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
