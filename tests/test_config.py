"""Config loading: defaults, strictness, and errors that name the key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshot_agent.config import load_config
from snapshot_agent.core.registry import all_checks
from snapshot_agent.errors import UsageError

from .conftest import REPO


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
