"""End to end: a real `snapshot-agent run` writes a report.html whose raw viewer shows the
head of the raw file exactly as the archive stores it (redacted), within the size budget,
and that re-renders byte for byte from the archive alone."""

from __future__ import annotations

import html as htmllib
import json
import re
import zipfile
from pathlib import Path

from snapshot_agent.render.html import render_html
from snapshot_agent.render.raw import HEAD_BYTES, heads_from_zip

from ..conftest import run_cli

SECRET = "Sup3rS3cretValue42"
SCRIPT = (
    f"echo 'starting up'; echo 'db password={SECRET}'; echo 'ERROR: disk sda failed'; "
    "seq -f 'line %g of the output, long enough that 400 lines exceed the head' 3000"
)
MEMBER = "raw/custom.leaky/output.txt"


def test_the_page_shows_the_stored_redacted_head_of_a_raw_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    command = json.dumps(["sh", "-c", SCRIPT])
    config.write_text(
        f"checks:\n  commands:\n    - {{id: custom.leaky, title: Chatty, command: {command}}}\n"
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "-q")
    assert proc.returncode in (0, 1), proc.stderr
    with zipfile.ZipFile(proc.stdout.strip()) as zf:
        page = zf.read("report.html").decode()
        stored = zf.read(MEMBER).decode()
        report = json.loads(zf.read("report.json"))
        heads = heads_from_zip(zf)
    assert SECRET not in stored and SECRET not in page  # redacted before the tee
    assert len(stored) > HEAD_BYTES  # so the page shows a head only

    opening = f'<pre class="raw" id="raw-custom.leaky-1" data-path="{MEMBER}" data-error-lines="3">'
    start = page.index(opening) + len(opening)
    end = page.index("\n</pre>", start)
    shown = [htmllib.unescape(line) for line in page[start:end].split("\n")[1:]]
    assert shown == stored.splitlines()[: len(shown)]  # line for line, as stored
    assert len("\n".join(shown)) > HEAD_BYTES - 80  # the whole head, cut at a line end
    assert "[REDACTED:" in shown[1] and shown[2] == "ERROR: disk sda failed"
    after = page[end:][:400]
    assert re.search(r"First 16\.0 KiB of [\d.]+ KiB shown", after)
    assert f'href="{MEMBER}"' in after

    # The whole machine's snapshot fits the budget...
    assert len(page.encode()) <= 1_000_000
    assert page.count('<article class="check"') == len(report["checks"])
    # ... and the archive alone gives the same page again (`snapshot-agent report`).
    assert render_html(report, heads) == page
