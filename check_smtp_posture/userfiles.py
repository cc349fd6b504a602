"""Files named on the command line: password, payload, zones and CA files.

They are read while the arguments are checked, before the run's deadline
exists, so a read must not be able to block: the file is opened without
blocking and must be a regular file (a named pipe or a device would wait for
a writer forever), of bounded size. Every failure is a UserFileError whose
message is one line naming the file, for the usage error. open_regular() is
that open, for the other files a run reads (the messages of a Maildir).
"""

from __future__ import annotations

import os
import stat


class UserFileError(ValueError):
    """A named file cannot be used; the message is one line for the user."""


def open_regular(path: str, what: str) -> int:
    """A descriptor of `path` open for reading, if it is a regular file.

    The open does not block (a named pipe without a writer would block it for
    ever, a device may); OSError as the open raises it, UserFileError("`what` is
    not a regular file") for anything else than a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserFileError(f"{what} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_user_file(path: str, what: str, limit: int) -> bytes:
    """The bytes of the regular file `path` (at most `limit`); `what` names it in errors."""
    if not path:
        raise UserFileError(f"empty {what} name")
    try:
        fd = open_regular(path, f"{what} {path}")
    except OSError as exc:
        raise UserFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if info.st_size > limit:
            raise UserFileError(f"{what} {path} is larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UserFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UserFileError(f"{what} {path} is larger than {limit} bytes")
    return b"".join(chunks)


def read_user_text(path: str, what: str, limit: int) -> str:
    """read_user_file() decoded as UTF-8."""
    try:
        return read_user_file(path, what, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise UserFileError(f"{what} {path} is not UTF-8 text") from None


def option_file_problem(pairs, what: str) -> str | None:
    """The usage error for the first (option, path) of `pairs` whose path is given but
    is no readable regular file (`--ca-file: cannot read CA file ...`), else None."""
    for option, path in pairs:
        if path is not None:
            try:
                check_user_file(path, what)
            except UserFileError as exc:
                return f"{option}: {exc}"
    return None


def check_user_file(path: str, what: str) -> None:
    """Raise UserFileError unless `path` is a readable regular file (for files a library opens)."""
    if not path:
        raise UserFileError(f"empty {what} name")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise UserFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserFileError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise UserFileError(f"cannot read {what} {path}: Permission denied")
