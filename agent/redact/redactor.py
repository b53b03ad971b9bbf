"""The redactor: the one exit every string and byte leaving the node passes.

It runs the rules (rule.py) over text line by line, replaces what they find with
`[REDACTED:label]` (or a pseudonym) and counts each hit per rule and per source. The
same object serves strings (`text`), byte streams (`stream`: evidence files, members),
command lines (`argv`) and the manifest (`audit`).

Speed comes from the rules' hints and gates: a line holding none of a rule's hint
words, or not matching its gate, is never shown to that rule, and most log lines wake
no rule at all (one RE2 automaton finds the ones that do). A rule inside a multi-line
secret (`open`) sees every line until it closes.

Memory is bounded: streams go in blocks of whole lines (one read, 1 MiB, at a time),
and a line still unfinished after `MAX_LINE` bytes is cut into pieces after a
separator (a space, a comma, ...) near the limit, so a 1 GB file without a newline is
redacted in 64 KiB pieces. Strings (`text`) go the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import re2  # google-re2: the prefilter's automaton and sets

from snapshot_agent.redact.audit import RedactionAudit, Tally
from snapshot_agent.redact.cmdline import secret_arguments
from snapshot_agent.redact.keys import SecretKeys
from snapshot_agent.redact.rule import MAX_LINE, Hit, Rule, Scanner, replacement

#: What `field` counts its redactions as: the key/value rule, applied to a JSON pair.
FIELD_RULE = "secret-key-value"
#: Where a long line may be cut: after one of these, searched in the last `CUT_WINDOW`
#: characters before the limit (a token holds none of them, so it is rarely split).
CUT_AFTER = tuple(c.encode() for c in " \t,;&{}[]<>|")
CUT_WINDOW = 4096
#: A cut is not made where a hint word ends within this many bytes before it.
CUT_CONTEXT = 48


@dataclass(frozen=True)
class _Plan:
    """The rules of one redactor, and the prefilter that says which lines wake which."""

    rules: tuple[Rule, ...]
    always: tuple[int, ...]  # rules with no hints: every line
    gates: _Gates

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> _Plan:
        """Index `rules` by their scanners' hints and gates."""
        hints: list[tuple[str, ...]] = []
        gates: list[str] = []
        for rule in rules:
            scanner = rule.scanner()
            for hint in scanner.hints:
                if not hint.isascii() or hint.lower() != hint or not hint:
                    raise ValueError(f"rule {rule.name}: hint {hint!r} is not lower-case ASCII")
            hints.append(tuple(scanner.hints))
            gates.append(getattr(scanner, "gate", ""))
        always = tuple(i for i, h in enumerate(hints) if not h)
        return cls(tuple(rules), always, _Gates(hints, gates))


class _Gates:
    """Finds the lines that may hold a hit, and the rules each may wake.

    A rule wakes on a line holding one of its hints, and matching its `gate` when it has
    one (a regex: `password` followed by `=` or `:`, not "Accepted password for"). One RE2
    automaton over every rule's gate (or hints) finds the next such line at hundreds of
    MB/s, which is why most log lines cost almost nothing; then one RE2 set of the hints
    and one of the gates name the rules that line wakes.
    """

    def __init__(self, hints: Sequence[tuple[str, ...]], gates: Sequence[str]) -> None:
        self.rules_of: list[int] = []  # hint index -> rule index
        words: list[bytes] = []
        for rule, rule_hints in enumerate(hints):
            for hint in rule_hints:
                words.append(b"(?i)" + re2.escape(hint.encode()))
                self.rules_of.append(rule)
        either = [
            g.encode() if g else b"|".join(re2.escape(x.encode()) for x in h)
            for h, g in zip(hints, gates, strict=True)
            if h
        ]
        self.live = bool(words)
        self.gated = [i for i, g in enumerate(gates) if g]
        if self.live:
            self._any = re2.compile(b"(?i)(?:" + b")|(?:".join(either) + b")", _re2_options())
            self._hints = _re2_set(words)
        if self.gated:
            self._gates = _re2_set([b"(?i)(?:" + gates[i].encode() + b")" for i in self.gated])

    def woken(self, line: bytes) -> list[int]:
        """The rules `line` (with its terminator) wakes: a hint of theirs, and their gate."""
        found = {self.rules_of[i] for i in self._hints.Match(line) or ()}
        if self.gated:
            opened = {self.gated[i] for i in self._gates.Match(line) or ()}
            found -= set(self.gated) - opened
        return sorted(found)

    def hinted(self, data: bytes) -> bool:
        """Whether `data` holds any rule's hint."""
        return self.live and bool(self._hints.Match(data))

    def lines(self, data: bytes, view: bytes) -> dict[int, tuple[int, list[int]]]:
        """Start of every line of `data` that wakes a rule -> (its end, the rules woken)."""
        found: dict[int, tuple[int, list[int]]] = {}
        if not self.live:
            return found
        at = 0
        while (match := self._any.search(data, at)) is not None:
            start = _line_start(view, match.start())
            end = _line_end(view, match.start())
            rules = self.woken(data[start : end + 1])
            if rules:
                found[start] = (end, rules)
            at = end + 1
        return found


