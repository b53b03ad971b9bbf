"""How an archive is protected: encrypted to recipients' keys, signed with the node's key.

Both are decided before any check runs (a missing recipient key or an unusable node key
is a one-line error, exit 2, with nothing written). Signing is on by default once the
agent is installed: the node key lives in `state_dir` and is made on first use. An ad
hoc run on a machine where `state_dir` does not exist (and no `archive.signing_key` is
set) is not signed, and the manifest says so instead of leaving files behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from snapshot_agent.archive.crypto import load_recipients
from snapshot_agent.archive.signing import NodeKey, load_node_key, signing_key_path
from snapshot_agent.archive.writer import MANIFEST_SIG
from snapshot_agent.config import Config
from snapshot_agent.pipeline.record import SkippedItem


@dataclass
class Protection:
    """The recipients the archive is encrypted to and the key that signs its manifest."""

    recipients: list[X25519PublicKey] = field(default_factory=list)
    key: NodeKey | None = None
    skipped: list[SkippedItem] = field(default_factory=list)  # why it is not signed

    @classmethod
    def for_config(cls, config: Config) -> Protection:
        """Load the recipients' keys and the node key as the config asks."""
        archive = config.archive
        out = cls(load_recipients(archive.encrypt_to) if archive.encrypt_to else [])
        if not archive.sign:
            out.skipped.append(SkippedItem(MANIFEST_SIG, "not signed: archive.sign is false"))
            return out
        path = signing_key_path(config)
        state_dir = Path(config.state_dir)
        if archive.signing_key or path.exists() or state_dir.is_dir():
            out.key = load_node_key(path)
        else:
            out.skipped.append(
                SkippedItem(
                    MANIFEST_SIG,
                    f"not signed: no node key ({state_dir} does not exist on this machine; "
                    "the installed agent creates it, or set archive.signing_key)",
                )
            )
        return out
