"""The fleet simulator: every site's BMCs and every cluster's Kubernetes API in one process."""
