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
- `RuleFilter`, applying `COMMAND_LINE_RULES` (the default): masks secrets given as
  command-line options, `NAME=value` assignments and URL passwords, wherever they
  appear. It is the first piece of the redactor; the redaction issue replaces it with
  the full structure-aware redactor behind this same interface.

A filter counts what each rule masked (`audit()`), never the values.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    replacement: str | Callable[[re.Match[str]], str]

    def apply(self, text: str) -> tuple[str, int]:
        """(text with every match replaced, number of matches)."""
        return self.pattern.subn(self.replacement, text)


#: A word that marks a secret, as a whole word of a name: after a start, `_`, `-`, `.`,
#: a digit or a camelCase hump, and before an end or a non-letter. So `DB_PASSWORD`,
#: `--api-key`, `keyStorePassword`, `X-Auth-Token`, but not `bypass`, `monkey`,
#: `passthrough`, `KeyringMode` or `PassEnvironment`.
_SECRET_WORD = (
    r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))"
    r"(?i:pass(?:word|wd|phrase)?|secrets?|tokens?|keys?|auth|credentials?"
    r"|api_?keys?|access_?keys?|auth_?tokens?|private_?keys?)"
    r"(?![A-Za-z])"
)
#: A name that mentions a secret. Bounded, and every pattern starts only at a word's
#: start, so a megabyte-long token costs linear time, never quadratic.
_NAME = rf"[\w.-]{{0,64}}?{_SECRET_WORD}[\w.-]{{0,64}}"
#: A value: quoted (the quotes stay, so JSON and shell text keep their shape), or a bare
#: word that stops at quotes and backslashes (never eats the end of a JSON string).
_VALUE = (
    r"(?:\"(?!\*\*\*\")[^\"\\\n]{1,256}\""
    r"|'(?!\*\*\*')[^'\\\n]{1,256}'"
    r"|(?![\"'])(?!\*\*\*)[^\s\"'\\]+)"
)
SECRET_OPTION = "secret-option"
PROGRAM_OPTION = "program-option"
_SECRET_OPTION_NAME = re.compile(rf"-{{1,2}}{_NAME}")


def _masked(match: re.Match[str]) -> str:
    """The match with its last group (the value) masked, quotes kept."""
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" and len(value) > 1 and value[-1] == value[0] else ""
    start, _ = match.span("value")
    head = match.string[match.start() : start]
    return f"{head}{quote}{MASK}{quote}"


#: Programs whose short options carry a password: (option, its value only attached).
#: mysql's `-p VALUE` prompts (VALUE is the database), so only `-pVALUE` is a password.
PROGRAM_SECRET_FLAGS: dict[str, tuple[tuple[str, bool], ...]] = {
    **{
        name: (("-p", True),)
        for name in (
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlcheck",
            "mariadb",
            "mariadb-dump",
        )
    },
    "redis-cli": (("-a", False),),
    "sshpass": (("-p", False),),
    "iggy": (("-p", False),),  # the Iggy CLI: -u USER -p PASSWORD
    "curl": (("-u", False), ("--user", False)),  # USER:PASSWORD: the part after ':'
}


class ProgramOptionRule:
    """Short options that carry a password for the programs that use them that way.

    `mysql -pSECRET`, `redis-cli -a SECRET`, `iggy -p SECRET`, `curl -u user:SECRET`:
    the same options mean a port or a path elsewhere (`ssh -p 22`), so the program
    decides. Text is walked word by word, so the cost stays linear in its length.
    """

    name = PROGRAM_OPTION

    def apply(self, text: str) -> tuple[str, int]:
        """(text with each such option's value masked, how many were masked)."""
        if not any(program in text for program in PROGRAM_SECRET_FLAGS):
            return text, 0
        words = re.split(r"([ \t\n]+)", text)
        hits = mask_program_options(words)
        return ("".join(words), hits) if hits else (text, 0)


def mask_program_options(words: list[str]) -> int:
    """Mask password options in words interleaved with separators; how many were masked.

    `words` holds words at even indices and the separators between them at odd ones; a
    separator with a newline starts a new command line.
    """
    hits = 0
    flags: tuple[tuple[str, bool], ...] = ()
    program = ""
    for k in range(0, len(words), 2):
        word = words[k]
        if k and "\n" in words[k - 1]:
            flags = ()
        name = os.path.basename(word.strip("'\""))
        if name in PROGRAM_SECRET_FLAGS:
            flags, program = PROGRAM_SECRET_FLAGS[name], name
            continue
        for flag, attached_only in flags:
            if word.startswith(flag) and len(word) > len(flag) and not flag.startswith("--"):
                words[k] = flag + _hide_password(word[len(flag) :], program)
            elif word == flag and not attached_only and k + 2 < len(words):
                value = words[k + 2]
                if value.startswith("-") or MASK in value:
                    continue
                words[k + 2] = _hide_password(value, program)
            else:
                continue
            hits += 1
    return hits


