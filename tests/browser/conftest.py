"""Fixtures of the browser tests: Debian's headless Chromium driven by Playwright, one per
session; a real snapshot of this machine (with fail and warn cards) extracted to a
directory; a hostile report rendered from it. No browser build is ever downloaded:
Playwright drives /usr/bin/chromium, and the tests are skipped when it is absent.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO, run_cli

CHROMIUM = Path("/usr/bin/chromium")
#: Nothing but the page: no updater, no sync, no field trials, no QUIC probing.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: The checks of the real snapshot: a representative few, quick ones.
ONLY = "system,memory.usage,cpu.load,cpu.usage,disk.usage,disk.mounts,sysctl.vm,process.top"
#: Thresholds that make this machine's snapshot warn, and a command check that fails with
#: error lines in its raw output (a line it prints that no other field holds: RAW_WORD).
CONFIG = """\
checks:
  thresholds:
    cpu.load: {warn_per_core: 0.0001}
    disk.usage: {warn_pct: 1, fail_pct: 2}
  commands:
    - id: custom.boom
      title: Boom
      command: [sh, -c, "echo raw$((6*7))quokka; echo 'fatal: error: disk refused'; exit 3"]
      timeout_s: 5
"""
RAW_WORD = "raw42quokka"
RAW_PATH = "raw/custom.boom/output.txt"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip every browser test, saying why, on a machine without Debian's chromium."""
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is absent (apt-get install chromium)")
    for item in items:
        if "tests/browser/" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's) for these tests, closed after them: the sync API
    runs an event loop on this thread, which asyncio.run in later tests would trip on."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def artifacts() -> Path:
    """Where screenshots go: $SNAPSHOT_AGENT_ARTIFACTS, else test-artifacts/ (gitignored)."""
    path = Path(os.environ.get("SNAPSHOT_AGENT_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Snapshot:
    """A real archive, extracted: its report.html and what it was made from."""

    archive: Path
    root: Path

    @property
    def page(self) -> Path:
        return self.root / "report.html"

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.root / "report.json").read_text())


@pytest.fixture(scope="package")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """A real snapshot of this machine through the CLI, extracted into a directory."""
    base = tmp_path_factory.mktemp("browser-snapshot")
    config = base / "config.yaml"
    config.write_text(CONFIG)
    proc = run_cli("run", "-q", "-o", base, "-c", config, "--only", f"{ONLY},custom.boom")
    assert proc.returncode == 1, proc.stderr  # custom.boom fails
    archive = Path(proc.stdout.strip())
    root = base / "x"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root)
    return Snapshot(archive, root)


@dataclass
class Tab:
    """A page in a fresh browser context, with everything it logged and requested."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def count(self) -> int:
        """The page's own visible count (#visible-count)."""
        return int(self.page.locator("#visible-count").inner_text())

    def shown(self) -> list[str]:
        """The ids of the check cards not hidden."""
        return self.page.eval_on_selector_all(
            "article.check:not([hidden])", "cards => cards.map(c => c.id)"
        )

    def off_page_requests(self) -> list[str]:
        """Every request but the document itself (and data: URLs, which never leave)."""
        document = self.page.url.split("#")[0]
        return [
            u for u in self.requests if u.split("#")[0] != document and not u.startswith("data:")
        ]


def offline(context: Any) -> Any:
    """The context, with every request but file:// refused before it leaves."""
    context.route(lambda url: not url.startswith("file:"), lambda route: route.abort())
    return context


@pytest.fixture(scope="package")
def shared_context(browser: Any) -> Iterator[Any]:
    """The default browser context, shared by the tests (a new page each is fresh enough:
    the page keeps no state outside itself)."""
    context = offline(browser.new_context())
    yield context
    context.close()


@pytest.fixture
def open_page(browser: Any, shared_context: Any) -> Iterator[Any]:
    """open_page(path, fragment="", **context options) -> Tab, logging errors, dialogs and
    requests: a new page in the shared context, or in a new one given options."""
    opened: list[Any] = []

    def opener(path: Path, fragment: str = "", **options: Any) -> Tab:
        if options:
            context = offline(browser.new_context(**options))
            opened.append(context)
        else:
            context = shared_context
        page = context.new_page()
        opened.append(page)
        tab = Tab(page)
        page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: tab.errors.append(f"page error: {e}"))
        page.on("request", lambda r: tab.requests.append(r.url))

        def dialog(d: Any) -> None:
            tab.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        page.goto(path.as_uri() + fragment)
        return tab

    yield opener
    for thing in reversed(opened):
        thing.close()


