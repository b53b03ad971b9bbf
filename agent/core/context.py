"""What a check is given: config, thresholds, node roots, and safe helpers for I/O."""

from __future__ import annotations

import glob as globmod
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from snapshot_agent.config import Config, RootsConfig
from snapshot_agent.core.commands import CommandResult, run_command
from snapshot_agent.core.results import ArtifactInfo
from snapshot_agent.core.tail import TailBuffer, streams_note, truncation_note

DEFAULT_READ_LIMIT = 1024 * 1024
COPY_CHUNK = 1024 * 1024
COPY_LIMIT_CAPS = 4  # copy_file reads at most this many caps past where it starts
#: Between a command's stdout and stderr in its saved output.
STDERR_MARKER = b"--- stderr ---\n"

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


def split_cap(cap: int, out_len: int, err_len: int) -> tuple[int, int]:
    """How many tail bytes of stdout and stderr one file of `cap` bytes keeps.

    Each stream gets half; what one of them does not need goes to the other, so a flood
    on one stream never pushes the other (often the error message) out of the file.
    """
    cap = max(0, cap)
    if out_len + err_len <= cap:
        return out_len, err_len
    half = cap // 2
    if out_len <= half:
        return out_len, cap - out_len
    if err_len <= cap - half:
        return cap - err_len, err_len
    return half, cap - half


def artifact_name(name: str) -> str:
    """An artifact's name as it is recorded and stored: 'a//b' and './b' become 'a/b', 'b'.

    verify refuses empty and '.' parts in member names (extractors merge them), so the
    name recorded must be the one the file really has.
    """
    return PurePosixPath(name).as_posix()


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
        pass_env: Iterable[str] = (),
        cwd: str | None = None,
    ) -> CommandResult:
        """Run argv (no shell) within this check's time; record it; optionally save output.

        The command's environment is commands.command_env(env, pass_env): a few
        inherited names and what the caller gives, never the agent's whole environment.
        """
        budget = max(0.1, self.remaining() - 0.5)
        result = run_command(
            argv,
            timeout_s=min(timeout_s, budget) if timeout_s else budget,
            cap=self.artifact_cap,
            env=env,
            pass_env=pass_env,
            cwd=cwd,
        )
        record = result.record()
        if save_as:
            # What the saved file lacks of each stream is what the archive's record says.
            record |= self._save_output(save_as, result)
        self.commands.append(record | {"output": save_as})
        return result

    def _save_output(self, name: str, result: CommandResult) -> dict[str, int]:
        """Write a command's stdout and stderr tails as one artifact within the cap.

        Written from the captured tails' own blocks, never joined nor decoded; the first
        line says how many bytes of each stream are missing, counted from what the
        command printed.
        """
        out, err = result.stdout_tail, result.stderr_tail
        sep = b"\n" if out.kept and err.kept and out.slice(out.kept - 1, out.kept) != b"\n" else b""
        marker = sep + STDERR_MARKER if err.kept else b""
        # The tails already share the cap by the same rule, so this only makes room for
        # the marker: what they hold is what the file keeps, give or take its 16 bytes.
        keep_out, keep_err = split_cap(self.artifact_cap - len(marker), out.kept, err.kept)
        dropped_out, dropped_err = out.total - keep_out, err.total - keep_err
        note = b""
        if dropped_out or dropped_err:
            note = streams_note(
                [("stdout", dropped_out, keep_out), ("stderr", dropped_err, keep_err)]
            )
        body = [*out.views(last=keep_out), marker, *err.views(last=keep_err)]
        original = out.total + len(marker) + err.total
        self._write_pieces(name, [note, *body], original)
        return {"stdout_bytes_dropped": dropped_out, "stderr_bytes_dropped": dropped_err}

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
                skipped, tail = self._read_tail(fh, size)
            except OSError as exc:
                return self._unsaved(dest_name, size, exc)
        dropped = skipped + tail.dropped
        note = truncation_note(dropped, tail.kept) if dropped else b""
        return self._write_pieces(dest_name, [note, *tail.views()], skipped + tail.total)

    def _read_tail(self, fh: BinaryIO, size: int) -> tuple[int, TailBuffer]:
        """Bytes skipped by seeking, and the file's last `artifact_cap` bytes after them.

        Read to the end, not just `cap` bytes: /proc files report size 0 and a log
        grows while it is copied, so only the end tells how much was dropped. The bound
        keeps a file that never ends from holding the check until its timeout.
        """
        skipped = max(0, size - self.artifact_cap)
        fh.seek(skipped)
        tail = TailBuffer(self.artifact_cap)
        limit = COPY_LIMIT_CAPS * self.artifact_cap
        while tail.total < limit and (chunk := fh.read(COPY_CHUNK)):
            tail.write(chunk)
        return skipped, tail

    def _write(self, name: str, data: bytes, original_size: int) -> ArtifactInfo:
        view = memoryview(data)
        if len(view) <= self.artifact_cap:
            return self._write_pieces(name, [view], original_size)
        kept = view[len(view) - self.artifact_cap :]
        note = truncation_note(original_size - len(kept), len(kept))
        return self._write_pieces(name, [note, kept], original_size)

    def _write_pieces(
        self, name: str, pieces: Sequence[bytes | memoryview], original_size: int
    ) -> ArtifactInfo:
        """Write `pieces` in order (never joined: no copy of the evidence in memory).

        `original_size` is the evidence's size before the cap (without any note).
        """
        name = artifact_name(name)
        written = 0
        try:
            with self._dest(name).open("wb") as fh:
                for piece in pieces:
                    written += fh.write(piece)
        except OSError as exc:
            return self._unsaved(name, original_size, exc)
        info = ArtifactInfo(name, written, max(original_size, written))
        self.artifacts.append(info)
        return info

    def _unsaved(self, name: str, size: int, exc: OSError) -> ArtifactInfo:
        """Evidence that could not be written (disk full...): the verdict still counts."""
        name = artifact_name(name)
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
