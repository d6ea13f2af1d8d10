"""The sidecar agent: Envoy's bootstrap, supervision, health, probes, metrics and certificates."""
