"""Encrypting and decrypting stream in bounded memory: 200 MiB costs what 1 MiB does.

Each size runs in a fresh interpreter that encrypts generated data into a file and
decrypts that file to /dev/null, and reports its own peak RSS (ru_maxrss).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MIB = 1024 * 1024

SCRIPT = """
import os, resource, sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from snapshot_agent.archive.crypto import EncryptingStream, decrypt

size, path = int(sys.argv[1]), sys.argv[2]
key = X25519PrivateKey.generate()
block = os.urandom(1024 * 1024 + 3)  # not a multiple of the chunk: writes straddle chunks
with open(path, "wb") as raw:
    stream = EncryptingStream(raw, [key.public_key()])
    left = size
    while left:
        left -= stream.write(block[: min(left, len(block))])
    stream.close()
with open(path, "rb") as src, open(os.devnull, "wb") as dst:
    assert decrypt(src, dst, key) == size
os.unlink(path)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(tmp_path: Path, size: int) -> int:
    """Peak RSS in bytes of one encrypt + decrypt of `size` bytes."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(size), str(tmp_path / f"{size}.enc")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(proc.stdout)


def test_memory_is_flat_in_the_size_of_the_stream(tmp_path: Path) -> None:
    small = peak_rss(tmp_path, 1 * MIB)
    large = peak_rss(tmp_path, 200 * MIB)
    # One write's block, one pending chunk and one sealed chunk: a few MiB at most, where
    # holding the stream would cost 200 MiB or more.
    assert large - small < 8 * MIB, (small, large)
