"""The DNS interface the SPF engine needs, and an in-memory implementation.

The engine asks `SpfDns.query(name, rdtype)` for TXT, A, AAAA, MX and PTR
records and gets an `Answer` back; it never raises for DNS outcomes. Record
formats in `Answer.records`: TXT the character-strings joined without
separator (§3.3); A/AAAA the address text; MX `(preference, host)`; PTR the
host name. Host names carry no trailing dot.
"""

from __future__ import annotations

import ipaddress
from collections import namedtuple
from typing import Protocol

from check_smtp_posture import names

OK = "OK"
NXDOMAIN = "NXDOMAIN"
NODATA = "NODATA"
ERROR = "ERROR"        # timeout, SERVFAIL, refused...: no answer about the name


class Answer(namedtuple("Answer", ("status", "records", "detail"), defaults=((), ""))):
    __slots__ = ()

    @property
    def void(self) -> bool:
        """NXDOMAIN or an empty answer: a 'void lookup' in §4.6.4 terms."""
        return self.status in (NXDOMAIN, NODATA) or (self.status == OK and not self.records)

    @property
    def error(self) -> bool:
        return self.status == ERROR


class SpfDns(Protocol):
    def query(self, name: str, rdtype: str) -> Answer: ...


def reverse_name(ip) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


class ZoneDns:
    """In-memory DNS over a dict: `{name: [(rdtype, value), ...]}`.

    Values: TXT a str or a list of character-strings; A/AAAA address text;
    MX `(preference, host)` or "10 host"; PTR and CNAME a host name. The
    pseudo record ("TIMEOUT", ...) makes queries of the name time out, except
    for a type with records listed before it; a value "TIMEOUT" makes only
    that type time out. Names are case-insensitive; CNAMEs are followed.
    `from_testsuite()` reads the `zonedata` layout of the OpenSPF/pyspf
    YAML test suites.
    """

    def __init__(self, zone: dict | None = None):
        self.zone: dict[str, list] = {}
        self.log: list[tuple[str, str]] = []
        for name, rrs in (zone or {}).items():
            for rdtype, value in rrs:
                self.add(name, rdtype, value)

    @classmethod
    def from_testsuite(cls, zonedata: dict) -> ZoneDns:
        dns = cls()
        for name, rrs in zonedata.items():
            dns.zone.setdefault(names.normalize(name), [])
            for rr in rrs or []:
                if isinstance(rr, str):       # "TIMEOUT"
                    dns.add(name, rr, True)
                    continue
                for rdtype, value in rr.items():
                    if rdtype.upper() in ("A", "AAAA", "PTR") and isinstance(value, list):
                        for item in value:
                            dns.add(name, rdtype, item)
                    else:
                        dns.add(name, rdtype, value)
        return dns

    def add(self, name: str, rdtype: str, value) -> None:
        rdtype = rdtype.upper()
        if rdtype == "TXT" and isinstance(value, (list, tuple)):
            value = "".join(value)
        elif rdtype == "MX":
            if isinstance(value, str):
                pref, _, host = value.partition(" ")
                value = (int(pref), host)
            value = (int(value[0]), names.normalize(value[1]))
        elif rdtype in ("PTR", "CNAME"):
            value = names.normalize(value)
        self.zone.setdefault(names.normalize(name), []).append((rdtype, value))

    def query(self, name: str, rdtype: str) -> Answer:
        self.log.append((name, rdtype))
        key = names.normalize(name)
        for _ in range(10):
            rrs = self.zone.get(key)
            if rrs is None:
                return Answer(NXDOMAIN)
            records = []
            for t, v in rrs:
                if t == "TIMEOUT":        # times out unless answered by what came before
                    if not records:
                        return Answer(ERROR, detail="timeout")
                    break
                if t == rdtype:
                    if v == "TIMEOUT":    # this type alone times out
                        return Answer(ERROR, detail="timeout")
                    records.append(v)
            if records:
                return Answer(OK, tuple(records))
            cname = [v for t, v in rrs if t == "CNAME"]
            if not cname or rdtype == "CNAME":
                return Answer(NODATA)
            key = names.normalize(cname[0])
        return Answer(ERROR, detail="CNAME chain too long")
