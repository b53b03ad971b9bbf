"""Shared test helpers: the real CLI as a subprocess, fixture node trees, check contexts."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from snapshot_agent.config import ChecksConfig, Config, RootsConfig
from snapshot_agent.core.context import Context

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `snapshot-agent` CLI in a child process."""
    full_env = {**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "snapshot_agent", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def started_at_once(
    script: str, *args: str, count: int, timeout: float = 60
) -> list[tuple[int, str, str]]:
    """`count` Python children running `script`, let go at the same moment: each prints
    "ready" once set up and waits for a line on stdin, which all get only once all are
    ready. Their (exit code, stdout, stderr); none is left running."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline() == "ready\n", p.communicate()[1]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        answers = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, answers, strict=True)]


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create files under `root` (paths relative, e.g. 'proc/loadavg')."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def fixture_roots(root: Path) -> RootsConfig:
    """Roots that point every node tree into `root` (root/proc, root/sys, root/etc...)."""
    return RootsConfig(
        root=str(root),
        proc=str(root / "proc"),
        sys=str(root / "sys"),
        etc=str(root / "etc"),
        run=str(root / "run"),
        var_log=str(root / "var/log"),
    )


def make_context(
    tmp_path: Path,
    *,
    roots: RootsConfig | None = None,
    thresholds: Mapping[str, Any] | None = None,
    cap: int = 10 * 1024 * 1024,
    seconds: float = 30,
    config: Config | None = None,
) -> Context:
    """A Context for calling a check function directly (unit tests of one check)."""
    if config is None:
        config = Config(checks=ChecksConfig(roots=roots or RootsConfig()))
    art = tmp_path / "artifacts"
    art.mkdir(exist_ok=True)
    return Context(
        check_id="test.check",
        config=config,
        thresholds=dict(thresholds or {}),
        artifact_dir=art,
        artifact_cap=cap,
        deadline=time.monotonic() + seconds,
    )


def run_check(check: Any, tmp_path: Path, node: Path, files: Mapping[str, str]) -> Any:
    """Run a check against a fixture tree written from `files`, with its declared thresholds."""
    write_tree(node, files)
    ctx = make_context(tmp_path, roots=fixture_roots(node), thresholds=check.thresholds)
    return check.run(ctx)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connection refused at once): a service that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def severities(result: Any) -> list[Any]:
    """The severities of a result's findings, in order."""
    return [f.severity for f in result.findings]


#: The body of every fake tool: RULES is a list of (needles, stdout, exit code).
FAKE_BODY = """
args = sys.argv[1:]
for needles, out, code in RULES:
    if all(n in args for n in needles):
        sys.stdout.write(out)
        sys.exit(code)
sys.stderr.write("fake: no rule for %r\\n" % (args,))
sys.exit(1)
"""


def fake_tools(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tools: dict[str, list[tuple[tuple[str, ...], str, int]]],
) -> None:
    """Put fake commands first on PATH: each prints the output of its first matching rule."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, rules in tools.items():
        script = bindir / name
        script.write_text(f"#!{sys.executable}\nimport sys\nRULES = {rules!r}\n{FAKE_BODY}")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


#: Runs argv[2:] as its child and writes "exit-code peak-RSS-KiB" to argv[1]. A go-between
#: because a child's ru_maxrss starts at its parent's RSS (the exec'd image inherits the
#: forked one's high-water mark), and pytest (holding an archive it just built, say) is large.
MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


#: What the redactor leaves in place of a secret.
REDACTED = re.compile(r"\[REDACTED:[a-z0-9-]+\]")


def starred(text: str) -> str:
    """`text` with every `[REDACTED:kind]` shown as `***` (for expectations on the shape)."""
    return REDACTED.sub("***", text)


def run_measured(
    tmp_path: Path,
    *args: str | os.PathLike[str],
    timeout: float | None = 60,
    stdin: int | None = None,
) -> tuple[subprocess.CompletedProcess[str], int]:
    """The real CLI (no SNAPSHOT_AGENT_CONFIG) in a grandchild; its result and its own peak
    RSS in bytes (wait4)."""
    report = tmp_path / "measured.txt"
    report.unlink(missing_ok=True)  # a go-between that failed must not leave an old figure
    env = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_AGENT_CONFIG"}
    argv = [sys.executable, "-m", "snapshot_agent", *map(str, args)]
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, report, *argv],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    code, peak_kib = map(int, report.read_text().split())
    return subprocess.CompletedProcess(argv, code, proc.stdout, proc.stderr), peak_kib * 1024


def runs(proc: psutil.Process, argv: Sequence[str]) -> bool:
    """Whether `proc` runs exactly `argv` (False once it has ended or cannot be read)."""
    with contextlib.suppress(psutil.Error):
        return proc.cmdline() == list(argv)
    return False


def wait_for_descendant(pid: int, argv: Sequence[str], timeout: float) -> list[psutil.Process]:
    """Wait until `argv` runs below `pid` (that run's own command, never another test's);
    every process below `pid` at that point. Fails once `pid` has ended, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended, tree = False, []
        try:
            top = psutil.Process(pid)
            ended = top.status() == psutil.STATUS_ZOMBIE
            tree = top.children(recursive=True)
        except psutil.NoSuchProcess:
            ended = True
        except psutil.Error:  # unreadable for now: look again
            pass
        assert not ended, f"process {pid} ended before {list(argv)} ran below it"
        if any(runs(p, argv) for p in tree):
            return tree
        time.sleep(0.05)
    raise AssertionError(f"{list(argv)} never ran below process {pid} in {timeout} s")


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """An empty fixture node tree."""
    root = tmp_path / "node"
    root.mkdir()
    return root
