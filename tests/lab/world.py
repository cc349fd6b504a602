"""The lab's fixed world: the default mail domain, its servers and addresses.

`make demo` and the lab tests share this picture. Address plan (loopback only):

  127.0.25.53:53   the lab's authoritative DNS (NSD)
  127.0.25.1:25    mx1.posture.test, Postfix instance "mx1"
  127.0.25.2:25    mx2.posture.test, Postfix instance "mx2"
  127.0.25.3-.49   more lab Postfix/Dovecot endpoints as issues need them
  127.0.27.0/24    scripted misbehaving SMTP servers (tests/lab/fakesmtp.py)
  127.0.28.0/24    check_mx_sanity / check_dnsbl test zones (own NSD instances)
  127.0.29.0/24    check_spf test zones (own NSD instance)

Never 127.0.0.1:25: a system MTA may own it.
"""

from __future__ import annotations

LAB_DOMAIN = "posture.test"
DNS_ADDRESS = "127.0.25.53"
DNS_PORT = 53
DNS_SERVER_ARG = f"{DNS_ADDRESS}:{DNS_PORT}"

MX1 = ("mx1.posture.test", "127.0.25.1")
MX2 = ("mx2.posture.test", "127.0.25.2")

#: zones served by the lab DNS: origin -> zone body (records only; LabDns adds SOA/NS)
ZONES: dict[str, str] = {
    LAB_DOMAIN: f"""
        @        MX 10 mx1
        @        MX 20 mx2
        @        TXT "v=spf1 ip4:127.0.25.0/24 mx -all"
        mx1      A  {MX1[1]}
        mx2      A  {MX2[1]}
        mail     A  {MX1[1]}
        ; more lab Postfix endpoints (tests/lab/postfix.py ENDPOINTS)
        submit     A  127.0.25.3
        authfirst  A  127.0.25.4
        notls      A  127.0.25.5
        openrelay  A  127.0.25.6
        """,
    "25.0.127.in-addr.arpa": f"""
        1   PTR {MX1[0]}.
        2   PTR {MX2[0]}.
        3   PTR submit.posture.test.
        4   PTR authfirst.posture.test.
        5   PTR notls.posture.test.
        6   PTR openrelay.posture.test.
        """,
    # A test blocklist: lists 127.0.0.2 (the conventional test entry) only.
    "dnsbl.posture.test": """
        2.0.0.127  A   127.0.0.2
        2.0.0.127  TXT "lab test entry"
        """,
}


def lab_dns(workdir=None):
    """An unstarted LabDns serving the world's zones."""
    from tests.lab.authdns import LabDns

    dns = LabDns(DNS_ADDRESS, DNS_PORT, workdir)
    for origin, body in ZONES.items():
        dns.add_zone(origin, body)
    return dns
