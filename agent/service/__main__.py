"""`python -m snapshot_agent.service --config FILE`: the service without the rest of the CLI.

`snapshot-agent serve` checks the config with the whole CLI loaded, then execs this, so
the long-lived process holds only what serving needs (the CLI's imports, cryptography
and the redaction engine among them, would double its memory for its whole life).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from snapshot_agent.errors import AgentError


def main(argv: Sequence[str] | None = None) -> int:
    """Serve with `--config FILE` (or the default config); the exit code."""
    from snapshot_agent.service.command import build_parser, serve_loaded

    args = build_parser().parse_args(argv)
    try:
        return serve_loaded(args.config)
    except AgentError as exc:
        from snapshot_agent.config import RedactionConfig
        from snapshot_agent.redact.catalog import redactor_for

        # As the CLI does: a refused value may be a password.
        message = " ".join(redactor_for(RedactionConfig()).text(str(exc)).split())
        print(f"snapshot-agent: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
