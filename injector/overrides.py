"""User overrides of the injected containers, as in Istio.

A pod that defines a container named like the proxy (or the init container) before it is
injected asks to override fields of the injected one: its fields are laid over ours (the user
wins). Such containers are taken out of the pod, applied, and recorded in
``proxy.istio.io/overrides`` (:func:`record`), from where a later re-injection reads them back
(:func:`recorded`) and applies them again.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Mapping
from typing import Any

from injector.annotations import OVERRIDES, PodSettings
from meshlib.interception import TPROXY

Overrides = dict[str, dict[str, Any]]
"""Container name -> the user's container of that name."""

# The key that identifies an item of a list field, so that the user's item replaces ours.
_LIST_ITEM_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def recorded(annotations: dict[str, str], names: Collection[str]) -> Overrides:
    """Take ``proxy.istio.io/overrides`` out of ``annotations``: the overrides of ``names``
    that an earlier injection recorded (an unreadable record is dropped)."""
    overrides: Overrides = {}
    if OVERRIDES not in annotations:
        return overrides
    try:
        stored = json.loads(annotations.pop(OVERRIDES))
        for container in (stored or {}).get("containers") or ():
            if isinstance(container, dict) and container.get("name") in names:
                overrides[container["name"]] = container
    except (ValueError, AttributeError):
        pass
    return overrides


def record(annotations: dict[str, str], overrides: Overrides) -> None:
    """Write ``proxy.istio.io/overrides`` for a later re-injection (nothing if there are none)."""
    if overrides:
        annotations[OVERRIDES] = json.dumps(
            {"containers": [overrides[name] for name in sorted(overrides)]},
            separators=(",", ":"),
        )


def take_from_pod(spec: dict[str, Any], names: Collection[str], overrides: Overrides) -> None:
    """Move the containers of ``spec`` named ``names`` into ``overrides`` (a recorded one wins)."""
    for key in ("containers", "initContainers"):
        if key not in spec:
            continue
        kept = []
        for container in spec[key]:
            if container.get("name") in names:
                overrides.setdefault(container["name"], container)
            else:
                kept.append(container)
        spec[key] = kept


def apply(container: dict[str, Any], override: Mapping[str, Any]) -> None:
    """Lay the user's fields over an injected container: maps merge, list items with the same
    key (env name, mount path, port) and every other field are replaced."""
    for key, value in override.items():
        if key == "name" or (key == "image" and value == "auto"):
            continue
        if key in _LIST_ITEM_KEYS and isinstance(value, list):
            ident = _LIST_ITEM_KEYS[key]
            merged = {
                item.get(ident): item for item in container.get(key, ()) if isinstance(item, dict)
            }
            for item in value:
                if isinstance(item, dict):
                    merged[item.get(ident)] = copy.deepcopy(item)
            container[key] = list(merged.values())
        elif isinstance(value, dict) and isinstance(container.get(key), dict):
            apply(container[key], value)
        else:
            container[key] = copy.deepcopy(value)


def adjust_init_container_user(
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
