"""``inject(pod, config) -> pod``: what Istio's sidecar template produces, as plain Python.

The steps follow Istio's pipeline so that the result matches it where a user can see it:

1. read the annotations (:mod:`injector.annotations`; a bad value raises ``AnnotationError``);
2. take out a previous injection (:mod:`injector.uninject`), so that re-injection with a newer
   config replaces rather than duplicates (and injecting twice equals injecting once);
3. build the capture init container and the proxy (:mod:`injector.containers`), lay the user's
   overrides over them (:mod:`injector.overrides`), add the volumes (:mod:`injector.volumes`);
4. place them as Istio orders them: native sidecar → ``[init, proxy, *user init containers]``;
   otherwise the init container after the user's, the proxy last in ``containers`` (first when
   the application is held until the proxy starts);
5. merge Prometheus scraping onto the agent (:mod:`injector.prometheus`), rewrite probes
   (:mod:`injector.probes`), then labels and annotations, ``sidecar.istio.io/status`` last
   (:mod:`injector.status`).

Nothing here does I/O; :func:`inject` deep-copies its input.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from injector import annotations as A
from injector import overrides, prometheus
from injector.annotations import PodSettings, pod_settings
from injector.config import InjectorConfig
from injector.containers import init_container, proxy_container
from injector.errors import PodError
from injector.probes import PROBERS_ENV, probers_env_value, rewrite_probes
from injector.status import InjectionStatus
from injector.uninject import uninject
from injector.volumes import pod_volumes
from injector.workload import Workload, workload_of
from meshlib.interception import NONE
from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION, TLS_MODE_ISTIO, TLS_MODE_LABEL

__all__ = ["inject", "inject_in_place"]


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

    user_overrides = uninject(pod, config, settings)

    app_containers = [c for c in spec["containers"] if c.get("name") != config.proxy.container_name]
    init = init_container(config, settings) if settings.interception_mode != NONE else None
    proxy = proxy_container(config, settings, pod, app_containers, namespace, workload)
    _apply_overrides(init, proxy, user_overrides, config, settings)
    overrides.record(annotations, user_overrides)

    added_volumes = _add_volumes(spec, pod_volumes(config) + _user_volumes(settings))
    added_secrets = _add_pull_secrets(spec, config.proxy.image_pull_secrets)
    proxy, placed = _place(spec, init, proxy, settings)

    if settings.merge_metrics and settings.status_port:  # port 0: no agent to scrape
        prometheus.merge(annotations, settings.status_port, proxy["env"])
    if settings.rewrite_probes and settings.status_port:  # port 0: no agent to probe through
        _rewrite_probes(spec, init, proxy, settings)

    _set_labels(labels, workload)
    annotations[A.REVISION] = config.revision_name
    if app_containers:
        first = str(app_containers[0].get("name"))
        annotations.setdefault(A.DEFAULT_LOGS_CONTAINER, first)
        annotations.setdefault(A.DEFAULT_CONTAINER, first)
    status = replace(placed, volumes=added_volumes, image_pull_secrets=added_secrets)
    annotations[SIDECAR_STATUS_ANNOTATION] = status.encode(config.revision_name)
    annotations.update(config.injected_annotations)
    # Maps have no order in Kubernetes (the API server returns them sorted); sorting here makes
    # the output independent of how often and in which order keys were touched.
    metadata["labels"] = dict(sorted(labels.items()))
    metadata["annotations"] = dict(sorted(annotations.items()))


# -- shape checks ----------------------------------------------------------------------------


def _check_shape(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod's metadata and spec, after checking every field injection reads or writes."""
    metadata = pod.setdefault("metadata", {})
    if metadata is None:
        metadata = pod["metadata"] = {}
    if not isinstance(metadata, dict):
        raise PodError("metadata must be a mapping")
    for key in ("labels", "annotations"):
        _check_string_map(metadata, key)
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise PodError("spec must be a mapping")
    if spec.get("containers") is None:
        raise PodError("spec.containers is missing")
    for key in ("containers", "initContainers", "volumes", "imagePullSecrets"):
        _check_list_of_mappings(spec, key)
    for key in ("containers", "initContainers"):
        for item in spec.get(key, ()):
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise PodError(f"every entry of spec.{key} needs a name")
    return metadata, spec


