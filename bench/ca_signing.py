"""How fast the mesh CA answers: signing alone, and CreateCertificate end to end.

    .venv/bin/python bench/ca_signing.py [--requests 300] [--concurrency 1,8,32]

Prints:
* the import cost of the CA messages built from a descriptor at run time (no codegen);
* CSR check + signing alone (pure, one core), per certificate;
* CreateCertificate over gRPC on loopback against a fresh test bed (every request: token
  pre-check, a real TokenReview to kube-apiserver, CSR check, signing), at a few
  concurrencies: throughput and latency percentiles;
* the same without the TokenReview (a fixed authenticator), to show where the time goes.
Bounded in count; all traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import subprocess
import sys
import time

import grpc
from kubernetes import client

from bench.percentiles import percentile
from controlplane.ca.authn import Authenticator, TokenReviewAuthenticator
from controlplane.ca.authority import CAMaterial, sign_workload
from controlplane.ca.csr import approve_csr
from controlplane.ca.service import CertificateService
from meshlib import ca_api
from meshlib.spiffe import WorkloadIdentity
from sidecar.identity import make_csr
from testbed.launcher import TestBed

ID = WorkloadIdentity("bench", "default")
TD = "cluster.local"


class FixedCaller:
    async def authenticate(self, token: str) -> WorkloadIdentity:
        return ID


def import_cost() -> float:
    code = "import time,google.protobuf.struct_pb2,grpc;t=time.perf_counter();import meshlib.ca_api;print(time.perf_counter()-t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code])) for _ in range(5)]
    return statistics.median(runs)


def pure_signing(n: int) -> float:
    material = CAMaterial.self_signed(TD)
    csrs = [make_csr(ID.spiffe_id(TD))[1].decode() for _ in range(n)]
    t0 = time.perf_counter()
    for csr in csrs:
        ok = approve_csr(csr, ID, TD)
        sign_workload(
            material,
            ok.public_key,
            ok.identity,
            trust_domain=TD,
            ttl=dt.timedelta(hours=24),
            now=dt.datetime.now(dt.UTC),
        )
    return (time.perf_counter() - t0) / n


async def load(
    service: CertificateService, token: str, n: int, concurrency: int
) -> tuple[float, list[float]]:
    server = grpc.aio.server()
    service.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    csr = make_csr(ID.spiffe_id(TD))[1].decode()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = channel.unary_unary(
            ca_api.CREATE_CERTIFICATE_PATH,
            request_serializer=ca_api.serialize,
            response_deserializer=ca_api.parse_response,
        )
        request = ca_api.IstioCertificateRequest(csr=csr)
        metadata = (("authorization", f"Bearer {token}"),)
        await stub(request, metadata=metadata)  # warm up the channel
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                await stub(request, metadata=metadata, timeout=30)
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    await server.stop(0)
    return n / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    print(
        f"import meshlib.ca_api (descriptor built at import): {import_cost() * 1000:.2f} ms median of 5"
    )
    print(f"CSR check + sign, pure, EC P-256: {pure_signing(200) * 1000:.2f} ms per certificate")
    bed = TestBed.start()
    try:
        bed.create_namespace("bench")
        core = client.CoreV1Api(bed.api_client())
        token = core.create_namespaced_service_account_token(
            "default",
            "bench",
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=["istio-ca"], expiration_seconds=3600)
            ),
        ).status.token
        material = CAMaterial.self_signed(TD)
        print("| path | concurrency | requests | cert/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|")
        authenticators: list[tuple[str, Authenticator]] = [
            ("gRPC + TokenReview", TokenReviewAuthenticator(bed.api_client())),
            ("gRPC, no TokenReview", FixedCaller()),
        ]
        for label, authn in authenticators:
            for c in (int(x) for x in args.concurrency.split(",")):
                service = CertificateService(material, authn)
                rate, lat = asyncio.run(load(service, token, args.requests, c))
                print(
                    f"| {label} | {c} | {args.requests} | {rate:.0f} | {percentile(lat, 50) * 1000:.1f} | {percentile(lat, 99) * 1000:.1f} |"
                )
    finally:
        bed.stop()


if __name__ == "__main__":
    main()
