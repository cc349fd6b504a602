"""Lab zone for the MX verdict table (tests/test_mx_verdict.py): one domain per case.

Served by the shared lab NSD (tests/lab/world.ZONES). Targets that resolve
point at the lab Postfix mx1 (127.0.25.1), so the probing plugins have a real
server to talk to; every domain's SPF record passes the lab's addresses, so
check_spf --check-mx judges nothing but the MX set. `unserved.test` is a zone
the lab NSD does not serve: it answers REFUSED, a lookup failure.
"""

from __future__ import annotations

VERDICT_DOMAIN = "verdict.test"
#: a name in no zone the lab serves: NSD answers REFUSED (SERVFAIL to the plugins)
UNSERVED = "unserved.test"

_SPF = '"v=spf1 ip4:127.0.25.0/24 -all"'

VERDICT_ZONES: dict[str, str] = {
    VERDICT_DOMAIN: f"""
        good            MX 10 mx1.posture.test.
        good            TXT {_SPF}
        null            MX 0 .
        null            TXT "v=spf1 -all"
        mixed           MX 0 .
        mixed           MX 10 mx1.posture.test.
        mixed           TXT {_SPF}
        implicit        A    127.0.25.1
        implicit        TXT {_SPF}
        nohost          TXT {_SPF}
        literal         MX 10 127.0.25.1.
        literal         TXT {_SPF}
        cname           MX 10 alias.cname
        alias.cname     CNAME mx1.posture.test.
        cname           TXT {_SPF}
        dangling        MX 10 gone.dangling
        dangling        TXT {_SPF}
        noaddr          MX 10 host.noaddr
        host.noaddr     TXT "no address here"
        noaddr          TXT {_SPF}
        lookupfail      MX 10 mx1.posture.test.
        lookupfail      MX 20 mx.{UNSERVED}.
        lookupfail      TXT {_SPF}
        """,
}
