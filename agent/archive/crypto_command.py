"""`snapshot-agent decrypt` and `snapshot-agent keygen`: the recipient's side of encryption.

`keygen --out DIR` makes an X25519 key pair for a recipient of encrypted snapshots:
DIR/NAME.pem (the private key, 0600; it stays with the people who read snapshots) and
DIR/NAME.pub (the public key, for `archive.encrypt_to` on the nodes). `decrypt
FILE.zip.enc --key NAME.pem [-o OUT]` writes FILE.zip beside it (or OUT, or into OUT when
it is a directory), through a hidden `.partial` file renamed only once every chunk has
been authenticated: a wrong key, a damaged, cut or modified file leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from snapshot_agent.archive.crypto import (
    CHUNK,
    SUFFIX,
    DecryptionError,
    decrypt,
    key_id,
    load_identity,
    raw_public,
    write_key_pair,
)
from snapshot_agent.errors import UsageError

DEFAULT_KEY_NAME = "snapshot-recipient"

#: The handler of a subcommand, as cli.py calls it: parsed arguments in, exit code out.
Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class KeyPair:
    """Where keygen wrote a key pair, and the public key's id."""

    private: Path
    public: Path
    key_id: str


def keygen(out_dir: Path, name: str = DEFAULT_KEY_NAME) -> KeyPair:
    """Write a new X25519 key pair: out_dir/NAME.pem (0600) and out_dir/NAME.pub."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"keygen: {name!r} is not a file name; pass a plain --name")
    private = out_dir / f"{name}.pem"
    key = X25519PrivateKey.generate()
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        public = write_key_pair(key, private)
    except FileExistsError:
        raise UsageError(
            f"{private}: exists; keygen never overwrites a key (pass another --name or --out)"
        ) from None
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write the key pair ({exc.strerror or exc})") from None
    return KeyPair(private, public, key_id(raw_public(key.public_key())))


def decrypt_file(path: Path, key: Path, out: Path | None = None) -> Path:
    """Decrypt a `.zip.enc` into a new file (0600); its path. Nothing is left on failure."""
    _check_input(path)
    identity = load_identity(key)
    target = _target(path, out)
    try:
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".partial", dir=target.parent
        )
    except OSError as exc:
        raise UsageError(
            f"{target.parent}: cannot write there ({exc.strerror or exc}); pass -o elsewhere"
        ) from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as dst, path.open("rb", buffering=CHUNK) as src:
            decrypt(src, dst, identity)
            dst.flush()
            os.fsync(dst.fileno())
        _publish(temp, target)
    except DecryptionError as exc:
        raise UsageError(f"{path}: cannot be decrypted: {exc}; nothing was written") from None
    except OSError as exc:
        raise UsageError(
            f"{target}: decrypting failed ({exc.strerror or exc}); nothing was kept"
        ) from None
    finally:
        temp.unlink(missing_ok=True)
    return target


def _check_input(path: Path) -> None:
    """Refuse anything but an existing regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; pass an encrypted snapshot (.zip.enc)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: not a regular file; pass an encrypted snapshot (.zip.enc)")


def _target(path: Path, out: Path | None) -> Path:
    """Where the plaintext goes: OUT, a directory's default name, or FILE without .enc."""
    if out is not None and str(out) == "-":  # a damaged chunk is found only when reached
        raise UsageError(
            "decrypt writes a file, never stdout (a damaged part would be found only after "
            "what precedes it was written); pass -o FILE"
        )
    if out is None or out.is_dir():
        if not path.name.endswith(SUFFIX) or path.name == SUFFIX:
            raise UsageError(f"{path}: its name does not end with {SUFFIX}; pass -o OUT")
        name = path.name.removesuffix(SUFFIX)
        target = (out if out is not None else path.parent) / name
    else:
        target = out
    if os.path.lexists(target):
        raise UsageError(f"{target}: exists; decrypt never overwrites (remove it or pass -o)")
    return target


def _publish(temp: Path, target: Path) -> None:
    """Give the finished file its name, never over one that appeared meanwhile."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise UsageError(f"{target}: appeared while decrypting; nothing was written") from None
    except OSError:  # a file system without hard links
        os.replace(temp, target)


def cmd_decrypt(args: argparse.Namespace) -> int:
    """`snapshot-agent decrypt FILE --key PRIVATE.pem [-o OUT]`."""
    target = decrypt_file(args.file, args.key, args.output)
    print(target)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """`snapshot-agent keygen --out DIR [--name NAME]`."""
    pair = keygen(args.out, args.name)
    print(f"private key: {pair.private} (keep it off the nodes; decrypt needs it)")
    print(f"public key:  {pair.public} (list it in archive.encrypt_to on the nodes)")
    print(f"key id:      {pair.key_id}")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    version: Callable[[argparse.ArgumentParser], None],
) -> dict[str, Handler]:
    """Add `decrypt` and `keygen` to the CLI's subcommands; their handlers by name."""
    dec = sub.add_parser(
        "decrypt",
        help="decrypt an encrypted snapshot (.zip.enc) with a recipient's private key",
        description="Decrypt FILE.zip.enc into FILE.zip (beside it, or -o OUT). Streams in "
        "bounded memory; a wrong key or a damaged, cut short or modified file is refused "
        "(exit 2) and nothing is written.",
    )
    version(dec)
    dec.add_argument("file", type=Path, metavar="FILE", help="an encrypted snapshot-*.zip.enc")
    dec.add_argument(
        "--key", "-k", type=Path, required=True, metavar="PRIVATE.pem", help="X25519 private key"
    )
    dec.add_argument(
        "--output", "-o", type=Path, metavar="OUT", help="the file (or directory) to write"
    )
    gen = sub.add_parser(
        "keygen",
        help="make an X25519 key pair for a recipient of encrypted snapshots",
        description="Write OUT/NAME.pem (private, 0600) and OUT/NAME.pub (public: list it "
        "in archive.encrypt_to). Never overwrites a key.",
    )
    version(gen)
    gen.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write")
    gen.add_argument(
        "--name", default=DEFAULT_KEY_NAME, help=f"file name stem (default {DEFAULT_KEY_NAME})"
    )
    return {"decrypt": cmd_decrypt, "keygen": cmd_keygen}
