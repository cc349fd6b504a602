"""Secrets (SASL and mailbox passwords): read from a file or an environment variable,
and kept out of sight wherever a server's words are shown.

Never from the command line, where `ps` shows them. A file gives its first
line (the rest, such as a trailing newline or a comment, is not part of the
secret); an environment variable that is set but empty counts as unset, so a
service definition that exports an empty variable gets "needs a password"
instead of a failed login every interval. The file is read as every named file
is (userfiles): a regular file only, so a named pipe cannot block the run.

A server may quote back what it was sent, in a refusal or in garbage: a
`Redactor` knows every form in which a secret crosses a connection and masks
them all in a server's text before it goes anywhere (a reply, an error, a
transcript line), and before that text is cut short: a cut could leave half a
secret that no longer matches.
"""

from __future__ import annotations

import os

from check_smtp_posture.userfiles import UserFileError, read_user_text

#: a password file larger than this is not a password file
MAX_SECRET_FILE = 64 * 1024
#: what stands for a secret in the output
MASK = "********"


class SecretError(Exception):
    """A secret was named but cannot be read; the message is one line for the user."""


def read_secret(path: str | None, env: str) -> str | None:
    """The secret from `path` (its first line), else from `$env`; None when neither has one."""
    if path is not None:
        return first_line(path)
    return os.environ.get(env) or None


def first_line(path: str, what: str = "password file") -> str:
    """The secret in file `path` (its first line); SecretError naming it as `what`."""
    try:
        text = read_user_text(path, what, MAX_SECRET_FILE)
    except UserFileError as exc:
        raise SecretError(str(exc)) from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise SecretError(f"{what} {path} has an empty first line")
    return line


def secret_forms(secret: str, user: str = "", authzid: str = "") -> set:
    """Every form in which `secret` crosses a connection for the account `user`, and
    shows in a server's words.

    On the wire: as it is (POP3 PASS, an IMAP atom, a bearer token), as an IMAP
    quoted string (backslashes and quotes escaped), in base64 (SASL LOGIN), inside
    the SASL PLAIN token `authzid NUL user NUL secret` in base64, inside the
    XOAUTH2 and OAUTHBEARER initial responses in base64 (sasl.initial_response).
    Each of them as it is, or as Python shows bytes in a library's error (b'...':
    escaped once more).
    """
    from check_smtp_posture import sasl
    from check_smtp_posture.sasl import b64

    if not secret:
        return set()
    quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
    sent = {secret, quoted, b64(secret), b64(f"{authzid}\0{user}\0{secret}")}
    sent |= {b64(sasl.initial_response(mech, user, secret)) for mech in sasl.OAUTH_MECHANISMS}
    shown = {repr(form.encode("utf-8", "surrogateescape"))[2:-1] for form in sent}
    return {form for form in sent | shown if form}


class Redactor:
    """Masks every form of the secrets it was given (`add`) in a text (`__call__`)."""

    __slots__ = ("_forms",)

    def __init__(self):
        self._forms: tuple = ()

    def add(self, secret: str | None, user: str = "", authzid: str = "") -> None:
        forms = set(self._forms) | secret_forms(secret or "", user, authzid)
        # longest first: a token is masked whole before the password inside it
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return text
