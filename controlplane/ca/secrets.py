"""Where the CA comes from in a cluster, in istiod's order.

1. The user's own CA: the ``cacerts`` Secret in the control plane's namespace, with Istio's
   file names (``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``, ``cert-chain.pem``).
2. Else the self-signed root kept in ``istio-ca-secret`` (created on first start, so that a
   restart or a second replica keeps the same root and every issued certificate stays valid).
"""

from __future__ import annotations

import base64
import logging

from kubernetes import client

from controlplane.ca.authority import DEFAULT_TRUST_DOMAIN, CAMaterial

log = logging.getLogger(__name__)

PLUGGED_SECRET = "cacerts"
SELF_SIGNED_SECRET = "istio-ca-secret"


def _files(secret: client.V1Secret) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _read(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Secret | None:
    try:
        return core.read_namespaced_secret(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def load_or_create(
    api: client.ApiClient, namespace: str, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> tuple[CAMaterial, str]:
    """The CA material and where it came from (``namespace/secret``)."""
    core = client.CoreV1Api(api)
    for name in (PLUGGED_SECRET, SELF_SIGNED_SECRET):
        secret = _read(core, namespace, name)
        if secret is not None:
            source = f"{namespace}/{name}"
            return CAMaterial.from_files(_files(secret), source=f"Secret {source}"), source
    material = CAMaterial.self_signed(trust_domain)
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=SELF_SIGNED_SECRET, namespace=namespace),
        type="istio.io/ca-root",
        data={k: base64.b64encode(v).decode() for k, v in material.to_files().items()},
    )
    source = f"{namespace}/{SELF_SIGNED_SECRET}"
    try:
        core.create_namespaced_secret(namespace, body)
        log.info("created a self-signed mesh root", extra={"secret": source})
    except client.ApiException as exc:
        if exc.status == 403:
            raise PermissionError(
                f"cannot keep the self-signed mesh root in Secret {source}: the control plane "
                f"may not create Secrets in {namespace}. Grant it create on secrets and get on "
                f"'{SELF_SIGNED_SECRET}' there, or plug in your own CA as Secret "
                f"'{PLUGGED_SECRET}' (or --ca-dir)"
            ) from exc
        if exc.status != 409:
            raise
        # Another replica won the race: use its root, not ours.
        existing = core.read_namespaced_secret(SELF_SIGNED_SECRET, namespace)
        material = CAMaterial.from_files(_files(existing), source=f"Secret {source}")
    return material, source
