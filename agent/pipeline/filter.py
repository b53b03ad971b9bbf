"""The one exit: every string and byte that leaves a check passes a `Filter` on its way out.

The pipeline calls the filter on each check's result as the runner hands it over
(summary, findings, data, and the argv of every command it ran, which becomes
`commands.json`), before anything shows or stores it; on each raw evidence file
(artifacts, copied files, `traceback.txt`, `check-output.txt`) as it streams into the
archive; and on the node identity. report.json, report.html, the manifest and the
terminal summary are built only from what came out of the filter.

Two filters exist today:
- `IdentityFilter` (`--no-redact`): passes everything; the manifest says nothing was
  redacted.
- `RuleFilter` with `COMMAND_LINE_RULES` (the default): masks secrets given as
  command-line options, `NAME=value` assignments and URL passwords, wherever they
  appear. It is the first piece of the redactor; the redaction issue replaces it with
  the full structure-aware redactor behind this same interface.

A filter counts what each rule masked (`audit()`), never the values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from snapshot_agent.core.results import Finding, Result
from snapshot_agent.pipeline.record import RedactionAudit

MASK = "***"
#: A line longer than this is filtered in pieces (a rule cannot match across the cut).
MAX_LINE = 64 * 1024


class Filter(Protocol):
    """What every string and byte leaving a check goes through."""

    def text(self, value: str) -> str:
        """The filtered form of one string."""
        ...

    def stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The filtered form of a byte stream (an evidence file), chunk by chunk."""
        ...

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The filtered form of a command line, argument by argument."""
        ...

    def audit(self) -> RedactionAudit:
        """Whether this filter redacts, and how many times each rule fired so far."""
        ...


class IdentityFilter:
    """Passes everything unchanged (`--no-redact`)."""

    def text(self, value: str) -> str:
        """`value` itself."""
        return value

    def stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The chunks themselves."""
        yield from chunks

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The arguments themselves."""
        return list(argv)

    def audit(self) -> RedactionAudit:
        """Nothing was redacted."""
        return RedactionAudit(applied=False)


@dataclass(frozen=True)
class Rule:
    """One redaction rule: a pattern and its replacement; `apply` says how often it fired."""

    name: str
    pattern: re.Pattern[str]
    replacement: str

    def apply(self, text: str) -> tuple[str, int]:
        """(text with every match replaced, number of matches)."""
        return self.pattern.subn(self.replacement, text)


_SECRET_WORD = r"(?:pass|secret|token|key|auth|credential)"
#: A name that mentions a secret. Bounded, and every pattern starts only at a word's
#: start, so a megabyte-long token costs linear time, never quadratic.
_NAME = rf"[\w.-]{{0,64}}{_SECRET_WORD}[\w.-]{{0,64}}"
SECRET_OPTION = "secret-option"
_SECRET_OPTION_NAME = re.compile(rf"-{{1,2}}{_NAME}", re.I)

#: Secrets handed to programs on their command line, wherever such text turns up
#: (process tables, unit files, logs). Order matters: assignments before options.
#: Absolute paths are not secrets (`--key-file /etc/iggy/key.pem` stays readable).
COMMAND_LINE_RULES: tuple[Rule, ...] = (
    # NAME=value, --opt=value, -Dsome.password=value
    Rule(
        "secret-assignment",
        re.compile(rf"(?<![\w.-])({_NAME})=(?!\*\*\*|/)[^\s\"']+", re.I),
        rf"\1={MASK}",
    ),
    # --password value: the value is the next word unless it is another long option
    # (`--auth --verbose` is a flag, not a value)
    Rule(
        SECRET_OPTION,
        re.compile(rf"(?<![\w-])(-{{1,2}}{_NAME})([ \t]+)(?!--|\*\*\*|/)\S+", re.I),
        rf"\1\2{MASK}",
    ),
    # scheme://user:password@host
    Rule(
        "url-password",
        re.compile(r"(?<![\w+.-])([A-Za-z][\w+.-]{0,31}://[^/\s:@]{0,256}:)(?!\*\*\*@)\S*(@)"),
        rf"\1{MASK}\2",
    ),
)


class RuleFilter:
    """Applies rules to every string and to every line of every stream, counting matches."""

    def __init__(self, rules: Iterable[Rule] = COMMAND_LINE_RULES) -> None:
        self.rules = tuple(rules)
        self.counts: Counter[str] = Counter()

    def text(self, value: str) -> str:
        """`value` with every rule applied in order."""
        for rule in self.rules:
            value, hits = rule.apply(value)
            if hits:
                self.counts[rule.name] += hits
        return value

    def stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Filter line by line; bytes that are not UTF-8 pass through unchanged."""
        pending = b""
        for chunk in chunks:
            pending += chunk
            if b"\n" not in chunk and len(pending) < MAX_LINE:
                continue
            *lines, pending = pending.split(b"\n")
            if lines:
                yield b"".join(self._line(line) + b"\n" for line in lines)
            while len(pending) >= MAX_LINE:
                yield self._line(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
        if pending:
            yield self._line(pending)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """Each argument filtered as text; the one after a secret option is masked whole.

        `["--password", "hunter2"]` is two arguments, so no text rule sees both.
        """
        out: list[str] = []
        mask_next = False
        for arg in argv:
            if mask_next and not arg.startswith(("--", "/", MASK)):
                out.append(MASK)
                self.counts[SECRET_OPTION] += 1
            else:
                out.append(self.text(arg))
            mask_next = "=" not in arg and _SECRET_OPTION_NAME.fullmatch(arg) is not None
        return out

    def audit(self) -> RedactionAudit:
        """Applied, with the count per rule (rules that never fired are listed with 0)."""
        return RedactionAudit(applied=True, rules={r.name: self.counts[r.name] for r in self.rules})

    def _line(self, line: bytes) -> bytes:
        text = line.decode("utf-8", "surrogateescape")
        return self.text(text).encode("utf-8", "surrogateescape")


def filter_for(redact: bool) -> Filter:
    """The filter a snapshot with these options uses."""
    return RuleFilter() if redact else IdentityFilter()


def filter_value(flt: Filter, value: Any) -> Any:
    """Filter every string in a JSON-like value (dict keys too), keeping its shape."""
    if isinstance(value, str):
        return flt.text(value)
    if isinstance(value, dict):
        return {filter_value(flt, k): filter_value(flt, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(filter_value(flt, v) for v in value)
    return value


def filter_result(flt: Filter, result: Result) -> Result:
    """The result with its summary, findings and data filtered (artifacts stream later)."""
    return replace(
        result,
        summary=flt.text(result.summary),
        findings=[
            Finding(
                f.severity,
                flt.text(f.message),
                flt.text(f.remediation),
                flt.text(f.subject),
            )
            for f in result.findings
        ],
        data=filter_value(flt, result.data),
        commands=[_filter_command(flt, c) for c in result.commands],
    )


def _filter_command(flt: Filter, record: dict[str, Any]) -> dict[str, Any]:
    """A command record with its argv filtered as a command line, other strings as text."""
    out = {k: filter_value(flt, v) for k, v in record.items() if k != "argv"}
    out["argv"] = flt.argv([str(a) for a in record.get("argv", [])])
    return out
