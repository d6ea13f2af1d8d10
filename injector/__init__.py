"""The mutating admission webhook and kube-inject: decide, render the sidecar, answer with a JSON Patch."""
