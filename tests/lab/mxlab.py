"""Lab zones for check_mx_sanity: one domain per case of issue 3.

Served by the shared lab NSD (tests/lab/world.ZONES, 127.0.25.53:53), which
the tests reach through the session fixture `lab_dns`. The MX hosts have loopback
addresses in 127.0.28.0/24 and documentation IPv6 addresses in
2001:db8:28::/64, so the lab runs use --allow-private except where the
private/reserved rule itself is tested.
"""

from __future__ import annotations

MX_DOMAIN = "mx.lab.test"

MX_ZONES: dict[str, str] = {
    MX_DOMAIN: """
        ; two MX, IPv4 and IPv6, FCrDNS passes for all three addresses
        good            MX 10 mx1.good
        good            MX 20 mx2.good
        mx1.good        A    127.0.28.11
        mx1.good        AAAA 2001:db8:28::11
        mx2.good        A    127.0.28.12
        ; RFC 7505 null MX, and null MX mixed with a real one
        nullmx          MX 0 .
        mixed           MX 0 .
        mixed           MX 10 mx1.good
        ; no MX, an address record: implicit MX
        implicit        A    127.0.28.13
        ; no MX, no address
        bare            TXT  "nothing to deliver to"
        ; an IP literal as target (a name made of digits, as a zone file writes it)
        literal         MX 10 127.0.28.11.
        ; a CNAME as target
        cname           MX 10 alias.cname
        alias.cname     CNAME mx1.good
        ; a target without A/AAAA
        noaddr          MX 10 host.noaddr
        host.noaddr     TXT  "no address here"
        ; a target that does not exist
        dangling        MX 10 gone.dangling
        dangling        TXT  "keeps the name"
        ; the same target twice
        dup             MX 10 mx1.good
        dup             MX 20 mx1.good
        ; PTR that does not resolve back, and no PTR at all
        nofcrdns        MX 10 mx.nofcrdns
        nofcrdns        MX 20 mx2.nofcrdns
        mx.nofcrdns     A    127.0.28.14
        mx2.nofcrdns    A    127.0.28.16
        elsewhere       A    127.0.28.15
        ; IPv4 only
        v4only          MX 10 mx.v4only
        mx.v4only       A    127.0.28.17
        ; two names, one address
        samehost        MX 10 a.samehost
        samehost        MX 20 b.samehost
        a.samehost      A    127.0.28.11
        b.samehost      A    127.0.28.11
        ; a public-looking address (TEST-NET is reserved too) and a private one
        private         MX 10 mx.private
        mx.private      A    10.28.0.1
        ; the MX set the change tests move around
        moving          MX 10 mx1.good
        """,
    "28.0.127.in-addr.arpa": """
        11  PTR mx1.good.mx.lab.test.
        12  PTR mx2.good.mx.lab.test.
        13  PTR implicit.mx.lab.test.
        14  PTR elsewhere.mx.lab.test.
        17  PTR mx.v4only.mx.lab.test.
        """,
    "28.10.in-addr.arpa": """
        1.0 PTR mx.private.mx.lab.test.
        """,
    "0.0.0.0.8.2.0.0.8.b.d.0.1.0.0.2.ip6.arpa": """
        1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0 PTR mx1.good.mx.lab.test.
        """,
}
