"""The two containers the injector adds: the capture init container and the proxy.

Both are what Istio's sidecar template renders, field for field and in its order, so that a
pod injected by Remora reads like one injected by Istio. The values come from the pod's
:class:`~injector.annotations.PodSettings` and the injection config; nothing here reads the
pod's annotations or does I/O.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from injector.annotations import PodSettings
from injector.config import InjectorConfig, ProxySettings
from injector.volumes import proxy_volume_mounts
from injector.workload import Workload
from meshlib.interception import TPROXY
from meshlib.meshconfig import ProxyConfig, proxy_config_overrides
from meshlib.syntax import split_list

WORKLOAD_NAME_LABEL = "service.istio.io/workload-name"


# -- the capture init container --------------------------------------------------------------


def init_container(config: InjectorConfig, settings: PodSettings) -> dict[str, Any]:
    """``istio-init``: ``remora init`` with istio-iptables' flags, as root with NET_ADMIN."""
    proxy = config.proxy
    container: dict[str, Any] = {"name": config.init.container_name, "image": settings.image}
    if proxy.image_pull_policy:
        container["imagePullPolicy"] = proxy.image_pull_policy
    if config.init.command:
        container["command"] = list(config.init.command)
    container["args"] = [*config.init.args, *_capture_flags(proxy, settings)]
    metadata_env = settings.proxy_config.proxy_metadata
    if metadata_env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(metadata_env.items())]
    container["resources"] = copy.deepcopy(settings.resources)
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": False,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "runAsUser": 0,
    }
    return container


def _capture_flags(proxy: ProxySettings, settings: PodSettings) -> list[str]:
    """istio-iptables' flags, as Istio's template writes them (``-q -o -k -c`` only when set)."""
    local_exclude = exclude_inbound_port(settings.status_port, settings.exclude_inbound_ports)
    own_ports = (str(proxy.envoy_stats_port), str(proxy.health_port), local_exclude)
    flags = [
        "-p", str(proxy.outbound_port),
        "-z", str(proxy.inbound_port),
        "-u", str(proxy.uid),
        "-m", settings.interception_mode,
        "-i", settings.include_ip_ranges,
        "-x", settings.exclude_ip_ranges,
        "-b", settings.include_inbound_ports,
        "-d", ",".join(port for port in own_ports if port),
    ]  # fmt: skip
    optional = (
        ("-q", settings.include_outbound_ports),
        ("-o", settings.exclude_outbound_ports),
        ("-k", settings.reroute_interfaces),
        ("-c", settings.exclude_interfaces),
    )
    for flag, value in optional:
        if value is not None:
            flags += [flag, value]
    flags.append(f"--log_output_level={settings.agent_log_level}")
    return flags


def exclude_inbound_port(port: int, ports: str) -> str:
    """Append ``port`` to a comma list unless it is 0 or already there (Istio's helper)."""
    if port == 0:
        return ports
    parts = split_list(ports)
    if str(port) not in parts:
        parts.append(str(port))
    return ",".join(parts)


# -- the proxy -------------------------------------------------------------------------------


