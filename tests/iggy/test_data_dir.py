"""iggy.data_dir on synthetic Iggy nodes: every layout, every defect, space and growth."""

from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from snapshot_agent.checks import iggy_data as check_module
from snapshot_agent.checks.iggy_data import iggy_data_dir, judge_data_dir
from snapshot_agent.config import ChecksConfig, Config, IggyConfig
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Result, Severity, Status
from snapshot_agent.node import iggy_data as walk
from snapshot_agent.node.iggy_config import IggyConfig as BrokerConfig
from snapshot_agent.node.iggy_data import DataDirFacts, Filesystem, Growth
from snapshot_agent.node.iggy_install import IggyInstall
from tests.conftest import fixture_roots, make_context, run_cli

from .fixture import Spec, build
from .procs import fake_broker

GIB = 1024**3


def context(
    tmp_path: Path,
    node: Path,
    *,
    state: Path | None = None,
    thresholds: dict[str, Any] | None = None,
    **iggy: str,
) -> Context:
    """A context on the fixture node, its growth kept in `state` (made if unset)."""
    if state is None:
        state = tmp_path / "state"
        state.mkdir(exist_ok=True)
    config = Config(
        checks=ChecksConfig(roots=fixture_roots(node)),
        iggy=IggyConfig(**iggy),
        state_dir=str(state),
    )
    return make_context(
        tmp_path, config=config, thresholds={**iggy_data_dir.thresholds, **(thresholds or {})}
    )


def run(tmp_path: Path, node: Path, **options: Any) -> Result:
    """iggy.data_dir against the fixture node (`options` as context() takes them)."""
    return iggy_data_dir.run(context(tmp_path, node, **options))


def worst(result: Result) -> list[tuple[Severity, str]]:
    """(severity, first words) of the findings that are not notes."""
    return [(f.severity, f.message) for f in result.findings if f.severity != Severity.INFO]


def test_skipped_without_iggy(tmp_path: Path, node: Path) -> None:
    result = run(tmp_path, node)
    assert result.status == Status.SKIPPED
    assert result.summary.startswith("no Iggy broker found on this node: looked for")
    assert "/etc/iggy/server.toml" in result.summary


def test_skipped_when_the_configured_data_dir_is_missing(tmp_path: Path, node: Path) -> None:
    build(node, Spec())
    result = run(tmp_path, node, data_dir="/srv/none")
    assert result.status == Status.SKIPPED and "/srv/none" in result.summary


@pytest.mark.parametrize(
    ("layout", "words"),
    [("0.5", "layout 0.5 (IDs from 1)"), ("0.8", "layout 0.6+ (IDs from 0)"), ("main", "main")],
)
def test_healthy_data_dir_passes_on_every_layout(
    tmp_path: Path, node: Path, layout: str, words: str
) -> None:
    built = build(node, Spec(layout=layout, streams=2, topics=2, partitions=3, segments=4))
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.findings
    assert result.findings == []
    assert words in result.summary and "2 streams, 4 topics, 12 partitions, 48 segments" in (
        result.summary
    )
    assert "growth unknown" in result.summary
    data = result.data
    assert data["data_dir"] == built.node_data_dir
    assert data["found"]["data_dir_source"].startswith("[system] path of /etc/iggy/server.toml")
    assert data["totals"]["bytes"] == built.bytes and data["totals"]["files"] == built.files
    assert len(data["topics"]) == 4 and data["topics_not_shown"] == 0
    assert sum(r["bytes"] for r in data["streams"]) == sum(t.bytes for t in built.by_topic.values())
    assert data["segments"]["count"] == 48
    assert data["segments"]["buckets"][0] == {"size": "< 1 MiB", "segments": 48}
    assert data["anomalies"] == {} and data["walk"]["truncated"] is False
    assert data["growth"]["recorded"] is True


