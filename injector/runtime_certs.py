"""Runtime serving certificates: no cert-manager, nothing created at install time that expires.

Two ways, sharing one rule for the serving certificate (:func:`serving_certificate`):
:func:`write_self_signed` makes a CA and a serving certificate in a directory, for a local trial
(``remora webhook --self-signed DIR``), tests and the demo; :class:`RuntimeCertificates` keeps
them in a Secret for a cluster, as follows.

With ``remora webhook --cert-secret NAME --webhook-configuration NAME`` the injector itself:

1. keeps a CA and a serving certificate in the Secret ``NAME`` (keys ``ca.crt``, ``ca.key``,
   ``tls.crt``, ``tls.key``) in its own namespace, so every replica serves the same pair;
2. writes ``tls.crt``/``tls.key`` to the ``--tls-cert``/``--tls-key`` paths, where the server's
   hot reload picks them up;
3. puts the CA into every webhook's ``clientConfig.caBundle`` of the named
   MutatingWebhookConfiguration (as istiod's webhook patcher does);
4. re-checks periodically: the serving certificate is re-issued ``renew_before`` its expiry (the
   CA, valid ten years, is kept, so the caBundle does not change), and a pair rotated by another
   replica is adopted.

Replicas race safely: the Secret is created or updated with optimistic concurrency, and the loser
of a conflict adopts what the winner stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from injector.errors import RuntimeCertError
from meshlib import certs
from meshlib.files import write_atomically

log = logging.getLogger("remora.injector.certs")

CA_VALIDITY_DAYS = 3650
SELF_SIGNED_LIFETIME = dt.timedelta(days=365)  # --self-signed: a trial, never renewed
_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclass(frozen=True)
class RuntimeCertOptions:
    secret_name: str
    namespace: str
    cert_file: str
    key_file: str
    sans: tuple[str, ...]
    webhook_configuration: str | None = None
    validity: dt.timedelta = dt.timedelta(days=90)
    renew_before: dt.timedelta = dt.timedelta(days=30)


@dataclass(frozen=True)
class Material:
    ca: certs.KeyPair
    serving: certs.KeyPair


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sans(cert_pem: bytes) -> set[str]:
    try:
        ext = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.value.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.value.get_values_for_type(x509.IPAddress)
    }


def needs_renewal(material: Material | None, options: RuntimeCertOptions) -> str | None:
    """Why new certificates are needed (``None`` if the stored ones will do)."""
    if material is None:
        return "no certificate stored yet"
    now = _now()
    if certs.not_after(material.ca.cert_pem) - now < options.validity:
        return "the CA expires before a new serving certificate would"
    if certs.not_after(material.serving.cert_pem) - now < options.renew_before:
        return "the serving certificate is due for renewal"
    missing = set(options.sans) - _sans(material.serving.cert_pem)
    if missing:
        return f"the serving certificate lacks the names {sorted(missing)}"
    return None


def serving_certificate(
    ca: certs.KeyPair, sans: tuple[str, ...], lifetime: dt.timedelta
) -> certs.KeyPair:
    """A serving certificate from ``ca`` for ``sans``, each an IP address or a DNS name; the
    first DNS name is the subject (``remora-injector`` when there is none)."""
    ips: list[str] = []
    names: list[str] = []
    for san in sans:
        try:
            ips.append(str(ipaddress.ip_address(san)))
        except ValueError:
            names.append(san)
    return certs.issue(
        ca,
        names[0] if names else "remora-injector",
        dns_names=tuple(names),
        ip_addresses=tuple(ips),
        lifetime=lifetime,
    )


def issue(previous: Material | None, options: RuntimeCertOptions) -> Material:
    """A new serving certificate, from the previous CA when it lasts long enough."""
    ca = previous.ca if previous is not None else None
    if ca is None or certs.not_after(ca.cert_pem) - _now() < options.validity:
        ca = certs.new_ca("remora-injector-ca", days=CA_VALIDITY_DAYS)
    return Material(ca, serving_certificate(ca, options.sans, options.validity))


# -- in a directory --------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfSigned:
    """The files :func:`write_self_signed` wrote, and the CA to trust."""

    cert_file: str
    key_file: str
    ca_file: str
    ca_pem: bytes

    @property
    def ca_bundle(self) -> str:
        """The ``caBundle`` value for a MutatingWebhookConfiguration (base64 of the CA PEM)."""
        return base64.b64encode(self.ca_pem).decode()


def write_self_signed(
    directory: str | Path,
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> SelfSigned:
    """Create a CA and a serving certificate for ``hosts`` (DNS names and IPs) in ``directory``
    (``ca.crt``, ``tls.crt``, ``tls.key``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = certs.new_ca("remora-injector-ca")
    leaf = serving_certificate(ca, hosts, SELF_SIGNED_LIFETIME)
    files = {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem}
    for name, data in files.items():
        write_atomically(directory / name, data, 0o600 if name.endswith(".key") else 0o644)
    return SelfSigned(
        str(directory / "tls.crt"),
        str(directory / "tls.key"),
        str(directory / "ca.crt"),
        ca.cert_pem,
    )


# -- in a Secret -----------------------------------------------------------------------------


def _decode(secret: Any) -> Material | None:
    data = (secret.data or {}) if secret is not None else {}
    if not all(key in data for key in _KEYS):
        return None
    raw = {key: base64.b64decode(data[key]) for key in _KEYS}
    try:
        material = Material(
            certs.KeyPair(raw["ca.crt"], raw["ca.key"]),
            certs.KeyPair(raw["tls.crt"], raw["tls.key"]),
        )
        material.ca.cert, material.serving.cert, material.serving.key  # noqa: B018 - parse check
    except ValueError:
        return None
    return material


def _encode(material: Material) -> dict[str, str]:
    raw = {
        "ca.crt": material.ca.cert_pem,
        "ca.key": material.ca.key_pem,
        "tls.crt": material.serving.cert_pem,
        "tls.key": material.serving.key_pem,
    }
    return {key: base64.b64encode(value).decode() for key, value in raw.items()}


class RuntimeCertificates:
    """Keeps the Secret, the files and the caBundle in step (see the module docstring)."""

    def __init__(self, api_client: Any, options: RuntimeCertOptions) -> None:
        from kubernetes import client

        self.options = options
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self._api_exception = client.ApiException
        self._client = client

    # -- one pass ----------------------------------------------------------------------------

    def ensure(self) -> Material:
        """Make the Secret, the files and the caBundle current; return what is served."""
        material = self._ensure_secret()
        self._write_files(material)
        if self.options.webhook_configuration:
            self._patch_ca_bundle(material.ca.cert_pem)
        return material

    def _read(self) -> tuple[Any, Material | None]:
        try:
            secret = self.core.read_namespaced_secret(
                self.options.secret_name, self.options.namespace
            )
        except self._api_exception as exc:
            if exc.status == 404:
                return None, None
            raise RuntimeCertError(self._explain(exc, "read the Secret")) from None
        return secret, _decode(secret)

    def _ensure_secret(self) -> Material:
        for _ in range(5):
            secret, stored = self._read()
            reason = needs_renewal(stored, self.options)
            if reason is None:
                assert stored is not None
                return stored
            fresh = issue(stored, self.options)
            body = self._client.V1Secret(
                metadata=self._client.V1ObjectMeta(
                    name=self.options.secret_name,
                    labels={"app.kubernetes.io/component": "injector"},
                    resource_version=secret.metadata.resource_version if secret else None,
                ),
                type="Opaque",
                data=_encode(fresh),
            )
            try:
                if secret is None:
                    self.core.create_namespaced_secret(self.options.namespace, body)
                else:
                    self.core.replace_namespaced_secret(
                        self.options.secret_name, self.options.namespace, body
                    )
            except self._api_exception as exc:
                if exc.status == 409:  # another replica was faster: adopt its certificates
                    continue
                raise RuntimeCertError(self._explain(exc, "write the Secret")) from None
            log.info(
                "serving certificate issued",
                extra={"reason": reason, "secret": self.options.secret_name,
                       "not_after": certs.not_after(fresh.serving.cert_pem).isoformat()},
            )  # fmt: skip
            return fresh
        raise RuntimeCertError(f"the Secret {self.options.secret_name} keeps changing under us")

    def _write_files(self, material: Material) -> None:
        current = Path(self.options.cert_file)
        if current.exists() and current.read_bytes() == material.serving.cert_pem:
            return
        # Key first: the server reloads only a pair that loads together.
        write_atomically(self.options.key_file, material.serving.key_pem, 0o600)
        write_atomically(self.options.cert_file, material.serving.cert_pem, 0o644)

    def _patch_ca_bundle(self, ca_pem: bytes) -> None:
        name = self.options.webhook_configuration
        bundle = base64.b64encode(ca_pem).decode()
        try:
            mwc = self.admission.read_mutating_webhook_configuration(name)
        except self._api_exception as exc:
            raise RuntimeCertError(
                self._explain(exc, f"read MutatingWebhookConfiguration {name}")
            ) from None
        ops = [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            for i, hook in enumerate(mwc.webhooks or [])
            if hook.client_config.ca_bundle != bundle
        ]
        if not ops:
            return
        ops.insert(
            0,
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": mwc.metadata.resource_version,
            },
        )
        try:
            self.admission.patch_mutating_webhook_configuration(name, ops)
        except self._api_exception as exc:
            if exc.status in (409, 422):  # changed meanwhile: the next pass looks again
                log.info("webhook configuration changed while patching; retrying later")
                return
            raise RuntimeCertError(
                self._explain(exc, f"patch MutatingWebhookConfiguration {name}")
            ) from None
        log.info(
            "caBundle written", extra={"webhook_configuration": name, "webhooks": len(ops) - 1}
        )

    def _explain(self, exc: Any, what: str) -> str:
        hint = ""
        if exc.status == 403:
            hint = " (the injector's ServiceAccount lacks RBAC for it: see the chart's injector-rbac.yaml)"
        elif exc.status == 404:
            hint = " (it does not exist: install the webhook configuration first)"
        return f"cannot {what}: {exc.status} {exc.reason}{hint}"

    # -- keep going --------------------------------------------------------------------------

    def start(self, interval: float = 60.0) -> threading.Event:
        """Re-check every ``interval`` seconds in a daemon thread; set the event to stop."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.ensure()
                except Exception as exc:  # keep serving the current pair; try again later
                    log.error("runtime certificate check failed: %s", exc)

        threading.Thread(target=loop, name="runtime-certs", daemon=True).start()
        return stop
