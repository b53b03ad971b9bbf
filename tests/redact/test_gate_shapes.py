"""The prefilter's gates against their rules, on many shapes and on whole files.

test_gates.py holds each gate to its rule on the rule's own proof and on shapes found in
real files. The gates also prove values benign without the rule (a number or a short
path in the middle of a line, a WEAK key's short value, a name ending in an exempt
suffix), and look at what stands before a key (the start of a line or not); so here
each gated rule meets lines built from many prefixes, key names, quotes, separators,
values and endings, and every file of the corpus whole (multi-line values), and must
redact each exactly as when it is shown every line holding one of its hints.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from snapshot_agent.config import RedactionConfig
from snapshot_agent.redact.catalog import first_pass_rules
from snapshot_agent.redact.keys import EXEMPT_SUFFIXES
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import Rule
from tests.redact.test_gates import Ungated

CORPUS = Path(__file__).parent / "corpus"
MARKED = re.compile(r"«(.*?)»", re.S)

PREFIXES = (
    "",
    "  ",
    "\t",
    "- ",
    "  - ",
    "export ",
    "- export ",
    "x ",
    "ts=1 ",
    "; ",
    "a; ",
    "{",
    "[",
    ",",
    '{"a":1,',
    "{'a': 1, ",
    "t ",
    "set ",
    "-",
    "--",
    "abc  ",
    "(",
    "define(",
    "define ( ",
    "env ",
    "é ",
    "cfg {",
    "INFO msg: ",
    "\\",
    "\r",
    " " * 300,
)
QUOTES = ("", '"', "'", '\\"', "`")
NAMES = (
    "password",
    "db_password",
    "PASSWORD",
    "Password",
    "passwd",
    "pwd",
    "PWD",
    "pass",
    "pw",
    "passphrase",
    "secret",
    "client_secret",
    "secrets",
    "token",
    "api_token",
    "tokens",
    "accessToken",
    "bearer",
    "auth",
    "authorization",
    "credential",
    "creds",
    "cookie",
    "cookies",
    "session",
    "sessions",
    "session_id",
    "sessionId",
    "SESSION_ID",
    "session2id",
    "session_key",
    "my_session_key",
    "salt",
    "key",
    "keys",
    "api_key",
    "apiKey",
    "private_key",
    "object_key",
    "partition_key",
    "monkey",
    "key_id",
    "accessKeyId",
    "public_key",
    "use_base64_secret",
    "existingSecret",
    "secret_key_file",
    "token_ttl",
    "TOKEN_TTL",
    "token_Ttl",
    "token_tTL",
    "tokenTtl",
    "tokenttl",
    "Token_TTL",
    "token_ttlx",
    "token_ttl2",
    "token.ttl",
    "token-ttl",
    "tokens_ttl",
    "x_token_ttl",
    "auth_method",
    "auth_Method",
    "AUTH_METHOD",
    "authMethod",
    "key_count",
    "keyCount",
    "password_min_length",
    "token_max_age",
    "token_expiry",
    "token_expiryX",
    "token_ttl_secret",
    "token_ttl_key",
    "key_token",
    "token_key",
    "session_ttl_key",
    "pässword",
    "token_é",
    "secret_ÿ",
    "tokené",
    "passwörd_ttl",
    "name",
    "Name",
    "variable",
    "var",
    "env",
    "parameterkey",
    "value",
    "x.password",
    "-password",
    "--token",
    *(f"token_{word}" for word in sorted(EXEMPT_SUFFIXES)[::7]),
    *(f"SECRET_{word.upper()}" for word in sorted(EXEMPT_SUFFIXES)[3::11]),
)
SEPARATORS = (
    "=",
    ": ",
    ":",
    " = ",
    "=>",
    " => ",
    ":=",
    " : ",
    "==",
    "::",
    "\t=\t",
    "]: ",
    "] = ",
    ", ",
    " ",
    "  ",
    ":\t",
)
VALUES = (
    "hunter2",
    "1234",
    "746391",
    "1234 5678",
    "1234, 5678",
    "12.5",
    "-5",
    "+7",
    "0x1F",
    "1234567890123",
    "12345678901234567",
    "/home/admin",
    "/home/admin/x.log",
    "/home/XSc7Tvo+hBKqFYY+kv5ZJr3J",
    "/a b",
    "/a\\b",
    "/é",
    "~/x",
    "./x",
    "../x",
    "segments/00215754.log",
    "XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb",
    "abc.def",
    "eyJhbGciOiJIUzI1.eyJzdWIiOiAxNSwg.c2lnbmF0dXJl",
    "aaaaaaaa.bbbbbbbb.cccccccc.dddddddd",
    "d0c621de49f145fda9988c79fc35526f",
    "3f0e2d1c-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
    '"hunter2"',
    "'hunter2'",
    '"746391"',
    '"abc',
    "'abc",
    "'it''s",
    '"""abc',
    "'''abc",
    '"XSc7Tvo+hBKqFYY+kv5ZJr3J',
    "[a, b]",
    '["XSc7Tvo+hBKqFYY+kv5ZJr3J"]',
    "[",
    "{a: XSc7Tvo+hBKqFYY+kv5ZJr3J}",
    "{",
    "|",
    ">-",
    "&anchor XSc7Tvo+hBKqFYY+kv5ZJr3J",
    "!!binary XSc7Tvo+hBKqFYY+kv5ZJr3J",
    "# comment",
    "#notacomment",
    "",
    "true",
    "30m",
    "512MiB",
    "${VAR}",
    "[REDACTED:x]",
    "***",
    "Bearer abc.def.ghi",
    "Bearer XSc7Tvo+hBKqFYY+kv5ZJr3J",
    '\\"hunter2\\"',
    '\\"XSc7Tvo+hBKqFYY+kv5ZJr3J\\"',
    "é-secret-valueXYZ123",
    "XSc7Tvo+hBKqFYY+kv5ZJr3J==",
    "XSc7Tvo+hBKqFYY+kv5ZJr3J====",
    "XSc7Tvo+hBKqFYY+kv5ZJr3J.x",
    "XSc7Tvo+hBKqFYY+kv5ZJr3J:x",
    " XSc7Tvo+hBKqFYY+kv5ZJr3J ",
    "\x0bXSc7Tvo+hBKqFYY+kv5ZJr3J",
    "DB_PASSWORD",
    '"DB_PASSWORD"',
    "files systemd",
    "is 8f3kD9sLq0Wm2xZ7pQ4r",
    "was: 8f3kD9sLq0Wm2xZ7pQ4r",
    "(8f3kD9sLq0Wm2xZ7pQ4r)",
    "8f3kD9sLq0Wm2xZ7pQ4r/abc",
    "abc/8f3kD9sLq0Wm2xZ7pQ4rXY",
    "-8f3kD9sLq0Wm2xZ7pQ4r",
    "~8f3kD9sLq0Wm2xZ7pQ4r",
    "theme=dark; sid=8f3kD9sLq0Wm2xZ7pQ4r",
)
SUFFIXES = (
    "",
    ",",
    ";",
    " host=x",
    "}",
    " # c",
    " ; c",
    "\r",
    '"',
    "'",
    ", next=1",
    "]",
    ")",
    " &x=1",
    "\\",
    "\t",
    " more words",
    '", "b": 2}',
)
#: Lines after the first: what an open value (a block, a list, `name:` then `value:`)
#: may take.
FOLLOWERS = (
    "",
    "\n  XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb",
    "\n  - XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb\n  - hunter2",
    "\n  value: hunter2hunter2",
    '\n  XSc7Tvo+hBKqFYY+kv5ZJr3J"\nnext: 1',
    "\nnext = hunter2",
)


