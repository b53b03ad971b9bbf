"""`snapshot-agent redact FILE|-` as a user runs it: stdin or a file, --audit, --rules, bad
input in one line, and the config's redaction.extra_keys / extra_patterns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import run_cli

SECRET = "Zk8mQ2vL9xR4tW7pN3cY"
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
TEXT = (
    f"2026-11-01T08:00:00Z INFO login user=admin password={SECRET} from 10.0.0.7\n"
    "2026-11-01T08:00:01Z INFO plain line, version 0.8.0, took 5s\n"
    f"2026-11-01T08:00:02Z DEBUG cloning with {TOKEN}\n"
)
KEPT = "2026-11-01T08:00:01Z INFO plain line, version 0.8.0, took 5s\n"


def redact_stdin(data: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`snapshot-agent redact ARGS -` with `data` on stdin (no config)."""
    return subprocess.run(
        [*_argv(), "redact", *args, "-"],
        input=data,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def _argv() -> list[str]:
    """The real CLI."""
    return [sys.executable, "-m", "snapshot_agent"]


def _env() -> dict[str, str]:
    """The test's environment without a config (as run_cli)."""
    return {**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull}


def assert_redacted(out: str) -> None:
    """The secrets of TEXT are gone, the benign line is whole, each secret says its kind."""
    assert SECRET not in out and TOKEN[4:14] not in out
    assert KEPT in out
    assert out.count("[REDACTED:") >= 2
    assert out.count("\n") == TEXT.count("\n")


def test_redact_stdin() -> None:
    proc = redact_stdin(TEXT)
    assert proc.returncode == 0, proc.stderr
    assert_redacted(proc.stdout)
    assert proc.stderr == ""


def test_redact_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text(TEXT)
    proc = run_cli("redact", path)
    assert proc.returncode == 0, proc.stderr
    assert_redacted(proc.stdout)
    assert path.read_text() == TEXT  # the file itself is left alone


def test_audit_counts_on_stderr_never_values(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text(TEXT)
    proc = run_cli("redact", "--audit", path)
    assert proc.returncode == 0, proc.stderr
    assert_redacted(proc.stdout)
    audit = json.loads(proc.stderr)
    assert audit["applied"] is True
    assert audit["leak_scan_hits"] == 0
    counts = {rule: n for rule, n in audit["rules"].items() if n}
    assert sum(counts.values()) >= 2, audit
    assert all(isinstance(n, int) and n >= 0 for n in audit["rules"].values())
    assert any("github" in rule for rule in counts), counts
    assert list(audit["files"]) == [str(path)]
    assert sum(audit["files"][str(path)].values()) == sum(counts.values())
    assert SECRET not in proc.stderr and TOKEN[4:] not in proc.stderr
    assert "[REDACTED:" not in proc.stderr  # counts, not text


def test_audit_of_stdin_is_json_too() -> None:
    proc = redact_stdin(TEXT, "--audit")
    assert proc.returncode == 0
    assert sum(json.loads(proc.stderr)["rules"].values()) >= 2


def test_rules_lists_every_rule_with_a_description() -> None:
    proc = run_cli("redact", "--rules")
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line and not line.startswith("Then")]
    names = [row.split()[0] for row in rows]
    assert len(names) >= 10
    assert len(set(names)) == len(names)
    for row, name in zip(rows, names, strict=True):
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), row
        assert len(row.split(None, 1)) == 2, f"{name} has no description"
    assert {"private-key", "jwt", "url-password"} <= set(names)
    assert "leak scan" in proc.stdout


