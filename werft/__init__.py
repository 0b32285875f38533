"""werft: provision and keep in shape a fleet of Kubernetes clusters from Git."""

__version__ = "0.1.0"
