"""The redactor: the one exit every string and byte leaving the node passes.

It runs the rules (rule.py) over text line by line, replaces what they find with
`[REDACTED:label]` (or a pseudonym) and counts each hit per rule and per source. The
same object serves strings (`text`), byte streams (`stream`: evidence files, members),
command lines (`argv`) and the manifest (`audit`).

Speed comes from the rules' gates (or hints): a line not matching a rule's gate, or
holding none of its hint words when it has no gate, is never shown to that rule, and
most log lines wake no rule at all (one RE2 automaton finds the ones that do, then one
RE2 set names the rules each wakes). A rule inside a multi-line secret (`open`) sees
every line until it closes.

Memory is bounded: streams go in blocks of whole lines (one read, 1 MiB, at a time),
and a line still unfinished after `MAX_LINE` bytes is cut into pieces after a
separator (a space, a comma, ...) near the limit, so a 1 GB file without a newline is
redacted in 64 KiB pieces. Strings (`text`) go the same way.
"""

from __future__ import annotations

import functools
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
NEWLINE = ord("\n")
#: RE2's memory budget for each automaton (its DFA cache grows to this, then is reset):
#: the key/value gate's automaton needs more than RE2's default of 8 MiB.
MAX_MEM = 32 << 20


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
        return cls(tuple(rules), always, _gates(tuple(hints), tuple(gates)))


@functools.lru_cache(maxsize=16)
def _gates(hints: tuple[tuple[str, ...], ...], gates: tuple[str, ...]) -> _Gates:
    """The prefilter for these hints and gates, compiled once per process (the same rule
    set serves every redactor of a snapshot, and its automata warm up once)."""
    return _Gates(hints, gates)


class _Gates:
    """Finds the lines that may hold a hit, and the rules each may wake.

    A rule wakes on a line matching its `gate` (a regex: `password` followed by `=` or
    `:`, not "Accepted password for"), or, without one, holding one of its hints. One
    RE2 automaton over every rule's gate (or hints) finds the next such line at hundreds
    of MB/s, which is why most log lines cost almost nothing; then one RE2 set of the
    same patterns names the rules that line wakes.
    """

    def __init__(self, hints: Sequence[tuple[str, ...]], gates: Sequence[str]) -> None:
        patterns: list[bytes] = []
        self.rules_of: list[int] = []  # set pattern index -> rule index
        words: list[bytes] = []
        for rule, (rule_hints, gate) in enumerate(zip(hints, gates, strict=True)):
            if not rule_hints:
                continue  # no hints: every line (the plan's `always`)
            escaped = [re2.escape(h.encode()) for h in rule_hints]
            words += escaped
            patterns.append(b"(?i)(?:" + (gate.encode() if gate else b"|".join(escaped)) + b")")
            self.rules_of.append(rule)
        self.live = bool(patterns)
        if self.live:
            self._any = re2.compile(b"|".join(patterns), _re2_options())
            self._set = _re2_set(patterns)
            self._hints = _re2_set([b"(?i)(?:" + b"|".join(words) + b")"])
            self._patterns = patterns
            self._each: list[Any] = []  # each pattern alone, compiled when first needed

    def woken(self, line: bytes) -> list[int]:
        """The rules `line` (with its terminator) wakes, in order: their gate, or a hint."""
        rules_of = self.rules_of
        found = self._set.Match(line)
        if not found:
            # `_any` matched this line, so one pattern does. An RE2 set that runs out of
            # memory answers "none" instead of failing (a search falls back to a slower
            # engine instead): ask each pattern, so no line is skipped that way.
            if not self._each:
                self._each = [re2.compile(p, _re2_options()) for p in self._patterns]
            found = [i for i, pattern in enumerate(self._each) if pattern.search(line)]
        return [rules_of[i] for i in sorted(found)]

    def hinted(self, data: bytes) -> bool:
        """Whether `data` holds any rule's hint."""
        return self.live and bool(self._hints.Match(data))

    def lines(self, data: bytes, view: bytes) -> list[tuple[int, int, list[int]]]:
        """(start, end, rules woken) of every line of `data` that wakes a rule, in order."""
        found: list[tuple[int, int, list[int]]] = []
        if not self.live:
            return found
        search, woken = self._any.search, self.woken
        rfind, find, size = view.rfind, view.find, len(view)
        at = 0
        # Each search starts on the terminator before the next line, so a gate anchored
        # at a line start (`(?:^|[\n\x00])`) sees it; a match starting on a terminator
        # is the next line's.
        while (match := search(data, max(at - 1, 0))) is not None:
            hit = match.start()
            if view[hit] == NEWLINE:
                hit += 1
            start = rfind(b"\n", 0, hit) + 1
            end = find(b"\n", hit)
            if end < 0:
                end = size
            rules = woken(data[start : end + 1])
            if rules:
                found.append((start, end, rules))
            at = end + 1
        return found


def _re2_options() -> Any:
    """Bytes as Latin-1: every byte is a character, so a gate's negated class also
    matches bytes that are not UTF-8 (a Latin-1 config), and nothing stops a match."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = MAX_MEM
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

        Only lines that wake a rule (or all lines, while a rule is open) are decoded and
        shown to the rules; everything between them is copied as it is.
        """
        # Lines end at \n and at NUL: find both as \n in a copy (a linear pass), so no
        # search for one runs past many of the other.
        view = data.replace(b"\0", b"\n") if b"\0" in data else data
        found = self.plan.gates.lines(data, view)
        if not found and not self._every_line():
            return data
        out: list[bytes] = []
        pos, size, index, count = 0, len(data), 0, len(found)
        while pos < size:
            while index < count and found[index][0] < pos:
                index += 1
            if index < count and (found[index][0] == pos or not self._every_line()):
                start, end, woken = found[index]
                index += 1
                out.append(data[pos:start])
            elif self._every_line():
                start, end, woken = pos, _line_end(view, pos), []
            else:
                break  # no rule open and no line left that wakes one
            out.append(self.line(data[start:end], woken))
            out.append(data[end : end + 1])
            pos = end + 1
        out.append(data[pos:])
        return b"".join(out)

    def line(self, raw: bytes, woken: list[int]) -> bytes:
        """One line redacted by the rules its gates wake and the rules that are open."""
        inside, always = self.inside, self.plan.always
        # `woken` is in rule order already; rules open or always on join it.
        wake = sorted({*woken, *inside, *always}) if inside or always else woken
        if not wake:
            return raw
        text = raw.decode("utf-8", "surrogateescape")
        body, cr = (text[:-1], "\r") if text.endswith("\r") else (text, "")
        hits: list[Hit] = []
        scanners = self.scanners
        for index in wake:
            scanner = scanners[index]
            found = scanner.scan(body)
            if found:
                hits += found
            if scanner.open:
                inside.add(index)
            else:
                inside.discard(index)
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
