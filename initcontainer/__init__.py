"""Traffic capture: the pod init container that redirects traffic to the Envoy sidecar.

``config`` (what was asked) -> ``plan`` (the rules, pure) -> ``restore`` (iptables-restore
text) -> a backend (``backend_restore`` by default, ``backend_iptc`` for python-iptables).
``cli`` is istio-iptables' command line on top; ``probe`` proves that capture works.
"""
