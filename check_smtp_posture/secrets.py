"""Secrets (SASL and mailbox passwords): from a file or an environment variable.

Never from the command line, where `ps` shows them. A file gives its first
line (the rest, such as a trailing newline or a comment, is not part of the
secret); an environment variable that is set but empty counts as unset, so a
service definition that exports an empty variable gets "needs a password"
instead of a failed login every interval. Only regular files are read: a named
pipe would block the run before its deadline exists.
"""

from __future__ import annotations

import os
import stat

#: a password file larger than this is not a password file
MAX_SECRET_FILE = 64 * 1024


class SecretError(Exception):
    """A secret was named but cannot be read; the message is one line for the user."""


def read_secret(path: str | None, env: str) -> str | None:
    """The secret from `path` (its first line), else from `$env`; None when neither has one."""
    if path is not None:
        return _first_line(path)
    return os.environ.get(env) or None


def _first_line(path: str) -> str:
    if not path:
        raise SecretError("empty password file name")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SecretError(f"cannot read password file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"password file {path} is not a regular file")
        if info.st_size > MAX_SECRET_FILE:
            raise SecretError(f"password file {path} is larger than {MAX_SECRET_FILE} bytes")
        data = os.read(fd, MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise SecretError(f"cannot read password file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"password file {path} is not UTF-8 text") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise SecretError(f"password file {path} has an empty first line")
    return line
