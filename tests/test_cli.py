"""The real CLI end to end, as a subprocess: archives, exit codes, bad input, hangs, signals."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import msgspec
import psutil
import pytest

from .conftest import REPO, fixture_roots, run_cli, runs, wait_for_descendant, write_tree

ARCHIVE_RE = re.compile(r"snapshot-\d{8}-\d{6}(-\d+)?\.zip$")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def read_member(archive: Path, name: str) -> dict:
    with zipfile.ZipFile(archive) as zf:
        return json.loads(zf.read(name))


def test_run_with_no_config_writes_a_verifiable_archive(tmp_path: Path) -> None:
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    archive = Path(tmp_path, proc.stdout.strip())
    assert ARCHIVE_RE.search(archive.name) and archive.is_file()
    assert archive.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]  # no spool, no partial

    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    assert {"report.json", "report.html", "manifest.json"} <= names
    assert "raw/sysctl.all/sysctl.txt" in names

    report = read_member(archive, "report.json")
    assert report["schema_version"] == 1
    assert set(report["snapshot"]) >= {"name", "created_at", "completed_at", "node", "options"}
    assert report["snapshot"]["name"] == archive.stem
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", report["snapshot"]["created_at"])
    ids = {c["id"] for c in report["checks"]}
    assert {"system.info", "cpu.load", "sysctl.all"} <= ids
    for c in report["checks"]:
        assert set(c) >= {
            "id",
            "category",
            "title",
            "status",
            "summary",
            "duration_ms",
            "findings",
            "data",
        }
        assert c["status"] != "error", c
    assert sum(report["summary"].values()) == len(report["checks"])

    manifest = read_member(archive, "manifest.json")
    listed = {m["path"] for m in manifest["members"]}
    assert listed == names - {"manifest.json"}
    assert manifest["agent_version"] and manifest["node"]["hostname"]
    assert {c["id"] for c in manifest["checks"]} == ids
    assert any(s["item"] == "iggy-data.zip" for s in manifest["skipped"])

    verify = run_cli("verify", archive)
    assert verify.returncode == 0 and verify.stdout.startswith("OK:"), verify.stdout

    html = zipfile.ZipFile(archive).read("report.html").decode()
    for c in report["checks"]:
        assert c["id"] in html
    assert "<style>" in html and "<link" not in html and "<script src" not in html


def test_json_output_and_only(tmp_path: Path) -> None:
    proc = run_cli("run", "--output", tmp_path, "--only", "cpu.load,system.info", "--json", "-q")
    assert proc.returncode in (0, 1), proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"path", "name", "status", "summary"}
    assert out["status"] == "completed"
    assert proc.stderr == ""
    report = read_member(Path(out["path"]), "report.json")
    assert [c["id"] for c in report["checks"]] == ["cpu.load", "system.info"]
    assert report["snapshot"]["options"]["only"] == ["cpu.load", "system.info"]


def test_skip_and_glob(tmp_path: Path) -> None:
    proc = run_cli("run", "-o", tmp_path, "--only", "cpu", "--skip", "cpu.[fpu]*", "--json", "-q")
    out = json.loads(proc.stdout)
    report = read_member(Path(out["path"]), "report.json")
    assert [c["id"] for c in report["checks"]] == ["cpu.load"]


def test_hanging_command_times_out_and_snapshot_finishes_on_time(tmp_path: Path) -> None:
    # A duration no other process on the machine has: the leftover check below can only
    # ever see this test's own command.
    hang = ["sleep", f"600.{secrets.randbelow(10**9):09d}"]
    config = write_config(
        tmp_path,
        f"""
checks:
  deadline_s: 20
  commands:
    - {{id: custom.hang, title: Hangs forever, command: {json.dumps(hang)}, timeout_s: 2}}
    - {{id: custom.ok, title: Works, command: [echo, hello], timeout_s: 5}}
""",
    )
    out_dir = tmp_path / "out"
    start = time.monotonic()
    proc = run_cli("run", "-c", config, "-o", out_dir, "--json")
    elapsed = time.monotonic() - start
    assert elapsed < 25
    # 0, or 1 when a live check fails on a busy test machine: the verdict is not the point
    assert proc.returncode in (0, 1), proc.stderr
    report = read_member(Path(json.loads(proc.stdout)["path"]), "report.json")
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["custom.hang"]["status"] == "timeout"
    assert json.loads(proc.stdout)["timed_out"] == ["custom.hang"]
    assert json.loads(proc.stdout)["errors"] == []
    assert checks["custom.hang"]["duration_ms"] < 6000
    assert checks["custom.ok"]["status"] == "pass"
    assert "timeout" in proc.stderr and "custom.hang" in proc.stderr  # progress + summary
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == hang]
    assert not leftovers


def test_failing_command_exits_1_with_output_kept(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
checks:
  commands:
    - id: custom.raid
      title: RAID status
      command: [sh, -c, "echo md0 degraded; exit 3"]
""",
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "custom.raid")
    assert proc.returncode == 1
    archive = Path(proc.stdout.strip())
    report = read_member(archive, "report.json")
    [check] = report["checks"]
    assert check["status"] == "fail" and "exited 3" in check["summary"]
    with zipfile.ZipFile(archive) as zf:
        assert zf.read("raw/custom.raid/output.txt") == b"md0 degraded\n"
        commands = json.loads(zf.read("raw/custom.raid/commands.json"))
    assert commands[0]["argv"][0] == "sh" and commands[0]["exit_code"] == 3


