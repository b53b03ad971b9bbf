"""`snapshot-agent report ARCHIVE`: render report.html again from an archive's report.json.

The page is made from the same data as at snapshot time: report.json and the heads of the
raw/ members (only their first bytes are read). So a snapshot taken with an older agent
gets the newer page. Its links to raw/ members are relative, as in the archive's own page:
they open when the page sits beside the archive's extracted raw/ directory (the command
says so in --help; the page's footer says so too, in the archive's copy and this one
alike, so the two stay byte for byte the same). The output is written beside nothing it
could harm: a new file (0600, like `decrypt`'s) in the current directory by default,
through a hidden temporary file renamed once complete, never over an existing file unless
--force, never over the archive. An encrypted archive (`.zip.enc`) is decrypted with
--identity into a private temporary directory, removed when done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from snapshot_agent.archive.crypto import (
    CHUNK,
    MAGIC,
    DecryptionError,
    decrypt,
    load_identity,
    write_whole,
)
from snapshot_agent.archive.writer import REPORT_JSON
from snapshot_agent.errors import UsageError
from snapshot_agent.pipeline.record import SCHEMA_VERSION

#: The handler of a subcommand, as cli.py calls it: parsed arguments in, exit code out.
Handler = Callable[[argparse.Namespace], int]

#: The default output's suffix, after the archive's stem.
OUTPUT_SUFFIX = ".report.html"
#: More than any report.json a snapshot writes; bounds what a crafted archive costs.
MAX_REPORT_JSON = 256 * 1024 * 1024
#: What a broken archive raises while its members are read.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


def render_archive(archive: Path, identity: Path | None = None) -> str:
    """The report.html of `archive` (a snapshot .zip, or a .zip.enc with `identity`)."""
    _check_input(archive)
    with _plain_zip(archive, identity) as plain:
        try:
            with zipfile.ZipFile(plain) as zf:
                report = _report_json(archive, zf)
                from snapshot_agent.render.raw import heads_from_zip

                raw = heads_from_zip(zf)
        except _DAMAGED as exc:
            raise UsageError(
                f"{archive}: not a readable ZIP archive ({exc}); pass a snapshot-*.zip "
                "(`snapshot-agent verify` tells what is damaged)"
            ) from None
        except OSError as exc:
            raise UsageError(f"{archive}: cannot be read ({exc.strerror or exc})") from None
    return _render(archive, report, raw)


def write_report(
    archive: Path, out: Path | None, *, force: bool = False, identity: Path | None = None
) -> Path:
    """Render `archive`'s report into `out` (see output_path); the path written."""
    target = output_path(archive, out, force=force)
    html = render_archive(archive, identity).encode()
    _write_atomically(target, html, force=force)
    return target


def output_path(archive: Path, out: Path | None, *, force: bool = False) -> Path:
    """OUT, or the default name (`<stem>.report.html`) in OUT when it is a directory or
    in the current directory; refused when it exists (unless `force`) or is the archive."""
    if out is not None and str(out) == "-":
        return out
    default = archive_stem(archive.name) + OUTPUT_SUFFIX
    target = Path(default) if out is None else out / default if out.is_dir() else out
    with contextlib.suppress(OSError):
        if target.exists() and os.path.samefile(target, archive):
            raise UsageError(f"{target}: is the archive itself; pass another -o FILE")
    if os.path.lexists(target) and not force:
        raise UsageError(f"{target}: exists; pass --force to replace it, or -o another FILE")
    if target.is_dir():
        raise UsageError(f"{target}: is a directory; pass -o FILE")
    return target


def archive_stem(name: str) -> str:
    """`snapshot-20261126-210025` for `snapshot-20261126-210025.zip` (or `.zip.enc`)."""
    stem = name.removesuffix(".enc").removesuffix(".zip")
    return stem if stem and stem != name else Path(name).stem or "report"


