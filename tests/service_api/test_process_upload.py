"""SnapshotProcess with a presigned upload URL: it reaches the run on a pipe, never on its
command line (which every user of the node can read), and the archive is PUT there."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from snapshot_agent.pipeline.process import SnapshotProcess
from snapshot_agent.pipeline.record import SnapshotOptions

from .conftest import ENV

SIGNATURE = "X-Amz-Signature=0123456789abcdefsecret"


class _Store(http.server.BaseHTTPRequestHandler):
    """An object store that takes PUTs and keeps what it got."""

    received: dict[str, bytes] = {}

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received[self.path] = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def store() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_upload_url_travels_on_a_pipe(
    store: http.server.ThreadingHTTPServer, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{store.server_port}/bucket/node/archive.zip?{SIGNATURE}"
    snapshot = SnapshotProcess.start(
        tmp_path / "stage",
        SnapshotOptions(only=("cpu.load",), include_iggy=False),
        Path(os.devnull),
        ENV,
        upload_url=url,
    )
    seen = []
    for event in snapshot.events(timeout=60):
        if event["event"] == "snapshot_started":
            seen = psutil.Process(snapshot.pid).cmdline()
    finished = snapshot.wait(timeout=60)
    assert finished.exit_code in (0, 1), finished.stderr
    assert seen and "--upload-url-file" in seen
    assert not any(SIGNATURE in arg or "127.0.0.1" in arg for arg in seen), seen
    body = _Store.received[f"/bucket/node/archive.zip?{SIGNATURE}"]
    assert body[:2] == b"PK" and len(body) == finished.outcome["size_bytes"]
    assert SIGNATURE not in finished.outcome["path"]  # the signature is never shown
    assert list((tmp_path / "stage").iterdir()) == []  # the staged copy is gone


def test_an_upload_url_that_is_not_one_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one line"):
        SnapshotProcess.start(tmp_path, upload_url="http://x/a\nb")
