"""Realistic AdmissionReviews for the injector benchmarks: pods as the API server sends them.

The pod is what the ReplicaSet controller creates for a typical Deployment after the API
server's defaulting: owner reference, labels, two containers with probes, env, resources, the
projected service-account token volume, and managedFields.
"""

from __future__ import annotations

import json
from typing import Any


def token_volume_name(n: int) -> str:
    """A name like the ServiceAccount admission plugin generates: ``kube-api-access-<5 chars>``."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    suffix = "".join(alphabet[(n // len(alphabet) ** i) % len(alphabet)] for i in range(5))
    return f"kube-api-access-{suffix}"


def realistic_pod(index: int | None = None, token: int = 0) -> dict[str, Any]:
    """The pod as mutating admission sees it: no name, uid or creation time yet (the API server
    assigns them after admission), so every pod of one ReplicaSet is the same. ``index`` makes
    a distinct pod (an extra label), as from many different workloads; ``token`` picks the
    generated name of the service-account token volume, which differs between any two pods."""
    sa_volume = token_volume_name(token)
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _metadata(index),
        "spec": {
            "volumes": [{"name": "tmp", "emptyDir": {}}, _token_volume(sa_volume)],
            "containers": [_app_container(sa_volume), _log_forwarder()],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "bookinfo-reviews",
            "serviceAccount": "bookinfo-reviews",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }


def _metadata(index: int | None) -> dict[str, Any]:
    """What the ReplicaSet controller writes, with the field manager's managedFields."""
    return {
        "generateName": "reviews-v1-5d8f7c9b6-",
        "namespace": "bookinfo",
        "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "5d8f7c9b6"}
        | ({"bench-index": str(index)} if index is not None else {}),
        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9080"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "reviews-v1-5d8f7c9b6",
                "uid": "5f0c1a9e-1111-4111-8111-111111111111",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-11-24T22:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {'k:{"name":"reviews"}': {".": {}}}},
                },
            }
        ],
    }


def _token_volume(name: str) -> dict[str, Any]:
    """The projected service-account token volume the ServiceAccount admission plugin adds."""
    namespace_item = {
        "path": "namespace",
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
    }
    return {
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {"downwardAPI": {"items": [namespace_item]}},
            ],
            "defaultMode": 420,
        },
    }


def _app_container(sa_volume: str) -> dict[str, Any]:
    """The application: ports, env, resources, readiness and liveness probes, two mounts."""
    probe = {
        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    return {
        "name": "reviews",
        "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 9080, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_DIR", "value": "/tmp/logs"},
            {
                "name": "POD_NAME",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
            },
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/live", "port": 9080, "scheme": "HTTP"}},
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {
                "name": sa_volume,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _log_forwarder() -> dict[str, Any]:
    """A second container, as many pods have: a log forwarder with a TCP readiness probe."""
    return {
        "name": "log-forwarder",
        "image": "fluent/fluent-bit:3.0",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "metrics", "containerPort": 2020, "protocol": "TCP"}],
        "readinessProbe": {
            "tcpSocket": {"port": 2020},
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def admission_review_body(index: int | None = None, uid: int = 0) -> bytes:
    pod = realistic_pod(index, token=uid)
    return json.dumps(
        {
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": f"7c4f1c2a-0000-4000-8000-{uid:012d}",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "bookinfo",
                "operation": "CREATE",
                "userInfo": {
                    "username": "system:serviceaccount:kube-system:replicaset-controller",
                    "uid": "1a2b",
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                },
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
    ).encode()
