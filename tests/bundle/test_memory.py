"""Memory stays flat in data size: a large sparse segment bundled in full mode."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO

SEGMENT_MIB = 256
MAX_GROWTH_MIB = 32  # threads x deflate blocks, zlib state, a chunk: not the segment

SCRIPT = textwrap.dedent(
    """
    import json, os, resource, sys, time, zlib
    from pathlib import Path
    from snapshot_agent.bundle.source import bundle_entries

    data, mib = Path(sys.argv[1]), int(sys.argv[2])
    part = data / "streams/0/topics/0/partitions/0"
    part.mkdir(parents=True)
    (part / "00000000000000000000.index").write_bytes(b"\\0" * 16)

    def run(size):
        with open(part / "00000000000000000000.log", "wb") as fh:
            fh.truncate(size)
        source = bundle_entries(
            data, "/d", "full", 1 << 40, None, time.monotonic() + 120, 6, 2
        )
        total = 0
        for chunk in source.chunks():
            total += len(chunk)
        return source.stats.bytes, total

    run(1 << 20)  # warm up: every buffer the pipeline keeps is allocated once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    copied, archived = run(mib << 20)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after, "copied": copied,
                      "archived": archived}))
    """
)


def test_memory_is_flat_on_a_large_sparse_segment(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(SEGMENT_MIB)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["copied"] == (SEGMENT_MIB << 20) + 16
    assert facts["archived"] < facts["copied"] // 100  # zeros deflate: it was compressed
    growth_mib = (facts["after_kib"] - facts["before_kib"]) / 1024
    assert growth_mib < MAX_GROWTH_MIB, facts
