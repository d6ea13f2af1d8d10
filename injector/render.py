"""``inject(pod, config) -> pod``: what Istio's sidecar template produces, as plain Python.

The steps follow Istio's pipeline so that the result matches it where a user can see it:

1. read the annotations (:mod:`injector.annotations`; a bad value raises ``AnnotationError``);
2. strip a previous injection, found through ``sidecar.istio.io/status``, and undo its probe
   rewrites and metrics merge, so that re-injection with a newer config replaces rather than
   duplicates (and injecting twice equals injecting once);
3. build the capture init container, the proxy container and the volumes;
4. place them as Istio orders them: native sidecar → ``[init, proxy, *user init containers]``;
   otherwise the init container after the user's, the proxy last in ``containers`` (first when
   the application is held until the proxy starts);
5. merge Prometheus scraping onto the agent, rewrite probes, then labels and annotations.

Nothing here does I/O; :func:`inject` deep-copies its input.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from injector import annotations as A
from injector.annotations import PodSettings, exclude_inbound_port, pod_settings
from injector.config import InjectorConfig
from injector.errors import PodError
from injector.probes import PROBERS_ENV, probers_env_value, restore_probes, rewrite_probes
from meshlib.interception import NONE, TPROXY
from meshlib.meshconfig import ProxyConfig, proxy_config_overrides
from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION, TLS_MODE_ISTIO, TLS_MODE_LABEL

PROMETHEUS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
PROMETHEUS_PATH = "/stats/prometheus"


@dataclass(frozen=True)
class Workload:
    """The object that owns the pod, as Istio's ``DeploymentMeta``: names the workload in telemetry."""

    kind: str
    api_version: str
    name: str


# -- entry points ----------------------------------------------------------------------------


def inject(
    pod: Mapping[str, Any],
    config: InjectorConfig,
    *,
    namespace: str | None = None,
    workload: Workload | None = None,
) -> dict[str, Any]:
    """Return a copy of ``pod`` (a Pod or a pod template) with the sidecar injected."""
    result = copy.deepcopy(dict(pod))
    inject_in_place(result, config, namespace=namespace, workload=workload)
    return result


def inject_in_place(
    pod: dict[str, Any],
    config: InjectorConfig,
    *,
    namespace: str | None = None,
    workload: Workload | None = None,
) -> None:
    """Like :func:`inject`, mutating ``pod``; for callers that already own a private copy."""
    metadata, spec = _check_shape(pod)
    annotations: dict[str, str] = metadata.setdefault("annotations", {})
    labels: dict[str, str] = metadata.setdefault("labels", {})
    settings = pod_settings(annotations, config)
    namespace = namespace or metadata.get("namespace") or "default"
    workload = workload or workload_of(pod)

    overrides = _strip_previous_injection(pod, config, settings)

    app_containers = [c for c in spec["containers"] if c.get("name") != config.proxy.container_name]
    init = None
    if settings.interception_mode != NONE:
        init = _init_container(config, settings)
    proxy = _proxy_container(config, settings, pod, app_containers, namespace, workload)
    for container in (init, proxy):
        if container is not None and container["name"] in overrides:
            _merge_user_override(container, overrides[container["name"]])
    if config.proxy.container_name in overrides:
        _adjust_init_container_user(init, proxy, overrides[config.proxy.container_name], settings)
    if overrides:
        annotations[A.OVERRIDES] = json.dumps(
            {"containers": [overrides[name] for name in sorted(overrides)]},
            separators=(",", ":"),
        )

    added_volumes = _add_volumes(spec, _volumes(config, settings))
    added_secrets = _add_pull_secrets(spec, config.proxy.image_pull_secrets)

    user_inits = spec.get("initContainers") or []
    if settings.native_sidecar:
        proxy = {"name": proxy.pop("name"), "restartPolicy": "Always", **proxy}
        spec["initContainers"] = [c for c in (init, proxy) if c is not None] + user_inits
        injected_inits = [c["name"] for c in (init, proxy) if c is not None]
        injected_containers: list[str] = []
    else:
        if init is not None:
            spec["initContainers"] = [*user_inits, init]
        if settings.hold_application:
            spec["containers"] = [proxy, *spec["containers"]]
        else:
            spec["containers"].append(proxy)
        injected_inits = [init["name"]] if init is not None else []
        injected_containers = [proxy["name"]]

    _merge_prometheus(annotations, settings, proxy)
    if settings.rewrite_probes and settings.status_port:  # port 0: no agent to probe through
        # The user's own sidecar init containers (restartPolicy: Always) are probed through the
        # agent only when the proxy starts before them, as a native sidecar. Otherwise the
        # proxy starts after every init container, and a startupProbe sent to it never passes.
        inits = spec.get("initContainers", ()) if settings.native_sidecar else ()
        others = [c for c in (*inits, *spec["containers"]) if c is not proxy]
        probers = rewrite_probes(
            [c for c in others if c is not init],
            status_port=settings.status_port,
            include_inbound_ports=settings.include_inbound_ports,
            exclude_inbound_ports=settings.exclude_inbound_ports,
        )
        if probers:
            proxy["env"].append({"name": PROBERS_ENV, "value": probers_env_value(probers)})

    _set_labels(labels, workload, config)
    annotations[A.REVISION] = config.revision_name
    if app_containers:
        first = str(app_containers[0].get("name"))
        annotations.setdefault(A.DEFAULT_LOGS_CONTAINER, first)
        annotations.setdefault(A.DEFAULT_CONTAINER, first)
    annotations[SIDECAR_STATUS_ANNOTATION] = injection_status(
        injected_inits, injected_containers, added_volumes, added_secrets, config.revision_name
    )
    annotations.update(config.injected_annotations)
    # Maps have no order in Kubernetes (the API server returns them sorted); sorting here makes
    # the output independent of how often and in which order keys were touched.
    metadata["labels"] = dict(sorted(labels.items()))
    metadata["annotations"] = dict(sorted(annotations.items()))


