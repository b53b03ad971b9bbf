"""`keygen` and `decrypt`: the functions, their parsers in-process, and the real CLI.

The subcommands are registered in cli.py by the lead (`crypto_command.add_parsers`, and
`--public-key` on verify); the tests of the real CLI run once they are, and are skipped
(saying so) until then.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from snapshot_agent.archive.crypto import (
    CHUNK,
    EncryptingStream,
    load_identity,
    load_recipient,
    load_recipients,
    write_key_pair,
)
from snapshot_agent.archive.crypto_command import (
    KeyPair,
    add_parsers,
    decrypt_file,
    keygen,
)
from snapshot_agent.archive.signing import load_node_key, signed
from snapshot_agent.archive.writer import ArchiveWriter, Entry
from snapshot_agent.cli import build_parser
from snapshot_agent.errors import UsageError

from ..conftest import run_cli

TAG = 16


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def encrypt_file(path: Path, data: bytes, *publics: Path) -> Path:
    """`data` encrypted to the recipients at `publics`, written to `path`."""
    with path.open("wb") as raw:
        stream = EncryptingStream(raw, load_recipients(publics))
        stream.write(data)
        stream.close()
    return path


def pem_public(der: bytes) -> bytes:
    """A DER SubjectPublicKeyInfo as PEM."""
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([b"-----BEGIN PUBLIC KEY-----", *lines, b"-----END PUBLIC KEY-----", b""])


@pytest.fixture
def pair(tmp_path: Path) -> KeyPair:
    return keygen(tmp_path / "keys", "ops")


# keygen


def test_keygen_writes_a_private_and_a_public_key(tmp_path: Path) -> None:
    pair = keygen(tmp_path / "new" / "keys")
    assert pair.private == tmp_path / "new/keys/snapshot-recipient.pem"
    assert pair.public == tmp_path / "new/keys/snapshot-recipient.pub"
    assert (mode(pair.private.parent), mode(pair.private), mode(pair.public)) == (
        0o700,
        0o600,
        0o644,
    )
    assert pair.private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    load_identity(pair.private)
    load_recipient(pair.public)
    assert sorted(p.name for p in pair.private.parent.iterdir()) == [
        "snapshot-recipient.pem",
        "snapshot-recipient.pub",
    ]  # no temporary left


def test_keygen_never_overwrites(pair: KeyPair) -> None:
    before = pair.private.read_bytes()
    with pytest.raises(UsageError, match="exists; keygen never overwrites"):
        keygen(pair.private.parent, "ops")
    assert pair.private.read_bytes() == before
    with pytest.raises(UsageError, match="not a file name"):
        keygen(pair.private.parent, "../ops")


def test_keys_made_by_openssl_work(tmp_path: Path) -> None:
    """The PEM forms are openssl's: keys made there encrypt and decrypt."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "X25519", "-out", private], check=True)
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
    encrypted = encrypt_file(tmp_path / "a.zip.enc", b"payload", public)
    assert decrypt_file(encrypted, private).read_bytes() == b"payload"


@pytest.mark.parametrize(
    ("make", "loader", "message"),
    [
        ("public", load_identity, "not a PEM private key (it holds a public key"),
        ("private", load_recipient, "not a PEM public key (it holds a private key"),
        ("ed25519", load_identity, "its key is Ed25519, not X25519"),
        ("garbage", load_recipient, "not a PEM public key"),
        ("missing", load_identity, "no such file"),
        ("directory", load_recipient, "not a regular file"),
        ("fifo", load_identity, "not a regular file"),
        ("low order", load_recipient, "not a usable X25519 public key (a low-order point)"),
    ],
)
def test_bad_key_files(
    tmp_path: Path, pair: KeyPair, make: str, loader: Callable[[Path], object], message: str
) -> None:
    path = {
        "public": pair.public,
        "private": pair.private,
        "ed25519": tmp_path / "ed.pem",
        "garbage": tmp_path / "garbage.pem",
        "missing": tmp_path / "missing.pem",
        "directory": tmp_path,
        "fifo": tmp_path / "fifo",
        "low order": tmp_path / "zero.pub",
    }[make]
    if make == "ed25519":
        write_key_pair(Ed25519PrivateKey.generate(), path)
    elif make == "garbage":
        path.write_bytes(os.urandom(100))
    elif make == "fifo":
        os.mkfifo(path)  # must not block: never opened for reading
    elif make == "low order":  # the point 0 in SubjectPublicKeyInfo: valid PEM, unusable key
        der = bytes.fromhex("302a300506032b656e032100") + bytes(32)
        path.write_bytes(pem_public(der))
    with pytest.raises(UsageError) as caught:
        loader(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_too_many_recipients_is_a_config_error(pair: KeyPair) -> None:
    assert len(load_recipients([pair.public] * 64)) == 64
    with pytest.raises(UsageError, match=r"archive\.encrypt_to: 65 recipients, more than the 64"):
        load_recipients([pair.public] * 65)


# decrypt


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK + 1])
def test_decrypt_beside_the_file(tmp_path: Path, pair: KeyPair, size: int) -> None:
    data = os.urandom(size)
    encrypted = encrypt_file(tmp_path / "snapshot-1.zip.enc", data, pair.public)
    out = decrypt_file(encrypted, pair.private)
    assert out == tmp_path / "snapshot-1.zip"
    assert out.read_bytes() == data
    assert mode(out) == 0o600