def proxy_container(
    config: InjectorConfig,
    settings: PodSettings,
    pod: Mapping[str, Any],
    app_containers: list[dict[str, Any]],
    namespace: str,
    workload: Workload,
) -> dict[str, Any]:
    """``istio-proxy``: the agent and Envoy, with its env, probes, hooks and mounts."""
    proxy = config.proxy
    container: dict[str, Any] = {"name": proxy.container_name, "image": settings.image}
    if proxy.image_pull_policy:
        container["imagePullPolicy"] = proxy.image_pull_policy
    if proxy.command:
        container["command"] = list(proxy.command)
    container["args"] = [
        *proxy.args,
        "--domain",
        f"$(POD_NAMESPACE).svc.{proxy.cluster_domain}",
        f"--proxyLogLevel={settings.log_level}",
        f"--proxyComponentLogLevel={settings.component_log_level}",
        f"--log_output_level={settings.agent_log_level}",
    ]
    container["ports"] = [
        {"containerPort": proxy.envoy_stats_port, "name": "http-envoy-prom", "protocol": "TCP"}
    ]
    labels = pod["metadata"].get("labels") or {}
    workload_name = labels.get(WORKLOAD_NAME_LABEL) or workload.name
    container["env"] = [
        *_agent_env(config, settings),
        *_pod_env(app_containers),
        *_mesh_env(config, settings, workload_name, workload.owner_uri(namespace)),
    ]
    lifecycle = _lifecycle(proxy, settings)
    if lifecycle is not None:
        container["lifecycle"] = lifecycle
    if settings.status_port:  # 0: no status server, so nothing to probe
        container.update(_health_probes(proxy, settings))
    container["resources"] = copy.deepcopy(settings.resources)
    container["securityContext"] = _security_context(proxy, settings)
    container["volumeMounts"] = proxy_volume_mounts() + [
        {**mount, "name": mount.get("name", name)}
        for name, mount in sorted(settings.user_volume_mounts.items())
    ]
    return container


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _agent_env(config: InjectorConfig, settings: PodSettings) -> list[dict[str, Any]]:
    """What the agent needs to reach the CA and describe its pod."""
    env: list[dict[str, Any]] = []
    if config.mesh.inbound_traffic_policy == "LOCALHOST":
        env.append({"name": "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "value": "true"})
    return [
        *env,
        {"name": "PILOT_CERT_PROVIDER", "value": config.pilot_cert_provider},
        {"name": "CA_ADDR", "value": config.effective_ca_address},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field_env("HOST_IP", "status.hostIP"),
        {
            "name": "ISTIO_CPU_LIMIT",
            "valueFrom": {"resourceFieldRef": {"divisor": "1", "resource": "limits.cpu"}},
        },
        {"name": "PROXY_CONFIG", "value": proxy_config_json(settings.proxy_config)},
    ]


def _pod_env(app_containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The application's containers and ports, for the agent's node metadata."""
    pod_ports = [port for c in app_containers for port in c.get("ports") or ()]
    return [
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(pod_ports, separators=(",", ":"))},
        {
            "name": "ISTIO_META_APP_CONTAINERS",
            "value": ",".join(str(c.get("name")) for c in app_containers),
        },
    ]


def _mesh_env(
    config: InjectorConfig, settings: PodSettings, workload_name: str, owner: str
) -> list[dict[str, Any]]:
    """Where the pod stands in the mesh, then the ProxyConfig's ``proxyMetadata``."""
    return [
        {"name": "ISTIO_META_CLUSTER_ID", "value": config.cluster_id},
        _field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": settings.interception_mode},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload_name},
        {"name": "ISTIO_META_OWNER", "value": owner},
        {"name": "ISTIO_META_MESH_ID", "value": config.effective_mesh_id},
        {"name": "TRUST_DOMAIN", "value": config.mesh.trust_domain},
        *({"name": k, "value": v} for k, v in sorted(settings.proxy_config.proxy_metadata.items())),
    ]


def _lifecycle(proxy: ProxySettings, settings: PodSettings) -> dict[str, Any] | None:
    """Hold the app until the proxy is ready (a regular sidecar), or drain before a native
    sidecar stops (the kubelet stops it after the app, so it can drain first)."""
    if settings.hold_application and not settings.native_sidecar:
        return {"postStart": {"exec": {"command": [*proxy.control_command, "wait"]}}}
    if settings.native_sidecar:
        drain = [
            *proxy.control_command,
            "request",
            f"--debug-port={settings.status_port}",
            "POST",
            "drain",
        ]
        return {"preStop": {"exec": {"command": drain}}}
    return None


def _health_probes(proxy: ProxySettings, settings: PodSettings) -> dict[str, Any]:
    """The proxy's readiness probe and, if configured, its startup probe on the health port."""
    health = {"path": "/healthz/ready", "port": proxy.health_port}
    probes: dict[str, Any] = {
        "readinessProbe": {
            "httpGet": dict(health),
            "initialDelaySeconds": settings.readiness_initial_delay,
            "periodSeconds": settings.readiness_period,
            "timeoutSeconds": 3,
            "failureThreshold": settings.readiness_failure_threshold,
        }
    }
    if proxy.startup_probe:
        probes["startupProbe"] = {
            "httpGet": dict(health),
            "initialDelaySeconds": 0,
            "periodSeconds": 1,
            "timeoutSeconds": 3,
            "failureThreshold": proxy.startup_failure_threshold,
        }
    return probes


def _security_context(proxy: ProxySettings, settings: PodSettings) -> dict[str, Any]:
    """Unprivileged as the proxy uid; root only where a capability needs it (TPROXY's
    transparent sockets, binding ports below 1024)."""
    tproxy = settings.interception_mode == TPROXY
    add = (["NET_ADMIN"] if tproxy else []) + (
        ["NET_BIND_SERVICE"] if settings.cap_net_bind_service else []
    )
    as_root = tproxy or settings.cap_net_bind_service
    capabilities: dict[str, Any] = {"add": add, "drop": ["ALL"]} if add else {"drop": ["ALL"]}
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": capabilities,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": proxy.gid,
        "runAsNonRoot": not as_root,
        "runAsUser": 0 if as_root else proxy.uid,
    }


def proxy_config_json(proxy_config: ProxyConfig) -> str:
    """``PROXY_CONFIG``: the fields that differ from the defaults, camelCase, as compact JSON."""
    return json.dumps(proxy_config_overrides(proxy_config), sort_keys=True, separators=(",", ":"))
