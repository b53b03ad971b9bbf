"""structured.py: values of secret keys in real files, which must still parse after."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from snapshot_agent.redact.context import ContextRule
from snapshot_agent.redact.keys import SecretKeys
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import MAX_LINE, REDACTED_PREFIX, Hit, Rule, replacement
from snapshot_agent.redact.structured import KeyValueRule

CORPUS = Path(__file__).resolve().parent / "corpus"  # the shared sample, copied


def apply(line: str, hits: Sequence[Hit]) -> str:
    """`line` with the union of the hits' spans replaced (what the redactor does)."""
    out, done, span = [], 0, None
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if span and hit.start < span[1]:
            span[1] = max(span[1], hit.end)
            continue
        if span:
            out += [line[done : span[0]], span[2]]
            done = span[1]
        span = [hit.start, hit.end, hit.text or replacement(hit.label)]
    if span:
        out += [line[done : span[0]], span[2]]
        done = span[1]
    return "".join(out) + line[done:]


def redact(text: str, rules: Sequence[Rule] | None = None) -> str:
    """`text` through the real redactor with only `rules` (the key/value rule by default)."""
    return Redactor(rules if rules is not None else (KeyValueRule(),)).text(text)


def _lines(text: str) -> Iterator[tuple[str, str]]:
    for match in re.finditer(r"([^\n\0]*)([\n\0]|$)", text):
        if match.group(0) or match.end() < len(text):
            yield match.group(1), match.group(2)


def assert_gone(text: str, secrets: Sequence[str]) -> None:
    """No 10-character window of any secret survives in `text`."""
    for secret in secrets:
        for i in range(max(1, len(secret) - 9)):
            window = secret[i : i + 10]
            assert window not in text, f"{window!r} of {secret!r} leaked"


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """{dotted path: scalar} of a parsed document."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in flatten(item, f"{path}.{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in flatten(item, f"{path}[{i}]").items()
        }
    return {path: value}


def assert_same_but_secrets(before: Any, after: Any, secret_paths: set[str]) -> None:
    """Every value equal, except those under `secret_paths`, which are redacted."""
    old, new = flatten(before), flatten(after)
    for path in secret_paths:
        assert any(
            p == path or p.startswith(path + "[") or p.startswith(path + ".") for p in new
        ), f"{path} vanished"
    for path, value in old.items():
        hidden = any(path == s or path.startswith((s + "[", s + ".")) for s in secret_paths)
        if hidden:
            redacted = [v for p, v in new.items() if p == path or p.startswith(path + "[")]
            assert redacted and all("REDACTED:" in str(v) for v in redacted), (path, redacted)
        else:
            assert new.get(path) == value, (path, value, new.get(path))


def lines_of(rule: Rule, line: str) -> str:
    """One line through a fresh scanner of `rule`."""
    return apply(line, rule.scanner().scan(line))


# -- TOML ------------------------------------------------------------------------------

IGGY_TOML = '''\
[http]
enabled = true
address = "0.0.0.0:3000"
max_request_size = "2 MB"

[http.jwt]
algorithm = "HS256"
issuer = "iggy.rs"
valid_audiences = ["iggy.rs"]
access_token_expiry = "1 h"
clock_skew = "5 s"
encoding_secret = "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzd"
decoding_secret = 'ocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7D'
use_base64_secret = false

[http.tls]
enabled = false
cert_file = "core/certs/iggy_cert.pem"
key_file = "core/certs/iggy_key.pem"

[system.encryption]
enabled = true
key = "XEw/yy6yxz4Uk0yGfuBXunJJm/oSHoNrKsFXJu59awo="  # AES-256

[system.segment]
size = "1 GiB"
cache_indexes = "all"

[personal_access_token]
max_tokens_per_user = 100
cleaner = { enabled = true, interval = "1 m" }

[root]
username = "iggy"
password = "a b \\"c\\" # d-Rt5kq"
db = { user = "iggy", password = "p@ss w0rd-9xQ" }
tokens = ["tok-one-8HvQ2", 'tok-two-3KmZ7']
api_tokens = [
  "tok-three-5PwL1",
  "tok-four-6NcX4",  # trailing comment
]
passphrase = """first line pQ7s
second line zK2w"""
note = "the key and the password are elsewhere"
'''


def test_iggy_server_toml_parses_with_secrets_gone() -> None:
    out = redact(IGGY_TOML)
    before, after = tomllib.loads(IGGY_TOML), tomllib.loads(out)
    assert_same_but_secrets(
        before,
        after,
        {
            ".http.jwt.encoding_secret",
            ".http.jwt.decoding_secret",
            ".system.encryption.key",
            ".root.password",
            ".root.db.password",
            ".root.tokens",
            ".root.api_tokens",
            ".root.passphrase",
        },
    )
    assert_gone(out, [str(v) for v in flatten(before["http"]["jwt"]).values() if len(str(v)) > 30])
    assert_gone(out, ["XEw/yy6yxz4Uk0yGfuBXunJJm", 'b \\"c\\" # d-Rt5kq', "p@ss w0rd-9xQ"])
    assert_gone(out, ["tok-one-8HvQ2", "tok-two-3KmZ7", "tok-three-5PwL1", "tok-four-6NcX4"])
    assert_gone(out, ["first line pQ7s", "second line zK2w"])
    assert after["root"]["password"] == "[REDACTED:password]"
    assert after["system"]["encryption"]["key"] == "[REDACTED:key]"


# -- YAML ------------------------------------------------------------------------------

COMPOSE_YAML = """\
version: "3.8"
services:
  iggy:
    image: iggyrs/iggy:0.4.21
    environment:
      - IGGY_ROOT_USERNAME=iggy
      - IGGY_ROOT_PASSWORD=Sup3r secret pass-Wq9
      - IGGY_HTTP_JWT_ENCODING_SECRET=tUjAwyuh1vauWv1zh87mTa5Vsqxezy3L
      - RUST_LOG=info
    ports:
      - "3000:3000"
  db:
    image: postgres:16
    environment:
      POSTGRES_USER: app
      POSTGRES_PASSWORD: "pg-Pa55word # not a comment"
      POSTGRES_DB: events
      PGDATA: /var/lib/postgresql/data
    healthcheck:
      interval: 10s
      timeout: 5s