def test_decrypt_to_a_file_or_into_a_directory(tmp_path: Path, pair: KeyPair) -> None:
    encrypted = encrypt_file(tmp_path / "s.zip.enc", b"data", pair.public)
    assert decrypt_file(encrypted, pair.private, tmp_path / "x.zip").read_bytes() == b"data"
    (tmp_path / "out").mkdir()
    assert decrypt_file(encrypted, pair.private, tmp_path / "out") == tmp_path / "out/s.zip"


def test_decrypt_never_overwrites(tmp_path: Path, pair: KeyPair) -> None:
    encrypted = encrypt_file(tmp_path / "s.zip.enc", b"data", pair.public)
    (tmp_path / "s.zip").write_bytes(b"mine")
    with pytest.raises(UsageError, match="exists; decrypt never overwrites"):
        decrypt_file(encrypted, pair.private)
    assert (tmp_path / "s.zip").read_bytes() == b"mine"
    with pytest.raises(UsageError, match="never stdout"):
        decrypt_file(encrypted, pair.private, Path("-"))
    other = encrypt_file(tmp_path / "s.bin", b"data", pair.public)
    with pytest.raises(UsageError, match=r"does not end with \.enc; pass -o OUT"):
        decrypt_file(other, pair.private)


def damaged(blob: bytes, how: str) -> bytes:
    """An encrypted file changed in one of the ways an attacker or a bad disk would."""
    header = len(blob) - 2 * (CHUNK + TAG) - (100 + TAG)  # 3 chunks: 2 full, 100 bytes
    sealed = CHUNK + TAG
    if how == "header":
        return blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    if how == "middle chunk":
        at = header + sealed + 500
        return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]
    if how == "last chunk":
        return blob[:-1] + bytes([blob[-1] ^ 1])
    if how == "cut at a chunk boundary":
        return blob[: header + 2 * sealed]
    if how == "reordered":
        one, two = blob[header : header + sealed], blob[header + sealed : header + 2 * sealed]
        return blob[:header] + two + one + blob[header + 2 * sealed :]
    raise AssertionError(how)


HOW = ["header", "middle chunk", "last chunk", "cut at a chunk boundary", "reordered"]


