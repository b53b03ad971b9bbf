"""Token rules: each rule's own proofs, look-alikes that must stay, PEM blocks, linear time."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import Hit, Rule, replacement
from snapshot_agent.redact.tokens import TOKEN_RULES, PatternRule

CORPUS = Path(__file__).resolve().parent / "corpus"  # the shared sample, copied


def apply(line: str, hits: Sequence[Hit]) -> str:
    """`line` with the union of the hits' spans replaced, as the redactor does."""
    merged: list[list] = []
    for hit in sorted(hits, key=lambda h: (h.start, -h.end)):
        if merged and hit.start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hit.end)
        else:
            merged.append([hit.start, hit.end, hit.label])
    for start, end, label in reversed(merged):
        line = line[:start] + replacement(label) + line[end:]
    return line


def redact(rules: Sequence[Rule], text: str) -> str:
    """`text` through the real redactor with only `rules`."""
    return Redactor(rules).text(text)


def marked(example: str) -> tuple[str, list[tuple[int, int]]]:
    """The example without « », and the spans they marked."""
    plain, spans, pos = "", [], 0
    for match in re.finditer("«([^»]*)»", example):
        plain += example[pos : match.start()]
        spans.append((len(plain), len(plain) + len(match.group(1))))
        plain += match.group(1)
        pos = match.end()
    return plain + example[pos:], spans


def expected(example: str, label: str) -> str:
    """The example with each marked span replaced by the label's replacement."""
    return re.sub("«[^»]*»", replacement(label).replace("\\", "\\\\"), example)


def cases(kind: str) -> list:
    """(rule, line) for every example or benign line of every token rule."""
    return [
        pytest.param(rule, line, id=f"{rule.name}-{i}")
        for rule in TOKEN_RULES
        for i, line in enumerate(getattr(rule, kind))
    ]


def label_of(rule: Rule) -> str:
    """The label a rule's hits carry."""
    return rule.label  # type: ignore[attr-defined]


@pytest.mark.parametrize(("rule", "example"), cases("examples"))
def test_each_rule_redacts_exactly_its_examples(rule: Rule, example: str) -> None:
    line, _ = marked(example)
    out = apply(line, rule.scanner().scan(line))
    assert out == expected(example, label_of(rule))
    assert rule.scanner().scan(out) == []  # idempotent: a replacement is never a secret
    assert any(hint in line.lower() for hint in rule.scanner().hints)


@pytest.mark.parametrize(("rule", "line"), cases("benign"))
def test_each_rule_keeps_its_benign_lines(rule: Rule, line: str) -> None:
    assert rule.scanner().scan(line) == []


def test_rules_are_named_once_in_kebab_case_and_described() -> None:
    names = [rule.name for rule in TOKEN_RULES]
    assert len(names) == len(set(names))
    for rule in TOKEN_RULES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name)
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", label_of(rule))
        assert rule.description and "\n" not in rule.description
        assert len(rule.examples) >= 1 and len(rule.benign) >= 1
        hints = rule.scanner().hints
        assert hints and all(h == h.lower() for h in hints)


LOOK_ALIKES = [
    "request id=3f0e2d1c-9a8b-4c7d-8e6f-5a4b3c2d1e0f done in 30ms",
    "object sha256=923732881584d8c4fa2815d2802827283e0ad84173581569969e58b081006f7e",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (HEAD -> main)",
    "md5=d41d8cd98f00b204e9800998ecf8427e checksum=e3b0c44298fc1c149afbf4c8996fb924",
    "data: SGVsbG8gd29ybGQsIHRoaXMgaXMganVzdCBzb21lIHRleHQ=",
    "TWILIO_ACCOUNT_SID=AC261ff2d3c425c8d99d19bdd0b6cc60d5",
    "ssh -p 22 backup@10.0.1.17; iggy --key-file /etc/iggy/key.pem",
    "server version 0.8.0 on ip-10-0-1-17 region eu-central-1 locale C.UTF-8",
    "public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x bob@host",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7qOS3yOGYY8NTuPx+Jki5nqQlC9PVt+SDoG27s8 x@y",
    "-----BEGIN CERTIFICATE-----",
    "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ",
    "-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----",
    "listen 127.0.0.1:3000 timeout=30s max_body=512MiB",
    "GET https://api.example.com/v1/items?page=2&sort=asc&code_version=3",
    "password_min_length = 12, token_expiry = 15m, secret_file = /run/secrets/db",
    "Authorization failed: missing header; set-cookie policy strict",
    "kernel: EXT4-fs (sda1): mounted filesystem with ordered data mode",
    "docker pull registry.internal/iggy/server@sha256:"
    "923732881584d8c4fa2815d2802827283e0ad84173581569969e58b081006f7e",
]