secrets:
  db_password:
    file: ./secrets/db_password.txt
"""

K8S_YAML = """\
apiVersion: v1
kind: Secret
metadata:
  name: app-secrets
type: Opaque
stringData:
  api-token: 7bQm2xLp9KvR4tWz8NcY
data:
  password: MWYyZDFlMmU2N2Rm
  tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUV2Z0lCQURBTkJna3Foa2lHOXcwQg==
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels:
    key: app
spec:
  template:
    spec:
      containers:
        - name: app
          image: "registry.internal/app:1.4.2"
          env:
            - name: DB_PASSWORD
              value: "hunter2-db-Zx81"
            - name: LOG_LEVEL
              value: debug
            - name: API_TOKEN
              valueFrom:
                secretKeyRef:
                  name: app-secrets
                  key: api-token
          args: ["--log-level=debug"]
config:
  password: |
    block line one Hq3v
    block line two Lm8r
  other: kept
  private_key: >-
    folded secret part one Vn4c
    folded secret part two Bz6t
  tokens:
    - tok-first-Yw2e
    - "tok-second-Pk5u"
  session_timeout: 30m
  credentials:
    github: ghp_3X83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe
    user: deploy
    port: 22
  auth:
    type: basic
    enabled: true
seq_tokens:
- seq-item-Ha7r
- seq-item-Jd4k
flow: {password: flowpw-Tq81, user: bob}
"""


def test_compose_yaml() -> None:
    out = redact(COMPOSE_YAML)
    before, after = yaml.safe_load(COMPOSE_YAML), yaml.safe_load(out)
    assert_same_but_secrets(
        before,
        after,
        {
            ".services.iggy.environment[1]",
            ".services.iggy.environment[2]",
            ".services.db.environment.POSTGRES_PASSWORD",
        },
    )
    assert after["services"]["iggy"]["environment"][1] == "IGGY_ROOT_PASSWORD=[REDACTED:password]"
    assert_gone(out, ["Sup3r secret pass-Wq9", "tUjAwyuh1vauWv1zh87mTa5Vsqxezy3L", "pg-Pa55word"])


def test_kubernetes_yaml() -> None:
    out = redact(K8S_YAML)
    before, after = list(yaml.safe_load_all(K8S_YAML)), list(yaml.safe_load_all(out))
    assert_same_but_secrets(
        before,
        after,
        {
            "[0].stringData.api-token",
            "[0].data.password",
            "[0].data.tls.key",
            "[1].spec.template.spec.containers[0].env[0].value",
            "[1].config.password",
            "[1].config.private_key",
            "[1].config.tokens",
            "[1].config.credentials.github",
            "[1].seq_tokens",
            "[1].flow.password",
        },
    )
    assert_gone(
        out,
        [
            "7bQm2xLp9KvR4tWz8NcY",
            "MWYyZDFlMmU2N2Rm",
            "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0",
            "hunter2-db-Zx81",
            "block line one Hq3v",
            "block line two Lm8r",
            "folded secret part one Vn4c",
            "folded secret part two Bz6t",
            "tok-first-Yw2e",
            "tok-second-Pk5u",
            "ghp_3X83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe",
            "seq-item-Ha7r",
            "seq-item-Jd4k",
            "flowpw-Tq81",
        ],
    )


# -- JSON ------------------------------------------------------------------------------

SETTINGS = {
    "api_key": "d0c621de49f145fda9988c79fc35526f",
    "retries": 5,
    "client_secret": "JoC6vWCBiJmpflvJfupxqZKm",
    "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x",
    "token_expiry": "1h",
    "session_timeout": 1800,
    "password": "q\"uo\\te'd # Pw-81k",
    "pin": 1234,
    "auth": {"user": "svc", "password": "nested-Pw-Ke42", "timeout": "5s"},
    "tokens": ["json-tok-One7", "json-tok-Two8"],
    "credentials": {"github": "ghp_Zx81Qw29Er37Ty46Ui55Op64As73Df82Gh91", "host": "git.internal"},
    "env": [{"name": "DB_PASSWORD", "value": "env-list-Pw-Lk33"}, {"name": "MODE", "value": "x"}],
    "Env": ["PATH=/usr/bin", "IGGY_ROOT_PASSWORD=env-str Pw-Uy77"],
    "headers": {"X-Api-Key": "hdr-key-Mn56Bv90Cx12"},
    "name": "app",
    "version": "1.2.3",
}
JSON_SECRETS = [
    "d0c621de49f145fda9988c79fc35526f",
    "JoC6vWCBiJmpflvJfupxqZKm",
    "uo\\\\te",
    "nested-Pw-Ke42",
    "json-tok-One7",
    "json-tok-Two8",
    "ghp_Zx81Qw29Er37Ty46Ui55Op64As73Df82Gh91",
    "env-list-Pw-Lk33",
    "env-str Pw-Uy77",
    "hdr-key-Mn56Bv90Cx12",
]
JSON_SECRET_PATHS = {
    ".api_key",
    ".client_secret",
    ".password",
    ".auth.password",
    ".tokens",
    ".credentials.github",
    ".env[0].value",
    ".Env[1]",
    ".headers.X-Api-Key",
}


@pytest.mark.parametrize("indent", [None, 2, 4])
def test_settings_json(indent: int | None) -> None:
    text = json.dumps(SETTINGS, indent=indent)
    out = redact(text)
    assert_same_but_secrets(SETTINGS, json.loads(out), JSON_SECRET_PATHS)
    assert_gone(out, JSON_SECRETS)


def test_minified_json_in_64k_pieces() -> None:
    """A 50 MB one-line document reaches the rule in pieces cut after a separator."""
    record = json.dumps(SETTINGS, separators=(",", ":"))
    text = "[" + ",".join([record] * 400) + "]"
    pieces, rest = [], text
    while len(rest) > 4096:  # small pieces: every kind of cut happens
        cut = max(rest.rfind(c, 0, 4096) for c in " \t,;&{}[]<>|") + 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    rules = (KeyValueRule(),)
    scanners = [r.scanner() for r in rules]
    out = "".join(apply(p, [h for s in scanners for h in s.scan(p)]) for p in pieces)
    assert_gone(out, JSON_SECRETS)
    assert json.loads(out)[399]["retries"] == 5


def test_package_json() -> None:
    package = {
        "name": "@acme/app",
        "version": "0.8.0",
        "scripts": {"build": "tsc -p .", "test": "jest"},
        "publishConfig": {
            "registry": "https://npm.internal/",
            "_authToken": "npm_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z",
        },
        "dependencies": {"keytar": "^7.9.0", "tokenizer": "1.0.0"},
    }
    text = json.dumps(package, indent=2)
    out = redact(text)
    assert_same_but_secrets(package, json.loads(out), {".publishConfig._authToken"})


def test_escaped_json_in_a_log_line() -> None:
    line = 'level=info body="{\\"user\\":\\"bob\\",\\"password\\":\\"esc-Pw-Qa12\\"}" took=3ms'
    out = redact(line)
    assert_gone(out, ["esc-Pw-Qa12"])
    assert "took=3ms" in out and 'user\\":\\"bob' in out


# -- INI -------------------------------------------------------------------------------

MY_CNF = """\
[client]
user = root
password = my pass#word ;x-Rq2
host = db-1.prod.internal
port = 3306

