"""Encryption to X25519 recipients, the node key's signature, decrypt and verify --public-key."""
