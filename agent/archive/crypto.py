"""Encrypting a snapshot to X25519 recipients as a stream (`*.zip.enc`), and decrypting it.

Built like age (age-encryption.org/v1): a random 32-byte *file key* is wrapped for each
recipient with an ephemeral X25519 exchange, and the payload is sealed under keys derived
from it in 64 KiB chunks with the STREAM construction (a counter and a final-chunk flag in
every nonce), so a chunk changed, dropped, repeated, moved or cut off is detected. Only
`cryptography` is used: X25519, HKDF-SHA-256, HMAC-SHA-256 and AES-256-GCM.

Format, version 1 (integers big-endian; ``||`` is concatenation)::

    offset        size  field
    0             8     magic: 89 53 41 45 4E 43 0D 0A ("\\x89SAENC\\r\\n")
    8             1     version: 0x01
    9             2     N, the number of recipient stanzas: 1 to 64
    11            7     nonce prefix: random, fresh for each file
    18            112N  N recipient stanzas, each:
                          32  key id: SHA-256 of the recipient's raw 32-byte public key
                          32  ephemeral share: raw public key of a fresh X25519 key pair
                          48  wrapped file key: AES-256-GCM under the wrap key, nonce 12
                              zero bytes, no associated data (32 bytes + 16-byte tag)
    18+112N       32    header MAC: HMAC-SHA-256 under the MAC key of bytes 0 to 18+112N
    50+112N       ...   the payload: chunks of 65 536 plaintext bytes, each + a 16-byte tag

    shared secret = X25519(ephemeral secret, recipient)   (refused when all zero)
    wrap key      = HKDF-SHA-256(ikm = shared secret, salt = ephemeral share || recipient,
                                 info = "snapshot-agent.enc/v1 X25519")
    MAC key       = HKDF-SHA-256(ikm = file key, salt = none,
                                 info = "snapshot-agent.enc/v1 header")
    payload key   = HKDF-SHA-256(ikm = file key, salt = none,
                                 info = "snapshot-agent.enc/v1 payload")
    chunk i       = AES-256-GCM(payload key, nonce = prefix || uint32(i) || flag, chunk
                                plaintext, no associated data)      (i counts from 0)

Every HKDF output is 32 bytes; "salt = none" is RFC 5869's default of 32 zero bytes.
`flag` is 0x01 for the final chunk and 0x00 for every other. Every chunk but the final
one holds exactly 65 536 plaintext bytes; the final one holds 1 to 65 536, or 0 when the
whole plaintext is empty (it is then the only chunk). A reader therefore knows a chunk
is final only when the file ends right after it, and must open it with flag 0x01: a file
cut at a chunk boundary ends on a chunk sealed with 0x00, which does not open. A reader
checks the MAC before it releases any plaintext, and writes what it decrypts to a
temporary file it deletes on any failure, since a damaged chunk is found only when reached.

The key id tells a reader which stanza is its own without trying each (age leaves it out
for privacy; an operator here wants to see which keys can open an archive). Keys are
files in PEM: PKCS#8 private keys, SubjectPublicKeyInfo public keys, the form of
`openssl genpkey -algorithm X25519` and `openssl pkey -pubout`.

A snapshot stored this way is the ZIP's bytes encrypted: the size and sha256 the agent
records for the archive (the record, the S3 object metadata) are those of the bytes
stored, the `.zip.enc` file, as `EncryptingStream.size` and `.sha256` give them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO, TypeVar

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from snapshot_agent.errors import UsageError

MAGIC = b"\x89SAENC\r\n"
VERSION = 1
#: Plaintext bytes in every chunk but the final one.
CHUNK = 64 * 1024
TAG = 16
MAX_RECIPIENTS = 64
#: The name suffix of an encrypted snapshot.
SUFFIX = ".enc"

_FIXED = struct.Struct(">8sBH7s")  # magic, version, N, nonce prefix
_STANZA = 32 + 32 + 48
_MAC = 32
_MAX_CHUNKS = 2**32  # the counter's width: 256 TiB, far past any snapshot
_WRAP_INFO = b"snapshot-agent.enc/v1 X25519"
_HEADER_INFO = b"snapshot-agent.enc/v1 header"
_PAYLOAD_INFO = b"snapshot-agent.enc/v1 payload"
_ZERO_NONCE = bytes(12)
_Key = TypeVar("_Key")
#: More than any PEM key file holds; bounds what a key path given by mistake costs.
_MAX_KEY_FILE = 64 * 1024


class DecryptionError(Exception):
    """The file cannot be decrypted: not ours, not for this key, damaged or modified."""


def key_id(public_raw: bytes) -> str:
    """A public key's id: the hex SHA-256 of its raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()


def raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an X25519 or Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    """32 bytes of HKDF-SHA-256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    """The STREAM nonce of chunk `counter`."""
    return prefix + struct.pack(">IB", counter, final)


def _wrap_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    """The key that wraps the file key for one recipient."""
    if not any(shared):
        raise DecryptionError("its header is damaged (a recipient stanza has a low-order key)")
    return _hkdf(shared, ephemeral + recipient, _WRAP_INFO)


def _header(file_key: bytes, prefix: bytes, recipients: Sequence[X25519PublicKey]) -> bytes:
    """The header for `recipients` (one stanza each), with its MAC."""
    head = bytearray(_FIXED.pack(MAGIC, VERSION, len(recipients), prefix))
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share, raw = raw_public(ephemeral.public_key()), raw_public(recipient)
        wrap = _wrap_key(ephemeral.exchange(recipient), share, raw)
        head += (
            bytes.fromhex(key_id(raw)) + share + AESGCM(wrap).encrypt(_ZERO_NONCE, file_key, None)
        )
    mac = hmac.new(_hkdf(file_key, None, _HEADER_INFO), bytes(head), hashlib.sha256).digest()
    return bytes(head) + mac


class EncryptingStream:
    """A write-only stream that encrypts what it is given into `raw`, in the format above.

    The pipeline puts it between the ZIP writer and the sink. `close()` seals the final
    chunk and flushes `raw` but leaves it open: the sink that opened it commits or aborts
    it. Memory: one chunk. `size` and `sha256` are of the bytes written to `raw`.
    """

    def __init__(self, raw: IO[bytes], recipients: Sequence[X25519PublicKey]) -> None:
        unique = list({raw_public(r): r for r in recipients}.values())
        if not 1 <= len(unique) <= MAX_RECIPIENTS:
            raise ValueError(f"between 1 and {MAX_RECIPIENTS} recipients, not {len(unique)}")
        file_key, self._prefix = os.urandom(32), os.urandom(7)
        self._aead = AESGCM(_hkdf(file_key, None, _PAYLOAD_INFO))
        self._raw = raw
        self._pending = bytearray()  # at most CHUNK: held until more data shows it is not final
        self._counter = 0
        self._closed = False
        self._digest = hashlib.sha256()
        self.size = 0
        self._emit(_header(file_key, self._prefix, unique))

    @property
    def sha256(self) -> str:
        """The hex sha256 of every byte written to `raw` so far."""
        return self._digest.hexdigest()

    def write(self, data: bytes) -> int:
        """Encrypt `data`, sealing each chunk once more data shows it is not the last."""
        if self._closed:
            raise ValueError("write to a closed EncryptingStream")
        view = memoryview(data).cast("B")
        pos = min(CHUNK - len(self._pending), len(view))
        self._pending += view[:pos]
        if pos == len(view):
            return pos
        self._seal(self._pending, final=False)
        self._pending.clear()
        while len(view) - pos > CHUNK:  # whole chunks with more after them: no copy
            self._seal(view[pos : pos + CHUNK], final=False)
            pos += CHUNK
        self._pending += view[pos:]
        return len(view)

    def flush(self) -> None:
        """Flush `raw` (a partial chunk stays pending: chunks are sealed whole)."""
        self._raw.flush()

    def close(self) -> None:
        """Seal the final chunk and flush `raw`, leaving it open; idempotent."""
        if not self._closed:
            self._seal(self._pending, final=True)
            self._pending.clear()
            self._closed = True
            self._raw.flush()

    def _seal(self, chunk: bytes | bytearray | memoryview, final: bool) -> None:
        """Encrypt and write one chunk."""
        if self._counter >= _MAX_CHUNKS:
            raise ValueError("more than 2**32 chunks: the format's counter would wrap")
        self._emit(self._aead.encrypt(_nonce(self._prefix, self._counter, final), chunk, None))
        self._counter += 1

    def _emit(self, data: bytes) -> None:
        """Write to `raw`, counting and hashing."""
        self._raw.write(data)
        self._digest.update(data)
        self.size += len(data)


def decrypt(src: BinaryIO, dst: IO[bytes], identity: X25519PrivateKey) -> int:
    """Decrypt `src` (a buffered file, read from its start: a short read means its end)
    into `dst` one chunk at a time; the bytes written.

    Raises DecryptionError, saying why in a few words, on a file this key cannot open
    or that is damaged, cut short or modified; `dst` then holds part of the plaintext
    (the caller deletes it).
    """
    payload_key, prefix = _open_header(src, identity)
    aead = AESGCM(payload_key)
    written = counter = 0
    sealed = src.read(CHUNK + TAG)
    while True:
        if len(sealed) < TAG:
            raise DecryptionError(f"it is cut short inside chunk {counter}")
        after = src.read(1) if len(sealed) == CHUNK + TAG else b""
        final = not after  # a short chunk, or a full one the file ends with
        plain = _open_chunk(aead, prefix, counter, final, sealed)
        if final and not plain and counter:
            raise DecryptionError(f"chunk {counter} is an empty final chunk (never written)")
        dst.write(plain)
        written += len(plain)
        if final:
            return written
        counter += 1
        sealed = after + src.read(CHUNK + TAG - 1)


def _open_chunk(aead: AESGCM, prefix: bytes, counter: int, final: bool, sealed: bytes) -> bytes:
    """One chunk's plaintext, or DecryptionError saying how it differs from what was sealed."""
    try:
        return aead.decrypt(_nonce(prefix, counter, final), sealed, None)
    except InvalidTag:
        pass
    try:  # a chunk that opens as the other kind tells what happened to the file
        aead.decrypt(_nonce(prefix, counter, not final), sealed, None)
    except InvalidTag:
        where = f"bytes {counter * (CHUNK + TAG)} to {counter * (CHUNK + TAG) + len(sealed) - 1}"
        raise DecryptionError(
            f"chunk {counter} ({where} of the payload) is damaged, modified or out of order"
        ) from None
    if final:
        raise DecryptionError(f"it is cut short: it ends after chunk {counter}, not its last")
    raise DecryptionError(f"bytes follow its final chunk ({counter}): appended to")


