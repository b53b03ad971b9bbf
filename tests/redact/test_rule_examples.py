"""Every rule proves itself: each of its examples redacted exactly, each benign line kept.

A rule's `examples` mark each secret «like this»; the rule alone must turn the line into
the line with each marked span replaced by [REDACTED:label]. The catalogue is the list a
security reviewer reads, and this test is what makes each entry true.
"""

from __future__ import annotations

import re

import pytest

from snapshot_agent.config import RedactionConfig
from snapshot_agent.redact.catalog import first_pass_rules
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import Rule

RULES = first_pass_rules(RedactionConfig())
MARKED = re.compile(r"«(.*?)»", re.S)


def _ids(rule: Rule) -> str:
    return rule.name


def test_rule_names_are_unique_and_each_rule_says_what_it_removes() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", rule.name), rule.name
        assert rule.description.strip(), rule.name


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_every_rule_has_proof(rule: Rule) -> None:
    assert rule.examples, f"{rule.name} has no example of what it redacts"
    assert rule.benign, f"{rule.name} has no example of what it keeps"


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_rule_redacts_exactly_its_examples(rule: Rule) -> None:
    for example in rule.examples:
        text = MARKED.sub(lambda m: m.group(1), example)
        out = Redactor([rule]).text(text)
        pattern = re.escape(MARKED.sub("\0", example)).replace("\0", r"\[REDACTED:[a-z0-9-]+\]")
        assert re.fullmatch(pattern, out, re.S), f"{rule.name}: {example!r} -> {out!r}"


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_rule_keeps_its_benign_lines(rule: Rule) -> None:
    for line in rule.benign:
        assert Redactor([rule]).text(line) == line, f"{rule.name} changed {line!r}"


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_the_whole_redactor_redacts_every_example_and_is_idempotent(rule: Rule) -> None:
    """Together with every other rule, no marked secret survives, and a second pass
    changes nothing."""
    redactor = Redactor(RULES)
    for example in rule.examples:
        text = MARKED.sub(lambda m: m.group(1), example)
        once = redactor.text(text)
        for secret in MARKED.findall(example):
            assert len(secret) < 10 or secret not in once, f"{rule.name}: {once!r}"
        assert redactor.text(once) == once
