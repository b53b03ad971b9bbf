"""The Iggy data directory: how big, how it grows, and which of its files are damaged.

The walk (snapshot_agent.node.iggy_data) is bounded by the check's time and an entry
count and never follows a symlink; the judge is a set of small named rules over what it
found. What Iggy does with each kind of damage is read from its sources (cited by rule).
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from snapshot_agent.core.check import check
from snapshot_agent.core.context import Context
from snapshot_agent.core.grading import Band
from snapshot_agent.core.printable import printable
from snapshot_agent.core.results import MAX_ROWS, Finding, Result, Severity
from snapshot_agent.core.units import mib_or_gib
from snapshot_agent.node import iggy_data as walk
from snapshot_agent.node.iggy_data import DataDirFacts, DirNames, Growth, Identity
from snapshot_agent.node.iggy_install import IggyInstall, discover
from snapshot_agent.node.mounts import probe_all, probe_budget

#: Days until the data directory's filesystem is full at the growth measured since an
#: earlier snapshot. Free space itself is data here: disk.usage grades it (checks/disk.py
#: FREE_PCT and the rest), and one filesystem fact fails one check, not two.
DAYS_LEFT = Band.minimum("days_left_below", warn=14.0, fail=3.0)

WALK_MARGIN_S = 3.0  # of the check's time kept for judging and reporting
PROBE_S = 2.0  # a data directory that does not answer a stat in this time is on a dead mount
EXAMPLES = 3  # paths named in one finding

#: Coarse segment size buckets for the report: (label, highest power-of-two bucket).
SEGMENT_BUCKETS = (
    ("< 1 MiB", 20),
    ("1-16 MiB", 24),
    ("16-256 MiB", 28),
    ("256 MiB-1 GiB", 30),
    (">= 1 GiB", 64),
)


@dataclass(frozen=True)
class Rule:
    """What one kind of anomaly means on this layout, and what to do about it."""

    severity: Severity
    what: str  # '{n} ... ' message after the count
    remedy: str


# -- what each anomaly means -----------------------------------------------------------

_RESTART_REBUILDS = (
    "Up to 0.8 the broker rebuilds a missing index from the .log when it starts, if "
    "`[system.segment] cache_indexes` is `all` or `open_segment` (the shipped default; "
    "server-0.8.0:core/server/src/bootstrap.rs load_segments, 'Index at path ... does not "
    "exist, rebuilding it'); main walks the .log to recover the segment's bounds "
    "(HEAD:core/server/src/segment_recovery.rs)."
)


def _index_rules(layout: str) -> dict[str, Rule]:
    """Segment and index damage: what the broker does with it, per layout."""
    orphan_index = (
        Rule(
            Severity.INFO,
            "orphan .index file(s) without a .log",
            "The main branch leaves these when a partition transfer is interrupted and "
            "deletes them at its next start (HEAD:core/server/src/segment_recovery.rs, "
            "the boot sweep): nothing to do.",
        )
        if layout == walk.LAYOUT_MAIN
        else Rule(
            Severity.WARN,
            ".index file(s) whose .log is gone",
            "The broker loads segments by their .log files and never looks at these "
            "again: the messages of that segment are gone. If someone deleted the .log "
            "by hand, delete the .index too; otherwise look for disk errors "
            "(`journalctl -k | grep -i 'I/O error'`) and restore the segment from a backup.",
        )
    )
    return {
        walk.LOG_WITHOUT_INDEX: Rule(
            Severity.WARN,
            "segment .log file(s) without their .index",
            "Reads of these segments cannot seek by offset until the index is back. "
            + _RESTART_REBUILDS
            + " Restart the broker in a quiet moment and look for the rebuild in its log; "
            'with `cache_indexes = "none"` up to 0.8 the segment loads as empty instead.',
        ),
        walk.INDEX_WITHOUT_LOG: orphan_index,
        walk.INDEX_EMPTY: Rule(
            Severity.WARN,
            "zero-length .index file(s) beside a .log that holds messages",
            "The broker finds no entry for these segments: up to 0.8 it counts them as "
            "empty (their messages cannot be polled), main walks the .log instead. Stop "
            "the broker, copy the partition directory aside, delete the empty .index and "
            "start it again. " + _RESTART_REBUILDS,
        ),
        walk.INDEX_TRUNCATED: Rule(
            Severity.WARN,
            ".index file(s) that end inside an entry (a torn write, usually a crash or "
            "power loss with `enforce_fsync = false`)",
            "The broker reads whole entries only, so the messages after the last whole "
            "entry may be unreachable. Stop the broker, copy the partition directory "
            "aside, delete the torn .index and start it again. " + _RESTART_REBUILDS,
        ),
        walk.TIMEINDEX: Rule(
            Severity.INFO,
            "0.4-era .timeindex file(s)",
            "0.5 rebuilds the segment's index when it sees one "
            "(server-0.5.0:core/server/src/streaming/partitions/storage.rs); once the "
            "broker has started on 0.5 or later they can be deleted.",
        ),
        walk.STAGING: Rule(
            Severity.INFO,
            "*.staging scratch file(s) of an interrupted partition transfer",
            "The broker deletes them at its next start "
            "(HEAD:core/server/src/segment_recovery.rs): nothing to do.",
        ),
        walk.UNPAIRED: Rule(
            Severity.INFO,
            "partition(s) with more segments than the walk pairs .log with .index",
            "Segments this small and this many slow every start; raise `[system.segment] "
            "size` (default 1 GiB) for new segments.",
        ),
    }


def _offset_rules(layout: str) -> dict[str, Rule]:
    """Consumer and consumer group offset files."""
    main = layout == walk.LAYOUT_MAIN
    return {
        walk.OFFSET_SHORT: Rule(
            Severity.WARN if main else Severity.FAIL,
            "consumer offset file(s) shorter than the 8-byte offset",
            (
                "The main branch reads these as torn and loses the stored offset. "
                if main
                else "Up to 0.8 the broker reads exactly 8 bytes and cannot load the "
                "partition at its next start (server-0.8.0:core/server/src/streaming/"
                "partitions/storage.rs load_consumer_offsets). "
            )
            + "If you know the consumer's position, stop the broker and write it back as "
            "an 8-byte little-endian number (`printf` the bytes, or delete the file so the "
            "consumer starts over from its configured policy), then start it.",
        ),
        walk.OFFSET_SIZE: Rule(
            Severity.WARN,
            "consumer offset file(s) longer than Iggy writes",
            "The broker reads only the first bytes; something else wrote these. Find "
            "what (a restore, a copy tool) and check the consumers' positions after the "
            "next restart.",
        ),
        walk.OFFSET_NAME: Rule(
            Severity.WARN if layout == walk.LAYOUT_05 else Severity.FAIL,
            "file(s) in an offsets directory whose name is not a consumer id",
            "0.6-0.8 stop at start with 'Invalid consumer ID file with name' "
            "(server-0.8.0:core/server/src/streaming/partitions/storage.rs); 0.5 logs an "
            "error and skips them. Move them out of the data directory.",
        ),
    }


def _tree_rules(facts: DataDirFacts) -> dict[str, Rule]:
    """Ownership, permissions, symlinks and files Iggy never makes."""
    ident = facts.identity
    who = ident.source if ident else "the broker's user"
    uid = ident.uid if ident else "?"
    return {
        walk.UNREADABLE: Rule(
            Severity.FAIL,
            f"file(s) or directories {who} may not read",
            "The broker fails to load a partition it cannot read (at its next start, or "
            f"when a reader reaches it). `chown -R {uid} {facts.root}` and "
            f"`chmod -R u+rwX {facts.root}`, then restart the broker.",
        ),
        walk.FOREIGN_OWNER: Rule(
            Severity.WARN,
            f"file(s) or directories not owned by {who} (uid {uid})",
            "The broker may be unable to rewrite or delete them (offsets, expired "
            "segments): usually a restore or a command run as another user. "
            f"`chown -R {uid} {facts.root}` while the broker is stopped.",
        ),
        walk.SYMLINK_OUT: Rule(
            Severity.WARN,
            "symlink(s) pointing out of the data directory",
            "The broker follows them but this walk does not: their data is not counted, "
            "and the growth of the filesystem they point to is not measured here. Keep "
            "the data directory on one filesystem, or point `[system] path` at the volume "
            "the data really lives on.",
        ),
        walk.SYMLINK: Rule(
            Severity.INFO,
            "symlink(s) inside the data directory (not followed)",
            "Iggy makes no symlinks; whatever made these, the walk did not follow them.",
        ),
        walk.SPECIAL: Rule(
            Severity.WARN,
            "FIFO(s), socket(s) or device(s) in the data directory",
            "Iggy never makes these, and a backup or `cat` that opens a FIFO blocks "
            "forever. Find what created them (`ls -l`, `fuser`) and move them out.",
        ),
        walk.UNLISTED: Rule(
            Severity.INFO,
            "director(ies) the agent could not list (not counted)",
            "Run snapshot-agent as root so it can read the whole data directory.",
        ),
        walk.TOO_DEEP: Rule(
            Severity.INFO,
            "director(ies) nested deeper than Iggy ever nests (not walked)",
            "Iggy's deepest path is eight levels down; something else keeps files here. "
            "Move it out of the data directory.",
        ),
    }


def rules_for(facts: DataDirFacts) -> dict[str, Rule]:
    """Every anomaly kind's rule for this data directory."""
    return {**_index_rules(facts.layout), **_offset_rules(facts.layout), **_tree_rules(facts)}


