"""The filter every string and byte leaving a check passes: rules, streams, audit."""

from __future__ import annotations

import json
import os

import pytest

from snapshot_agent.core.check import Check
from snapshot_agent.core.printable import well_formed
from snapshot_agent.core.results import Finding, Result, Severity, Status
from snapshot_agent.pipeline.filter import (
    IdentityFilter,
    filter_for,
    filter_result,
    filter_value,
)
from snapshot_agent.redact.redactor import Redactor
from snapshot_agent.redact.rule import MAX_LINE

from .conftest import starred


def RuleFilter() -> Redactor:
    """The default filter: the full redactor."""
    flt = filter_for(True)
    assert isinstance(flt, Redactor)
    return flt


def stars(values: list[str]) -> list[str]:
    """Each argument with [REDACTED:kind] shown as ***."""
    return [starred(v) for v in values]


CHECK = Check(
    id="test.filtered",
    title="filtered",
    category="test",
    description="a check whose result is filtered",
    run=lambda ctx: Result(Status.PASS, "ok"),
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "/usr/bin/app --password hunter2 --Auth-Token=abc -v serve",
            "/usr/bin/app --password *** --Auth-Token=*** -v serve",
        ),
        (
            "java -Djavax.net.ssl.keyStorePassword=changeit --api-KEY k1 -jar a",
            "java -Djavax.net.ssl.keyStorePassword=*** --api-KEY *** -jar a",
        ),
        (
            "worker --db=postgres://iggy:s3cr3t@db:5432/x redis://:pw@cache:6379",
            "worker --db=postgres://iggy:***@db:5432/x redis://:***@cache:6379",
        ),
        (
            # a number is not a secret (ports, counts, booleans as 0/1)
            "tool --no-auth --verbose --credentials -x9secret SECRET_X=1",
            "tool --no-auth --verbose --credentials *** SECRET_X=1",
        ),
        # setproctitle: the whole title in one string
        ("agent: run --token abc123 [main]", "agent: run --token *** [main]"),
        # paths are not secrets
        ("iggy --key-file /etc/iggy/key.pem", "iggy --key-file /etc/iggy/key.pem"),
        ("Environment=API_KEY=abc TOKEN_PATH=/run/t", "Environment=API_KEY=*** TOKEN_PATH=/run/t"),
        ("", ""),
    ],
)
def test_command_line_secrets_are_masked(text: str, shown: str) -> None:
    assert starred(RuleFilter().text(text)) == shown


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (
            ["/usr/bin/app", "--password", "hunter2", "--Auth-Token=abc", "-v", "serve"],
            ["/usr/bin/app", "--password", "***", "--Auth-Token=***", "-v", "serve"],
        ),
        (["mysql", "--password", "two words"], ["mysql", "--password", "***"]),
        (["tool", "--no-auth", "--verbose", "--key", "/etc/k.pem"], None),
        (["curl", "https://u:p@h/x", "-H", "X"], ["curl", "https://u:***@h/x", "-H", "X"]),
    ],
)
def test_argv_masks_the_argument_after_a_secret_option(argv: list[str], shown: list | None) -> None:
    assert stars(RuleFilter().argv(argv)) == (shown or argv)


def test_masking_twice_changes_nothing_more() -> None:
    flt = RuleFilter()
    once = flt.text("app --password hunter2 https://u:p@h/ KEY=v")
    counts = flt.audit().rules
    assert flt.text(once) == once
    assert flt.audit().rules == counts


def test_audit_counts_per_rule_never_values() -> None:
    flt = RuleFilter()
    flt.text("a --password x --token y SECRET=z")
    audit = flt.audit()
    assert audit.applied
    assert sum(audit.rules.values()) >= 3 and not audit.files
    assert not {"x", "y", "z"} & {str(v) for v in audit.rules.values()}


def test_stream_masks_across_chunk_boundaries_and_keeps_bytes() -> None:
    flt = RuleFilter()
    source = b"line one\nrun --pass" + b"word hunter2\n\xff\xfe binary \x00\n" + b"tail --token t"
    chunks = [source[i : i + 7] for i in range(0, len(source), 7)]
    out = b"".join(flt.stream(chunks)).decode("utf-8", "surrogateescape")
    shown = "line one\nrun --password ***\n\udcff\udcfe binary \x00\ntail --token ***"
    assert starred(out) == shown


