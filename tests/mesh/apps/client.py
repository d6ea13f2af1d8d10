"""The client app of the mesh tests.

``python client.py idle``: the container's main process (waits to be stopped).
``python client.py get URL [--attempts N]``: one HTTP GET, retried up to N times (and for at
most 15 s) while the route is not there yet, printed as JSON ``{"status": ..., "body": ...}``.
Run in the client pod, as its app user, like ``kubectl exec``.
"""

from __future__ import annotations

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
            with urllib.request.urlopen(url, timeout=3) as response:
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


def main() -> int:
    if sys.argv[1] == "idle":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("client idle", flush=True)
        while True:
            time.sleep(3600)
    attempts = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--attempts" else 1
    return get(sys.argv[2], attempts)


if __name__ == "__main__":
    sys.exit(main())
