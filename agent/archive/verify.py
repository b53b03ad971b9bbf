"""Checking an archive against its manifest: every member present, same size, same sha256."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from snapshot_agent.archive.writer import CHUNK, MANIFEST
from snapshot_agent.errors import UsageError


@dataclass
class Verification:
    """What verify found."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No member missing, extra, or different."""
        return not self.problems


def verify_archive(path: Path) -> Verification:
    """Recompute every member's digest and compare with manifest.json."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file; pass the path of a snapshot .zip")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"{path}: not a readable ZIP archive ({exc}); is it complete?") from None
    result = Verification()
    with zf:
        try:
            manifest = json.loads(zf.read(MANIFEST))
            listed = {m["path"]: m for m in manifest["members"]}
        except KeyError:
            raise UsageError(f"{path}: has no valid {MANIFEST}; not a snapshot archive") from None
        except (ValueError, TypeError, zipfile.BadZipFile) as exc:
            raise UsageError(f"{path}: {MANIFEST} is unreadable ({exc})") from None
        present = {i.filename for i in zf.infolist() if not i.is_dir()} - {MANIFEST}
        for name in sorted(present - listed.keys()):
            result.problems.append(f"{name}: in the archive but not in the manifest")
        for name in sorted(listed.keys() - present):
            result.problems.append(f"{name}: listed in the manifest but missing")
        for name in sorted(present & listed.keys()):
            result.checked += 1
            problem = _check_member(zf, name, listed[name])
            if problem:
                result.problems.append(f"{name}: {problem}")
    return result


def _check_member(zf: zipfile.ZipFile, name: str, expected: dict[str, object]) -> str | None:
    digest = hashlib.sha256()
    size = 0
    try:
        with zf.open(name) as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # includes CRC mismatches
        return f"unreadable ({exc})"
    if size != expected.get("size"):
        return f"size {size} differs from the manifest's {expected.get('size')}"
    if digest.hexdigest() != expected.get("sha256"):
        return "sha256 differs from the manifest (modified or corrupted)"
    return None