#: defect -> (status, words in the finding)
DEFECT_VERDICTS = {
    "log_without_index": (Status.WARN, "segment .log file(s) without their .index"),
    "index_without_log": (Status.WARN, ".index file(s) whose .log is gone"),
    "zero_index": (Status.WARN, "zero-length .index"),
    "truncated_index": (Status.WARN, "end inside an entry"),
    "offset_9_bytes": (Status.WARN, "longer than Iggy writes"),
    "offset_short": (Status.FAIL, "shorter than the 8-byte offset"),
    "unreadable": (Status.FAIL, "may not read"),
    "symlink_out": (Status.WARN, "pointing out of the data directory"),
    "fifo": (Status.WARN, "FIFO(s)"),
    "symlink_loop": (Status.PASS, "inside the data directory (not followed)"),
    "timeindex": (Status.PASS, ".timeindex"),
}


@pytest.mark.parametrize("defect", sorted(DEFECT_VERDICTS))
def test_each_defect_gives_its_verdict(tmp_path: Path, node: Path, defect: str) -> None:
    built = build(node, Spec(layout="0.8", segments=2, defects=(defect,)))
    status, words = DEFECT_VERDICTS[defect]
    result = run(tmp_path, node)
    assert result.status == status, result.findings
    (finding,) = [f for f in result.findings if words in f.message]
    assert finding.remediation and built.defects[defect] in finding.message
    assert finding.subject == f"{built.node_data_dir}/{built.defects[defect]}"
    assert result.data["anomaly_examples"][0]["path"] == built.defects[defect]


def test_torn_index_remediation_says_what_iggy_does(tmp_path: Path, node: Path) -> None:
    build(node, Spec(defects=("truncated_index",)))
    (finding,) = run(tmp_path, node).findings
    assert "3 whole 16-byte entries and 7 bytes of a torn one" in finding.message
    assert "rebuilds a missing index" in finding.remediation
    assert "cache_indexes" in finding.remediation


@pytest.mark.parametrize(("layout", "status"), [("0.8", Status.WARN), ("main", Status.PASS)])
def test_orphan_index_is_swept_on_main(
    tmp_path: Path, node: Path, layout: str, status: Status
) -> None:
    build(node, Spec(layout=layout, defects=("index_without_log",)))
    assert run(tmp_path, node).status == status


def test_short_offset_only_warns_on_main(tmp_path: Path, node: Path) -> None:
    build(node, Spec(layout="main", defects=("offset_short",)))
    result = run(tmp_path, node)
    assert result.status == Status.WARN and "reads these as torn" in result.findings[0].remediation


def test_foreign_owner_warns(tmp_path: Path, node: Path) -> None:
    built = build(node, Spec())
    fake_broker(node, "/", uid=54321, gid=54321)
    result = run(tmp_path, node)
    assert result.status == Status.WARN
    (finding,) = worst(result)
    assert finding[1].startswith(f"{built.files + built.dirs} file(s) or directories not owned")
    assert "the broker's user (pid 4242) (uid 54321)" in finding[1]
    assert result.data["walk"]["judged_as"] == "the broker's user (pid 4242)"


def test_lost_found_and_foreign_top_dirs_are_not_judged(tmp_path: Path, node: Path) -> None:
    # A non-root broker whose data dir is its own ext4 volume: mkfs left root's
    # lost+found (0700) at the top, and someone keeps a directory of their own beside.
    built = build(node, Spec())
    as_root = os.geteuid() == 0
    broker_uid = 54321 if as_root else os.getuid()
    if as_root:
        for path in [built.data_dir, *built.data_dir.rglob("*")]:
            os.lchown(path, broker_uid, broker_uid)
    fake_broker(node, "/", uid=broker_uid, gid=broker_uid)
    lost = built.data_dir / "lost+found"
    lost.mkdir(mode=0o700 if as_root else 0o000)  # not root: a mode nobody may list
    mine = built.data_dir / "old-export"
    mine.mkdir(mode=0o700)
    (mine / "dump.tar").write_bytes(b"x")
    result = run(tmp_path, node)
    lost.chmod(0o700)
    assert result.status == Status.PASS, result.findings
    assert result.data["anomalies"] == {}
    assert result.data["walk"]["judged_as"] == "the broker's user (pid 4242)"
    # Still judged inside the broker's own areas.
    if as_root:
        os.lchown(built.data_dir / "state" / "log", 0, 0)
        assert run(tmp_path, node).data["anomalies"] == {"foreign_owner": 1}


