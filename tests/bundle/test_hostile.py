"""A hostile data directory: links out, loops, FIFOs, sockets, races, names that lie."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from snapshot_agent.bundle.names import escape_name
from snapshot_agent.bundle.source import bundle_entries
from snapshot_agent.bundle.walk import TreeWalk, open_root
from tests.iggy.fixture import KIB, Spec, build

from .helpers import NODE_DIR, Bundled, read_listing, run_bundle

OUTSIDE_SECRET = b"outside-the-data-dir-4d1f0a7e"
PASSWD = Path("/etc/passwd").read_bytes()[:64]


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fixture's defects (a link to /etc/passwd, a loop, a FIFO) and worse."""
    built = build(
        tmp_path / "n", Spec(layout="0.8", defects=("symlink_out", "symlink_loop", "fifo"))
    )
    data = built.data_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.toml").write_bytes(b"key = '" + OUTSIDE_SECRET + b"'\n")
    (data / "streams/escape").symlink_to(outside)  # a directory out of the tree
    (data / "runtime/loop").symlink_to("loop")  # a link to itself
    os.mkfifo(data / "logs/fifo.log")
    monkeypatch.chdir(data / "logs")  # a short relative path: sun_path holds 108 bytes
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("broker.sock")
    sock.listen()
    weird = data / os.fsdecode(b"odd\xff\xfe dir")
    weird.mkdir()
    (weird / "new\nline.toml").write_bytes(b"a = 1\n")
    (weird / "tab\tand\\back\x1b[31m").write_bytes(b"ansi\n")
    (weird / "caf\u00e9 \u202eexe.txt").write_bytes(b"bidi\n")
    for name in ("gone.toml", "grows.log", "shrinks.bin", "turns-fifo.toml", "turns-link.toml"):
        (data / "logs" / name).write_bytes(b"x" * (64 * KIB))
    try:
        yield data
    finally:
        sock.close()
        for fifo in data.rglob("*"):
            if fifo.is_fifo():  # release any reader a bug left blocked in open()
                os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))


def race(data: Path) -> Callable[[bytes], None]:
    """What the walk's hook does to each file between its lstat and its open."""

    def act(rel: bytes) -> None:
        path = data / os.fsdecode(rel)
        name = path.name
        if name == "gone.toml":
            path.unlink()
        elif name == "grows.log":
            with path.open("ab") as fh:
                fh.write(b"y" * (100 * KIB))
        elif name == "shrinks.bin":
            os.truncate(path, 10 * KIB)
        elif name == "turns-fifo.toml":
            path.unlink()
            os.mkfifo(path)
        elif name == "turns-link.toml":
            path.unlink()
            path.symlink_to("/etc/passwd")

    return act


