"""Istio's interception modes: how a pod's inbound traffic reaches its sidecar.

Named by ``ProxyConfig.interceptionMode`` in the mesh config, by the pod annotation
``sidecar.istio.io/interceptionMode``, and passed to the init container as ``-m``. One list
for the three, so none of them admits a mode another refuses.

Imported by the init container on every pod start: it must import nothing.
"""

REDIRECT = "REDIRECT"  # NAT: Envoy reads the original destination with SO_ORIGINAL_DST
TPROXY = "TPROXY"  # mangle + policy routing: the original source and destination are kept
NONE = "NONE"  # no capture at all: the pod gets no init container

INTERCEPTION_MODES = (REDIRECT, TPROXY, NONE)
"""Every mode, in Istio's order (its validation message lists them so)."""

CAPTURE_MODES = (REDIRECT, TPROXY)
"""The modes that install capture rules: what the init container's ``-m`` accepts."""
