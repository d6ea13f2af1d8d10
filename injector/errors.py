"""Every error the injector raises on purpose, under one root::

    InjectorError                 anything the injector refuses, with a message for the user
    ├── ConfigError               the injection config (file, ConfigMap, flag) cannot be used
    ├── AnnotationError           a pod annotation's value cannot be used: the pod is refused
    ├── PodError                  the object is not a pod that can be injected
    ├── ReviewError               the HTTP request is not an AdmissionReview (answered 400/415)
    ├── KubeInjectError           ``kube-inject`` input cannot be processed (names the document)
    └── RuntimeCertError          runtime serving certificates cannot be set up

Each message is meant to be shown as it is: it names the key, annotation or document and the
value. The webhook turns an ``AnnotationError`` or ``PodError`` into a refusal of the pod, a
``ReviewError`` into a 400 (or 415) naming the problem, and never answers 500. The value
errors are also ``ValueError``\\s and ``RuntimeCertError`` a ``RuntimeError``, as they were
before this tree existed.
"""

from __future__ import annotations


class InjectorError(Exception):
    """The root: the injector refuses something, and the message says what and why."""


class ConfigError(InjectorError, ValueError):
    """The injection config cannot be used; the message names the key and the value."""


class AnnotationError(InjectorError, ValueError):
    """An annotation's value cannot be used; the pod must be refused with this message.

    The message is Istio's: ``invalid value '<value>' for annotation '<name>': <reason>``.
    """

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f"invalid value '{value}' for annotation '{name}': {reason}")
        self.name = name
        self.value = value
        self.reason = reason


class PodError(InjectorError, ValueError):
    """The object is not a pod we can inject (e.g. ``spec.containers`` is missing)."""


class ReviewError(InjectorError, ValueError):
    """The request body or its Content-Type is not an AdmissionReview we can answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status  # 400, or 415 for a Content-Type that is not JSON


class KubeInjectError(InjectorError, ValueError):
    """``kube-inject`` input cannot be processed; the message names the document."""


class RuntimeCertError(InjectorError, RuntimeError):
    """The runtime certificates cannot be set up; the message says what to check."""
