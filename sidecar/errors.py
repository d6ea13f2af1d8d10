"""Everything that can stop the sidecar agent, under one root, each message saying what to do.

::

    SidecarError                 the agent cannot do its job; ``remora proxy`` prints the message
    ├── ConfigError              the pod's environment or the flags cannot be used (at start-up)
    │   ├── NodeMetadataError    an ISTIO_METAJSON_* variable is not JSON
    │   ├── ProbeConfigError     ISTIO_KUBE_APP_PROBERS: an entry or a field of one
    │   ├── ScrapeConfigError    ISTIO_PROMETHEUS_ANNOTATIONS
    │   └── StatsConfigError     the stats inclusion annotations or ProxyConfig proxyStatsMatcher
    ├── CertificateError         no workload certificate, or one that does not fit the request
    │   └── CARefused            the mesh CA answered the request with an error status
    └── AgentError               the running agent could not start (a busy port, no Envoy...)

``remora proxy sidecar`` catches :class:`SidecarError` once and exits with its message (no
traceback: the reader is someone looking at ``kubectl logs``). While the pod runs, a failed
certificate renewal is logged and retried instead. Each class is also importable from the
module that raises it. This module imports nothing at run time: it is the agent's bottom.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import grpc


class SidecarError(Exception):
    """The agent cannot do its job; the message says what to change."""


class ConfigError(SidecarError):
    """The agent cannot start with these settings; the message says what to change."""


class NodeMetadataError(ConfigError):
    """An ``ISTIO_METAJSON_*`` variable holds something that is not JSON."""


class ProbeConfigError(ConfigError):
    """``ISTIO_KUBE_APP_PROBERS`` cannot be used; the message names the entry and the field."""


class ScrapeConfigError(ConfigError):
    """``ISTIO_PROMETHEUS_ANNOTATIONS`` cannot be used; the message says why."""


class StatsConfigError(ConfigError):
    """A stats inclusion setting cannot be used; the message names it and the fix."""


class CertificateError(SidecarError):
    """A certificate could not be obtained or does not fit the request."""


class CARefused(CertificateError):
    """The CA answered with an error status (the token or the request was refused)."""

    def __init__(self, address: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(
            f"the mesh CA at {address} refused the certificate request: {code.name}: {details}"
        )
        self.code = code
        self.details = details


class AgentError(SidecarError):
    """The agent could not start; the message says what to do."""
