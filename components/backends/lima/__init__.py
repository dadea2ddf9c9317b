"""The Lima backend: backend.py (BACKEND: an agent as a Lima VM), driver.py (limactl: the VM's
driver and the parsers of limactl's output)."""
