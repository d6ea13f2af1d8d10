"""Un-injection: take out what an earlier injection added, so that injecting again replaces it.

Found through ``sidecar.istio.io/status`` (:mod:`injector.status`): the containers, volumes and
pull secrets it names are removed, and the old proxy's env gives back what its injection
changed elsewhere in the pod, the app's probes (:func:`injector.probes.restore_probes`) and its
Prometheus annotations (:func:`injector.prometheus.unmerge`). Injecting twice then equals
injecting once, and a newer config replaces rather than duplicates (as linkerd2's
``pkg/inject/uninject.go``).

The result is the user's overrides of the injected containers (:mod:`injector.overrides`), to
be applied again to the new ones.
"""

from __future__ import annotations

from typing import Any

from injector import overrides, prometheus
from injector._data import env_value
from injector.annotations import PodSettings
from injector.config import InjectorConfig
from injector.probes import PROBERS_ENV, restore_probes
from injector.status import InjectionStatus
from injector.volumes import PROXY_VOLUMES
from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION

# The env variables in which the old proxy carries what its injection changed in the pod.
_MARKER_ENVS = (PROBERS_ENV, prometheus.PROMETHEUS_ENV)


def uninject(
    pod: dict[str, Any], config: InjectorConfig, settings: PodSettings
) -> overrides.Overrides:
    """Remove a previous injection from ``pod``; return the user's overrides of the injected
    containers, recorded by that injection or, in a pod never injected, its own containers of
    those names."""
    annotations: dict[str, str] = pod["metadata"]["annotations"]
    spec = pod["spec"]
    injected_names = {config.proxy.container_name, config.init.container_name}
    found = overrides.recorded(annotations, injected_names)

    raw_status = annotations.pop(SIDECAR_STATUS_ANNOTATION, None)
    if raw_status is None:
        overrides.take_from_pod(spec, injected_names, found)
        return found

    status = InjectionStatus.decode(raw_status, _our_own(config))
    removed = _remove_containers(spec, {*status.containers, *status.init_containers})
    _remove_named(spec, "volumes", status.volumes)
    _remove_named(spec, "imagePullSecrets", status.image_pull_secrets)
    old_proxy = _old_proxy(removed, config)
    probers = env_value(old_proxy, PROBERS_ENV)
    if probers is not None:
        restore_probes([*spec.get("initContainers", ()), *spec["containers"]], probers)
    prometheus.unmerge(
        annotations, env_value(old_proxy, prometheus.PROMETHEUS_ENV), settings.status_port
    )
    return found


def _our_own(config: InjectorConfig) -> InjectionStatus:
    """What our own injection adds, assumed when the status cannot be read."""
    return InjectionStatus(
        init_containers=(config.init.container_name, config.proxy.container_name),
        containers=(config.proxy.container_name,),
        volumes=tuple(volume.name for volume in PROXY_VOLUMES),
        image_pull_secrets=config.proxy.image_pull_secrets,
    )


def _remove_containers(spec: dict[str, Any], names: set[str]) -> list[dict[str, Any]]:
    """Take the containers and init containers named ``names`` out of ``spec``; return them."""
    removed: list[dict[str, Any]] = []
    for key in ("containers", "initContainers"):
        if key not in spec:
            continue
        kept = [c for c in spec[key] if c.get("name") not in names]
        removed += [c for c in spec[key] if c.get("name") in names]
        if key == "initContainers" and not kept and spec[key]:
            del spec[key]  # only our init containers were there
        else:
            spec[key] = kept
    return removed


def _remove_named(spec: dict[str, Any], key: str, names: tuple[str, ...]) -> None:
    if key in spec:
        spec[key] = [item for item in spec[key] if item.get("name") not in names]


def _old_proxy(removed: list[dict[str, Any]], config: InjectorConfig) -> dict[str, Any] | None:
    """The removed container that carries the old injection's markers: the one with probers or
    Prometheus env (whatever its name was then), else the one with the proxy's name."""
    for container in removed:
        if any(env_value(container, name) is not None for name in _MARKER_ENVS):
            return container
    return next((c for c in removed if c.get("name") == config.proxy.container_name), None)
