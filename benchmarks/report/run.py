#!/usr/bin/env python3
"""report.html: its size, the time to render it, and the time to its first paint in Chromium.

Usage: .venv/bin/python benchmarks/report/run.py [--runs 5] [--json] [--check]
                                                  [--screenshot docs/report.png] [--keep DIR]

Two pages:
- full: a real snapshot of this machine, every check (`snapshot-agent run`), as its
  archive holds it, and rendered again from it (`render_html(report, heads_from_zip)`);
- heavy: that report made heavy: the iggy.* checks of a fixture Iggy node (6 streams x 5
  topics x 3 partitions, tests/iggy/fixture.py) measured by the real agent, 40 more
  findings on every check, a data table of 2,000 rows, and 120 raw files of 10 MB whose
  heads are full (HEAD_BYTES each).

For each: the HTML's size; the server-side render time (render_html in this process,
median of --runs after one warm-up); and in Debian's headless Chromium (/usr/bin/chromium,
driven by Playwright; no browser is downloaded), for --runs fresh pages (a new browser
context each, after one warm-up), the median time from navigation start to the first
contentful paint, to DOMContentLoaded and to the end of the load event, as the page's
Performance API gives them. Targets (issue #13): the full snapshot's page <= 1 MB and
rendered (first contentful paint and load) in < 0.5 s. --check exits 1 when one is missed.
--screenshot writes a PNG of the full page's top (1280 x 900, light scheme), the README's.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.iggy.fixture builds the Iggy node

from snapshot_agent.render.html import render_html  # noqa: E402
from snapshot_agent.render.raw import HEAD_BYTES, RawHead, heads_from_zip  # noqa: E402
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

MB = 1_000_000
TARGET_BYTES = MB
TARGET_S = 0.5
#: Navigation start (0) to first contentful paint, DOMContentLoaded and load end, in ms.
TIMINGS = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    return {fcp: fcp ? fcp.startTime : null, dcl: nav.domContentLoadedEventEnd,
            load: nav.loadEventEnd};
}"""


def log(message: str) -> None:
    print(f"report bench: {message}", file=sys.stderr, flush=True)


def agent() -> list[str]:
    """The agent command: this repo's venv, else snapshot-agent on PATH."""
    venv = REPO / ".venv/bin/snapshot-agent"
    return [str(venv)] if venv.exists() else ["snapshot-agent"]


def snapshot(out: Path, *args: str) -> Path:
    """A real snapshot through the CLI; its archive."""
    cmd = [*agent(), "run", "-q", "--json", "-o", str(out), "--no-include-iggy", *args]
    env = {**os.environ, "SNAPSHOT_AGENT_CONFIG": os.devnull}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode not in (0, 1):
        sys.exit(f"report bench: {' '.join(cmd)} failed: {proc.stderr.strip()}")
    return Path(json.loads(proc.stdout)["path"])


def read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, RawHead], bytes]:
    """report.json, the raw heads and report.html of an archive."""
    with zipfile.ZipFile(archive) as zf:
        return json.loads(zf.read("report.json")), heads_from_zip(zf), zf.read("report.html")


def iggy_checks(work: Path) -> tuple[list[dict[str, Any]], dict[str, RawHead]]:
    """The iggy.* checks of a fixture Iggy node (data dir, config, logs), measured by the agent."""
    from tests.iggy.fixture import Spec, build, log_lines

    node = work / "iggy-node"
    spec = Spec(layout="0.8", streams=6, topics=5, partitions=3, segments=2)
    built = build(node, spec)
    logs = Path(built.data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "iggy-server.log").write_text("".join(log_lines(2000)))
    roots = ", ".join(f"{n}: {node / n}" for n in ("proc", "sys", "etc", "run"))
    config = work / "iggy.yaml"
    config.write_text(
        f"checks:\n  roots: {{root: {node}, {roots}, var_log: {node / 'var/log'}}}\n"
        f"iggy:\n  data_dir: {built.node_data_dir}\n  config_path: {built.node_config_path}\n"
    )
    out = work / "iggy-snap"
    out.mkdir()
    report, heads, _ = read_archive(snapshot(out, "-c", str(config), "--only", "iggy"))
    return report["checks"], heads


