"""The round-trip probe message: its token, how it is written, how it is recognised.

Every probe carries a token, `posture-<send time>-<random>`, in three places: a
header field of its own, the Subject and the body. Forwarders rewrite or drop
header fields, so the mailbox is searched for the field first and for the
token anywhere as a fallback. The field also names the domain and the MX, so a
later run (or a person) can tell whose probe a message is; the send time in
the token says how old it is without any state.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import namedtuple

PROBE_HEADER = "X-Smtp-Posture-Probe"
_TOKEN = r"posture-(\d{9,11})-([0-9a-f]{12})"


class ProbeFacts(namedtuple("ProbeFacts", ("token", "domain", "mx", "sender"))):
    """What a found message says about itself (any field may be None)."""

    __slots__ = ()

    @property
    def sent(self) -> float | None:
        return token_time(self.token) if self.token else None


def new_token(now: float | None = None) -> str:
    return f"posture-{int(now if now is not None else time.time())}-{secrets.token_hex(6)}"


def token_time(token: str) -> float | None:
    match = re.fullmatch(_TOKEN, token)
    return float(match.group(1)) if match else None


def header_needle(domain: str) -> tuple:
    """(field, text) that finds every probe of `domain` by its header field."""
    return PROBE_HEADER, f"domain={domain};"


def build(*, token: str, domain: str, mx_label: str, sender: str, recipient: str,
          helo_name: str, sent: float) -> bytes:
    """The probe as bytes ready for DATA: small, labelled, with Date, Message-ID and From."""
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import formatdate

    from check_smtp_posture import __version__

    # unfolded: a mailbox's header search must find "domain=...;" on one line
    message = EmailMessage(policy=SMTP.clone(max_line_length=998))
    message["Date"] = formatdate(sent, localtime=False, usegmt=True)
    message["From"] = f"check_smtp_posture <{sender}>"
    message["To"] = recipient
    message["Message-ID"] = f"<{token}@{helo_name}>"
    message["Subject"] = f"check_smtp_posture round-trip probe {token}"
    message[PROBE_HEADER] = f"token={token}; domain={domain}; mx={mx_label}"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    message["X-Mailer"] = f"check_smtp_posture {__version__}"
    message.set_content(
        "This is a monitoring probe of check_smtp_posture (check_mail_roundtrip).\n"
        f"It was sent to {recipient} through {mx_label} to time the mail loop,\n"
        "and is deleted when it comes back. Please do not reply.\n\n"
        f"probe token: {token}\n")
    return message.as_bytes()


def facts(header: bytes, matched: str) -> ProbeFacts:
    """Token, domain, MX and From address of a found message (`matched`: how it was found)."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32
    from email.utils import parseaddr

    parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
    fields = {}
    for value in parsed.get_all(PROBE_HEADER, ()):
        for part in str(value).split(";"):
            key, sep, text = part.strip().partition("=")
            if sep:
                fields.setdefault(key.lower(), text.strip())
    token = fields.get("token")
    if not token or token_time(token) is None:
        found = re.search(_TOKEN, str(parsed.get("Subject", "")))
        token = found.group(0) if found else (matched if token_time(matched) else None)
    sender = parseaddr(str(parsed.get("From", "")))[1].lower() or None
    return ProbeFacts(token, fields.get("domain"), fields.get("mx"), sender)


def field_values(header: bytes, name: str) -> list:
    """The values of the header fields called `name` in a header block, in order, unfolded
    (for Received: the newest first)."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
    return [" ".join(str(v).split()) for v in parsed.get_all(name, ())]
