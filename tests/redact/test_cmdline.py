"""Command-line rules: options named like secrets, program password options, argv lists."""

from __future__ import annotations

import json
import time

import pytest

from snapshot_agent.redact.cmdline import (
    CMDLINE_RULES,
    PROGRAM_OPTION,
    PROGRAM_OPTION_LABEL,
    SECRET_OPTION,
    SECRET_OPTION_LABEL,
    secret_arguments,
)
from snapshot_agent.redact.rule import Rule, replacement

from .test_tokens import apply, expected, marked, redact

S = replacement(SECRET_OPTION_LABEL)
P = replacement(PROGRAM_OPTION_LABEL)


def cases(kind: str) -> list:
    """(rule, line) for every example or benign line of every command-line rule."""
    return [
        pytest.param(rule, line, id=f"{rule.name}-{i}")
        for rule in CMDLINE_RULES
        for i, line in enumerate(getattr(rule, kind))
    ]


@pytest.mark.parametrize(("rule", "example"), cases("examples"))
def test_each_rule_redacts_exactly_its_examples(rule: Rule, example: str) -> None:
    line, _ = marked(example)
    out = apply(line, rule.scanner().scan(line))
    assert out == expected(example, rule.label)  # type: ignore[attr-defined]
    assert rule.scanner().scan(out) == []
    assert any(hint in line.lower() for hint in rule.scanner().hints)


@pytest.mark.parametrize(("rule", "line"), cases("benign"))
def test_each_rule_keeps_its_benign_lines(rule: Rule, line: str) -> None:
    assert rule.scanner().scan(line) == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "/usr/bin/app --password hunter2 --Auth-Token=abc -v serve",
            f"/usr/bin/app --password {S} --Auth-Token={S} -v serve",
        ),
        (
            "java -Djavax.net.ssl.keyStorePassword=changeit --api-KEY k1 -jar a",
            f"java -Djavax.net.ssl.keyStorePassword={S} --api-KEY {S} -jar a",
        ),
        (
            "tool --no-auth --verbose --credentials -x9secret",
            f"tool --no-auth --verbose --credentials {S}",
        ),
        ("agent: run --token abc123 [main]", f"agent: run --token {S} [main]"),
        ("iggy --key-file /etc/iggy/key.pem", "iggy --key-file /etc/iggy/key.pem"),
        (
            "app --password-file secrets/db --token-ttl 30m",
            "app --password-file secrets/db --token-ttl 30m",
        ),
        (
            "docker login --password-stdin -u ci registry",
            "docker login --password-stdin -u ci registry",
        ),
        ('PASSWORD="two words" next', 'PASSWORD="two words" next'),  # key/value rules' job
        ("mysql --password 'my secret'", f"mysql --password '{S}'"),
        ('--password=ab"cd', f'--password={S}"cd'),  # stops at the quote: never eats JSON
        ('--password "unterminated value', f'--password "{S}'),
        (
            "iommu.passthrough=1 --bypass yes --monkey 3",
            "iommu.passthrough=1 --bypass yes --monkey 3",
        ),
        ("/usr/bin/mysql -u root -pS3cret db", f"/usr/bin/mysql -u root -p{P} db"),
        ("mysql -u root -p db", "mysql -u root -p db"),  # -p alone prompts; db is a name
        ("redis-cli -h cache -a 'hunter2' ping", f"redis-cli -h cache -a '{P}' ping"),
        ("iggy -u iggy -p iggy stream list", f"iggy -u iggy -p {P} stream list"),
        ("curl -u bob:pw https://x", f"curl -u bob:{P} https://x"),
        ("curl --user=bob:pw https://x", f"curl --user=bob:{P} https://x"),
        ("ssh -p 22 host; redis-server --port 6379", "ssh -p 22 host; redis-server --port 6379"),
        ("sshpass -p pw ssh -p 22 host", f"sshpass -p {P} ssh -p 22 host"),
        ("redis-cli -a pw ping | grep -a x", f"redis-cli -a {P} ping | grep -a x"),
        ("smbclient //fs/share -U bob%S3cr3t", f"smbclient //fs/share -U bob%{P}"),
        (
            "openssl rsa -in k.pem -passin file:/run/pass",
            "openssl rsa -in k.pem -passin file:/run/pass",
        ),
        ("sqlcmd -S db -U sa -P 'Str0ng!'", f"sqlcmd -S db -U sa -P '{P}'"),
        (
            "podman run -p 8080:80 img && podman login -p pw q.io",
            f"podman run -p 8080:80 img && podman login -p {P} q.io",
        ),
        (
            "iggy-server --config /etc/iggy/server.toml",
            "iggy-server --config /etc/iggy/server.toml",
        ),
    ],
)
def test_command_line_text(text: str, shown: str) -> None:
    assert redact(CMDLINE_RULES, text) == shown


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["--password", "hunter2"], [(1, 0, SECRET_OPTION, SECRET_OPTION_LABEL)]),
        (["mysql", "-phunter2"], [(1, 2, PROGRAM_OPTION, PROGRAM_OPTION_LABEL)]),
        (["curl", "-u", "bob:pw"], [(2, 4, PROGRAM_OPTION, PROGRAM_OPTION_LABEL)]),
        (
            ["/usr/bin/redis-cli", "-a", "pw", "ping"],
            [(2, 0, PROGRAM_OPTION, PROGRAM_OPTION_LABEL)],
        ),
        (["mysql", "--password", "two words"], [(2, 0, SECRET_OPTION, SECRET_OPTION_LABEL)]),
        (["app", "--password=two words"], [(1, 11, SECRET_OPTION, SECRET_OPTION_LABEL)]),
        (["tool", "--no-auth", "--verbose", "--key", "/etc/k.pem"], []),
        (["ssh", "-p", "22", "host"], []),
        (["mysql", "-u", "root", "-p", "db"], []),
        (["iggy", "--key-file", "/etc/iggy/key.pem"], []),
        (["app", "--password", "[REDACTED:cli-secret]"], []),
        (["curl", "https://u:p@h/x", "-H", "X"], []),  # one argument: the text rules see it
    ],
)
def test_secret_arguments(argv: list[str], found: list) -> None:
    assert secret_arguments(argv) == found


