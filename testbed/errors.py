"""What the test bed cannot do: one root, :class:`TestBedError`, and one class per part.

::

    TestBedError                 anything the test bed could not do
     ├── BinariesMissing         the Kubernetes binaries are not built (hack/testbed/build.sh)
     ├── ClusterError            etcd, kube-apiserver or a controller did not start or stop,
     │                           or no test bed is where one was asked for
     ├── NetworkError            a node's or a pod's network namespace, veth, address or route
     │                           could not be set up (an ``ip`` command failed, the /24 is full)
     └── PodError                a pod cannot run as its spec says: which container or volume,
          │                      and why (with the containers' logs when it failed to start)
          └── NotEmulated        the spec asks for something the stand-in kubelet does not do
                                 (``envFrom``, exec probes, an unknown volume kind...)

Every message names the component, the pod or the command, and what to look at; catch
:class:`TestBedError` to report any of them (``remora testbed`` does).
"""

from __future__ import annotations


class TestBedError(RuntimeError):
    """The test bed could not do what was asked; the message says what and why."""

    __test__ = False  # a library class whose name starts with "Test": not a pytest test


class BinariesMissing(TestBedError):
    """The test bed binaries are not where we looked; the message says how to build them."""


class ClusterError(TestBedError):
    """A component of the cluster did not start or stop; the message names it and its log."""


class NetworkError(TestBedError):
    """A network namespace, veth, address or route could not be set up."""


class PodError(TestBedError):
    """The pod cannot run as specified; the message says which container or volume and why."""


class NotEmulated(PodError):
    """The pod asks for a Kubernetes feature the stand-in kubelet does not emulate."""
