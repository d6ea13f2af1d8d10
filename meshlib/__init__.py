"""Code shared by every Remora role: version, logging, mesh config model, certificates, Kubernetes client.

Kept small and import-light: importing ``meshlib`` itself loads nothing.
"""
