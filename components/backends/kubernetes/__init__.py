"""The Kubernetes backend: backend.py (BACKEND: an agent as a pod, through pulumi-kubernetes),
preflight.py (the checks on each cluster before anything is created)."""
