"""The Multipass backend: backend.py (BACKEND: an agent as a Multipass VM), driver.py (the
multipass CLI contract and the VM's driver)."""
