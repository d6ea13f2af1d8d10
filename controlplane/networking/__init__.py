"""Istio's traffic management API (VirtualService, DestinationRule, ServiceEntry, Sidecar).

Pure, at the bottom of the control plane next to :mod:`controlplane.model`: Kubernetes
objects in, checked frozen values out, nothing about Envoy, watches or the API server.

- :mod:`~controlplane.networking.model`: the values, Istio's field names in snake_case;
- :mod:`~controlplane.networking.parse`: one ``*_from_object`` per kind, refusing what istiod
  refuses with :class:`~controlplane.errors.InvalidConfig` naming the field path;
- :mod:`~controlplane.networking.unsupported`: the paths of a valid object Remora does not
  honour yet;
- :mod:`~controlplane.networking.fields` and :mod:`~controlplane.networking.parts`: reading
  fields with their paths, and the parts several kinds share; one module per kind's spec.
"""
