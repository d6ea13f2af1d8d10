"""The file source: a directory of Kubernetes YAML as the mesh's state.

For local runs, demos and tests without a cluster. Every ``*.yaml``/``*.yml``/``*.json``
file under the directory is read (multi-document files and ``kind: List`` work); the
kinds the model uses are kept (Istio's networking kinds under any of the apiVersions Istio
serves), anything else is ignored, except Istio kinds the model does not read (Gateway,
EnvoyFilter, AuthorizationPolicy ...): those are logged once and counted as not supported,
never dropped in silence. The mesh config is the ``istio`` ConfigMap's ``mesh`` key, as in a
cluster.

The directory is polled for changes (no inotify dependency, and edits through editors that
replace files are seen the same way). A change re-reads everything and replaces every
kind at once; if any file fails to parse, the last good state stays and the error is
logged, so a half-saved file never reaches the proxies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from controlplane.convert import MESH_CONFIGMAP_NAME
from controlplane.errors import ConfigDirError
from controlplane.store import Kind, MeshStore, object_key

log = logging.getLogger(__name__)

_KINDS = {kind.value: kind for kind in Kind}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
_SUFFIXES = (".yaml", ".yml", ".json")


def _flatten(doc: Any, where: str) -> Iterator[Mapping[str, Any]]:
    if doc is None:
        return
    if not isinstance(doc, Mapping):
        raise ConfigDirError(
            f"{where}: a document must be a Kubernetes object, not {type(doc).__name__}"
        )
    if doc.get("kind") == "List" or (doc.get("kind", "").endswith("List") and "items" in doc):
        for item in doc.get("items") or []:
            yield from _flatten(item, where)
    else:
        yield doc


def parse_objects(text: str, where: str = "<text>") -> list[Mapping[str, Any]]:
    """The Kubernetes objects in a (multi-document) YAML text."""
    try:
        docs = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        raise ConfigDirError(f"{where}: not valid YAML: {exc}") from exc
    return [obj for doc in docs for obj in _flatten(doc, where)]


def read_directory(
    directory: Path,
    cache: dict[Path, tuple[tuple[int, int], list[Mapping[str, Any]]]] | None = None,
) -> list[Mapping[str, Any]]:
    """Every object in the directory's YAML/JSON files, in file-name order.

    With ``cache``, a file whose modification time and size are unchanged is not parsed again.
    """
    if not directory.is_dir():
        raise ConfigDirError(
            f"{directory}: not a directory (pass --config-dir a directory of YAML)"
        )
    objects: list[Mapping[str, Any]] = []
    paths = sorted(p for p in directory.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
    for path in paths:
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = cache.get(path) if cache is not None else None
            if cached is not None and cached[0] == stamp:
                objects.extend(cached[1])
                continue
            parsed = parse_objects(path.read_text(), str(path))
        except OSError as exc:
            raise ConfigDirError(f"{path}: cannot read: {exc}") from exc
        if cache is not None:
            cache[path] = (stamp, parsed)
        objects.extend(parsed)
    if cache is not None:
        for gone in set(cache) - set(paths):
            del cache[gone]
    return objects


def is_mesh_configmap(obj: Mapping[str, Any], namespace: str | None = None) -> bool:
    meta = obj.get("metadata") or {}
    return meta.get("name") == MESH_CONFIGMAP_NAME and (
        namespace is None or meta.get("namespace") == namespace
    )


def _kind_of(obj: Mapping[str, Any]) -> Kind | None:
    kind = _KINDS.get(str(obj.get("kind")))
    if kind is Kind.MESH_CONFIG and not is_mesh_configmap(obj):
        return None
    return kind


def is_unread_istio_kind(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is of an Istio API group (``*.istio.io``) but of a kind the model does
    not read: the user meant it to do something, and it will not."""
    group = str(obj.get("apiVersion") or "").rpartition("/")[0]
    return group.endswith("istio.io") and _kind_of(obj) is None


