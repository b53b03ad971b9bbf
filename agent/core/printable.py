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
