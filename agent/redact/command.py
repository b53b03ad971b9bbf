"""`snapshot-agent redact`: a file through the redactor and the leak scan, as a snapshot would."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

from snapshot_agent.config import RedactionConfig
from snapshot_agent.errors import UsageError
from snapshot_agent.redact.audit import RedactionAudit
from snapshot_agent.redact.catalog import first_pass_rules, leak_scan_for, redactor_for

CHUNK = 1024 * 1024


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    while data := source.read(CHUNK):
        yield data


def redact_file(name: str, settings: RedactionConfig, out: IO[bytes]) -> RedactionAudit:
    """Write `name` (a path, or - for stdin) redacted to `out`; what was removed."""
    redactor, scan = redactor_for(settings), leak_scan_for(settings)
    try:
        source = sys.stdin.buffer if name == "-" else Path(name).open("rb")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(
            f"redact: cannot read {name} ({exc.strerror or exc}); give a readable file, "
            "or - for stdin"
        ) from None
    label = "stdin" if name == "-" else name
    try:
        for data in scan.stream(redactor.stream(_chunks(source), label), label):
            out.write(data)
        out.flush()
    except IsADirectoryError:
        raise UsageError(f"redact: {name} is a directory; give a file, or - for stdin") from None
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    audit = redactor.audit()
    audit.add(scan.audit())
    return audit


def list_rules(settings: RedactionConfig, out: TextIO) -> None:
    """Every rule of the redactor: its name and what it removes."""
    rules = first_pass_rules(settings)
    width = max(len(rule.name) for rule in rules)
    for rule in rules:
        print(f"{rule.name:<{width}}  {rule.description}", file=out)
    print(
        f"\nThen the leak scan: the token rules again over every archive member, "
        f"counted as leak-scan:<rule>.{' Pseudonyms: on.' if settings.pseudonymize else ''}",
        file=out,
    )
