"""A real Kubernetes control plane on loopback for tests and demos (etcd, apiserver, controllers)."""