def shapes(count: int, seed: int) -> list[str]:
    """`count` texts built at random (seeded) from the pieces above."""
    r = random.Random(seed)
    out = []
    for _ in range(count):
        quote = r.choice(QUOTES)
        close = quote if r.random() < 0.8 else r.choice(QUOTES)
        line = (
            f"{r.choice(PREFIXES)}{quote}{r.choice(NAMES)}{close}{r.choice(SEPARATORS)}"
            f"{r.choice(VALUES)}{r.choice(SUFFIXES)}"
        )
        if r.random() < 0.3:  # a second pair on the line
            line += f" {r.choice(NAMES)}{r.choice(SEPARATORS)}{r.choice(VALUES)}"
        text = line + (r.choice(FOLLOWERS) if r.random() < 0.3 else "")
        if r.random() < 0.1:  # environ (NUL-separated), or CRLF line ends
            text = text.replace("\n", r.choice(("\0", "\r\n")))
        out.append(text)
    return out


def gated_rules(settings: RedactionConfig) -> list[Rule]:
    return [r for r in first_pass_rules(settings) if getattr(r.scanner(), "gate", "")]


def mismatches(rule: Rule, texts: list[str]) -> list[tuple[str, str, str]]:
    """(text, with the gate, without it) for each text the gate changes."""
    gated, ungated = Redactor([rule]), Redactor([Ungated(rule)])
    out = []
    for text in texts:
        a, b = gated.text(text), ungated.text(text)
        if a != b:
            out.append((text, a, b))
    return out