@pytest.mark.parametrize("line", LOOK_ALIKES)
def test_look_alikes_survive_every_token_rule(line: str) -> None:
    assert redact(TOKEN_RULES, line) == line


# --- PEM private keys -----------------------------------------------------------------

BODY = [
    "MIIEowIBAAKCAQEAqOS3yOGYY8NTuPx+Jki5nqQlC9PVt+SDoG27s8+BI+iGwIGR",
    "saQ6FQcKIqNc9Rpg1XOODKAEoIiuPn1DAHTMEb/ugOWJF6iGEL68eUDPE9hDPLrB",
    "NDu9pvl1fthhE3rpr0nEC52hpDITmSVUQaa+sU2fkSIDew98RPisGbE3rH1KtYRJ",
    "dnd3xB7+5IwzT/oV73kESnUT0YH3/nP+RGM16vLuNROUFyS/hkPzXCGa0aGCR+Mc==",
]
PK = replacement("private-key")


def pem(kind: str = "RSA PRIVATE KEY", indent: str = "") -> str:
    """A multi-line PEM block of `kind`."""
    lines = [f"-----BEGIN {kind}-----", *BODY, f"-----END {kind}-----"]
    return "".join(f"{indent}{line}\n" for line in lines)


def assert_no_body_survives(text: str) -> None:
    """No 10-character window of any body line is left."""
    for body in BODY:
        for i in range(len(body) - 9):
            assert body[i : i + 10] not in text


@pytest.mark.parametrize(
    "kind",
    [
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PGP PRIVATE KEY BLOCK",
    ],
)
def test_pem_block_body_lines_go_markers_stay(kind: str) -> None:
    text = "before\n" + pem(kind) + "after: not a key\n"
    out = redact(TOKEN_RULES, text)
    assert out == (
        f"before\n-----BEGIN {kind}-----\n" + f"{PK}\n" * len(BODY) + f"-----END {kind}-----\n"
        "after: not a key\n"
    )


def test_pem_in_a_yaml_block_scalar_keeps_indentation_and_parses() -> None:
    text = "tls:\n  cert_file: /etc/tls/crt.pem\n  key: |\n" + pem("EC PRIVATE KEY", "    ")
    text += "  port: 8443\n"
    out = redact(TOKEN_RULES, text)
    assert_no_body_survives(out)
    doc = yaml.safe_load(out)
    assert doc["tls"]["port"] == 8443 and doc["tls"]["cert_file"] == "/etc/tls/crt.pem"
    assert doc["tls"]["key"].splitlines()[1] == PK
    assert "    " + PK in out


def test_pem_one_line_in_json_keeps_escapes_and_parses() -> None:
    key = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(BODY) + "\n-----END PRIVATE KEY-----\n"
    doc = {
        "type": "service_account",
        "private_key_id": "0123456789abcdef",
        "private_key": key,
        "client_email": "svc@proj.iam.gserviceaccount.com",
    }
    for text in (json.dumps(doc), json.dumps(doc, indent=2), json.dumps(json.dumps(doc))):
        out = redact(TOKEN_RULES, text)
        assert_no_body_survives(out)
        back = json.loads(out)
        back = json.loads(back) if isinstance(back, str) else back
        assert back["private_key"] == (
            f"-----BEGIN PRIVATE KEY-----\n{PK}\n-----END PRIVATE KEY-----\n"
        )
        assert back["client_email"] == doc["client_email"]


def test_pem_in_json_cut_short_runs_to_the_closing_quote() -> None:
    line = '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0B", "n": 1}'
    out = redact(TOKEN_RULES, line)
    assert json.loads(out) == {"private_key": f"-----BEGIN PRIVATE KEY-----\n{PK}", "n": 1}


def test_two_keys_in_one_json_line() -> None:
    one = "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIK6saQ6FQcKIqNc9\\n-----END EC PRIVATE KEY-----"
    line = f'{{"a": "{one}", "b": "{one}"}}'
    out = redact(TOKEN_RULES, line)
    assert out.count(PK) == 2 and "MHcCAQ" not in out
    json.loads(out)


def test_unterminated_pem_block_stays_open_to_the_end() -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(BODY) + "\nlater: line\n"
    out = redact(TOKEN_RULES, text)
    assert_no_body_survives(out)
    assert "later: line" in out  # a header-shaped line is not key material
    assert out.splitlines()[1:5] == [PK] * 4


def test_pem_headers_of_encrypted_keys_stay() -> None:
    text = (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        "DEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n" + "\n".join(BODY) + "\n"
        "-----END RSA PRIVATE KEY-----\n"
    )
    out = redact(TOKEN_RULES, text)
    assert "Proc-Type: 4,ENCRYPTED" in out and "DEK-Info: AES-128-CBC" in out
    assert_no_body_survives(out)


