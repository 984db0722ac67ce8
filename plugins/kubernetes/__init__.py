"""The Kubernetes plugin: a KubeMacPool-compatible admission webhook, its reconciler,
certificates and deployment manifests (see DESIGN §5)."""
