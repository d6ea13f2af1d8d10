"""Offline validation of generated resources with ``envoy --mode validate``.

Envoy validates a bootstrap, not an xDS snapshot, so the snapshot is embedded in one:
clusters and listeners go into ``static_resources`` as they are (still referring to EDS and
RDS over ADS), every load assignment gets a static twin cluster carrying it, and every
route configuration gets a non-binding twin listener carrying it inline. Envoy then runs
its full checks (proto constraints, semantic checks, route-to-cluster references) on all
four types.

A test oracle, not a product feature: the control plane never runs Envoy, and what it serves
is checked by the golden tests and by every real Envoy that ACKs or NACKs it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from controlplane.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ProxyResources
from meshlib.envoy_binary import envoy_path


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    output: str


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def validation_bootstrap(resources: ProxyResources, xds_port: int = 15010) -> dict[str, Any]:
    clusters = [_dict(r.message) for r in resources[CLUSTER]]
    for assignment in resources[ENDPOINT]:
        clusters.append(
            {
                "name": f"validate-eds|{assignment.name}",
                "type": "STATIC",
                "connectTimeout": "1s",
                "loadAssignment": _dict(assignment.message),
            }
        )
    clusters.append(
        {
            "name": "xds-grpc",
            "type": "STATIC",
            "connectTimeout": "1s",
            "typedExtensionProtocolOptions": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicitHttpConfig": {"http2ProtocolOptions": {}},
                }
            },
            "loadAssignment": {
                "clusterName": "xds-grpc",
                "endpoints": [
                    {
                        "lbEndpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socketAddress": {
                                            "address": "127.0.0.1",
                                            "portValue": xds_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    listeners = [_dict(r.message) for r in resources[LISTENER]]
    for i, route in enumerate(resources[ROUTE]):
        listeners.append(
            {
                "name": f"validate-rds|{route.name}",
                "address": {"socketAddress": {"address": "127.0.0.1", "portValue": 20000 + i}},
                "bindToPort": False,
                "filterChains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.http_connection_manager",
                                "typedConfig": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                    "http_connection_manager.v3.HttpConnectionManager",
                                    "statPrefix": "validate",
                                    "routeConfig": _dict(route.message),
                                    "httpFilters": [
                                        {
                                            "name": "envoy.filters.http.router",
                                            "typedConfig": {
                                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                            },
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        )
    return {
        "node": {
            "id": "sidecar~10.0.0.1~validate.default~default.svc.cluster.local",
            "cluster": "validate",
        },
        "dynamicResources": {
            "adsConfig": {
                "apiType": "DELTA_GRPC",
                "transportApiVersion": "V3",
                "grpcServices": [{"envoyGrpc": {"clusterName": "xds-grpc"}}],
            },
            "cdsConfig": {"ads": {}, "resourceApiVersion": "V3"},
            "ldsConfig": {"ads": {}, "resourceApiVersion": "V3"},
        },
        "staticResources": {"clusters": clusters, "listeners": listeners},
    }


def validate_with_envoy(resources: ProxyResources, timeout: float = 60.0) -> ValidationResult:
    """Run ``envoy --mode validate`` on the resources; ``output`` holds Envoy's verdict."""
    with tempfile.TemporaryDirectory(prefix="remora-validate-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(validation_bootstrap(resources)))
        proc = subprocess.run(
            [
                str(envoy_path()),
                "--mode",
                "validate",
                "-c",
                str(path),
                "--disable-hot-restart",
                "-l",
                "error",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return ValidationResult(ok=proc.returncode == 0, output=(proc.stdout + proc.stderr).strip())