[mysqldump]
quick
max_allowed_packet = 16M
"""

PHP_INI = """\
[PHP]
memory_limit = 128M
session.save_path = "/var/lib/php/sessions"
session.cookie_secure = On
session.gc_maxlifetime = 1440
mysqli.default_pw = php-Default-Pw77
[mail]
smtp_password = "smtp Pw-Jh56"
"""

AWS = (CORPUS / "aws-credentials.ini").read_text()


@pytest.mark.parametrize(
    ("text", "secret_keys", "secrets"),
    [
        (MY_CNF, {("client", "password")}, ["my pass#word ;x-Rq2"]),
        (
            PHP_INI,
            {("PHP", "mysqli.default_pw"), ("mail", "smtp_password")},
            ["php-Default-Pw77", "smtp Pw-Jh56"],
        ),
    ],
)
def test_ini_files(text: str, secret_keys: set[tuple[str, str]], secrets: list[str]) -> None:
    out = redact(text)
    before = configparser.ConfigParser(interpolation=None, allow_no_value=True)
    before.read_string(text)
    after = configparser.ConfigParser(interpolation=None, allow_no_value=True)
    after.read_string(out)
    for section in before.sections():
        for key, value in before[section].items():
            if (section, key) in secret_keys:
                assert after[section][key].strip('"').startswith(REDACTED_PREFIX)
            else:
                assert after[section][key] == value
    assert_gone(out, secrets)


# -- dotenv, environ, systemd ----------------------------------------------------------

DOTENV = """\
# app settings
export DB_PASSWORD="dot Pw \\"q\\" # Ws4"
API_TOKEN='single-Tok-Ed78'
SECRET_KEY=bare value # with hash Rf9
LOG_LEVEL=debug
export PORT=8080
CACHE_TTL=30m
MULTI_SECRET="first line Tg5
second line Yh6"
AFTER=kept
"""


def read_dotenv(text: str) -> dict[str, str]:
    """A small dotenv reader: export, quotes (multi-line), no comment inside values."""
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        key, _, value = line.partition("=")
        if value[:1] in "\"'":
            quote = value[0]
            while not re.search(rf"(?<!\\){quote}\s*$", value[1:]):
                value += "\n" + next(lines)
            value = value.strip()[1:-1]
        values[key] = value
    return values


def test_dotenv() -> None:
    out = redact(DOTENV)
    before, after = read_dotenv(DOTENV), read_dotenv(out)
    assert_same_but_secrets(
        before, after, {".DB_PASSWORD", ".API_TOKEN", ".SECRET_KEY", ".MULTI_SECRET"}
    )
    assert_gone(out, ['dot Pw \\"q\\" # Ws4', "single-Tok-Ed78", "bare value # with hash Rf9"])
    assert_gone(out, ["first line Tg5", "second line Yh6"])


def test_proc_environ_nul_separated() -> None:
    environ = (
        "PATH=/usr/local/bin:/usr/bin\0IGGY_ROOT_USERNAME=iggy\0IGGY_ROOT_PASSWORD=TxoF54Fzbka8FRCz\0"
        "IGGY_HTTP_JWT_ENCODING_SECRET=tUjAwyuh1vauWv1zh87mTa5Vsqxezy3L\0LANG=C.UTF-8\0"
        "AWS_SECRET_ACCESS_KEY=XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb/xHKa\0HOME=/root\0"
    )
    out = redact(environ)
    parsed = dict(e.split("=", 1) for e in out.split("\0") if e)
    assert parsed["IGGY_ROOT_PASSWORD"] == "[REDACTED:password]"
    assert parsed["LANG"] == "C.UTF-8" and parsed["PATH"] == "/usr/local/bin:/usr/bin"
    assert_gone(
        out,
        [
            "TxoF54Fzbka8FRCz",
            "tUjAwyuh1vauWv1zh87mTa5Vsqxezy3L",
            "XSc7Tvo+hBKqFYY+kv5ZJr3J1TWDtkwtDDb",
        ],
    )


UNIT = """\
[Unit]
Description=Iggy message streaming server
After=network-online.target

