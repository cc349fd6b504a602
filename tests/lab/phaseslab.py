"""Lab zone for check_smtp_phases -D (tests/test_smtp_phases_domain.py).

Served by the shared lab NSD (tests/lab/world.ZONES). The MX host has
127.0.27.1 and ::1, where the test's scripted SMTP servers (tests/lab/fakesmtp.py)
listen on one port.
"""

from __future__ import annotations

PHASES_DOMAIN = "phases.test"

PHASES_ZONES: dict[str, str] = {
    PHASES_DOMAIN: """
        @        MX 10 mx
        mx       A     127.0.27.1
        mx       AAAA  ::1
        null     MX 0 .
        bare     A     127.0.27.1
        dangling MX 10 nowhere
        """,
}
