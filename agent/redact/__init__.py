"""The redactor: every byte that leaves the node passes it (see redactor.py)."""
