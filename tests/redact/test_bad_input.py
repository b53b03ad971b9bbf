"""Bad input through the real CLI (`snapshot-agent redact`): a 200 MB line, invalid UTF-8,
a 50 MB one-line JSON document, a PEM block that never ends, NUL bytes, CRLF line ends.
Redacted in bounded memory (peak RSS measured by wait4), never dropped or mangled."""

from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import MEASURE

MiB = 1024 * 1024
#: A peak well under this, whatever the input's size: the redactor streams.
MAX_PEAK_RSS = 120 * MiB
#: How much more the 200 MB run may use than the 20 MB one ("flat").
MAX_PEAK_GROWTH = 16 * MiB
SECRET = "Vq7Lm2Xc9Rt4Bn8Kp3Wz"  # planted in the long line, 20 characters
ALNUM = string.ascii_letters + string.digits


def cli() -> list[str]:
    """The real CLI."""
    return [sys.executable, "-m", "snapshot_agent"]


def env() -> dict[str, str]:
    """No config, as run_cli."""
    return {**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull}


def redact_bytes(data: bytes, *args: str) -> bytes:
    """`snapshot-agent redact ARGS -` with `data` on stdin; stdout, exactly."""
    proc = subprocess.run(
        [*cli(), "redact", *args, "-"], input=data, capture_output=True, timeout=60, env=env()
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    return proc.stdout


def redact_measured(tmp_path: Path, source: Path, out: Path, timeout: float) -> int:
    """`snapshot-agent redact SOURCE > OUT` in a grandchild (conftest's MEASURE); its
    peak RSS in bytes. (run_measured captures stdout in memory: too much for 200 MB.)
    Fails after `timeout` seconds, the whole process group killed."""
    report = tmp_path / f"{source.name}.measured"
    argv = [sys.executable, "-c", MEASURE, str(report), *cli(), "redact", str(source)]
    timed_out = False
    with (
        out.open("wb") as sink,
        subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.PIPE, env=env(), start_new_session=True
        ) as proc,
    ):
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the go-between and the redactor below it
            _, err = proc.communicate()
    if timed_out:
        size = source.stat().st_size / MiB
        pytest.fail(
            f"redact {source.name} ({size:.0f} MiB) did not finish in {timeout:g} s "
            f"(< {size / timeout:.1f} MiB/s)"
        )
    code, peak_kib = map(int, report.read_text().split())
    assert proc.returncode == 0 and code == 0, err.decode(errors="replace")
    return peak_kib * 1024


# -- a huge line ------------------------------------------------------------------------

#: Log-like words without a newline; every block (about 1 MB) plants the secret once.
WORDS = (
    "GET /streams/orders/topics/events/partitions/3 200 took 1.5ms user=svc "
    "client=10.0.3.7:51234 bytes=4096 shard-2 sha256=923732881584d8c4fa2815d28028272 "
)
BLOCK = (WORDS * 6500 + f"api_password={SECRET} ").encode()
#: Seconds each size may take: far more than the redactor's target (>= 50 MB/s) allows.
LINE_TIMEOUT = {20: 20.0, 200: 60.0}


def write_line(path: Path, size: int) -> int:
    """A file of `size` bytes (about) without a newline; how many secrets it holds."""
    count = 0
    with path.open("wb") as fh:
        written = 0
        while written < size:
            fh.write(BLOCK)
            written += len(BLOCK)
            count += 1
    return count


def scan(path: Path) -> tuple[int, int, bool, int]:
    """(size, newlines, secret seen, redactions) of a file, read in chunks."""
    size = newlines = redactions = 0
    seen = False
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(4 * MiB):
            data = tail + chunk
            seen = seen or SECRET[:10].encode() in data or SECRET[-10:].encode() in data
            redactions += data.count(b"[REDACTED:") - tail.count(b"[REDACTED:")
            size += len(chunk)
            newlines += chunk.count(b"\n")
            tail = data[-64:]
    return size, newlines, seen, redactions