# -- judging -----------------------------------------------------------------------------


def _examples(facts: DataDirFacts, kind: str) -> str:
    """'a/b.index (12 bytes ...), a/c.index (+3 more)'."""
    kept = facts.samples.get(kind, [])
    shown = [
        printable(a.path) + (f" ({printable(a.detail)})" if a.detail else "")
        for a in kept[:EXAMPLES]
    ]
    more = facts.counts.get(kind, 0) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def anomaly_findings(facts: DataDirFacts) -> list[Finding]:
    """One finding per kind of damage, with examples and what Iggy does about it."""
    findings = []
    for kind, rule in rules_for(facts).items():
        count = facts.counts.get(kind, 0)
        if not count:
            continue
        first = facts.samples[kind][0].path
        findings.append(
            Finding(
                rule.severity,
                f"{count} {rule.what}: {_examples(facts, kind)}",
                rule.remedy,
                posixpath.join(facts.root, printable(first)),
            )
        )
    return findings


def walk_finding(facts: DataDirFacts) -> Finding | None:
    """How far a walk that was cut short got: WARN when the filesystem hung, else INFO."""
    w = facts.walk
    if not w.truncated:
        return None
    severity = Severity.WARN if w.hung else Severity.INFO
    if w.hung:
        remedy = (
            "The filesystem of the data directory does not answer: check the mount "
            f"(`findmnt -T {facts.root}`, `dmesg`) and the disk; the broker blocks on it too."
        )
    elif "entry limit" in w.reason:
        remedy = (
            "Totals and damage counts cover only the part walked. Raise `max_entries` under "
            "`checks.thresholds` for `iggy.data_dir` if the check's time allows it."
        )
    else:
        remedy = (
            "Totals and damage counts cover only the part walked: the check has 30 s. So "
            "many files also slow the broker's start; larger segments (`[system.segment] "
            "size`, default 1 GiB) mean fewer files."
        )
    return Finding(
        severity,
        f"the walk stopped after {w.entries:,} entries in {w.elapsed_s:.1f} s ({w.reason}); "
        "the figures are partial",
        remedy,
        facts.root,
    )