def _re2_options() -> Any:
    """Bytes as Latin-1: every byte is a character, so a gate's negated class also
    matches bytes that are not UTF-8 (a Latin-1 config), and nothing stops a match."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    return options


def _re2_set(patterns: list[bytes]) -> Any:
    """An RE2 set of `patterns`: one call names every pattern a text matches."""
    found = re2.Set.SearchSet(_re2_options())
    for pattern in patterns:
        found.Add(pattern)
    found.Compile()
    return found


class _Pass:
    """One text (a string, a stream) going through the rules, line after line, in order."""

    def __init__(self, plan: _Plan, tally: Tally, source: str, prefix: str) -> None:
        self.plan = plan
        self.scanners: list[Scanner] = [rule.scanner() for rule in plan.rules]
        # Scanners inside a multi-line secret. A scanner's state changes only when it
        # scans, so this is updated there and no line asks every scanner.
        self.inside: set[int] = set()
        self.tally = tally
        self.source = source
        self.prefix = prefix

    def block(self, data: bytes) -> bytes:
        """`data` (whole lines, or a piece of one long line) redacted.

        Only lines holding a hint (or all lines, while a rule is open) are decoded and
        shown to the rules; everything between them is copied as it is.
        """
        # Lines end at \n and at NUL: find both as \n in a copy (a linear pass), so no
        # search for one runs past many of the other.
        view = data.replace(b"\0", b"\n") if b"\0" in data else data
        hinted = self.plan.gates.lines(data, view)
        if not hinted and not self._every_line():
            return data
        out: list[bytes] = []
        pos, size = 0, len(data)
        starts = sorted(hinted)
        next_hint = 0
        while pos < size:
            if not self._every_line():  # jump to the next line holding a hint
                while next_hint < len(starts) and starts[next_hint] < pos:
                    next_hint += 1
                if next_hint == len(starts):
                    break
                start = starts[next_hint]
                out.append(data[pos:start])
                pos = start
            end, hints = hinted.get(pos) or (_line_end(view, pos), [])
            out.append(self.line(data[pos:end], hints))
            out.append(data[end : end + 1])
            pos = end + 1
        out.append(data[pos:])
        return b"".join(out)

    def line(self, raw: bytes, woken: Iterable[int]) -> bytes:
        """One line redacted by the rules its gates wake and the rules that are open."""
        wake = set(self.plan.always)
        wake.update(woken)
        wake |= self.inside
        if not wake:
            return raw
        text = raw.decode("utf-8", "surrogateescape")
        body, cr = (text[:-1], "\r") if text.endswith("\r") else (text, "")
        hits: list[Hit] = []
        for index in sorted(wake):
            scanner = self.scanners[index]
            hits += scanner.scan(body)
            if scanner.open:
                self.inside.add(index)
            else:
                self.inside.discard(index)
        if not hits:
            return raw
        return (self._replace(body, hits) + cr).encode("utf-8", "surrogateescape")

    def _replace(self, line: str, hits: list[Hit]) -> str:
        """`line` with the union of the hits' spans replaced, each hit counted."""
        hits.sort(key=lambda h: (h.start, -h.end))
        out: list[str] = []
        done = 0
        span_start, span_end, label, text = -1, -1, "", ""
        for hit in hits:
            self.tally.add(self.prefix + hit.rule, self.source)
            if hit.start < span_end:  # overlaps the current span: widen it
                span_end = max(span_end, hit.end)
                continue
            if span_end >= 0:
                out += [line[done:span_start], text or replacement(label)]
                done = span_end
            span_start, span_end, label, text = hit.start, hit.end, hit.label, hit.text
        out += [line[done:span_start], text or replacement(label), line[span_end:]]
        return "".join(out)

    def _every_line(self) -> bool:
        """Whether the next line must be scanned whatever it holds."""
        return bool(self.plan.always or self.inside)


