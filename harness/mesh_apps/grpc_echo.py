"""The gRPC app of the traffic-management tests: a server that answers with its version, a client
that counts who answered.

``python grpc_echo.py serve PORT``: a plaintext gRPC server on ``PORT`` whose every method (any
service, any name: a generic handler, so no generated protos) answers with the pod's
``$VERSION`` as raw bytes. ``python grpc_echo.py call TARGET METHOD --requests N``: N unary calls
of ``METHOD`` (``/remora.Echo/Hello``) to ``TARGET`` (``ip:port``, plaintext, through the pod's
sidecar), one at a time, never retried; prints ``{"codes": {code: n}, "versions": {version:
n}}``: what a VirtualService's ``uri`` match must route by method. Runs inside a test pod only.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from concurrent import futures
from typing import Any

import grpc


def _identity(data: bytes) -> bytes:
    return data


class _AnyMethod(grpc.GenericRpcHandler):
    """Every method is a unary call answered with this server's version."""

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        version = os.environ.get("VERSION", "").encode()
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: version,
            request_deserializer=_identity,
            response_serializer=_identity,
        )


def serve(port: int) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[_AnyMethod()])
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    print(f"grpc echo on :{port}", flush=True)
    server.wait_for_termination()
    return 0


def call(target: str, method: str, requests: int) -> int:
    codes: collections.Counter[str] = collections.Counter()
    versions: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            method, request_serializer=_identity, response_deserializer=_identity
        )
        for _ in range(requests):
            try:
                versions[stub(b"hello", timeout=5).decode()] += 1
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
    print(json.dumps({"codes": codes, "versions": versions}), flush=True)
    return 0


def main() -> int:
    if sys.argv[1] == "serve":
        return serve(int(sys.argv[2]))
    requests = int(sys.argv[sys.argv.index("--requests") + 1])
    return call(sys.argv[2], sys.argv[3], requests)


if __name__ == "__main__":
    sys.exit(main())
