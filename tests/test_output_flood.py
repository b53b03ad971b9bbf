"""Commands that flood their output: memory stays near the cap, the notes tell the truth,
and a command sees none of the agent's environment but what it is given."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from snapshot_agent.core.commands import QUIET_ENV, run_command

from .conftest import make_context, run_measured

MIB = 1024 * 1024
#: Allocator and interpreter noise allowed on top of the budget in caps.
SLACK = 8 * MIB
NOTE_RE = re.compile(r"^\[snapshot-agent: output capped; (.*)\]$")

#: Runs in a fresh interpreter: VmHWM (peak RSS) of that process is the capture's alone.
CAPTURE_PROBE = textwrap.dedent(
    """
    import gc, json, sys, time
    from pathlib import Path

    from snapshot_agent.config import Config
    from snapshot_agent.core.commands import run_command
    from snapshot_agent.core.context import Context

    def status(name):
        for line in open("/proc/self/status"):
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024

    def hwm():
        return status("VmHWM")

    mode, cap, script, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    argv = ["sh", "-c", script]
    gc.disable()  # what is freed must be freed when dropped, not when a collection runs
    before, rss_before = hwm(), status("VmRSS")
    if mode == "texts":  # what a built-in check parsing the output reads
        res = run_command(argv, timeout_s=120, cap=cap)
        captured = hwm()
        texts = (res.stdout, res.stderr, res.first_error_line(200))
    else:  # "check": what a custom command check does (core/custom.py)
        ctx = Context("t.flood", Config(), {}, Path(out_dir), cap, time.monotonic() + 120)
        res = ctx.run(argv, save_as="output.txt")
        captured = hwm()
        summary = (res.last_line(200), res.explain(200))
    peak, dropped, code = hwm(), [res.stdout_dropped, res.stderr_dropped], res.exit_code
    del res
    print(json.dumps({"before": before, "captured": captured, "peak": peak, "exit": code,
                      "dropped": dropped, "kept_after": status("VmRSS") - rss_before}))
    """
)

ZEROS = "head -c {size} /dev/zero"
INVALID = "head -c {size} /dev/zero | tr '\\000' '\\377'"  # 0xFF is never UTF-8
LINES = "yes 'flood line' | head -c {size}"


def probe_capture(mode: str, cap: int, script: str, tmp_path: Path) -> dict[str, int]:
    """Run CAPTURE_PROBE; its peak RSS over what it held before the command."""
    done = subprocess.run(
        [sys.executable, "-c", CAPTURE_PROBE, mode, str(cap), script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "script",
    [
        # Both streams at once, binary, not one newline in 2 GiB: one line of the cap.
        f"{INVALID.format(size='1G')} & {ZEROS.format(size='1G')} >&2; wait; exit 1",
        # One after the other: stdout fills the cap, then gives half of it up to stderr.
        f"{ZEROS.format(size='1G')}; {INVALID.format(size='1G')} >&2; exit 1",
    ],
    ids=["both-at-once", "one-after-the-other"],
)
def test_a_command_check_holds_about_the_cap_whatever_is_printed(
    tmp_path: Path, script: str
) -> None:
    """Capture, save and summary of a flooding command: one cap, not one per stream."""
    cap = 64 * MIB
    got = probe_capture("check", cap, script, tmp_path)
    grew = got["peak"] - got["before"]
    assert grew <= 1.2 * cap, f"peak grew {grew / MIB:.0f} MiB with a 64 MiB cap"
    assert got["exit"] == 1
    assert got["dropped"] == [1024 * MIB - cap // 2] * 2  # both flooded; they share the cap
    assert got["kept_after"] < 0.1 * cap  # unmapped when the result is dropped
    saved = (tmp_path / "output.txt").stat().st_size
    assert cap < saved < cap + 300  # the cap, and the note


@pytest.mark.parametrize(
    ("script", "text_caps"),
    [
        # A 1 GiB flood of zeros: its text is one byte a character.
        (ZEROS.format(size="1G"), 1),
        # Invalid UTF-8 on stderr: two bytes a character (U+FFFD).
        (INVALID.format(size="256M") + " >&2; exit 3", 2),
        # Both streams at once: two halves of the cap, two texts of one byte a character.
        (f"{ZEROS.format(size='256M')} & {LINES.format(size='256M')} >&2; wait", 1),
    ],
    ids=["zeros", "invalid-utf8-stderr", "both-streams"],
)
def test_capture_memory_stays_near_the_cap(tmp_path: Path, script: str, text_caps: int) -> None:
    """The capture holds the cap; reading the output as text adds the text, nothing more."""
    cap = 16 * MIB
    got = probe_capture("texts", cap, script, tmp_path)
    assert sum(got["dropped"]) > 200 * MIB  # it really flooded
    captured = got["captured"] - got["before"]
    assert captured <= 1.2 * cap, f"capture grew {captured / MIB:.0f} MiB with a 16 MiB cap"
    grew = got["peak"] - got["before"]
    assert grew <= (1 + text_caps) * cap + SLACK, f"peak grew {grew / MIB:.0f} MiB"


def test_saved_flood_on_both_streams_costs_its_tails_only(tmp_path: Path) -> None:
    cap = 16 * MIB
    script = f"{ZEROS.format(size='512M')}; {INVALID.format(size='256M')} >&2; exit 1"
    got = probe_capture("check", cap, script, tmp_path)
    grew = got["peak"] - got["before"]
    # The two tails share the cap, and the file is written from their blocks.
    assert grew <= 1.2 * cap, f"peak grew {grew / MIB:.0f} MiB with a 16 MiB cap"
    body = (tmp_path / "output.txt").read_bytes()
    first, _, rest = body.partition(b"\n")
    note = NOTE_RE.match(first.decode())
    assert note, f"no truncation note: {first[:200]!r}"
    # Both streams overflow: each keeps half of what the marker leaves of the cap.
    marker = b"\n--- stderr ---\n"  # stdout did not end its last line
    kept_out = (cap - len(marker)) // 2
    kept_err = cap - len(marker) - kept_out
    assert note.group(1) == (
        f"the first {512 * MIB - kept_out} bytes of stdout and the first "
        f"{256 * MIB - kept_err} bytes of stderr were dropped, the last {kept_out} bytes of "
        f"stdout and the last {kept_err} bytes of stderr follow"
    )
    assert rest == b"\0" * kept_out + marker + b"\xff" * kept_err


# -- through the real CLI --------------------------------------------------------------


def run_agent(tmp_path: Path, name: str, config: str, *args: str) -> tuple[int, dict, int]:
    """`snapshot-agent run` on `config`: exit code, --json output, largest process (bytes)."""
    out = tmp_path / name
    out.mkdir()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(config)
    run = ["run", "-c", cfg, "-o", out, "--only", "custom", "--json", "-q", *args]
    proc, peak = run_measured(tmp_path, *run, timeout=None, stdin=subprocess.DEVNULL)
    return proc.returncode, json.loads(proc.stdout), peak


def command_config(cap: int, commands: dict[str, list[str]]) -> str:
    """A config with these custom commands (id suffix -> argv) and artifact cap."""
    lines = [f"checks:\n  artifact_cap_bytes: {cap}\n  deadline_s: 240\n  commands:"]
    for name, argv in commands.items():
        lines.append(
            f"    - {{id: custom.{name}, title: {name}, command: {json.dumps(argv)},"
            " timeout_s: 200}"
        )
    return "\n".join(lines) + "\n"


def test_cli_flood_keeps_the_largest_process_near_the_cap(tmp_path: Path) -> None:
    """1 GiB on each stream, binary, failing: the largest process grows by about the cap."""
    cap = 64 * MIB
    script = f"{INVALID.format(size='1G')} & {ZEROS.format(size='1G')} >&2; wait; exit 1"
    quiet = command_config(cap, {"flood": ["true"]})
    flood = command_config(cap, {"flood": ["sh", "-c", script]})
    code, _, baseline = run_agent(tmp_path, "quiet", quiet)
    assert code == 0
    code, summary, peak = run_agent(tmp_path, "flood", flood)
    grew = peak - baseline
    assert grew <= 1.2 * cap, f"largest process grew {grew / MIB:.0f} MiB with a 64 MiB cap"
    assert code == 1 and Path(summary["path"]).is_file()


def test_cli_truncation_note_gives_the_bytes_really_dropped(tmp_path: Path) -> None:
    cap = 1024 * 1024
    size = 64 * MIB
    commands = {
        "zeros": ["head", "-c", str(size), "/dev/zero"],
        "lines": ["sh", "-c", f"yes 'flood line' | head -c {size} >&2; echo done; exit 3"],
    }
    code, summary, _ = run_agent(tmp_path, "run", command_config(cap, commands))
    assert code == 1  # custom.lines exits 3
    with zipfile.ZipFile(summary["path"]) as zf:
        zeros = zf.read("raw/custom.zeros/output.txt")
        [zeros_cmd] = json.loads(zf.read("raw/custom.zeros/commands.json"))
        lines = zf.read("raw/custom.lines/output.txt")
        [lines_cmd] = json.loads(zf.read("raw/custom.lines/commands.json"))
    first, _, rest = zeros.partition(b"\n")
    assert first.decode() == (
        f"[snapshot-agent: output capped; the first {size - cap} bytes of stdout were "
        f"dropped, the last {cap} bytes of stdout follow]"
    )
    assert rest == b"\0" * cap
    assert zeros_cmd["stdout_bytes"] == size and zeros_cmd["stdout_bytes_dropped"] == size - cap
    # stdout's one line is kept whole; stderr fills the rest of the cap.
    first, _, rest = lines.partition(b"\n")
    kept_err = cap - len(b"done\n--- stderr ---\n")
    assert first.decode() == (
        f"[snapshot-agent: output capped; the first {size - kept_err} bytes of stderr were "
        f"dropped, the last {kept_err} bytes of stderr follow]"
    )
    line = b"flood line\n"
    skip = (size - kept_err) % len(line)
    tail = (line * (kept_err // len(line) + 2))[skip : skip + kept_err]
    assert rest == b"done\n--- stderr ---\n" + tail
    assert lines_cmd["stderr_bytes_dropped"] == size - kept_err
    assert lines_cmd["stdout_bytes_dropped"] == 0 and lines_cmd["stdout_bytes"] == 5


def test_copied_proc_file_keeps_its_tail_and_says_so(tmp_path: Path) -> None:
    """/proc files report size 0: the copy must still be the tail, with a true note."""
    ctx = make_context(tmp_path, cap=256)
    info = ctx.copy_file("/proc/self/status", "status.txt")
    first, _, rest = (ctx.artifact_dir / "status.txt").read_bytes().partition(b"\n")
    note = re.match(
        r"^\[snapshot-agent: output capped; the first (\d+) bytes were dropped, "
        r"the last 256 bytes follow\]$",
        first.decode(),
    )
    assert note and int(note.group(1)) > 0
    assert len(rest) == 256 and re.search(rb"nonvoluntary_ctxt_switches:\s+\d+\n$", rest)
    assert info.truncated and info.original_size == int(note.group(1)) + 256


# -- environment -------------------------------------------------------------------------


def test_cli_custom_commands_do_not_see_the_agents_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = secrets.token_hex(8)
    leak_name, leak_value = f"FLOOD_TEST_{tag.upper()}", f"value-{tag}"
    monkeypatch.setenv(leak_name, leak_value)  # the agent's environment, not its commands'
    config = command_config(1024 * 1024, {"env": ["env"]})
    # --no-redact: only the environment itself may keep the value out of the archive.
    code, summary, _ = run_agent(tmp_path, "run", config, "--no-redact")
    assert code == 0
    with zipfile.ZipFile(summary["path"]) as zf:
        seen = dict(
            line.split("=", 1)
            for line in zf.read("raw/custom.env/output.txt").decode().splitlines()
        )
    assert leak_name not in seen and leak_value not in seen.values()
    assert seen["PATH"] == os.environ["PATH"] and seen["LANG"] == "C"
    # PWD, SHLVL, _: env's own; SNAPSHOT_AGENT_RUN: the run's tag (containment.RUN_ENV).
    allowed = {"PATH", "HOME", "TZ", *QUIET_ENV, "PWD", "SHLVL", "_", "SNAPSHOT_AGENT_RUN"}
    assert set(seen) <= allowed

    # What the config names with pass_env, and only that, is passed through.
    wanted = f"FLOOD_WANTED_{tag.upper()}"
    monkeypatch.setenv(wanted, "wanted-value")
    named = config.replace('command: ["env"],', f'command: ["env"], pass_env: [{wanted}],')
    assert named != config
    code, summary, _ = run_agent(tmp_path, "named", named, "--no-redact")
    assert code == 0
    with zipfile.ZipFile(summary["path"]) as zf:
        output = zf.read("raw/custom.env/output.txt").decode()
    assert f"{wanted}=wanted-value" in output and leak_name not in output


def test_command_environment_is_minimal_plus_what_the_caller_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("FLOOD_PASSED", "named-by-config")
    monkeypatch.setenv("TZ", "UTC")
    res = run_command(
        ["env"], timeout_s=10, env={"EXPLICIT": "1", "LANG": "C.UTF-8"}, pass_env=["FLOOD_PASSED"]
    )
    seen = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert "AWS_SECRET_ACCESS_KEY" not in seen and "do-not-leak" not in res.stdout
    assert seen["FLOOD_PASSED"] == "named-by-config" and seen["EXPLICIT"] == "1"
    assert seen["LANG"] == "C.UTF-8" and seen["LC_ALL"] == "C"  # explicit env wins
    assert seen["TZ"] == "UTC" and seen["PATH"] == os.environ["PATH"]
    assert seen.get("HOME") == os.environ.get("HOME")
