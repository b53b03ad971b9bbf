"""schemathesis against the served /openapi.json, over mutual TLS with a manage token:
every check it has (no 5xx, status codes, content types, bodies and headers as the
document says, bad input refused, deleted things gone), in every phase, stateful
included. A short run here; benchmarks/service/fuzz.py runs over a thousand cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import ENV, MANAGE_TOKEN, Certs, Server

#: Cases per operation: about 20 s of fuzzing on a quiet machine.
SHORT_RUN_EXAMPLES = 10
#: The suite's run is the same cases every time, so a failure reproduces; the benchmark's
#: long run (benchmarks/service/fuzz.py) draws a new seed each time to explore.
SEED = 20261126


def fuzz(server: Server, certs: Certs, workdir: Path, examples: int) -> dict[str, Any]:
    """Run schemathesis against the server; its JSON report."""
    report = workdir / "schemathesis.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"https://127.0.0.1:{server.port}/openapi.json",
            "--tls-verify",
            str(certs.ca_pem),
            "--request-cert",
            str(certs.client_pem),
            "--header",
            f"Authorization: Bearer {MANAGE_TOKEN}",
            "--max-examples",
            str(examples),
            "--seed",
            str(SEED),
            "--checks",
            "all",
            "--request-timeout",
            "30",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=workdir,  # its hypothesis database and any config it looks for
        capture_output=True,
        text=True,
        timeout=600,
        env={**ENV, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def test_schemathesis_finds_nothing(serve: Any, certs: Certs, short_dir: Path) -> None:
    server: Server = serve(api=certs.api())
    server.start()
    report = fuzz(server, certs, short_dir, SHORT_RUN_EXAMPLES)
    assert report["failures"] == [] and report["errors"] == [], report
    assert report["operations"]["tested"] == report["operations"]["total"] == 8
    assert report["test_cases"]["generated"] >= 100
    assert server.get("/healthz").status == 200
    assert server.stop() == 0
    assert "Traceback" not in server.logs(), server.logs()