def injection_status(
    init_containers: list[str],
    containers: list[str],
    volumes: list[str],
    pull_secrets: list[str],
    revision: str,
) -> str:
    """The ``sidecar.istio.io/status`` value, byte-for-byte as Istio's Go encoder writes it."""
    status = {
        "initContainers": init_containers or None,
        "containers": containers or None,
        "volumes": volumes or None,
        "imagePullSecrets": pull_secrets or None,
        "revision": revision,
    }
    return json.dumps(status, separators=(",", ":"))


# -- shape checks and workload naming --------------------------------------------------------


def _check_shape(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    metadata = pod.setdefault("metadata", {})
    if metadata is None:
        metadata = pod["metadata"] = {}
    if not isinstance(metadata, dict):
        raise PodError("metadata must be a mapping")
    for key in ("labels", "annotations"):
        value = metadata.get(key)
        if value is None:
            metadata.pop(key, None)
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise PodError(
                f"metadata.{key} must map strings to strings (quote numbers and booleans)"
            )
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise PodError("spec must be a mapping")
    for key in ("containers", "initContainers", "volumes", "imagePullSecrets"):
        value = spec.get(key)
        if value is None:
            if key == "containers":
                raise PodError("spec.containers is missing")
            spec.pop(key, None)
            continue
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise PodError(f"spec.{key} must be a list of mappings")
    for key in ("containers", "initContainers"):
        for item in spec.get(key, ()):
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise PodError(f"every entry of spec.{key} needs a name")
    return metadata, spec


_CRONJOB_JOB = re.compile(r"^(.+)-\d{8,}$")


def workload_of(pod: Mapping[str, Any]) -> Workload:
    """The workload that owns a pod, from its controller reference (Istio's heuristics)."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    for ref in metadata.get("ownerReferences") or ():
        if not isinstance(ref, dict) or not ref.get("controller"):
            continue
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        api_version = str(ref.get("apiVersion", "v1"))
        template_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
            return Workload("Deployment", "apps/v1", name[: -len(template_hash) - 1])
        if kind == "Job" and (match := _CRONJOB_JOB.match(name)):
            return Workload("CronJob", "batch/v1", match.group(1))
        return Workload(kind, api_version, name)
    name = metadata.get("name") or str(metadata.get("generateName") or "").rstrip("-")
    return Workload("Pod", "v1", name)


def _set_labels(labels: dict[str, str], workload: Workload, config: InjectorConfig) -> None:
    labels.setdefault(TLS_MODE_LABEL, TLS_MODE_ISTIO)
    name = (
        labels.get(A.CANONICAL_NAME_LABEL)
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload.name
    )
    labels[A.CANONICAL_NAME_LABEL] = name[:63].rstrip("-._")
    labels[A.CANONICAL_REVISION_LABEL] = (
        labels.get(A.CANONICAL_REVISION_LABEL)
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )


# -- stripping a previous injection ----------------------------------------------------------


def _strip_previous_injection(
    pod: dict[str, Any], config: InjectorConfig, settings: PodSettings
) -> dict[str, dict[str, Any]]:
    """Remove what an earlier injection added; return user overrides of injected containers.

    A pod that was never injected but defines a container with the proxy's (or the init
    container's) name is asking to override fields of the injected one, as in Istio; such
    containers are taken out and returned by name, and recorded in ``proxy.istio.io/overrides``
    so that a later re-injection applies them again.
    """
    metadata, spec = pod["metadata"], pod["spec"]
    annotations: dict[str, str] = metadata["annotations"]
    injected_names = {config.proxy.container_name, config.init.container_name}
    overrides: dict[str, dict[str, Any]] = {}

    if A.OVERRIDES in annotations:
        try:
            recorded = json.loads(annotations.pop(A.OVERRIDES))
            for container in (recorded or {}).get("containers") or ():
                if isinstance(container, dict) and container.get("name") in injected_names:
                    overrides[container["name"]] = container
        except (ValueError, AttributeError):
            pass

    raw_status = annotations.pop(SIDECAR_STATUS_ANNOTATION, None)
    if raw_status is None:
        for key in ("containers", "initContainers"):
            kept = []
            for container in spec.get(key, ()):
                if container.get("name") in injected_names:
                    overrides.setdefault(container["name"], container)
                else:
                    kept.append(container)
            if key in spec:
                spec[key] = kept
        return overrides

    status = _parse_status(raw_status, config)
    removed_names = set(status["containers"]) | set(status["initContainers"])
    removed: list[dict[str, Any]] = []
    for key in ("containers", "initContainers"):
        if key not in spec:
            continue
        kept = [c for c in spec[key] if c.get("name") not in removed_names]
        removed += [c for c in spec[key] if c.get("name") in removed_names]
        if key == "initContainers" and not kept and spec[key]:
            del spec[key]  # only our init containers were there
        else:
            spec[key] = kept
    # The old proxy carries what its injection changed in the app's containers and annotations.
    old_proxy = next(
        (
            c
            for c in removed
            if _env(c, PROBERS_ENV) is not None or _env(c, PROMETHEUS_ENV) is not None
        ),
        next((c for c in removed if c.get("name") == config.proxy.container_name), None),
    )

    removed_volumes = set(status["volumes"])
    if "volumes" in spec:
        spec["volumes"] = [v for v in spec["volumes"] if v.get("name") not in removed_volumes]
    removed_secrets = set(status["imagePullSecrets"])
    if "imagePullSecrets" in spec:
        spec["imagePullSecrets"] = [
            s for s in spec["imagePullSecrets"] if s.get("name") not in removed_secrets
        ]

    probers = _env(old_proxy, PROBERS_ENV) if old_proxy is not None else None
    if probers is not None:
        restore_probes([*spec.get("initContainers", ()), *spec["containers"]], probers)
    _unmerge_prometheus(
        annotations, _env(old_proxy, PROMETHEUS_ENV) if old_proxy is not None else None, settings
    )
    return overrides


def _parse_status(raw: str, config: InjectorConfig) -> dict[str, list[str]]:
    """The names an earlier injection added; our own names when the status is unreadable."""
    fallback = {
        "containers": [config.proxy.container_name],
        "initContainers": [config.init.container_name, config.proxy.container_name],
        "volumes": [v["name"] for v in _volumes(config, None)],
        "imagePullSecrets": list(config.proxy.image_pull_secrets),
    }
    try:
        parsed = json.loads(raw)
    except ValueError:
        return fallback
    if not isinstance(parsed, dict):
        return fallback
    result: dict[str, list[str]] = {}
    for key, default in fallback.items():
        value = parsed.get(key, default)
        if value is None:
            value = []
        if not isinstance(value, list):
            value = default
        result[key] = [str(v) for v in value]
    return result


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for entry in container.get("env") or ():
        if isinstance(entry, dict) and entry.get("name") == name and "value" in entry:
            return str(entry["value"])
    return None


def _merge_user_override(container: dict[str, Any], override: Mapping[str, Any]) -> None:
    """Apply the user's own settings for an injected container on top of ours (the user wins)."""
    for key, value in override.items():
        if key == "name" or (key == "image" and value == "auto"):
            continue
        if key in {"env", "volumeMounts", "ports"} and isinstance(value, list):
            ident = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}[key]
            merged = {
                item.get(ident): item for item in container.get(key, ()) if isinstance(item, dict)
            }
            for item in value:
                if isinstance(item, dict):
                    merged[item.get(ident)] = copy.deepcopy(item)
            container[key] = list(merged.values())
        elif isinstance(value, dict) and isinstance(container.get(key), dict):
            _merge_user_override(container[key], value)
        else:
            container[key] = copy.deepcopy(value)


