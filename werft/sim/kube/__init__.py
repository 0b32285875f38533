"""The Kubernetes API emulation: one object store and API per simulated cluster."""
