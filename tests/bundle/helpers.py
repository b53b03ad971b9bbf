"""Running a bundle in a test: its bytes to a file, then opened with zipfile."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapshot_agent.bundle.source import BundleSource, Redact, bundle_entries

NODE_DIR = "/var/lib/iggy/local_data"


@dataclass
class Bundled:
    """A finished bundle: the source (stats, skipped), the archive and its listing."""

    source: BundleSource
    path: Path
    zip: zipfile.ZipFile
    listing: dict[str, dict[str, str]]  # escaped path -> row

    def data(self) -> dict[str, bytes]:
        """Every member under data/, by its path relative to the data directory."""
        return {
            n.removeprefix("data/"): self.zip.read(n)
            for n in self.zip.namelist()
            if n.startswith("data/")
        }

    def skipped(self) -> dict[str, str]:
        """The outer manifest's items: node path -> reason."""
        return dict(self.source.skipped)


def run_bundle(
    data_dir: Path,
    out: Path,
    *,
    mode: str = "metadata",
    max_bytes: int = 1 << 30,
    redact: Redact | None = None,
    seconds: float = 60,
    level: int = 6,
    threads: int = 1,
    after_scan: Callable[[bytes], None] | None = None,
    **kwargs: Any,
) -> Bundled:
    """Bundle `data_dir` into `out` (iggy-data.zip) and open it."""
    source = bundle_entries(
        data_dir,
        NODE_DIR,
        mode,  # type: ignore[arg-type]
        max_bytes,
        redact,
        time.monotonic() + seconds,
        level,
        threads,
        **kwargs,
    )
    source.after_scan = after_scan
    with out.open("wb") as fh:
        for chunk in source.chunks():
            fh.write(chunk)
    archive = zipfile.ZipFile(out)
    assert archive.testzip() is None
    return Bundled(source, out, archive, read_listing(archive.read("listing.tsv")))


def read_listing(raw: bytes) -> dict[str, dict[str, str]]:
    """listing.tsv by path (a directory cut short has a second row: its reason wins)."""
    rows = csv.DictReader(io.StringIO(raw.decode()), delimiter="\t", quoting=csv.QUOTE_NONE)
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["path"] in out:
            assert row["kind"] == "dir", f"{row['path']} listed twice"
            if not row["reason"]:
                continue
        out[row["path"]] = row
    return out
