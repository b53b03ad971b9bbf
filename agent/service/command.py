"""`snapshot-agent serve`: the RPC service (HTTP/JSON on a Unix socket, optionally mTLS TCP).

Light at import: cli.py imports this module for every command. `serve` loads and checks
the config (so a bad one is the CLI's one-line error, exit 2), then replaces the process
with `python -m snapshot_agent.service` (same pid, so systemd's main process stays), which
loads only what serving needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from snapshot_agent.config import LoadedConfig, default_config_path, load_config

#: The handler of a subcommand, as cli.py calls it: parsed arguments in, exit code out.
Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
Serve the snapshot API until stopped (SIGTERM): an HTTP/JSON API on the Unix socket
api.unix_socket (mode 0660: its permissions are the authentication) and, with
api.listen, on TCP with mutual TLS and bearer tokens (api.tokens). POST /v1/snapshots
takes a snapshot (one at a time), GET /v1/snapshots lists them, /openapi.json describes
it all. Records live in state_dir; retention follows retention.plan. Under systemd it
notifies READY, STATUS and WATCHDOG; logs go to stderr.
"""
CONFIG_HELP = (
    "YAML config (default: /etc/snapshot-agent/config.yaml when it exists; "
    "$SNAPSHOT_AGENT_CONFIG overrides)"
)


def add_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    version: Callable[[argparse.ArgumentParser], None],
) -> dict[str, Handler]:
    """Add `serve` to the CLI; its handler by name."""
    serve = sub.add_parser(
        "serve",
        help="run the snapshot API service (systemd unit snapshot-agent.service)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    version(serve)
    serve.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    return {"serve": cmd_serve}


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m snapshot_agent.service`: the same options as `serve`."""
    parser = argparse.ArgumentParser(prog="snapshot-agent serve", description=DESCRIPTION)
    parser.add_argument("--config", "-c", type=Path, metavar="FILE", help=CONFIG_HELP)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    """`snapshot-agent serve`: check the config, then become the lean service process."""
    _load(args.config)  # a bad config ends here, as any command's does
    argv = [sys.executable, "-m", "snapshot_agent.service"]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, argv)
    raise AssertionError("unreachable")  # pragma: no cover


def serve_loaded(config: Path | None) -> int:
    """Load the config and serve until stopped; the exit code."""
    from snapshot_agent.service.journal import configure_logging
    from snapshot_agent.service.server import serve

    loaded = _load(config)
    configure_logging()
    return serve(loaded)


def _load(config: Path | None) -> LoadedConfig:
    explicit = config is not None
    return load_config(config if explicit else default_config_path(), explicit=explicit)