def test_nothing_to_redact_is_byte_exact(tmp_path: Path) -> None:
    text = "".join(f"2026-11-01T08:00:{i % 60:02d}Z INFO tick {i} ok\n" for i in range(500))
    path = tmp_path / "quiet.log"
    path.write_text(text)
    proc = run_cli("redact", path)
    assert proc.returncode == 0
    assert proc.stdout == text


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_bad_file_is_one_line_exit_2(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nope.log"
    if kind == "directory":
        target.mkdir()
    proc = run_cli("redact", target)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(target) in lines[0]
    assert "Traceback" not in proc.stderr


def test_no_file_is_one_line_exit_2() -> None:
    proc = run_cli("redact")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(body)
    return path


def test_extra_keys_and_patterns_from_the_config(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "redaction:\n"
        "  extra_keys: [tenant_pin]\n"
        "  extra_patterns:\n"
        "    - 'ACME-[0-9]{8}'\n"
        "    - 'order-ref (?P<value>[A-Z]{6})'\n",
    )
    text = (
        'tenant_pin = "kx8HfQ2pWn"\n'
        "invoice ACME-12345678 paid\n"
        "order-ref QWERTY shipped\n"
        "nothing here: ACME-123 order-ref abc\n"
    )
    path = tmp_path / "in.txt"
    path.write_text(text)

    plain = run_cli("redact", path)
    assert plain.returncode == 0
    for value in ("kx8HfQ2pWn", "ACME-12345678", "QWERTY"):
        assert value in plain.stdout  # not a secret by the built-in rules

    proc = run_cli("redact", "-c", config, "--audit", path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "kx8HfQ2pWn" not in proc.stdout and out[0].startswith("tenant_pin = ")
    assert "[REDACTED:" in out[0]
    assert out[1] == "invoice [REDACTED:pattern] paid"
    assert out[2] == "order-ref [REDACTED:pattern] shipped"  # only the group `value`
    assert out[3] == "nothing here: ACME-123 order-ref abc"
    rules = json.loads(proc.stderr)["rules"]
    assert sum(n for rule, n in rules.items() if rule.startswith("extra-pattern")) == 2, rules


def test_extra_patterns_are_listed_by_rules(tmp_path: Path) -> None:
    config = write_config(tmp_path, "redaction:\n  extra_patterns: ['ACME-[0-9]{8}']\n")
    proc = run_cli("redact", "-c", config, "--rules")
    assert proc.returncode == 0
    assert "ACME-[0-9]{8}" in proc.stdout


@pytest.mark.parametrize(
    ("patterns", "problem"),
    [("['(unclosed']", "not a regular expression"), ("['x*']", "matches the empty string")],
)
def test_bad_extra_pattern_is_exit_2_naming_the_key(
    tmp_path: Path, patterns: str, problem: str
) -> None:
    config = write_config(tmp_path, f"redaction:\n  extra_patterns: {patterns}\n")
    path = tmp_path / "in.txt"
    path.write_text(TEXT)
    proc = run_cli("redact", "-c", config, path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "extra_patterns" in proc.stderr and problem in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_reader_that_quits_early_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text(TEXT * 20000)
    with subprocess.Popen(
        [*_argv(), "redact", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(100)
        proc.stdout.close()  # `| head -c 100`
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in err


def test_pseudonyms_are_consistent_within_a_run_and_keyed_per_run(tmp_path: Path) -> None:
    """pseudonymize: one address, one pseudonym per run; another run, another key."""
    config = write_config(tmp_path, "redaction:\n  pseudonymize: true\n")
    text = "from 10.0.1.17 to db-1.prod.internal\nagain 10.0.1.17; local 127.0.0.1\n"
    first, second = (redact_stdin(text, "-c", str(config)) for _ in range(2))
    assert first.returncode == 0, first.stderr
    names = re.findall(r"\b(?:ip|host)-[0-9a-f]{8}\b", first.stdout)
    assert len(names) == 3 and names[0] == names[2] and names[0] != names[1], first.stdout
    assert "10.0.1.17" not in first.stdout and "db-1.prod" not in first.stdout
    assert "127.0.0.1" in first.stdout  # loopback says nothing about the node
    assert re.findall(r"\bip-[0-9a-f]{8}\b", second.stdout)[0] != names[0]