def _open_header(src: BinaryIO, identity: X25519PrivateKey) -> tuple[bytes, bytes]:
    """Read and check the header: (payload key, nonce prefix), or DecryptionError."""
    fixed = src.read(_FIXED.size)
    magic, version, count, prefix = _FIXED.unpack(fixed.ljust(_FIXED.size, b"\0"))
    if magic != MAGIC:
        raise DecryptionError("not a snapshot-agent encrypted file (no .zip.enc header)")
    if len(fixed) < _FIXED.size:
        raise DecryptionError("its header is cut short")
    if version != VERSION:
        raise DecryptionError(
            f"format version {version}; this snapshot-agent reads version {VERSION}: "
            "use a newer snapshot-agent"
        )
    if not 1 <= count <= MAX_RECIPIENTS:
        raise DecryptionError(f"its header is damaged ({count} recipients)")
    stanzas = src.read(count * _STANZA)
    mac = src.read(_MAC)
    if len(mac) < _MAC:
        raise DecryptionError("its header is cut short")
    mine = raw_public(identity.public_key())
    ids = [stanzas[i : i + 32] for i in range(0, len(stanzas), _STANZA)]
    if bytes.fromhex(key_id(mine)) not in ids:
        listed = ", ".join(i.hex()[:16] for i in ids)
        raise DecryptionError(
            f"not encrypted to this key (key id {key_id(mine)[:16]}; it is for {listed})"
        )
    at = ids.index(bytes.fromhex(key_id(mine))) * _STANZA
    share, wrapped = stanzas[at + 32 : at + 64], stanzas[at + 64 : at + _STANZA]
    try:
        shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:  # an all-zero exchange, which OpenSSL refuses
        shared = bytes(32)
    try:
        file_key = AESGCM(_wrap_key(shared, share, mine)).decrypt(_ZERO_NONCE, wrapped, None)
    except InvalidTag:
        raise DecryptionError(
            "this key does not open it: its header is damaged or modified"
        ) from None
    expected = hmac.new(_hkdf(file_key, None, _HEADER_INFO), fixed + stanzas, hashlib.sha256)
    if not hmac.compare_digest(expected.digest(), mac):
        raise DecryptionError("its header is modified or damaged (its MAC does not match)")
    return _hkdf(file_key, None, _PAYLOAD_INFO), prefix


