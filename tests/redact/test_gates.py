"""The prefilter may skip a line only when the rule would find nothing in it.

A rule's `gate` (and its hints) must be a superset of what its scanner takes: for every
line a rule's own proof holds, and for shapes its authors did not write down (aligned
columns, digits and spaces in a value, non-ASCII names, Latin-1 bytes), redacting with
the prefilter gives the same text as showing the rule every line.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from snapshot_agent.config import RedactionConfig
from snapshot_agent.redact.catalog import first_pass_rules
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import Rule

RULES = first_pass_rules(RedactionConfig())
MARKED = re.compile(r"«(.*?)»", re.S)

#: Shapes found in real files that an early gate missed.
TRICKY = (
    'db_password          = "Tr0ub4dor&3xyz"',
    "session_token          : deadbeefcafe1234",
    '{"password":"7 dwarves"}',
    'password: "2024,Spring!"',
    "password: 1234 5678",
    "db_pass = 42 is the answer",
    'password: " leading space secret"',
    'secret_key: "  Zx9QwErTyUiOpAsDfGh"',
    "password: ,abcdefgh",
    "password_é = hunter2abc",
    "key = XEw/yy6yxz4Uk0yGfuBXunJJm/oSHoNrKsFXJu59awo=",
    "  - name: DB_PASSWORD\n    value: hunter2hunter2",
    "client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCg==",
    "Authorization:    Bearer abc.def.ghi",
    "app --password      'two words'",
    "the token is 8f3kD9sLq0Wm2xYz7Q",
)


class Ungated:
    """A rule shown every line holding one of its hints: its gate taken away."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name

    def scanner(self) -> Any:
        inner = self.rule.scanner()

        class Scanner:
            name = inner.name
            hints = inner.hints

            @property
            def open(self) -> bool:
                return inner.open

            def scan(self, line: str) -> Any:
                return inner.scan(line)

        return Scanner()


def lines_of(rule: Rule) -> list[str]:
    return [MARKED.sub(lambda m: m.group(1), e) for e in rule.examples] + list(rule.benign)


@pytest.mark.parametrize("rule", [r for r in RULES if getattr(r.scanner(), "gate", "")], ids=str)
def test_a_gate_never_hides_a_line_its_rule_would_redact(rule: Rule) -> None:
    for text in [*lines_of(rule), *TRICKY]:
        gated = Redactor([rule]).text(text)
        assert gated == Redactor([Ungated(rule)]).text(text), f"{rule.name}: {text!r}"


def test_latin1_bytes_after_the_separator_do_not_hide_a_secret() -> None:
    data = b'password: \xffS3cretValue\ndb_password = "\xe9t\xe9S3cret"\n'
    out = b"".join(Redactor(RULES).stream([data]))
    assert b"S3cret" not in out and out.count(b"[REDACTED:password]") == 2
