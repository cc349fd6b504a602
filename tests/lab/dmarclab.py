"""Lab zones for check_dmarc (tests/test_dmarc.py, tests/test_faults_dmarc.py): one
name per case.

The origin is the single label `dmarclab`, a top-level domain of the lab: a DMARC tree
walk ends at the top-level name (`_dmarc.dmarclab`), and only a zone the lab NSD
serves answers that query (NXDOMAIN) instead of refusing it. Served by the shared lab
NSD (tests/lab/world.ZONES, 127.0.25.53:53).

The report destinations' MX is the lab Postfix endpoint `dmarcreports`
(REPORT_MX, tests/lab/postfix.py): it accepts every recipient at RCPT except
GONE_ADDRESS, refused with 550 (DMARC_ACCESS); it never gets DATA.
"""

from __future__ import annotations

DMARC_DOMAIN = "dmarclab"
REPORT_MX = ("reportmx.dmarclab", "127.0.25.21")
GONE_ADDRESS = "gone@reports.dmarclab"
#: the dmarcreports endpoint's recipient access map (tests/lab/postfix.py LAB_MAPS)
DMARC_ACCESS = f"{GONE_ADDRESS} 550 5.1.1 report mailbox gone\n"

GOOD_RECORD = ("v=DMARC1; p=reject; sp=quarantine; np=reject; adkim=s; aspf=r; fo=1:d; "
               "rua=mailto:dmarc@good.dmarclab,mailto:agg@reports.dmarclab; "
               "ruf=mailto:dmarc@good.dmarclab")
#: a record of 3000 bytes in 15 strings: v=DMARC1; p=reject, then an unknown tag
HUGE_RECORD = "v=DMARC1; p=reject; x=" + "a" * (3000 - len("v=DMARC1; p=reject; x="))


def _quoted(text: str) -> str:
    """A TXT value as zone-file character-strings of at most 255 bytes."""
    return " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


DMARC_ZONES: dict[str, str] = {
    DMARC_DOMAIN: f"""
        reportmx        A   {REPORT_MX[1]}
        ; good: enforced, reports inside (good) and outside (reports) the domain
        good            MX  10 reportmx
        _dmarc.good     TXT {_quoted(GOOD_RECORD)}
        _dmarc.good     TXT "some-other-verification=abc"
        reports         MX  10 reportmx
        good.dmarclab._report._dmarc.reports  TXT "v=DMARC1"
        gone.dmarclab._report._dmarc.reports  TXT "v=DMARC1"
        ; a destination that authorises every domain (the wildcard form)
        _dmarc.wild     TXT "v=DMARC1; p=quarantine; rua=mailto:agg@wildrep.dmarclab"
        wildrep         MX  10 reportmx
        *._report._dmarc.wildrep     TXT "v=DMARC1"
        ; an outside destination that authorises nothing for unauth.dmarclab
        _dmarc.unauth   TXT "v=DMARC1; p=reject; rua=mailto:agg@reports.dmarclab"
        ; a destination whose MX refuses the report address (--probe-destinations)
        _dmarc.gone     TXT "v=DMARC1; p=reject; rua=mailto:{GONE_ADDRESS}"
        ; a destination domain that takes no mail (null MX)
        _dmarc.nullmx   TXT "v=DMARC1; p=reject; rua=mailto:dmarc@nomail.dmarclab"
        nomail          MX  0 .
        ; the tree walk: a.b.tree has no record, tree (two labels up) has
        _dmarc.tree     TXT "v=DMARC1; p=reject; sp=quarantine; np=reject"
        b.tree          A   192.0.2.1
        ; a public suffix's record (psd=y): org.psd and below have none
        _dmarc.psd      TXT "v=DMARC1; p=reject; np=reject; psd=y"
        ; policies
        _dmarc.none     TXT "v=DMARC1; p=none"
        _dmarc.quar     TXT "v=DMARC1; p=quarantine"
        _dmarc.testing  TXT "v=DMARC1; p=reject; t=y"
        _dmarc.nop      TXT "v=DMARC1; sp=reject"
        _dmarc.legacy   TXT "v=DMARC1; p=quarantine; pct=50; rf=afrf; ri=3600; foo=bar"
        ; no record anywhere up the tree
        nodmarc         A   192.0.2.1
        ; broken records
        _dmarc.syntax   TXT "v=DMARC1; p=rejekt; adkim=x"
        _dmarc.novalue  TXT "v=DMARC1; p=reject; rua"
        _dmarc.baduri   TXT "v=DMARC1; p=reject; rua=dmarc@good.dmarclab"
        _dmarc.dup      TXT "v=DMARC1; p=reject"
        _dmarc.dup      TXT "v=DMARC1; p=none"
        _dmarc.lower    TXT "v=dmarc1; p=reject"
        ; hostile TXT answers (tests/test_faults_dmarc.py)
        _dmarc.split    TXT "v=DMARC1; p=re" "ject; sp=quar" "antine"
        _dmarc.huge     TXT {_quoted(HUGE_RECORD)}
        _dmarc.binary   TXT "v=DMARC1; p=reject; x=\\255\\254"
        _dmarc.binarypolicy TXT "v=DMARC1; p=rej\\255ct"
""" + "".join(f'        _dmarc.many     TXT "unrelated-record-{i:03d}"\n' for i in range(60))
    + '        _dmarc.many     TXT "v=DMARC1; p=reject"\n',
}
