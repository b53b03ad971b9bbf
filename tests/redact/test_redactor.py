"""The redactor's machinery (merging, hints, streaming, long lines), with small rules of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from snapshot_agent.config import RedactionConfig
from snapshot_agent.redact.audit import RedactionAudit
from snapshot_agent.redact.catalog import redactor_for
from snapshot_agent.redact.redactor import MAX_LINE, Redactor
from snapshot_agent.redact.rule import Hit


@dataclass
class Word:
    """Hits every occurrence of a word (a stateless rule)."""

    word: str
    name: str = "word"
    label: str = "word"
    description: str = "a word"
    examples: tuple[str, ...] = ()
    benign: tuple[str, ...] = ()
    open: bool = False

    @property
    def hints(self) -> tuple[str, ...]:
        return (self.word.lower(),)

    def scanner(self) -> Word:
        return self

    def scan(self, line: str) -> list[Hit]:
        return [
            Hit(m.start(), m.end(), self.name, self.label)
            for m in re.finditer(re.escape(self.word), line, re.I)
        ]


@dataclass
class Block:
    """Redacts whole lines between BEGIN and END (a stateful rule)."""

    name: str = "block"
    description: str = "a block"
    examples: tuple[str, ...] = ()
    benign: tuple[str, ...] = ()
    hints: tuple[str, ...] = ("begin",)
    seen: list[str] = field(default_factory=list)

    def scanner(self) -> Block:
        return Block(seen=self.seen)

    @property
    def open(self) -> bool:
        return getattr(self, "_open", False)

    def scan(self, line: str) -> list[Hit]:
        self.seen.append(line)
        if line == "BEGIN":
            self._open = True
            return []
        if line == "END":
            self._open = False
            return []
        return [Hit(0, len(line), self.name, "block")] if self.open and line else []


def test_hits_of_several_rules_merge_into_one_replacement_each_counted() -> None:
    redactor = Redactor([Word("abcdef", "one", "x"), Word("defghi", "two", "y")])
    assert redactor.text("1 abcdefghi 2") == "1 [REDACTED:x] 2"
    assert redactor.audit().rules == {"one": 1, "two": 1}


def test_lines_without_a_hint_are_never_shown_to_a_rule() -> None:
    block = Block()
    redactor = Redactor([block])
    assert redactor.text("a\nb\nc begin\nd") == "a\nb\nc begin\nd"
    assert block.seen == ["c begin"]


def test_an_open_rule_sees_every_line_until_it_closes() -> None:
    text = "x\nBEGIN\nsecret one\nsecret two\nEND\ny\n"
    assert Redactor([Block()]).text(text) == (
        "x\nBEGIN\n[REDACTED:block]\n[REDACTED:block]\nEND\ny\n"
    )


def test_a_block_stays_open_across_stream_chunks_and_to_the_end() -> None:
    chunks = [b"BEGIN\nsec", b"ret\n", b"more"]
    out = b"".join(Redactor([Block()]).stream(chunks))
    assert out == b"BEGIN\n[REDACTED:block]\n[REDACTED:block]"


def test_nul_separates_lines_like_environ_and_crlf_survives() -> None:
    redactor = Redactor([Block()])
    assert redactor.text("BEGIN\0a\0END\0b") == "BEGIN\0[REDACTED:block]\0END\0b"
    assert redactor.text("BEGIN\r\nabc\r\nEND\r\n") == "BEGIN\r\n[REDACTED:block]\r\nEND\r\n"


def test_stream_matches_text_whatever_the_chunking() -> None:
    text = ("noise line\n" * 50 + "the token is here\n") * 40
    want = Redactor([Word("token")]).text(text).encode()
    data = text.encode()
    for size in (1, 7, 100, 4096):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert b"".join(Redactor([Word("token")]).stream(chunks)) == want


def test_a_line_without_newline_is_cut_after_a_separator_so_tokens_stay_whole() -> None:
    secret = "SECRETWORD"
    line = ("x" * 50 + " ") * (3 * MAX_LINE // 51) + secret + " tail"
    for piece in (line, line.encode()):
        if isinstance(piece, str):
            out = Redactor([Word(secret)]).text(piece)
        else:
            chunks = [piece[i : i + 1000] for i in range(0, len(piece), 1000)]
            out = b"".join(Redactor([Word(secret)]).stream(chunks)).decode()
        assert secret not in out and out.endswith("[REDACTED:word] tail")
        assert len(out) == len(line) - len(secret) + len("[REDACTED:word]")


def test_invalid_utf8_passes_byte_exact() -> None:
    data = b"\xff\xfe garbage \xc3 token \x80\n\xe2\x82"
    out = b"".join(Redactor([Word("token")]).stream([data[:5], data[5:]]))
    assert out == b"\xff\xfe garbage \xc3 [REDACTED:word] \x80\n\xe2\x82"


def test_letters_that_change_length_when_lowered_do_not_shift_hits() -> None:
    text = "İİİ token İ"
    assert Redactor([Word("token")]).text(text) == "İİİ [REDACTED:word] İ"


def test_audit_counts_per_file_and_lists_rules_that_never_fired() -> None:
    first = Redactor([Word("token", "tok"), Word("never", "nev")])
    assert first.audit().rules == {"tok": 0, "nev": 0}  # a first pass lists every rule
    redactor = Redactor([Word("token", "tok"), Word("never", "nev")], prefix="p:")
    redactor.text("token token", "results/a")
    list(redactor.stream([b"token\n"], "raw/b/x.log"))
    audit = redactor.audit()
    assert audit.rules == {"p:tok": 3}  # a second pass lists only what it found
    assert audit.files == {"results/a": {"p:tok": 2}, "raw/b/x.log": {"p:tok": 1}}


def test_leak_scan_counts_add_to_the_audit_and_are_reported() -> None:
    audit = RedactionAudit(applied=True, rules={"a": 1}, files={"f": {"a": 1}})
    audit.add(
        RedactionAudit(applied=True, rules={"leak-scan:a": 2}, files={"f": {"leak-scan:a": 2}})
    )
    doc = audit.to_json()
    assert doc["leak_scan_hits"] == 2 and doc["files"]["f"] == {"a": 1, "leak-scan:a": 2}


def test_pseudonym_hits_replace_with_their_own_text() -> None:
    from snapshot_agent.redact.pseudonyms import PseudonymRule

    rule = PseudonymRule(hostnames=["node-7"])
    redactor = Redactor([rule])
    out = redactor.text("node-7 at 10.0.1.17 talks to 10.0.1.17 and 127.0.0.1; db.internal")
    ip = f"ip-{rule.pseudonym('10.0.1.17')}"
    assert out == f"host-{rule.pseudonym('node-7')} at {ip} talks to {ip} and 127.0.0.1; " + (
        f"host-{rule.pseudonym('db.internal')}"
    )
    other = PseudonymRule(hostnames=["node-7"])  # another snapshot: another key
    assert other.pseudonym("10.0.1.17") != rule.pseudonym("10.0.1.17")


@pytest.mark.parametrize("shift", range(0, 60, 6))
def test_a_long_line_is_never_cut_between_a_secret_option_and_its_value(shift: int) -> None:
    """Pieces of a line longer than MAX_LINE end after a separator, but not one right
    after a hint word: `--password |value` would part the value from its option."""
    pad = ("x" * 40 + " ") * (MAX_LINE // 41)
    for tail, secret in (
        ("--password hunter2secretvalue", "hunter2secretvalue"),
        ("Authorization: Bearer abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuv"),
    ):
        line = (pad[: MAX_LINE - shift - 20] + " " + tail + " " + "y" * 70000).encode()
        out = b"".join(redactor_for(RedactionConfig()).stream([line]))
        assert secret[:10].encode() not in out, (tail, shift)


def test_a_secret_argument_goes_whole_even_when_a_text_rule_touched_it() -> None:
    token = "ghp_3X83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe"
    out = redactor_for(RedactionConfig()).argv(["app", "--password", f"Hunter2x:{token}"])
    assert out == ["app", "--password", "[REDACTED:cli-secret]"]
    with_pseudonyms = redactor_for(RedactionConfig(pseudonymize=True))
    assert with_pseudonyms.argv(["sshpass", "-p", "Hunter2 10.1.2.3"])[2].startswith("[REDACTED")
