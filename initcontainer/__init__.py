"""The capture init container: plan iptables rules that redirect pod traffic to the sidecar, and install them."""