def test_fixture_roots_from_config(tmp_path: Path) -> None:
    node = write_tree(
        tmp_path / "node",
        {
            "proc/loadavg": "40.0 40.0 40.0 9/99 1\n",
            "sys/devices/system/cpu/online": "0-1\n",
        },
    )
    roots = fixture_roots(node)
    config = write_config(
        tmp_path,
        "checks:\n  roots:\n"
        + "".join(f"    {k}: {v}\n" for k, v in msgspec.structs.asdict(roots).items()),
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "cpu.load", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["failed"] == ["cpu.load"]


def test_invalid_only_lists_valid_ids(tmp_path: Path) -> None:
    proc = run_cli("run", "-o", tmp_path, "--only", "cpu.lod")
    assert proc.returncode == 2
    assert "cpu.lod" in proc.stderr and "cpu.load" in proc.stderr and "sysctl.all" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_before_any_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("run", "-o", blocker / "sub")
    assert proc.returncode == 2
    assert str(blocker / "sub") in proc.stderr
    assert "[" not in proc.stderr  # no progress line: nothing ran
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_output_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "{}\n")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("run", "-c", config, "-o", blocker, "--only", "cpu.load")
    assert proc.returncode == 2
    assert proc.stderr == (
        f"snapshot-agent: --output {blocker}: not a directory (a file is there); pass a "
        "directory, or a new path to create one\n"
    )
    assert proc.stdout == "" and blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "file"]


def test_disk_full_removes_partial_and_exits_2(tmp_path: Path) -> None:
    """A real full filesystem: a 16 KiB tmpfs in a private mount namespace."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    out = tmp_path / "small"
    out.mkdir()
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {out} || exit 99\n"
        f"{sys.executable} -m snapshot_agent run -o {out} -q\n"
        "echo rc=$?\n"
        f"ls -A {out}\n"
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull},
    )
    if "rc=" not in proc.stdout and proc.returncode == 99:
        pytest.skip("mounting tmpfs is not permitted here")
    lines = proc.stdout.strip().splitlines()
    assert "rc=2" in lines, proc.stdout + proc.stderr
    assert lines[-1] == "rc=2", f"left behind: {lines}"  # `ls -A` printed nothing
    assert str(out) in proc.stderr and "No space left" in proc.stderr
    assert "Free space there or pass --output to another disk" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    config = write_config(
        tmp_path,
        """
checks:
  commands:
    - {id: custom.slow, title: Slow, command: [sleep, "300"], timeout_s: 60}