def read_key_file(path: Path, what: str) -> bytes:
    """A key file's bytes, or a one-line UsageError naming it (`what`: the kind of key).

    Opened without blocking and checked before reading: a FIFO or a device named by
    mistake is refused, never read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; pass a PEM {what} file") from None
    except OSError as exc:
        raise UsageError(
            f"{path}: cannot be read ({exc.strerror or exc}); {what} expected"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path}: not a regular file; pass a PEM {what} file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(_MAX_KEY_FILE + 1)
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > _MAX_KEY_FILE:
        raise UsageError(f"{path}: larger than any key file; pass a PEM {what} file")
    return data


def load_key_file(path: Path, kind: type[_Key], name: str, private: bool) -> _Key:
    """A `name` (X25519, Ed25519) key of type `kind`, private or public, from a PEM file,
    or a one-line UsageError naming the file."""
    side, other = ("private", "public") if private else ("public", "private")
    data = read_key_file(path, f"{name} {side} key")
    try:
        if private:
            key: object = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except TypeError:
        raise UsageError(
            f"{path}: the key is passphrase-protected; pass an unprotected one"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        held = f"{other.upper()} KEY".encode() in data
        hint = f" (it holds a {other} key: pass the {side} one)" if held else ""
        raise UsageError(f"{path}: not a PEM {side} key{hint}") from None
    if not isinstance(key, kind):
        raise UsageError(f"{path}: its key is {_kind(key)}, not {name}; pass an {name} {side} key")
    return key


def load_recipient(path: Path) -> X25519PublicKey:
    """An X25519 public key (a recipient) from a PEM file."""
    key = load_key_file(path, X25519PublicKey, "X25519", private=False)
    try:  # a low-order point: every exchange with it is all zeros, and refused
        X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise UsageError(f"{path}: not a usable X25519 public key (a low-order point)") from None
    return key


def load_recipients(paths: Sequence[str | Path]) -> list[X25519PublicKey]:
    """The recipients `archive.encrypt_to` names, each read and checked."""
    if len(paths) > MAX_RECIPIENTS:
        raise UsageError(
            f"archive.encrypt_to: {len(paths)} recipients, more than the {MAX_RECIPIENTS} "
            "an encrypted snapshot holds"
        )
    return [load_recipient(Path(p)) for p in paths]


def load_identity(path: Path) -> X25519PrivateKey:
    """An X25519 private key (a recipient's, to decrypt) from a PEM file."""
    return load_key_file(path, X25519PrivateKey, "X25519", private=True)


def _kind(key: object) -> str:
    """A key's algorithm for messages: Ed25519PublicKey -> Ed25519."""
    name = type(key).__name__.lstrip("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return name


def public_key_path(private_path: Path) -> Path:
    """Where a private key's public half is written: beside it, `.pem` -> `.pub`."""
    return private_path.with_suffix(".pub")


def write_key_pair(private: X25519PrivateKey | Ed25519PrivateKey, path: Path) -> Path:
    """Write `private` to `path` (PEM, 0600, never over a file) and its public half beside
    it (0644); the public key's path. FileExistsError when `path` exists."""
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_whole(path, pem, 0o600, replace=False)
    public = public_key_path(path)
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_whole(public, pub, 0o644, replace=True)
    return public


def write_whole(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Write a file whole or not at all (a temporary beside it, then linked or renamed)."""
    # Its own temporary (O_EXCL, never through a symlink), whichever process or thread.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # whatever the umask took off
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails, rather than overwrite, when `path` exists
    finally:
        temp.unlink(missing_ok=True)
