"""The node's Ed25519 key, manifest.sig, and `verify` with and without --public-key.

The archives are real: made by the CLI (`run --only system.info`), then streamed through
the archive writer again with `signed()` adding manifest.sig after manifest.json, as the
pipeline does (signing is wired into `run` by the lead).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from snapshot_agent.archive.crypto import EncryptingStream, key_id, write_key_pair
from snapshot_agent.archive.signing import (
    NodeKey,
    check_signature,
    load_node_key,
    load_public_key,
    parse_signature,
    sign_manifest,
    signed,
    signing_key_path,
)
from snapshot_agent.archive.verify import verify_archive
from snapshot_agent.archive.writer import MANIFEST, MANIFEST_SIG, ArchiveWriter, Entry
from snapshot_agent.config import ArchiveConfig, Config
from snapshot_agent.errors import UsageError
from tests.conftest import started_at_once

from ..conftest import run_cli

AS_ROOT = os.geteuid() == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def node_key(tmp_path_factory: pytest.TempPathFactory) -> NodeKey:
    return load_node_key(tmp_path_factory.mktemp("state") / "keys" / "node-ed25519.pem")


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> NodeKey:
    return load_node_key(tmp_path_factory.mktemp("other") / "keys" / "node-ed25519.pem")


Edit = Callable[[list[Entry]], list[Entry]]


def rewrite(src: Path, dst: Path, key: NodeKey | None = None, edit: Edit | None = None) -> Path:
    """`src`'s members streamed into `dst` again (changed by `edit`, then signed by `key`)."""
    with zipfile.ZipFile(src) as zf:
        entries = [Entry(i.filename, [zf.read(i)]) for i in zf.infolist()]
    if edit is not None:
        entries = edit(entries)
    if key is not None:
        entries = list(signed(entries, key))
    with dst.open("wb") as out:
        writer = ArchiveWriter(out)
        writer.add_all(entries)
        writer.close()
    return dst


def replaced(name: str, data: bytes) -> Edit:
    """An edit that gives member `name` the content `data`."""
    return lambda entries: [Entry(e.path, [data]) if e.path == name else e for e in entries]


def member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


# The node key


def test_node_key_is_made_on_first_use(tmp_path: Path) -> None:
    path = signing_key_path(Config(state_dir=str(tmp_path / "state")))
    assert path == tmp_path / "state" / "keys" / "node-ed25519.pem"
    key = load_node_key(path)
    assert (mode(path.parent), mode(path), mode(key.public_path)) == (0o700, 0o600, 0o644)
    assert key.public_path == path.parent / "node-ed25519.pub"
    public = load_public_key(key.public_path)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == key_id(raw)
    again = load_node_key(path)
    assert again.key_id == key.key_id  # the same key, not a new one
    key.public_path.unlink()  # the .pub comes back, as it was
    load_node_key(path)
    assert (
        load_public_key(key.public_path).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        == raw
    )


def test_configured_key_path(tmp_path: Path) -> None:
    config = Config(archive=ArchiveConfig(signing_key=str(tmp_path / "k.pem")))
    assert signing_key_path(config) == tmp_path / "k.pem"
    assert load_node_key(tmp_path / "k.pem").public_path == tmp_path / "k.pub"


