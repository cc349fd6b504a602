"""State between runs (a JSON object in a file) over nagiosplugin's Cookie.

A state file fails in three ways a check must report rather than crash on:

- unwritable: the path cannot be created, read or written (a missing
  directory, permissions, not a regular file, a full disk at commit);
- locked: another run holds the lock past this run's deadline;
- corrupt: the content is not a JSON object, or an entry is not of the shape
  its plugin wrote (`discard`). The file (or entry) is started afresh and the
  run says so; the next run works again.

`StateFile` is a context manager that never raises for these: its `problem`
says what went wrong (a `StateProblem`, judged by contexts.StateFileContext),
and `usable` whether `data` will be written back. Changes are committed when
the block ends without an exception, so a crash never leaves half a file.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from dataclasses import dataclass

UNWRITABLE = "unwritable"
LOCKED = "locked"
CORRUPT = "corrupt"
UNREADABLE = "unreadable"  # another plugin's state file, read only (read_state)

#: how often a locked state file is tried again
LOCK_POLL = 0.05


@dataclass(frozen=True)
class StateProblem:
    path: str
    kind: str  # UNWRITABLE, LOCKED, CORRUPT
    detail: str = ""

    def describe(self) -> str:
        if self.kind == CORRUPT:
            return f"state file {self.path} was corrupt and has been started afresh"
        if self.kind == LOCKED:
            return f"state file {self.path} is locked by another run"
        if self.kind == UNREADABLE:
            return f"state file {self.path} cannot be read: {self.detail}"
        return f"state file {self.path}: {self.detail or 'cannot be written'}"


class StateFile:
    """`with StateFile(path, deadline) as state:` read and change `state.data`."""

    def __init__(self, path: str, deadline):
        self.path = path
        self.deadline = deadline
        self.data: dict = {}
        self.problem: StateProblem | None = None
        #: True when `data` came from (or starts) the file and is written back at the end
        self.usable = False
        self._cookie = None

    def __enter__(self) -> StateFile:
        try:
            self._open()
        except ValueError as exc:  # Cookie truncated the corrupt file before raising
            self._close()
            self.problem = StateProblem(self.path, CORRUPT, str(exc.args[0] if exc.args
                                                                 else exc))
            try:
                self._open()
            except (OSError, ValueError) as again:
                self._fail(again)
        except OSError as exc:
            self._fail(exc)
        self.usable = self._cookie is not None
        return self

    def discard(self, key: str, detail: str) -> None:
        """Drop an entry of the wrong shape, reported as corruption like a broken file."""
        self.data.pop(key, None)
        if self.problem is None:
            self.problem = StateProblem(self.path, CORRUPT, detail)

    def __exit__(self, exc_type, exc, tb):
        if self._cookie is not None and exc_type is None:
            try:
                self._cookie.commit()
            except OSError as error:
                self.problem = StateProblem(self.path, UNWRITABLE,
                                            f"cannot write: {error.strerror or error}")
        self._close()
        return False

    def _open(self) -> None:
        import nagiosplugin

        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        cookie = nagiosplugin.Cookie(self.path)
        cookie.fobj = cookie._create_fobj()
        self._cookie = cookie
        self._lock(cookie.fobj)
        if os.fstat(cookie.fobj.fileno()).st_size:
            try:
                cookie.data = cookie._load()
            except ValueError:
                cookie.fobj.truncate(0)
                raise
        self.data = cookie.data

    def _lock(self, fobj) -> None:
        """Nagiosplugin's lock waits forever; this one waits as long as the deadline allows."""
        while True:
            try:
                fcntl.flock(fobj, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if self.deadline.remaining() <= LOCK_POLL:
                    raise _Locked() from None
                time.sleep(LOCK_POLL)

    def _fail(self, exc: Exception) -> None:
        self._close()
        self.data = {}
        if isinstance(exc, _Locked):
            self.problem = StateProblem(self.path, LOCKED)
        else:
            reason = getattr(exc, "strerror", None) or str(exc)
            self.problem = StateProblem(self.path, UNWRITABLE, reason)

    def _close(self) -> None:
        if self._cookie is not None:
            self._cookie.close()
            self._cookie = None


class _Locked(OSError):
    pass


def read_state(path: str, deadline) -> tuple[dict, StateProblem | None]:
    """The data of another plugin's state file, read under a shared lock (its writer
    holds an exclusive one while it writes) and never written: (data, None), or ({}, the
    StateProblem: LOCKED, or UNREADABLE with why)."""
    import json

    from check_smtp_posture.userfiles import UserFileError, open_regular

    try:
        fd = open_regular(path, "it")
    except (OSError, UserFileError) as exc:
        return {}, StateProblem(path, UNREADABLE, getattr(exc, "strerror", None) or str(exc))
    with os.fdopen(fd, "rb") as fobj:
        while True:
            try:
                fcntl.flock(fobj, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline.remaining() <= LOCK_POLL:
                    return {}, StateProblem(path, LOCKED)
                time.sleep(LOCK_POLL)
        try:
            data = json.loads(fobj.read().decode("utf-8"))
        except (OSError, ValueError) as exc:
            return {}, StateProblem(path, UNREADABLE, f"not JSON ({type(exc).__name__})")
    if not isinstance(data, dict):
        return {}, StateProblem(path, UNREADABLE, "not a JSON object")
    return data, None
