"""Envoy resources as the xDS server serves them: packed once, versioned by content.

A :class:`Resource` is built once per distinct input and then shared by every proxy that
needs it: its ``Any`` is packed and its version hashed a single time. Versions are content
hashes (deterministic serialization, so map fields cannot reorder), which makes them
stable across control-plane restarts: a reconnecting Envoy that quotes a version we would
produce again is not sent that resource again.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"

# Adds go clusters -> endpoints -> listeners -> routes, so nothing refers to a cluster that
# Envoy has not got (and warmed) yet.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES: Mapping[str, str] = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}
TYPE_BY_SHORT_NAME: Mapping[str, str] = {
    "clusters": CLUSTER,
    "endpoints": ENDPOINT,
    "listeners": LISTENER,
    "routes": ROUTE,
}
# LDS and CDS are wildcard types: an empty subscription means "everything".
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


def content_version(*chunks: bytes) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False, slots=True)
class Resource:
    """One named Envoy resource, packed and versioned.

    ``wrapped`` is the delta protocol's envelope (name, version, the packed resource) and
    ``packed`` the ``Any`` inside it (state of the world): both are built once, with the
    resource, so a response is only a list of prebuilt messages (a full push of 1,000
    clusters otherwise builds 1,000 envelopes per proxy before the first byte leaves).
    ``message`` is the resource as a protobuf message; one made from bytes
    (:class:`NameOnlyVariants`) parses them only when asked (debug views, validation).
    """

    name: str
    packed: any_pb2.Any
    version: str
    wrapped: discovery_pb2.Resource
    _message: list[Message]  # the message, once built or parsed
    _message_type: type[Message]

    @property
    def message(self) -> Message:
        if not self._message:
            self._message.append(self._message_type.FromString(self.packed.value))
        return self._message[0]

    @property
    def type_url(self) -> str:
        return self.packed.type_url


def _resource(
    name: str, type_url: str, body: bytes, message: Message | None, message_type: type[Message]
) -> Resource:
    version = content_version(body)
    wrapped = discovery_pb2.Resource(name=name, version=version)
    packed = wrapped.resource
    packed.type_url = type_url
    packed.value = body
    return Resource(
        name, packed, version, wrapped, [] if message is None else [message], message_type
    )


def make_resource(name: str, message: Message) -> Resource:
    body = message.SerializeToString(deterministic=True)
    return _resource(name, TYPE_PREFIX + message.DESCRIPTOR.full_name, body, message, type(message))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class NameOnlyVariants:
    """Resources that are one prototype message but for their ``name`` (field 1).

    Most clusters of a mesh are like that (an EDS cluster per service port, plaintext, same
    protocol). Deterministic serialization writes fields in field-number order, so such a
    resource's bytes are its encoded name followed by the prototype's bytes without a name:
    a full push then costs a byte concatenation per cluster instead of building and
    serializing a message (and the bytes, hence the versions, are the same). The message
    is parsed back from the bytes only if something asks for it.
    """

    _NAME_TAG = b"\x0a"  # field 1, length-delimited

    def __init__(self, prototype: Message) -> None:
        name = prototype.DESCRIPTOR.fields_by_number.get(1)
        if name is None or name.name != "name" or name.type != name.TYPE_STRING:
            raise ValueError(f"{prototype.DESCRIPTOR.full_name} has no string name as field 1")
        nameless = type(prototype)()
        nameless.CopyFrom(prototype)
        nameless.ClearField("name")
        self._tail = nameless.SerializeToString(deterministic=True)
        self._type = type(prototype)
        self._type_url = TYPE_PREFIX + prototype.DESCRIPTOR.full_name

    def make(self, name: str) -> Resource:
        encoded = name.encode()
        if not encoded:
            raise ValueError("a name-only variant needs a name")
        body = b"".join((self._NAME_TAG, _varint(len(encoded)), encoded, self._tail))
        return _resource(name, self._type_url, body, None, self._type)


@dataclass(frozen=True, eq=False)
class ResourceSet:
    """All resources of one type for one proxy, with the type's state-of-the-world version."""

    type_url: str
    by_name: Mapping[str, Resource]
    _version: list[str] = field(default_factory=list, repr=False)
    _diffs: list[tuple[weakref.ref[ResourceSet], SetChanges]] = field(
        default_factory=list, repr=False
    )

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> ResourceSet:
        return cls(type_url, {r.name: r for r in resources})

    @property
    def version(self) -> str:
        """A hash of every (name, version): equal sets have equal versions, across restarts."""
        if not self._version:
            chunks = (
                f"{name}={self.by_name[name].version};".encode() for name in sorted(self.by_name)
            )
            self._version.append(content_version(*chunks))
        return self._version[0]

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str) -> Resource | None:
        return self.by_name.get(name)

    def changes_since(self, older: ResourceSet) -> SetChanges:
        """What differs from ``older``: computed once, then shared by every proxy asking.

        Fifty proxies moving from the same old set to the same new one then cost one
        O(resources) comparison, and each proxy only looks at the names that changed.
        """
        for ref, changes in self._diffs:
            if ref() is older:
                return changes
        by_name, old = self.by_name, older.by_name
        changed = sorted(
            n for n, r in by_name.items() if (o := old.get(n)) is None or o.version != r.version
        )
        removed = sorted(n for n in old if n not in by_name)
        changes = SetChanges(tuple(changed), tuple(removed))
        self._diffs[:] = [(weakref.ref(older), changes), *self._diffs[:3]]
        return changes


@dataclass(frozen=True)
class SetChanges:
    changed: tuple[str, ...]  # added or modified
    removed: tuple[str, ...]


class ProxyResources:
    """Everything one proxy should have: one :class:`ResourceSet` per xDS type.

    A type may be given already built or as a function that builds it on first use. The
    server sends clusters first and Envoy then spends a while on them; building endpoints,
    listeners and routes lazily lets that work overlap Envoy's instead of preceding it.
    """

    __slots__ = ("_built", "_pending")

    def __init__(self, sets: Mapping[str, ResourceSet | Callable[[], ResourceSet]]) -> None:
        self._built: dict[str, ResourceSet] = {}
        self._pending: dict[str, Callable[[], ResourceSet]] = {}
        for type_url, value in sets.items():
            if isinstance(value, ResourceSet):
                self._built[type_url] = value
            else:
                self._pending[type_url] = value

    def __getitem__(self, type_url: str) -> ResourceSet:
        built = self._built.get(type_url)
        if built is None:
            built = self._built[type_url] = self._pending.pop(type_url)()
        return built

    def build_all(self) -> ProxyResources:
        """Build every type now (for callers that want no laziness); returns self."""
        for type_url in list(self._pending):
            self[type_url]
        return self

    @property
    def sets(self) -> dict[str, ResourceSet]:
        """Every type, built."""
        return {type_url: self[type_url] for type_url in [*self._built, *self._pending]}
