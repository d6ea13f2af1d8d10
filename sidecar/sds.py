"""The agent's SDS server: the workload certificate (``default``) and the mesh root
(``ROOTCA``) for Envoy, over gRPC on a unix socket so the key never crosses a network.

Envoy opens one stream per secret name (the TLS contexts the control plane sends point at
the ``sds-grpc`` cluster of the bootstrap), state of the world (``StreamSecrets``, what
Istio uses) or incremental (``DeltaSecrets``). Each stream gets an answer as soon as a
certificate exists and a new one on every rotation; an ACK needs no answer, a NACK is
logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import grpc
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from sidecar.identity import CertificateManager, WorkloadCertificate

log = logging.getLogger(__name__)

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
KNOWN_SECRETS = (WORKLOAD_SECRET, ROOT_SECRET)

RequestT = TypeVar("RequestT", discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)


def secret_for(name: str, cert: WorkloadCertificate) -> secret_pb2.Secret:
    """The Envoy ``Secret`` for one of the names we serve."""
    if name == WORKLOAD_SECRET:
        return secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain={"inline_bytes": cert.chain_pem},
                private_key={"inline_bytes": cert.key_pem},
            ),
        )
    if name == ROOT_SECRET:
        return secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca={"inline_bytes": cert.root_pem}
            ),
        )
    raise KeyError(name)


class SecretDiscoveryServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """Serves :data:`KNOWN_SECRETS` from a :class:`CertificateManager`."""

    def __init__(
        self,
        certs: CertificateManager,
        *,
        on_push: Callable[[str], None] | None = None,
    ) -> None:
        self._certs = certs
        self._on_push = on_push

    def _response(self, names: list[str], generation: int) -> discovery_pb2.DiscoveryResponse:
        cert = self._certs.current
        assert cert is not None
        resources = []
        for name in names:
            packed = any_pb2.Any()
            packed.Pack(secret_for(name, cert))
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=f"{generation}-{cert.serial:x}",
            resources=resources,
            type_url=SECRET_TYPE,
            nonce=uuid.uuid4().hex,
        )

    async def _events(
        self, request_iterator: AsyncIterator[RequestT]
    ) -> AsyncIterator[RequestT | int]:
        """Envoy's requests and new certificate generations, interleaved as they happen."""
        events: asyncio.Queue[RequestT | int | None] = asyncio.Queue()

        async def read() -> None:
            async for request in request_iterator:
                await events.put(request)
            await events.put(None)

        async def watch() -> None:
            seen = 0
            while True:
                seen = await self._certs.wait_for_change(seen)
                await events.put(seen)

        tasks = [asyncio.create_task(read()), asyncio.create_task(watch())]
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _served(self, names: Iterable[str]) -> list[str]:
        requested = sorted(set(names))
        unknown = [n for n in requested if n not in KNOWN_SECRETS]
        if unknown:
            log.warning(
                "Envoy asked for secrets this agent does not serve",
                extra={"unknown": unknown, "served": list(KNOWN_SECRETS)},
            )
        return [n for n in requested if n in KNOWN_SECRETS]

    def _pushed(self, names: list[str], version: str) -> None:
        for name in names:
            if self._on_push:
                self._on_push(name)
        log.info("pushed secrets to Envoy", extra={"secrets": names, "version": version})

    async def StreamSecrets(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """State of the world: every response carries all the names the stream asked for."""
        names: list[str] = []
        sent_generation = 0
        last_nonce = ""
        async for event in self._events(request_iterator):
            if isinstance(event, discovery_pb2.DiscoveryRequest):
                if event.response_nonce and event.response_nonce != last_nonce:
                    continue  # stale: an answer to an older response crossed ours
                if event.HasField("error_detail"):
                    log.warning(
                        "Envoy rejected a secret",
                        extra={"secrets": names, "error": event.error_detail.message},
                    )
                    continue
                wanted = self._served(event.resource_names)
                if wanted == names and event.response_nonce:
                    continue  # an ACK of what we sent
                names = wanted
                sent_generation = 0  # (re)send for the new subscription
            generation = self._certs.generation
            if not names or self._certs.current is None or generation == sent_generation:
                continue
            response = self._response(names, generation)
            last_nonce, sent_generation = response.nonce, generation
            self._pushed(names, response.version_info)
            yield response

    async def DeltaSecrets(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        """Incremental: each secret is sent when newly subscribed and when it changes."""
        subscribed: set[str] = set()
        sent: dict[str, int] = {}  # name -> certificate generation Envoy has
        async for event in self._events(request_iterator):
            if isinstance(event, discovery_pb2.DeltaDiscoveryRequest):
                if event.HasField("error_detail"):
                    log.warning(
                        "Envoy rejected a secret", extra={"error": event.error_detail.message}
                    )
                    continue
                for name in event.resource_names_unsubscribe:
                    subscribed.discard(name)
                    sent.pop(name, None)
                subscribed |= set(self._served(event.resource_names_subscribe))
            cert, generation = self._certs.current, self._certs.generation
            due = sorted(n for n in subscribed if sent.get(n) != generation)
            if cert is None or not due:
                continue
            version = f"{generation}-{cert.serial:x}"
            resources = []
            for name in due:
                packed = any_pb2.Any()
                packed.Pack(secret_for(name, cert))
                resources.append(
                    discovery_pb2.Resource(name=name, version=version, resource=packed)
                )
                sent[name] = generation
            self._pushed(due, version)
            yield discovery_pb2.DeltaDiscoveryResponse(
                type_url=SECRET_TYPE,
                resources=resources,
                nonce=uuid.uuid4().hex,
                system_version_info=version,
            )

    async def FetchSecrets(
        self,
        request: discovery_pb2.DiscoveryRequest,
        context: grpc.aio.ServicerContext,
    ) -> discovery_pb2.DiscoveryResponse:
        names = [n for n in request.resource_names if n in KNOWN_SECRETS]
        if not names or self._certs.current is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "no workload certificate yet (or no known secret asked)",
            )
        return self._response(names, self._certs.generation)


async def start_sds_server(server: SecretDiscoveryServer, socket_path: str) -> grpc.aio.Server:
    """Listen on ``unix:<socket_path>``, owner-only from the first moment it can be reached.

    The socket hands out the workload's private key: only our user (Envoy runs as it) may
    connect, not another container that mounts the same volume under another uid. A socket
    bound in place gets the umask's mode, and a chmod after the bind leaves a window in
    which anyone could connect; a process-wide umask change is not safe with gRPC's threads.
    So the socket is bound inside a fresh 0700 directory next to ``socket_path`` (nobody
    else can reach it there), made 0600, and only then renamed into place, atomically
    replacing a stale socket from a previous run.
    """
    path = Path(socket_path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".sds", dir=path.parent))  # mode 0700
    try:
        bound = private / "s"  # short: unix socket paths are limited to ~107 bytes
        grpc_server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(server, grpc_server)
        grpc_server.add_insecure_port(f"unix:{os.fspath(bound)}")
        await grpc_server.start()
        try:
            bound.chmod(0o600)
            bound.replace(path)
        except OSError:
            await grpc_server.stop(grace=0)
            raise
    finally:
        with contextlib.suppress(OSError):
            bound.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            private.rmdir()
    return grpc_server
