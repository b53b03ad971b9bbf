"""The rule catalogue: which rules a snapshot's redactor and its leak scan run.

Read it as the list a security reviewer audits: each entry is a rule module, each rule
in it has a name, a description, the lines it must redact and the lines it must keep
(`snapshot-agent redact --rules` prints them).

- cmdline.py: secrets handed to programs on their command line.
- tokens.py: token formats found anywhere (cloud keys, VCS/SaaS tokens, JWTs, PEM
  private keys, headers, URL passwords, secret query parameters, connection strings).
- structured.py (with keys.py): values of keys whose name marks a secret, in TOML, YAML,
  JSON, INI, dotenv and environ files, multi-line values included.
- context.py: high-entropy values next to secret words in free text.
- `redaction.extra_patterns` / `extra_keys` from the config; pseudonyms when asked.

The leak scan is the token rules (and the extra patterns) again, as an independent second
pass over every member as it enters the archive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from snapshot_agent.config import RedactionConfig
from snapshot_agent.redact.audit import LEAK_SCAN
from snapshot_agent.redact.cmdline import CMDLINE_RULES
from snapshot_agent.redact.context import ContextRule
from snapshot_agent.redact.keys import SecretKeys
from snapshot_agent.redact.pseudonyms import PseudonymRule
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import Rule
from snapshot_agent.redact.structured import KeyValueRule
from snapshot_agent.redact.tokens import TOKEN_RULES, PatternRule

EXTRA_PATTERN = "extra-pattern"


def extra_pattern_rules(patterns: Sequence[str]) -> tuple[Rule, ...]:
    """`redaction.extra_patterns`: each regex's match (or its group `value`) is removed."""
    rules = []
    for index, source in enumerate(patterns, 1):
        pattern = re.compile(source)
        rules.append(
            PatternRule(
                name=f"{EXTRA_PATTERN}-{index}",
                description=f"redaction.extra_patterns[{index}]: {source}",
                pattern=pattern,
                label="pattern",
                hints=(),
                examples=(),
                benign=(),
                group="value" if "value" in pattern.groupindex else 0,
            )
        )
    return tuple(rules)


def first_pass_rules(settings: RedactionConfig, keys: SecretKeys | None = None) -> tuple[Rule, ...]:
    """Every rule of the redactor, for these settings (`keys`: their secret key names)."""
    keys = keys or SecretKeys(settings.extra_keys)
    return (
        *CMDLINE_RULES,
        *TOKEN_RULES,
        KeyValueRule(keys),
        ContextRule(keys),
        *extra_pattern_rules(settings.extra_patterns),
    )


def redactor_for(settings: RedactionConfig, hostnames: Sequence[str] = ()) -> Redactor:
    """The redactor of a snapshot: every rule, plus pseudonyms when the config asks."""
    keys = SecretKeys(settings.extra_keys)
    rules = first_pass_rules(settings, keys)
    if settings.pseudonymize:
        rules = (*rules, PseudonymRule(hostnames))
    return Redactor(rules, pseudonymized=settings.pseudonymize, keys=keys)


def leak_scan_for(settings: RedactionConfig) -> Redactor:
    """The second pass: the token detectors again, counted as `leak-scan:<rule>`."""
    rules = (*TOKEN_RULES, *extra_pattern_rules(settings.extra_patterns))
    return Redactor(rules, prefix=f"{LEAK_SCAN}:")
