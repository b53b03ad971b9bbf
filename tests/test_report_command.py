"""`snapshot-agent report ARCHIVE`: the page rendered again from a real archive, through the CLI."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from snapshot_agent.pipeline.report_command import archive_stem

from .conftest import run_cli


def only_snapshot(out: Path, *extra: str) -> Path:
    """A real snapshot of this machine (a few checks), through the CLI; the archive."""
    proc = run_cli("run", "-q", "-o", out, "--only", "system.info,memory.usage,cpu.load", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return Path(proc.stdout.strip())


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return only_snapshot(tmp_path_factory.mktemp("snap"))


def member(archive: Path, name: str) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        return zf.read(name)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def one_line_error(proc: object, *needles: str) -> str:
    """The stderr of a refused command: exit 2, one line, no traceback, naming `needles`."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)  # type: ignore[attr-defined]
    err: str = proc.stderr  # type: ignore[attr-defined]
    assert err.startswith("snapshot-agent: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_rerendered_page_is_the_archives_page(tmp_path: Path, archive: Path) -> None:
    """Same report.json, same raw heads, same templates: the same bytes as at snapshot time."""
    proc = run_cli("report", archive, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    target = tmp_path / archive.name.replace(".zip", ".report.html")
    assert proc.stdout == f"{target.name}\n"
    assert target.read_bytes() == member(archive, "report.html")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert listing(tmp_path) == [target.name]  # no temporary file left


def test_output_to_a_file_a_directory_or_stdout(tmp_path: Path, archive: Path) -> None:
    page = member(archive, "report.html")
    out = tmp_path / "page.html"
    proc = run_cli("report", archive, "-o", out)
    assert (proc.returncode, proc.stdout) == (0, f"{out}\n"), proc.stderr
    assert out.read_bytes() == page
    proc = run_cli("report", archive, "--output", tmp_path)
    default = tmp_path / archive.name.replace(".zip", ".report.html")
    assert (proc.returncode, proc.stdout) == (0, f"{default}\n"), proc.stderr
    assert default.read_bytes() == page
    proc = run_cli("report", archive, "-o", "-")
    assert proc.returncode == 0 and proc.stdout.encode() == page


def test_an_existing_output_is_replaced_only_with_force(tmp_path: Path, archive: Path) -> None:
    out = tmp_path / "page.html"
    out.write_text("mine")
    one_line_error(run_cli("report", archive, "-o", out), str(out), "--force")
    assert out.read_text() == "mine"
    proc = run_cli("report", archive, "-o", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == member(archive, "report.html")
    assert listing(tmp_path) == ["page.html"]


def test_never_over_the_archive(tmp_path: Path, archive: Path) -> None:
    before = archive.read_bytes()
    one_line_error(run_cli("report", archive, "-o", archive, "--force"), "the archive itself")
    link = tmp_path / "link.html"
    link.symlink_to(archive)
    one_line_error(run_cli("report", archive, "-o", link, "--force"), "the archive itself")
    assert archive.read_bytes() == before


def test_encrypted_archive_with_identity(tmp_path: Path) -> None:
    """A .zip.enc is decrypted into a private temporary directory, removed after."""
    proc = run_cli("keygen", "--out", tmp_path / "keys")
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "config.yaml"
    config.write_text(f"archive: {{encrypt_to: [{tmp_path / 'keys/snapshot-recipient.pub'}]}}\n")
    encrypted = only_snapshot(tmp_path, "-c", config)
    assert encrypted.name.endswith(".zip.enc")
    key = tmp_path / "keys/snapshot-recipient.pem"
    plain = Path(
        run_cli("decrypt", encrypted, "--key", key, "-o", tmp_path / "p.zip").stdout.strip()
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}

    err = one_line_error(run_cli("report", encrypted, cwd=tmp_path, env=env), str(encrypted))
    assert "--identity" in err and "snapshot-agent decrypt" in err
    proc = run_cli("report", encrypted, "--identity", key, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / encrypted.name.replace(".zip.enc", ".report.html")
    assert proc.stdout == f"{page.name}\n"
    assert page.read_bytes() == member(plain, "report.html")
    assert listing(temp) == []

    other = tmp_path / "other"
    assert run_cli("keygen", "--out", other).returncode == 0
    proc = run_cli("report", encrypted, "-i", other / "snapshot-recipient.pem", "-o", "x.html",
                   cwd=tmp_path, env=env)  # fmt: skip
    one_line_error(proc, str(encrypted), "not encrypted to this key")
    assert listing(temp) == [] and not (tmp_path / "x.html").exists()


def rezipped(archive: Path, path: Path, replace: dict[str, bytes | None]) -> Path:
    """`archive`'s members copied into `path`, with `replace` changing (None: dropping) some."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = replace.get(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
    return path


def report_json(archive: Path, **changes: object) -> bytes:
    doc = json.loads(member(archive, "report.json"))
    doc.update(changes)
    return json.dumps(doc).encode()


BAD_INPUTS = {
    "missing": (lambda a, d: d / "nope.zip", "no such file"),
    "a directory": (lambda a, d: d, "not a regular file"),
    "not a zip": (lambda a, d: _write(d / "notes.zip", b"hello\n" * 100), "not a readable ZIP"),
    # Cut inside the stored iggy-data.zip, the archive may read as that ZIP: either way.
    "cut short": (lambda a, d: _write(d / "cut.zip", a.read_bytes()[:5000]), "snapshot-*.zip"),
    "no report.json": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": None}),
        "has no report.json",
    ),
    "garbage json": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": b'{"schema_version": 1, '}),
        "not valid JSON",
    ),
    "json list": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": b"[1, 2]"}),
        "no valid schema_version",
    ),
    "newer schema": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": report_json(a, schema_version=99)}),
        "schema_version 99, newer",
    ),
    "text schema": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": report_json(a, schema_version="1")}),
        "no valid schema_version",
    ),
    "no checks": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": report_json(a, checks=7)}),
        "not a snapshot report",
    ),
    "no snapshot": (
        lambda a, d: rezipped(a, d / "x.zip", {"report.json": b'{"schema_version": 1}'}),
        "not a snapshot report",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, archive: Path, case: str) -> None:
    make, needle = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = make(archive, inputs)
    work = tmp_path / "work"
    work.mkdir()
    one_line_error(run_cli("report", bad, cwd=work), str(bad), needle)
    assert listing(work) == []


@pytest.mark.parametrize("where", ["no/such/dir/page.html", "/proc/page.html"])
def test_unwritable_output_is_one_line(tmp_path: Path, archive: Path, where: str) -> None:
    out = tmp_path / where if not where.startswith("/") else Path(where)
    one_line_error(run_cli("report", archive, "-o", out), str(out.parent))
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("snapshot-20261126-210025.zip", "snapshot-20261126-210025"),
        ("snapshot-20261126-210025.zip.enc", "snapshot-20261126-210025"),
        ("copy.ZIP", "copy"),
        (".zip", ".zip"),
        ("archive", "archive"),
    ],
)
def test_default_name(name: str, stem: str) -> None:
    assert archive_stem(name) == stem


def test_help_says_where_the_page_goes() -> None:
    proc = run_cli("report", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "<archive stem>.report.html in the current directory" in text
    assert "--force" in text and "--identity" in text


def test_help_says_the_raw_links_need_the_extracted_archive() -> None:
    """A page written outside the extracted archive has dead raw/... links: --help says so."""
    proc = run_cli("report", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "links to raw/... evidence are relative" in text
    assert "only when the page sits beside the archive's extracted raw/ directory" in text
    assert "its raw/... links resolve only beside the archive's extracted raw/ directory" in text


def test_the_rerendered_page_says_where_its_raw_links_resolve(
    tmp_path: Path, archive: Path
) -> None:
    """The note is in the archive's page and the re-rendered one alike (same bytes)."""
    out = tmp_path / "elsewhere.html"
    assert run_cli("report", archive, "-o", out).returncode == 0
    page = out.read_text()
    assert page == member(archive, "report.html").decode()
    assert '<span id="raw-links-note">The <code>raw/…</code> links are relative' in page
