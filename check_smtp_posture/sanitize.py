"""Make text from the network safe for a plugin's output: the family's one sanitiser.

Server replies, DNS names and certificate fields are written by strangers. In
the status line a '|' would start the perfdata and a control character would
break the line; in the long output a '|' would start perfdata too. (Perfdata
labels are nagios/perfdata.label's: `[a-z0-9_]` only.)
"""

from __future__ import annotations

import re


def one_line(text: str | bytes, limit: int = 120) -> str:
    """Server text as one short printable line: no control characters, no '|'.

    Whatever str.isprintable() refuses becomes a space: C0 and C1 controls, line
    and paragraph separators, bidi overrides (which make a status line read
    backwards) and undecodable bytes (surrogates of a non-UTF-8 argument).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() and ch != "|" else " " for ch in str(text))
    text = re.sub(r" {2,}", " ", text.strip())
    return _truncate(text, limit)


def printable(text: str, limit: int | None = None) -> str:
    """A line of long output: every character printable ('?' otherwise), '|' as '/'."""
    text = "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in str(text))
    return _truncate(text.replace("|", "/"), limit)


def _truncate(text: str, limit: int | None) -> str:
    if limit is not None and len(text) > limit:
        return text[: limit - 3].rstrip() + "..."
    return text
