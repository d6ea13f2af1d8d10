"""Traffic capture: the pod init container that redirects traffic to the Envoy sidecar.

``config`` (what was asked) -> ``plan`` (the rules, pure) -> ``restore`` (iptables-restore
text) -> a backend (``backend_restore`` by default, ``backend_iptc`` for python-iptables).
``cli`` runs istio-iptables' command line on top: ``flags`` is the flag table, ``cmdline``
reads it, ``config_from_flags`` turns the values and the facts ``environment`` reads from
the machine into a config (pure). ``probe`` proves that capture works; every failure is an
``errors.InitError``. The layers are an import-linter contract (pyproject.toml).

Every meshed pod waits for this package to start (budget: 40 ms, docs/capture.md), so the
modules on that path import neither ``typing`` nor ``logging``, ``subprocess``, ``argparse``,
``enum`` or ``ipaddress``. Type-only imports sit under ``TYPE_CHECKING = False`` / ``if
TYPE_CHECKING:``, a local flag mypy treats as true just like ``typing.TYPE_CHECKING``.
"""