def test_non_ascii_digit_names_are_walked(tmp_path: Path, node: Path) -> None:
    built = build(node, Spec())
    odd = built.data_dir / "streams/²/topics/²/partitions/0/offsets/consumers"
    odd.mkdir(parents=True)
    result = run(tmp_path, node)
    assert result.status == Status.PASS, result.findings
    assert "2 streams, 2 topics, 2 partitions" in result.summary
    assert "layout 0.6+ (IDs from 0)" in result.summary
    (odd / "²").write_bytes(bytes(8))  # Iggy parses the name as a number: 0.6-0.8 refuse it
    named = run(tmp_path, node)
    assert named.status == Status.FAIL
    assert named.data["anomalies"] == {"offset_name": 1}


def test_walk_cut_short_says_how_far_it_got(tmp_path: Path, node: Path) -> None:
    build(node, Spec(streams=3, topics=3, segments=5))
    result = run(tmp_path, node, thresholds={"max_entries": 40})
    assert result.status == Status.PASS and result.summary.startswith("partial walk:")
    (note,) = result.findings
    assert note.severity == Severity.INFO
    assert "stopped after 40 entries" in note.message and "entry limit (40)" in note.message
    assert result.data["walk"]["truncated"] is True
    assert "not measured: the walk was cut short" in result.data["growth"]["note"]


def test_symlink_loop_is_noted_and_not_followed(tmp_path: Path, node: Path) -> None:
    build(node, Spec(defects=("symlink_loop",)))
    result = run(tmp_path, node)
    assert result.status == Status.PASS
    (note,) = result.findings
    assert note.severity == Severity.INFO and "-> ." in note.message


def remember(state: Path, key: str, rows: list[list[float]]) -> Path:
    """An earlier snapshot's records in the state directory; the state file."""
    path = walk.growth_state_path(str(state))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "records": {key: rows}}))
    return path


def key_of(node_path: str, real: Path) -> str:
    """The growth key of a data directory (node path, and the real one's device and inode)."""
    st = real.stat()
    return walk.growth_key(node_path, (st.st_dev, st.st_ino))


def test_growth_from_an_earlier_snapshot_gives_days_left(tmp_path: Path, node: Path) -> None:
    built = build(node, Spec(segments=3))
    state = tmp_path / "state"
    key = key_of(built.node_data_dir, built.data_dir)
    path = remember(state, key, [[time.time() - 2 * 86400, built.bytes - 2000]])
    result = run(tmp_path, node, state=state)
    assert result.status == Status.PASS
    growth = result.data["growth"]
    assert growth["known"] and abs(growth["bytes_per_day"] - 1000) < 2
    assert growth["days_left"] > 1000 and "measured over 2.0 days" in growth["note"]
    assert "/day" in result.summary
    rows = json.loads(path.read_text())["records"][key]
    assert len(rows) == 2 and rows[-1][1] == built.bytes


def test_growth_of_a_containerised_broker_survives_its_restart(tmp_path: Path, node: Path) -> None:
    # The official image: the broker runs in /app, its data in /app/local_data, reached
    # through /proc/<pid>/root; the last snapshot saw it as pid 4242, it runs as 5151 now.
    built = build(node, Spec(segments=3))
    (node / built.node_config_path.lstrip("/")).unlink()
    fake_broker(node, "/app", pid=5151)
    inside = node / "proc/5151/root/app/local_data"
    inside.parent.mkdir(parents=True)
    built.data_dir.rename(inside)
    state = tmp_path / "state"
    before = key_of("/proc/4242/root/app/local_data", inside)
    remember(state, before, [[time.time() - 2 * 86400, built.bytes - 2000]])
    result = run(tmp_path, node, state=state)
    assert result.data["data_dir"] == "/proc/5151/root/app/local_data"
    assert result.data["growth"]["known"], result.data["growth"]
    assert before.startswith("/app/local_data (dev ")


