"""Secrets (SASL and mailbox passwords): from a file or an environment variable.

Never from the command line, where `ps` shows them. A file gives its first
line (the rest, such as a trailing newline or a comment, is not part of the
secret); an environment variable that is set but empty counts as unset, so a
service definition that exports an empty variable gets "needs a password"
instead of a failed login every interval. The file is read as every named file
is (userfiles): a regular file only, so a named pipe cannot block the run.
"""

from __future__ import annotations

import os

from check_smtp_posture.userfiles import UserFileError, read_user_text

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
    try:
        text = read_user_text(path, "password file", MAX_SECRET_FILE)
    except UserFileError as exc:
        raise SecretError(str(exc)) from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise SecretError(f"password file {path} has an empty first line")
    return line
