"""A whole Iggy node through the real CLI: every iggy.* check at once, the report's section.

The node is a fixture tree (data dir of each layout, server config, logs, a broker in
/proc) with a fake Iggy HTTP API on 127.0.0.1; the agent reaches it all through its own
config (checks.roots, iggy.http_url and credentials from a file), as an SRE would set it.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli

from .fake_server import PASSWORD, USERNAME, FakeIggy, serve
from .fixture import Spec, build, log_lines
from .procs import fake_broker

IGGY_CHECKS = (
    "iggy.config",
    "iggy.health",
    "iggy.data_dir",
    "iggy.process",
    "iggy.logs",
    "iggy.native_snapshot",
)


def agent_config(tmp_path: Path, node: Path, url: str) -> Path:
    """The agent's YAML: node roots into the fixture, the fake API, credentials in a file.

    The password file is a node path like every path in the config (/etc/... maps into
    the fixture's etc root).
    """
    secret = node / "etc/snapshot-agent/iggy-password"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    roots = {name: str(node / name) for name in ("proc", "sys", "etc", "run")}
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "checks:\n"
        f"  roots: {{root: {node}, proc: {roots['proc']}, sys: {roots['sys']}, "
        f"etc: {roots['etc']}, run: {roots['run']}, var_log: {node / 'var/log'}}}\n"
        "iggy:\n"
        f"  http_url: {url}\n"
        f"  username: {USERNAME}\n"
        "  password_file: /etc/snapshot-agent/iggy-password\n"
        "  native_snapshot: true\n"
    )
    return config


def snapshot(
    tmp_path: Path, layout: str, fake: FakeIggy
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Build the node, run `snapshot-agent run --only iggy`; the report and every member."""
    node = tmp_path / "node"
    built = build(node, Spec(layout=layout, streams=2, topics=2, partitions=2, segments=2))
    logs = Path(built.data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "iggy-server.log").write_text("".join(log_lines(50)))
    fake_broker(node, "/var/lib/iggy")
    with serve(fake) as url:
        config = agent_config(tmp_path, node, url)
        proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "iggy", "--json", "-q")
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    with zipfile.ZipFile(json.loads(proc.stdout)["path"]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    return json.loads(members["report.json"]), members


@pytest.mark.parametrize(("layout", "version"), [("0.5", "0.5"), ("0.8", "0.8"), ("main", "main")])
def test_every_iggy_check_on_a_whole_node(tmp_path: Path, layout: str, version: str) -> None:
    report, members = snapshot(tmp_path, layout, FakeIggy(version))
    checks = {c["id"]: c for c in report["checks"]}
    assert sorted(checks) == sorted(IGGY_CHECKS)
    for check_id, check in checks.items():
        assert check["status"] not in ("error", "timeout", "skipped"), (check_id, check["summary"])
    assert checks["iggy.health"]["status"] == "pass", checks["iggy.health"]["summary"]
    assert checks["iggy.data_dir"]["status"] == "pass", checks["iggy.data_dir"]["summary"]
    assert checks["iggy.logs"]["status"] == "pass", checks["iggy.logs"]["summary"]
    totals = checks["iggy.data_dir"]["data"]["totals"]
    assert (totals["streams"], totals["topics"], totals["partitions"]) == (2, 4, 8)
    # The broker's own account of itself leads the report.
    html = members["report.html"].decode()
    start = html.index('<section class="iggy"')
    section = html[start : html.index("</section>", start)]
    assert checks["iggy.health"]["data"]["version"] in section
    assert "1,234,567" in section  # messages, from /stats
    # The password the agent logged in with is nowhere in the archive.
    assert not [name for name, data in members.items() if PASSWORD.encode() in data]


def test_a_broker_that_is_down_fails_health_and_the_rest_still_judge(tmp_path: Path) -> None:
    node = tmp_path / "node"
    build(node, Spec(layout="0.8"))
    fake_broker(node, "/var/lib/iggy")
    config = agent_config(tmp_path, node, "http://127.0.0.1:9")
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "iggy", "--json", "-q")
    assert proc.returncode == 1, proc.stderr  # a failed check
    with zipfile.ZipFile(json.loads(proc.stdout)["path"]) as zf:
        checks = {c["id"]: c for c in json.loads(zf.read("report.json"))["checks"]}
    assert checks["iggy.health"]["status"] == "fail"
    assert checks["iggy.data_dir"]["status"] == "pass"
    # The fixture's 0.8 data dir holds runtime/current_config.toml with the JWT secrets,
    # readable by all (mode 644), as a default install leaves it.
    assert checks["iggy.config"]["status"] == "fail"
    assert "current_config.toml holds the broker's secrets" in checks["iggy.config"]["summary"]


def test_the_data_bundle_of_a_whole_node_holds_no_secret(tmp_path: Path) -> None:
    """iggy-data.zip through the real CLI: redacted runtime config, withheld hashes, verify."""
    _, members = snapshot(tmp_path, "0.8", FakeIggy("0.8"))
    inner = zipfile.ZipFile(io.BytesIO(members["iggy-data.zip"]))
    names = inner.namelist()
    assert "listing.tsv" in names and "bundle.json" in names
    assert "data/state/log" not in names and "data/state/tokens" not in names
    runtime = inner.read("data/runtime/current_config.toml").decode()
    assert "encoding_secret" in runtime and "[REDACTED:" in runtime
    manifest = json.loads(members["manifest.json"])
    withheld = [s for s in manifest["skipped"] if s["item"].endswith("state/log")]
    assert withheld and "withheld" in withheld[0]["reason"]
    everything = b"".join(inner.read(n) for n in names)
    assert PASSWORD.encode() not in everything
    archive = next(tmp_path.glob("snapshot-*.zip"))
    verify = run_cli("verify", archive)
    assert verify.returncode == 0, verify.stdout
