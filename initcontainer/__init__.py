"""Traffic capture: the pod init container that redirects traffic to the Envoy sidecar.

``config`` (what was asked) -> ``plan`` (the rules, pure) -> ``restore`` (iptables-restore
text) -> a backend (``backend_restore`` by default, ``backend_iptc`` for python-iptables).
``cli`` is istio-iptables' command line on top; ``probe`` proves that capture works.

Every meshed pod waits for this package to start (budget: 40 ms, docs/capture.md), so the
modules on that path import neither ``typing`` nor ``logging``, ``subprocess``, ``argparse``,
``enum`` or ``ipaddress``. Type-only imports sit under ``TYPE_CHECKING = False`` / ``if
TYPE_CHECKING:``, a local flag mypy treats as true just like ``typing.TYPE_CHECKING``.
"""