def _adjust_init_container_user(
    init: dict[str, Any] | None,
    proxy: dict[str, Any],
    override: Mapping[str, Any],
    settings: PodSettings,
) -> None:
    """Keep Envoy's own traffic exempt from capture when the user runs it as another uid.

    Istio's ``adjustInitContainerUser``: a non-zero ``runAsUser`` in the user's ``istio-proxy``
    override replaces istio-init's ``-u``, whose owner rules are what let Envoy's traffic out
    uncaptured (``-g`` defaults to the same ids). uid 0 is left alone: ``-u 0`` would exempt
    every root process in the pod. ``runAsGroup`` is deliberately not passed as ``-g``: an app
    sharing that group would then bypass the sidecar. In TPROXY mode Envoy must run as root
    (its transparent sockets need it), so the proxy's uid is put back to 0 and ``-u`` keeps the
    default, whose group matches the proxy's ``runAsGroup``.
    """
    wanted = override.get("securityContext")
    if not isinstance(wanted, Mapping) or "runAsUser" not in wanted:
        return
    if settings.interception_mode == TPROXY:
        proxy["securityContext"]["runAsUser"] = 0
        return
    uid = wanted["runAsUser"]
    if init is None or isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        return  # 0 (see above) or a value the API server will refuse with a clear message
    args = init.get("args")
    if isinstance(args, list) and "-u" in args[:-1]:
        args[args.index("-u") + 1] = str(uid)


