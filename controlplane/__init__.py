"""The control plane: Kubernetes state -> mesh model -> Envoy resources, served over xDS."""
