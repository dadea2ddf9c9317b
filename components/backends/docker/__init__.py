"""The Docker backend: backend.py (BACKEND: an agent as a container), driver.py (containers,
volumes, networks, images through the Engine API), apply.py (in-place changes), engines.py (the
engine client for the local engine and ssh:// ones, trusting only pinned host keys)."""
