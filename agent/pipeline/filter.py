"""The one exit: every string and byte that leaves a check passes a `Filter` on its way out.

The pipeline calls the filter on each check's result as the runner hands it over
(summary, findings, data, and the argv of every command it ran, which becomes
`commands.json`), before anything shows or stores it; on each raw evidence file
(artifacts, copied files, `traceback.txt`, `check-output.txt`) as it streams into the
archive; and on the node identity. report.json, report.html, the manifest and the
terminal summary are built only from what came out of the filter. Then every member
passes the leak scan (`leak_scan_for` in redact/catalog.py) as the archive writer
takes it (pipeline/members.py).

Two filters exist:
- the `Redactor` (snapshot_agent.redact, the default): every rule of the redaction
  catalogue; it counts what each rule removed, per rule and per file, never the values;
- `IdentityFilter` (`--no-redact`): passes everything; the manifest and the report say
  the snapshot was not redacted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from snapshot_agent.config import RedactionConfig
from snapshot_agent.core.check import Check
from snapshot_agent.core.printable import well_formed
from snapshot_agent.core.results import Finding, Result
from snapshot_agent.redact.audit import RedactionAudit
from snapshot_agent.redact.catalog import redactor_for


class Filter(Protocol):
    """What every string and byte leaving a check goes through.

    `source` names where the text is going (an archive member, `results/<check id>`),
    for the per-file counts of the audit.
    """

    def text(self, value: str, source: str = "") -> str:
        """The filtered form of one string."""
        ...

    def field(self, name: str, value: str, source: str = "") -> str:
        """The filtered form of a string held under a name (a JSON field)."""
        ...

    def stream(self, chunks: Iterable[bytes], source: str = "") -> Iterator[bytes]:
        """The filtered form of a byte stream (an evidence file), chunk by chunk."""
        ...

    def argv(self, argv: Sequence[str], source: str = "", name: str = "") -> list[str]:
        """The filtered form of a command line, argument by argument (`name`: the field
        the list is the value of, for each argument)."""
        ...

    def audit(self) -> RedactionAudit:
        """Whether this filter redacts, and how many times each rule fired so far."""
        ...


class IdentityFilter:
    """Passes everything unchanged (`--no-redact`)."""

    def text(self, value: str, source: str = "") -> str:
        """`value` itself."""
        return value

    def field(self, name: str, value: str, source: str = "") -> str:
        """`value` itself."""
        return value

    def stream(self, chunks: Iterable[bytes], source: str = "") -> Iterator[bytes]:
        """The chunks themselves."""
        yield from chunks

    def argv(self, argv: Sequence[str], source: str = "", name: str = "") -> list[str]:
        """The arguments themselves."""
        return list(argv)

    def audit(self) -> RedactionAudit:
        """Nothing was redacted."""
        return RedactionAudit(applied=False)


def filter_for(
    redact: bool, settings: RedactionConfig | None = None, hostnames: Sequence[str] = ()
) -> Filter:
    """The filter a snapshot with these options uses (`hostnames`: the node's own names,
    for pseudonyms)."""
    if not redact:
        return IdentityFilter()
    return redactor_for(settings or RedactionConfig(), hostnames)


def filter_value(flt: Filter, value: Any, source: str = "", name: str = "") -> Any:
    """Filter every string in a JSON-like value (dict keys too), keeping its shape.

    A string is filtered with the path of keys above it as its name (`secrets.db`,
    `auth.password`), so `{"IGGY_ROOT_PASSWORD": "x"}` and `{"credentials": {"db": "x"}}`
    lose their values; in a `{"name": "DB_PASSWORD", "value": "x"}` pair (a Kubernetes
    env entry) the value is named by the name. A list of strings is also filtered as a
    command line (`["--password", "x"]`). Whatever is not JSON (bytes, paths, sets,
    objects) becomes text first, so it is filtered like everything else and the report
    can always be written.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = well_formed(value)  # a file name that is not UTF-8 (surrogateescape)
        return flt.field(name, value, source) if name else flt.text(value, source)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {
            str(filter_value(flt, k, source)): filter_value(flt, v, source, _child(value, k, name))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) for v in value):
            # Strings side by side may be a command line: ["--password", "x"]; under a
            # secret name each is that name's value too ({"tokens": ["a", "b"]}).
            return type(value)(flt.argv([well_formed(v) for v in value], source, name))
        return type(value)(filter_value(flt, v, source, name) for v in value)
    if isinstance(value, set | frozenset):
        return [filter_value(flt, v, source, name) for v in sorted(value, key=str)]
    return flt.text(str(value), source)


#: Keys nested this deep still carry their parents' names (a bound on the path's length).
MAX_NAME_DEPTH = 4


def _child(parent: dict[Any, Any], key: Any, name: str) -> str:
    """The name a value under `key` is filtered with: the key path, or for the `value` of
    a name/value pair, the pair's name."""
    named = parent.get("name")
    if str(key).lower() == "value" and isinstance(named, str) and named:
        return named
    path = [*name.split("."), str(key)] if name else [str(key)]
    return ".".join(path[-MAX_NAME_DEPTH:])


def results_source(check_id: str) -> str:
    """How the audit names a check's summary, findings, data and commands."""
    return f"results/{check_id}"


def filter_result(flt: Filter, check: Check, result: Result) -> Result:
    """The result with its summary, findings and data filtered (artifacts stream later)."""
    source = results_source(check.id)

    def text(value: str) -> str:
        return flt.text(well_formed(value), source)

    return replace(
        result,
        summary=text(result.summary),
        findings=[
            Finding(f.severity, text(f.message), text(f.remediation), text(f.subject))
            for f in result.findings
        ],
        data=filter_value(flt, result.data, source),
        commands=[_filter_command(flt, c, source) for c in result.commands],
    )


def _filter_command(flt: Filter, record: dict[str, Any], source: str) -> dict[str, Any]:
    """A command record with its argv filtered as a command line, other strings as text."""
    out = {k: filter_value(flt, v, source) for k, v in record.items() if k != "argv"}
    out["argv"] = flt.argv([well_formed(str(a)) for a in record.get("argv", [])], source)
    return out