""",
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshot_agent", "run", "-c", str(config), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull},
    )
    tree = wait_for_descendant(proc.pid, ["sleep", "300"], 20)
    sleeps = [p for p in tree if runs(p, ["sleep", "300"])]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert list(out.iterdir()) == []
    _gone, alive = psutil.wait_procs(sleeps, timeout=2)
    assert not alive


def test_verify_detects_tampering(tmp_path: Path) -> None:
    proc = run_cli("run", "-o", tmp_path, "--only", "cpu.load", "-q")
    archive = Path(proc.stdout.strip())
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "report.json":
                data = data.replace(b'"cpu.load"', b'"cpu.lied"')
            dst.writestr(info, data)
        dst.writestr("extra.txt", b"smuggled")
    result = run_cli("verify", tampered)
    assert result.returncode == 1
    assert "report.json: sha256 differs" in result.stdout
    assert "extra.txt: in the archive but not in the manifest" in result.stdout


def test_verify_bad_input(tmp_path: Path) -> None:
    missing = run_cli("verify", tmp_path / "none.zip")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    bad = run_cli("verify", junk)
    assert bad.returncode == 2 and "not a readable ZIP" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "checks:\n  deadline: 5\n")
    proc = run_cli("run", "-c", config, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "line 2" in proc.stderr and "checks.deadline" in proc.stderr
    assert not (tmp_path / "out").exists()
    missing = run_cli("run", "-c", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_checks_listing(tmp_path: Path) -> None:
    proc = run_cli("checks", "--json")
    assert proc.returncode == 0
    listed = {c["id"]: c for c in json.loads(proc.stdout)}
    assert listed["cpu.load"]["category"] == "cpu"
    assert listed["cpu.load"]["description"]
    assert listed["cpu.load"]["thresholds"] == {"warn_per_core": 1.0, "fail_per_core": 2.0}
    table = run_cli("checks")
    assert table.returncode == 0 and "cpu.load" in table.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["checks"], ["verify"]])
def test_help_and_version_everywhere(command: list[str]) -> None:
    helped = run_cli(*command, "--help")
    assert helped.returncode == 0 and "usage:" in helped.stdout
    versioned = run_cli(*command, "--version")
    assert versioned.returncode == 0 and versioned.stdout.startswith("snapshot-agent ")


def test_run_help_explains_statuses() -> None:
    text = run_cli("run", "--help").stdout
    for status in ("pass", "warn", "fail", "error", "timeout", "skipped"):
        assert f"  {status} " in text


def test_unknown_flag_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "--bogus")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_third_party_plugin_via_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_tree(
        site,
        {
            "acme_checks.py": (
                "from snapshot_agent.core.check import check\n"
                "from snapshot_agent.core.results import Result, Status\n"
                "@check(id='acme.hello', category='acme', title='Hello', description='Says hi.')\n"
                "def hello(ctx):\n"
                "    return Result(Status.WARN, 'hi from a plugin')\n"
            ),
            "acme_checks-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: acme-checks\n"
            "Version: 1.0\n",
            "acme_checks-1.0.dist-info/entry_points.txt": (
                "[snapshot_agent.checks]\nacme = acme_checks\nbroken = acme_missing_module\n"
            ),
        },
    )
    env = {"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    listed = run_cli("checks", "--json", env=env)
    ids = {c["id"] for c in json.loads(listed.stdout)}
    assert {"acme.hello", "plugin.broken"} <= ids
    proc = run_cli("run", "-o", tmp_path, "--only", "acme,plugin.broken", "--json", env=env)
    report = read_member(Path(json.loads(proc.stdout)["path"]), "report.json")
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses == {"acme.hello": "warn", "plugin.broken": "error"}


@pytest.mark.parametrize(("flags", "expected"), [((), "10"), (("--no-low-priority",), "0")])
def test_runs_at_low_priority_unless_told(tmp_path: Path, flags: tuple, expected: str) -> None:
    """`nice` with no arguments prints the niceness it inherited from the check."""
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the test runner itself is niced")
    config = write_config(
        tmp_path,
        "checks:\n  commands:\n"
        "    - {id: custom.nice, title: Niceness, command: [nice]}\n"
        "    - {id: custom.ionice, title: I/O class, command: [ionice]}\n",
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "custom", "-q", *flags)
    with zipfile.ZipFile(proc.stdout.strip()) as zf:
        assert zf.read("raw/custom.nice/output.txt").decode().strip() == expected
        ionice = zf.read("raw/custom.ionice/output.txt").decode().strip()
    if flags:
        assert ionice != "best-effort: prio 7"  # the kernel's default, whatever it prints
    else:
        assert ionice == "best-effort: prio 7"


# -- --only/--skip that select nothing (issue 9, item 11) -----------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--only", ""), "--only/--skip '': an empty pattern"),
        (("--only", " "), "an empty pattern"),
        (("--only", "cpu.load,"), "--only/--skip 'cpu.load,': an empty pattern"),
        (("--only", "cpu.load", "--skip", ""), "an empty pattern"),
        (("--only", "cpu", "--skip", "cpu"), "nothing to run: --only cpu with --skip cpu"),
        (("--skip", "*"), "nothing to run: --skip * leaves no check"),
        (("--only", "cpu.load", "--skip", "cpu.*"), "nothing to run"),
    ],
)
def test_a_selection_of_nothing_is_refused(
    tmp_path: Path, flags: tuple[str, ...], said: str
) -> None:
    """No archive that passes while looking at nothing, and no run of everything instead."""
    config = write_config(tmp_path, "{}\n")
    out = tmp_path / "out"
    proc = run_cli("run", "-c", config, "-o", out, "--json", *flags, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["status"] == "failed"
    assert not out.exists()  # nothing was written, not even the output directory


def test_command_output_cannot_drive_the_operators_terminal(tmp_path: Path) -> None:
    """Escape sequences in a summary (clipboard write, screen clear, title) are shown escaped."""
    hostile = "\x1b]52;c;aGk=\x07\x1b[2J\x1b]0;TITLE\x07 \x9b31m \u202eevil"
    script = tmp_path / "hostile.py"
    script.write_text(f"import sys\nsys.stderr.write({hostile!r} + '\\n')\nsys.exit(3)\n")
    config = write_config(
        tmp_path,
        "checks:\n  commands:\n"
        f"    - {{id: custom.hostile, title: Hostile, command: [{sys.executable}, {script}]}}\n",
    )
    proc = run_cli("run", "-c", config, "-o", tmp_path, "--only", "custom.hostile")
    assert proc.returncode == 1, proc.stderr
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in proc.stderr
    assert "\\x1b]52;c;aGk=\\x07\\x1b[2J" in proc.stderr  # still there to read, escaped


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (its /proc/PID/fd links)."""
    target = str(path.resolve())
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def test_one_snapshot_at_a_time_per_node(tmp_path: Path) -> None:
    """A run holds the node's lock in state_dir: a second is refused naming the first,
    a third with --wait takes its turn once the first is done."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    stop = tmp_path / "stop"  # the first run's check lasts until the test creates it
    hold = (
        f"end=$(($(date +%s) + 60)); while [ ! -e '{stop}' ] && [ $(date +%s) -lt $end ];"
        f" do sleep 0.05; done; [ -e '{stop}' ]"
    )
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {state}\n"
        "checks:\n  commands:\n"
        f"    - {{id: custom.slow, title: Slow, command: [sh, -c, {json.dumps(hold)}],"
        " timeout_s: 90}\n"
    )
    argv = [sys.executable, "-m", "snapshot_agent", "run", "-c", str(config), "-q"]
    env = {**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull}
    first = subprocess.Popen(
        [*argv, "-o", str(tmp_path / "a"), "--only", "custom.slow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    third = None
    try:
        lock, deadline = state / "snapshot.lock", time.monotonic() + 30
        while not (lock.exists() and lock.read_text()):  # the holder writes its pid in it
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = run_cli("run", "-c", config, "-o", tmp_path / "b", "--only", "cpu.load", "-q")
        assert second.returncode == 2
        assert f"another snapshot is in progress on this node (pid {first.pid}" in second.stderr
        assert "pass --wait SECONDS to wait for it" in second.stderr
        assert second.stderr.count("\n") == 1 and not (tmp_path / "b").exists()
        third = subprocess.Popen(
            [*argv, "-o", str(tmp_path / "c"), "--only", "cpu.load", "--wait", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not holds_open(third.pid, lock):  # it has reached the lock, held by the first
            assert time.monotonic() < deadline and third.poll() is None
            time.sleep(0.05)
        assert first.poll() is None  # so the third cannot have found it free
        stop.touch()
        _, third_err = third.communicate(timeout=90)
        assert third.returncode in (0, 1), third_err
        assert first.poll() is not None  # it waited for the first to finish
        assert first.returncode in (0, 1)
    finally:
        stop.touch()  # the first's check ends even if the first is killed
        first.kill()
        first.communicate()
        if third is not None:
            third.kill()
            third.communicate()
    assert len(list((tmp_path / "c").glob("snapshot-*.zip"))) == 1


@pytest.mark.parametrize("wait", ["-1", "soon", "86401"])
def test_wait_is_seconds_within_a_day(tmp_path: Path, wait: str) -> None:
    run = run_cli("run", "--wait", wait, "-o", tmp_path)
    assert run.returncode == 2 and f"{wait}: give seconds from 0 to 86400" in run.stderr


def test_a_caller_can_name_the_archive(tmp_path: Path) -> None:
    # The service passes its record's name, so the 202's name is the archive's.
    argv = ("run", "--name", "snapshot-20260520-101500", "--only", "cpu.load", "-o", tmp_path)
    run = run_cli(*argv)
    assert run.returncode in (0, 1), run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot-20260520-101500.zip"]
    again = run_cli(*argv)
    assert again.returncode in (0, 1), again.stderr  # taken: the sink adds a suffix
    assert (tmp_path / "snapshot-20260520-101500-2.zip").is_file()


@pytest.mark.parametrize("name", ["../x", "snapshot-2026-05-20", "snapshot-20260520-101500.zip"])
def test_a_name_must_be_a_snapshot_name(tmp_path: Path, name: str) -> None:
    run = run_cli("run", "--name", name, "-o", tmp_path / "out")
    assert run.returncode == 2 and f"{name}: give a name like snapshot-" in run.stderr
    assert run.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_help_says_what_an_archive_holds_where_it_goes_and_what_verify_exits() -> None:
    import argparse

    from snapshot_agent.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {name: " ".join(p.format_help().split()) for name, p in sub.choices.items()}
    top = " ".join(parser.format_help().split())
    for member in ("report.html", "report.json", "manifest.json", "manifest.sig", "iggy-data"):
        assert member in top, member
    assert ".zip.enc" in helps["run"] and "storage.s3" in helps["run"]
    assert "Exit 0 when all match; 1 on a mismatch" in helps["verify"]
    assert "2 when the archive or the key cannot be read or used" in helps["verify"]
    assert "presigned URL" in helps["url"] and "HTTPS" not in helps["url"]