[Service]
Environment="LANG=C.UTF-8" "IGGY_ROOT_PASSWORD=unit Pw with spaces-Ok3"
Environment=IGGY_HTTP_JWT_DECODING_SECRET=unitSecretNoSpaces-Pl0
Environment='API_KEY=single quoted-Ik9'
EnvironmentFile=-/etc/iggy/iggy.env
PassEnvironment=RUST_LOG
KeyringMode=private
ExecStart=/usr/bin/iggy-server --config /etc/iggy/server.toml
TimeoutStopSec=30
"""


def test_systemd_unit() -> None:
    out = redact(UNIT)
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line.removeprefix("Environment=")):
                key, _, value = word.partition("=")
                env[key] = value
    assert env["LANG"] == "C.UTF-8"
    assert env["IGGY_ROOT_PASSWORD"] == "[REDACTED:password]"
    assert env["IGGY_HTTP_JWT_DECODING_SECRET"] == "[REDACTED:secret]"
    assert env["API_KEY"] == "[REDACTED:api-key]"
    for kept in (
        "PassEnvironment=RUST_LOG",
        "KeyringMode=private",
        "EnvironmentFile=-/etc/iggy/iggy.env",
    ):
        assert kept in out
    assert_gone(out, ["unit Pw with spaces-Ok3", "unitSecretNoSpaces-Pl0", "single quoted-Ik9"])


# -- log text, odd shapes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "ts=2026-11-01 user=bob password=hunter2 host=db-1",
            "ts=2026-11-01 user=bob password=[REDACTED:password] host=db-1",
        ),
        (
            "GET /login?user=bob&password=hunter2&next=/",
            "GET /login?user=bob&password=[REDACTED:password]&next=/",
        ),
        (
            "cfg {Host:db Port:5432 Password:hunter2}",
            "cfg {Host:db Port:5432 Password:[REDACTED:password]}",
        ),
        ("opts map[password:hunter2 user:bob]", "opts map[password:[REDACTED:password] user:bob]"),
        (
            "{'user': 'bob', 'password': 'hunter2'}",
            "{'user': 'bob', 'password': '[REDACTED:password]'}",
        ),
        ("$cfg['password'] = 'php-pass';", "$cfg['password'] = '[REDACTED:password]';"),
        ("'password' => 'rb-pass',", "'password' => '[REDACTED:password]',"),
        (
            "-Dspring.datasource.password=jvm-pass -Xmx1g",
            "-Dspring.datasource.password=[REDACTED:password] -Xmx1g",
        ),
        ("  - name: x\n", "  - name: x\n"),
        ("if password == expected:", "if password == expected:"),
        ("token_bucket=100 session_timeout=5s", "token_bucket=100 session_timeout=5s"),
        ("time 12:30:45 key:value", "time 12:30:45 key:value"),
        ("password: [REDACTED:password]", "password: [REDACTED:password]"),
        ('"password": "[REDACTED:password]"', '"password": "[REDACTED:password]"'),
        ('key = "partition"', 'key = "partition"'),
        ("passwd:         files systemd", "passwd:         files systemd"),
    ],
)
def test_single_lines(line: str, expected: str) -> None:
    assert lines_of(KeyValueRule(), line) == expected


def test_redaction_is_idempotent() -> None:
    for text in (
        IGGY_TOML,
        COMPOSE_YAML,
        K8S_YAML,
        DOTENV,
        UNIT,
        MY_CNF,
        json.dumps(SETTINGS, indent=2),
    ):
        once = redact(text)
        assert redact(once) == once


def test_unclosed_quote_does_not_swallow_the_log() -> None:
    lines = ['msg="login" password="oops-no-close'] + [f"line {i} ok" for i in range(200)]
    out = redact("\n".join(lines)).splitlines()
    assert "oops-no-close" not in out[0]
    assert out[-1] == "line 199 ok"


def test_yaml_block_ends_at_dedent() -> None:
    text = "password: |\n  s3cret-line-Ab1\n\n  more-secret-Cd2\nuser: bob\nnote: keep me\n"
    out = redact(text)
    assert yaml.safe_load(out) == {
        "password": "[REDACTED:password]\n\n[REDACTED:password]\n",
        "user": "bob",
        "note": "keep me",
    }


def test_extra_keys() -> None:
    rule = KeyValueRule(SecretKeys(["iggy_root", "license"]))
    assert lines_of(rule, "IGGY_ROOT=abc") == "IGGY_ROOT=[REDACTED:iggy-root]"
    assert lines_of(rule, "license: ABCD-1234") == 'license: "[REDACTED:license]"'
    assert lines_of(KeyValueRule(), "license: ABCD-1234") == "license: ABCD-1234"


def test_kubernetes_env_value_needs_a_secret_name() -> None:
    text = "- name: LOG_LEVEL\n  value: debug\n- name: REDIS_PASSWORD\n  value: redis-Pw-Ty6\n"
    out = redact(text)
    assert yaml.safe_load(out) == [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "REDIS_PASSWORD", "value": "[REDACTED:password]"},
    ]


@pytest.mark.parametrize(
    "name", ["server.toml", "aws-credentials.ini", "app.yaml", "environ", "settings.json"]
)
def test_corpus_files(name: str) -> None:
    answers = json.loads((CORPUS / "answers.json").read_text())
    text = (CORPUS / name).read_text()
    out = redact(text, (KeyValueRule(), ContextRule()))
    assert_gone(out, [s["core"] for s in answers["secrets"] if s["file"] == name])
    for benign in answers["benign"]:
        if benign["file"] == name:
            assert benign["value"] in out, benign


ADVERSARIAL = {
    "a": "a" * MAX_LINE,
    "equals": "=" * MAX_LINE,
    "quotes": '"' * MAX_LINE,
    "begin": ("-----BEGIN" * MAX_LINE)[:MAX_LINE],
    "backslashes": 'password="' + "\\" * MAX_LINE,
    "assignments": ("a=" * MAX_LINE)[:MAX_LINE],
    "password=": ("password=" * MAX_LINE)[:MAX_LINE],
    'password="': ('password="' * MAX_LINE)[:MAX_LINE],
    "json": ('{"password":"x","user":"y"},' * MAX_LINE)[:MAX_LINE],
    "brackets": "key: " + "[" * MAX_LINE,
    "escaped": ('\\"token\\": \\"' * MAX_LINE)[:MAX_LINE],
    "words": ("token key secret " * MAX_LINE)[:MAX_LINE],
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_lines_scan_fast(name: str) -> None:
    for rule in (KeyValueRule(), ContextRule()):
        scanner = rule.scanner()
        started = time.perf_counter()
        scanner.scan(ADVERSARIAL[name])
        assert time.perf_counter() - started < 0.5, (rule.name, name)
