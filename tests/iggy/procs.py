"""A running iggy-server in a fixture /proc tree, for the Iggy checks' tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from snapshot_agent.config import ChecksConfig, Config, IggyConfig
from snapshot_agent.core.context import Context
from tests.conftest import fixture_roots, make_context, write_tree

PID = 4242


def fake_broker(
    node: Path,
    cwd: str,
    env: dict[str, str] | None = None,
    pid: int = PID,
    argv: Sequence[str] = ("/usr/local/bin/iggy-server",),
    uid: int = 0,
    gid: int = 0,
) -> None:
    """comm, cmdline, stat, status and environ of an iggy-server, and its cwd link."""
    environ = "".join(f"{k}={v}\0" for k, v in {"HOME": "/root", **(env or {})}.items())
    write_tree(
        node,
        {
            f"proc/{pid}/comm": "iggy-server\n",
            f"proc/{pid}/cmdline": "".join(f"{a}\0" for a in argv),
            f"proc/{pid}/stat": f"{pid} (iggy-server) S 1 1 1 0 -1 0 0 0 0 0 5 5 0 0 20 0 8 0 1",
            f"proc/{pid}/environ": environ,
            f"proc/{pid}/status": f"Name:\tiggy-server\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
            f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}\n",
        },
    )
    (node / f"proc/{pid}/cwd").symlink_to(cwd)


def iggy_context(
    tmp_path: Path, node: Path, thresholds: dict | None = None, **iggy: object
) -> Context:
    """A check context on the fixture node with the given agent `iggy:` settings."""
    config = Config(checks=ChecksConfig(roots=fixture_roots(node)), iggy=IggyConfig(**iggy))
    return make_context(tmp_path, config=config, thresholds=thresholds)
