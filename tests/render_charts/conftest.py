"""Real reports for the chart tests: this machine's snapshot, certificates, an Iggy node.

Each report comes from the real CLI in a child process (session-scoped: made once): the
machine's disk, CPU and memory checks with certificates made at test time, and an Iggy
data directory built by the Iggy fixture. `df -P` is read right after the snapshot so
the disk chart can be held against it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import run_cli
from tests.iggy.fixture import Spec, build
from tests.iggy.procs import fake_broker

MACHINE_CHECKS = "disk.usage,cpu.usage,memory.usage,memory.swap,tls.certificates,iggy.data_dir"
#: Common name -> days until the certificate expires (negative: expired that long ago).
CERTS = {
    "api.example.com": 400,
    "soon.example.com": 20,
    '<script>alert("x")</script>]]>': 3,
    "old.example.com": -12,
}


@dataclass(frozen=True)
class Machine:
    """A snapshot of this machine and what `df -P` said right after it."""

    report: dict[str, Any]
    df: dict[str, int]  # mount point -> Capacity %


def snapshot(tmp: Path, config: Path, only: str) -> dict[str, Any]:
    """Run `snapshot-agent run --only` with `config`; its report.json."""
    proc = run_cli(
        "run", "-c", config, "-o", tmp, "--only", only, "--no-include-iggy", "--json", "-q"
    )
    assert proc.returncode in (0, 1), proc.stderr
    with zipfile.ZipFile(json.loads(proc.stdout)["path"]) as zf:
        return json.loads(zf.read("report.json"))


def write_certs(where: Path) -> list[str]:
    """Self-signed certificates that expire as CERTS says; their paths."""
    now = dt.datetime.now(dt.UTC)
    paths = []
    for i, (name, days) in enumerate(CERTS.items()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=60))
            .not_valid_after(now + dt.timedelta(days=days, hours=1))
            .sign(key, hashes.SHA256())
        )
        path = where / f"cert-{i}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths.append(str(path))
    return paths


def df_capacity() -> dict[str, int]:
    """Mount point -> used % as `df -P` prints it (rounded up, of used + available)."""
    out = subprocess.run(["df", "-P"], capture_output=True, text=True, timeout=30).stdout
    found = {}
    for line in out.splitlines()[1:]:
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[4].endswith("%"):
            found[fields[5]] = int(fields[4][:-1])
    return found


@pytest.fixture(scope="session")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    """This machine's snapshot (with test certificates) and `df -P` right after it."""
    tmp = tmp_path_factory.mktemp("machine")
    paths = write_certs(tmp)
    config = tmp / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp / 'state'}\nchecks:\n  certificates:\n    paths: {json.dumps(paths)}\n"
    )
    report = snapshot(tmp, config, MACHINE_CHECKS)
    return Machine(report, df_capacity())


@pytest.fixture(scope="session")
def iggy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A snapshot of an Iggy node (fixture tree): topics of different sizes."""
    tmp = tmp_path_factory.mktemp("iggy")
    node = tmp / "node"
    sizes = [4096, 65536, 1_000_000, 300_000, 7000]
    build(
        node, Spec(layout="0.8", streams=3, topics=6, partitions=2, segments=2, segment_bytes=sizes)
    )
    fake_broker(node, "/var/lib/iggy")
    roots = ", ".join(f"{n}: {node / n}" for n in ("proc", "sys", "etc", "run"))
    config = tmp / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp / 'state'}\n"
        f"checks:\n  roots: {{root: {node}, {roots}, var_log: {node / 'var/log'}}}\n"
    )
    return snapshot(tmp, config, "iggy.data_dir")


def check_of(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    """The check `check_id` of a report."""
    return next(c for c in report["checks"] if c["id"] == check_id)
