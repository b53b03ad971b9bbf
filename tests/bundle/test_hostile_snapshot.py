"""A whole snapshot of a node whose Iggy data directory is hostile, through the real CLI:
it completes, verifies, leaks nothing from outside the tree, and explains every skip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.conftest import run_cli

from .test_hostile import OUTSIDE_SECRET, PASSWD, hostile  # noqa: F401

PART = "streams/0/topics/0/partitions/0"


def test_a_hostile_data_dir_gives_a_complete_snapshot(hostile: Path, tmp_path: Path) -> None:  # noqa: F811
    data = hostile
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"iggy: {{data_dir: '{data}'}}\narchive: {{iggy_mode: full}}\n"
        f"state_dir: {tmp_path / 'no-state'}\n"
    )
    out = tmp_path / "out"
    run = run_cli(
        "run", "-c", config, "-o", out, "--only", "iggy.data_dir", "--include-iggy", "--json", "-q",
        timeout=120,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr  # a verdict, not a failed snapshot
    archive = Path(json.loads(run.stdout)["path"])
    verify = run_cli("verify", archive)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with zipfile.ZipFile(archive) as outer:
        manifest = json.loads(outer.read("manifest.json"))
        inner = zipfile.ZipFile(outer.open("iggy-data.zip"))
        stored = b"".join(inner.read(n) for n in inner.namelist())
    assert OUTSIDE_SECRET not in stored and PASSWD not in stored
    assert not any(n.startswith("/") or ".." in n.split("/") for n in inner.namelist())
    skipped = {s["item"]: s["reason"] for s in manifest["skipped"]}

    def reason(rel: str) -> str:
        return skipped[f"iggy-data.zip: {data}/{rel}"]

    assert "not followed" in reason(f"{PART}/symlink_out.0") and "/etc/passwd" in reason(
        f"{PART}/symlink_out.0"
    )
    assert "not followed" in reason("streams/escape") and "not followed" in reason("runtime/loop")
    for rel in (f"{PART}/fifo.2", "logs/fifo.log", "logs/broker.sock"):
        assert "not opened" in reason(rel), rel
    odd = "odd\\xff\\xfe dir"
    assert f"data/{odd}/new\\x0aline.toml" in inner.namelist()
    assert list(out.iterdir()) == [archive]  # no working files left beside it
