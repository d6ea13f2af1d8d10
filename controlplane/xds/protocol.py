"""The xDS protocol, per stream, as pure state machines: requests in, responses out.

No gRPC and no clock here (times are passed in), so every rule below is unit-testable and
the server is a thin pump around :meth:`StreamProtocol.on_request` and
:meth:`StreamProtocol.responses`.

Rules both variants follow (see docs/controlplane.md and the traps in xds-notes):

* At most one response per type is in flight; the next waits for its ACK or NACK. This
  coalesces bursts to the latest state and gives Envoy natural back-pressure.
* Types go out in the order clusters -> endpoints -> listeners -> routes, and listeners
  and routes wait while a cluster response is unacknowledged (Envoy ACKs clusters only
  once they are warm), so nothing refers to a cluster Envoy does not have yet.
* A NACK is recorded with Envoy's message; the rejected content is not re-sent (no NACK
  loop) until the desired content changes. Envoy keeps its last good config.
* Wildcard types (CDS, LDS): an empty first subscription means "everything".

State of the world: requests with a nonce other than the latest are stale and ignored; a
request repeating the latest, already answered nonce is Envoy re-fetching (it does so for
the endpoints of a modified cluster) and is answered with the current state.

Delta: the server tracks which version of each resource the client has, starting from the
``initial_resource_versions`` a reconnecting Envoy reports, sends only what differs plus
``removed_resources``, rolls that view back on a NACK, and re-sends the load assignment of
every modified cluster (Envoy does not ask again, and the cluster would otherwise stay
warming until its fetch timeout).
"""

from __future__ import annotations

import abc
import enum
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    WILDCARD_TYPES,
    ProxyResources,
    Resource,
    ResourceSet,
    content_version,
)

Response: TypeAlias = discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse
Request: TypeAlias = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
_GATED_BY_CLUSTERS = frozenset({LISTENER, ROUTE})


class SyncStatus(enum.StrEnum):
    """Per type and proxy, as ``istioctl proxy-status`` shows it."""

    SYNCED = "SYNCED"  # Envoy has acknowledged the latest version sent
    NOT_SENT = "NOT SENT"  # nothing sent yet (not requested yet)
    STALE = "STALE"  # sent and not acknowledged yet, or rejected (NACK)


@dataclass(frozen=True)
class Nack:
    nonce: str
    version: str
    message: str
    at: float


@dataclass(frozen=True)
class Event:
    """Something the server should count or log, produced while handling a request."""

    kind: str  # "ack", "nack", "stale"
    type_url: str
    nonce: str
    message: str = ""


@dataclass
class TypeState:
    """What one stream knows about one resource type."""

    type_url: str
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    in_flight: str | None = None  # nonce awaiting ACK/NACK
    last_nonce: str | None = None
    sent_version: str | None = None
    acked_version: str | None = None
    last_nack: Nack | None = None
    # The desired set this state was last reconciled against, and with which subscription
    # (``clean`` is False once anything but an ACK happened since): unchanged inputs are
    # answered in O(1), and a delta stream diffs only the names that changed.
    diffed: ResourceSet | None = None
    diffed_names: frozenset[str] | None = None
    clean: bool = False
    # State of the world
    sent_names: frozenset[str] | None = None
    nacked_version: str | None = None
    force: bool = False
    # Delta
    known: dict[str, str] = field(default_factory=dict)
    nacked: dict[str, str] = field(default_factory=dict)
    rollback: dict[str, str | None] = field(default_factory=dict)
    in_flight_version: str | None = None

    @property
    def status(self) -> SyncStatus:
        if self.sent_version is None:
            return SyncStatus.NOT_SENT
        if self.in_flight is not None or self.sent_version != self.acked_version:
            return SyncStatus.STALE
        return SyncStatus.SYNCED

    def subscribed(self, desired: Mapping[str, Resource]) -> list[Resource]:
        """The desired resources this stream asked for, in name order."""
        if self.wildcard:
            return [desired[name] for name in sorted(desired)]
        return [desired[name] for name in sorted(self.names) if name in desired]


def _is_nack(request: Request) -> bool:
    return bool(request.error_detail.code or request.error_detail.message)