def _line_start(view: bytes, at: int) -> int:
    """Where the line holding position `at` starts (`view`: NUL already made \\n)."""
    return view.rfind(b"\n", 0, at) + 1


def _line_end(view: bytes, at: int) -> int:
    """Where the line holding position `at` ends (its terminator, or the data's end)."""
    end = view.find(b"\n", at)
    return len(view) if end < 0 else end


class Redactor:
    """Every rule over every line of everything that leaves the node; counts what it did."""

    def __init__(
        self,
        rules: Sequence[Rule],
        prefix: str = "",
        pseudonymized: bool = False,
        keys: SecretKeys | None = None,
    ):
        self.plan = _Plan.of(rules)
        self.keys = keys  # secret key names, for `field`
        self.tally = Tally()
        self.prefix = prefix
        self.pseudonymized = pseudonymized

    def text(self, value: str, source: str = "") -> str:
        """`value` redacted (`source` names it in the audit)."""
        data = _encode(value)
        out = b"".join(self.stream([data], source))
        return value if out == data else _decode(out)

    def field(self, name: str, value: str, source: str = "") -> str:
        """`value` held under `name` (a JSON field, a dict entry of a check's data).

        The pair is not one line of text, so the key/value rules cannot see it: when the
        name marks a secret (and the value is not benign), the whole value goes.
        """
        label = self.keys.secret_label(name, value) if self.keys else None
        if label is None:
            return self.text(value, source)
        self.tally.add(self.prefix + FIELD_RULE, source)
        return replacement(label)

    def stream(self, chunks: Iterable[bytes], source: str = "") -> Iterator[bytes]:
        """A byte stream redacted in blocks of whole lines; bytes that are not UTF-8 pass.

        Memory holds one block and one unfinished line (at most `MAX_LINE`), whatever the
        size of the stream or of its lines.
        """
        work = _Pass(self.plan, self.tally, source, self.prefix)
        pending = b""
        for chunk in chunks:
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\0")) + 1
            if cut:
                yield work.block(pending[:cut])
                pending = pending[cut:]
            while len(pending) >= MAX_LINE:
                piece = _cut(pending, self.plan.gates.hinted)
                yield work.block(pending[:piece])
                pending = pending[piece:]
        if pending:
            yield work.block(pending)

    def argv(self, argv: Sequence[str], source: str = "", name: str = "") -> list[str]:
        """A command line redacted argument by argument, and across arguments.

        `["--password", "hunter2"]` is two arguments, so no text rule sees both: the
        command-line rules say which arguments (from which offset) are secret. With a
        `name` (the list is a field's value), each argument is that field's value too.
        """
        secret = {
            index: (offset, rule, label) for index, offset, rule, label in secret_arguments(argv)
        }
        out = []
        for index, arg in enumerate(argv):
            if index not in secret:
                out.append(self.field(name, arg, source) if name else self.text(arg, source))
                continue
            offset, rule, label = secret[index]  # from `offset` on, the argument goes whole
            self.tally.add(self.prefix + rule, source)
            out.append(self.text(arg[:offset], source) + replacement(label))
        return out

    def audit(self) -> RedactionAudit:
        """Applied; the count per rule and per file.

        Every rule of a first pass is listed, 0 if it never fired (the record of what
        ran); a second pass (the leak scan, `prefix`) lists only what it found.
        """
        rules = {} if self.prefix else {rule.name: 0 for rule in self.plan.rules}
        rules.update(self.tally.rules)
        return RedactionAudit(
            applied=True,
            rules=rules,
            files={name: dict(counts) for name, counts in self.tally.files.items()},
            pseudonymized=self.pseudonymized,
        )


def _cut(data: bytes, hinted: Callable[[bytes], bool]) -> int:
    """Where to cut a line of at least MAX_LINE bytes: after a separator near the limit,
    and not one just after a hint word (`--password |value`, `Bearer |token`), whose
    value the cut would part from it."""
    low, high, first = MAX_LINE - CUT_WINDOW, MAX_LINE, -1
    for _ in range(64):
        at = max(data.rfind(c, low, high) for c in CUT_AFTER)
        if at < 0:
            break
        first = at if first < 0 else first
        if not hinted(data[max(0, at - CUT_CONTEXT) : at + 1]):
            return at + 1
        high = at
    return first + 1 if first >= 0 else MAX_LINE


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