def bundled_in_time(data: Path, out: Path, **kwargs: object) -> Bundled:
    """The bundle, in a thread that must end: a FIFO opened for reading would block it."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["bundled"] = run_bundle(data, out, **kwargs)  # type: ignore[arg-type]
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the bundle blocked (a FIFO opened?)"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["bundled"]  # type: ignore[return-value]


def test_hostile_tree_is_bundled_with_every_skip_explained(hostile: Path, tmp_path: Path) -> None:
    data = hostile
    bundled = bundled_in_time(data, tmp_path / "iggy-data.zip", mode="full", after_scan=race(data))
    members = bundled.data()
    everything = b"".join(members.values())
    assert OUTSIDE_SECRET not in everything and PASSWD not in everything
    assert not any(n.startswith("/") or ".." in n.split("/") for n in bundled.zip.namelist())
    rows, skipped = bundled.listing, bundled.skipped()

    def reason(rel: str) -> str:
        assert skipped[f"{NODE_DIR}/{rel}"], rel
        return rows[rel]["reason"]

    part = "streams/0/topics/0/partitions/0"
    assert rows[f"{part}/symlink_out.0"]["target"] == "/etc/passwd"
    assert rows["streams/escape"]["target"] == str(tmp_path / "outside")
    assert rows["runtime/loop"]["target"] == "loop"
    for rel in (
        f"{part}/symlink_out.0",
        "streams/escape",
        "runtime/loop",
        f"{part}/symlink_loop.1",
    ):
        assert rows[rel]["kind"] == "symlink" and rows[rel]["bundled"] == "no"
        assert "not followed" in reason(rel)
        assert f"data/{rel}" not in bundled.zip.namelist()
    assert skipped[f"{NODE_DIR}/{part}/symlink_out.0"].endswith("(-> /etc/passwd)")
    assert rows[f"{part}/fifo.2"]["kind"] == rows["logs/fifo.log"]["kind"] == "FIFO"
    assert rows["logs/broker.sock"]["kind"] == "socket"
    for rel in (f"{part}/fifo.2", "logs/fifo.log", "logs/broker.sock"):
        assert "not opened" in reason(rel)
    # The races, each seen by the read that followed the scan.
    assert "vanished" in reason("logs/gone.toml")
    assert members["logs/grows.log"] == b"x" * (64 * KIB)  # the size at scan time
    assert rows["logs/grows.log"]["bundled"] == "yes"
    assert "grew while read" in rows["logs/grows.log"]["reason"]
    assert members["logs/shrinks.bin"] == b"x" * (10 * KIB)
    assert rows["logs/shrinks.bin"]["bundled"] == "partial"
    assert "shrank while read" in reason("logs/shrinks.bin")
    assert "replaced by a FIFO" in reason("logs/turns-fifo.toml")
    assert "replaced by a symlink" in reason("logs/turns-link.toml")
    for rel in ("logs/gone.toml", "logs/turns-fifo.toml", "logs/turns-link.toml"):
        assert rel not in members
    # Names: escaped one-to-one, in the members and in the listing alike.
    odd = "odd\\xff\\xfe dir"
    expected = {
        f"{odd}/new\\x0aline.toml": b"a = 1\n",
        f"{odd}/tab\\x09and\\x5cback\\x1b[31m": b"ansi\n",
        f"{odd}/caf\u00e9 \\u202eexe.txt": b"bidi\n",
    }
    for rel, content in expected.items():
        assert members[rel] == content and rows[rel]["bundled"] == "yes"
    assert rows[odd]["kind"] == "dir"
    assert all("\n" not in n and "\t" not in n for n in bundled.zip.namelist())
    assert bundled.source.stats.walk_complete
    # Everything but directories and copied files is a skip with a reason.
    for rel, row in rows.items():
        if row["bundled"] in ("no", "partial"):
            assert row["reason"], rel


def test_a_live_writer_leaves_a_consistent_prefix(tmp_path: Path) -> None:
    built = build(tmp_path / "n", Spec(layout="0.8"))
    log = built.data_dir / "logs/iggy-server.log"
    stop = threading.Event()

    def broker() -> None:
        with log.open("ab", buffering=0) as fh:
            n = 0
            while not stop.is_set():
                fh.write(b"line %d\n" % n)
                n += 1

    writer = threading.Thread(target=broker)
    writer.start()
    try:
        time.sleep(0.05)
        bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip")
    finally:
        stop.set()
        writer.join()
    copied = bundled.data()["logs/iggy-server.log"]
    assert log.read_bytes().startswith(copied)
    assert int(bundled.listing["logs/iggy-server.log"]["size"]) == len(copied)


def test_deadline_stops_the_walk_and_lists_what_was_not_walked(tmp_path: Path) -> None:
    built = build(tmp_path / "n", Spec(layout="0.8", streams=3, topics=2, segments=3))
    seconds = 1.5
    started = time.monotonic()

    def slow(rel: bytes) -> None:  # the first file read takes the whole budget
        time.sleep(max(0.0, started + seconds + 0.05 - time.monotonic()))

    bundled = run_bundle(
        built.data_dir, tmp_path / "iggy-data.zip", mode="full", seconds=seconds, after_scan=slow
    )
    assert time.monotonic() - started < seconds + 5
    stats = bundled.source.stats
    assert not stats.walk_complete and "time for the bundle ran out" in stats.walk_reason
    cut = [r for r, row in bundled.listing.items() if "not walked to its end" in row["reason"]]
    assert "." in cut  # the data directory itself was not walked to its end
    assert all(bundled.listing[r]["kind"] == "dir" for r in cut)
    assert bundled.skipped()[NODE_DIR].startswith("not walked to its end")
    partial = [r for r, row in bundled.listing.items() if "cut at the deadline" in row["reason"]]
    assert len(partial) == 1 and bundled.data()[partial[0]] == b""
    assert json.loads(bundled.zip.read("bundle.json"))["walk"]["complete"] is False


def test_deadline_in_the_segment_pass_lists_the_segments_left(tmp_path: Path) -> None:
    built = build(tmp_path / "n", Spec(layout="0.8", streams=2, topics=2, segments=3))
    seconds = 1.5
    started = time.monotonic()

    def slow(rel: bytes) -> None:  # the first segment read takes the whole budget
        if rel.endswith(b".log") and rel.startswith(b"streams/"):
            time.sleep(max(0.0, started + seconds + 0.05 - time.monotonic()))

    bundled = run_bundle(
        built.data_dir, tmp_path / "iggy-data.zip", mode="full", seconds=seconds, after_scan=slow
    )
    assert bundled.source.stats.walk_complete  # the walk was over before the segments
    segments = [r for r in bundled.listing if r.startswith("streams/") and r.endswith(".log")]
    assert len(segments) == built.segments
    reasons = [bundled.listing[r]["reason"] for r in segments]
    assert sum(r.startswith("cut at the deadline: 0 of") for r in reasons) == 1
    assert reasons.count("not copied: the time for the bundle ran out") == built.segments - 1
    assert not any(bundled.data().get(r) for r in segments)
    assert bundled.source.stats.skipped["late"] == built.segments - 1


def test_entry_cap_ends_the_walk(tmp_path: Path) -> None:
    built = build(tmp_path / "n", Spec(layout="0.8", streams=2, topics=2))
    fd = open_root(built.data_dir)
    try:
        walk = TreeWalk(fd, time.monotonic() + 30, max_entries=10)
        found = list(walk)
    finally:
        os.close(fd)
    assert walk.state.truncated and "entry limit (10)" in walk.state.reason
    assert len([f for f in found if not f.problem]) == 10
    assert found[-1].rel == b"" and "entry limit" in found[-1].problem


def test_many_files_bounded_by_the_deadline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    count = 0
    for p in range(4):
        part = data / f"streams/0/topics/0/partitions/{p}"
        part.mkdir(parents=True)
        for i in range(2_500):
            os.close(os.open(part / f"{i:020d}.index", os.O_CREAT | os.O_WRONLY, 0o644))
            count += 1
    started = time.monotonic()
    bundled = run_bundle(data, tmp_path / "iggy-data.zip", seconds=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed  # the deadline, then the listing and the directory
    stats = bundled.source.stats
    if stats.walk_complete:  # a machine fast enough to walk it all in time
        assert stats.files == count
    else:
        assert stats.files < count and stats.listed < count
        assert any("not walked to its end" in r for _, r in bundled.source.skipped)
    assert len(bundled.source.skipped) < 200  # the manifest gets a bounded list


def _bundle_as_nobody(data: Path, out: Path) -> list[list[str]]:
    """The bundle made by a forked child without root (root reads a mode-000 file)."""
    if os.geteuid() != 0:
        return [list(item) for item in _bundle_to(data, out)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(_bundle_to(data, out)).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        raw = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(raw)


def _bundle_to(data: Path, out: Path) -> list[tuple[str, str]]:
    """Write the bundle of `data` to `out`; the skipped items."""
    source = bundle_entries(data, NODE_DIR, "metadata", 1 << 30, None, time.monotonic() + 30, 6, 1)
    with out.open("wb") as fh:
        for chunk in source.chunks():
            fh.write(chunk)
    return source.skipped


def test_unreadable_files_and_directories_are_recorded(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="bundle-perm-"))  # outside pytest's 0700 tmp dirs
    try:
        top.chmod(0o755)
        built = build(top, Spec(layout="0.8"))
        data = built.data_dir
        (data / "state/log").chmod(0)
        (data / "locked").mkdir()
        (data / "locked/inside.toml").write_text("x = 1\n")
        (data / "locked").chmod(0)
        out = top / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        skipped = dict(map(tuple, _bundle_as_nobody(data, out / "iggy-data.zip")))
        archive = zipfile.ZipFile(out / "iggy-data.zip")
        rows = read_listing(archive.read("listing.tsv"))
        assert rows["state/log"]["bundled"] == "no"
        assert rows["state/log"]["reason"] == "unreadable: Permission denied"
        assert skipped[f"{NODE_DIR}/state/log"] == "unreadable: Permission denied"
        assert rows["locked"]["reason"] == "not walked: Permission denied"
        assert "locked/inside.toml" not in rows
        assert "data/runtime/current_config.toml" in archive.namelist()
    finally:
        for path in top.rglob("*"):
            if not path.is_symlink():
                path.chmod(stat.S_IRWXU)
        shutil.rmtree(top)


def test_escaped_names_are_one_to_one() -> None:
    names = [b"a\nb", b"a\\x0ab", b"\xff", b"\\xff", "\u00ff".encode(), b"\xc2\x85", b"\x85"]
    escaped = [escape_name(n) for n in names]
    assert len(set(escaped)) == len(names)
    assert all(e.isprintable() for e in escaped)


def test_a_partition_swapped_for_a_symlink_before_its_segments_is_refused(
    tmp_path: Path,
) -> None:
    built = build(tmp_path / "n", Spec(layout="0.8", streams=1, topics=2, segments=2))
    outside = tmp_path / "outside"
    outside.mkdir()
    for n in (0, 1000):
        (outside / f"{n:020d}.log").write_bytes(OUTSIDE_SECRET)
    swapped: list[Path] = []

    def swap(rel: bytes) -> None:
        """At the first segment read, replace another partition by a link out of the tree."""
        if swapped or not (rel.startswith(b"streams/") and rel.endswith(b".log")):
            return
        current = (built.data_dir / os.fsdecode(rel)).parent
        other = next(
            p for p in built.data_dir.glob("streams/*/topics/*/partitions/*") if p != current
        )
        other.rename(other.with_name("moved"))
        other.symlink_to(outside)
        swapped.append(other)

    bundled = run_bundle(built.data_dir, tmp_path / "iggy-data.zip", mode="full", after_scan=swap)
    assert swapped
    other = str(swapped[0].relative_to(built.data_dir))
    assert OUTSIDE_SECRET not in b"".join(bundled.data().values())
    for n in (0, 1000):
        row = bundled.listing[f"{other}/{n:020d}.log"]
        assert row["bundled"] == "no"
        assert "replaced by a symlink during the walk; not followed" in row["reason"]


def test_a_missing_data_dir_gives_an_empty_bundle_that_says_why(tmp_path: Path) -> None:
    bundled = run_bundle(tmp_path / "absent", tmp_path / "iggy-data.zip")
    assert bundled.zip.namelist() == ["listing.tsv", "bundle.json"]
    reason = "the data directory cannot be opened: No such file or directory"
    assert bundled.skipped() == {NODE_DIR: reason}
    assert bundled.listing["."]["reason"] == reason
    assert json.loads(bundled.zip.read("bundle.json"))["walk"]["reason"] == reason