# -- the containers --------------------------------------------------------------------------


def _init_container(config: InjectorConfig, settings: PodSettings) -> dict[str, Any]:
    proxy = config.proxy
    local_exclude = exclude_inbound_port(settings.status_port, settings.exclude_inbound_ports)
    args = [
        *config.init.args,
        "-p", str(proxy.outbound_port),
        "-z", str(proxy.inbound_port),
        "-u", str(proxy.uid),
        "-m", settings.interception_mode,
        "-i", settings.include_ip_ranges,
        "-x", settings.exclude_ip_ranges,
        "-b", settings.include_inbound_ports,
        "-d", ",".join(p for p in (str(proxy.envoy_stats_port), str(proxy.health_port), local_exclude) if p),
    ]  # fmt: skip
    if settings.include_outbound_ports is not None:
        args += ["-q", settings.include_outbound_ports]
    if settings.exclude_outbound_ports is not None:
        args += ["-o", settings.exclude_outbound_ports]
    if settings.reroute_interfaces is not None:
        args += ["-k", settings.reroute_interfaces]
    if settings.exclude_interfaces is not None:
        args += ["-c", settings.exclude_interfaces]
    args.append(f"--log_output_level={settings.agent_log_level}")

    container: dict[str, Any] = {"name": config.init.container_name, "image": settings.image}
    if proxy.image_pull_policy:
        container["imagePullPolicy"] = proxy.image_pull_policy
    if config.init.command:
        container["command"] = list(config.init.command)
    container["args"] = args
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