def _space_remedy() -> str:
    """How to make room for a broker's data."""
    return (
        "Grow the volume, or let Iggy delete old data: set `[system.topic] max_size` and "
        "`message_expiry` (defaults for new topics; `iggy topic update` for existing "
        "ones) and turn on the cleaner (`[data_maintenance.messages] cleaner_enabled = "
        "true`, off by default in 0.8). Never delete segment files by hand while the "
        "broker runs."
    )


def days_left_finding(
    facts: DataDirFacts, growth: Growth, thresholds: dict[str, Any]
) -> Finding | None:
    """WARN or FAIL when the growth measured since an earlier snapshot fills the disk soon."""
    days = growth.days_left
    severity = DAYS_LEFT.grade(days, thresholds)
    if days is None or severity is None or growth.bytes_per_day is None:
        return None
    return Finding(
        severity,
        f"the data directory grows {mib_or_gib(growth.bytes_per_day)}/day "
        f"({growth.note}): its filesystem is full in {days:.1f} days "
        f"(below {DAYS_LEFT.limit(severity, thresholds):g}; disk.usage judges the free "
        "space itself)",
        _space_remedy(),
        facts.root,
    )


def judge_data_dir(facts: DataDirFacts, growth: Growth, thresholds: dict[str, Any]) -> Result:
    """Growth and damage, as findings; free space and the rest as data for the report."""
    rules: list[Callable[[], Finding | list[Finding] | None]] = [
        lambda: walk_finding(facts),
        lambda: days_left_finding(facts, growth, thresholds),
        lambda: anomaly_findings(facts),
    ]
    findings: list[Finding] = []
    for rule in rules:
        found = rule()
        if isinstance(found, list):
            findings += found
        elif found is not None:
            findings.append(found)
    if facts.in_flux:
        findings.append(
            Finding(
                Severity.INFO,
                f"{facts.in_flux} file(s) changed size while they were looked at (the broker "
                "was writing them); not counted as damage",
            )
        )
    return Result.from_findings(findings, ok=summary(facts, growth), data=data_of(facts, growth))


