"""Never silent: the configuration Remora refuses or does not honour, said once and counted.

Istio's users expect that a VirtualService either works or is refused with a reason. Remora
reads objects it cannot honour yet (a whole kind, until translation learns it, or a field of
a valid object), and refuses objects istiod would refuse; either way the user must be told,
once, and an operator must be able to count them. This module keeps, per object, why it is
refused or what of it is not honoured, and logs a line only when that changes (a new
version of the object, not every re-list or snapshot): the gauges
``remora_config_invalid{kind}`` and ``remora_config_unsupported{kind, field}``
(:mod:`controlplane.metrics`) read the counts from here at scrape time, so deleting or
fixing an object brings them back down.

Pure bookkeeping: the store tells it what each source event became
(:meth:`ConfigStatus.refused`, :meth:`ConfigStatus.accepted`, :meth:`ConfigStatus.forget`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from controlplane.networking.unsupported import NetworkingConfig, unsupported
from controlplane.objectmeta import Object, object_ref

log = logging.getLogger(__name__)

NETWORKING_KINDS = frozenset({"VirtualService", "DestinationRule", "ServiceEntry", "Sidecar"})
"""Istio's traffic kinds the model reads (:mod:`controlplane.networking`)."""

TRANSLATED_KINDS: frozenset[str] = frozenset({"VirtualService", "DestinationRule"})
"""The networking kinds translation turns into Envoy configuration. Every object of a kind
not here is reported "accepted but not applied yet" (``field="*"``); a kind joins when
translation honours it, and nothing else has to change."""

WHOLE_KIND = "*"
"""The ``field`` label of an object nothing of which is honoured (its kind is not translated)."""

Key = tuple[str, str]
ObjectId = tuple[str, Key]  # (kind, (namespace, name))


def metric_field(path: str) -> str:
    """A field path as a metric label: indexes dropped (``spec.http[].fault``), so the
    label's values are bounded by Istio's schema, not by the objects in the cluster."""
    return re.sub(r"\[[^\]]*\]", "[]", path)


def not_honoured(kind: str, value: NetworkingConfig) -> tuple[str, ...]:
    """What of a valid networking object Remora does not honour: ``*`` for the whole object
    while its kind is not translated, then each field path :func:`unsupported` lists."""
    whole = (WHOLE_KIND,) if kind not in TRANSLATED_KINDS else ()
    return whole + unsupported(value)


def _stamp(obj: Object) -> object:
    """The object's version, as the API server counts them: a re-list of the same version
    is not news. Files carry none (None): their content tells versions apart."""
    meta = obj.get("metadata") or {}
    return meta.get("generation") or meta.get("resourceVersion")


@dataclass(frozen=True)
class _Status:
    """What one version of one object became; a different record is news worth a log line."""

    stamp: object
    problem: str | None = None  # the refusal message
    fields: tuple[str, ...] = ()  # paths not honoured ("*": all of it)
    value: Any = None  # the accepted value (files have no stamp: their content is compared)


class ConfigStatus:
    """Objects currently refused or not (fully) honoured, by kind; see the module docstring."""

    def __init__(self) -> None:
        self._status: dict[ObjectId, _Status] = {}
        # Objects of Istio kinds the model does not read at all (Gateway, EnvoyFilter ...).
        self._foreign: dict[ObjectId, _Status] = {}

    # --- what the store reports --------------------------------------------------------

    def refused(self, kind: str, key: Key, obj: Object, message: str) -> None:
        """``obj`` cannot be used: log ``message`` (it names the object and field) once."""
        status = _Status(_stamp(obj), problem=message)
        if self._record((kind, key), status):
            log.warning(
                "configuration refused, ignored",
                extra={"kind": kind, "object": object_ref(obj), "error": message},
            )

    def accepted(self, kind: str, key: Key, obj: Object, value: Any) -> None:
        """``obj`` is in the model as ``value``: say once what of it is not honoured."""
        if kind not in NETWORKING_KINDS:
            self._status.pop((kind, key), None)  # a fixed object is no longer refused
            return
        fields = not_honoured(kind, value)
        if not fields:
            self._status.pop((kind, key), None)
            return
        if not self._record((kind, key), _Status(_stamp(obj), fields=fields, value=value)):
            return
        ref = f"{kind} {key[0]}/{key[1]}"
        for field in fields:
            if field == WHOLE_KIND:
                log.warning(
                    "accepted but not applied yet: Remora does not translate this kind yet",
                    extra={"kind": kind, "object": ref},
                )
            else:
                log.warning(
                    "accepted but a field is not applied yet",
                    extra={"kind": kind, "object": ref, "field": field},
                )

    def forget(self, kind: str, key: Key) -> None:
        """The object is gone."""
        self._status.pop((kind, key), None)

    def keep_only(self, kind: str, keys: Set[Key]) -> None:
        """After a re-list: forget the objects of ``kind`` the list no longer has."""
        for gone in [oid for oid in self._status if oid[0] == kind and oid[1] not in keys]:
            del self._status[gone]

    def unsupported_kinds(self, objects: Iterable[Object]) -> None:
        """Make ``objects`` (Istio kinds the model does not read) the complete set of them,
        logging each new one once: they are in the user's config and have no effect."""
        fresh: dict[ObjectId, _Status] = {}
        for obj in objects:
            meta = obj.get("metadata") or {}
            kind = str(obj.get("kind"))
            oid = (kind, (str(meta.get("namespace") or "default"), str(meta.get("name") or "")))
            fresh[oid] = status = _Status(_stamp(obj), fields=(WHOLE_KIND,), value=obj)
            if self._foreign.get(oid) != status:
                log.warning(
                    "kind not supported by Remora, ignored",
                    extra={
                        "kind": kind,
                        "object": object_ref(obj),
                        "api_version": obj.get("apiVersion"),
                    },
                )
        self._foreign = fresh

    # --- what the metrics read ---------------------------------------------------------

    def invalid_counts(self) -> Mapping[str, int]:
        """Kind -> how many of its objects are currently refused."""
        return Counter(kind for (kind, _), s in self._status.items() if s.problem is not None)

    def unsupported_counts(self) -> Mapping[tuple[str, str], int]:
        """(kind, field) -> how many objects currently carry that unhonoured field, counting
        an object once per field however many times it has it (``spec.http[0].delegate`` and
        ``spec.http[1].delegate`` are one ``spec.http[].delegate``)."""
        counts: Counter[tuple[str, str]] = Counter()
        for records in (self._status, self._foreign):
            for (kind, _), status in records.items():
                counts.update((kind, f) for f in {metric_field(p) for p in status.fields})
        return counts

    def _record(self, oid: ObjectId, status: _Status) -> bool:
        """Keep ``status``; whether it is news (to be logged)."""
        old = self._status.get(oid)
        self._status[oid] = status
        return old != status
