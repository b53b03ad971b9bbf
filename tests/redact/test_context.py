"""context.py: generated-looking values right after secret words in free text."""

from __future__ import annotations

import pytest

from snapshot_agent.redact.context import ContextRule, is_generated
from snapshot_agent.redact.keys import SecretKeys

from .test_structured import apply, assert_gone

RULE = ContextRule()


def run(line: str, rule: ContextRule = RULE) -> str:
    return apply(line, rule.scanner().scan(line))


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("the token is 8f3kD9sLq0Wm2xZ7pQ4r", "8f3kD9sLq0Wm2xZ7pQ4r"),
        (
            "aws_secret_access_key XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb/xHKa",
            "XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb/xHKa",
        ),
        (
            "INFO using api key d0c621de49f145fda9988c79fc35526f for upload",
            "d0c621de49f145fda9988c79fc35526f",
        ),
        ("rotated: the secret is now 'Zk8mQ2vL9xR4tW7pN3cY'", "Zk8mQ2vL9xR4tW7pN3cY"),
        ("Password was set to Tg5hY6uJ7iK8oL9p", "Tg5hY6uJ7iK8oL9p"),
        ("X-Vault-Token hvs.CAESIJ3kQmZ8xYp2LwN0aB7cD9eF", "hvs.CAESIJ3kQmZ8xYp2LwN0aB7cD9eF"),
        ("bearer: 3dfc967a64cb14028d512c9791e558e0", "3dfc967a64cb14028d512c9791e558e0"),
    ],
)
def test_high_entropy_values_after_secret_words(line: str, secret: str) -> None:
    out = run(line)
    assert_gone(out, [secret])
    assert "[REDACTED:" in out


@pytest.mark.parametrize(
    "line",
    [
        "request id 3f0e2d1c-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
        "token for host ip-10-0-1-17.eu-central-1.compute.internal",
        "the key is /etc/iggy/keys/server-2024.pem",
        "secret version 0.8.0-rc1+build.20261101",
        "password authentication failed for user postgres",
        "session opened for user root by (uid=0)",
        "token aaaaaaaaaaaaaaaaaaaaaaaa1",
        "object sha256=923732881584d8c4fa2815d2802827283e0ad84173581569969e58b081006f7e",
        "commit 923732881584d8c4fa2815d2802827283e0ad841 touches keyboard layout",
        "token_expiry 2026-11-01T08:00:00Z",
        "key [REDACTED:key] rotated",
        "public_key AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x",
    ],
)
def test_benign_text_stays(line: str) -> None:
    assert run(line) == line


def test_extra_keys_mark_context_words() -> None:
    rule = ContextRule(SecretKeys(["enrollment"]))
    assert run("enrollment Qw8eR7tY6uI5oP4aS3dF", rule) == "enrollment [REDACTED:enrollment]"
    assert run("enrollment Qw8eR7tY6uI5oP4aS3dF") == "enrollment Qw8eR7tY6uI5oP4aS3dF"


def test_entropy_threshold() -> None:
    assert is_generated("8f3kD9sLq0Wm2xZ7")
    assert not is_generated("abcabcabcabc1234")
    assert not is_generated("aaaaaaaa11111111")


def test_stateless() -> None:
    assert RULE.scanner() is RULE and not RULE.open and RULE.hints
