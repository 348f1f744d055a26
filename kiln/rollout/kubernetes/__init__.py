"""The Kubernetes target: the API client, kiln's manifests, the target itself and pod logs."""
