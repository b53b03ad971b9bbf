"""The .zip.enc format: round trips, and every kind of damage refused before it is trusted.

`SpecReader` is a second reader written from crypto.py's docstring alone (raw primitives,
none of the module's code): it shows the format is documented well enough to reimplement,
and it seals files the writer never makes (an empty final chunk after data).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from snapshot_agent.archive.crypto import (
    CHUNK,
    MAX_RECIPIENTS,
    DecryptionError,
    EncryptingStream,
    decrypt,
)

TAG = 16
SEALED = CHUNK + TAG
STANZA = 112


def header_size(recipients: int) -> int:
    """Bytes before the payload, from the documented layout."""
    return 18 + STANZA * recipients + 32


def encrypt(data: bytes, keys: Sequence[X25519PrivateKey], piece: int | None = None) -> bytes:
    """`data` encrypted to `keys`, written in pieces of `piece` bytes (all at once if None)."""
    out = io.BytesIO()
    stream = EncryptingStream(out, [k.public_key() for k in keys])
    step = piece or max(len(data), 1)
    for at in range(0, len(data), step):
        assert stream.write(data[at : at + step]) == len(data[at : at + step])
    stream.close()
    blob = out.getvalue()
    assert (stream.size, stream.sha256) == (len(blob), hashlib.sha256(blob).hexdigest())
    return blob


def opened(blob: bytes, key: X25519PrivateKey) -> bytes:
    """The plaintext, through the module's reader."""
    out = io.BytesIO()
    assert decrypt(io.BytesIO(blob), out, key) == len(out.getvalue())
    return out.getvalue()


def refusal(blob: bytes, key: X25519PrivateKey) -> str:
    """Why the reader refuses `blob`."""
    with pytest.raises(DecryptionError) as caught:
        opened(blob, key)
    return str(caught.value)


def flipped(blob: bytes, at: int) -> bytes:
    """`blob` with one bit changed at byte `at`."""
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


def hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SpecReader:
    """The format as crypto.py's docstring gives it, and nothing else."""

    def __init__(self, blob: bytes, key: X25519PrivateKey) -> None:
        magic, version, count, self.prefix = struct.unpack(">8sBH7s", blob[:18])
        assert (magic, version) == (b"\x89SAENC\r\n", 1)
        end = 18 + STANZA * count
        mine = raw(key.public_key())
        for at in range(18, end, STANZA):
            if blob[at : at + 32] == hashlib.sha256(mine).digest():
                share, wrapped = blob[at + 32 : at + 64], blob[at + 64 : at + STANZA]
        shared = key.exchange(X25519PublicKey.from_public_bytes(share))
        wrap = hkdf(shared, share + mine, b"snapshot-agent.enc/v1 X25519")
        self.file_key = AESGCM(wrap).decrypt(bytes(12), wrapped, None)
        mac_key = hkdf(self.file_key, None, b"snapshot-agent.enc/v1 header")
        assert hmac.new(mac_key, blob[:end], hashlib.sha256).digest() == blob[end : end + 32]
        self.header = blob[: end + 32]
        self.payload = blob[end + 32 :]
        self.aead = AESGCM(hkdf(self.file_key, None, b"snapshot-agent.enc/v1 payload"))

    def nonce(self, counter: int, final: bool) -> bytes:
        return self.prefix + struct.pack(">I", counter) + (b"\x01" if final else b"\x00")

    def plaintext(self) -> bytes:
        chunks = [self.payload[i : i + SEALED] for i in range(0, len(self.payload), SEALED)]
        return b"".join(
            self.aead.decrypt(self.nonce(i, i == len(chunks) - 1), c, None)
            for i, c in enumerate(chunks)
        )

    def seal(self, chunks: Sequence[bytes]) -> bytes:
        """A file with this header and these plaintext chunks (the last one final)."""
        last = len(chunks) - 1
        return self.header + b"".join(
            self.aead.encrypt(self.nonce(i, i == last), c, None) for i, c in enumerate(chunks)
        )