def _proxy_container(  # noqa: PLR0917 - one call site, names in the signature
    config: InjectorConfig,
    settings: PodSettings,
    pod: Mapping[str, Any],
    app_containers: list[dict[str, Any]],
    namespace: str,
    workload: Workload,
) -> dict[str, Any]:
    proxy = config.proxy
    labels = pod["metadata"].get("labels") or {}
    status_port = settings.status_port
    tproxy = settings.interception_mode == TPROXY

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

    def field_env(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    pod_ports = [p for c in app_containers for p in c.get("ports") or ()]
    env: list[dict[str, Any]] = []
    if config.mesh.inbound_traffic_policy == "LOCALHOST":
        env.append({"name": "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION", "value": "true"})
    env += [
        {"name": "PILOT_CERT_PROVIDER", "value": config.pilot_cert_provider},
        {"name": "CA_ADDR", "value": config.effective_ca_address},
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field_env("HOST_IP", "status.hostIP"),
        {
            "name": "ISTIO_CPU_LIMIT",
            "valueFrom": {"resourceFieldRef": {"divisor": "1", "resource": "limits.cpu"}},
        },
        {"name": "PROXY_CONFIG", "value": proxy_config_json(settings.proxy_config)},
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(pod_ports, separators=(",", ":"))},
        {
            "name": "ISTIO_META_APP_CONTAINERS",
            "value": ",".join(str(c.get("name")) for c in app_containers),
        },
        {"name": "ISTIO_META_CLUSTER_ID", "value": config.cluster_id},
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": settings.interception_mode},
        {
            "name": "ISTIO_META_WORKLOAD_NAME",
            "value": labels.get("service.istio.io/workload-name") or workload.name,
        },
        {
            "name": "ISTIO_META_OWNER",
            "value": f"kubernetes://apis/{workload.api_version}/namespaces/{namespace}/"
            f"{workload.kind.lower()}s/{workload.name}",
        },
        {"name": "ISTIO_META_MESH_ID", "value": config.effective_mesh_id},
        {"name": "TRUST_DOMAIN", "value": config.mesh.trust_domain},
    ]
    env += [
        {"name": k, "value": v} for k, v in sorted(settings.proxy_config.proxy_metadata.items())
    ]
    container["env"] = env

    if settings.hold_application and not settings.native_sidecar:
        container["lifecycle"] = {
            "postStart": {"exec": {"command": [*proxy.control_command, "wait"]}}
        }
    elif settings.native_sidecar:
        drain = [*proxy.control_command, "request", f"--debug-port={status_port}", "POST", "drain"]
        container["lifecycle"] = {"preStop": {"exec": {"command": drain}}}

    if status_port:
        health = {"path": "/healthz/ready", "port": proxy.health_port}
        container["readinessProbe"] = {
            "httpGet": dict(health),
            "initialDelaySeconds": settings.readiness_initial_delay,
            "periodSeconds": settings.readiness_period,
            "timeoutSeconds": 3,
            "failureThreshold": settings.readiness_failure_threshold,
        }
        if proxy.startup_probe:
            container["startupProbe"] = {
                "httpGet": dict(health),
                "initialDelaySeconds": 0,
                "periodSeconds": 1,
                "timeoutSeconds": 3,
                "failureThreshold": proxy.startup_failure_threshold,
            }
    container["resources"] = copy.deepcopy(settings.resources)

    add = (["NET_ADMIN"] if tproxy else []) + (
        ["NET_BIND_SERVICE"] if settings.cap_net_bind_service else []
    )
    as_root = tproxy or settings.cap_net_bind_service
    capabilities: dict[str, Any] = {"add": add, "drop": ["ALL"]} if add else {"drop": ["ALL"]}
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": capabilities,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": proxy.gid,
        "runAsNonRoot": not as_root,
        "runAsUser": 0 if as_root else proxy.uid,
    }
    container["volumeMounts"] = [
        {"mountPath": "/var/run/secrets/workload-spiffe-uds", "name": "workload-socket"},
        {"mountPath": "/var/run/secrets/credential-uds", "name": "credential-socket"},
        {"mountPath": "/var/run/secrets/workload-spiffe-credentials", "name": "workload-certs"},
        {"mountPath": "/var/run/secrets/istio", "name": "istiod-ca-cert"},
        {"mountPath": "/var/lib/istio/data", "name": "istio-data"},
        {"mountPath": "/etc/istio/proxy", "name": "istio-envoy"},
        {"mountPath": "/var/run/secrets/tokens", "name": "istio-token"},
        {"mountPath": "/etc/istio/pod", "name": "istio-podinfo"},
    ]
    for name, mount in sorted(settings.user_volume_mounts.items()):
        container["volumeMounts"].append({**mount, "name": mount.get("name", name)})
    return container


