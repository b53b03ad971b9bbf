"""Text from the node as a person's terminal or table shows it: control characters escaped.

Command output, process names and log lines may hold escape sequences (a clipboard
write, a screen clear, a window title), line breaks or bidi overrides. Shown raw on an
SRE's terminal over SSH they act instead of reading; escaped, they read as what they are.
"""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, line/paragraph separators and bidi embeddings/isolates.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character escaped (\\n, \\x1b, \\u202e).

    Idempotent (the escapes are plain ASCII), so text escaped once may pass again.
    """
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


#: A lone surrogate: a byte that was not UTF-8 in a name read with surrogateescape
#: (os.listdir, os.fsdecode), or a half of a pair; JSON and UTF-8 cannot hold it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """`text` that encodes as UTF-8: a byte that was not UTF-8 (surrogateescape) becomes
    `\\xff`, as the bundle's names show it; any other lone surrogate `\\ud800`."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: escape_surrogate(m.group()), text)


def escape_surrogate(char: str) -> str:
    """One lone surrogate as text: `\\xNN` for a byte surrogateescape kept, else `\\uNNNN`."""
    code = ord(char)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
