"""Wall-clock moments: epoch seconds (time.time(), a state file, a mailbox's arrival
date) as aware UTC datetimes, and as the family writes them in its output.

The run's budget is monotonic time (deadline.py); this is only for moments that
are compared with dates from elsewhere or shown to a person.
"""

from __future__ import annotations

import datetime


def utc(epoch: float) -> datetime.datetime:
    """The moment `epoch` (seconds since 1970) as an aware datetime in UTC."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def minute(epoch: float) -> str:
    """The moment `epoch` for the status line: UTC to the minute, '2026-12-06 18:25Z'."""
    return f"{utc(epoch):%Y-%m-%d %H:%M}Z"
