"""Layer 1: the values of keys whose name marks a secret, in any structured text.

One rule, `secret-key-value`, reads TOML, YAML, JSON, INI, dotenv, environ, systemd units,
PHP and log `key=value` pairs alike: it finds `name` + separator (`=`, `:`, `=>`, `:=`)
wherever it occurs, asks `SecretKeys` whether the name marks a secret, and removes the
value that follows. Spans are the value only: never the key, quotes or brackets, so the
redacted text still parses (`password = "[REDACTED:password]"`).

What a value is depends on where the key stands:
- a quoted value (`"..."` with backslash escapes, `'...'` with YAML's `''`, `\\"...\\"` in
  escaped JSON, TOML `\"\"\"`/`'''`) is its content; it may continue on the next lines;
- an unquoted key at the start of a line (after indentation, `- `, `export `): the rest
  of the line (passwords with spaces; `#` inside is part of it);
- a key inside a quoted string (`Environment="PASSWORD=x y"`, `"Env": ["TOKEN=x"]`):
  up to the closing quote;
- elsewhere (`user=bob password=hunter2 host=x`, `{password: x, user: y}`): up to a
  space, `,`, `;`, `&`, `}`, `]` or quote;
- `[...]` (TOML/YAML/JSON arrays): each item;
- YAML block scalars (`password: |`), an empty YAML value followed by deeper-indented
  items or lines (`tokens:` / `  - abc`), an unclosed `[` or `{`: the following lines.
  Under such a parent, list items take the parent's strength; nested `name: value` pairs
  whose name is not itself secret count as WEAK (their values must look secret).
- Kubernetes/ECS env lists: `name: DB_PASSWORD` then `value: x` (within 3 lines).
A value that is benign (keys.is_benign_value) or already redacted is kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from snapshot_agent.redact.keys import (
    GATE_NAME_CHAR,
    GATE_WEAK_WORDS,
    KEY_QUALIFIERS,
    SecretKeys,
    SecretKind,
    gate_name_rest,
    is_benign_for,
    looks_secret,
    name_start,
)
from snapshot_agent.redact.rule import REDACTED_PREFIX, Hit, replacement

NAME = "secret-key-value"
#: A quoted value may continue on at most this many following lines (then it is closed:
#: an unmatched quote in a log line must not swallow the rest of the log).
MAX_CONTINUED_LINES = 100
#: How many lines after `name: DB_PASSWORD` a `value:` key still belongs to it.
PENDING_LINES = 3

#: A name followed by a separator. Names start after a non-name character, so a long run
#: of name characters is tried once; every quantifier is bounded.
_CANDIDATE = re.compile(
    r"(?<![\w.\-])(?P<name>[\w.\-]{1,128})(?![\w.\-])"
    r"(?:(?P<kq>\\?[\"'])\]?[ \t]{0,16}(?P<qsep>=>|:=|=(?!=)|:(?!:))"
    r"|[ \t]{0,16}(?P<sep>=>|:=|=(?!=)|:(?!:)))"
)
#: What may stand before a key at the start of a line.
_LINE_START = re.compile(r"[ \t]{0,256}(?:-[ \t]{1,16})?(?:export[ \t]{1,16})?")
_INDENT = re.compile(r"[ \t]{0,65536}")
#: The body of a double-quoted string (backslash escapes), of a single-quoted one.
_DQ_BODY = re.compile(r'[^"\\]{0,65536}(?:\\.[^"\\]{0,65536}){0,32768}', re.S)
_SQ_BODY = re.compile(r"[^']{0,65536}(?:''[^']{0,65536}){0,32768}")
#: A bare value in the middle of a line ends at one of these, or at an escaped quote
#: (`\"` inside a JSON string: the value must not take the backslash).
_BARE_MID = re.compile(r"(?:[^\s,;&})\]\"'\\]|\\(?![\"'])){0,8192}")
#: The scheme word of an Authorization value: it says how, not what, so it stays.
_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|basic|digest|token|negotiate|apikey|ntlm|hoba)[ \t]+")
#: A bare item of a flow sequence.
_BARE_ITEM = re.compile(r"[^\s,\]\[{}\"'#]{1,8192}")
_ITEM_SKIP = re.compile(r"[\s,]{0,65536}")
#: YAML block scalar header: `|`, `>-`, `|2+`, with an optional comment.
_BLOCK_HEADER = re.compile(r"[|>][1-9+\-]{0,2}[ \t]{0,256}(?:#.{0,65536})?")
#: YAML node properties before a value: `&anchor`, `!!str`.
_PROPERTIES = re.compile(r"(?:[&!][^\s]{0,256}[ \t]{1,16}){1,4}")
#: A trailing comment after a bare value (` # ...` or ` ; ...`).
_COMMENT = re.compile(r"[ \t]{1,256}[#;].{0,65536}$")
#: More `name=` pairs after a word: a logfmt line.
_LOGFMT_NEXT = re.compile(r"[ \t]{1,16}[\w.\-]{1,128}=")
_SCHEME = re.compile(r"(?:(?i:bearer|basic|token|digest|negotiate|apikey)[ \t]{1,16})?")
_ENV_NAME = re.compile(r"[\w.\-]{1,128}")
_PAIR_START = re.compile(r"[\w.\-]{1,128}=")
_BRACE_TOKENS = re.compile(r"[{}\"']")
#: What may follow a JSON scalar on its line.
_TRAILER = re.compile(r"[\s,\]}]{0,256}")
#: `define('NAME', 'value')` in PHP (wp-config.php).
_DEFINE = re.compile(
    r"(?i:define)[ \t]{0,8}\([ \t]{0,8}"
    r"(?P<q>[\"'])(?P<name>[\w.\-]{1,128})(?P=q)[ \t]{0,8},[ \t]{0,8}"
)
#: Keys whose value names an environment variable, and the key holding its value.
_NAME_KEYS = frozenset({"name", "key", "variable", "var", "env", "parameterkey", "parametername"})
_VALUE_KEYS = frozenset({"value", "parametervalue"})
#: A key named like one of _NAME_KEYS that holds no secret word (`name: DB_PASSWORD`).
_NAMED = re.compile(r"(?i)(?<![\w.\-])(?:name|variable|var|env|parametername)(?![\w.\-])")
#: How far back a key name may start (the name group of _CANDIDATE: 128).
NAME_REACH = 128


@dataclass
class _Frame:
    """A multi-line value the scanner is inside."""

    kind: str  # block | string | triple | array | nest | next
    secret: SecretKind
    indent: int = 0  # block/nest: lines indented deeper belong to it
    quote: str = ""  # string/triple: the closing delimiter
    depth: int = 0  # array: open brackets
    lines: int = 0  # string: lines continued so far
    same_indent_items: bool = False  # nest: `- item` at the parent's indent belongs to it


@dataclass
class _Line:
    """One line being scanned, and the hits found in it so far."""

    text: str
    hits: list[Hit] = field(default_factory=list)
    #: [start, end) of inline `{...}` values of secret keys: their pairs inherit (WEAK)
    ranges: list[tuple[int, int, SecretKind]] = field(default_factory=list)

    def inherited(self, pos: int) -> SecretKind | None:
        """The kind of the secret parent whose inline `{...}` holds `pos`, if any."""
        if not self.ranges or pos >= self.ranges[-1][1]:
            return None  # ranges come in order and do not overlap
        for start, end, secret in self.ranges:
            if start <= pos < end:
                return SecretKind(secret.label, weak=True)
        return None

    def emit(
        self, start: int, end: int, secret: SecretKind, name: str = "", yaml: bool = False
    ) -> None:
        """Report [start, end) unless its value is benign (or, for WEAK names, not secret).

        `yaml`: a plain YAML scalar. `[REDACTED:x]` alone would parse as a list, so the hit
        takes the space before the value too and replaces both with ` "[REDACTED:x]"`
        (starting first, its text wins when the redactor merges it with a token rule's).
        """
        value = self.text[start:end]
        stripped = value.strip()
        if not stripped or stripped.startswith(REDACTED_PREFIX) or stripped == "***":
            return
        if is_benign_for(name, stripped) or (secret.weak and not looks_secret(stripped)):
            return
        lead = len(value) - len(value.lstrip())
        scheme = _AUTH_SCHEME.match(stripped)  # `Authorization: Bearer x` keeps "Bearer "
        if scheme and scheme.end() < len(stripped):
            lead += scheme.end()
            stripped = stripped[scheme.end() :]
            if stripped.startswith(REDACTED_PREFIX):
                return
        start, end = start + lead, start + lead + len(stripped)
        if yaml and start and self.text[start - 1] in " \t":
            text = f'{self.text[start - 1]}"{replacement(secret.label)}"'
            self.hits.append(Hit(start - 1, end, NAME, secret.label, text))
        else:
            self.hits.append(Hit(start, end, NAME, secret.label))

    def emit_always(self, start: int, end: int, secret: SecretKind) -> None:
        """Report [start, end) (trimmed) unless already redacted: a continuation line."""
        value = self.text[start:end]
        stripped = value.strip()
        if not stripped or stripped.startswith(REDACTED_PREFIX):
            return
        if secret.weak and not looks_secret(stripped):
            return
        lead = len(value) - len(value.lstrip())
        self.hits.append(Hit(start + lead, start + lead + len(stripped), NAME, secret.label))


#: The gate's pieces (RE2, bytes read as Latin-1; see `key_value_gate`).
#: Before a key that may start its line (`line` context: the value may run to its end):
#: the line's start, or `- ` / `export ` (anything ending in `t` or `-`), then blanks.
_G_MAY_START = r"(?:^|[\n\x00t\-])[ \t]*"
#: Before a key that cannot start its line: another character, then blanks (its quote).
_G_MID = r"[^ \t\n\x00t\-][ \t]*"
#: The same before an unquoted key (a quote right before a name opens a quoted string).
_G_MID_BARE = r"(?:[^ \t\n\x00t\-][ \t]+|[^ \t\n\x00t\-\"'])"
_G_QUOTE = r"\\?[\"']"
_G_CLOSE = r"[\"'\\\]`]{0,3}[ \t]*"  # closing quotes or brackets of the key
_G_SEP = r"(?:=>|:=|=(?:[^=]|$)|:(?:[^:]|$))"
_G_SEP_VALUE = r"(?:=>|:=|=|:)[ \t]*"  # then the value
#: The value of a strong key in the middle of a line: anything but a number or a path
#: without long parts ending at a delimiter (`"session_id":746391,`, `; PWD=/home/bob ;`),
#: which `is_benign_value` keeps.
_G_MID_VALUE = (
    r"(?:[^0-9/ \t]|$|[0-9]{13}|[0-9]+[^0-9,;&})\] \t\r\n\x00\"']"
    r"|/[0-9A-Za-z_.@+~%:=/\-]*(?:[^0-9A-Za-z_.@+~%:=/\-,;&})\] \t\r\n\x00\"']"
    r"|[0-9A-Za-z_.@+~%:=\-]{16}))"
)
#: The value of a WEAK key (`key`, `session`, `salt`): one that looks generated
#: (`looks_secret`: 16+ token characters, or a JWT shape, and nothing else), or one
#: that goes on to the next lines (nothing yet, an unclosed quote, a list, a table, a
#: block scalar, YAML properties, a comment).
_G_WEAK_VALUE = (
    r"(?:[\[{|>&!#]|[\r\n\x00]|$|\"\"\"|'''"
    r"|\\?\"(?:[^\"\\\r\n\x00]|\\[^\r\n\x00])*\\?(?:[\r\n\x00]|$)"
    r"|'[^'\r\n\x00]*(?:''[^'\r\n\x00]*)*(?:[\r\n\x00]|$)"
    r"|(?:\\?[\"'`]){0,3}[ \t\x0b\x0c\x1c-\x1f\x85\xa0]*"
    r"(?:[A-Za-z0-9+/_\-]{16,}={0,3}(?:[^A-Za-z0-9+/_\-=.]|$)"
    r"|[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]{8,}){1,2}(?:[^A-Za-z0-9_\-.]|$)))"
)


def key_value_gate(keys: SecretKeys) -> str:
    """What every line holding a value of a secret key matches (`_key_value_gate`)."""
    return _key_value_gate(keys.hints, keys.extra)


@functools.lru_cache(maxsize=16)
def _key_value_gate(hints: tuple[str, ...], extra_keys: tuple[tuple[str, ...], ...]) -> str:
    """What every line holding a value of a secret key matches (the redactor's prefilter).

    A secret word, the rest of its name (not ending in an exempt suffix: `token_ttl`),
    at most a few closing quotes or brackets, then an assignment (`:`, `=`, `=>`, `:=`);
    then, for a WEAK word (`key`, `session`, `salt`, unless qualified: `api_key`,
    `session_id`), a value that looks generated or goes on to the next lines; for a
    strong word in the middle of a line (neither at its start nor inside a quoted
    string, where a value runs further), a value that is not a plain number or short
    path. Or a Kubernetes env entry naming a secret (`- name: DB_PASSWORD`: its `value:`
    follows), or PHP's define('DB_PASSWORD', ...). RE2 syntax, one line; a superset of
    what the scanner takes, never less (tests/redact/test_gates.py holds it to that).
    """
    extra = {word for words in extra_keys for word in words}
    weak = [w for w in GATE_WEAK_WORDS if w in hints and w not in extra]
    strong = [re.escape(w) for w in hints if w not in weak]
    if "key" in weak:
        strong.append(rf"{_either(KEY_QUALIFIERS)}{GATE_NAME_CHAR}*key")
    if "session" in weak:
        strong.append(r"session[_.\-]?id")
    rest = gate_name_rest(sorted(extra))
    name = rf"{GATE_NAME_CHAR}*(?:{'|'.join(strong)}){rest}"
    gates = [
        rf"{_G_MAY_START}(?:{_G_QUOTE})?{name}{_G_CLOSE}{_G_SEP}",  # any value
        rf"[\"']{name}[ \t]*[:=]",  # in a quoted string: the value runs to its end
        # Mid-line, unquoted or quoted (a quoted key without its closing quote is the
        # alternative above's).
        rf"(?:{_G_MID_BARE}|{_G_MID}{_G_QUOTE}){name}(?:{_G_QUOTE}\]?)?[ \t]*"
        rf"{_G_SEP_VALUE}{_G_MID_VALUE}",
    ]
    if weak:
        gates.append(rf"{_either(weak)}{rest}{_G_CLOSE}{_G_SEP_VALUE}{_G_WEAK_VALUE}")
    hinted = rf"{GATE_NAME_CHAR}*{_either(hints)}"
    names = _either(sorted(_NAME_KEYS))
    gates.append(rf"{names}[\"'\\\]]{{0,3}}[ \t]*(?:=>|:=|=|:)[ \t]*[\"']?{hinted}")
    gates.append(rf"define[ \t]*\([ \t]*[\"']{hinted}")
    return "|".join(gates)


def _either(words: Iterable[str]) -> str:
    """A regex group matching any of `words` literally."""
    return "(?:" + "|".join(re.escape(w) for w in words) + ")"


class KeyValueScanner:
    """Scans the lines of one text for values of secret keys (stateful across lines)."""

    name = NAME

    def __init__(self, keys: SecretKeys) -> None:
        self.keys = keys
        self.hints = keys.hints
        self.gate = key_value_gate(keys)
        self._hinted = re.compile("|".join(re.escape(h) for h in keys.hints))
        self.frames: list[_Frame] = []
        self.pending: SecretKind | None = None
        self.pending_lines = 0

    @property
    def open(self) -> bool:
        """Inside a multi-line value, or waiting for the `value:` of a secret env name."""
        return bool(self.frames) or self.pending is not None

    def scan(self, line: str) -> list[Hit]:
        """The spans of secret values in `line`."""
        work = _Line(line)
        if self.pending is not None:
            self.pending_lines += 1
            if self.pending_lines > PENDING_LINES:
                self.pending = None
        pos = self._continue_frames(work)
        if pos is not None:
            self._scan_from(work, pos)
        return work.hits

    # -- multi-line values ------------------------------------------------------------

    def _continue_frames(self, work: _Line) -> int | None:
        """Let open frames take the start of the line; where normal scanning resumes."""
        line = work.text
        pos = 0
        while self.frames:
            frame = self.frames[-1]
            if frame.kind in ("string", "triple"):
                end = _closing(line, pos, frame.quote)
                if end < 0:
                    work.emit_always(pos, len(line), frame.secret)
                    frame.lines += 1
                    if frame.lines > MAX_CONTINUED_LINES:
                        self.frames.pop()
                    return None
                work.emit_always(pos, end, frame.secret)
                pos = end + len(frame.quote)
                self.frames.pop()
                continue
            if frame.kind == "next":
                self.frames.pop()
                start = _INDENT.match(line, pos).end()
                if start == len(line):
                    self.frames.append(frame)
                    return None
                return self._value(work, start, frame.secret, "mid", "", 0)
            if frame.kind == "brace":
                end, frame.depth = _match_brace(line, pos, frame.depth)
                work.ranges.append((pos, len(line) if end < 0 else end, frame.secret))
                if end >= 0:
                    self.frames.pop()
                return pos
            if frame.kind == "array":
                end = self._items(work, pos, frame)
                if end is None:
                    return None
                self.frames.pop()
                pos = end
                continue
            indent = _INDENT.match(line).end()
            if indent == len(line) or line[indent] == "#":
                return None  # blank lines and comments keep a block open
            if frame.kind == "block":
                if indent > frame.indent:
                    work.emit_always(indent, len(line), frame.secret)
                    return None
                self.frames.pop()
                continue
            if indent > frame.indent or (
                indent == frame.indent and frame.same_indent_items and line.startswith("- ", indent)
            ):
                return self._nest_line(work, indent, frame)
            self.frames.pop()
        return pos

    def _nest_line(self, work: _Line, indent: int, frame: _Frame) -> int | None:
        """A line under a secret parent: an item or scalar line, or pairs scanned as usual."""
        line = work.text
        start = indent
        if line.startswith("- ", start) or line == "-":
            start = _INDENT.match(line, start + 1).end()
        candidate = _CANDIDATE.match(line, start)
        quoted = start < len(line) and line[start] in "\"'"
        if candidate is None and quoted:
            candidate = _CANDIDATE.match(line, start + 1)
        if candidate is not None or line.startswith(("{", "}", "]", "[", ")"), start):
            return start  # pairs and punctuation: the normal scan (weak inheritance)
        if start < len(line):
            self._value(work, start, frame.secret, "items", "", start)
        return None

    def _items(self, work: _Line, pos: int, frame: _Frame) -> int | None:
        """Items of an array until its `]`: where the line continues, or None if still open."""
        line = work.text
        size = len(line)
        while True:
            pos = _ITEM_SKIP.match(line, pos).end()
            if pos >= size:
                return None
            char = line[pos]
            if char == "#":
                return None
            if char in "[{":
                frame.depth += 1
                pos += 1
            elif char in "]}":
                frame.depth -= 1
                pos += 1
                if frame.depth <= 0:
                    return pos
            elif line.startswith(REDACTED_PREFIX, pos):
                end = line.find("]", pos)
                pos = size if end < 0 else end + 1
            elif char in "\"'":
                quote = '"""' if line.startswith('"""', pos) else char
                end = _closing(line, pos + len(quote), quote)
                if end >= 0 and _is_key(line, end + len(quote)):
                    pos = end + len(quote)
                    continue
                if end < 0:
                    work.emit_always(pos + len(quote), size, frame.secret)
                    self.frames.append(_Frame("string", frame.secret, quote=quote))
                    return None
                work.emit(pos + len(quote), end, frame.secret)
                pos = end + len(quote)
            else:
                match = _BARE_ITEM.match(line, pos)
                if match is None:
                    pos += 1
                    continue
                if not _is_key(line, match.end()):
                    work.emit(pos, match.end(), frame.secret)
                pos = match.end()

    # -- pairs ------------------------------------------------------------------------

    def _scan_from(self, work: _Line, pos: int) -> None:
        """Find `name = value` pairs from `pos` on and report secret values."""
        line = work.text
        line_start = _LINE_START.match(line).end()
        nest = self.frames[-1] if self.frames and self.frames[-1].kind == "nest" else None
        if "define" in line.lower():
            for define in _DEFINE.finditer(line, pos):
                secret = self.keys.kind(define["name"])
                if secret is not None:
                    self._value(work, define.end(), secret, "mid", define["name"], 0)
        # Outside secret parents, and with no `name:`-style key that may announce one,
        # only pairs whose name holds a secret word matter: jump from one such word to
        # the next instead of visiting every pair (a JSON log line has dozens).
        lower = line.lower()
        skip = nest is None and len(lower) == len(line) and not _NAMED.search(line)
        while pos is not None and pos < len(line):
            if skip and not self.pending and not work.ranges:
                word = self._hinted.search(lower, pos)
                if word is None:
                    return
                pos = max(pos, name_start(line, word.start(), NAME_REACH))
            match = _CANDIDATE.search(line, pos)
            if match is None:
                return
            pos = self._pair(work, match, line_start, nest)

    def _pair(
        self, work: _Line, match: re.Match[str], line_start: int, nest: _Frame | None
    ) -> int | None:
        """Handle one candidate pair; where scanning continues (None: the line is done)."""
        line = work.text
        name = match["name"]
        lower = name.lower()
        hinted = self._hinted.search(lower) is not None
        start = match.start("name")
        inside = work.ranges and start < work.ranges[-1][1]
        if not (hinted or nest or inside or self.pending or lower in _NAME_KEYS):
            return match.end()  # most names: nothing to do (kept cheap for big JSON)
        secret = self.keys.kind(name) if hinted else None
        opening = _opening_quote(line, start)
        if secret is None:
            secret = self._inherited(name, nest) or (
                None if self.keys.exempt(name) else work.inherited(start)
            )
        if secret is None:
            self._remember_env_name(line, match, name)
            return match.end()
        sep = match["qsep"] or match["sep"]
        key_quote = match["kq"] or ""
        if key_quote and key_quote != opening:
            return match.end()
        if opening and not key_quote:  # "PASSWORD=x y": a key inside a quoted string
            if sep not in ("=", ":"):
                return match.end()
            return self._to_quote(work, match.end(), opening, secret, name)
        at_start = start - len(opening) == line_start
        if key_quote:
            context = "quoted-line" if at_start else "mid"
        elif at_start and not name.startswith("-"):
            context = "line"
        elif sep == ":" and start and line[start - 1] not in " \t{,([;|":
            return match.end()
        else:
            context = "mid"
        value = _INDENT.match(line, match.end()).end()
        return self._value(work, value, secret, context, name, start - len(opening), sep)

    def _inherited(self, name: str, nest: _Frame | None) -> SecretKind | None:
        """Under a secret parent (or after `name: DB_PASSWORD`): the kind `name` takes."""
        lower = name.lower()
        if self.pending is not None and lower in _VALUE_KEYS:
            secret, self.pending = self.pending, None
            return secret
        if nest is not None and not self.keys.exempt(name) and lower not in _NAME_KEYS:
            return SecretKind(nest.secret.label, weak=True)
        return None

    def _remember_env_name(self, line: str, match: re.Match[str], name: str) -> None:
        """After `name: DB_PASSWORD`, the next `value:` holds a secret."""
        if name.lower() not in _NAME_KEYS:
            return
        value = _INDENT.match(line, match.end()).end()
        quoted = value < len(line) and line[value] in "\"'"
        word = _ENV_NAME.match(line, value + quoted)
        if word is None or not self._hinted.search(word.group().lower()):
            return
        secret = self.keys.kind(word.group())
        if secret is not None:
            self.pending, self.pending_lines = SecretKind(secret.label), 0

    def _to_quote(
        self, work: _Line, pos: int, quote: str, secret: SecretKind, name: str
    ) -> int | None:
        """A value that runs to the closing `quote` of the string the key stands in."""
        end = _closing(work.text, pos, quote)
        if end < 0:
            work.emit(pos, len(work.text), secret, name)
            return None
        work.emit(pos, end, secret, name)
        return end + len(quote)

    def _value(
        self,
        work: _Line,
        pos: int,
        secret: SecretKind,
        context: str,
        name: str,
        indent: int,
        sep: str = ":",
    ) -> int | None:
        """Report the value starting at `pos`; where scanning continues (None: line done).

        `context`: "line" (unquoted key starting the line: a bare value runs to its end),
        "quoted-line" (a quoted key starting the line: JSON or YAML), "mid" (a bare value
        ends at a delimiter), "items" (a line under a secret parent).
        """
        line = work.text
        size = len(line)
        props = _PROPERTIES.match(line, pos)
        if props and context != "mid":
            pos = props.end()
        if pos >= size or (
            line[pos] == "#" and context != "mid" and pos and line[pos - 1] in " \t"
        ):
            if context in ("line", "quoted-line") and sep == ":":
                self.frames.append(_Frame("nest", secret, indent=indent, same_indent_items=True))
            elif context == "mid" and sep in (":", "=>"):
                self.frames.append(_Frame("next", secret))
            return None
        if line.startswith(REDACTED_PREFIX, pos):
            end = line.find("]", pos)
            return None if end < 0 else end + 1
        for triple in ('"""', "'''"):
            if line.startswith(triple, pos):
                return self._quoted(work, pos, triple, secret, name)
        char = line[pos]
        if char in "\"'":
            return self._quoted(work, pos, char, secret, name)
        if line.startswith('\\"', pos):
            return self._quoted(work, pos, '\\"', secret, name)
        if char == "[":
            frame = _Frame("array", secret, depth=1)
            end = self._items(work, pos + 1, frame)
            if end is None and not (self.frames and self.frames[-1].kind == "string"):
                self.frames.append(frame)
            elif end is None:
                self.frames.insert(len(self.frames) - 1, frame)
            return end
        if char == "{":
            rest = line[pos + 1 :].strip()
            if context != "mid" and (not rest or rest.startswith("#")):
                base = _INDENT.match(line).end()
                self.frames.append(_Frame("nest", secret, indent=base))
                return None
            if work.inherited(pos) is None:  # an inline table: its pairs inherit
                end, depth = _match_brace(line, pos + 1, 1)
                work.ranges.append((pos, len(line) if end < 0 else end, secret))
                if end < 0:
                    self.frames.append(_Frame("brace", secret, depth=depth))
            return pos + 1
        if context != "mid" and _BLOCK_HEADER.fullmatch(line, pos):
            self.frames.append(_Frame("block", secret, indent=indent))
            return None
        yaml = sep == ":" or context == "items"
        if secret.label == "cookie" and _PAIR_START.match(line, pos):
            return pos  # `Cookie: theme=dark; sid=x`: pairs (the cookie rule's)
        if secret.label == "auth":  # `Authorization: Bearer x`: the scheme word stays
            pos = _SCHEME.match(line, pos).end()
        if context == "mid":
            end = _BARE_MID.match(line, pos).end()
            work.emit(pos, end, secret, name, yaml)
            return end
        if context == "quoted-line":  # JSON `"pin": 1234,` or YAML `"password": two words`
            end = _BARE_MID.match(line, pos).end()
            if _TRAILER.fullmatch(line, end):
                work.emit(pos, end, secret, name, yaml)
                return end
        return self._bare_to_end(work, pos, secret, name, yaml)

    def _bare_to_end(
        self, work: _Line, pos: int, secret: SecretKind, name: str, yaml: bool
    ) -> int | None:
        """A bare value running to the end of the line (a trailing comment may be benign).

        Except in logfmt (`token_bucket=100 host=x`): a benign first word followed by more
        `name=` pairs ends there, and the scan goes on.
        """
        line = work.text
        word = _BARE_MID.match(line, pos).end()
        if _LOGFMT_NEXT.match(line, word) and is_benign_for(name, line[pos:word]):
            return word
        comment = _COMMENT.search(line, pos)
        if comment is not None:
            probe = _Line(line)
            probe.emit(pos, comment.start(), secret, name)
            if not probe.hits:
                return None  # `auth: true  # enable`: the value before the comment is benign
        work.emit(pos, len(line), secret, name, yaml)
        return None

    def _quoted(
        self, work: _Line, pos: int, quote: str, secret: SecretKind, name: str
    ) -> int | None:
        """A quoted value: its content; unclosed, it continues on the next lines."""
        body = pos + len(quote)
        end = _closing(work.text, body, quote)
        if end < 0:
            work.emit_always(body, len(work.text), secret)
            kind = "triple" if len(quote) == 3 else "string"
            self.frames.append(_Frame(kind, secret, quote=quote))
            return None
        work.emit(body, end, secret, name)
        return end + len(quote)


def _closing(line: str, pos: int, quote: str) -> int:
    """Where the string whose body starts at `pos` closes with `quote`, or -1."""
    if quote == '"':
        end = _DQ_BODY.match(line, pos).end()
    elif quote == "'":
        end = _SQ_BODY.match(line, pos).end()
    else:
        return line.find(quote, pos)
    return end if line.startswith(quote, end) else -1


def _match_brace(line: str, pos: int, depth: int) -> tuple[int, int]:
    """(position of the `}` closing `depth` open braces, or -1; the depth left there)."""
    while True:
        match = _BRACE_TOKENS.search(line, pos)
        if match is None:
            return -1, depth
        char = match.group()
        if char in "\"'":
            end = _closing(line, match.end(), char)
            if end < 0:
                return -1, depth
            pos = end + 1
            continue
        depth += 1 if char == "{" else -1
        if depth == 0:
            return match.start(), 0
        pos = match.end()


def _opening_quote(line: str, start: int) -> str:
    """The quote just before position `start` (`"`, `'`, `\\"`), or ""."""
    if start and line[start - 1] in "\"'":
        if line[start - 1] == '"' and start > 1 and line[start - 2] == "\\":
            return '\\"'
        return line[start - 1]
    return ""


def _is_key(line: str, pos: int) -> bool:
    """Whether a `:` follows `pos` (after spaces): the item just read was a key."""
    after = _INDENT.match(line, pos).end() if 0 <= pos <= len(line) else len(line)
    return after < len(line) and line[after] == ":"


@dataclass(frozen=True)
class KeyValueRule:
    """Values of keys whose name marks a secret, in TOML/YAML/JSON/INI/dotenv/environ."""

    keys: SecretKeys = field(default_factory=SecretKeys)
    name: str = NAME
    description: str = (
        "the value of any key whose name marks a secret (password, secret, token, api key, "
        "private key, credential, auth, session, cookie, ...) in TOML, YAML, JSON, INI, "
        "dotenv, environ, systemd units and key=value logs; multi-line values included"
    )
    examples: tuple[str, ...] = (
        'encoding_secret = "«u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzd»"',
        'key = "«XEw/yy6yxz4Uk0yGfuBXunJJm/oSHoNrKsFXJu59awo=»"',
        'password = "«a b \\"c\\" # d»"',
        "DB_PASSWORD=«s3cret with spaces # and hash»",
        "export API_TOKEN='«tok-9f8e7d6c»'",
        "  - POSTGRES_PASSWORD=«pg-pass-1»",
        "IGGY_ROOT_PASSWORD=«TxoF54Fzbka8FRCz»",
        '{"user":"bob","password":"«hunter2»","api_key":"«d0c621de49f145fda9988c79fc35526f»"}',
        'Environment="LANG=C" "IGGY_ROOT_PASSWORD=«x y»"',
        "ts=2026-11-01 user=bob password=«hunter2» host=db-1",
        'db = { user = "bob", password = "«hunter2»" }',
        'tokens = ["«tok-one-1»", "«tok-two-2»"]',
        "aws_secret_access_key = «XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb/xHKa»",
        "aws_access_key_id = «AKIAE9UVW53EFR4EDT2S»",
        '"client-key-data": "«LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=»",',
        "cfg {Host:db Port:5432 Password:«hunter2»}",
        "define('DB_PASSWORD', '«wp-db-pass»');",
        "{'user': 'bob', 'password': '«it''s»'}",
        "password=«hunter2 # not a comment in INI»",
        '{"msg": "{\\"token\\": \\"«abc123def»\\"}"}',
    )
    benign: tuple[str, ...] = (
        "session_timeout: 30m",
        'token_expiry = "1h"',
        "password_min_length = 12",
        "use_base64_secret = false",
        'public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x"',
        "key: app",
        'key = "partition"',
        "PassEnvironment=LANG",
        "KeyringMode=private",
        "keyboard = us",
        "password: ${DB_PASSWORD}",
        "secret_key_file = /etc/iggy/secret.key",
        "passwd:         files systemd",
        "auth: true  # enable auth",
        "max_tokens: 4096",
        'password = "[REDACTED:password]"',
        "FATAL: password authentication failed for user bob",
        "sessions_dir = /var/lib/app/sessions",
        "token_ttl = 3600",
        "cache_size = 512MiB",
    )

    def scanner(self) -> KeyValueScanner:
        """A fresh scanner: this rule remembers multi-line values within one text."""
        return KeyValueScanner(self.keys)
