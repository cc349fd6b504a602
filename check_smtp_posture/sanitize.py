"""Make text from the network safe for a plugin's output."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\x00-\x1f\x7f|]+")


def one_line(text: str | bytes, limit: int = 120) -> str:
    """Server text as one short printable line: no control characters, no '|'.

    '|' would start the perfdata part of a Nagios status line, control
    characters would break it into several lines.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = _UNSAFE.sub(" ", text).strip()
    text = re.sub(r" {2,}", " ", text)
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text