def _check_input(path: Path) -> None:
    """Refuse anything but an existing regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such file; pass a snapshot archive (snapshot-*.zip)"
        ) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: not a regular file; pass a snapshot archive (snapshot-*.zip)")


@contextlib.contextmanager
def _plain_zip(archive: Path, identity: Path | None) -> Iterator[Path]:
    """The archive as a plain ZIP: itself, or decrypted into a private temporary file."""
    try:
        with archive.open("rb") as fh:
            encrypted = fh.read(len(MAGIC)) == MAGIC
    except OSError as exc:
        raise UsageError(f"{archive}: cannot be read ({exc.strerror or exc})") from None
    if not encrypted:  # --identity is not needed then, and harmless
        yield archive
        return
    if identity is None:
        raise UsageError(
            f"{archive}: is encrypted; pass --identity PRIVATE.pem (a recipient's key), "
            "or run `snapshot-agent decrypt` first"
        )
    key = load_identity(identity)
    with tempfile.TemporaryDirectory(prefix="snapshot-agent-report.") as private:  # 0700
        plain = Path(private) / "archive.zip"
        try:
            with plain.open("wb") as dst, archive.open("rb", buffering=CHUNK) as src:
                decrypt(src, dst, key)
        except DecryptionError as exc:
            raise UsageError(
                f"{archive}: cannot be decrypted: {exc}; nothing was written"
            ) from None
        except OSError as exc:
            raise UsageError(
                f"{archive}: decrypting into {private} failed ({exc.strerror or exc}); "
                "set TMPDIR to a directory with room, or run `snapshot-agent decrypt` first"
            ) from None
        yield plain


def _report_json(archive: Path, zf: zipfile.ZipFile) -> dict[str, Any]:
    """The archive's report.json, checked to be a report this agent can render."""
    try:
        info = zf.getinfo(REPORT_JSON)
    except KeyError:
        raise UsageError(
            f"{archive}: has no {REPORT_JSON}: not a snapshot archive, or cut short; pass a "
            "snapshot-*.zip (`snapshot-agent verify` tells what is wrong with it)"
        ) from None
    if info.file_size > MAX_REPORT_JSON:
        raise UsageError(f"{archive}: its {REPORT_JSON} is {info.file_size} bytes; not a report")
    try:
        report = json.loads(zf.read(info))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{archive}: its {REPORT_JSON} is not valid JSON ({exc}); the archive is damaged"
        ) from None
    version = report.get("schema_version") if isinstance(report, dict) else None
    if type(version) is not int or version < 1:
        raise UsageError(
            f"{archive}: its {REPORT_JSON} has no valid schema_version; not a snapshot report"
        )
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"{archive}: its {REPORT_JSON} has schema_version {version}, newer than this "
            f"snapshot-agent reads ({SCHEMA_VERSION}); use a newer snapshot-agent"
        )
    if not _shaped(report):
        raise UsageError(
            f"{archive}: its {REPORT_JSON} is not a snapshot report (no snapshot, or no "
            "list of checks each with an id); the archive is damaged"
        )
    return report


def _shaped(report: dict[str, Any]) -> bool:
    """Whether the report has what every page shows: the snapshot and its checks by id."""
    checks = report.get("checks")
    return (
        isinstance(report.get("snapshot"), dict)
        and isinstance(checks, list)
        and all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in checks)
    )


def _render(archive: Path, report: dict[str, Any], raw: Any) -> str:
    """render_html, with a report.json of the wrong shape refused in one line."""
    from jinja2 import TemplateError

    from snapshot_agent.render.html import render_html

    try:
        return render_html(report, raw)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, TemplateError) as exc:
        raise UsageError(
            f"{archive}: its {REPORT_JSON} does not have the shape of a schema_version "
            f"{SCHEMA_VERSION} report ({type(exc).__name__}: {exc}); the archive is damaged"
        ) from None


def _write_atomically(target: Path, data: bytes, *, force: bool) -> None:
    """Write `data` whole to `target` (0600), or to stdout for `-`."""
    if str(target) == "-":  # the descriptor itself: the CLI wraps sys.stdout
        sys.stdout.flush()
        out = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)  # noqa: SIM115
        with out, contextlib.suppress(BrokenPipeError):  # `| head`: the reader has enough
            out.write(data)
        return
    try:
        write_whole(target, data, 0o600, replace=force)
    except FileExistsError:
        raise UsageError(
            f"{target}: appeared while rendering; pass --force to replace it"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"{target}: cannot be written ({exc.strerror or exc}); pass -o elsewhere"
        ) from None


def cmd_report(args: argparse.Namespace) -> int:
    """`snapshot-agent report ARCHIVE [-o FILE] [--force] [--identity KEY]`."""
    target = write_report(args.archive, args.output, force=args.force, identity=args.identity)
    if str(target) != "-":
        print(target)
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    version: Callable[[argparse.ArgumentParser], None],
) -> dict[str, Handler]:
    """Add `report` to the CLI's subcommands; its handler by name."""
    report = sub.add_parser(
        "report",
        help="render report.html again from a snapshot archive",
        description="Render the HTML report of ARCHIVE from its report.json and raw/ "
        "evidence, with this snapshot-agent's page (useful when the page improved after "
        "the snapshot was taken). Writes ./<archive stem>.report.html by default (e.g. "
        "snapshot-20261126-210025.report.html), or -o FILE (a directory: that name in it; "
        "- for stdout), as a new 0600 file: it is never written half, never over the "
        "archive, and never over an existing file unless --force. Prints its path. The "
        "page's links to raw/... evidence are relative, as in the archive's own page: "
        "they open only when the page sits beside the archive's extracted raw/ "
        "directory (unzip the archive and write -o into that directory, or move the "
        "page there); the raw heads shown inline work anywhere.",
    )
    version(report)
    report.add_argument(
        "archive", type=Path, metavar="ARCHIVE", help="a snapshot-*.zip (or .zip.enc)"
    )
    report.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="where to write (default: <archive stem>.report.html in the current directory); "
        "its raw/... links resolve only beside the archive's extracted raw/ directory",
    )
    report.add_argument("--force", "-f", action="store_true", help="replace an existing FILE")
    report.add_argument(
        "--identity",
        "-i",
        type=Path,
        metavar="PRIVATE.pem",
        help="for an encrypted .zip.enc: a recipient's X25519 private key (the archive is "
        "decrypted into a private temporary directory under $TMPDIR, removed when done)",
    )
    return {"report": cmd_report}