def report_unread_istio_kinds(store: MeshStore, objects: Iterable[Mapping[str, Any]]) -> None:
    store.status.unsupported_kinds(obj for obj in objects if is_unread_istio_kind(obj))


def load_into(store: MeshStore, objects: Iterable[Mapping[str, Any]]) -> None:
    """Make ``objects`` the complete state of ``store``, one kind at a time."""
    objects = list(objects)
    grouped: dict[Kind, list[Mapping[str, Any]]] = {kind: [] for kind in Kind}
    for obj in objects:
        kind = _kind_of(obj)
        if kind is not None:
            grouped[kind].append(obj)
    # Mesh config first: every proxy's configuration depends on it.
    for kind in (
        Kind.MESH_CONFIG,
        Kind.NAMESPACE,
        Kind.PEER_AUTHENTICATION,
        Kind.POD,
        Kind.SERVICE,
        Kind.ENDPOINT_SLICE,
        Kind.SERVICE_ENTRY,
        Kind.DESTINATION_RULE,
        Kind.VIRTUAL_SERVICE,
        Kind.SIDECAR,
    ):
        store.replace(kind, grouped[kind])
    report_unread_istio_kinds(store, objects)


ObjectIndex = dict[tuple[Kind, tuple[str, str]], Mapping[str, Any]]


def index_objects(objects: Iterable[Mapping[str, Any]]) -> ObjectIndex:
    index: ObjectIndex = {}
    for obj in objects:
        kind = _kind_of(obj)
        if kind is not None:
            index[(kind, object_key(kind, obj))] = obj
    return index


def apply_changes(store: MeshStore, before: ObjectIndex, after: ObjectIndex) -> int:
    """Apply to ``store`` only the objects that differ between two readings; returns how many.

    Objects of unchanged files are the very same dicts (the parse cache), so comparing
    costs next to nothing and an edit to one file converts only that file's objects.
    """
    changed = 0
    for kind, key in before.keys() - after.keys():
        changed += store.delete(kind, key[0], key[1])
    for ref, obj in after.items():
        old = before.get(ref)
        if old is not obj and old != obj:
            changed += store.upsert(ref[0], obj)
    return changed


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for path in directory.rglob("*"):
        if path.suffix in _SUFFIXES:
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


class FileSource:
    """Keeps a :class:`MeshStore` equal to the contents of a directory."""

    def __init__(self, directory: Path, store: MeshStore, poll_interval: float = 0.5) -> None:
        self.directory = directory
        self.store = store
        self.poll_interval = poll_interval
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._parsed: dict[Path, tuple[tuple[int, int], list[Mapping[str, Any]]]] = {}
        self._index: ObjectIndex | None = None
        self.last_error: str | None = None

    def load(self) -> bool:
        """Read the directory into the store now; False (state kept) if a file is broken."""
        fingerprint = _fingerprint(self.directory)
        try:
            objects = read_directory(self.directory, self._parsed)
        except ConfigDirError as exc:
            self.last_error = str(exc)
            log.error(
                "config directory not loaded, keeping the last good state",
                extra={"error": str(exc)},
            )
            self._seen = fingerprint
            return False
        self._seen = fingerprint
        self.last_error = None
        index = index_objects(objects)
        if self._index is None:
            load_into(self.store, objects)
            log.info(
                "config directory loaded",
                extra={"directory": str(self.directory), "objects": len(objects)},
            )
        else:
            changed = apply_changes(self.store, self._index, index)
            report_unread_istio_kinds(self.store, objects)
            log.info(
                "config directory changed",
                extra={"directory": str(self.directory), "changed": changed},
            )
        self._index = index
        return True

    async def run(self) -> None:
        """Load (unless :meth:`load` already ran), then poll for changes until cancelled."""
        if self._seen is None:
            self.load()
        while True:
            await asyncio.sleep(self.poll_interval)
            if _fingerprint(self.directory) != self._seen:
                self.load()
