"""A pod's volumes, materialised as the kubelet does under ``<pod dir>/volumes/<name>``.

emptyDir, configMap, secret, downwardAPI, and projected (service-account tokens from the
TokenRequest API with the spec's audience and lifetime, bound to the Pod; configMap, secret
and downwardAPI sources). ConfigMaps and Secrets are read from the API server; a missing
required one is waited for, as the kubelet keeps such a pod in ContainerCreating.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import NotEmulated, PodError
from testbed.podspec import PodContext, field_value

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api


class PodVolumes:
    """Materialises a pod's volumes under ``<pod dir>/volumes/<name>``."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        root: Path,
        context: PodContext,
        core: CoreV1Api,
    ) -> None:
        self.pod = pod
        self.root = root
        self.context = context
        self.core = core
        self.namespace = pod["metadata"]["namespace"]
        self.paths: dict[str, Path] = {}

    def materialise(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            path = self.root / volume["name"]
            path.mkdir(parents=True)
            self.paths[volume["name"]] = path
            if "emptyDir" in volume:
                path.chmod(0o777)  # as the kubelet makes them: any container user may write
            elif "configMap" in volume:
                self._config_map(path, volume["configMap"])
            elif "secret" in volume:
                self._secret(path, volume["secret"])
            elif "downwardAPI" in volume:
                self._downward(path, volume["downwardAPI"].get("items") or [])
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    self._projected(path, source)
            else:
                kinds = sorted(set(volume) - {"name"})
                raise NotEmulated(
                    f"volume {volume['name']}: {kinds} is not supported by the harness"
                )
            path.chmod(0o777 if "emptyDir" in volume else 0o755)

    @staticmethod
    def _write(path: Path, data: bytes | str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(0o644)

    def _items(self, path: Path, data: Mapping[str, str], spec: Mapping[str, Any]) -> None:
        items = spec.get("items")
        for key, target in (
            ((i["key"], i["path"]) for i in items) if items else ((k, k) for k in data)
        ):
            if key not in data:
                if spec.get("optional"):
                    continue
                raise PodError(f"{spec.get('name')}: no key {key!r}")
            self._write(path / target, data[key])

    def _config_map(self, path: Path, spec: Mapping[str, Any]) -> None:
        data = self.read("configmap", spec["name"], bool(spec.get("optional")))
        if data is not None:
            self._items(path, data, spec)

    def _secret(self, path: Path, spec: Mapping[str, Any]) -> None:
        name = spec.get("secretName", "")
        data = self.read("secret", name, bool(spec.get("optional")))
        if data is not None:
            self._items(path, data, {**spec, "name": name})

    def _downward(self, path: Path, items: Sequence[Mapping[str, Any]]) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise NotEmulated(
                    f"downwardAPI item {item.get('path')}: only fieldRef is supported"
                )
            value = field_value(self.pod, item["fieldRef"]["fieldPath"], self.context)
            self._write(path / item["path"], value)

    def _projected(self, path: Path, source: Mapping[str, Any]) -> None:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            self._write(path / token["path"], self.token(token))
        elif "configMap" in source:
            self._config_map(path, source["configMap"])
        elif "secret" in source:
            self._secret(path, {**source["secret"], "secretName": source["secret"]["name"]})
        elif "downwardAPI" in source:
            self._downward(path, source["downwardAPI"].get("items") or [])
        else:
            raise NotEmulated(f"projected source {sorted(source)} is not supported by the harness")

    def token(self, spec: Mapping[str, Any]) -> str:
        """A TokenRequest for the pod's service account, with the spec's audience, bound to the pod."""
        meta = self.pod["metadata"]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(spec.get("expirationSeconds") or 3600),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if spec.get("audience"):
            body["spec"]["audiences"] = [spec["audience"]]
        answer = self.core.create_namespaced_service_account_token(account, self.namespace, body)
        return str(answer.status.token)

    def read(
        self, kind: str, name: str, optional: bool, wait: float = 10.0
    ) -> dict[str, str] | None:
        """A ConfigMap's or Secret's data; a missing required one is waited for, as the kubelet does."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._read_once(kind, name, optional)
            except PodError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _read_once(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        from kubernetes.client import ApiException

        try:
            if kind == "configmap":
                return dict(self.core.read_namespaced_config_map(name, self.namespace).data or {})
            secret = self.core.read_namespaced_secret(name, self.namespace)
            return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        except ApiException as exc:
            if exc.status == 404 and optional:
                return None
            if exc.status == 404:
                raise PodError(
                    f"{kind} {self.namespace}/{name} does not exist; the kubelet would keep the "
                    "pod in ContainerCreating until it does"
                ) from exc
            raise
