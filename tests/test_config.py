"""Config loading: defaults, strictness, and errors that name the key path and line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapshot_agent.config import DEFAULT_CONFIG_PATH, load_config
from snapshot_agent.core.registry import all_checks
from snapshot_agent.errors import UsageError

from .conftest import REPO, run_cli


def load(tmp_path: Path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, explicit=True)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(UsageError) as info:
        loaded = load(tmp_path, text)
        all_checks(loaded)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_config_means_defaults(tmp_path: Path) -> None:
    loaded = load_config(tmp_path / "absent.yaml", explicit=False)
    assert loaded.config.checks.deadline_s == 60
    assert loaded.path is None


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "").config.checks.timeout_s == 10


def test_the_shipped_example_config_is_valid() -> None:
    loaded = load_config(REPO / "packaging/config.example.yaml", explicit=True)
    assert loaded.config.node.node_id == 610809900976570889
    assert loaded.config.checks.commands[0].command == ["cat", "/proc/mdstat"]
    assert loaded.config.storage.s3 is not None and loaded.config.storage.s3.bucket == "diag"
    all_checks(loaded)


def test_unknown_key_names_path_and_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "checks:\n  deadline_s: 5\n  deadlin_s: 6\n")
    assert "line 3" in msg and "checks.deadlin_s" in msg and "unknown key" in msg


def test_wrong_type_names_path_and_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "node:\n  name: n1\nchecks:\n  deadline_s: soon\n")
    assert "line 4" in msg and "checks.deadline_s" in msg and "'soon'" in msg


def test_wrong_type_in_a_list_item(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path,
        "checks:\n  commands:\n    - {id: custom.a, title: A, command: [true]}\n"
        "    - id: custom.b\n      title: B\n      command: ls\n",
    )
    assert "checks.commands[0].command[0]" in msg and "line 3" in msg


def test_negative_timeout_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "checks:\n  timeout_s: -1\n")
    assert "checks.timeout_s" in msg and "> 0" in msg and "(got -1)" in msg


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "checks:\n  deadline_s: 5\n  - oops\n")
    assert "not valid YAML" in msg and "line 3" in msg


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_config(tmp_path / "nope.yaml", explicit=True)
    with pytest.raises(UsageError, match="not a regular file"):
        load_config(tmp_path, explicit=True)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml", explicit=True)


def test_thresholds_are_checked_against_declarations(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "checks:\n  thresholds:\n    cpu.lod: {warn_per_core: 1}\n")
    assert "checks.thresholds.cpu.lod" in msg and "no such check" in msg and "line 3" in msg
    msg = error_of(tmp_path, "checks:\n  thresholds:\n    cpu.load:\n      warn: 1\n")
    assert "unknown threshold" in msg and "warn_per_core" in msg and "line 4" in msg
    msg = error_of(tmp_path, "checks:\n  thresholds:\n    cpu.load: {warn_per_core: high}\n")
    assert "should be float" in msg


def test_thresholds_override_defaults(tmp_path: Path) -> None:
    from snapshot_agent.core.registry import thresholds_for

    loaded = load(tmp_path, "checks:\n  thresholds:\n    cpu.load: {warn_per_core: 1.5}\n")
    [cpu] = [c for c in all_checks(loaded) if c.id == "cpu.load"]
    assert thresholds_for(cpu, loaded) == {"warn_per_core": 1.5, "fail_per_core": 2.0}


@pytest.mark.parametrize(
    ("thresholds", "key"),
    [
        ("cpu.load: {warn_per_core: 3}", "warn_per_core"),  # above the default fail (2.0)
        ("cpu.load: {warn_per_core: 4, fail_per_core: 3}", "warn_per_core"),
        ("cpu.load: {fail_per_core: 0.5}", "fail_per_core"),  # below the default warn (1.0)
    ],
)
def test_band_the_wrong_way_round_is_refused(tmp_path: Path, thresholds: str, key: str) -> None:
    msg = error_of(tmp_path, f"checks:\n  thresholds:\n    {thresholds}\n")
    assert f"checks.thresholds.cpu.load.{key}" in msg and "line 3" in msg
    assert "warn must not be above fail" in msg


def test_custom_check_cannot_shadow_a_builtin(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path, "checks:\n  commands:\n    - {id: cpu.load, title: X, command: [ls]}\n"
    )
    assert "checks.commands[0].id" in msg and "already a built-in" in msg


# -- through the real CLI: hostile and mistaken configs (issue 9, item 10) ------------


def cli_error(tmp_path: Path, text: str, *args: str) -> str:
    """`snapshot-agent checks -c FILE` on `text`: exit 2, one line, no traceback."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    proc = run_cli("checks", "-c", path, *args, timeout=60)
    assert proc.returncode == 2, proc.stdout[-500:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("snapshot-agent: config ")
    assert proc.stdout == ""
    return proc.stderr.strip()


@pytest.mark.parametrize("depth", [17, 1000, 100_000])
def test_deep_nesting_is_a_one_line_error(tmp_path: Path, depth: int) -> None:
    msg = cli_error(tmp_path, "checks:\n  commands: " + "[" * depth + "]" * depth + "\n")
    assert "line 2" in msg and "nested more than 16 levels deep" in msg
    if depth < 1000:  # beyond, libyaml stops first, before a key path is known
        assert ": checks.commands[0][0][0][0]" in msg


@pytest.mark.parametrize(
    ("text", "key", "said"),
    [
        ("checks:\n  deadline_s: .inf\n", "checks.deadline_s", "<= 3600.0 (got inf)"),
        ("checks:\n  deadline_s: -.inf\n", "checks.deadline_s", "> 0.0 (got -inf)"),
        ("checks:\n  deadline_s: .nan\n", "checks.deadline_s", "(got nan)"),
        ("checks:\n  timeout_s: 1.0e+9\n", "checks.timeout_s", "<= 3600.0"),
        (
            "checks:\n  commands:\n    - {id: custom.a, title: A, command: [ls], "
            "timeout_s: 1.0e+12}\n",
            "checks.commands[0].timeout_s",
            "<= 3600.0",
        ),
        ("checks:\n  cloud: {timeout_s: 86400}\n", "checks.cloud.timeout_s", "<= 60.0"),
        ("checks:\n  artifact_cap_bytes: 1099511627776\n", "checks.artifact_cap_bytes", "<= 1073"),
        ("archive: {iggy_max_bytes: 1125899906842624}\n", "archive.iggy_max_bytes", "<= 1099"),
        ("retention: {max_age_days: 1000000}\n", "retention.max_age_days", "<= 3650"),
        ("node: {node_id: 1180591620717411303424}\n", "node.node_id", "<= 9223372036854775807"),
        (
            "checks:\n  thresholds:\n    cpu.load: {warn_per_core: .inf}\n",
            "checks.thresholds.cpu.load.warn_per_core",
            "finite number (got inf)",
        ),
    ],
)
def test_durations_sizes_and_numbers_are_bounded(
    tmp_path: Path, text: str, key: str, said: str
) -> None:
    msg = cli_error(tmp_path, text)
    assert f": {key}: " in msg and said in msg
    assert f"line {text.count(chr(10))}" in msg  # the value's own line (the last one)


def laughs() -> str:
    """Ten anchors, each ten aliases of the one before: 10**9 names once expanded."""
    lines = ["checks:", "  network:", "    dns_names: &a0 [a, b, c, d, e, f, g, h, i, j]"]
    lines.append("  thresholds:")
    for i in range(1, 10):
        lines.append(f"    t{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "key", "said"),
    [
        (laughs(), "checks.thresholds.t3", "more than 10000 values once aliases"),
        # 490 KB of aliases: 122 000 names for network.dns to resolve.
        (
            "checks:\n  network:\n    dns_names: [&s iggy.example.com" + ", *s" * 122_000 + "]\n",
            "checks.network.dns_names",
            "more than 10000 values",
        ),
        (
            "checks:\n  logs:\n    files: [&s " + "x" * 100_000 + ", " + "*s, " * 20 + "*s]\n",
            "checks.logs.files",
            "more than 1 MiB of text once aliases",
        ),
        (
            "checks:\n  network:\n    dns_names: &a [*a]\n",
            "checks.network.dns_names",
            "refers to a value that contains it",
        ),
        (
            "checks:\n  network:\n    dns_names: ["
            + ", ".join(f"n{i}.example.com" for i in range(65))
            + "]\n",
            "checks.network.dns_names",
            "expected list of length <= 64",
        ),
    ],
    ids=["billion-laughs", "490KB-of-aliases", "text-bomb", "self-reference", "list-cap"],
)
def test_aliases_and_lists_cannot_blow_up(tmp_path: Path, text: str, key: str, said: str) -> None:
    msg = cli_error(tmp_path, text)
    assert f": {key}: " in msg and said in msg


@pytest.mark.parametrize(
    ("thresholds", "key", "said"),
    [
        ("cpu.load: [1]", "checks.thresholds.cpu.load", "expected mapping, got list"),
        ("cpu.load: {warn_per_core: [1]}", "checks.thresholds.cpu.load.warn_per_core", "list"),
        ("cpu.load: {warn_per_core: {a: 1}}", "checks.thresholds.cpu.load.warn_per_core", "map"),
        ("3: {}", "checks.thresholds.3", "a key must be text, not int"),
    ],
)
def test_threshold_type_errors_name_the_key(
    tmp_path: Path, thresholds: str, key: str, said: str
) -> None:
    msg = cli_error(tmp_path, f"checks:\n  thresholds:\n    {thresholds}\n")
    assert f"line 3: {key}: " in msg and said in msg
    assert "]" not in msg.split(": ")[1]  # the key path, not `checks.thresholds.].]`


def test_duplicate_custom_id_names_both_lines(tmp_path: Path) -> None:
    msg = cli_error(
        tmp_path,
        "checks:\n  commands:\n    - {id: custom.raid, title: A, command: [ls]}\n"
        "    - {id: custom.ok, title: B, command: [ls]}\n"
        "    - {id: custom.raid, title: C, command: [ls]}\n",
    )
    assert "line 5: checks.commands[2].id: 'custom.raid'" in msg
    assert "declared twice in checks.commands (lines 3 and 5)" in msg
    assert "built-in" not in msg


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    msg = cli_error(tmp_path, "checks:\n  deadline_s: 5\n  timeout_s: 3\n  deadline_s: 500\n")
    assert "line 4: checks.deadline_s: given twice (lines 2 and 4)" in msg


@pytest.mark.parametrize(
    ("command", "key", "said"),
    [
        ('{id: "custom.x\\n", title: X, command: [ls]}', "commands[0].id", "a check id like"),
        ("{id: Custom.x, title: X, command: [ls]}", "commands[0].id", "a check id like"),
        ('{id: custom.x, title: X, command: [""]}', "commands[0].command[0]", "length >= 1"),
        ('{id: custom.x, title: X, command: [ls, "a\\0b"]}', "commands[0].command[1]", "NUL"),
        ("{id: custom.x, title: X, command: []}", "commands[0].command", "length >= 1"),
        ('{id: custom.x, title: "X\\e[2J", command: [ls]}', "commands[0].title", "one line"),
    ],
)
def test_custom_command_fields_are_validated(
    tmp_path: Path, command: str, key: str, said: str
) -> None:
    msg = cli_error(tmp_path, f"checks:\n  commands:\n    - {command}\n")
    assert f"line 3: checks.{key}: " in msg and said in msg


def test_non_text_keys_are_named(tmp_path: Path) -> None:
    msg = cli_error(tmp_path, "checks:\n  on: 1\n")
    assert "checks.True: a key must be text, not bool (YAML reads on/off" in msg


def test_config_variable_mistyped_or_empty(tmp_path: Path) -> None:
    typo = tmp_path / "confg.yaml"
    proc = run_cli("checks", env={"SNAPSHOT_AGENT_CONFIG": str(typo)})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"config {typo} (from $SNAPSHOT_AGENT_CONFIG): no such file" in proc.stderr
    assert "fix $SNAPSHOT_AGENT_CONFIG or unset it" in proc.stderr

    # Set: the file is used (its custom check is listed), like --config.
    good = tmp_path / "good.yaml"
    good.write_text("checks:\n  commands:\n    - {id: custom.raid, title: R, command: [ls]}\n")
    listed = run_cli("checks", "--json", env={"SNAPSHOT_AGENT_CONFIG": str(good)})
    assert "custom.raid" in {c["id"] for c in json.loads(listed.stdout)}
    bad = run_cli("checks", env={"SNAPSHOT_AGENT_CONFIG": str(tmp_path)})
    assert bad.returncode == 2 and "(from $SNAPSHOT_AGENT_CONFIG): a directory" in bad.stderr

    # Empty is unset: the same as no variable at all (whatever the default file holds).
    unset = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_AGENT_CONFIG"}
    plain = subprocess.run(
        [sys.executable, "-m", "snapshot_agent", "checks", "--json"],
        capture_output=True,
        text=True,
        env=unset,
        timeout=60,
    )
    empty = run_cli("checks", "--json", env={"SNAPSHOT_AGENT_CONFIG": ""})
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    if not DEFAULT_CONFIG_PATH.exists():
        assert empty.returncode == 0, empty.stderr


def test_config_file_kinds_are_one_line_errors(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes: reading it would hang
    huge = tmp_path / "huge.yaml"
    huge.write_text("# padding\n" * 110_000)
    (tmp_path / "link.yaml").symlink_to(tmp_path / "gone.yaml")
    (tmp_path / "file").write_text("")
    cases = {
        tmp_path: "a directory, not a regular file",
        fifo: "not a regular file",
        huge: "larger than 1 MiB",
        tmp_path / "link.yaml": "no such file; check the --config path",
        tmp_path / "file" / "x.yaml": "a part of the path is not a directory",
    }
    for path, said in cases.items():
        proc = run_cli("checks", "-c", path, timeout=30)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (path, proc.stderr)
        assert f"config {path}: {said}" in proc.stderr
    devnull = run_cli("checks", "-c", os.devnull)  # explicitly no config: the defaults
    assert devnull.returncode == 0, devnull.stderr


def test_unreadable_config_is_a_one_line_error(tmp_path: Path) -> None:
    secret = tmp_path / "config.yaml"
    secret.write_text("checks: {deadline_s: 5}\n")
    secret.chmod(0o000)
    argv = [sys.executable, "-m", "snapshot_agent", "checks", "-c", str(secret)]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv (util-linux) is not installed")
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"config {secret}: permission denied" in proc.stderr


@pytest.mark.parametrize("gid", [-1, 4294967295, 99999999999])
def test_archive_group_outside_the_gid_range_is_refused(tmp_path: Path, gid: int) -> None:
    msg = error_of(tmp_path, f"archive:\n  group: {gid}\n")
    assert "archive.group" in msg and "line 2" in msg


@pytest.mark.parametrize("title", ["a\\u2028b", "x\\x9by", "\\u202eevil"])
def test_titles_with_control_characters_are_refused(tmp_path: Path, title: str) -> None:
    config = f'checks:\n  commands:\n    - {{id: custom.x, title: "{title}", command: [ls]}}\n'
    msg = error_of(tmp_path, config)
    assert "checks.commands[0].title" in msg and "line 3" in msg
