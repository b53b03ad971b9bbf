"""The redaction corpus through the real CLI (`snapshot-agent redact FILE`), scored as
corpus/README.md says: no 10-character window of a secret's `core` may survive in the
redacted copy of its file (a leak), and benign values should survive whole (>= 90 %).

corpus/answers.json scores the visible sample (a copy of ../shared/redaction-corpus/);
corpus/extra-answers.json scores our own cases, in the same format: formats and token
kinds the sample lacks (kubeconfig, docker auth, dotenv with quoted values, my.cnf,
connection URLs, Java properties, a GCP service account's PEM with `\\n` escapes, a YAML
block-scalar PEM, HTTP headers and cookies, presigned GCS/S3/Azure URLs, Azure
connection strings, Iggy's runtime/current_config.toml, `systemctl show` Environment=,
/proc/PID/environ, stack traces with DSNs, SaaS tokens in prose) and benign look-alikes
(digests, UUIDs, commit hashes, versions, durations, sizes, public keys, certificates,
`key: app`, "partition key", "session closed", values already redacted). Its secrets are
random, generated once; the private keys are real keys made for this corpus only.

Each secret is its own test, so a failing run lists the leaks one by one.
"""

from __future__ import annotations

import configparser
import json
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import run_cli

CORPUS = Path(__file__).resolve().parent / "corpus"
ANSWERS = ("answers.json", "extra-answers.json")
WINDOW = 10  # a leak is any 10-character window of a secret's core that survives
MIN_BENIGN_KEPT = 0.90


def answers(name: str) -> dict[str, list[dict[str, str]]]:
    """One answers file: {"secrets": [...], "benign": [...]}."""
    return json.loads((CORPUS / name).read_text())


def corpus_files() -> list[str]:
    """Every file an answers file scores."""
    names = {item["file"] for name in ANSWERS for part in answers(name).values() for item in part}
    return sorted(names)


def windows(core: str) -> set[str]:
    """Every WINDOW-character window of `core` (the whole core when it is shorter)."""
    if len(core) <= WINDOW:
        return {core}
    return {core[i : i + WINDOW] for i in range(len(core) - WINDOW + 1)}


def surviving(core: str, text: str) -> list[str]:
    """The windows of `core` found in `text`, in order of position in the core."""
    return sorted((w for w in windows(core) if w in text), key=core.find)


def redact(path: Path, *args: str) -> str:
    """`snapshot-agent redact PATH` through the real CLI; its stdout."""
    proc = run_cli("redact", *args, path, timeout=60)
    assert proc.returncode == 0, f"redact {path.name}: exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def redacted() -> dict[str, str]:
    """Every corpus file redacted by the CLI (one process per file, run side by side)."""
    files = corpus_files()
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = pool.map(lambda name: redact(CORPUS / name), files)
        return dict(zip(files, texts, strict=True))


def secret_cases() -> Iterator[Any]:
    """One pytest case per planted secret, named file:kind."""
    for name in ANSWERS:
        for index, item in enumerate(answers(name)["secrets"]):
            yield pytest.param(item, id=f"{item['file']}:{item['kind']}:{index}")


@pytest.mark.parametrize("item", list(secret_cases()))
def test_no_window_of_a_secret_survives(item: dict[str, str], redacted: dict[str, str]) -> None:
    text = redacted[item["file"]]
    left = surviving(item["core"], text)
    lines = [line for line in text.splitlines() if any(w in line for w in left)]
    assert not left, (
        f"LEAK in {item['file']} ({item['kind']}): {len(left)} windows of the secret survive, "
        f"e.g. {left[0]!r}; lines: {lines[:3]}"
    )


def benign_score(name: str, redacted: dict[str, str]) -> tuple[float, list[str]]:
    """(fraction of benign values kept whole, the lost ones as 'file: value (kind)')."""
    items = answers(name)["benign"]
    lost = [
        f"{b['file']}: {b['value']!r} ({b['kind']})"
        for b in items
        if b["value"] not in redacted[b["file"]]
    ]
    return 1 - len(lost) / len(items), lost


@pytest.mark.parametrize("name", ANSWERS)
def test_benign_values_survive(name: str, redacted: dict[str, str]) -> None:
    kept, lost = benign_score(name, redacted)
    print(f"{name}: {kept:.1%} of benign values kept; lost: {lost}")
    assert kept >= MIN_BENIGN_KEPT, (
        f"{name}: only {kept:.1%} of benign values kept (want >= {MIN_BENIGN_KEPT:.0%}); "
        f"lost: {lost}"
    )


def test_every_extra_benign_value_survives(redacted: dict[str, str]) -> None:
    """Stricter than the 90 % bar, for our own look-alikes: every loss is listed as a bug."""
    _, lost = benign_score("extra-answers.json", redacted)
    assert not lost, f"{len(lost)} benign values lost: " + "; ".join(lost)


def test_extra_corpus_is_large_enough() -> None:
    extra = answers("extra-answers.json")
    assert len(extra["secrets"]) >= 25
    assert len({s["kind"] for s in extra["secrets"]}) >= 25
    assert len({s["file"] for s in extra["secrets"]}) >= 15
    for item in extra["secrets"] + extra["benign"]:  # the answers describe the files
        assert item["value"] in (CORPUS / item["file"]).read_bytes().decode(), item
        assert item.get("core", item["value"]) in item["value"], item


def _ini(text: str) -> object:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {s: dict(parser[s]) for s in parser.sections()}


#: How each structured corpus file is parsed; a redacted copy must still parse.
PARSERS = {
    "server.toml": tomllib.loads,
    "current_config.toml": tomllib.loads,
    "settings.json": json.loads,
    "docker-config.json": json.loads,
    "gcp-service-account.json": json.loads,
    "app.yaml": yaml.safe_load,
    "values.yaml": yaml.safe_load,
    "kubeconfig": yaml.safe_load,
    "aws-credentials.ini": _ini,
    "my.cnf": _ini,
}


def _shape(value: object) -> object:
    """The keys and nesting of a parsed document, without its scalar values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__ if isinstance(value, bool | int | float) else "scalar"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_redacted_structured_files_still_parse(name: str, redacted: dict[str, str]) -> None:
    parse = PARSERS[name]
    original = parse((CORPUS / name).read_text())
    after = parse(redacted[name])
    # Same keys, same nesting, numbers and booleans untouched: only secret strings change.
    assert _shape(after) == _shape(original)


def test_redaction_is_idempotent(redacted: dict[str, str], tmp_path: Path) -> None:
    """A redacted file redacts to itself: `[REDACTED:...]` and `***` are never redacted again."""
    for name, text in redacted.items():
        (tmp_path / name).write_text(text)
    with ThreadPoolExecutor(max_workers=8) as pool:
        again = dict(zip(redacted, pool.map(lambda n: redact(tmp_path / n), redacted), strict=True))
    changed = [name for name in redacted if again[name] != redacted[name]]
    assert not changed, f"redacting again changed {changed}"


@pytest.mark.parametrize("name", ["environ", "proc-environ"])
def test_environ_keeps_its_nul_separators(name: str, redacted: dict[str, str]) -> None:
    original = (CORPUS / name).read_bytes().decode()
    entries = redacted[name].split("\0")
    assert len(entries) == len(original.split("\0"))
    assert [e.partition("=")[0] for e in entries] == [
        e.partition("=")[0] for e in original.split("\0")
    ]
