"""The injection config: everything besides the pod itself that decides what gets injected.

It plays the part of Istio's ``istio-sidecar-injector`` ConfigMap (``config`` + ``values``) and
carries the mesh config (:class:`meshlib.meshconfig.MeshConfig`). It is plain frozen data, loaded
from YAML with camelCase keys; unknown keys are refused with their path, so that a typo in a
ConfigMap is an error at load time instead of a silently ignored setting.

Example file (every key optional; the values shown are the defaults)::

    policy: enabled                 # enabled | disabled (Istio's global.proxy.autoInject)
    revision: ""                    # "" answers the default revision
    neverInjectSelector: []         # list of Kubernetes label selectors
    alwaysInjectSelector: []
    injectedAnnotations: {}
    meshNamespace: istio-system     # never injected, nor kube-system & co.
    rewriteAppHTTPProbe: true
    nativeSidecars: auto            # auto | true | false; auto: Kubernetes >= 1.29
    kubernetesVersion: null         # e.g. "1.34"; the webhook asks the API server when unset
    holdApplicationUntilProxyStarts: false
    proxy:
      hub: docker.io/remora
      image: remora
      tag: <remora version>
      containerName: istio-proxy
      args: [proxy, sidecar]
      uid: 1337
      resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 2000m, memory: 1024Mi}}
    init:
      containerName: istio-init
      args: [init]
    meshConfig: {}                  # Istio MeshConfig YAML (the ``mesh`` key of the istio ConfigMap)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from injector.errors import ConfigError
from meshlib.meshconfig import MeshConfig, MeshConfigError, parse_mesh_config
from meshlib.syntax import SyntaxProblem, parse_bool
from meshlib.version import remora_version

__all__ = ["ConfigError", "InjectorConfig", "default_config", "load_config", "parse_config"]

DEFAULT_IGNORED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "local-path-storage")

# Kubernetes minor version from which native sidecars (initContainers with restartPolicy
# Always, the SidecarContainers feature gate) are on by default. GA in 1.33.
NATIVE_SIDECAR_MIN_VERSION = (1, 29)


def _default_resources() -> dict[str, dict[str, str]]:
    return {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "2000m", "memory": "1024Mi"},
    }


def _default_tag() -> str:
    version = remora_version()
    return version if "+" not in version else "latest"


@dataclass(frozen=True)
class ProxySettings:
    """The sidecar container and the capture values it shares with the init container."""

    hub: str = "docker.io/remora"
    image: str = "remora"
    tag: str = field(default_factory=_default_tag)
    image_pull_policy: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    container_name: str = "istio-proxy"
    command: tuple[str, ...] = ()  # empty: the image's entrypoint (``remora``)
    args: tuple[str, ...] = ("proxy", "sidecar")
    # Run inside the proxy container by lifecycle hooks: ``<control> wait`` holds the app until
    # the proxy is ready, ``<control> request ... drain`` drains it before a native sidecar stops.
    control_command: tuple[str, ...] = ("remora", "proxy")
    uid: int = 1337
    gid: int = 1337
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=_default_resources)
    log_level: str = "warning"
    component_log_level: str = "misc:error"
    agent_log_level: str = "default:info"
    cluster_domain: str = "cluster.local"
    include_ip_ranges: str = "*"
    exclude_ip_ranges: str = ""
    include_inbound_ports: str = "*"
    exclude_inbound_ports: str = ""
    include_outbound_ports: str = ""
    exclude_outbound_ports: str = ""
    outbound_port: int = 15001
    inbound_port: int = 15006
    health_port: int = 15021
    envoy_stats_port: int = 15090
    startup_probe: bool = True
    startup_failure_threshold: int = 600
    readiness_initial_delay_seconds: int = 0
    readiness_period_seconds: int = 15
    readiness_failure_threshold: int = 4
    cap_net_bind_service: bool = False


@dataclass(frozen=True)
class InitSettings:
    """The capture init container (``remora init`` with istio-iptables flags)."""

    container_name: str = "istio-init"
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ("init",)


@dataclass(frozen=True)
class InjectorConfig:
    policy: str = "enabled"
    revision: str = ""
    never_inject_selector: tuple[Mapping[str, Any], ...] = ()
    always_inject_selector: tuple[Mapping[str, Any], ...] = ()
    injected_annotations: Mapping[str, str] = field(default_factory=dict)
    ignored_namespaces: tuple[str, ...] = DEFAULT_IGNORED_NAMESPACES
    mesh_namespace: str = "istio-system"
    enable_namespaces_by_default: bool = False
    rewrite_app_http_probe: bool = True
    native_sidecars: str = "auto"
    kubernetes_version: tuple[int, int] | None = None
    hold_application_until_proxy_starts: bool = False
    ca_address: str = ""  # empty: the mesh's discovery address
    cluster_id: str = "Kubernetes"
    mesh_id: str = ""  # empty: the trust domain
    token_audience: str = "istio-ca"
    root_cert_config_map: str = "istio-ca-root-cert"
    pilot_cert_provider: str = "istiod"
    proxy: ProxySettings = field(default_factory=ProxySettings)
    init: InitSettings = field(default_factory=InitSettings)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    @property
    def revision_name(self) -> str:
        """The revision as Istio writes it in annotations and the status: ``default`` for ""."""
        return self.revision or "default"

    @property
    def status_port(self) -> int:
        return self.mesh.default_config.status_port

    @property
    def effective_ca_address(self) -> str:
        return self.ca_address or self.mesh.default_config.discovery_address

    @property
    def effective_mesh_id(self) -> str:
        return self.mesh_id or self.mesh.trust_domain

    def native_sidecars_default(self) -> bool:
        """Whether pods get native sidecars when they carry no ``sidecar.istio.io/nativeSidecar``.

        ``auto`` follows the cluster's Kubernetes version; an unknown version means no (a native
        sidecar on a cluster that does not know ``restartPolicy`` would lose that field and block
        the pod in its init phase, whereas a regular sidecar works everywhere).
        """
        if self.native_sidecars == "true":
            return True
        if self.native_sidecars == "false":
            return False
        return (
            self.kubernetes_version is not None
            and self.kubernetes_version >= NATIVE_SIDECAR_MIN_VERSION
        )


def default_config() -> InjectorConfig:
    """The configuration used when no file is given: Istio's defaults with Remora's image."""
    return InjectorConfig()


# -- loading ---------------------------------------------------------------------------------

_TOP_KEYS: dict[str, str] = {
    "policy": "policy",
    "revision": "revision",
    "neverInjectSelector": "never_inject_selector",
    "alwaysInjectSelector": "always_inject_selector",
    "injectedAnnotations": "injected_annotations",
    "ignoredNamespaces": "ignored_namespaces",
    "meshNamespace": "mesh_namespace",
    "enableNamespacesByDefault": "enable_namespaces_by_default",
    "rewriteAppHTTPProbe": "rewrite_app_http_probe",
    "nativeSidecars": "native_sidecars",
    "kubernetesVersion": "kubernetes_version",
    "holdApplicationUntilProxyStarts": "hold_application_until_proxy_starts",
    "caAddress": "ca_address",
    "clusterId": "cluster_id",
    "meshId": "mesh_id",
    "tokenAudience": "token_audience",
    "rootCertConfigMap": "root_cert_config_map",
    "pilotCertProvider": "pilot_cert_provider",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_PROXY_KEYS = {_camel(f.name): f.name for f in fields(ProxySettings)}
_PROXY_KEYS |= {"includeIPRanges": "include_ip_ranges", "excludeIPRanges": "exclude_ip_ranges"}
_PROXY_KEYS.pop("includeIpRanges")
_PROXY_KEYS.pop("excludeIpRanges")
_INIT_KEYS = {_camel(f.name): f.name for f in fields(InitSettings)}


def _expect_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, not {type(value).__name__}: {value!r}")
    return value


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Convert ``value`` to the type of the field's ``default``."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        try:
            return parse_bool(str(value))
        except SyntaxProblem as problem:
            raise ConfigError(f"{where}: {problem}") from None
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{where}: {value!r} is not an integer")
        try:
            number = int(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {value!r} is not an integer") from exc
        if number < 0:
            raise ConfigError(f"{where}: {value!r} must not be negative")
        return number
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: {value!r} must be a list")
        return tuple(value)
    if isinstance(default, Mapping):
        return dict(_expect_mapping(value, where))
    if default is None or isinstance(default, str):
        if value is None:
            return None if default is None else ""
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: {value!r} must be a string")
        return str(value)
    raise ConfigError(f"{where}: unsupported value {value!r}")


def _load_section(raw: Any, keys: Mapping[str, str], base: Any, where: str) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in _expect_mapping(raw, where).items():
        path = f"{where}.{key}" if where else str(key)
        if key not in keys:
            raise ConfigError(f"unknown key {path!r} (known: {', '.join(sorted(keys))})")
        attr = keys[key]
        changes[attr] = _coerce(value, getattr(base, attr), path)
    return changes


def parse_kubernetes_version(
    value: Any, where: str = "kubernetesVersion"
) -> tuple[int, int] | None:
    """``"1.34"``, ``"v1.34.4"``, ``1.34`` → ``(1, 34)``; ``None``/"" → ``None``."""
    if value is None or value == "":
        return None
    text = str(value).strip().lstrip("v")
    parts = text.split(".")
    try:
        major, minor = int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()))
    except (IndexError, ValueError) as exc:
        raise ConfigError(f"{where}: {value!r} is not a Kubernetes version such as 1.34") from exc
    return major, minor


def parse_config(raw: Mapping[str, Any] | None, mesh: MeshConfig | None = None) -> InjectorConfig:
    """Build an :class:`InjectorConfig` from parsed YAML; ``mesh`` (if given) wins over ``meshConfig``."""
    base = InjectorConfig()
    data = dict(_expect_mapping(raw, "injector config"))
    proxy_raw = data.pop("proxy", None)
    init_raw = data.pop("init", None)
    mesh_raw = data.pop("meshConfig", None)
    version_raw = data.pop("kubernetesVersion", None)

    changes = _load_section(data, _TOP_KEYS, base, "")
    changes["kubernetes_version"] = parse_kubernetes_version(version_raw)
    changes["proxy"] = replace(
        base.proxy, **_load_section(proxy_raw, _PROXY_KEYS, base.proxy, "proxy")
    )
    changes["init"] = replace(base.init, **_load_section(init_raw, _INIT_KEYS, base.init, "init"))
    try:
        changes["mesh"] = mesh if mesh is not None else parse_mesh_config(mesh_raw)
    except MeshConfigError as exc:
        raise ConfigError(f"meshConfig: {exc}") from exc

    config = replace(base, **changes)
    _validate(config)
    return config


def _validate(config: InjectorConfig) -> None:
    if config.policy not in {"enabled", "disabled"}:
        raise ConfigError(f"policy: {config.policy!r} is not 'enabled' or 'disabled'")
    if config.native_sidecars not in {"auto", "true", "false"}:
        raise ConfigError(f"nativeSidecars: {config.native_sidecars!r} is not auto, true or false")
    for key in ("neverInjectSelector", "alwaysInjectSelector"):
        attr = _TOP_KEYS[key]
        for i, selector in enumerate(getattr(config, attr)):
            where = f"{key}[{i}]"
            _expect_mapping(selector, where)
            unknown = set(selector) - {"matchLabels", "matchExpressions"}
            if unknown:
                raise ConfigError(f"{where}: unknown keys {sorted(unknown)} in a label selector")
            for expr in selector.get("matchExpressions") or ():
                if expr.get("operator") not in {"In", "NotIn", "Exists", "DoesNotExist"}:
                    raise ConfigError(f"{where}: unsupported operator in {expr!r}")
    names = (config.proxy.container_name, config.init.container_name)
    if not all(names) or len(set(names)) != 2:
        raise ConfigError(f"container names must be distinct and non-empty, got {names}")
    if not 0 < config.proxy.uid < 2**31 or not 0 < config.proxy.gid < 2**31:
        raise ConfigError("proxy.uid and proxy.gid must be positive (the proxy never runs as root)")


def load_config(path: str | None, mesh_path: str | None = None) -> InjectorConfig:
    """Read the injection config (and optionally a separate mesh config) from YAML files.

    A file may be a bare config, or a ConfigMap whose ``data.config`` (injection) or
    ``data.mesh`` (mesh config) holds it, so a ConfigMap mounted or exported with ``kubectl get
    -o yaml`` works unchanged.
    """
    import yaml

    def read(file: str, key: str) -> Any:
        try:
            with open(file, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
        if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
            text = (doc.get("data") or {}).get(key)
            if text is None:
                raise ConfigError(f"{file}: the ConfigMap has no data.{key}")
            doc = yaml.safe_load(text)
        return doc

    mesh = None
    if mesh_path:
        try:
            mesh = parse_mesh_config(read(mesh_path, "mesh"))
        except MeshConfigError as exc:
            raise ConfigError(f"{mesh_path}: {exc}") from exc
    raw = read(path, "config") if path else None
    try:
        return parse_config(raw, mesh=mesh)
    except ConfigError as exc:
        if path:
            raise ConfigError(f"{path}: {exc}") from None
        raise