def test_certificates_and_public_keys_are_not_secrets() -> None:
    text = pem("CERTIFICATE") + pem("PUBLIC KEY") + pem("RSA PUBLIC KEY")
    assert redact(TOKEN_RULES, text) == text


def test_pem_in_python_string_concatenation() -> None:
    text = 'KEY = (\n    "-----BEGIN RSA PRIVATE KEY-----\\n"\n'
    text += "".join(f'    "{b}\\n"\n' for b in BODY) + '    "-----END RSA PRIVATE KEY-----\\n"\n)\n'
    out = redact(TOKEN_RULES, text)
    assert_no_body_survives(out)
    assert f'    "{PK}\\n"' in out


def test_a_certificate_after_a_key_is_kept() -> None:
    text = pem("PRIVATE KEY") + pem("CERTIFICATE")
    out = redact(TOKEN_RULES, text)
    assert_no_body_survives(out.split("-----BEGIN CERTIFICATE-----")[0])
    assert out.endswith(pem("CERTIFICATE"))


def test_putty_private_lines_go_public_lines_stay() -> None:
    text = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: bob@host\n"
        "Public-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x\nAAAApublic\n"
        f"Private-Lines: 2\n{BODY[0]}\n{BODY[1]}\n"
        "Private-MAC: 9f2b7c1e8d4a6f30\n"
    )
    out = redact(TOKEN_RULES, text)
    assert f"Private-Lines: 2\n{PK}\n{PK}\nPrivate-MAC" in out
    assert "AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x" in out


# --- Headers, URLs, query parameters, connection strings -------------------------------


def test_headers_in_a_json_request_log_parse_after_redaction() -> None:
    doc = {
        "method": "GET",
        "headers": {
            "Authorization": "Bearer gAAAAABlZ2V0LXRva2Vu.c2VjcmV0",
            "Cookie": "session=9f2b7c1e8d4a6f30; theme=dark",
            "X-Api-Key": "d0c621de49f145fda9988c79fc35526f",
            "Accept": "application/json",
        },
        "url": "https://api.example.com/v1/x?api_key=abc123def456&page=2",
    }
    out = json.loads(redact(TOKEN_RULES, json.dumps(doc)))
    headers = out["headers"]
    assert headers["Authorization"] == f"Bearer {replacement('authorization')}"
    assert headers["Cookie"] == f"session={replacement('cookie')}; theme=dark"  # a preference
    assert headers["X-Api-Key"] == replacement("api-key-header")
    assert headers["Accept"] == "application/json"
    assert (
        out["url"] == f"https://api.example.com/v1/x?api_key={replacement('query-secret')}&page=2"
    )


def test_curl_command_with_headers_user_and_url_password() -> None:
    line = (
        "curl -sf -H 'Authorization: Bearer abc.def' -H 'X-Vault-Token: hvs.CAESIJ3kF8x' "
        "https://ci:Zm9vYmFy@artifacts.internal/repo?token=t0k3n"
    )
    assert redact(TOKEN_RULES, line) == (
        f"curl -sf -H 'Authorization: Bearer {replacement('authorization')}' "
        f"-H 'X-Vault-Token: {replacement('api-key-header')}' "
        f"https://ci:{replacement('url-password')}@artifacts.internal/repo"
        f"?token={replacement('query-secret')}"
    )


def test_presigned_url_keeps_its_shape() -> None:
    url = (
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAUJZDEGXDNCF32EPF%2F20261101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261101T080000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr&X-Amz-Signature=3dfc967a64cb1402"
    )
    out = redact(TOKEN_RULES, url)
    for kept in ("X-Amz-Date=20261101T080000Z", "X-Amz-Expires=900", "SignedHeaders=host"):
        assert kept in out
    for gone in ("UJZDEGXDNCF32EPF", "IQoJb3JpZ2luX2VjEJr", "3dfc967a64cb1402"):
        assert gone not in out


def test_connection_strings_in_an_appsettings_file_parse_after_redaction() -> None:
    doc = {
        "ConnectionStrings": {
            "Db": "Server=tcp:db,1433;Database=orders;User ID=app;Password=p@ss w0rd;Encrypt=True",
            "Blob": "DefaultEndpointsProtocol=https;AccountName=logs;"
            "AccountKey=E4YHoDxzoCGmyG+D6Cok0j4ron6Yvy8lrVhZEgVf==;EndpointSuffix=core.windows.net",
        }
    }
    out = json.loads(redact(TOKEN_RULES, json.dumps(doc, indent=2)))["ConnectionStrings"]
    assert out["Db"] == (
        "Server=tcp:db,1433;Database=orders;User ID=app;"
        f"Password={replacement('connection-string')};Encrypt=True"
    )
    assert out["Blob"].endswith(
        f"AccountKey={replacement('azure-key')};EndpointSuffix=core.windows.net"
    )


