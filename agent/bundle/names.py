"""Member names from node file names: relative, printable, one line, one name per file.

A name on the node is bytes: it may hold invalid UTF-8, newlines, tabs, terminal escapes
or a backslash. A byte that is not UTF-8, an ASCII control character and the backslash
are written `\\xNN`; a non-ASCII character that does not print (a bidi override, U+0085)
`\\uNNNN` (or `\\UNNNNNNNN`). Every backslash in the result starts an escape, so the
mapping is one-to-one: two files never share a member name, and the original bytes can
be read back. The listing and the manifest's skips show names escaped the same way.

A path part is also kept from reading as `.` or `..` to an extractor that splits on the
backslash as well as the slash (Windows tools do): a file named `..\\evil` is written
`..\\x5cevil`, whose first piece before the backslash would be `..`. So when a part,
up to its first backslash, is `.` or begins with `..` (every name Windows trims to `..`,
such as `...` or `.. `), its leading dot is written `\\x2e`: `\\x2e.\\x5cevil`. The
dot is not otherwise escaped, so this too reads back one way. Every other piece after a
backslash begins with the escape's `x`, `u` or `U`.
"""

from __future__ import annotations

import unicodedata

from snapshot_agent.core.printable import escape_surrogate

#: Unicode categories written as escapes: controls, format characters (bidi overrides),
#: separators other than the plain space, unassigned and private-use code points.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


def escape_name(raw: bytes) -> str:
    """One file name (or path) as printable one-line text; invalid UTF-8 as `\\xNN`."""
    text = raw.decode("utf-8", "surrogateescape")
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case, untouched
    return "".join(_escape_char(c) for c in text)


def _escape_char(char: str) -> str:
    """One character, or its escape."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:  # a byte that was not UTF-8 (surrogateescape), or half a pair
        return escape_surrogate(char)
    if char == " " or (char != "\\" and unicodedata.category(char) not in _ESCAPED_CATEGORIES):
        return char
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_part(raw: bytes) -> str:
    """One path part (no slash) as escape_name writes it, never `.` or `..` to an
    extractor that splits on either `/` or the backslash (the module docstring says how)."""
    text = escape_name(raw)
    head = text.split("\\", 1)[0]
    if head == "." or head.startswith(".."):
        return "\\x2e" + text[1:]
    return text


def escape_path(rel: bytes) -> str:
    """A path relative to the data directory, each part escaped (escape_part)."""
    return "/".join(escape_part(part) for part in rel.split(b"/") if part)


def member_name(prefix: str, rel: bytes) -> str:
    """`prefix/` + a path relative to the data directory, each part escaped (escape_part)."""
    path = escape_path(rel)
    return f"{prefix}/{path}" if prefix and path else prefix or path
