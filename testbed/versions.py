"""The Kubernetes and etcd releases the test bed runs, pinned by ``hack/testbed/go.mod``.

Kubernetes 1.34: the newest line whose kubelet still runs on this workplace's cgroup v1 hosts
without ``failCgroupV1: false`` and still accepts Debian's containerd 1.6/1.7 (1.35 refuses
cgroup v1 by default and is the last to accept containerd 1.x), so a later kubelet-based test
bed can use the same pin. etcd 3.6 is the line Kubernetes 1.34 ships and tests with.
A unit test checks these constants against the go.mod files.
"""

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
