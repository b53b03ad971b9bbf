#!/usr/bin/env python3
"""schemathesis against `snapshot-agent serve`, long: over a thousand cases, zero 5xx.

Usage: benchmarks/service/fuzz.py [--examples N] [--json] [--check]

Starts the real `snapshot-agent serve` in a temporary directory on a Unix socket and on
127.0.0.1 with mutual TLS (trustme-made CA, server and client certificates), then runs
`schemathesis run` against its /openapi.json with a manage token, every check
(`--checks all`) and every phase (examples, coverage, fuzzing, stateful), N examples per
operation (default 150). Creates start real snapshots of this machine with the node's
trees in an empty directory (a few seconds each; most creates meet a 409). Prints the
cases generated, failures and errors, and the service's log lines at ERROR or worse.
`--check`: exit 1 unless there were at least 1000 cases, no failure and no error. The
tests run a short version of this (tests/service_api/test_fuzz.py). See
benchmarks/README.md.

Environment:
  SNAPSHOT_AGENT_PYTHON  the Python that has snapshot_agent, trustme and schemathesis
                         (default .venv/bin/python)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import server
from server import PYTHON

TOKEN = "benchmark-manage-token-0123456789"
MIN_CASES = 1000

#: Makes the certificates with trustme (in the agent's Python, which has it).
CERTS = """
import sys, trustme
from pathlib import Path
out = Path(sys.argv[1])
ca = trustme.CA()
server = ca.issue_cert("127.0.0.1")
server.cert_chain_pems[0].write_to_path(out / "server.pem")
server.private_key_pem.write_to_path(out / "server.key")
ca.cert_pem.write_to_path(out / "ca.pem")
ca.issue_cert("supervisor@example.test").private_key_and_cert_chain_pem.write_to_path(
    out / "client.pem"
)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(examples: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sa-fuzz-", dir="/tmp"))
    proc = None
    try:
        subprocess.run([PYTHON, "-c", CERTS, str(root)], check=True)
        port = free_port()
        token = {
            "name": "fuzzer",
            "scope": "manage",
            "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        }
        api = {
            "listen": f"127.0.0.1:{port}",
            "tls": {
                "cert": str(root / "server.pem"),
                "key": str(root / "server.key"),
                "client_ca": str(root / "ca.pem"),
            },
            "tokens": [token],
        }
        proc = server.start(root, server.config(root, api=api))
        log = root / "serve.log"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        started = time.monotonic()
        fuzzed = subprocess.run(
            [
                PYTHON,
                "-m",
                "schemathesis.cli",
                "run",
                f"https://127.0.0.1:{port}/openapi.json",
                "--tls-verify",
                str(root / "ca.pem"),
                "--request-cert",
                str(root / "client.pem"),
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                str(examples),
                "--checks",
                "all",
                "--request-timeout",
                "30",
                "--report",
                "json",
                "--report-json-path",
                str(root / "report.json"),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            env={**env, "NO_COLOR": "1"},
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        report = json.loads((root / "report.json").read_text())
        alive = proc.poll() is None
        errors = [
            line
            for line in log.read_text().splitlines()
            if " ERROR " in line or "Traceback" in line
        ]
        return {
            "date": datetime.date.today().isoformat(),
            "machine": server.machine() + " at the end",
            "schemathesis": report["schemathesis_version"],
            "examples_per_operation": examples,
            "seconds": round(elapsed, 1),
            "exit_code": fuzzed.returncode,
            "cases": report["test_cases"]["generated"],
            "failures": len(report["failures"]),
            "errors": len(report["errors"]),
            "operations": report["operations"]["tested"],
            "seed": report["seed"],
            "service_alive": alive,
            "service_errors": errors,
            "summary": fuzzed.stdout.strip().splitlines()[-1] if fuzzed.stdout.strip() else "",
        }
    finally:
        server.stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=150, help="per operation")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 below 1000 cases or on any failure"
    )
    args = parser.parse_args()
    result = run(args.examples)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"**{result['date']}**, {result['machine']}; schemathesis {result['schemathesis']}, "
            f"{result['examples_per_operation']} examples per operation, --checks all\n\n"
            f"{result['cases']} cases over {result['operations']} operations in "
            f"{result['seconds']} s: {result['failures']} failures, {result['errors']} errors "
            f"(exit {result['exit_code']}); service alive after: {result['service_alive']}; "
            f"its ERROR lines: {len(result['service_errors'])}. Seed {result['seed']}."
        )
    ok = (
        result["cases"] >= MIN_CASES
        and result["failures"] == result["errors"] == result["exit_code"] == 0
        and result["service_alive"]
        and not result["service_errors"]
    )
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