class StreamProtocol(abc.ABC):
    """One ADS stream's protocol state. ``mode`` is ``sotw`` or ``delta``."""

    mode: str

    def __init__(self, nonce_prefix: str = "") -> None:
        self.types: dict[str, TypeState] = {}
        self._nonces = itertools.count(1)
        self._nonce_prefix = nonce_prefix

    def _next_nonce(self) -> str:
        return f"{self._nonce_prefix}{next(self._nonces)}"

    @abc.abstractmethod
    def on_request(self, request: Request, now: float) -> list[Event]:
        """Apply one request from Envoy."""

    @abc.abstractmethod
    def _response_for(self, state: TypeState, resources: ProxyResources) -> Response | None:
        """The response to send for one type now, or None; updates ``state`` if one is sent."""

    def responses(self, desired: ProxyResources | None) -> list[Response]:
        """Everything that can be sent now to bring Envoy to ``desired``, in push order."""
        return list(self.iter_responses(desired))

    def iter_responses(self, desired: ProxyResources | None) -> Iterator[Response]:
        """Like :meth:`responses`, one at a time: the caller can send the clusters before the
        endpoints are even computed. Consume it fully."""
        if desired is None:
            return
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is None or state.in_flight is not None:
                continue
            clusters = self.types.get(CLUSTER)
            if (
                type_url in _GATED_BY_CLUSTERS
                and clusters is not None
                and clusters.in_flight is not None
            ):
                continue
            response = self._response_for(state, desired)
            if response is not None:
                yield response

    def idle(self) -> bool:
        """Nothing in flight on any type."""
        return all(state.in_flight is None for state in self.types.values())


class SotwProtocol(StreamProtocol):
    """State-of-the-world ADS (``StreamAggregatedResources``)."""

    mode = "sotw"

    def on_request(self, request: Request, now: float) -> list[Event]:
        assert isinstance(request, discovery_pb2.DiscoveryRequest)
        type_url = request.type_url
        state = self.types.get(type_url)
        events: list[Event] = []
        first = state is None
        if state is None:
            state = self.types[type_url] = TypeState(type_url)
            # A reconnecting Envoy quotes the version it has; answer anyway so it is
            # certain to hold exactly this server's view.
            state.force = True
        nonce = request.response_nonce
        # A first request may quote a nonce of a previous stream or server: it is never
        # stale, its subscription counts.
        if nonce and not first:
            if nonce != state.last_nonce:
                return [Event("stale", type_url, nonce)]
            if state.in_flight == nonce:
                state.in_flight = None
                if _is_nack(request):
                    state.nacked_version = state.sent_version
                    state.last_nack = Nack(
                        nonce, state.sent_version or "", request.error_detail.message, now
                    )
                    events.append(Event("nack", type_url, nonce, request.error_detail.message))
                else:
                    state.acked_version = request.version_info
                    events.append(Event("ack", type_url, nonce))
            else:
                # The latest nonce again, already answered: Envoy wants the data re-sent.
                state.force = True
        names = {n for n in request.resource_names if n != "*"}
        state.wildcard = type_url in WILDCARD_TYPES and (
            not request.resource_names or "*" in request.resource_names
        )
        state.names = names
        return events

    def _response_for(self, state: TypeState, resources: ProxyResources) -> Response | None:
        desired = resources[state.type_url]
        sent_names = frozenset(state.names)
        names = sent_names if not state.wildcard else None
        if not state.force and state.diffed is desired and state.diffed_names == names:
            return None
        state.diffed, state.diffed_names = desired, names
        chosen = state.subscribed(desired.by_name)
        if state.wildcard:
            version = desired.version
        else:
            version = content_version(*(f"{r.name}={r.version};".encode() for r in chosen))
        unchanged = version == state.sent_version and (
            state.wildcard or sent_names == state.sent_names
        )
        if not state.force and (unchanged or version == state.nacked_version):
            return None
        nonce = self._next_nonce()
        state.force = False
        state.sent_version, state.sent_names = version, sent_names
        state.last_nonce = state.in_flight = nonce
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            resources=[r.packed for r in chosen],
            type_url=state.type_url,
            nonce=nonce,
        )


