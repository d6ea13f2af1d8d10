"""The markers the injector writes on a pod it gives a sidecar, and the control plane reads.

Both sides are a contract on the wire (the pod's metadata), so the names live here once. They
are Istio's, unchanged: a pod injected by Istio and one injected by Remora look alike to
either control plane, and ``kubectl get pods -l security.istio.io/tlsMode=istio`` works.
"""

# JSON of what was injected (containers, volumes...); its presence marks an injected pod and
# lets a second injection undo the first.
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
# Whether the pod's sidecar accepts mesh mTLS; clients send it mTLS only when this is "istio".
# A user may set it to something else ("disabled") to keep clients on plaintext.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TLS_MODE_ISTIO = "istio"