def test_argv_after_redaction_reveals_nothing() -> None:
    argv = ["/usr/bin/app", "--password", "hunter2", "--Auth-Token=abc", "-v", "serve"]
    out = list(argv)
    for index, offset, _, label in secret_arguments(argv):
        out[index] = argv[index][:offset] + replacement(label)
    out = [redact(CMDLINE_RULES, arg) for arg in out]
    assert out == ["/usr/bin/app", "--password", S, f"--Auth-Token={S}", "-v", "serve"]


def test_nul_separated_proc_cmdline() -> None:
    text = "/usr/bin/iggy\0-u\0admin\0-p\0Tr0ub4dor\0--token\0abc123\0stream\0list\0"
    assert redact(CMDLINE_RULES, text) == (
        f"/usr/bin/iggy\0-u\0admin\0-p\0{P}\0--token\0{S}\0stream\0list\0"
    )
    text = "mysql\0-u\0root\0-pS3cret\0orders\0"
    assert redact(CMDLINE_RULES, text) == f"mysql\0-u\0root\0-p{P}\0orders\0"


def test_shell_line_continuations() -> None:
    text = "mysqldump -u root \\\n  -pS3cret orders > o.sql\napp --api-key \\\n  k3y --verbose\n"
    assert redact(CMDLINE_RULES, text) == (
        f"mysqldump -u root \\\n  -p{P} orders > o.sql\napp --api-key \\\n  {S} --verbose\n"
    )


def test_a_command_does_not_leak_into_the_next_line() -> None:
    text = "redis-cli -h cache ping\n-a is a flag\n"
    assert redact(CMDLINE_RULES, text) == text


def test_json_command_records_stay_valid_json() -> None:
    doc = {
        "cmd": 'sh -c "mysql --password=abc -pS3 db"',
        "argv": ["iggy", "--password", "x y"],
        "shell": "redis-cli -a 'pw' ping",
    }
    for text in (json.dumps(doc), json.dumps(doc, indent=2)):
        out = json.loads(redact(CMDLINE_RULES, text))
        assert out["cmd"] == f'sh -c "mysql --password={S} -p{P} db"'
        assert out["shell"] == f"redis-cli -a '{P}' ping"


def test_redacting_twice_changes_nothing_more() -> None:
    text = "app --password hunter2 --token=t mysql -pX curl -u a:b\n"
    once = redact(CMDLINE_RULES, text)
    assert redact(CMDLINE_RULES, once) == once


@pytest.mark.parametrize(
    "line",
    [
        "a://b:" * 11000,
        "x" * 65000 + "=1",
        "-" * 65000 + "password",
        "pass" * 16000,
        "--password " * 6000,
        "--password=" * 6000,
        '-Dpassword="' * 5000,
        "mysql " * 11000,
        "curl -u " * 8000,
        "redis-cli -a " * 5000,
        "--token '" * 7000,
        '\\"' * 32000,
    ],
)
def test_adversarial_lines_cost_linear_time(line: str) -> None:
    for rule in CMDLINE_RULES:
        scanner = rule.scanner()
        started = time.perf_counter()
        scanner.scan(line)
        scanner.scan(line)
        assert time.perf_counter() - started < 0.5, rule.name


def test_a_log_line_ending_in_a_flag_leaves_the_next_line_alone() -> None:
    """A kernel log with a command line ending `--auth-required`: the next log line is
    not its value (only a lone argument or a trailing backslash carries over)."""
    text = (
        "[    0.000000] Kernel command line: init --listen-port 2024 --auth-required\n"
        "[    0.000000] BIOS-provided physical RAM map:\n"
        "agent --api-token\n"
        "[    0.000001] random: crng init done\n"
    )
    assert redact(CMDLINE_RULES, text) == text
    lone = "agent\n--api-token\nabc123def\n"  # `tr '\0' '\n' < /proc/PID/cmdline`
    assert redact(CMDLINE_RULES, lone) == f"agent\n--api-token\n{S}\n"
