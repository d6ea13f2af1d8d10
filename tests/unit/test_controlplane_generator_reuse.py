"""The generator's reuse never changes its answer: warm equals cold, over random histories.

A running control plane keeps one :class:`ConfigGenerator` and feeds it snapshot after
snapshot; it reuses whatever it can (whole resource sets, per-service clusters, load
assignments, auto-mTLS). Whatever it reuses must be exactly what :func:`translate` computes
from scratch. Here hypothesis builds a small mesh, then drives it through random changes
(services, endpoint slices, pods, PeerAuthentications, VirtualServices, DestinationRules
and the mesh config added, changed and removed); after every change a warm generator answers for several proxies, and its
resources must equal, byte for byte, a cold translation of a fresh store holding the same
objects (which also checks the store's incremental indexes against a clean build).

The mesh is small and dense on purpose: a fixed set of object slots (the same few names,
each pod named after its address, every slice listing those addresses), each change giving
one slot a new random version or removing it. So most changes touch something a proxy
sees, and a cache key that misses an input is caught by the first change to that input.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.proxy import ProxyIdentity, parse_proxy_identity
from controlplane.resources import PUSH_ORDER, ProxyResources
from controlplane.store import Kind, MeshStore
from controlplane.translate.generate import ConfigGenerator, translate
from harness.kube_objects import endpoint_slice_object, service_object

ROOT = "istio-system"
PORTS = {"http": 80, "tcp-db": 5432, "dns": 53}
ADDRESSES = {"a": ("10.1.0.1", "10.1.0.2", "10.1.0.3"), "b": ("10.1.0.4",)}
MODES = ("STRICT", "PERMISSIVE", "DISABLE", "UNSET")

names = st.sampled_from
labels = st.fixed_dictionaries(
    {},
    optional={
        "app": names(("s0", "s1", "web")),
        "tier": names(("front", "back")),
        "version": names(("v1", "v2")),
    },
)
CREATED = names(("2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"))
EXPORT_TO = st.none() | names((["."], ["*"], ["b"], ["a", "."]))
HOSTS = ("s0", "s1", "s0.b.svc.cluster.local", "*.svc.cluster.local")


def pod_name(address: str) -> str:
    return "p" + address.rsplit(".", 1)[1]


def services(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        ports = draw(st.lists(names(tuple(PORTS)), min_size=1, max_size=3, unique=True))
        external = draw(st.integers(0, 5)) == 0
        return service_object(
            name,
            namespace,
            None if external else draw(names(("10.96.0.1", "10.96.0.2", "None"))),
            {port: PORTS[port] for port in ports},
            target_ports=draw(
                st.dictionaries(names(tuple(ports)), names((8080, 8081)), max_size=1)
            ),
            selector=draw(st.none() | st.builds(lambda app: {"app": app}, names(("s0", "s1")))),
            external_name="db.example.com" if external else None,
        )

    return build()


def endpoint_slices(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        addresses = draw(st.lists(names(ADDRESSES[namespace]), unique=True, min_size=1))
        return endpoint_slice_object(
            name.partition("-")[0],
            namespace,
            draw(st.dictionaries(names(tuple(PORTS)), names((8080, 8081)), min_size=1, max_size=2)),
            addresses,
            name=name,
            ready=draw(st.none() | st.booleans()),
            pods={a: pod_name(a) for a in addresses if draw(st.booleans())},
        )

    return build()


def pods(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        pod_labels = draw(labels)
        if draw(st.booleans()):
            pod_labels["security.istio.io/tlsMode"] = "istio"
        address = next(a for a in ADDRESSES[namespace] if pod_name(a) == name)
        return {
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": pod_labels},
            "spec": {
                "serviceAccountName": draw(names(("default", "sa1"))),
                "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}],
            },
            "status": {"podIP": address},
        }

    return build()


def peer_authentications(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        spec: dict[str, Any] = {"mtls": {"mode": draw(names(MODES))}}
        if name != "default" and draw(st.booleans()):
            spec["selector"] = {"matchLabels": draw(labels.filter(bool))}
            spec["portLevelMtls"] = {
                port: {"mode": draw(names(MODES))}
                for port in draw(st.lists(names(("8080", "8081")), unique=True, max_size=2))
            }
        return {
            "kind": "PeerAuthentication",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": draw(names(("2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"))),
            },
            "spec": spec,
        }

    return build()


def istio_object(kind: str, namespace: str, name: str, created: str, spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
    }


def http_rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for _ in range(draw(st.integers(1, 2))):
        targets = draw(st.lists(names(("s0", "s1")), min_size=1, max_size=2))
        weight = draw(st.integers(0, 100))
        route = [
            {
                "destination": {"host": host, "subset": draw(names(("v1", "v2", "v3")))}
                if draw(st.booleans())
                else {"host": host},
                **({"weight": (weight, 100 - weight)[i]} if len(targets) == 2 else {}),
            }
            for i, host in enumerate(targets)
        ]
        rule: dict[str, Any] = {"route": route}
        match = draw(
            st.none()
            | names(
                (
                    {"sourceLabels": {"app": "s0"}},
                    {"sourceLabels": {"tier": "front"}},
                    {"uri": {"prefix": "/api"}},
                    {"port": 80},
                    {"sourceNamespace": "b"},
                )
            )
        )
        if match is not None:
            rule["match"] = [match]
        rules.append(rule)
    return rules


def virtual_services(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        spec: dict[str, Any] = {"hosts": [draw(names(HOSTS))], "http": http_rules(draw)}
        export_to = draw(EXPORT_TO)
        if export_to is not None:
            spec["exportTo"] = export_to
        return istio_object("VirtualService", namespace, name, draw(CREATED), spec)

    return build()


def traffic_policies(draw: st.DrawFn) -> dict[str, Any]:
    balancers = (
        {"simple": "LEAST_REQUEST"},
        {"simple": "PASSTHROUGH"},
        {"consistentHash": {"httpHeaderName": "x-user"}},
    )
    policy: dict[str, Any] = {}
    if draw(st.booleans()):
        policy["loadBalancer"] = draw(names(balancers))
    if draw(st.booleans()):
        policy["tls"] = {"mode": draw(names(("DISABLE", "ISTIO_MUTUAL", "SIMPLE")))}
    return policy


def destination_rules(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        subsets = [
            {"name": subset, "labels": {"version": subset}}
            | ({"trafficPolicy": traffic_policies(draw)} if draw(st.booleans()) else {})
            for subset in draw(st.lists(names(("v1", "v2")), unique=True, max_size=2))
        ]
        spec: dict[str, Any] = {"host": draw(names(HOSTS[:3])), "subsets": subsets}
        if draw(st.booleans()):
            spec["trafficPolicy"] = traffic_policies(draw)
        export_to = draw(EXPORT_TO)
        if export_to is not None:
            spec["exportTo"] = export_to
        if namespace != ROOT and draw(st.integers(0, 3)) == 0:
            spec["workloadSelector"] = {"matchLabels": {"app": "s0"}}
        return istio_object("DestinationRule", namespace, name, draw(CREATED), spec)

    return build()


def mesh_configs(namespace: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda mesh: {
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"mesh": mesh},
        },
        names(
            (
                "",
                "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
                "egressNamespaces: [b]\n",
                "enableAutoMtls: false\n",
                "trustDomain: example.org\nprotocolDetectionTimeout: 2s\n",
            )
        ),
    )


# Every object the mesh can hold: (kind, namespace, name) -> its possible versions.
SLOTS = {
    **{(Kind.SERVICE, ns, n): services(ns, n) for ns, n in (("a", "s0"), ("a", "s1"), ("b", "s0"))},
    **{
        (Kind.ENDPOINT_SLICE, ns, n): endpoint_slices(ns, n)
        for ns, n in (("a", "s0-x"), ("a", "s0-y"), ("a", "s1-x"), ("b", "s0-x"))
    },
    **{
        (Kind.POD, ns, pod_name(a)): pods(ns, pod_name(a))
        for ns, addresses in ADDRESSES.items()
        for a in addresses
    },
    **{
        (Kind.PEER_AUTHENTICATION, ns, n): peer_authentications(ns, n)
        for ns, n in ((ROOT, "default"), ("a", "default"), ("a", "other"), ("b", "other"))
    },
    **{
        (Kind.VIRTUAL_SERVICE, ns, n): virtual_services(ns, n)
        for ns, n in (("a", "r0"), ("a", "r1"), ("b", "r0"))
    },
    **{
        (Kind.DESTINATION_RULE, ns, n): destination_rules(ns, n)
        for ns, n in (("a", "d0"), ("a", "d1"), ("b", "d0"), (ROOT, "d0"))
    },
    (Kind.MESH_CONFIG, ROOT, "istio"): mesh_configs(ROOT, "istio"),
}
Slot = tuple[Kind, str, str]


# The starting mesh: most slots filled. A change: one slot, usually a new version of it,
# sometimes its removal (None).
def present(versions: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(versions, versions, versions, st.none())


meshes = st.fixed_dictionaries({slot: present(versions) for slot, versions in SLOTS.items()})
changes = st.lists(
    names(tuple(SLOTS)).flatmap(lambda slot: st.tuples(st.just(slot), present(SLOTS[slot]))),
    min_size=1,
    max_size=12,
)


def proxy(pod: str, namespace: str, ip: str) -> ProxyIdentity:
    return parse_proxy_identity(
        f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
        {"NAME": pod, "NAMESPACE": namespace, "INSTANCE_IPS": ip, "LABELS": {"app": "s0"}},
    )


# Proxies whose pods come and go with the changes, in both namespaces, and one with no pod.
PROXIES = (
    proxy("p1", "a", "10.1.0.1"),
    proxy("p3", "a", "10.1.0.3"),
    proxy("p4", "b", "10.1.0.4"),
    proxy("ghost", "b", "10.9.9.9"),
)


def apply(store: MeshStore, slot: Slot, version: dict[str, Any] | None) -> None:
    kind, namespace, name = slot
    if version is None:
        store.delete(kind, namespace, name)
    else:
        store.upsert(kind, version)


def content(resources: ProxyResources) -> dict[str, Any]:
    sets = resources.sets
    return {
        type_url: (sets[type_url].version, {r.name: r.packed.value for r in sets[type_url]})
        for type_url in PUSH_ORDER
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes, changes)
def test_a_warm_generator_gives_what_a_cold_translation_gives(
    start: dict[Slot, dict[str, Any] | None],
    history: list[tuple[Slot, dict[str, Any] | None]],
) -> None:
    store = MeshStore()
    state = dict(start)
    for slot, version in state.items():
        apply(store, slot, version)
    generator = ConfigGenerator()
    for proxy_identity in PROXIES:
        generator.generate(store.snapshot(), proxy_identity).build_all()
    for slot, version in history:
        apply(store, slot, version)
        state[slot] = version
        fresh = MeshStore()
        for each, current in state.items():
            apply(fresh, each, current)
        for proxy_identity in PROXIES:
            warm = generator.generate(store.snapshot(), proxy_identity)
            cold = translate(fresh.snapshot(), proxy_identity)
            assert content(warm) == content(cold), (slot, version, proxy_identity)
