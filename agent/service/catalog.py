"""The checks this node runs, as `snapshot-agent checks --json` lists them (`GET /v1/checks`).

Asked of a child process once, then kept: loading every check module into the server
would cost it memory for the whole of its life, and the list only changes with the
config, which a restart reloads.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from snapshot_agent.errors import AgentError

TIMEOUT_S = 120.0


class CatalogError(AgentError):
    """The list of checks could not be had (the child failed): the API answers 503."""


class Catalog:
    """The checks list for one config, made on first use."""

    def __init__(self, config: Path, env: Mapping[str, str]) -> None:
        self.config = config
        self.env = dict(env)
        self._document: bytes | None = None
        self._lock = asyncio.Lock()

    async def document(self) -> bytes:
        """The JSON list of checks (id, category, title, description, needs...)."""
        async with self._lock:
            if self._document is None:
                self._document = await asyncio.to_thread(self._make)
            return self._document

    def _make(self) -> bytes:
        argv = [sys.executable, "-m", "snapshot_agent", "checks", "--json"]
        argv += ["--config", str(self.config)]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                timeout=TIMEOUT_S,
                env=self.env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise CatalogError(f"listing the checks failed ({exc})") from None
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0:
            why = lines[-1] if lines else f"exit code {proc.returncode}"
            raise CatalogError(f"listing the checks failed: {why}")
        try:
            checks = json.loads(proc.stdout)
        except ValueError:
            raise CatalogError("listing the checks failed: its output is not JSON") from None
        return json.dumps(checks).encode()