def proxy_config_json(proxy_config: ProxyConfig) -> str:
    """``PROXY_CONFIG``: the fields that differ from the defaults, camelCase, as compact JSON."""
    return json.dumps(proxy_config_overrides(proxy_config), sort_keys=True, separators=(",", ":"))


# -- volumes and pull secrets ----------------------------------------------------------------


def _volumes(config: InjectorConfig, settings: PodSettings | None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "credential-socket", "emptyDir": {}},
        {"name": "workload-certs", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {
            "name": "istio-podinfo",
            "downwardAPI": {
                "items": [
                    {"fieldRef": {"fieldPath": "metadata.labels"}, "path": "labels"},
                    {"fieldRef": {"fieldPath": "metadata.annotations"}, "path": "annotations"},
                ]
            },
        },
        {
            "name": "istio-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": config.token_audience,
                            "expirationSeconds": 43200,
                            "path": "istio-token",
                        }
                    }
                ]
            },
        },
        {"name": "istiod-ca-cert", "configMap": {"name": config.root_cert_config_map}},
    ]
    if settings is not None:
        for name, volume in sorted(settings.user_volumes.items()):
            volumes.append({**volume, "name": volume.get("name", name)})
    return volumes


def _add_volumes(spec: dict[str, Any], volumes: list[dict[str, Any]]) -> list[str]:
    """Prepend our volumes (Istio's merge order); a user volume of the same name wins."""
    existing = {v.get("name") for v in spec.get("volumes", ())}
    ours = [v for v in volumes if v["name"] not in existing]
    spec["volumes"] = ours + list(spec.get("volumes", ()))
    return [v["name"] for v in ours]


def _add_pull_secrets(spec: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    if not names:
        return []
    existing = {s.get("name") for s in spec.get("imagePullSecrets", ())}
    ours = [{"name": n} for n in names if n not in existing]
    spec["imagePullSecrets"] = ours + list(spec.get("imagePullSecrets", ()))
    return [s["name"] for s in ours]


# -- Prometheus merge ------------------------------------------------------------------------


def _prometheus_key(key: str) -> str | None:
    """``scrape``/``path``/``port`` for any spelling that sanitises to ``prometheus_io_<x>``."""
    sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    for part in ("scrape", "path", "port"):
        if sanitized == f"prometheus_io_{part}":
            return part
    return None


def _merge_prometheus(
    annotations: dict[str, str], settings: PodSettings, proxy: dict[str, Any]
) -> None:
    """Point Prometheus at the agent, which serves Envoy's and the app's metrics merged."""
    if not settings.merge_metrics or not settings.status_port:
        return
    found = {part: key for key in annotations if (part := _prometheus_key(key))}
    if "scrape" in found and annotations[found["scrape"]].strip().lower() in {"false", "0", "f"}:
        return
    if annotations.get(found.get("port", "")) == str(settings.status_port):
        return
    original = {
        part: annotations[found[part]] for part in ("scrape", "path", "port") if part in found
    }
    if original:
        proxy["env"].append(
            {"name": PROMETHEUS_ENV, "value": json.dumps(original, separators=(",", ":"))}
        )
    for key in found.values():
        del annotations[key]
    annotations["prometheus.io/port"] = str(settings.status_port)
    annotations["prometheus.io/path"] = PROMETHEUS_PATH
    annotations["prometheus.io/scrape"] = "true"


def _unmerge_prometheus(
    annotations: dict[str, str], original: str | None, settings: PodSettings
) -> None:
    """Undo :func:`_merge_prometheus` before re-injection, restoring the app's own annotations."""
    found = {part: key for key in annotations if (part := _prometheus_key(key))}
    if annotations.get(found.get("path", "")) != PROMETHEUS_PATH:
        return
    if original is None and annotations.get(found.get("port", "")) != str(settings.status_port):
        return
    for key in found.values():
        del annotations[key]
    try:
        restored = json.loads(original) if original else {}
    except ValueError:
        restored = {}
    if isinstance(restored, dict):
        for part in ("scrape", "path", "port"):
            if isinstance(restored.get(part), str):
                annotations[f"prometheus.io/{part}"] = restored[part]
