"""No plugin run of the tests shows a secret it was given, in any form, on stdout or stderr.

Every way the tests run a plugin ends here: conftest.run_main (main() in-process,
which most tests and every fault-matrix module use), test_faults_args.execute (the
console script as a process) and test_faults_smtp.run_in_netns. `check(argv, env,
*outputs)` finds the secrets of the run the way the plugins do -- the password
variables of `env`, the first line of every password file `argv` names -- and fails
when any output holds one of them as it is, as an IMAP quoted string, as Python
shows bytes, in base64 (SASL LOGIN) or inside a SASL PLAIN token of an account
`argv` names. The forms are written out here, not taken from the plugins' own
redaction (check_smtp_posture.secrets), so that a form the plugins forget is caught.
"""

from __future__ import annotations

import base64
import os
from urllib.parse import unquote, urlsplit

#: the variables the plugins read passwords from
PASSWORD_VARIABLES = ("CHECK_SMTP_PASSWORD", "CHECK_MAILBOX_PASSWORD",
                      "CHECK_OAUTH2_CLIENT_SECRET")
#: the options that name a password file (an OAuth client secret, a refresh token)
PASSWORD_FILE_OPTIONS = ("--sasl-password-file", "--mailbox-password-file",
                         "--oauth2-client-secret-file", "--oauth2-refresh-token-file")


class SecretShown(AssertionError):
    """A plugin's output holds a secret of its run."""


def _values(argv: list, option: str) -> list:
    """The values of `option` in `argv` (`--opt VALUE` and `--opt=VALUE`)."""
    found = []
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith(option + "="):
            found.append(arg[len(option) + 1:])
    return found


def _first_line(path: str) -> str | None:
    """The password in file `path`, as the plugins read it; None if it holds none."""
    if not os.path.isfile(path):  # a missing file, a directory, a named pipe: no secret
        return None
    try:
        with open(path, "rb") as f:
            return f.read(65536).decode("utf-8", "surrogateescape").splitlines()[0]
    except (OSError, IndexError):
        return None


def secrets_of(argv, env) -> list:
    """The secrets a run with `argv` and environment `env` was given."""
    argv = [str(a) for a in argv]
    found = [env.get(name) for name in PASSWORD_VARIABLES]
    found += [_first_line(path) for option in PASSWORD_FILE_OPTIONS
              for path in _values(argv, option)]
    return [secret for secret in dict.fromkeys(found) if secret]


def accounts_of(argv) -> list:
    """The users (and authorisation identities) a run with `argv` logs in as."""
    argv = [str(a) for a in argv]
    users = _values(argv, "--sasl-user") + _values(argv, "--sasl-authzid")
    for url in _values(argv, "--mailbox"):
        try:
            user = urlsplit(url).username
        except ValueError:
            continue
        if user:
            users.append(unquote(user))
    return list(dict.fromkeys([""] + users))


def forms(secret: str, accounts) -> dict:
    """What each form of `secret` looks like: name -> text."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")

    sent = {"raw": secret, "IMAP quoted": secret.replace("\\", "\\\\").replace('"', '\\"'),
            "base64 (SASL LOGIN)": b64(secret)}
    for user in accounts:
        for authzid in ("", user):
            sent[f"SASL PLAIN token of {authzid!r}/{user!r}"] = \
                b64(f"{authzid}\0{user}\0{secret}")
    shown = {f"{name} as Python shows bytes": repr(form.encode("utf-8", "surrogateescape"))[2:-1]
             for name, form in sent.items()}
    return {**sent, **shown}


def check(argv, env, *outputs: str) -> None:
    """Raise SecretShown if an output holds a secret of the run."""
    accounts = accounts_of(argv)
    for secret in secrets_of(argv, env):
        for name, form in forms(secret, accounts).items():
            for output in outputs:
                if form in output:
                    raise SecretShown(f"the {name} form of a password the run was given "
                                      f"({secret!r}) is in its output:\n{output}")
