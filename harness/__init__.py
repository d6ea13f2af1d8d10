"""Harnesses for Remora's tests and benchmarks: never shipped in the wheel or the image.

What a test or a benchmark needs to stand the product up around itself — builders of
Kubernetes objects, an in-process control plane, an SDS server with a test CA, a mesh of pods
in network namespaces — lives here, once, so ``tests/`` and ``bench/`` import it like any
package. The product never imports it (import-linter's layers put it on top), and the wheel's
package list leaves it out.
"""
