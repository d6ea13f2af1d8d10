"""Remora: an Istio-compatible sidecar service mesh. This package is the command line only."""