#: Secrets handed to programs on their command line, wherever such text turns up
#: (process tables, unit files, logs). Order matters: assignments before options.
#: Absolute paths are not secrets (`--key-file /etc/iggy/key.pem` stays readable).
COMMAND_LINE_RULES: tuple[Rule | ProgramOptionRule, ...] = (
    # NAME=value, --opt=value, -Dsome.password=value, PASSWORD="two words"
    Rule(
        "secret-assignment",
        re.compile(rf"(?<![\w.-]){_NAME}=(?!/)(?P<value>{_VALUE})"),
        _masked,
    ),
    # --password value: the value is the next word unless it is another long option
    # (`--auth --verbose` is a flag, not a value)
    Rule(
        SECRET_OPTION,
        re.compile(rf"(?<![\w-])-{{1,2}}{_NAME}[ \t]+(?!--|/)(?P<value>{_VALUE})"),
        _masked,
    ),
    # scheme://user:password@host (userinfo holds no '/', quote or '@' unescaped)
    Rule(
        "url-password",
        re.compile(
            r"(?<![\w+.-])[A-Za-z][\w+.-]{0,31}://[^/\s:@\"'\\]{0,256}:"
            r"(?P<value>(?!\*\*\*@)[^/\s@\"'\\]{1,256})@"
        ),
        lambda m: f"{m.string[m.start() : m.start('value')]}{MASK}@",
    ),
    # Authorization: Bearer <token>, in headers, curl -H arguments, logs
    Rule(
        "auth-header",
        re.compile(
            r"(?i)(?<![\w-])(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
            r"(?:(?:bearer|basic|token|digest|negotiate|apikey)[ \t]+)?"
            rf"(?P<value>{_VALUE})"
        ),
        _masked,
    ),
    ProgramOptionRule(),
)


#: Every command-line rule needs one of these in the text (lower case: `RuleFilter.text`
#: looks for them in the lower-cased text).
COMMAND_LINE_HINT = (
    "pass",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "://",
    "mysql",
    "mariadb",
    "redis-cli",
    "iggy",
    "curl",
)


class RuleFilter:
    """Applies rules to every string and to every line of every stream, counting matches."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def text(self, value: str) -> str:
        """`value` with every rule applied in order."""
        # COMMAND_LINE_HINT: lower-case words of which every match of the rules contains
        # one. Lines without any pass at once, which is most text; str.find is some fifty
        # times faster than a regex alternation over the same text.
        lower = value.lower()
        if len(lower) != len(value):  # (a few letters lengthen)
            return self._apply(value)
        if not any(word in lower for word in COMMAND_LINE_HINT):
            return value  # most strings: nothing any rule could match
        # No rule spans lines, so only the lines around a hint pay for the rules.
        pieces: list[str] = []
        done = 0
        for hit in sorted(_positions(lower, COMMAND_LINE_HINT)):
            if hit < done:
                continue  # on a line already filtered
            start = value.rfind("\n", 0, hit) + 1
            end = value.find("\n", hit)
            end = len(value) if end < 0 else end
            pieces += [value[done:start], self._apply(value[start:end])]
            done = end
        if not pieces:
            return value
        pieces.append(value[done:])
        return "".join(pieces)

    def _apply(self, value: str) -> str:
        for rule in COMMAND_LINE_RULES:
            value, hits = rule.apply(value)
            if hits:
                self.counts[rule.name] += hits
        return value

    def stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Filter whole lines, a block at a time; bytes that are not UTF-8 pass unchanged.

        No rule matches across a line break, so a block of whole lines filters exactly
        like each line alone.
        """
        pending = b""
        for chunk in chunks:
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                yield self._block(pending[:cut])
                pending = pending[cut:]
            while len(pending) >= MAX_LINE:
                yield self._block(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
        if pending:
            yield self._block(pending)

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
        return self._program_flags(out)

    def _program_flags(self, argv: list[str]) -> list[str]:
        """Mask the values of short options that carry a password for this program."""
        words = [part for arg in argv for part in (arg, " ")][:-1]
        hits = mask_program_options(words)
        self.counts[PROGRAM_OPTION] += hits
        return words[::2] if hits else argv

    def audit(self) -> RedactionAudit:
        """Applied, with the count per rule (rules that never fired are listed with 0)."""
        return RedactionAudit(
            applied=True, rules={r.name: self.counts[r.name] for r in COMMAND_LINE_RULES}
        )

    def _block(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        return self.text(text).encode("utf-8", "surrogateescape")


def _hide_password(value: str, program: str) -> str:
    """The value with its password masked (for curl's USER:PASSWORD, the part after ':').

    Quotes around it stay, so shell text keeps its shape.
    """
    quote = value[0] if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0] else ""
    inner = value[1:-1] if quote else value
    if program == "curl" and ":" in inner:
        return f"{quote}{inner.split(':', 1)[0]}:{MASK}{quote}"
    return f"{quote}{MASK}{quote}"


def _positions(text: str, words: Sequence[str]) -> Iterator[int]:
    """Every position where one of `words` starts in `text`."""
    for word in words:
        at = text.find(word)
        while at >= 0:
            yield at
            at = text.find(word, at + 1)


def filter_for(redact: bool) -> Filter:
    """The filter a snapshot with these options uses."""
    return RuleFilter() if redact else IdentityFilter()


def filter_value(flt: Filter, value: Any) -> Any:
    """Filter every string in a JSON-like value (dict keys too), keeping its shape.

    Whatever is not JSON (bytes, paths, sets, objects) becomes text first, so it is
    filtered like everything else and the report can always be written.
    """
    if isinstance(value, str):
        return flt.text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(filter_value(flt, k)): filter_value(flt, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(filter_value(flt, v) for v in value)
    if isinstance(value, set | frozenset):
        return [filter_value(flt, v) for v in sorted(value, key=str)]
    if isinstance(value, bytes):
        return flt.text(value.decode("utf-8", "replace"))
    return flt.text(str(value))


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