#: Text from a node that must stay text: markup, a template expression, a direction
#: override, a NUL, a line separator and a `javascript:` URL.
PAYLOADS = (
    "<script>window.__xss=1</script>",
    '"><img src=x onerror="window.__xss=1">',
    "</script><script>window.__xss=1</script>",
    "{{7*7}}",
    "\u202eevil\u202c",
    "javascript:window.__xss=1",
    "<!-- nul\x00byte \u2028 -->",
)
#: One line of 1 MiB.
LONG_LINE = "0123456789abcdef" * 65536
#: A word only one finding of the hostile page holds (for the search of findings).
FINDING_WORD = "findingzebra77"
#: The check the hostile report says timed out (for the waterfall's mark).
TIMED_OUT = "sysctl.vm"
#: A check whose id is itself hostile (a crafted report.json re-rendered by `report`).
HOSTILE_ID = 'custom.x"><img src=x onerror="window.__xss=1">'


@dataclass
class Hostile:
    """A page rendered in-process from a real report.json laced with PAYLOADS."""

    page: Path
    report: dict[str, Any]


def lace(report: dict[str, Any]) -> dict[str, Any]:
    """The report with PAYLOADS in every field the page shows, and redaction said off."""
    mixed = " ".join(PAYLOADS)
    snap = report["snapshot"]
    snap["node"]["hostname"] = mixed
    snap["node"]["deployment_id"] = PAYLOADS[1]
    snap["options"]["redact_secrets"] = False
    copy = json.loads(json.dumps(next(c for c in report["checks"] if c["id"] == "custom.boom")))
    copy.update(id=HOSTILE_ID, category=PAYLOADS[0], title=mixed)
    report["checks"].append(copy)
    for i, check in enumerate(report["checks"]):
        payload = PAYLOADS[i % len(PAYLOADS)]
        check["title"] = f"{check['title']} {payload}"
        check["summary"] = f"{check['summary']} {payload}"
        check["description"] = f"{check['description']} {mixed}"
        check["findings"].append(
            {
                "severity": "info",
                "message": mixed,
                "remediation": f"{PAYLOADS[5]} {PAYLOADS[1]}",
                "subject": PAYLOADS[0],
            }
        )
        check["data"] = {
            **check["data"],
            PAYLOADS[0]: mixed,
            "hostile_rows": [{PAYLOADS[1]: PAYLOADS[3], "n": n} for n in (3, 1, 2)],
        }
    slow = next(c for c in report["checks"] if c["id"] == TIMED_OUT)
    slow.update(status="timeout", duration_ms=30_000)
    first = report["checks"][0]
    first["findings"].append(
        {
            "severity": "info",
            "message": f"{FINDING_WORD} {LONG_LINE}",
            "remediation": "",
            "subject": "",
        }
    )
    first["data"]["long"] = LONG_LINE
    return report


@pytest.fixture(scope="package")
def hostile(snapshot: Snapshot, tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    """The snapshot's report.json and raw heads laced with PAYLOADS, rendered by render_html."""
    from snapshot_agent.render.html import render_html
    from snapshot_agent.render.raw import RawHead, heads_from_zip

    report = lace(snapshot.report)
    with zipfile.ZipFile(snapshot.archive) as zf:
        heads = heads_from_zip(zf)
    raw = {
        path: RawHead(path, "\n".join([*PAYLOADS, LONG_LINE[:16384], head.text]), head.size, True)
        for path, head in heads.items()
    }
    hostile_path = f"raw/{HOSTILE_ID}/{PAYLOADS[1]}"
    raw[hostile_path] = RawHead(hostile_path, "\n".join(PAYLOADS), 10 * 2**20, True)
    root = tmp_path_factory.mktemp("hostile")
    page = root / "report.html"
    page.write_text(render_html(report, raw))
    return Hostile(page, report)
