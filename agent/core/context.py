"""What a check is given: config, thresholds, node roots, and safe helpers for I/O."""

from __future__ import annotations

import glob as globmod
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from snapshot_agent.config import Config, RootsConfig
from snapshot_agent.core.commands import CommandResult, run_command
from snapshot_agent.core.results import ArtifactInfo
from snapshot_agent.core.tail import truncation_note

DEFAULT_READ_LIMIT = 1024 * 1024
COPY_CHUNK = 1024 * 1024

#: Node path prefix -> RootsConfig attribute.
_ROOT_PREFIXES = (
    ("/proc", "proc"),
    ("/sys", "sys"),
    ("/etc", "etc"),
    ("/run", "run"),
    ("/var/log", "var_log"),
)


def map_path(roots: RootsConfig, node_path: str | os.PathLike[str]) -> Path:
    """Map an absolute node path (/proc/loadavg) into the configured roots."""
    text = os.fspath(node_path)
    for prefix, attr in _ROOT_PREFIXES:
        if text == prefix or text.startswith(prefix + "/"):
            return Path(getattr(roots, attr) + text[len(prefix) :])
    return Path(roots.root.rstrip("/") + text) if roots.root != "/" else Path(text)


@dataclass
class Context:
    """Everything a running check may use; one per check run, inside its own process."""

    check_id: str
    config: Config
    thresholds: dict[str, Any]
    artifact_dir: Path
    artifact_cap: int
    deadline: float  # time.monotonic() by which the check is killed
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    unsaved: list[str] = field(default_factory=list)  # evidence that could not be written

    @property
    def roots(self) -> RootsConfig:
        """Where /proc, /sys, /etc, /run and /var/log are for this run."""
        return self.config.checks.roots

    @property
    def live(self) -> bool:
        """True when the checks look at this machine itself (no fixture roots)."""
        return self.roots == RootsConfig()

    def path(self, node_path: str) -> Path:
        """Map an absolute node path into the configured roots (fixture trees in tests)."""
        return map_path(self.roots, node_path)

    def glob(self, pattern: str) -> list[str]:
        """Node paths matching an absolute glob, looked up through the roots, sorted."""
        parts = PurePosixPath(pattern).parts
        fixed = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))
        base = PurePosixPath(*parts[:fixed]) if fixed else PurePosixPath("/")
        rest = str(PurePosixPath(*parts[fixed:])) if fixed < len(parts) else ""
        if not rest:
            return [str(base)] if self.path(str(base)).exists() else []
        found = globmod.glob(rest, root_dir=self.path(str(base)))
        return sorted(str(base / hit) for hit in found)

    def remaining(self) -> float:
        """Seconds left before the runner kills this check."""
        return max(0.0, self.deadline - time.monotonic())

    def read_text(self, node_path: str, max_bytes: int = DEFAULT_READ_LIMIT) -> str:
        """Read at most `max_bytes` of a node file as text (raises OSError like open())."""
        with self.path(node_path).open("rb") as fh:
            return fh.read(max_bytes).decode("utf-8", "replace")

    def read_optional(self, node_path: str, max_bytes: int = DEFAULT_READ_LIMIT) -> str | None:
        """Like read_text, but None when the file is missing or unreadable."""
        try:
            return self.read_text(node_path, max_bytes)
        except OSError:
            return None

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        save_as: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run argv (no shell) within this check's time; record it; optionally save output."""
        budget = max(0.1, self.remaining() - 0.5)
        result = run_command(
            argv,
            timeout_s=min(timeout_s, budget) if timeout_s else budget,
            cap=self.artifact_cap,
            env=env,
            cwd=cwd,
        )
        self.commands.append(result.record() | {"output": save_as})
        if save_as:
            body = result.stdout
            if result.stderr:
                body += ("\n" if body and not body.endswith("\n") else "") + "--- stderr ---\n"
                body += result.stderr
            dropped = result.stdout_dropped + result.stderr_dropped
            raw = body.encode()
            header = truncation_note(dropped, len(raw)) if dropped else b""
            self._write(save_as, header + raw, original_size=len(raw) + dropped)
        return result

    def artifact(self, name: str, content: str | bytes) -> ArtifactInfo:
        """Save raw evidence as raw/<check id>/<name>; over the cap, only the tail is kept."""
        data = content.encode() if isinstance(content, str) else content
        return self._write(name, data, original_size=len(data))

    def json_artifact(self, name: str, value: Any) -> ArtifactInfo:
        """Save a JSON document as evidence."""
        return self.artifact(name, json.dumps(value, indent=2, sort_keys=True, default=str))

    def copy_file(self, node_path: str, name: str | None = None) -> ArtifactInfo:
        """Copy a node file into the evidence, keeping its last `artifact_cap` bytes.

        Errors opening the node file raise (the check decides what that means);
        errors saving the copy are recorded in `unsaved` like any artifact's.
        """
        dest_name = name or ("files" + node_path)
        with self.path(node_path).open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            try:
                written = self._copy_tail(fh, size, self._dest(dest_name))
            except OSError as exc:
                return self._unsaved(dest_name, size, exc)
        info = ArtifactInfo(dest_name, written, max(size, written))
        self.artifacts.append(info)
        return info

    def _copy_tail(self, fh: BinaryIO, size: int, dest: Path) -> int:
        written = 0
        with dest.open("wb") as out:
            if size > self.artifact_cap:
                fh.seek(size - self.artifact_cap)
                note = truncation_note(size - self.artifact_cap, self.artifact_cap)
                written += out.write(note)
            # /proc files report size 0; still never copy more than the cap.
            budget = self.artifact_cap
            while budget > 0 and (chunk := fh.read(min(COPY_CHUNK, budget))):
                written += out.write(chunk)
                budget -= len(chunk)
        return written

    def _write(self, name: str, data: bytes, original_size: int) -> ArtifactInfo:
        if len(data) > self.artifact_cap:
            kept = data[-self.artifact_cap :]
            data = truncation_note(len(data) - len(kept), len(kept)) + kept
        try:
            self._dest(name).write_bytes(data)
        except OSError as exc:
            return self._unsaved(name, original_size, exc)
        info = ArtifactInfo(name, len(data), max(original_size, len(data)))
        self.artifacts.append(info)
        return info

    def _unsaved(self, name: str, size: int, exc: OSError) -> ArtifactInfo:
        """Evidence that could not be written (disk full...): the verdict still counts."""
        self.unsaved.append(f"{name}: {exc.strerror or exc}")
        return ArtifactInfo(name, 0, size)

    def _dest(self, name: str) -> Path:
        """Where artifact `name` lives in the spool; refuses names escaping the check's dir."""
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"artifact name {name!r} must be a relative path without '..'")
        dest = self.artifact_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest
