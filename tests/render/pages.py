"""Reports to render (ordinary, hostile, heavy) and a parsed view of the page they give."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from snapshot_agent.core.results import STATUS_ORDER
from snapshot_agent.render.raw import RawHead, head_of

#: Text a hostile node can put anywhere: markup, a script end, template syntax, a
#: direction override, NUL and other controls, a lone surrogate, line separators.
HOSTILE = (
    "<script>alert(1)</script></script><!-- {{ 7*7 }} {% if %} \"' & "
    "\u202eevil\u202c \x00nul \x1b[2J \ud800 \u2028\u2029 <img src=x onerror=alert(2)>"
)
BIG = "A" * (10 * 1024 * 1024)  # one 10 MB line


def check(
    id: str,
    status: str = "pass",
    *,
    category: str | None = None,
    summary: str | None = None,
    duration_ms: int = 100,
    findings: list[dict[str, str]] | None = None,
    data: dict[str, Any] | None = None,
    artifacts: list[str] | None = None,
    commands: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A check as report.json has it."""
    return {
        "id": id,
        "category": category or id.split(".")[0],
        "title": id.replace(".", " ").title(),
        "description": f"What {id} looks at.",
        "view": None,
        "status": status,
        "summary": summary if summary is not None else f"{id} says {status}",
        "duration_ms": duration_ms,
        "findings": findings or [],
        "data": data or {},
        "artifacts": [
            {"name": n, "size": 10, "original_size": 10, "truncated": False}
            for n in artifacts or []
        ],
        "commands": commands or [],
    }


def finding(severity: str, message: str, remediation: str = "", subject: str = "") -> dict:
    """A finding as report.json has it."""
    return {
        "severity": severity,
        "message": message,
        "remediation": remediation,
        "subject": subject,
    }


def report(checks: list[dict[str, Any]], *, redact: bool = True, **node: Any) -> dict[str, Any]:
    """A report.json document around `checks`."""
    summary = {str(s): sum(c["status"] == s for c in checks) for s in STATUS_ORDER}
    return {
        "schema_version": 1,
        "agent_version": "0.1.0",
        "snapshot": {
            "name": "snapshot-20261126-183000",
            "created_at": "2026-11-26T18:30:00Z",
            "completed_at": "2026-11-26T18:30:07Z",
            "node": {"name": "events-prod-1", "hostname": "ip-10-0-0-1", **node},
            "options": {"redact_secrets": redact, "include_iggy": True, "only": [], "skip": []},
        },
        "summary": summary,
        "verdict": next((str(s) for s in STATUS_ORDER if summary[str(s)]), "pass"),
        "checks": checks,
    }


def heads(files: dict[str, bytes]) -> dict[str, RawHead]:
    """Raw heads of members with these contents (as RawHeads would have kept them)."""
    from snapshot_agent.render.raw import HEAD_BYTES

    return {path: head_of(path, data[:HEAD_BYTES], len(data)) for path, data in files.items()}


def hostile_report() -> tuple[dict[str, Any], dict[str, RawHead]]:
    """Hostile text in every field a node controls, a 10 MB line in data, summary and raw."""
    data = {
        HOSTILE: HOSTILE,
        "big": BIG,
        "rows": [{HOSTILE: HOSTILE, "n": 1}, {"n": 2, "x": BIG}],
        "nested": {"a": {"b": [HOSTILE, {"c": HOSTILE}]}},
    }
    checks = [
        check(
            "system.hostile",
            "fail",
            summary=HOSTILE + BIG,
            findings=[finding("fail", HOSTILE, HOSTILE + " `" + HOSTILE + "`", HOSTILE)],
            data=data,
            artifacts=["out.txt", "big.txt", "binary.bin"],
            commands=[{"argv": [HOSTILE, "x"], "exit_code": 1, "error": HOSTILE}],
        ),
        check(f"{HOSTILE}.cat", "warn", category=HOSTILE, summary=HOSTILE),
    ]
    doc = report(checks, redact=False, name=HOSTILE, deployment_id=HOSTILE)
    raw = heads(
        {
            "raw/system.hostile/out.txt": HOSTILE.encode("utf-8", "surrogatepass") * 50,
            "raw/system.hostile/big.txt": BIG.encode(),
            "raw/system.hostile/binary.bin": bytes(range(256)) * 300 + b"\xff\xfe\xc3",
        }
    )
    return doc, raw


def heavy_report() -> tuple[dict[str, Any], dict[str, RawHead]]:
    """A big snapshot: 80 checks with wide tables, many findings and 3 large raw files each."""
    checks, files = [], {}
    for i in range(80):
        status = ["fail", "warn", "pass", "pass", "skipped"][i % 5]
        cid = f"area{i % 12}.check{i}"
        rows = [
            {"name": f"item-{i}-{r}", "value": r * 1.5, "path": f"/var/lib/iggy/{r}" * 3}
            for r in range(400)
        ]
        checks.append(
            check(
                cid,
                status,
                duration_ms=37 * i,
                findings=[
                    finding(status, f"problem {n} of {cid}", "fix it like so") for n in range(5)
                ]
                if status in ("fail", "warn")
                else [],
                data={"rows": rows, "count": 400, "values": {f"k{n}": str(n) for n in range(500)}},
                artifacts=["a.log", "b.log", "c.log"],
            )
        )
        for name in ("a.log", "b.log", "c.log"):
            lines = (f"{n:06d} ERROR something failed on line {n}\n" for n in range(1000))
            files[f"raw/{cid}/{name}"] = "".join(lines).encode()
    return report(checks), heads(files)


@dataclass
class Page:
    """report.html, parsed: every start tag with its attributes, inline block contents."""

    html: str
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    scripts: list[tuple[dict[str, str], str]] = field(default_factory=list)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        """Attributes of every `tag` element whose attributes include `attrs`
        (`class_` matches one class among several)."""
        out = []
        for name, have in self.tags:
            if name != tag:
                continue
            ok = True
            for key, want in attrs.items():
                if key == "class_":
                    ok &= want in have.get("class", "").split()
                else:
                    ok &= have.get(key.replace("_", "-")) == want
            if ok:
                out.append(have)
        return out

    def data(self) -> Any:
        """The embedded report data."""
        [text] = [body for attrs, body in self.scripts if attrs.get("id") == "report-data"]
        return json.loads(text)


class _Parser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.block: tuple[str, dict[str, str]] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.page.tags.append((tag, found))
        if tag in ("style", "script"):
            self.block, self.text = (tag, found), []

    def handle_data(self, data: str) -> None:
        if self.block:
            self.text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self.block and tag == self.block[0]:
            body = "".join(self.text)
            if tag == "style":
                self.page.styles.append(body)
            else:
                self.page.scripts.append((self.block[1], body))
            self.block = None


def parse(html: str) -> Page:
    """The page of `html`."""
    page = Page(html)
    parser = _Parser(page)
    parser.feed(html)
    parser.close()
    return page
