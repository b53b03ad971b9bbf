"""Every check says which node states it must pass and which it must catch, each held by a test.

A check function's docstring carries a table::

    Verdicts:
    - pass: an idle io_uring broker, one pending receive per shard, disks idle
      [test_cpu_usage_idle_io_uring_broker_is_not_iowait]
    - fail: every core busy in two samples, load and CPU pressure agree
      [test_cpu_usage_fails_when_all_cores_busy]

Each entry is a status (pass, warn, fail, skipped), the node state in plain words, and
the test (any file under tests/) that builds that state and asserts that status. This
test holds the tables to it: every built-in check has one, with at least one healthy
state it must pass and one it must not, and every test named exists.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from snapshot_agent.core.check import Check
from snapshot_agent.core.registry import builtin_checks

from .conftest import REPO

ENTRY = re.compile(
    r"^\s*-\s+(?P<status>pass|warn|fail|skipped):\s+(?P<state>.+?)\s*\[(?P<test>test_\w+)\]",
    re.MULTILINE | re.DOTALL,
)


def table_of(check: Check) -> list[tuple[str, str, str]]:
    """(status, node state, test name) for each entry of the check's Verdicts table."""
    doc = check.run.__doc__ or ""
    _, found, table = doc.partition("Verdicts:")
    if not found:
        return []
    table = table.split("\n\n", 1)[0]  # the table ends at the first blank line
    entries = re.split(r"\n(?=\s*-\s)", "\n" + table)
    out = []
    for entry in entries:
        match = ENTRY.match(entry)
        if match:
            state = " ".join(match["state"].split())
            out.append((match["status"], state, match["test"]))
    return out


@cache
def defined_tests() -> frozenset[str]:
    """Every test function defined under tests/."""
    names: set[str] = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        names |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE))
    return frozenset(names)


@pytest.mark.parametrize("check", builtin_checks(), ids=lambda c: c.id)
def test_check_states_what_it_must_pass_and_catch(check: Check) -> None:
    table = table_of(check)
    assert table, f"{check.id}: no 'Verdicts:' table in {check.run.__name__}'s docstring"
    statuses = {status for status, _, _ in table}
    assert "pass" in statuses, f"{check.id}: no healthy node state it must pass"
    assert statuses - {"pass"}, f"{check.id}: no node state it must not pass"
    missing = sorted({test for _, _, test in table} - defined_tests())
    assert not missing, f"{check.id}: the table names tests that do not exist: {missing}"


def test_the_table_format_parses() -> None:
    def sample(_ctx: object) -> None:
        """Judge something.

        Verdicts:
        - pass: an idle io_uring broker, one pending receive
          per shard [test_a]
        - fail: every core busy [test_b]
        - warn: one core busy [test_c]

        Anything after the blank line is not part of the table [test_d].
        """

    check = Check(id="t.sample", category="t", title="T", description="T.", run=sample)
    assert table_of(check) == [
        ("pass", "an idle io_uring broker, one pending receive per shard", "test_a"),
        ("fail", "every core busy", "test_b"),
        ("warn", "one core busy", "test_c"),
    ]
