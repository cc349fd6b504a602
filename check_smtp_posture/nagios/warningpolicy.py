"""What the libraries say besides the plugin: kept for -vvv, never printed on their own.

Icinga 2 joins a plugin's stdout and stderr and shows the first line as the
service's output, so a library's DeprecationWarning or log line printed at import
would replace the status line. `install()` runs before any plugin imports its
libraries (check_smtp_posture.plugins' __init__): from then on a Python warning
or a library's log record of level WARNING or above is kept here, once per
message, and the runner adds the kept ones to the long output at -vvv. It also
overrides a user's PYTHONWARNINGS=error or -W error, which would otherwise turn a
library's deprecation into a traceback.
"""

from __future__ import annotations

import logging
import os
import warnings

#: at most this many distinct messages are kept; a run that warns more is broken anyway
LIMIT = 10

_kept: list[str] = []


def install() -> None:
    """Keep warnings and library log records instead of printing them (idempotent)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")  # once per place, whatever -W or PYTHONWARNINGS said
    warnings.showwarning = _keep_warning
    root = logging.getLogger()
    if not any(isinstance(h, _KeepHandler) for h in root.handlers):
        root.addHandler(_KeepHandler(logging.WARNING))


def take() -> tuple[str, ...]:
    """What was kept so far, in order, one line each (`python warning: ...`,
    `python log: ...`), and forget it: a test process runs many checks."""
    taken = tuple(_kept)
    _kept.clear()
    return taken


def _keep(text: str) -> None:
    if text not in _kept and len(_kept) < LIMIT:
        _kept.append(text)


def _keep_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _keep(f"python warning: {category.__name__}: {message} "
          f"({os.path.basename(str(filename))}:{lineno})")


class _KeepHandler(logging.Handler):
    def emit(self, record) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format is still no output
            text = str(record.msg)
        _keep(f"python log: {record.name}: {record.levelname}: {text}")