def test_growth_key_is_the_path_the_broker_sees_and_the_directory() -> None:
    assert walk.growth_key("/proc/4242/root/app/d", (8, 9)) == "/app/d (dev 8, inode 9)"
    assert walk.growth_key("/proc/1/root", (8, 9)) == "/ (dev 8, inode 9)"
    assert walk.growth_key("/proc/1/rootfs/d", None) == "/proc/1/rootfs/d"
    assert walk.growth_key("/var/lib/iggy", (8, 9)) != walk.growth_key("/var/lib/iggy", (8, 10))


def test_first_snapshot_remembers_the_total_and_a_read_only_state_never_fails(
    tmp_path: Path, node: Path
) -> None:
    build(node, Spec())
    first = run(tmp_path, node)
    assert (
        first.data["growth"]["recorded"]
        and "until the next snapshot" in first.data["growth"]["note"]
    )
    again = run(tmp_path, node)
    assert "only" in again.data["growth"]["note"] and not again.data["growth"]["known"]
    nowhere = run(tmp_path, node, state=tmp_path / "absent")
    assert nowhere.status == Status.PASS and not nowhere.data["growth"]["recorded"]


# -- the bands, on synthetic facts -------------------------------------------------------


def facts_with(free: int, total: int = 1000 * GIB) -> DataDirFacts:
    """Walk facts of an empty data dir on a filesystem with `free` bytes left."""
    facts = DataDirFacts("/var/lib/iggy/local_data")
    facts.filesystem = Filesystem(total, free)
    return facts


UNKNOWN = Growth(False, "growth unknown until the next snapshot (no earlier total)")


def test_free_space_is_data_not_a_verdict() -> None:
    # disk.usage grades free space (checks/disk.py FREE_PCT): one fact, one failing check.
    assert not [b for b in iggy_data_dir.bands if "free" in b.name]
    nearly_full = judge_data_dir(facts_with(20 * GIB), UNKNOWN, iggy_data_dir.thresholds)
    assert nearly_full.status == Status.PASS and nearly_full.findings == []
    assert "20.0 GiB free (2.0%)" in nearly_full.summary
    assert nearly_full.data["filesystem"]["free_pct"] == 2.0


def test_hung_walk_warns_with_what_it_saw() -> None:
    facts = facts_with(500 * GIB)
    facts.walk = walk.Walk(
        entries=1200,
        elapsed_s=28.0,
        truncated=True,
        hung=True,
        reason="a filesystem call had not returned after 28.0 s (a hung mount?)",
    )
    result = judge_data_dir(facts, UNKNOWN, iggy_data_dir.thresholds)
    assert result.status == Status.WARN and result.summary.startswith(
        "the walk stopped after 1,200"
    )
    assert "findmnt -T /var/lib/iggy/local_data" in result.findings[0].remediation


def broker_without_process(data_dir: str, state: str) -> IggyInstall:
    """What discovery returns for a configured data directory in `state`."""
    return IggyInstall(
        broker=None,
        env={},
        config=BrokerConfig(None),
        config_source="",
        data_dir=data_dir,
        data_dir_source="config iggy.data_dir",
        logs_dir="",
        logs_dir_source="",
        unit="iggy-server",
        data_dir_state=state,
    )


