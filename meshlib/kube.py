"""Kubernetes client setup shared by every role: a kubeconfig file, or the in-cluster account."""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ``ApiClient`` from ``kubeconfig`` (or ``$KUBECONFIG``), else the pod's service account.

    Raises ``RuntimeError`` with what to do next when neither is available.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return config.new_client_from_config(config_file=path, context=context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    default = os.path.expanduser("~/.kube/config")
    if os.path.exists(default):
        return config.new_client_from_config(config_file=default, context=context)
    raise RuntimeError(
        "no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG, or run inside a pod "
        "(try 'remora testbed up' for a local API server)"
    )