def test_stream_bounds_a_line_without_newline() -> None:
    flt = RuleFilter()
    big = b"x" * (3 * MAX_LINE + 5)
    pieces = list(flt.stream([big[i : i + 4096] for i in range(0, len(big), 4096)]))
    assert b"".join(pieces) == big
    assert max(len(p) for p in pieces) <= MAX_LINE + 4096


def test_identity_passes_everything_and_says_so() -> None:
    flt = filter_for(redact=False)
    assert isinstance(flt, IdentityFilter)
    assert flt.text("--password x") == "--password x"
    assert list(flt.stream([b"a", b"b"])) == [b"a", b"b"]
    assert not flt.audit().applied
    assert isinstance(filter_for(redact=True), Redactor)


def test_result_fields_and_data_shapes_are_filtered() -> None:
    flt = RuleFilter()
    result = Result(
        Status.WARN,
        "started with --password p1",
        [Finding(Severity.WARN, "API_KEY=k1", "rotate TOKEN=t1", "svc --secret s1")],
        {"rows": [{"cmd": "x --auth a1", "n": 3}], "tuple": ("PASS=p2",), "TOKEN=k": None},
    )
    out = filter_result(flt, CHECK, result)
    assert starred(out.summary) == "started with --password ***"
    assert [
        starred(getattr(out.findings[0], f)) for f in ("message", "remediation", "subject")
    ] == [
        "API_KEY=***",
        "rotate TOKEN=***",
        "svc --secret ***",
    ]
    assert json.loads(starred(json.dumps(out.data))) == {
        "rows": [{"cmd": "x --auth ***", "n": 3}],
        "tuple": ["PASS=***"],
        "TOKEN=***": None,
    }
    assert isinstance(out.data["tuple"], tuple)
    assert result.summary == "started with --password p1"  # the original is not changed
    assert filter_value(flt, 5) == 5


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('PASSWORD="two words" next', 'PASSWORD="***" next'),
        ("export API_KEY='abc' && run", "export API_KEY='***' && run"),
        ("mysql --password 'my secret'", "mysql --password '***'"),
        ('--password=ab"cd', '--password=***"cd'),  # stops at the quote: never eats JSON
    ],
)
def test_quoted_values_are_masked_whole_with_their_quotes_kept(text: str, shown: str) -> None:
    assert starred(RuleFilter().text(text)) == shown


@pytest.mark.parametrize(
    "text",
    [
        "iommu.passthrough=1 bypass=yes monkey=3",
        "KeyringMode=private PassEnvironment=LANG",
        "GET http://localhost:8080/users/@me",
        "authorized_keys_file /etc/ssh/authorized_keys",
    ],
)
def test_words_that_only_contain_a_secret_word_stay(text: str) -> None:
    assert RuleFilter().text(text) == text


def test_json_evidence_stays_valid_json() -> None:
    doc = {
        "cmd": 'sh -c "mysql --password=abc"',
        "a": "http://u:p@h",
        "b": "x@y",
        "env": ["DB_PASSWORD=pw", "TOKEN='t'"],
    }
    text = json.dumps(doc) + "\n" + json.dumps(doc, indent=2)
    out = starred(b"".join(RuleFilter().stream([text.encode()])).decode())
    first, rest = out.split("\n", 1)
    for masked in (json.loads(first), json.loads(rest)):
        assert masked == {
            "cmd": 'sh -c "mysql --password=***"',
            "a": "http://u:***@h",
            "b": "x@y",
            "env": ["DB_PASSWORD=***", "TOKEN=***"],
        }