def summary(facts: DataDirFacts, growth: Growth) -> str:
    """'12.3 GiB in 3 streams, ... ; layout 0.6+ ; 45.0% free; +1.2 GiB/day'."""
    partial = "partial walk: " if facts.walk.truncated else ""
    parts = [
        f"{partial}{mib_or_gib(facts.bytes)} in {facts.streams} streams, {facts.topics} "
        f"topics, {facts.partitions} partitions, {facts.segments.count} segments",
        f"layout {_layout_words(facts)}",
    ]
    if facts.filesystem is not None:
        parts.append(f"{mib_or_gib(facts.filesystem.free)} free ({facts.filesystem.free_pct:.1f}%)")
    if growth.known and growth.bytes_per_day is not None:
        parts.append(
            f"{'+' if growth.bytes_per_day >= 0 else '-'}"
            f"{mib_or_gib(abs(growth.bytes_per_day))}/day"
        )
    else:
        parts.append("growth unknown")
    return "; ".join(parts)


def _layout_words(facts: DataDirFacts) -> str:
    """'0.6+ (IDs from 0)', 'main', 'unknown (no streams yet)'."""
    if facts.layout == walk.LAYOUT_UNKNOWN:
        return "unknown (no streams to tell by)"
    if facts.ids_from is None:
        return facts.layout
    return f"{facts.layout} (IDs from {facts.ids_from})"


# -- data for the report --------------------------------------------------------------


