"""Lab domains for check_mta_sts (tests/test_mta_sts*.py): one domain per case, under sts.test.

Served by the shared lab NSD (tests/lab/world.ZONES). Every policy host
`mta-sts.<name>.sts.test` is the lab nginx (tests/lab/nginx.py) on NGINX_ADDRESS:443,
one server_name (SNI) vhost per domain, built from SITES. The MX are the lab
Postfix hosts mx1/mx2.posture.test (certificates from the Postfix lab CA), notls.posture.test
(no STARTTLS), and names under sts.test pointing at mx1's address, whose certificate
does not name them. Nothing listens on REFUSED_ADDRESS:443; the FAKE_HOSTS addresses
(127.0.25.82-.87, .89, .90) are the scripted policy hosts of tests/test_faults_mtasts.py.
"""

from __future__ import annotations

from dataclasses import dataclass

STS_DOMAIN = "sts.test"
NGINX_ADDRESS = "127.0.25.80"
REFUSED_ADDRESS = "127.0.25.81"
MX1, MX2 = "mx1.posture.test", "mx2.posture.test"

#: the record id of each domain that publishes one (the same id: tests seed state files with it)
STS_ID = "20261121T1"


def policy(mode: str = "enforce", mx=(MX1, MX2), max_age: int = 86400, *, eol: str = "\n",
           extra: tuple = ()) -> bytes:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx),
             f"max_age: {max_age}", *extra]
    return (eol.join(lines) + eol).encode()


@dataclass(frozen=True)
class Site:
    """What the policy host of one lab domain serves."""

    body: bytes = b""
    content_type: str = "text/plain"
    redirect: str = ""  # a 301 to this URL instead of the policy
    status: int = 200  # 404: no policy there
    cert: str = "good"  # good | wronghost | expired: the vhost's certificate


GOOD_POLICY = policy(eol="\r\n")
#: domain label -> its policy host's content (the vhost of mta-sts.<label>.sts.test)
SITES: dict[str, Site] = {
    "good": Site(GOOD_POLICY),
    "wildcard": Site(policy(mx=("*.posture.test",)), content_type="text/plain; charset=utf-8"),
    "extra": Site(policy(mx=("*.posture.test",), extra=("comment: lab", "owner: postmaster"))),
    "uncovered": Site(policy(mx=(MX1,))),
    "testing": Site(policy("testing", mx=(MX1,))),
    "none": Site(policy("none", mx=(MX1,))),
    "redirect": Site(redirect=f"https://mta-sts.good.{STS_DOMAIN}/.well-known/mta-sts.txt"),
    "wrongtype": Site(GOOD_POLICY, content_type="text/html"),
    "oversized": Site(policy(extra=tuple(f"comment{i}: {'x' * 60}" for i in range(1100)))),
    "notfound": Site(status=404),
    "badcert": Site(GOOD_POLICY, cert="wronghost"),
    "expired": Site(GOOD_POLICY, cert="expired"),
    "invalid": Site(b"version: STSv1\nmode: strict\nmx: 192.0.2.1\n"),
    "badmx": Site(policy(mx=(f"alias.badmx.{STS_DOMAIN}",))),
    "notls": Site(policy(mx=("notls.posture.test",))),
    "tlsa": Site(policy("none", mx=(f"mx.tlsa.{STS_DOMAIN}",))),
    "rptbad": Site(GOOD_POLICY),
    "rpttwo": Site(GOOD_POLICY),
    "rptnomx": Site(GOOD_POLICY),
    "twotxt": Site(GOOD_POLICY),
    "badid": Site(GOOD_POLICY),
}

def _domain(label: str, mx: str = "", txt: str | None = "", rpt: str = "",
            host: str = NGINX_ADDRESS) -> str:
    """Zone lines of one lab domain: MX (default mx1 and mx2), _mta-sts TXT, policy host."""
    lines = [f"{label} MX 10 {MX1}.", f"{label} MX 20 {MX2}."] if not mx else \
        [f"{label} MX {m}" for m in mx.split(",")]
    if txt is not None:
        for record in (txt or f"v=STSv1; id={STS_ID};").split("|"):
            lines.append(f'_mta-sts.{label} TXT "{record}"')
    if rpt:
        for record in rpt.split("|"):
            lines.append(f'_smtp._tls.{label} TXT "{record}"')
    if host:
        lines.append(f"mta-sts.{label} A {host}")
    return "\n".join(lines)


#: lab domains whose policy host is a scripted fake of tests/test_faults_mtasts.py, on :443
FAKE_HOSTS = {"stall": "127.0.25.82", "drip": "127.0.25.83", "garbage": "127.0.25.84",
              "hangup": "127.0.25.85", "endless": "127.0.25.86", "plaintext": "127.0.25.87",
              "short": "127.0.25.89", "chunkcut": "127.0.25.90"}

_RPT = "v=TLSRPTv1; rua=mailto:tlsrpt@posture.test,https://tlsrpt.posture.test/v1"

MTASTS_ZONES: dict[str, str] = {
    STS_DOMAIN: "\n".join([
        _domain("good", rpt=_RPT),
        *(_domain(label) for label in ("wildcard", "extra", "uncovered", "testing", "none",
                                       "redirect", "wrongtype", "oversized", "notfound",
                                       "badcert", "expired", "invalid")),
        _domain("badmx", mx=f"10 alias.badmx.{STS_DOMAIN}."),
        "alias.badmx A 127.0.25.1",
        _domain("notls", mx="10 notls.posture.test."),
        _domain("tlsa", mx=f"10 mx.tlsa.{STS_DOMAIN}."),
        "mx.tlsa A 127.0.25.1",
        "_25._tcp.mx.tlsa TLSA 3 1 1 "
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        _domain("rptbad", rpt="v=TLSRPTv1; rua=ftp://reports.posture.test/tlsrpt"),
        _domain("rpttwo", rpt=f"{_RPT}|v=TLSRPTv1; rua=mailto:other@posture.test"),
        _domain("rptnomx", rpt=f"v=TLSRPTv1; rua=mailto:reports@nomail.{STS_DOMAIN}"),
        _domain("twotxt", txt=f"v=STSv1; id={STS_ID};|v=STSv1; id=other;"),
        _domain("badid", txt="v=STSv1; id=not-valid!;"),
        # a record, but no policy host in DNS; a policy host where nothing listens
        _domain("nohost", host=""),
        _domain("refused", host=REFUSED_ADDRESS),
        # no record at all
        _domain("nosts", txt=None, host=""),
        # policy hosts that are scripted fakes (tests/test_faults_mtasts.py)
        *(_domain(label, host=address) for label, address in FAKE_HOSTS.items()),
    ]) + "\n",
}