def test_a_200_mb_line_streams_in_flat_memory(tmp_path: Path) -> None:
    peaks = {}
    for mb in (20, 200):
        source, out = tmp_path / f"line-{mb}", tmp_path / f"out-{mb}"
        planted = write_line(source, mb * 1000 * 1000)
        peaks[mb] = redact_measured(tmp_path, source, out, LINE_TIMEOUT[mb])
        size, newlines, seen, redactions = scan(out)
        assert not seen, f"{mb} MB: the secret survived"
        assert redactions >= planted, f"{mb} MB: {redactions} redactions of {planted} secrets"
        assert newlines == 0  # no line end was added where the input had none
        assert abs(size - source.stat().st_size) < source.stat().st_size // 100
        source.unlink()
        out.unlink()
    assert peaks[200] < MAX_PEAK_RSS, f"peak RSS {peaks[200] / MiB:.0f} MiB for 200 MB"
    growth = peaks[200] - peaks[20]
    assert growth < MAX_PEAK_GROWTH, (
        f"peak RSS grows with the input: {peaks[20] / MiB:.0f} MiB for 20 MB, "
        f"{peaks[200] / MiB:.0f} MiB for 200 MB"
    )


# -- bytes that are not UTF-8 -----------------------------------------------------------


def test_invalid_utf8_passes_through_byte_exact() -> None:
    data = (
        b"2026-11-01 INFO caf\xe9 latin-1 text\n"
        b"2026-11-01 INFO truncated \xe2\x82 sequence and a lone \x80 byte\n"
        b"2026-11-01 INFO overlong \xc0\xaf and surrogate \xed\xa0\x80 bytes\n"
        + bytes(range(1, 256)).replace(b"\n", b"")
        + b"\n\xff\xfe\xfd no newline at the end \xf8"
    )
    assert redact_bytes(data) == data


def test_invalid_utf8_next_to_a_secret_keeps_the_rest_exact() -> None:
    before = b"2026-11-01 INFO caf\xe9 \xff\xfe ok\n"
    after = b"2026-11-01 INFO \x80\x81 done \xc3\x28\n"
    data = before + f"2026-11-01 INFO password={SECRET} \xff\n".encode("latin-1") + after
    out = redact_bytes(data)
    assert SECRET[:10].encode() not in out and SECRET[-10:].encode() not in out
    assert out.startswith(before) and out.endswith(after)
    assert b"[REDACTED:" in out


# -- a 50 MB JSON document on one line ---------------------------------------------------


def json_records(rng: random.Random, size: int) -> list[dict[str, object]]:
    """Records of a JSON document of about `size` bytes; every 50th holds three secrets."""
    records: list[dict[str, object]] = []
    total = 0
    while total < size:
        index = len(records)
        record: dict[str, object] = {
            "id": index,
            "name": f"consumer-{index}",
            "offset": rng.randrange(10**9),
            "note": "partition key 3, session closed after 5s",
        }
        if index % 50 == 0:
            record["password"] = "".join(rng.choices(ALNUM, k=20))
            record["auth"] = {"type": "bearer", "token": "".join(rng.choices(ALNUM, k=32))}
            record["url"] = "https://svc:" + "".join(rng.choices(ALNUM, k=16)) + "@db.internal/x"
        records.append(record)
        total += 110 if index % 50 else 260
    return records


def secrets_of(record: dict[str, object]) -> dict[str, str]:
    """The secrets of a record, by field."""
    if "password" not in record:
        return {}
    auth, url = record["auth"], str(record["url"])
    assert isinstance(auth, dict)
    return {"password": str(record["password"]), "token": auth["token"], "url": url[12:28]}