def data_of(facts: DataDirFacts, growth: Growth) -> dict[str, Any]:
    """Totals, per-topic rows, the segment distribution, damage, layout and walk stats."""
    return {
        "data_dir": facts.root,
        "layout": facts.layout,
        "ids_from": facts.ids_from,
        "index_entry_bytes": facts.index_entry,
        "totals": {
            "bytes": facts.bytes,
            "allocated_bytes": facts.allocated,
            "files": facts.walk.files,
            "dirs": facts.walk.dirs,
            "streams": facts.streams,
            "topics": facts.topics,
            "partitions": facts.partitions,
            "segments": facts.segments.count,
            "index_files": facts.index_files,
        },
        "areas": [
            {"area": printable(name), "files": t.files, "bytes": t.bytes}
            for name, t in sorted(facts.areas.items(), key=lambda kv: -kv[1].bytes)[:MAX_ROWS]
        ],
        **topic_rows(facts),
        "segments": segment_distribution(facts),
        "anomalies": dict(sorted(facts.counts.items())),
        "anomaly_examples": anomaly_rows(facts),
        "filesystem": _filesystem(facts),
        "growth": _growth(growth),
        "walk": _walk(facts),
    }


def topic_rows(facts: DataDirFacts) -> dict[str, Any]:
    """Per stream/topic rows, largest first, at most MAX_ROWS; per stream sums."""
    streams: dict[str, list[int]] = {}
    for (stream, _), t in facts.by_topic.items():
        row = streams.setdefault(stream, [0, 0, 0, 0])
        row[0] += 1
        row[1] += t.partitions
        row[2] += t.segments
        row[3] += t.bytes
    ordered = sorted(facts.by_topic.items(), key=lambda kv: (-kv[1].bytes, kv[0]))
    return {
        "streams": [
            {
                "stream": printable(s),
                "topics": v[0],
                "partitions": v[1],
                "segments": v[2],
                "bytes": v[3],
            }
            for s, v in sorted(streams.items(), key=lambda kv: -kv[1][3])[:MAX_ROWS]
        ],
        "topics": [
            {
                "stream": printable(stream),
                "topic": printable(topic),
                "partitions": t.partitions,
                "segments": t.segments,
                "bytes": t.bytes,
                "allocated_bytes": t.allocated,
                "size": mib_or_gib(t.bytes),
            }
            for (stream, topic), t in ordered[:MAX_ROWS]
        ],
        "topics_not_shown": max(0, len(ordered) - MAX_ROWS) + facts.topics_folded,
    }


def segment_distribution(facts: DataDirFacts) -> dict[str, Any]:
    """Segment sizes: smallest, median and 90th percentile (as ranges), largest, buckets."""
    h = facts.segments
    buckets = []
    low = 0
    for label, high in SEGMENT_BUCKETS:
        buckets.append({"size": label, "segments": sum(h.buckets[low : high + 1])})
        low = high + 1
    return {
        "count": h.count,
        "bytes": h.total,
        "smallest": h.smallest,
        "largest": h.largest if h.count else None,
        "median_between": h.quantile_range(0.5),
        "p90_between": h.quantile_range(0.9),
        "buckets": buckets,
    }


def anomaly_rows(facts: DataDirFacts) -> list[dict[str, str]]:
    """The example files of each kind of damage (bounded by MAX_SAMPLES per kind)."""
    rows = [
        {"kind": a.kind, "path": printable(a.path), "detail": printable(a.detail)}
        for kept in facts.samples.values()
        for a in kept
    ]
    return rows[:MAX_ROWS]


def _filesystem(facts: DataDirFacts) -> dict[str, Any] | None:
    """Free space where the data lives."""
    fs = facts.filesystem
    if fs is None:
        return {"problem": facts.filesystem_problem} if facts.filesystem_problem else None
    return {"total_bytes": fs.total, "free_bytes": fs.free, "free_pct": round(fs.free_pct, 2)}


def _growth(growth: Growth) -> dict[str, Any]:
    """The growth rate and where it comes from."""
    return {
        "known": growth.known,
        "note": growth.note,
        "bytes_per_day": round(growth.bytes_per_day) if growth.bytes_per_day is not None else None,
        "window_s": round(growth.window_s) if growth.window_s is not None else None,
        "since": growth.since,
        "days_left": round(growth.days_left, 1) if growth.days_left is not None else None,
        "recorded": growth.recorded,
    }


