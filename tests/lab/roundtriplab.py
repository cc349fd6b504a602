"""The round-trip lab (check_mail_roundtrip): a real forwarding loop and a monitor mailbox.

Served by the shared lab NSD (tests/lab/world.ZONES) and the one lab Postfix +
Dovecot (tests/lab/postfix.py, endpoints loopmx1, loopmx2, loopdrop, monitormx):

  domain        MX                                        probe address
  loop.test     10 mx1.loop.test, 20 mx2.loop.test        probe@loop.test  -> INBOX
  lossy.test    10 mx1.loop.test, 20 drop.loop.test       probe@lossy.test -> INBOX
                (drop.loop.test accepts with 250 and discards: never forwarded)
  junky.test    10 mx1.loop.test                          probe@junky.test -> Junk
  monitor.test  10 mx.monitor.test                        (the monitor's own domain)

A probe sent to any loop MX is rewritten by Postfix's virtual aliases to
monitor@monitor.test (monitor-junk@ for junky.test) and relayed over SMTP with
STARTTLS to mx.monitor.test: two real hops, two Received: headers. There it is
filed into the Maildir of MONITOR_USER, which Dovecot serves on mail.monitor.test
(MAILBOX_ADDRESS) over IMAP (STARTTLS), IMAPS, POP3 (STLS) and POP3S, with the
Junk folder flagged \\Junk. Every domain's SPF record passes the lab's addresses.
"""

from __future__ import annotations

import json
import mailbox
import time
from pathlib import Path

LOOP_DOMAIN = "loop.test"
LOSSY_DOMAIN = "lossy.test"
JUNK_DOMAIN = "junky.test"
MONITOR_DOMAIN = "monitor.test"
PROBE_LOCAL = "probe"

MX1 = ("mx1.loop.test", "127.0.25.13")
MX2 = ("mx2.loop.test", "127.0.25.14")
DROP_MX = ("drop.loop.test", "127.0.25.15")  # accepts, never forwards
MONITOR_MX = ("mx.monitor.test", "127.0.25.16")

MONITOR_USER = "monitor@monitor.test"
MONITOR_PASSWORD = "lab-monitor-secret"
#: the envelope address of the monitor's Junk delivery (filed into JUNK_FOLDER)
MONITOR_JUNK_ADDRESS = "monitor-junk@monitor.test"
#: the virtual mailbox domain the monitor MX files into (see tests/lab/postfix.py)
INBOX_DOMAIN = "inbox.monitor.test"

MAILBOX_HOST = "mail.monitor.test"
MAILBOX_ADDRESS = "127.0.25.3"  # the lab Dovecot (also submit.posture.test)
IMAP_PORT, IMAPS_PORT, POP3_PORT, POP3S_PORT = 143, 993, 110, 995
JUNK_FOLDER = "Junk"

_SPF = '"v=spf1 ip4:127.0.0.0/8 -all"'

ROUNDTRIP_ZONES: dict[str, str] = {
    LOOP_DOMAIN: f"""
        @        MX 10 mx1
        @        MX 20 mx2
        @        TXT {_SPF}
        mx1      A  {MX1[1]}
        mx2      A  {MX2[1]}
        drop     A  {DROP_MX[1]}
        """,
    LOSSY_DOMAIN: f"""
        @        MX 10 {MX1[0]}.
        @        MX 20 {DROP_MX[0]}.
        @        TXT {_SPF}
        """,
    JUNK_DOMAIN: f"""
        @        MX 10 {MX1[0]}.
        @        TXT {_SPF}
        """,
    MONITOR_DOMAIN: f"""
        @        MX 10 mx
        @        TXT {_SPF}
        mx       A  {MONITOR_MX[1]}
        mail     A  {MAILBOX_ADDRESS}
        """,
}


def wait_for_probes(lab_postfix, tokens, timeout: float = 10.0) -> None:
    """Wait until a message with each probe token is in the monitor's INBOX."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        box = mailbox.Maildir(str(lab_postfix.monitor_maildir()), factory=None, create=False)
        texts = [box.get_bytes(k) for k in box.iterkeys()]
        if all(any(t.encode() in text for text in texts) for t in tokens):
            return
        time.sleep(0.1)
    raise AssertionError(f"probes {tokens} did not arrive")


def sweep_probes(lab_postfix, state_file: Path, domain: str) -> None:
    """Wait for the probes an asynchronous run left pending (its state file says
    which), then remove them from the monitor's INBOX and Junk."""
    tokens = list(json.loads(Path(state_file).read_text()).get(domain, {}))
    wait_for_probes(lab_postfix, tokens)
    inbox = mailbox.Maildir(str(lab_postfix.monitor_maildir()), factory=None, create=False)
    for box in (inbox, inbox.get_folder(JUNK_FOLDER)):
        for key in list(box.iterkeys()):
            if any(t.encode() in box.get_bytes(key) for t in tokens):
                box.remove(key)
