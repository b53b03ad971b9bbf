"""The iggy-data.zip member: the broker's data directory, found, bundled and accounted for.

One member source more for the archive writer. The data directory is found by the same
discovery the iggy.* checks use (agent config `iggy.data_dir` first); its text files pass
the same filter as every other byte, then the leak scan, inside the bundle (the outer
leak scan cannot read a compressed inner archive). What the bundle left out is added to
the manifest's `skipped`, prefixed with `iggy-data.zip: `.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from snapshot_agent.archive.writer import IGGY_DATA, Entry, compress_threads
from snapshot_agent.bundle.source import Redact, bundle_entries
from snapshot_agent.config import Config
from snapshot_agent.core.context import Context
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.pipeline.filter import Filter
from snapshot_agent.pipeline.record import SkippedItem, SnapshotRecord
from snapshot_agent.redact.redactor import Redactor

#: How long finding the data directory may take (a broker scan, systemctl, a stat).
DISCOVERY_S = 15.0
#: How long the bundle may take; what is not copied by then is listed as not copied.
BUNDLE_S = 300.0


def iggy_entries(
    config: Config, record: SnapshotRecord, flt: Filter, scan: Redactor | None, spool: Path
) -> Iterator[Entry]:
    """iggy-data.zip when asked for and a data directory is found; else a skip saying why."""
    if not record.options.include_iggy:
        return
    spool.mkdir(mode=0o700, exist_ok=True)
    ctx = Context(
        check_id="iggy-data",
        config=config,
        thresholds={},
        artifact_dir=spool,
        artifact_cap=64 * 1024,  # discovery runs `systemctl show`; its output is not kept
        deadline=time.monotonic() + DISCOVERY_S,
    )
    install = discover(ctx)
    if not install.data_dir or install.data_dir_state != "exists":
        record.skipped.append(SkippedItem(IGGY_DATA, _not_bundled(install.data_dir_state, install)))
        return
    archive = config.archive
    source = bundle_entries(
        ctx.path(install.data_dir),
        install.data_dir,
        archive.iggy_mode,
        archive.iggy_max_bytes,
        _redactor(flt, scan) if record.options.redact else None,
        time.monotonic() + BUNDLE_S,
        archive.compression_level,
        compress_threads(archive.threads),
        spool_dir=spool,
    )
    yield Entry(IGGY_DATA, source.chunks(), level=0)  # its members are compressed already
    # Resumed once the writer has taken every chunk: the bundle knows what it left out.
    record.skipped.extend(SkippedItem(f"{IGGY_DATA}: {item}", why) for item, why in source.skipped)


def _redactor(flt: Filter, scan: Redactor | None) -> Redact:
    """The filter, then the leak scan, over one text file of the bundle."""

    def redact(chunks: Iterable[bytes], path: str) -> Iterable[bytes]:
        """A bundled text file's bytes, redacted as they stream."""
        name = f"{IGGY_DATA}/{path}"
        filtered = flt.stream(chunks, name)
        return scan.stream(filtered, name) if scan is not None else filtered

    return redact


def _not_bundled(state: str, install: IggyInstall) -> str:
    """Why there is no iggy-data.zip, in words."""
    if state == "hung":
        return f"{install.data_dir}: its filesystem does not answer; nothing was bundled"
    return "no Iggy data directory found; " + install.searched()