def _walk(facts: DataDirFacts) -> dict[str, Any]:
    """How far the walk got and how fast."""
    w = facts.walk
    return {
        "entries": w.entries,
        "elapsed_s": w.elapsed_s,
        "entries_per_s": round(w.entries / w.elapsed_s) if w.elapsed_s else None,
        "truncated": w.truncated,
        "reason": w.reason,
        "hung": w.hung,
        "in_flux": facts.in_flux,
        "unconfirmed": facts.unconfirmed,
        "judged_as": facts.identity.source if facts.identity else None,
    }


# -- reading -----------------------------------------------------------------------------


def dir_names(install: IggyInstall) -> DirNames:
    """`[system.stream|topic|partition] path` as plain names (Iggy's defaults otherwise)."""
    default = DirNames()

    def name(key: str, fallback: str) -> str:
        value = install.setting(key)
        return value if isinstance(value, str) and value and "/" not in value else fallback

    return DirNames(
        name("system.stream.path", default.streams),
        name("system.topic.path", default.topics),
        name("system.partition.path", default.partitions),
        name("system.runtime.path", default.runtime),
        name("system.logging.path", default.logs),
        name("system.backup.path", default.backup),
    )


def broker_identity(install: IggyInstall) -> Identity | None:
    """The broker's uid and groups, when it runs and /proc says who it is."""
    b = install.broker
    if b is None or b.uid is None:
        return None
    return Identity(b.uid, frozenset(b.gids), f"the broker's user (pid {b.pid})")


def growth_of(ctx: Context, facts: DataDirFacts) -> Growth:
    """Growth since an earlier snapshot; this total remembered when the walk was whole."""
    if facts.walk.truncated:
        return Growth(False, "growth not measured: the walk was cut short, so the total is partial")
    free = facts.filesystem.free if facts.filesystem else None
    key = walk.growth_key(facts.root, facts.dev_ino)
    return walk.track_growth(ctx.config.state_dir, key, facts.bytes, free, time.time())


def hung_result(install: IggyInstall, waited: str) -> Result:
    """WARN: the data directory's filesystem does not answer; nothing under it was read."""
    where = install.data_dir
    finding = Finding(
        Severity.WARN,
        f"the data directory {where} ({install.data_dir_source}): its filesystem does not "
        f"answer ({waited}); nothing was walked",
        "The broker blocks on it too. Check the mount (`findmnt -T "
        f"{where}`, `dmesg | tail`) and the disk or network server behind it; a dead NFS "
        "or FUSE mount needs `umount -l` and a remount.",
        where,
    )
    data = {"data_dir": where, "walk": {"entries": 0, "hung": True}, "found": _found(install)}
    return Result.from_findings([finding], ok="", data=data)


def reach_data_dir(ctx: Context, install: IggyInstall) -> Result | None:
    """A skip or a WARN when the data directory is not there to walk; None when it is.

    Discovery's "hung" is honoured without touching the path; otherwise the one look
    before the walk runs under a timeout (node/mounts.probe_all).
    """
    if install.data_dir_state == "hung":
        return hung_result(install, "found so by the discovery of the broker")
    root = ctx.path(install.data_dir)
    probe = probe_all({"dir": root.is_dir}, probe_budget(ctx, PROBE_S))["dir"]
    if not probe.done:
        return hung_result(install, f"a stat of it hung for {PROBE_S:g} s")
    if probe.error is not None or not probe.value:
        return Result.skipped(
            f"data directory {install.data_dir} ({install.data_dir_source}) does not exist "
            "on this node"
        )
    return None


def _found(install: IggyInstall) -> dict[str, Any]:
    """How the data directory and the config were found."""
    return {
        "data_dir_source": install.data_dir_source,
        "config_path": str(install.config.path) if install.config.path else None,
    }


