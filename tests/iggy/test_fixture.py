"""The synthetic Iggy node, and the data-dir walk measured against what it built."""

from __future__ import annotations

import os
import struct
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from snapshot_agent.node import iggy_data as walk
from snapshot_agent.node.iggy_data import Identity, Walker, walk_data_dir

from .fixture import DEFECTS, Built, Spec, build

GIB = 1024**3
BIG_FILES = 100_000
CHECK_TIMEOUT_S = 30  # iggy.data_dir's timeout: the 100 000-file walk must fit well inside


def walked(built: Built, seconds: float = 20, **kwargs: Any) -> walk.DataDirFacts:
    """The walk of a built fixture's data directory."""
    deadline = time.monotonic() + seconds
    return walk_data_dir(built.data_dir, built.node_data_dir, deadline, **kwargs)


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A 0.8 data directory of exactly 100 000 files, built once for the module."""
    node = tmp_path_factory.mktemp("big")
    return build(node, Spec(streams=2, topics=5, partitions=10, files=BIG_FILES))


# -- the builder ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "first", "entry", "offset_bytes"),
    [("0.5", 1, 16, 8), ("0.8", 0, 16, 8), ("main", 0, 24, 16)],
)
def test_every_layout_builds_what_the_sources_describe(
    tmp_path: Path, layout: str, first: int, entry: int, offset_bytes: int
) -> None:
    built = build(tmp_path, Spec(layout=layout, segments=2, segment_bytes=64 * 1024))
    d = built.data_dir
    part = d / f"streams/{first}/topics/{first}/partitions/{first}"
    assert sorted(p.name for p in part.glob("*.log")) == [
        "00000000000000000000.log",
        "00000000000000001000.log",
    ]
    index = part / "00000000000000000000.index"
    assert index.stat().st_size % entry == 0 and index.stat().st_size > 0
    offset = (part / f"offsets/consumers/{first}").read_bytes()
    assert len(offset) == offset_bytes
    assert struct.unpack("<Q", offset[:8])[0] == 42 + first
    assert (part / f"offsets/groups/{first}").stat().st_size == offset_bytes
    assert (d / "state/log").is_file() and (d / "runtime/current_config.toml").is_file()
    config = tomllib.loads(built.config_path.read_text())
    assert config["system"]["path"] == built.node_data_dir == "/var/lib/iggy/local_data"
    runtime = (d / "runtime/current_config.toml").read_text()
    assert ("encoding_secret" in runtime) == (layout != "main")
    logs = sorted(p.name for p in built.logs_dir.iterdir())
    if layout == "0.5":
        assert logs == ["iggy-server.log.2026-11-25-09", "iggy-server.log.2026-11-25-10"]
        assert config["http"]["address"].startswith("0.0.0.0")
    else:
        assert logs == ["iggy-server.log", "iggy-server.log.1"]
        assert "OpenFDs: 64" in (built.logs_dir / "iggy-server.log").read_text()
    main_files = [d / "metadata/superblock.a", d / "metadata/journal.wal", part / "purge.gen"]
    assert all(p.exists() for p in main_files) == (layout == "main")


def test_gigabyte_segments_are_sparse(tmp_path: Path) -> None:
    built = build(tmp_path, Spec(segments=3, segment_bytes=2 * GIB))
    assert built.bytes > 6 * GIB
    used = sum(p.stat().st_blocks * 512 for p in built.data_dir.rglob("*") if p.is_file())
    assert used < 10 * 1024 * 1024
    facts = walked(built)
    assert facts.bytes == built.bytes and facts.allocated == used
    assert facts.segments.count == 3 and facts.segments.largest == 2 * GIB
    assert facts.segments.quantile_range(0.5) == (2 * GIB, 4 * GIB)


def test_files_parameter_builds_exactly_that_many_files(tmp_path: Path) -> None:
    built = build(tmp_path, Spec(partitions=3, files=1001))
    files = [p for p in built.data_dir.rglob("*") if p.is_file()]
    assert len(files) == built.files == 1001


def test_unknown_layout_or_defect_is_refused() -> None:
    with pytest.raises(ValueError, match="layout"):
        Spec(layout="0.9")
    with pytest.raises(ValueError, match="unknown defects"):
        Spec(defects=("bitrot",))


# -- the walk against the fixture ------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "detected"), [("0.5", "0.5"), ("0.8", "0.6+"), ("main", "main")]
)
def test_walk_matches_the_fixture_on_every_layout(
    tmp_path: Path, layout: str, detected: str
) -> None:
    spec = Spec(
        layout=layout,
        streams=2,
        topics=3,
        partitions=2,
        segments=3,
        segment_bytes=(1024, 300_000, 5_000_000),
    )
    built = build(tmp_path, spec)
    facts = walked(built)
    assert not facts.walk.truncated and facts.counts == {}
    assert (facts.layout, facts.ids_from) == (detected, built.first_id)
    assert facts.index_entry == built.index_entry
    assert (facts.walk.files, facts.walk.dirs, facts.bytes) == (
        built.files,
        built.dirs,
        built.bytes,
    )
    assert (facts.streams, facts.topics, facts.partitions) == (2, 6, 12)
    assert facts.segments.count == built.segments == 36 and facts.index_files == 36
    assert facts.segments.total == sum(built.segment_sizes)
    assert facts.segments.smallest == 1024 and facts.segments.largest == 5_000_000
    for key, want in built.by_topic.items():
        got = facts.by_topic[key]
        assert (got.partitions, got.segments, got.files, got.bytes) == (
            want.partitions,
            want.segments,
            want.files,
            want.bytes,
        ), key
    assert facts.filesystem is not None and facts.filesystem.total > 0


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("layout", ["0.5", "0.8", "main"])
def test_each_defect_is_found_by_the_walk(tmp_path: Path, layout: str, defect: str) -> None:
    built = build(tmp_path, Spec(layout=layout, segments=2, defects=(defect,)))
    facts = walked(built)
    kind = {
        "zero_index": walk.INDEX_EMPTY,
        "truncated_index": walk.INDEX_TRUNCATED,
        "offset_9_bytes": walk.OFFSET_SIZE,
        "offset_short": walk.OFFSET_SHORT,
        "symlink_loop": walk.SYMLINK,
        "fifo": walk.SPECIAL,
    }.get(defect, defect)
    assert facts.counts == {kind: 1}, facts.counts
    assert facts.samples[kind][0].path == built.defects[defect]
    assert facts.walk.files == built.files and facts.bytes == built.bytes


def test_main_accepts_bare_8_byte_offsets_and_0_8_refuses_16(tmp_path: Path) -> None:
    for layout, size, bad in (("main", 8, 0), ("0.8", 16, 1)):
        built = build(tmp_path / layout, Spec(layout=layout))
        offset = next(built.data_dir.rglob("offsets/consumers/*"))
        offset.write_bytes(b"\x01" * size)
        assert walked(built).counts.get(walk.OFFSET_SIZE, 0) == bad, layout


def test_symlink_loop_and_fifo_end_the_walk(tmp_path: Path) -> None:
    built = build(tmp_path, Spec(defects=("symlink_loop", "fifo", "symlink_out")))
    facts = walked(built, seconds=5)  # an opened FIFO or a followed loop would hang
    assert not facts.walk.truncated
    assert facts.samples[walk.SYMLINK][0].detail == "-> ."
    assert facts.samples[walk.SYMLINK_OUT][0].detail == "-> /etc/passwd"
    assert facts.samples[walk.SPECIAL][0].detail == "FIFO"


def test_ownership_and_permissions_against_the_brokers_user(tmp_path: Path) -> None:
    built = build(tmp_path, Spec())
    mine = os.lstat(built.data_dir).st_uid
    other = Identity(mine + 1000, frozenset({4242}), "the broker's user (pid 1)")
    (built.data_dir / "state/tokens").chmod(0o640)  # neither its user nor its group
    facts = walked(built, identity=other)
    assert facts.counts[walk.FOREIGN_OWNER] == built.files + built.dirs
    assert facts.samples[walk.UNREADABLE][0].path == "state/tokens"
    assert walked(built).counts == {}  # judged as the owner: all fine


def test_unlistable_directory_is_noted(tmp_path: Path) -> None:
    built = build(tmp_path, Spec())
    facts = walk_data_dir(tmp_path / "absent", "/absent", time.monotonic() + 5)
    assert facts.counts == {walk.UNLISTED: 1} and facts.walk.entries == 0
    assert walked(built).counts == {}


def test_a_size_that_changes_meanwhile_is_not_damage(tmp_path: Path) -> None:
    built = build(tmp_path, Spec(defects=("truncated_index",)))
    torn = built.data_dir / built.defects["truncated_index"]
    # The broker finishes its write while the walk waits for its second look.
    timer = threading.Timer(walk.CONFIRM_DELAY_S / 3, os.truncate, (torn, 4 * 16))
    timer.start()
    facts = walked(built)
    timer.join()
    assert facts.counts == {} and facts.in_flux == 1


def test_a_hung_filesystem_call_returns_what_was_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build(tmp_path, Spec())
    release = threading.Event()
    real = os.statvfs

    def hung(path: object) -> os.statvfs_result:
        release.wait(10)  # a dead NFS server
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(walk.os, "statvfs", hung)
    start = time.monotonic()
    facts = walk_data_dir(built.data_dir, built.node_data_dir, time.monotonic() + 0.2, grace_s=0.2)
    release.set()
    assert time.monotonic() - start < 2
    assert facts.walk.truncated and facts.walk.hung and "hung mount" in facts.walk.reason


# -- the 100 000-file tree -------------------------------------------------------------


def test_walk_of_100k_files_fits_the_checks_timeout(big_tree: Built) -> None:
    assert big_tree.files == BIG_FILES
    start = time.monotonic()
    facts = walked(big_tree, seconds=CHECK_TIMEOUT_S)
    elapsed = time.monotonic() - start
    assert not facts.walk.truncated and facts.walk.files == BIG_FILES
    assert facts.bytes == big_tree.bytes and facts.segments.count == big_tree.segments
    # Several times faster than needed on 2 cores (about 0.5 s measured).
    assert elapsed < CHECK_TIMEOUT_S / 3, f"{elapsed:.1f} s for {BIG_FILES} files"


def test_walk_cut_by_a_tiny_deadline_says_how_far_it_got(big_tree: Built) -> None:
    facts = walked(big_tree, seconds=0.02)
    w = facts.walk
    assert w.truncated and not w.hung and w.reason == "the time for the walk ran out"
    assert 0 < w.entries < BIG_FILES and w.files < BIG_FILES
    assert facts.counts == {}  # half-listed partitions are not judged for pairing


def test_walk_cut_by_the_entry_limit(big_tree: Built) -> None:
    facts = walked(big_tree, max_entries=5000)
    assert facts.walk.truncated and facts.walk.entries == 5000
    assert "entry limit (5,000)" in facts.walk.reason


def test_walker_memory_does_not_grow_with_the_tree(big_tree: Built) -> None:
    walker = Walker(big_tree.data_dir, big_tree.node_data_dir, time.monotonic() + 30)
    facts = walker.run()
    assert len(facts.by_topic) == 10 and sum(len(v) for v in facts.samples.values()) == 0
    assert not walker.suspects


# -- growth between snapshots ------------------------------------------------------------


def test_growth_needs_an_earlier_snapshot_of_at_least_a_minute() -> None:
    assert not walk.estimate_growth(None, 1000.0, 10, 100).known
    short = walk.estimate_growth([990.0, 5.0], 1000.0, 10, 100)
    assert not short.known and "only 10 s ago" in short.note
    day = walk.estimate_growth([0.0, 1000.0], 86400.0, 3000, 20_000)
    assert day.known and day.bytes_per_day == 2000 and day.days_left == 10
    assert "1.0 days" in day.note
    shrinking = walk.estimate_growth([0.0, 5000.0], 86400.0, 3000, 20_000)
    assert shrinking.bytes_per_day == -2000 and shrinking.days_left is None


def test_previous_record_is_the_oldest_of_the_last_week() -> None:
    now = 10 * 86400.0
    rows = [[0.0, 1.0], [5 * 86400.0, 2.0], [9 * 86400.0, 3.0], [now + 5, 4.0]]
    assert walk.pick_previous(rows, now) == [5 * 86400.0, 2.0]
    assert walk.pick_previous([[0.0, 1.0], [86400.0, 2.0]], now) == [86400.0, 2.0]
    assert walk.pick_previous([[now + 5, 1.0]], now) is None


def test_growth_state_survives_garbage_and_bad_places(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = walk.growth_state_path(str(state))
    path.parent.mkdir()
    for garbage in (b"\x00\xff", b"[1, 2]", b'{"records": {"/d": [[1, "x"], [-1, 2], 7]}}'):
        path.write_bytes(garbage)
        assert walk.load_records(path).get("/d", []) == []
    first = walk.track_growth(str(state), "/d", 100, 1000, 1000.0)
    assert first.recorded and not first.known
    later = walk.track_growth(str(state), "/d", 300, 1000, 1000.0 + 86400)
    assert later.known and later.bytes_per_day == 200 and later.days_left == 5
    absent = walk.track_growth(str(tmp_path / "nowhere"), "/d", 1, 1, 5.0)
    assert not absent.recorded and "does not exist" in absent.note
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "iggy").write_text("a file where the directory should be")
    failed = walk.track_growth(str(blocked), "/d", 1, 1, 5.0)
    assert not failed.recorded and "cannot write" in failed.note