def test_without_create_a_missing_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_node_key(tmp_path / "none.pem", create=False)
    assert not (tmp_path / "none.pem").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key\n", "not a PEM private key"),
        (b"", "not a PEM private key"),
        ("x25519", "its key is X25519, not Ed25519"),
    ],
)
def test_bad_key_file_is_one_line_naming_it(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "node.pem"
    if content == "x25519":
        write_key_pair(X25519PrivateKey.generate(), path)
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
        path.chmod(0o600)
    with pytest.raises(UsageError) as caught:
        load_node_key(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    load_node_key(path)
    path.chmod(0o644)
    with pytest.raises(
        UsageError, match=r"readable or writable by others \(mode 0644\); chmod 600"
    ):
        load_node_key(path)


def test_key_that_is_a_directory_or_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "dir.pem").mkdir()
    with pytest.raises(UsageError, match=r"dir\.pem: not a regular file"):
        load_node_key(tmp_path / "dir.pem")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot create the node's signing key"):
        load_node_key(tmp_path / "file" / "keys" / "node.pem")


@pytest.mark.skipif(AS_ROOT, reason="root reads any file")
def test_unreadable_key(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    load_node_key(path)
    path.chmod(0)
    with pytest.raises(UsageError, match="cannot be read"):
        load_node_key(path)


# The signature


def test_sign_and_check(node_key: NodeKey, other_key: NodeKey) -> None:
    manifest = b'{"members": []}\n'
    sig = sign_manifest(node_key, manifest)
    document = json.loads(sig)
    assert document["algorithm"] == "ed25519"
    assert document["key_id"] == node_key.key_id
    assert len(base64.b64decode(document["signature"])) == 64
    public = load_public_key(node_key.public_path)
    assert check_signature(manifest, sig, public) is None
    assert "modified" in (check_signature(manifest + b" ", sig, public) or "")
    wrong = load_public_key(other_key.public_path)
    assert "signed by key id" in (check_signature(manifest, sig, wrong) or "")
    # the key id is only a label: a forged one still fails on the signature itself
    forged = json.dumps({**document, "key_id": other_key.key_id}).encode()
    assert "does not match" in (check_signature(manifest, forged, wrong) or "")


@pytest.mark.parametrize(
    ("member_bytes", "why"),
    [
        (b"\x00" * 64, "not JSON"),
        (b"[]", "algorithm"),
        (b'{"algorithm": "rsa", "key_id": "00", "signature": ""}', "algorithm"),
        (b'{"algorithm": "ed25519", "key_id": 1, "signature": ""}', "key_id"),
        (b'{"algorithm": "ed25519", "key_id": "' + b"a" * 64 + b'", "signature": "!"}', "base64"),
        (
            b'{"algorithm": "ed25519", "key_id": "' + b"a" * 64 + b'", "signature": "AA=="}',
            "1 bytes",
        ),
        (b"[" * 4000, "not JSON"),
        (b" " * 5000, "larger"),
    ],
)
def test_malformed_signatures(member_bytes: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_signature(member_bytes)


def test_openssl_checks_the_signature_too(tmp_path: Path, node_key: NodeKey) -> None:
    """The documented way to check manifest.sig without the agent."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(b'{"members": []}\n')
    document = json.loads(sign_manifest(node_key, manifest.read_bytes()))
    sig = tmp_path / "manifest.sig.bin"
    sig.write_bytes(base64.b64decode(document["signature"]))
    argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(node_key.public_path)]
    argv += ["-rawin", "-in", str(manifest), "-sigfile", str(sig)]
    assert subprocess.run(argv, capture_output=True, check=False).returncode == 0
    manifest.write_bytes(b'{"members": [1]}\n')
    assert subprocess.run(argv, capture_output=True, check=False).returncode != 0


def test_signed_refuses_to_sign_a_manifest_not_yet_written(node_key: NodeKey) -> None:
    entries = signed([Entry(MANIFEST, [b"{}"])], node_key)
    manifest, signature = next(entries), next(entries)
    with pytest.raises(RuntimeError, match=r"before manifest\.json was written"):
        list(signature.chunks)
    manifest, signature = signed([Entry(MANIFEST, [b"{", b"}"])], node_key)
    assert list(manifest.chunks) == [b"{", b"}"]
    sig = b"".join(signature.chunks)
    assert check_signature(b"{}", sig, load_public_key(node_key.public_path)) is None


# verify on real archives


def test_signed_archive_verifies_with_the_right_key(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey
) -> None:
    archive = rewrite(cli_archive, tmp_path / "signed.zip", node_key)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert names[-2:] == [MANIFEST, MANIFEST_SIG]  # right after the manifest
    manifest = member(archive, MANIFEST)
    sig = member(archive, MANIFEST_SIG)
    assert check_signature(manifest, sig, load_public_key(node_key.public_path)) is None
    result = verify_archive(archive, node_key.public_path)
    assert result.ok, result.problems
    assert result.checked == len(names) - 2
    assert result.signature.startswith("valid: manifest.json signed by the key given")


def test_signed_archive_without_a_key_is_not_checked(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey
) -> None:
    archive = rewrite(cli_archive, tmp_path / "signed.zip", node_key)
    result = verify_archive(archive)
    assert result.ok, result.problems
    assert result.signature == (
        f"present (key id {node_key.key_id[:16]}), not checked: "
        "to check it, pass the node's .pub as --public-key"
    )


def test_wrong_key_fails(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey, other_key: NodeKey
) -> None:
    archive = rewrite(cli_archive, tmp_path / "signed.zip", node_key)
    result = verify_archive(archive, other_key.public_path)
    assert not result.ok
    assert result.problems == [
        f"manifest.sig: signed by key id {node_key.key_id[:16]}, "
        f"not by the key given ({other_key.key_id[:16]})"
    ]
    assert result.signature.startswith("INVALID: signed by key id")


def test_modified_manifest_fails(tmp_path: Path, cli_archive: Path, node_key: NodeKey) -> None:
    """Every digest still matches: only the signature shows the manifest was changed."""
    signed_archive = rewrite(cli_archive, tmp_path / "signed.zip", node_key)
    doc = json.loads(member(signed_archive, MANIFEST))
    doc["agent_version"] = "0.0.0-forged"
    edit = replaced(MANIFEST, json.dumps(doc, indent=2).encode())
    forged = rewrite(signed_archive, tmp_path / "forged.zip", edit=edit)
    assert member(forged, MANIFEST_SIG) == member(signed_archive, MANIFEST_SIG)
    assert verify_archive(forged).ok  # without the key, nothing to notice
    result = verify_archive(forged, node_key.public_path)
    assert result.problems == [
        "manifest.sig: the signature does not match manifest.json (modified since it was signed)"
    ]


def test_unsigned_archive(tmp_path: Path, cli_archive: Path, node_key: NodeKey) -> None:
    result = verify_archive(cli_archive)
    assert result.ok and result.signature.startswith("none: the archive is not signed")
    result = verify_archive(cli_archive, node_key.public_path)
    assert result.problems == [
        "manifest.sig: missing, but a signed archive was asked for (--public-key)"
    ]


def test_malformed_signature_member_fails_even_without_a_key(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey
) -> None:
    signed_archive = rewrite(cli_archive, tmp_path / "signed.zip", node_key)
    bad = rewrite(signed_archive, tmp_path / "bad.zip", edit=replaced(MANIFEST_SIG, b"junk"))
    assert verify_archive(bad).problems == ["manifest.sig: malformed (not JSON)"]
    big = rewrite(signed_archive, tmp_path / "big.zip", edit=replaced(MANIFEST_SIG, b" " * 5000))
    assert "larger than" in verify_archive(big).problems[0]


def test_signature_listed_in_the_manifest_is_refused(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey
) -> None:
    doc = json.loads(member(cli_archive, MANIFEST))
    doc["members"].append({"path": MANIFEST_SIG, "size": 1, "sha256": "0" * 64})
    edit = replaced(MANIFEST, json.dumps(doc).encode())
    archive = rewrite(cli_archive, tmp_path / "listed.zip", node_key, edit=edit)
    problems = verify_archive(archive).problems
    assert problems == ["manifest.sig: listed in the manifest (the agent never lists it there)"]


def test_bad_public_key_file_is_a_usage_error(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey
) -> None:
    with pytest.raises(UsageError, match="holds a private key: pass the public one"):
        verify_archive(cli_archive, node_key.path)
    x25519 = tmp_path / "x.pem"
    write_key_pair(X25519PrivateKey.generate(), x25519)
    with pytest.raises(UsageError, match="its key is X25519, not Ed25519"):
        verify_archive(cli_archive, tmp_path / "x.pub")
    with pytest.raises(UsageError, match="no such file"):
        verify_archive(cli_archive, tmp_path / "missing.pub")


def test_cli_verify_accepts_a_signed_archive(
    tmp_path: Path, cli_archive: Path, node_key: NodeKey
) -> None:
    """The wired `verify` (no --public-key yet) treats manifest.sig as the agent's own."""
    archive = rewrite(cli_archive, tmp_path / "signed.zip", node_key)
    proc = run_cli("verify", archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISMATCH" not in proc.stdout


def test_cli_verify_refuses_an_encrypted_archive(tmp_path: Path, cli_archive: Path) -> None:
    encrypted = tmp_path / f"{cli_archive.name}.enc"
    with encrypted.open("wb") as raw:
        stream = EncryptingStream(raw, [X25519PrivateKey.generate().public_key()])
        stream.write(cli_archive.read_bytes())
        stream.close()
    proc = run_cli("verify", encrypted)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"snapshot-agent: {encrypted}: an encrypted snapshot; decrypt it first "
        "(snapshot-agent decrypt FILE.zip.enc with a recipient's private key), "
        "then verify the .zip\n"
    )


def test_node_key_made_by_openssl_is_used_as_it_is(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    path = tmp_path / "node.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True)
    path.chmod(0o600)
    loaded = load_node_key(path)
    assert isinstance(loaded.private, Ed25519PrivateKey)
    pub = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-pubout"], capture_output=True, check=True
    ).stdout
    assert loaded.public_path.read_bytes() == pub


FIRST_KEY = """
import sys
from pathlib import Path
from snapshot_agent.archive.signing import load_node_key
print("ready", flush=True)
sys.stdin.readline()  # the start line: every process is up and waiting
print(load_node_key(Path(sys.argv[1])).key_id, flush=True)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_runs_making_the_first_key_at_once_agree_on_one(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / "state" / "keys" / "node-ed25519.pem"
    answers = started_at_once(FIRST_KEY, str(path), count=6)
    assert all(code == 0 for code, _, _ in answers), [err for _, _, err in answers]
    assert {out for _, out, _ in answers} == {f"{load_node_key(path).key_id}\n"}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_threads_making_the_first_key_at_once_agree_on_one(tmp_path: Path) -> None:
    """Threads of one process (a caller taking snapshots in-process) each write their own
    temporary: none mistakes another's for the key."""
    path = tmp_path / "state" / "keys" / "node-ed25519.pem"
    gate = threading.Barrier(8, timeout=30)
    found: list[str] = []
    failed: list[BaseException] = []

    def load() -> None:
        gate.wait()
        try:
            found.append(load_node_key(path).key_id)
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed and len(found) == 8 and len(set(found)) == 1, failed
    assert sorted(p.name for p in path.parent.iterdir()) == ["node-ed25519.pem", "node-ed25519.pub"]
