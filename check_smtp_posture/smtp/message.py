"""The probe message a check delivers: RFC 5322 mail, built with the email package.

An MX does not add the header fields a submission server would (Date, From,
Message-ID: RFC 6409 §8 is for submission only), and large receivers reject or
junk mail without them; so the probe carries them all itself.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from check_smtp_posture import __version__


def probe_message(*, header_from: str, recipients: tuple[str, ...], helo_name: str,
                  subject: str, body: str) -> bytes:
    """The message as bytes with CRLF line ends, ready for DATA (dot-stuffed later).

    Message-ID is made on `helo_name`, the name this client announces, so
    that a receiver can tell the probe's messages from everybody else's.
    """
    utf8 = not all(text.isascii() for text in (header_from, *recipients))
    message = EmailMessage(policy=SMTP.clone(utf8=True) if utf8 else SMTP)
    message["Date"] = formatdate(localtime=True)
    message["From"] = header_from
    message["To"] = ", ".join(recipients)
    message["Message-ID"] = make_msgid("probe", domain=helo_name)
    message["Subject"] = subject
    message["X-Mailer"] = f"check_smtp_posture {__version__}"
    message.set_content(body)  # adds MIME-Version and Content-Type
    return message.as_bytes()


def header_address(text: str) -> str:
    """A From field value (`addr` or `Name <addr>`); ValueError when it is not one address."""
    if any(not ch.isprintable() for ch in text):
        raise ValueError(f"control characters in a header address: {text!r}")
    header = SMTP.header_factory("From", text)
    if header.defects or len(header.addresses) != 1 or not header.addresses[0].domain:
        raise ValueError(f"not one address of the form [Name] <local@domain>: {text!r}")
    return str(header)