def _update_subscription(state: TypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
    """Apply a delta request's subscribe and unsubscribe lists (``*``: the wildcard)."""
    if request.resource_names_subscribe or request.resource_names_unsubscribe:
        state.clean = False
    for name in request.resource_names_subscribe:
        if name == "*":
            state.wildcard = True
            continue
        state.names.add(name)
        if name not in request.initial_resource_versions:
            state.known.pop(name, None)  # a (re)subscription wants the resource sent
    for name in request.resource_names_unsubscribe:
        if name == "*":
            state.wildcard = False
            continue
        state.names.discard(name)
        state.known.pop(name, None)


def _roll_back(state: TypeState) -> None:
    """After a NACK: forget what the rejected response claimed Envoy has, and keep its
    versions so that they are not re-sent until they change."""
    state.clean = False
    for name, previous in state.rollback.items():
        sent = state.known.get(name)
        if sent is not None:
            state.nacked[name] = sent
        if previous is None:
            state.known.pop(name, None)
        else:
            state.known[name] = previous


class DeltaProtocol(StreamProtocol):
    """Incremental ADS (``DeltaAggregatedResources``), the default for sidecars."""

    mode = "delta"

    def on_request(self, request: Request, now: float) -> list[Event]:
        assert isinstance(request, discovery_pb2.DeltaDiscoveryRequest)
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = TypeState(type_url)
            state.known = dict(request.initial_resource_versions)
            state.wildcard = type_url in WILDCARD_TYPES and not request.resource_names_subscribe
        _update_subscription(state, request)
        nonce = request.response_nonce
        if not nonce:
            return []
        if nonce != state.in_flight:
            return [Event("stale", type_url, nonce)]
        state.in_flight = None
        if _is_nack(request):
            _roll_back(state)
            state.last_nack = Nack(
                nonce, state.in_flight_version or "", request.error_detail.message, now
            )
            event = Event("nack", type_url, nonce, request.error_detail.message)
        else:
            state.acked_version = state.in_flight_version
            event = Event("ack", type_url, nonce)
        state.rollback = {}
        return [event]

    def _response_for(self, state: TypeState, resources: ProxyResources) -> Response | None:
        desired = resources[state.type_url]
        if state.clean and state.diffed is desired:
            return None
        if state.clean and state.diffed is not None:
            updates, removed = self._changes_only(state, desired)
        else:
            updates, removed = self._full_diff(state, desired)
        state.diffed, state.clean = desired, True
        if not updates and not removed:
            if not state.nacked:
                # Envoy already has exactly this (e.g. after a reconnect): in sync unsent.
                state.sent_version = state.acked_version = desired.version
            return None
        nonce = self._next_nonce()
        state.rollback = {
            name: state.known.get(name) for name in (*(r.name for r in updates), *removed)
        }
        modified = [r.name for r in updates if r.name in state.known]
        for r in updates:
            state.known[r.name] = r.version
            state.nacked.pop(r.name, None)
        for name in removed:
            state.known.pop(name, None)
        if state.type_url == CLUSTER and modified:
            self._refeed_endpoints(modified)
        state.sent_version = state.in_flight_version = desired.version
        state.last_nonce = state.in_flight = nonce
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=desired.version,
            type_url=state.type_url,
            nonce=nonce,
            resources=[r.wrapped for r in updates],
            removed_resources=removed,
        )

    def _refeed_endpoints(self, cluster_names: Iterable[str]) -> None:
        endpoints = self.types.get(ENDPOINT)
        if endpoints is None:
            return
        endpoints.clean = False
        for name in cluster_names:
            endpoints.known.pop(name, None)

    @staticmethod
    def _full_diff(state: TypeState, desired: ResourceSet) -> tuple[list[Resource], list[str]]:
        """Everything subscribed that Envoy lacks, and everything it has that is gone."""
        for name, version in list(state.nacked.items()):
            current = desired.by_name.get(name)
            if current is None or current.version != version:
                del state.nacked[name]
        chosen = state.subscribed(desired.by_name)
        updates = [
            r
            for r in chosen
            if state.known.get(r.name) != r.version and state.nacked.get(r.name) != r.version
        ]
        wanted = {r.name for r in chosen}
        return updates, sorted(name for name in state.known if name not in wanted)

    @staticmethod
    def _changes_only(state: TypeState, desired: ResourceSet) -> tuple[list[Resource], list[str]]:
        """The same as :meth:`_full_diff` when Envoy had exactly ``state.diffed``: only the
        names that changed since then can differ (the comparison is shared between proxies)."""
        assert state.diffed is not None
        changes = desired.changes_since(state.diffed)
        for name in (*changes.changed, *changes.removed):
            if name in state.nacked:
                current = desired.by_name.get(name)
                if current is None or current.version != state.nacked[name]:
                    del state.nacked[name]
        updates = [
            r
            for r in (
                desired.by_name[n] for n in changes.changed if state.wildcard or n in state.names
            )
            if state.known.get(r.name) != r.version and state.nacked.get(r.name) != r.version
        ]
        return updates, [name for name in changes.removed if name in state.known]
