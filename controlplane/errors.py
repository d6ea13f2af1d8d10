"""Every error the control plane raises on purpose, under one root.

Catch :class:`ControlPlaneError` to handle any of them; each message already says what is
wrong and where (the object, file, node field or certificate), so callers log or print it as
it is. Bugs and the operating system's own failures (``OSError`` binding a port) are not
wrapped. The value errors also stay ``ValueError`` for callers that catch that.

::

    ControlPlaneError
    ├── ObjectError          a Kubernetes object the mesh model cannot use (convert)
    │   └── InvalidConfig    an Istio networking object istiod would refuse (networking.parse)
    ├── ConfigDirError       a file of ``--config-dir`` cannot be read (sources.files)
    ├── ProxyIdentityError   an Envoy's node does not say which pod it is (proxy)
    └── CAError              the mesh certificate authority (ca)
        ├── CAMaterialError  the CA files are missing, unreadable or do not belong together
        └── Refusal          a certificate request refused, with its gRPC status and reason
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """The root of the control plane's errors."""


class ObjectError(ControlPlaneError, ValueError):
    """A Kubernetes object the model cannot use; the message says which and why."""


class InvalidConfig(ObjectError):
    """An Istio networking object (VirtualService, DestinationRule ...) istiod would refuse.

    The message is ``<Kind> <namespace>/<name>: <field path>: <problem>``, the field path in
    the object's own camelCase spelling (``spec.http[0].route[1].weight``), so the user finds
    the line to fix in the YAML they wrote.
    """


class ConfigDirError(ControlPlaneError, ValueError):
    """A file in the config directory cannot be read; the message names it."""


class ProxyIdentityError(ControlPlaneError, ValueError):
    """The node does not say which pod it is; the message says what the bootstrap must set."""


class CAError(ControlPlaneError):
    """The root of the certificate authority's errors."""


class CAMaterialError(CAError, ValueError):
    """The CA files are missing, unreadable or do not belong together."""


class Refusal(CAError):
    """Why a request is refused: a metric ``reason``, a gRPC status name and a message."""

    def __init__(self, reason: str, code: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code  # "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT"
        self.message = message