def _check_string_map(metadata: dict[str, Any], key: str) -> None:
    value = metadata.get(key)
    if value is None:
        metadata.pop(key, None)
        return
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PodError(f"metadata.{key} must map strings to strings (quote numbers and booleans)")


def _check_list_of_mappings(spec: dict[str, Any], key: str) -> None:
    value = spec.get(key)
    if value is None:
        spec.pop(key, None)
        return
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise PodError(f"spec.{key} must be a list of mappings")


# -- assembling the pod ----------------------------------------------------------------------


def _apply_overrides(
    init: dict[str, Any] | None,
    proxy: dict[str, Any],
    user_overrides: overrides.Overrides,
    config: InjectorConfig,
    settings: PodSettings,
) -> None:
    for container in (init, proxy):
        if container is not None and container["name"] in user_overrides:
            overrides.apply(container, user_overrides[container["name"]])
    proxy_override = user_overrides.get(config.proxy.container_name)
    if proxy_override is not None:
        overrides.adjust_init_container_user(init, proxy, proxy_override, settings)


def _user_volumes(settings: PodSettings) -> list[dict[str, Any]]:
    """``sidecar.istio.io/userVolume``: extra volumes for the proxy, by name."""
    return [
        {**volume, "name": volume.get("name", name)}
        for name, volume in sorted(settings.user_volumes.items())
    ]


def _add_volumes(spec: dict[str, Any], volumes: list[dict[str, Any]]) -> tuple[str, ...]:
    """Prepend our volumes (Istio's merge order); a user volume of the same name wins."""
    existing = {v.get("name") for v in spec.get("volumes", ())}
    ours = [v for v in volumes if v["name"] not in existing]
    spec["volumes"] = ours + list(spec.get("volumes", ()))
    return tuple(v["name"] for v in ours)


def _add_pull_secrets(spec: dict[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    if not names:
        return ()
    existing = {s.get("name") for s in spec.get("imagePullSecrets", ())}
    ours = [{"name": n} for n in names if n not in existing]
    spec["imagePullSecrets"] = ours + list(spec.get("imagePullSecrets", ()))
    return tuple(s["name"] for s in ours)


def _place(
    spec: dict[str, Any],
    init: dict[str, Any] | None,
    proxy: dict[str, Any],
    settings: PodSettings,
) -> tuple[dict[str, Any], InjectionStatus]:
    """Put the containers where Istio puts them; return the proxy as placed and their names.

    A native sidecar is an init container with ``restartPolicy: Always``, started before the
    user's init containers so that their traffic is proxied too.
    """
    user_inits = spec.get("initContainers") or []
    if settings.native_sidecar:
        proxy = {"name": proxy.pop("name"), "restartPolicy": "Always", **proxy}
        ours = [c for c in (init, proxy) if c is not None]
        spec["initContainers"] = ours + user_inits
        return proxy, InjectionStatus(init_containers=tuple(c["name"] for c in ours))
    if init is not None:
        spec["initContainers"] = [*user_inits, init]
    if settings.hold_application:
        spec["containers"] = [proxy, *spec["containers"]]
    else:
        spec["containers"].append(proxy)
    inits = (init["name"],) if init is not None else ()
    return proxy, InjectionStatus(init_containers=inits, containers=(proxy["name"],))


def _rewrite_probes(
    spec: dict[str, Any],
    init: dict[str, Any] | None,
    proxy: dict[str, Any],
    settings: PodSettings,
) -> None:
    """Send the app's probes through the agent; the originals go to the proxy's env.

    The user's own sidecar init containers (restartPolicy: Always) are probed through the agent
    only when the proxy starts before them, as a native sidecar. Otherwise the proxy starts
    after every init container, and a startupProbe sent to it never passes.
    """
    inits = spec.get("initContainers", ()) if settings.native_sidecar else ()
    probed = [c for c in (*inits, *spec["containers"]) if c is not proxy and c is not init]
    probers = rewrite_probes(
        probed,
        status_port=settings.status_port,
        include_inbound_ports=settings.include_inbound_ports,
        exclude_inbound_ports=settings.exclude_inbound_ports,
    )
    if probers:
        proxy["env"].append({"name": PROBERS_ENV, "value": probers_env_value(probers)})


def _set_labels(labels: dict[str, str], workload: Workload) -> None:
    """The mTLS marker and Istio's canonical service name and revision (kept when set)."""
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
