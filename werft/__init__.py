"""werft: provision and keep in shape a fleet of Kubernetes clusters from Git."""

__version__ = "0.1.0"

# One redaction layer for the whole process (werft.redact): every log record -- werft's,
# Prefect's, httpx's -- is masked from its creation on. Every entry point (the CLI, flows
# run by a worker, tasks) imports this package first, so this is the one place.
from werft.redact import install as _install_redaction

_install_redaction()