@check(
    id="iggy.data_dir",
    category="iggy",
    title="Iggy data directory",
    description=(
        "Size per stream and topic, segments, free space (as data: disk.usage judges it) "
        "and days left at the current growth, and damaged files: .log without .index, "
        "torn indexes, bad offset files, ownership, permissions, symlinks and FIFOs."
    ),
    timeout_s=30,
    bands=(DAYS_LEFT,),
    thresholds={"max_entries": walk.MAX_ENTRIES},
)
def iggy_data_dir(ctx: Context) -> Result:
    """Walk the broker's data directory (bounded, symlinks not followed) and judge it.

    Verdicts:
    - pass: a healthy 0.5 data dir (IDs from 1) [test_healthy_data_dir_passes_on_every_layout]
    - pass: a healthy 0.8 data dir (IDs from 0) and a main one (metadata/, 24-byte sparse
      index, 16-byte offsets) [test_healthy_data_dir_passes_on_every_layout]
    - pass: growth known from an earlier snapshot, months left
      [test_growth_from_an_earlier_snapshot_gives_days_left]
    - pass: a walk cut by the entry limit or the deadline says how far it got (a note)
      [test_walk_cut_short_says_how_far_it_got]
    - pass: a symlink loop inside the data dir (noted, not followed)
      [test_symlink_loop_is_noted_and_not_followed]
    - pass: a non-root broker on its own volume, root's lost+found (0700) at the top and a
      stranger's directory beside its own: only what the broker uses is judged
      [test_lost_found_and_foreign_top_dirs_are_not_judged]
    - pass: stream and topic directories named "²" (not ASCII digits) are walked, an
      offset file so named is noted [test_non_ascii_digit_names_are_walked]
    - pass: 2 % free is data and in the summary, not a verdict (disk.usage judges free
      space) [test_free_space_is_data_not_a_verdict]
    - pass: a containerised broker restarted under a new pid keeps its growth record
      [test_growth_of_a_containerised_broker_survives_its_restart]
    - skipped: no broker, config or data dir on the node [test_skipped_without_iggy]
    - warn: a .log without .index, an orphan .index, an empty or torn index, a 9-byte
      offset file [test_each_defect_gives_its_verdict]
    - warn: a FIFO or a symlink out of the tree [test_each_defect_gives_its_verdict]
    - warn: files not owned by the broker's user [test_foreign_owner_warns]
    - warn: a filesystem call that does not return (a hung mount): what was seen so far
      [test_hung_walk_warns_with_what_it_saw]
    - warn: discovery found the data directory's filesystem hung: not touched again
      [test_hung_data_dir_from_discovery_warns_without_touching_it]
    - warn: the stat before the walk hangs [test_hung_stat_before_the_walk_warns]
    - warn: the filesystem full in 10 days at the measured growth
      [test_days_left_band_warns_and_fails]
    - fail: a 5-byte offset file 0.5-0.8 cannot load, a file the broker may not read
      [test_each_defect_gives_its_verdict]
    - fail: the filesystem full in 2 days [test_days_left_band_warns_and_fails]

    The walk gets the check's time less a margin; files whose size is caught mid-write
    are looked at again before they count.
    """
    install = discover(ctx)
    if not install.found:
        return Result.skipped(install.skip_reason())
    if not install.data_dir:
        return Result.skipped(
            "the Iggy broker's data directory is unknown: " + install.skip_reason()
        )
    unreachable = reach_data_dir(ctx, install)
    if unreachable is not None:
        return unreachable
    root = ctx.path(install.data_dir)
    deadline = time.monotonic() + max(0.5, ctx.remaining() - WALK_MARGIN_S)
    facts = walk.walk_data_dir(
        root,
        install.data_dir,
        deadline,
        names=dir_names(install),
        identity=broker_identity(install),
        max_entries=int(ctx.thresholds.get("max_entries", walk.MAX_ENTRIES)),
    )
    if facts.walk.entries == 0 and facts.counts.get(walk.UNLISTED):
        return Result.skipped(
            f"cannot list the data directory {install.data_dir}: "
            f"{facts.samples[walk.UNLISTED][0].detail}; run snapshot-agent as root"
        )
    result = judge_data_dir(facts, growth_of(ctx, facts), ctx.thresholds)
    result.data["found"] = _found(install)
    return result
