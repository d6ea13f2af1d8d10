"""Istio networking objects (plain dicts as the API serves them) to checked model values.

One function per kind. Each checks the envelope (apiVersion, kind, metadata), refuses fields
Istio's schema does not have, and makes the semantic checks istiod's validating webhook
makes, so an object Istio would refuse is refused here too, with
:class:`~controlplane.errors.InvalidConfig` naming the object and the field path::

    VirtualService shop/reviews: spec.http[0].route[1].weight: weights must add up to 100, they add up to 90

The config sources log that and skip the object, as they do for any object they cannot use.
Cross-object rules (one selector-less Sidecar per namespace) are the store's, not these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from controlplane.errors import InvalidConfig, ObjectError
from controlplane.networking.destination_rule import destination_rule_spec
from controlplane.networking.fields import Context
from controlplane.networking.model import DestinationRule, ServiceEntry, Sidecar, VirtualService
from controlplane.networking.service_entry import service_entry_spec
from controlplane.networking.sidecar import sidecar_spec
from controlplane.networking.virtual_service import virtual_service_spec
from controlplane.objectmeta import Object, creation_timestamp, namespace_and_name

GROUP = "networking.istio.io"
API_VERSIONS = frozenset(f"{GROUP}/{version}" for version in ("v1", "v1beta1", "v1alpha3"))
"""The versions Istio serves these kinds under; their schemas are the same."""

T = TypeVar("T", VirtualService, DestinationRule, ServiceEntry, Sidecar)
SpecReader = Callable[[Context, object, str, str, str], T]


def virtual_service_from_object(obj: Object) -> VirtualService:
    """A checked ``VirtualService``; :class:`InvalidConfig` names what istiod would refuse."""
    return _from_object(obj, "VirtualService", virtual_service_spec)


def destination_rule_from_object(obj: Object) -> DestinationRule:
    """A checked ``DestinationRule``; :class:`InvalidConfig` names what istiod would refuse."""
    return _from_object(obj, "DestinationRule", destination_rule_spec)


def service_entry_from_object(obj: Object) -> ServiceEntry:
    """A checked ``ServiceEntry``; :class:`InvalidConfig` names what istiod would refuse."""
    return _from_object(obj, "ServiceEntry", service_entry_spec)


def sidecar_from_object(obj: Object) -> Sidecar:
    """A checked ``Sidecar``; :class:`InvalidConfig` names what istiod would refuse."""
    return _from_object(obj, "Sidecar", sidecar_spec)


def _from_object(obj: Object, kind: str, read_spec: SpecReader[T]) -> T:
    try:
        namespace, name = namespace_and_name(obj)
        created = creation_timestamp(obj)
    except ObjectError as exc:
        raise InvalidConfig(str(exc)) from None
    ctx = Context(f"{kind} {namespace}/{name}")
    api_version = obj.get("apiVersion")
    if api_version not in API_VERSIONS:
        versions = ", ".join(sorted(API_VERSIONS))
        ctx.fail("apiVersion", f"{api_version!r} is not one of {versions}")
    if obj.get("kind") != kind:
        ctx.fail("kind", f"{obj.get('kind')!r} is not {kind}")
    value = read_spec(ctx, obj.get("spec") or {}, name, namespace, created)
    # Recorded while reading, kept on the value for unsupported() to report.
    return dataclasses.replace(value, unmodelled=tuple(ctx.unmodelled))