def heavy(
    report: dict[str, Any], heads: dict[str, RawHead], work: Path
) -> tuple[dict[str, Any], dict[str, RawHead]]:
    """The full report with the Iggy checks, many findings, a long table and big raw files."""
    report, raw = copy.deepcopy(report), dict(heads)
    checks, iggy_heads = iggy_checks(work)
    report["checks"] = [c for c in report["checks"] if c["category"] != "iggy"] + checks
    raw.update(iggy_heads)
    for check in report["checks"]:
        for i in range(40):
            severity = ("info", "warn", "fail")[i % 3]
            check["findings"].append(
                {
                    "severity": severity,
                    "message": f"{check['id']} finding {i}: /dev/sd{chr(97 + i % 26)} "
                    f"latency {i * 7.3:.1f} ms over the window, queue depth {i * 3}",
                    "remediation": f"Look at `iostat -x 1` for device {i}; see raw/{check['id']}.",
                    "subject": f"/mnt/data{i}",
                }
            )
    busiest = report["checks"][0]
    busiest["data"]["rows"] = [
        {"pid": 1000 + n, "name": f"worker-{n}", "rss_kib": (n * 7919) % 900_000, "cpu_pct": n % 97}
        for n in range(2000)
    ]
    line = "2026-11-26T12:00:00Z iggy-server[4242]: WARN shard 3 partition 7 append took {} ms\n"
    text = "".join(line.format(n) for n in range(HEAD_BYTES // len(line) + 1))[:HEAD_BYTES]
    for n in range(120):
        path = f"raw/{busiest['id']}/big-{n:03d}.log"
        raw[path] = RawHead(path, text[: text.rfind("\n") + 1], 10 * 2**20, True)
        busiest["artifacts"].append(
            {
                "name": f"big-{n:03d}.log",
                "size": 10 * 2**20,
                "original_size": 10 * 2**20,
                "truncated": False,
            }
        )
    return report, raw


def render_times(
    report: dict[str, Any], raw: dict[str, RawHead], runs: int
) -> tuple[str, list[float]]:
    """The page, and the seconds each of `runs` renders took (after one warm-up)."""
    html = render_html(report, raw)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        render_html(report, raw)
        times.append(time.perf_counter() - start)
    return html, times


def browser_times(browser: Any, page: Path, runs: int) -> dict[str, list[float]]:
    """Seconds to FCP, DOMContentLoaded and load for `runs` fresh pages (after a warm-up)."""
    out: dict[str, list[float]] = {"fcp": [], "dcl": [], "load": []}
    for n in range(runs + 1):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        errors: list[str] = []
        tab.on("console", lambda m, errors=errors: m.type == "error" and errors.append(m.text))
        tab.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        tab.goto(page.as_uri(), wait_until="load")
        for _ in range(200):  # polled from here: wait_for_function's eval is refused by the CSP
            timings = tab.evaluate(TIMINGS)
            if timings["load"] > 0 and timings["fcp"] is not None:
                break
            tab.wait_for_timeout(25)
        else:
            sys.exit(f"report bench: {page} never painted or loaded: {timings}")
        context.close()
        if errors:
            log(f"{page.name}: console errors: {errors[:3]}")
        if n:  # the first is a warm-up
            for key in out:
                out[key].append(timings[key] / 1000)
    return out


def screenshot(browser: Any, page: Path, path: Path) -> None:
    """The top of the page as the README shows it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    tab = context.new_page()
    tab.goto(page.as_uri(), wait_until="load")
    path.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=path)
    context.close()
    log(f"screenshot {path}: {path.stat().st_size / 1024:.0f} KiB")


def machine() -> str:
    """One line about this machine, for the results."""
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    distro = platform.freedesktop_os_release().get("PRETTY_NAME", "?")
    return (
        f"{os.cpu_count()} CPU ({cpu}), {mem:.1f} GiB; {distro}, kernel {platform.release()}; "
        f"Python {platform.python_version()}; {chromium.strip()}"
    )


def commit() -> str:
    proc = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD"]).returncode
    return proc.stdout.strip() + ("+changes" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--screenshot", type=Path, help="write the full page's top as a PNG")
    parser.add_argument("--keep", type=Path, help="keep the pages and archives in this directory")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"report bench: {CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="report-bench."))
    try:
        log("taking a full snapshot of this machine (every check)")
        archive = snapshot(work)
        report, heads, stored = read_archive(archive)
        log(f"{len(report['checks'])} checks; building the heavy report")
        pages = {"full": (report, heads), "heavy": heavy(report, heads, work)}
        results: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "commit": commit(),
            "machine": machine(),
            "runs": args.runs,
            "pages": {},
        }
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for name, (rep, raw) in pages.items():
                html, render = render_times(rep, raw, args.runs)
                path = work / name / "report.html"
                path.parent.mkdir()
                path.write_text(html)
                if name == "full":
                    with zipfile.ZipFile(archive) as zf:  # the raw/ links resolve
                        zf.extractall(path.parent, [m for m in zf.namelist() if m != "report.html"])
                log(f"{name}: {len(html.encode()) / 1024:.0f} KiB; timing it in Chromium")
                times = browser_times(browser, path, args.runs)
                results["pages"][name] = {
                    "checks": len(rep["checks"]),
                    "findings": sum(len(c["findings"]) for c in rep["checks"]),
                    "raw_heads": len(raw),
                    "bytes": len(html.encode()),
                    "same_as_archive": name == "full" and html.encode() == stored,
                    "render_s": statistics.median(render),
                    **{f"{k}_s": statistics.median(v) for k, v in times.items()},
                    "runs_s": {"render": render, **times},
                }
            if args.screenshot:
                screenshot(browser, work / "full/report.html", args.screenshot)
            browser.close()
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full = results["pages"]["full"]
    results["targets_met"] = {
        "size <= 1 MB": full["bytes"] <= TARGET_BYTES,
        "first paint < 0.5 s": full["fcp_s"] < TARGET_S,
        "load < 0.5 s": full["load_s"] < TARGET_S,
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 1 if args.check and not all(results["targets_met"].values()) else 0


def print_table(results: dict[str, Any]) -> None:
    """The results as a Markdown table, as benchmarks/README.md records them."""
    print(f"{results['date']}  {results['commit']}  {results['machine']}")
    print(f"medians of {results['runs']} runs")
    head = ["page", "checks", "findings", "raw heads", "size", "render (server)"]
    print("| " + " | ".join([*head, "first paint", "DOMContentLoaded", "load"]) + " |")
    print("|" + " --- |" * (len(head) + 3))
    for name, p in results["pages"].items():
        ms = [f"{p[k] * 1000:.0f} ms" for k in ("render_s", "fcp_s", "dcl_s", "load_s")]
        size = f"{p['bytes'] / 1024:.0f} KiB ({p['bytes'] / MB:.2f} MB)"
        row = [name, str(p["checks"]), str(p["findings"]), str(p["raw_heads"]), size, *ms]
        print("| " + " | ".join(row) + " |")
    met = results["targets_met"]
    print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    full = results["pages"]["full"]
    print(f"full page identical to the archive's report.html: {full['same_as_archive']}")


if __name__ == "__main__":
    sys.exit(main())