def test_adversarial_text_costs_linear_time() -> None:
    """Inputs that made earlier patterns quadratic: each would take seconds if they were."""
    flt = RuleFilter()
    for text in ("a://b:" * 20000, "x" * 300000 + "=1", "-" * 100000 + "password", "pass" * 50000):
        assert flt.text(text) == text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/usr/bin/mysql -u root -pS3cret db", "/usr/bin/mysql -u root -p*** db"),
        ("mysql -u root -p db", "mysql -u root -p db"),  # -p alone prompts; db is a name
        ("redis-cli -h cache -a 'hunter2' ping", "redis-cli -h cache -a '***' ping"),
        ("iggy -u iggy -p iggy stream list", "iggy -u iggy -p *** stream list"),
        ("curl -u bob:pw https://x", "curl -u bob:*** https://x"),
        (
            "curl -H 'Authorization: Bearer abc.def' https://x",
            "curl -H 'Authorization: Bearer ***' https://x",
        ),
        ('{"Authorization": "Basic dXNlcjpwYXNz"}', '{"Authorization": "Basic ***"}'),
        ("ssh -p 22 host; redis-server --port 6379", "ssh -p 22 host; redis-server --port 6379"),
        (
            "iggy-server --config /etc/iggy/server.toml",
            "iggy-server --config /etc/iggy/server.toml",
        ),
    ],
)
def test_password_options_of_known_programs_and_auth_headers(text: str, shown: str) -> None:
    assert starred(RuleFilter().text(text)) == shown


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["mysql", "-pS3", "db"], ["mysql", "-p***", "db"]),
        (["/usr/bin/redis-cli", "-a", "pw", "ping"], ["/usr/bin/redis-cli", "-a", "***", "ping"]),
        (["curl", "-u", "bob:pw", "https://x"], ["curl", "-u", "bob:***", "https://x"]),
        (["ssh", "-p", "22", "host"], ["ssh", "-p", "22", "host"]),
    ],
)
def test_argv_masks_password_options_of_known_programs(argv: list[str], shown: list[str]) -> None:
    flt = RuleFilter()
    assert stars(flt.argv(argv)) == shown
    assert (sum(flt.audit().rules.values()) > 0) == (argv != shown)


def test_program_options_cost_linear_time() -> None:
    flt = RuleFilter()
    for text in ("mysql " * 50000, "curl -u " * 30000, "redis-cli -a " * 30000):
        flt.text(text)  # seconds if quadratic; milliseconds here


def test_nested_data_is_named_by_its_key_path_and_env_pairs_by_their_name() -> None:
    flt = RuleFilter()
    data = {
        "secrets": {"db": "N3stedS3cretPw"},
        "credentials": {"value": "abcdefgh1234"},
        "env": [{"name": "DB_PASSWORD", "value": "hunter2hunter2"}, {"name": "LANG", "value": "C"}],
        "tls": {"key_file": "/etc/iggy/key.pem", "key": {"type": "RSA", "bits": 2048}},
        "session": {"timeout": "30m"},
    }
    out = json.loads(starred(json.dumps(filter_value(flt, data))))
    assert out == {
        "secrets": {"db": "***"},
        "credentials": {"value": "***"},
        "env": [{"name": "DB_PASSWORD", "value": "***"}, {"name": "LANG", "value": "C"}],
        "tls": {"key_file": "/etc/iggy/key.pem", "key": {"type": "RSA", "bits": 2048}},
        "session": {"timeout": "30m"},
    }


@pytest.mark.parametrize("redact", [True, False])
def test_names_that_are_not_utf8_become_escapes_json_can_hold(redact: bool) -> None:
    """os.listdir gives surrogates for bytes that are not UTF-8; JSON and UTF-8 cannot
    hold them, so they are escaped as the Iggy bundle names them (found by a snapshot of
    a hostile data directory, whose report.json could not be written)."""
    odd = os.fsdecode(b"odd\xff\xfe dir")
    result = Result(
        Status.WARN,
        f"see {odd}",
        findings=[Finding(Severity.WARN, odd, "rm", odd)],
        data={odd: [odd, {"path": odd}], "argv": [odd, "--x"], "half": "\ud800"},
    )
    shown = filter_result(filter_for(redact), CHECK, result)
    text = json.dumps([shown.summary, shown.data, shown.findings[0].subject], ensure_ascii=False)
    text.encode("utf-8")  # no surrogate is left
    assert "odd\\xff\\xfe dir" in shown.summary
    assert shown.data["odd\\xff\\xfe dir"][1] == {"path": "odd\\xff\\xfe dir"}
    assert shown.data["half"] == "\\ud800"
    assert well_formed("plain café") == "plain café"