SETTINGS = {
    "defaults": RedactionConfig(),
    "extra keys": RedactionConfig(extra_keys=["token_ttl", "session", "x_key", "pin_code"]),
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_gates_hide_no_line_of_many_shapes(settings: RedactionConfig) -> None:
    texts = shapes(4000, seed=10)
    for rule in gated_rules(settings):
        assert not mismatches(rule, texts)[:5], rule.name


def test_gates_hide_no_line_of_long_texts_of_such_shapes() -> None:
    """Many candidate lines in one block, one after the other: the prefilter's search
    resumes on each line's terminator, which a gate anchored at a line start needs."""
    lines = shapes(3000, seed=11)
    texts = ["\n".join(lines[i : i + 100]) for i in range(0, len(lines), 100)]
    texts += ["\0".join(lines[i : i + 100]) for i in range(0, 600, 100)]
    for rule in gated_rules(RedactionConfig()):
        assert not mismatches(rule, texts)[:1], rule.name


def test_gates_hide_no_line_of_the_corpus_files_or_of_any_rule_proof() -> None:
    texts = [p.read_text(errors="surrogateescape") for p in sorted(CORPUS.iterdir())]
    rules = first_pass_rules(RedactionConfig())
    for rule in rules:
        texts += [MARKED.sub(lambda m: m.group(1), e) for e in rule.examples]
        texts += list(rule.benign)
    for rule in gated_rules(RedactionConfig()):
        assert not mismatches(rule, texts)[:5], rule.name


def test_the_key_value_gate_keeps_common_benign_log_lines_away_from_its_rule() -> None:
    """What the gate is for: these lines (a third of a node's log) wake no rule."""
    lines = [
        "Nov 24 06:00:00 node sshd[3]: pam_unix(sshd:session): session opened for user bob",
        '{"msg":"auth ok","auth_method":"jwt","user":"p-7","session_id":746391}',
        '{"msg":"session closed","session":499039,"heartbeat_interval":"5s"}',
        '{"msg":"produced","partition_key":"user-412","key_count":3,"trace_id":"a1"}',
        '{"object_key":"segments/00215754.log","token_expiry":"3600s"}',
        "INFO Refreshed access token for user 7, token expiry 15m, token_ttl=900s",
        "sudo[1]:   admin : TTY=pts/3 ; PWD=/home/admin ; USER=root ; COMMAND=/bin/ls",
        '10.0.1.2 - - "DELETE /personal-access-tokens/ci-36 HTTP/1.1" 200',
        '10.0.1.2 - - "GET /streams?page=8&sort=desc&key=order-700764 HTTP/1.1" 200',
        "kernel: TCP: request_sock_TCP: Possible SYN flooding on port 8090. Sending cookies.",
        "kernel: [UFW BLOCK] IN=ens5 OUT= MAC=ac:aa:6b:91:cc:e5:0d:fe:41:c4:6b:9e:08:00",
    ]
    gates = Redactor(first_pass_rules(RedactionConfig())).plan.gates
    for line in lines:
        assert gates.lines(line.encode(), line.encode()) == [], line


def test_a_gate_holds_one_of_its_rules_hints() -> None:
    """The prefilter asks a gated rule's gate instead of its hints (rule.py)."""
    texts = shapes(2000, seed=3)
    for rule in gated_rules(RedactionConfig()):
        scanner = rule.scanner()
        gate = Redactor([rule]).plan.gates
        for text in texts + [MARKED.sub(lambda m: m.group(1), e) for e in rule.examples]:
            for line in text.split("\n"):
                if gate.lines(line.encode(), line.encode()):
                    assert any(h in line.lower() for h in scanner.hints), (rule.name, line)