def test_a_50_mb_one_line_json_document(tmp_path: Path) -> None:
    records = json_records(random.Random(50), 50 * 1000 * 1000)
    source = tmp_path / "big.json"
    source.write_text(json.dumps({"records": records}))  # one line, ", " and ": " separators
    out = tmp_path / "big.out.json"
    peak = redact_measured(tmp_path, source, out, timeout=120)  # ~12 s here
    redacted = json.loads(out.read_bytes())["records"]  # still JSON
    assert len(redacted) == len(records)
    leaked, changed = [], []
    for before, after in zip(records, redacted, strict=True):
        benign = ("id", "name", "offset", "note")
        if any(after[k] != before[k] for k in benign):
            changed.append(after)
        text = json.dumps(after)
        leaked += [
            f"record {before['id']} {name}"
            for name, secret in secrets_of(before).items()
            if secret[:10] in text or secret[-10:] in text
        ]
    assert not leaked, f"{len(leaked)} secrets survived, e.g. {leaked[:5]}"
    assert not changed, f"{len(changed)} benign records changed, e.g. {changed[:2]}"
    assert peak < MAX_PEAK_RSS, f"peak RSS {peak / MiB:.0f} MiB"


# -- a PEM block that never ends ---------------------------------------------------------


def test_a_pem_block_that_never_ends_is_redacted_to_the_end() -> None:
    rng = random.Random(7)
    body = [
        "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=64)) for _ in range(25)
    ]
    after = ["2026-11-01 INFO after the truncated key", "token usage 42"]
    text = "\n".join(["config dump:", "-----BEGIN RSA PRIVATE KEY-----", *body, *after]) + "\n"
    out = redact_bytes(text.encode()).decode()
    lines = out.splitlines()
    assert lines[:2] == ["config dump:", "-----BEGIN RSA PRIVATE KEY-----"]
    survivors = [line for line in body if line[:10] in out or line[-10:] in out]
    assert not survivors, f"{len(survivors)} key lines survived"
    assert not any(line in out for line in after), "the lines after BEGIN must be redacted too"
    assert len(lines) == len(text.splitlines())  # line structure kept


def test_a_pem_block_that_ends_stops_redacting() -> None:
    key = ["MIIEowIBAAKCAQEA" + "x" * 48, "y" * 64]
    text = "\n".join(
        ["-----BEGIN PRIVATE KEY-----", *key, "-----END PRIVATE KEY-----", "after: kept 42"]
    )
    out = redact_bytes(text.encode()).decode()
    assert "after: kept 42" in out and "-----END PRIVATE KEY-----" in out
    assert not any(line[:16] in out for line in key)


# -- NUL bytes and line ends ---------------------------------------------------------------


def test_nul_separated_entries_keep_their_separators() -> None:
    data = (
        b"LANG=C.UTF-8\0DB_PASSWORD=" + SECRET.encode() + b"\0PATH=/usr/bin\0\0"
        b"binary\0\0\0tail without separator"
    )
    out = redact_bytes(data)
    assert SECRET[:10].encode() not in out
    assert out.count(b"\0") == data.count(b"\0")
    parts, original = out.split(b"\0"), data.split(b"\0")
    assert parts[0] == original[0] and parts[2:] == original[2:]
    assert parts[1].startswith(b"DB_PASSWORD=[REDACTED:")


def test_nul_bytes_inside_lines_pass_through() -> None:
    data = b"2026-11-01 INFO \0\0\0 nul run\n\0\n" + b"\0" * 10000 + b"\nend\n"
    assert redact_bytes(data) == data


def test_crlf_line_ends_are_preserved() -> None:
    ending = b"\r\n"
    lines = [
        b"[client]",
        b"user = backup",
        b"password = " + SECRET.encode(),
        b"host = db.internal",
        b"",
        b"2026-11-01 INFO Authorization: Bearer " + SECRET.encode() + b"xyz",
        b"last line",
    ]
    data = ending.join(lines) + ending
    out = redact_bytes(data)
    assert SECRET[:10].encode() not in out
    assert out.count(ending) == data.count(ending)
    assert out.count(b"\n") == out.count(b"\r\n")  # no bare LF, no CR lost
    kept = out.split(ending)
    for index in (0, 1, 3, 4, 6):
        assert kept[index] == lines[index]
    assert kept[2].startswith(b"password = [REDACTED:")


def test_crlf_file_without_secrets_is_byte_exact() -> None:
    data = b"".join(b"2026-11-01 INFO line %d\r\n" % i for i in range(1000)) + b"mixed\nends\r\n"
    assert redact_bytes(data) == data