def test_docker_config_parses_after_redaction() -> None:
    doc = {
        "auths": {
            "registry.internal": {"auth": "YWRtaW46bXd1ZlV4YnZKRENUYnl2SA=="},
            "ghcr.io": {"identitytoken": "opaque-identity-token-value"},
        },
        "credsStore": "desktop",
    }
    for text in (json.dumps(doc), json.dumps(doc, indent=4)):
        out = json.loads(redact(TOKEN_RULES, text))
        assert out["auths"]["registry.internal"]["auth"] == replacement("docker-auth")
        assert out["auths"]["ghcr.io"]["identitytoken"] == replacement("docker-auth")
        assert out["credsStore"] == "desktop"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            "2026-11-01 WARN fetching https://admin:mwufUxbvJDCTbyvH@registry.internal/v2/",
            "mwufUxbvJDCTbyvH",
        ),
        ("jdbc:postgresql://app:Sup3rS3cret!@db:5432/x", "Sup3rS3cret!"),
        ("mongodb://root:p%40ssw0rd@mongo-0.mongo:27017/?authSource=admin", "p%40ssw0rd"),
        ("redis://:aSM9nDthTiB64fN3@cache:6379/0", "aSM9nDthTiB64fN3"),
        ("amqps://svc:mKh6U3wkxV1v@mq.internal/vhost", "mKh6U3wkxV1v"),
    ],
)
def test_url_passwords_go_users_and_hosts_stay(line: str, secret: str) -> None:
    out = redact(TOKEN_RULES, line)
    assert secret not in out
    assert out.replace(replacement("url-password"), secret) == line


# --- The visible corpus: the kinds these rules own ------------------------------------

OWNED = {
    "aws-access-key-id",
    "github-pat",
    "slack-token",
    "jwt",
    "url-password",
    "presigned-signature",
    "pem-line",
}


def test_corpus_secrets_of_token_kinds_do_not_survive_and_benign_values_do() -> None:
    answers = json.loads((CORPUS / "answers.json").read_text())
    files = {p.name: redact(TOKEN_RULES, p.read_text()) for p in CORPUS.iterdir() if p.is_file()}
    for secret in answers["secrets"]:
        if secret["kind"] in OWNED:
            core, text = secret["core"], files[secret["file"]]
            assert all(core[i : i + 10] not in text for i in range(len(core) - 9)), secret
    for benign in answers["benign"]:
        assert benign["value"] in files[benign["file"]], benign


# --- Linear time ----------------------------------------------------------------------

SIZE = 64 * 1024


SEEDS = ["a", "=", '"', "-", "A", "0", ".", ":", "/", "@", "\\", "{", "%", " ", "'", "a-"]
SEEDS += ["-----BEGIN ", "-----BEGIN PRIVATE KEY-----", "eyJ", "eyJa.", "a://b:", "?token="]
SEEDS += ["Authorization: ", "Authorization: Bearer ", "Cookie: a=b;", "X-Api-Key: ", "&sig="]
SEEDS += ["Password=", "Password={", "password=a ", "AccountKey=", "vault s.", "Q~", "1:A"]
SEEDS += ['Digest a="b", ', "a=b, ", "jdbc:oracle:thin:", "sqlplus ", '"auth": "']


def adversarial_lines(rule: Rule) -> list[str]:
    """64 KiB lines built to make a backtracking pattern quadratic: repeated separators,
    repeated hints of the rule, hints glued to separators."""
    hints = rule.scanner().hints
    seeds = SEEDS + [f"{h}{tail}" for h in hints for tail in ("", "=", " ", "a", '"')]
    return [(seed * (SIZE // len(seed) + 1))[:SIZE] for seed in dict.fromkeys(seeds)]


@pytest.mark.parametrize("rule", TOKEN_RULES, ids=lambda r: r.name)
def test_adversarial_64k_lines_scan_in_linear_time(rule: Rule) -> None:
    for line in adversarial_lines(rule):
        scanner = rule.scanner()
        started = time.perf_counter()
        scanner.scan(line)
        scanner.scan(line[: SIZE // 2])  # also while a block is open
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, line[:40]


def test_a_pattern_rule_without_a_value_group_redacts_its_whole_match() -> None:
    rule = PatternRule(
        "extra-pattern-1", "user pattern", re.compile(r"corp-[0-9]{6}"), "pattern", ()
    )
    assert apply("id corp-123456 ok", rule.scan("id corp-123456 ok")) == "id [REDACTED:pattern] ok"
    assert rule.scanner() is rule and not rule.open
