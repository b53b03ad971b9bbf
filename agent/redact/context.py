"""Layer 3: a high-entropy value right after a secret word, in free text.

`the token is 8f3kD9sLq0Wm2...`, `aws_secret_access_key XSc7Tvo+hBK...`: a name that
`SecretKeys` calls secret, up to two short filler words or separators (`is`, `was`, `:`,
`=`, quotes), then a value of 16+ characters from the token alphabet that has letters and
digits and enough entropy to be generated. Structured `key = value` text is the
structured rule's (keys.py/structured.py); this rule catches what has no structure.
UUIDs, versions, paths, host names and low-entropy words stay.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from snapshot_agent.redact.keys import (
    GATE_NAME_CHAR,
    UUID,
    SecretKeys,
    entropy,
    looks_secret,
    name_start,
)
from snapshot_agent.redact.rule import Hit, Stateless

NAME = "secret-context"
#: Entropy (bits per character) a value needs: close to log2(length) for short values
#: (a random 16-character string rarely reaches 3.5), at most `MAX_THRESHOLD`.
MAX_THRESHOLD = 3.5
SLACK = 0.75

_CONTEXT = re.compile(
    r"(?P<name>[A-Za-z][\w.\-]{0,63})[\"'`]?"
    r"(?:[ \t]{1,4}|[ \t]{0,4}(?::=|=>|[:=])[ \t]{0,4})"
    r"(?:(?:is|was|are|of|to|now|set[ \t]to|value|=|:)[ \t]{1,4}){0,2}"
    r"[\"'`(<]?"
    r"(?P<value>[A-Za-z0-9+/_.~\-]{16,512}+={0,3})(?![A-Za-z0-9+/=_.~\-])"
)
#: How far back a secret word's name may start (the name group of _CONTEXT: 64).
NAME_REACH = 64
_NAME_END = re.compile(r"[\w.\-]{0,65536}")
_VERSION = re.compile(r"v?\d{1,6}(?:\.\d{1,6}){1,4}(?:[-+.][\w.]{0,64})?")
_HOSTNAME = re.compile(r"[a-z0-9\-]{1,63}(?:\.[a-z0-9\-]{1,63}){1,16}")
_PATH_START = ("/", "./", "../", "~/")


def _positions(line: str, hints: tuple[str, ...]) -> list[tuple[int, int]]:
    """(position, length) of every hint word in `line`, in order (str.find: fast)."""
    lower = line.lower()
    if len(lower) != len(line):  # a few characters change length when lowered
        lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in line)
    found = []
    for hint in hints:
        at = lower.find(hint)
        while at >= 0:
            found.append((at, len(hint)))
            at = lower.find(hint, at + len(hint))
    found.sort()
    return found


def is_generated(value: str) -> bool:
    """Whether `value` looks generated (a key, a token), not a word, path, host or version."""
    if value.startswith(_PATH_START) or value.startswith(("-", ".")):
        return False
    if UUID.fullmatch(value) or _VERSION.fullmatch(value) or _HOSTNAME.fullmatch(value):
        return False
    if not (any(c.isalpha() for c in value) and any(c.isdigit() for c in value)):
        return False
    if "/" in value and not any(looks_secret(part) for part in value.split("/")):
        return False  # a relative path, an object key: segments/00103544.log
    threshold = min(MAX_THRESHOLD, math.log2(len(value)) - SLACK)
    return entropy(value) >= threshold


@dataclass(frozen=True)
class ContextRule(Stateless):
    """High-entropy values next to secret words in free text (stateless)."""

    keys: SecretKeys = field(default_factory=SecretKeys)
    name: str = NAME
    description: str = (
        "a generated-looking value (16+ characters, letters and digits, high entropy) "
        "right after a word naming a secret (token, password, secret key, ...) in free text"
    )
    examples: tuple[str, ...] = (
        "the token is «8f3kD9sLq0Wm2xZ7pQ4r»",
        "aws_secret_access_key «XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb/xHKa»",
        "INFO using api key «d0c621de49f145fda9988c79fc35526f» for upload",
        "Your new password: «Qm9vL2x4dF9yZWFsbHk»",
        "session token was «hvs.CAESIJ3kQmZ8xYp2LwN0aB7cD9eF»",
        "auth `«ghx9Tq2LmP0sW8vZ3kRy»` accepted",
    )
    benign: tuple[str, ...] = (
        "request id 3f0e2d1c-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
        "token refresh scheduled for ip-10-0-1-17.eu-central-1.compute.internal",
        "the key is /etc/iggy/keys/server-2024.pem",
        "password authentication failed for user postgres",
        "secret version 0.8.0-rc1+build.20261101 rolled out",
        "session opened for user root by (uid=0)",
        "token bucket refill_every_second_bucket",
        "key [REDACTED:key] rotated",
        "object sha256=923732881584d8c4fa2815d2802827283e0ad84173581569969e58b081006f7e",
        '"object_key":"segments/00103544.log","etag":"b75d6d9b"',
    )

    @property
    def hints(self) -> tuple[str, ...]:
        """The secret words (a line without one holds no hit)."""
        return self.keys.hints

    @property
    def gate(self) -> str:
        """What a line with a hit matches (the redactor's prefilter, RE2 syntax): `_CONTEXT`
        from the secret word on, without its bounds and look-ahead, and a value as
        `is_generated` wants it: not starting with `/`, `-` or `.`, and 16 characters
        without a `/` (a part that may look secret: `segments/00103544.log` has none)."""
        word = "(?:" + "|".join(re.escape(w) for w in self.keys.hints) + ")"
        part = r"[A-Za-z0-9+_.~\-=]"
        return (
            rf"{word}{GATE_NAME_CHAR}*[\"'`]?(?:[ \t]+|[ \t]*(?::=|=>|[:=])[ \t]*)"
            r"(?:(?:is|was|are|of|to|now|set[ \t]to|value|=|:)[ \t]+){0,2}"
            rf"[\"'`(<]?[A-Za-z0-9+_~](?:{part}{{15}}|[A-Za-z0-9+/_.~\-]*/{part}{{16}})"
        )

    def scan(self, line: str) -> list[Hit]:
        """The generated-looking values right after secret words in `line`.

        Only names holding a secret word are tried: the scan jumps from one secret word
        to the next (a fast literal search) and matches from the start of its name.
        """
        hits: list[Hit] = []
        pos = 0
        for at, size in _positions(line, self.keys.hints):
            if at < pos:
                continue
            match = _CONTEXT.match(line, name_start(line, at, NAME_REACH))
            if match is None or match.end("name") < at + size:
                pos = _NAME_END.match(line, at + size).end()
                continue
            kind = self.keys.kind(match["name"])
            if kind is not None and is_generated(match["value"]):
                start = match.start("value")
                hits.append(Hit(start, match.end("value"), NAME, kind.label))
                pos = match.end()
            else:  # the value may itself hold the next secret word
                pos = match.start("value")
        return hits