@pytest.mark.parametrize("how", HOW)
def test_damaged_file_leaves_nothing(tmp_path: Path, pair: KeyPair, how: str) -> None:
    data = os.urandom(2 * CHUNK + 100)
    blob = encrypt_file(tmp_path / "s.zip.enc", data, pair.public).read_bytes()
    (tmp_path / "s.zip.enc").write_bytes(damaged(blob, how))
    with pytest.raises(UsageError) as caught:
        decrypt_file(tmp_path / "s.zip.enc", pair.private)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 's.zip.enc'}: cannot be decrypted: ")
    assert message.endswith("; nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "s.zip.enc"]


def test_wrong_key_leaves_nothing(tmp_path: Path, pair: KeyPair) -> None:
    other = keygen(tmp_path / "other", "ops")
    encrypted = encrypt_file(tmp_path / "s.zip.enc", b"data", pair.public)
    with pytest.raises(UsageError, match="not encrypted to this key"):
        decrypt_file(encrypted, other.private)
    assert not (tmp_path / "s.zip").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_decrypt_input_errors(tmp_path: Path, pair: KeyPair) -> None:
    with pytest.raises(UsageError, match="no such file"):
        decrypt_file(tmp_path / "none.zip.enc", pair.private)
    with pytest.raises(UsageError, match="not a regular file"):
        decrypt_file(tmp_path, pair.private)
    plain = tmp_path / "plain.zip.enc"
    plain.write_bytes(b"PK\x03\x04 not encrypted")
    with pytest.raises(UsageError, match="not a snapshot-agent encrypted file"):
        decrypt_file(plain, pair.private)
    assert not (tmp_path / "plain.zip").exists()


def test_parsers_and_handlers_in_process(
    tmp_path: Path, pair: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    """What cli.py registers: `add_parsers` gives the parsers and their handlers."""
    parser = argparse.ArgumentParser(prog="snapshot-agent")
    sub = parser.add_subparsers(dest="command")
    versions: list[str] = []
    handlers = add_parsers(sub, lambda p: versions.append(p.prog))
    assert versions == ["snapshot-agent decrypt", "snapshot-agent keygen"]
    args = parser.parse_args(["keygen", "--out", str(tmp_path / "k"), "--name", "a"])
    assert handlers[args.command](args) == 0
    assert f"public key:  {tmp_path / 'k/a.pub'}" in capsys.readouterr().out
    encrypted = encrypt_file(tmp_path / "s.zip.enc", b"data", tmp_path / "k/a.pub")
    args = parser.parse_args(["decrypt", str(encrypted), "-k", str(tmp_path / "k/a.pem")])
    assert handlers[args.command](args) == 0
    assert capsys.readouterr().out == f"{tmp_path / 's.zip'}\n"


# The real CLI, once the lead has wired the subcommands


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices) if found else {}


WIRED = {"decrypt", "keygen"} <= _commands().keys()
VERIFY_KEY = "--public-key" in _commands()["verify"]._option_string_actions
needs_wiring = pytest.mark.skipif(not WIRED, reason="decrypt/keygen not registered in cli.py yet")
needs_public_key = pytest.mark.skipif(not VERIFY_KEY, reason="verify --public-key not wired yet")


def test_encrypted_real_archive_decrypts_to_one_verify_accepts(
    tmp_path: Path, cli_archive: Path, pair: KeyPair
) -> None:
    encrypted = encrypt_file(
        tmp_path / f"{cli_archive.name}.enc", cli_archive.read_bytes(), pair.public
    )
    out = decrypt_file(encrypted, pair.private)
    assert out.read_bytes() == cli_archive.read_bytes()
    proc = run_cli("verify", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_writer_streams_into_the_encryption(
    tmp_path: Path, cli_archive: Path, pair: KeyPair
) -> None:
    """The pipeline's shape: ZIP writer -> EncryptingStream -> file; sizes are the stored ones."""
    key = load_node_key(tmp_path / "node/node-ed25519.pem")
    with zipfile.ZipFile(cli_archive) as zf:
        entries = [Entry(i.filename, [zf.read(i)]) for i in zf.infolist()]
    encrypted = tmp_path / f"{cli_archive.name}.enc"
    with encrypted.open("wb") as raw:
        stream = EncryptingStream(raw, load_recipients([pair.public]))
        writer = ArchiveWriter(stream)  # type: ignore[arg-type]
        writer.add_all(signed(entries, key))
        zip_size, _ = writer.close()
        stream.close()
    blob = encrypted.read_bytes()
    assert stream.size == len(blob) > zip_size
    assert stream.sha256 == hashlib.sha256(blob).hexdigest()
    out = decrypt_file(encrypted, pair.private)
    assert out.stat().st_size == zip_size
    proc = run_cli("verify", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_wiring
def test_cli_keygen_then_decrypt(tmp_path: Path, cli_archive: Path) -> None:
    proc = run_cli("keygen", "--out", tmp_path / "keys")
    assert proc.returncode == 0, proc.stderr
    public = tmp_path / "keys/snapshot-recipient.pub"
    encrypted = encrypt_file(tmp_path / f"{cli_archive.name}.enc", cli_archive.read_bytes(), public)
    proc = run_cli("decrypt", encrypted, "--key", tmp_path / "keys/snapshot-recipient.pem")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert Path(proc.stdout.strip()).read_bytes() == cli_archive.read_bytes()
    again = run_cli("keygen", "--out", tmp_path / "keys")
    assert again.returncode == 2 and "never overwrites" in again.stderr


@needs_wiring
@pytest.mark.parametrize("how", [*HOW, "wrong key"])
def test_cli_decrypt_refuses_in_one_line(tmp_path: Path, pair: KeyPair, how: str) -> None:
    blob = encrypt_file(
        tmp_path / "s.zip.enc", os.urandom(2 * CHUNK + 100), pair.public
    ).read_bytes()
    key = pair.private
    if how == "wrong key":
        key = keygen(tmp_path / "other").private
    else:
        (tmp_path / "s.zip.enc").write_bytes(damaged(blob, how))
    proc = run_cli("decrypt", tmp_path / "s.zip.enc", "--key", key)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot be decrypted" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.zip").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@needs_public_key
def test_cli_verify_public_key(tmp_path: Path, cli_archive: Path) -> None:
    key = load_node_key(tmp_path / "keys/node-ed25519.pem")
    other = load_node_key(tmp_path / "other/node-ed25519.pem")
    with zipfile.ZipFile(cli_archive) as zf:
        entries = [Entry(i.filename, [zf.read(i)]) for i in zf.infolist()]
    archive = tmp_path / "signed.zip"
    with archive.open("wb") as out:
        writer = ArchiveWriter(out)
        writer.add_all(signed(entries, key))
        writer.close()
    good = run_cli("verify", archive, "--public-key", key.public_path)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run_cli("verify", archive, "--public-key", other.public_path)
    assert bad.returncode == 1
    assert "MISMATCH manifest.sig: signed by key id" in bad.stdout
    unsigned = run_cli("verify", cli_archive, "--public-key", key.public_path)
    assert unsigned.returncode == 1 and "MISMATCH manifest.sig: missing" in unsigned.stdout
