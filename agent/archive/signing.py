"""The node's Ed25519 key, and `manifest.sig`: its signature of manifest.json.

The key lives at `archive.signing_key` (default `<state_dir>/keys/node-ed25519.pem`,
PKCS#8 PEM, 0600 in a 0700 directory). It is made on first use, with its public half
beside it (`node-ed25519.pub`, SubjectPublicKeyInfo PEM, 0644): that file is what an SRE
fetches from the node and passes to `snapshot-agent verify ARCHIVE --public-key FILE`.

`manifest.sig` follows manifest.json in the archive (it cannot be listed in the manifest
it signs). It is a small JSON document::

    {"algorithm": "ed25519", "key_id": "<hex SHA-256 of the raw 32-byte public key>",
     "signature": "<base64 of the 64-byte Ed25519 signature>"}

The signature is over the exact bytes of the manifest.json member, nothing added, so it
can be checked without the agent too: base64-decode "signature" into manifest.sig.bin and
run `openssl pkeyutl -verify -pubin -inkey node-ed25519.pub -rawin -in manifest.json
-sigfile manifest.sig.bin`. The key id only says which key signed; a signature is
trusted only against a public key the verifier holds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from snapshot_agent.archive.crypto import (
    key_id,
    load_key_file,
    public_key_path,
    raw_public,
    write_key_pair,
    write_whole,
)
from snapshot_agent.archive.writer import MANIFEST, MANIFEST_SIG, Entry
from snapshot_agent.config import Config
from snapshot_agent.errors import UsageError

ALGORITHM = "ed25519"
#: Far more than the JSON above; bounds what verify reads of a hostile manifest.sig.
MAX_SIGNATURE_BYTES = 4096
_DEFAULT_NAME = Path("keys", "node-ed25519.pem")


@dataclass(frozen=True)
class NodeKey:
    """The node's signing key, where it is, and its public half's path and id."""

    private: Ed25519PrivateKey
    path: Path
    public_path: Path
    key_id: str


@dataclass(frozen=True)
class Signature:
    """What manifest.sig holds."""

    key_id: str
    signature: bytes


def signing_key_path(config: Config) -> Path:
    """Where the node key is: `archive.signing_key`, else `<state_dir>/keys/node-ed25519.pem`."""
    configured = config.archive.signing_key
    return Path(configured) if configured else Path(config.state_dir) / _DEFAULT_NAME


def load_node_key(path: Path, create: bool = True) -> NodeKey:
    """The node key at `path`, made (with its directory, 0700) when absent and `create`.

    Anything wrong with it (unreadable, not an Ed25519 PEM key, readable by others, an
    unwritable directory) is a one-line UsageError naming the file.
    """
    if create and not os.path.lexists(path):
        _create(path)
    key = load_key_file(path, Ed25519PrivateKey, "Ed25519", private=True)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise UsageError(
            f"{path}: the node's signing key is readable or writable by others "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 {path}"
        )
    public = public_key_path(path)
    _export_public(key, public)
    return NodeKey(key, path, public, key_id(raw_public(key.public_key())))


def _create(path: Path) -> None:
    """Make a new node key at `path`, its directory 0700; another process may win the race."""
    try:
        if not path.parent.exists():
            with contextlib.suppress(FileExistsError):  # another run made it: go on
                path.parent.mkdir(mode=0o700, parents=True)
                path.parent.chmod(0o700)  # what a umask took off mkdir's mode: no more
        write_key_pair(Ed25519PrivateKey.generate(), path)
    except FileExistsError:  # the key made meanwhile by another run: use that one
        pass
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot create the node's signing key ({exc.strerror or exc}); "
            "set archive.signing_key or state_dir to a writable place, or archive.sign: false"
        ) from None


def _export_public(key: Ed25519PrivateKey, public: Path) -> None:
    """Keep `<key>.pub` in step with the key (rewritten when missing or different)."""
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with contextlib.suppress(OSError):
        if public.read_bytes() == pem:
            return
    with contextlib.suppress(OSError):  # a read-only key directory: signing still works
        write_whole(public, pem, 0o644, replace=True)


def sign_manifest(key: NodeKey, manifest: bytes) -> bytes:
    """The manifest.sig member for these exact manifest.json bytes."""
    document = {
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "signature": base64.b64encode(key.private.sign(manifest)).decode(),
    }
    return json.dumps(document, indent=2).encode() + b"\n"


def signed(entries: Iterable[Entry], key: NodeKey) -> Iterator[Entry]:
    """The entries, with manifest.sig right after manifest.json, signing the bytes as written.

    Put it outside any step that may change the manifest's bytes (the leak scan), so the
    signature is of what is stored, and so the signature itself is not rewritten. The
    manifest's chunks are kept as they pass (it is small, at most 16 MiB); manifest.sig
    is made when the writer asks for its bytes, once it has taken all the manifest's.
    """
    for entry in entries:
        if entry.path != MANIFEST:
            yield entry
            continue
        kept = _Kept(entry.chunks)
        yield Entry(MANIFEST, kept)
        yield Entry(MANIFEST_SIG, kept.signature(key))


class _Kept:
    """A manifest's chunks, kept as the writer takes them, then signed."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self._seen: list[bytes] = []
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._seen.append(bytes(chunk))
            yield chunk
        self._done = True

    def signature(self, key: NodeKey) -> Iterator[bytes]:
        """manifest.sig's one chunk, computed when asked for."""
        if not self._done:  # a writer that read ahead: signing now would sign a part
            raise RuntimeError("manifest.sig asked for before manifest.json was written")
        yield sign_manifest(key, b"".join(self._seen))


def parse_signature(member: bytes) -> Signature:
    """manifest.sig's content, or ValueError saying what is wrong with it."""
    if len(member) > MAX_SIGNATURE_BYTES:
        raise ValueError(f"larger than the {MAX_SIGNATURE_BYTES} bytes of any signature")
    try:
        document = json.loads(member)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting
        raise ValueError("not JSON") from None
    if not isinstance(document, dict) or document.get("algorithm") != ALGORITHM:
        raise ValueError(f'not a signature document with "algorithm": "{ALGORITHM}"')
    kid, encoded = document.get("key_id"), document.get("signature")
    if not isinstance(kid, str) or len(kid) != 64 or not isinstance(encoded, str):
        raise ValueError('its "key_id" or "signature" is missing or malformed')
    try:
        signature = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError('its "signature" is not base64') from None
    if len(signature) != 64:
        raise ValueError(f"its signature is {len(signature)} bytes, not 64")
    return Signature(kid.lower(), signature)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key (the node's `.pub`) from a PEM file."""
    return load_key_file(path, Ed25519PublicKey, "Ed25519", private=False)


def check_signature(manifest: bytes, member: bytes, public: Ed25519PublicKey) -> str | None:
    """Why manifest.sig does not vouch for `manifest` under `public`, or None when it does."""
    try:
        signature = parse_signature(member)
    except ValueError as exc:
        return f"malformed ({exc})"
    given = key_id(raw_public(public))
    if signature.key_id != given:
        return f"signed by key id {signature.key_id[:16]}, not by the key given ({given[:16]})"
    try:
        public.verify(signature.signature, manifest)
    except InvalidSignature:
        return "the signature does not match manifest.json (modified since it was signed)"
    return None