def discovered_as(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> tuple[str, Context, Callable[[str], Path]]:
    """A data dir that discovery found in `state`: its node path, a context, ctx.path."""
    built = build(node, Spec())
    install = broker_without_process(built.node_data_dir, state)
    monkeypatch.setattr(check_module, "discover", lambda ctx: install)
    ctx = context(tmp_path, node)
    return built.node_data_dir, ctx, ctx.path


def test_hung_data_dir_from_discovery_warns_without_touching_it(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ctx, real_path = discovered_as(tmp_path, node, monkeypatch, "hung")
    mapped: list[str] = []
    monkeypatch.setattr(ctx, "path", lambda p: mapped.append(p) or real_path(p))
    result = iggy_data_dir.run(ctx)
    assert result.status == Status.WARN, result.summary
    assert "its filesystem does not answer" in result.summary
    assert "findmnt -T /var/lib/iggy/local_data" in result.findings[0].remediation
    assert mapped == [] and "totals" not in result.data and result.data["walk"]["hung"]


class StuckDir:
    """A directory whose stat blocks like one on a dead NFS mount, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def is_dir(self) -> bool:
        """Block until released (or 5 s), then say it is there."""
        self.release.wait(5)
        return True


def test_hung_stat_before_the_walk_warns(
    tmp_path: Path, node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, ctx, real_path = discovered_as(tmp_path, node, monkeypatch, "exists")
    stuck = StuckDir()
    monkeypatch.setattr(ctx, "path", lambda p: stuck if p == data_dir else real_path(p))
    start = time.monotonic()
    try:
        result = iggy_data_dir.run(ctx)
    finally:
        stuck.release.set()
    assert time.monotonic() - start < check_module.PROBE_S + 1.5
    assert result.status == Status.WARN, result.summary
    assert "its filesystem does not answer (a stat of it hung for 2 s)" in result.summary


def test_days_left_band_warns_and_fails() -> None:
    thresholds = iggy_data_dir.thresholds

    def days(n: float) -> Result:
        growth = Growth(
            True, "measured over 1.0 days since an earlier snapshot", 100 * GIB / n, 86400.0, 0.0, n
        )
        return judge_data_dir(facts_with(100 * GIB), growth, thresholds)

    assert days(30).status == Status.PASS
    assert days(14).status == Status.PASS  # a minimum: 14 days itself is fine
    warned = days(10)
    assert warned.status == Status.WARN
    assert "full in 10.0 days (below 14; disk.usage judges the free space itself)" in (
        warned.findings[0].message
    )
    assert "cleaner_enabled" in warned.findings[0].remediation
    assert days(2).status == Status.FAIL


# -- end to end ---------------------------------------------------------------------------


def checks_of(stdout: str) -> list[dict[str, Any]]:
    """The check records of the archive a `run --json` printed."""
    with zipfile.ZipFile(json.loads(stdout)["path"]) as zf:
        return json.loads(zf.read("report.json"))["checks"]


def test_cli_on_a_node_without_iggy_skips_saying_what_it_looked_for(tmp_path: Path) -> None:
    proc = run_cli("run", "-o", tmp_path, "--only", "iggy.data_dir", "--json", "-q")
    assert proc.returncode in (0, 1), proc.stderr
    (record,) = checks_of(proc.stdout)
    if record["status"] == "skipped":  # a machine that runs Iggy judges it instead
        assert record["summary"].startswith("no Iggy broker found on this node: looked for")


def test_cli_judges_a_fixture_node(tmp_path: Path, node: Path) -> None:
    build(node, Spec(layout="main", streams=2, defects=("truncated_index",)))
    roots = fixture_roots(node)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\nchecks:\n  roots:\n"
        + "".join(f"    {k}: {v}\n" for k, v in msgspec.structs.asdict(roots).items())
    )
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("run", "-c", config, "-o", out, "--only", "iggy.data_dir", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    (record,) = checks_of(proc.stdout)
    assert record["status"] == "warn" and "layout main" not in record["summary"]
    assert "whole 24-byte entries" in record["summary"]
    assert record["data"]["layout"] == "main"


def test_writers_of_the_growth_record_at_once_never_trip_on_each_other(tmp_path: Path) -> None:
    """Each writer has its own temporary: none finds its file renamed away by another."""
    path = Path(walk.growth_state_path(str(tmp_path)))
    gate = threading.Barrier(8, timeout=30)
    problems: list[str] = []

    def save(n: int) -> None:
        gate.wait()
        for round_ in range(20):
            problems.append(walk.save_record(path, f"/var/lib/iggy-{n}", 1e9 + round_, n))

    threads = [threading.Thread(target=save, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(problems) == 160 and set(problems) == {""}
    assert walk.load_records(path)  # whole JSON, whoever wrote last
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left