@pytest.fixture(scope="module")
def keys() -> list[X25519PrivateKey]:
    return [X25519PrivateKey.generate() for _ in range(4)]


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK + 7]
)
def test_round_trip_at_every_chunk_boundary(keys: list[X25519PrivateKey], size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data, keys[:1])
    chunks = max(1, -(-size // CHUNK))  # a full last chunk is final: no empty chunk after it
    assert len(blob) == header_size(1) + size + TAG * chunks
    assert opened(blob, keys[0]) == data
    assert SpecReader(blob, keys[0]).plaintext() == data


@pytest.mark.parametrize("piece", [1, 7, 4096, CHUNK - 1, CHUNK, CHUNK + 3, 1024 * 1024])
def test_any_write_pattern_gives_the_same_chunks(keys: list[X25519PrivateKey], piece: int) -> None:
    data = os.urandom(2 * CHUNK + 1000) if piece > 1 else os.urandom(CHUNK + 5)
    blob = encrypt(data, keys[:1], piece)
    assert len(blob) == header_size(1) + len(data) + TAG * -(-len(data) // CHUNK)
    assert opened(blob, keys[0]) == data


def test_bytes_like_writes(keys: list[X25519PrivateKey]) -> None:
    out = io.BytesIO()
    stream = EncryptingStream(out, [keys[0].public_key()])
    stream.write(bytearray(b"abc"))
    stream.write(memoryview(b"defg"))
    stream.flush()  # flushes the sink, seals nothing: the chunk is not complete
    assert len(out.getvalue()) == header_size(1)
    stream.close()
    stream.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        stream.write(b"more")
    assert opened(out.getvalue(), keys[0]) == b"abcdefg"


def test_three_recipients_each_decrypt_and_others_cannot(keys: list[X25519PrivateKey]) -> None:
    data = os.urandom(CHUNK + 99)
    blob = encrypt(data, keys[:3])
    assert len(blob) == header_size(3) + len(data) + 2 * TAG
    for key in keys[:3]:
        assert opened(blob, key) == data
    why = refusal(blob, keys[3])
    assert why.startswith("not encrypted to this key")
    for key in keys[:3]:  # names the keys that can open it, by their key ids
        assert hashlib.sha256(raw(key.public_key())).hexdigest()[:16] in why


def test_recipients_are_deduplicated_and_bounded(keys: list[X25519PrivateKey]) -> None:
    blob = encrypt(b"x", [keys[0], keys[0]])
    assert len(blob) == header_size(1) + 1 + TAG
    with pytest.raises(ValueError, match="recipients"):
        EncryptingStream(io.BytesIO(), [])
    many = [X25519PrivateKey.generate().public_key() for _ in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(ValueError, match="recipients"):
        EncryptingStream(io.BytesIO(), many)


def test_every_file_has_fresh_keys(keys: list[X25519PrivateKey]) -> None:
    one, two = encrypt(b"same", keys[:1]), encrypt(b"same", keys[:1])
    assert one[:11] == two[:11]  # magic, version, count
    assert one[11:18] != two[11:18]  # nonce prefix
    assert one[18 + 32 : 18 + 64] != two[18 + 32 : 18 + 64]  # ephemeral share
    assert one[header_size(1) :] != two[header_size(1) :]


def test_every_header_byte_is_authenticated(keys: list[X25519PrivateKey]) -> None:
    """Including the stanza of the *other* recipient: the MAC covers the whole header."""
    blob = encrypt(os.urandom(100), keys[:2])
    for at in range(header_size(2)):
        why = refusal(flipped(blob, at), keys[0])
        assert why, at
    assert "MAC" in refusal(flipped(blob, 18 + STANZA + 40), keys[0])  # the other's share
    assert "MAC" in refusal(flipped(blob, 12), keys[0])  # the nonce prefix
    assert "not a snapshot-agent encrypted file" in refusal(flipped(blob, 0), keys[0])
    assert "format version" in refusal(flipped(blob, 8), keys[0])
    assert "does not open it" in refusal(flipped(blob, 18 + 64 + 3), keys[0])  # wrapped key


def test_a_changed_byte_in_the_middle_or_last_chunk(keys: list[X25519PrivateKey]) -> None:
    blob = encrypt(os.urandom(3 * CHUNK + 10), keys[:1])
    start = header_size(1)
    middle = start + SEALED + SEALED // 2
    assert refusal(flipped(blob, middle), keys[0]).startswith("chunk 1 ")
    assert refusal(flipped(blob, len(blob) - 1), keys[0]).startswith("chunk 3 ")  # its tag
    assert refusal(flipped(blob, start + 3 * SEALED), keys[0]).startswith("chunk 3 ")


def test_cut_short_at_a_chunk_boundary_or_inside_one(keys: list[X25519PrivateKey]) -> None:
    blob = encrypt(os.urandom(3 * CHUNK + 10), keys[:1])
    start = header_size(1)
    for chunks in (1, 2, 3):
        why = refusal(blob[: start + chunks * SEALED], keys[0])
        assert why == f"it is cut short: it ends after chunk {chunks - 1}, not its last"
    assert "cut short inside chunk 3" in refusal(blob[: start + 3 * SEALED + 5], keys[0])
    assert "chunk 3" in refusal(blob[:-1], keys[0])
    assert "cut short inside chunk 0" in refusal(blob[:start], keys[0])
    assert "cut short" in refusal(blob[: start - 1], keys[0])
    assert refusal(blob[:11], keys[0]) == "its header is cut short"
    assert refusal(blob[:17], keys[0]) == "its header is cut short"
    no_recipients = blob[:9] + b"\0\0" + blob[11:]
    assert refusal(no_recipients, keys[0]) == "its header is damaged (0 recipients)"


def test_full_last_chunk_cut_is_detected(keys: list[X25519PrivateKey]) -> None:
    """Two full chunks: dropping the final one leaves a full chunk sealed as not final."""
    blob = encrypt(os.urandom(2 * CHUNK), keys[:1])
    assert "cut short" in refusal(blob[:-SEALED], keys[0])


def test_reordered_dropped_or_repeated_chunks(keys: list[X25519PrivateKey]) -> None:
    blob = encrypt(os.urandom(4 * CHUNK + 10), keys[:1])
    start = header_size(1)
    head, payload = blob[:start], blob[start:]
    chunks = [payload[i : i + SEALED] for i in range(0, len(payload), SEALED)]
    swapped = head + b"".join([chunks[0], chunks[2], chunks[1], *chunks[3:]])
    assert "chunk 1 " in refusal(swapped, keys[0])
    assert "out of order" in refusal(swapped, keys[0])
    dropped = head + b"".join([chunks[0], *chunks[2:]])
    assert "chunk 1 " in refusal(dropped, keys[0])
    repeated = head + b"".join([chunks[0], chunks[0], *chunks[1:]])
    assert "chunk 1 " in refusal(repeated, keys[0])
    final_moved = head + b"".join([chunks[0], chunks[4]])
    assert "chunk 1 " in refusal(final_moved, keys[0])


def test_bytes_after_the_final_chunk(keys: list[X25519PrivateKey]) -> None:
    blob = encrypt(os.urandom(CHUNK), keys[:1])  # one full, final chunk
    assert "appended" in refusal(blob + b"\0", keys[0])
    assert "appended" in refusal(blob + blob[-SEALED:], keys[0])
    short = encrypt(os.urandom(10), keys[:1])
    assert "chunk 0" in refusal(short + b"junk", keys[0])


def test_chunks_of_another_file_do_not_fit(keys: list[X25519PrivateKey]) -> None:
    one = encrypt(os.urandom(2 * CHUNK + 1), keys[:1])
    two = encrypt(os.urandom(2 * CHUNK + 1), keys[:1])
    start = header_size(1)
    spliced = one[: start + SEALED] + two[start + SEALED :]
    assert "chunk 1 " in refusal(spliced, keys[0])
    assert "chunk 0 " in refusal(two[:start] + one[start:], keys[0])  # header of another


def test_an_empty_final_chunk_after_data_is_refused(keys: list[X25519PrivateKey]) -> None:
    """Valid chunks the writer never makes: one encoding per plaintext."""
    spec = SpecReader(encrypt(b"", keys[:1]), keys[0])
    assert opened(spec.seal([b""]), keys[0]) == b""
    assert opened(spec.seal([b"a" * CHUNK, b"b"]), keys[0]) == b"a" * CHUNK + b"b"
    assert "empty final chunk" in refusal(spec.seal([b"a" * CHUNK, b""]), keys[0])
    assert "chunk 0 " in refusal(spec.seal([b"a" * 10, b"b"]), keys[0])  # short, not final


def test_a_low_order_ephemeral_share_is_refused(keys: list[X25519PrivateKey]) -> None:
    blob = bytearray(encrypt(b"data", keys[:1]))
    blob[18 + 32 : 18 + 64] = bytes(32)  # the identity point: an all-zero shared secret
    assert "low-order" in refusal(bytes(blob), keys[0])


def test_not_an_encrypted_file(keys: list[X25519PrivateKey]) -> None:
    assert "not a snapshot-agent encrypted file" in refusal(b"PK\x03\x04" + bytes(100), keys[0])
    assert "not a snapshot-agent encrypted file" in refusal(b"", keys[0])
