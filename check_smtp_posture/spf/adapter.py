"""`SpfDns` over the family's DNS layer (`check_smtp_posture.dnslookup.DnsClient`)."""

from __future__ import annotations

from check_smtp_posture import names
from check_smtp_posture.spf.lookup import ERROR, NODATA, NXDOMAIN, OK, Answer


class DnsClientLookup:
    """Adapts DnsClient to the SPF engine; caches answers and totals the time spent.

    One run asks the same question several times (the lint walk, then
    checknames.normalize() for each address); the cache keeps those to one query each.
    Failures are not cached.
    """

    def __init__(self, client):
        self.client = client
        self.elapsed = 0.0
        self.queries = 0
        self._cache: dict[tuple[str, str], Answer] = {}

    def query(self, name: str, rdtype: str) -> Answer:
        key = (names.normalize(name), rdtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        from check_smtp_posture import dnslookup

        if not _askable(name):
            # SPF names are ASCII (RFC 7208 §4.3); dnspython would IDNA-map others
            # into different names. No such name can exist.
            answer = Answer(NXDOMAIN, detail="not a valid DNS name")
            self._cache[key] = answer
            return answer
        raw = self.client.query(name, rdtype)
        self.queries += 1
        self.elapsed += raw.elapsed
        if raw.status == dnslookup.NOERROR:
            answer = Answer(OK, tuple(_convert(rdtype, r) for r in raw.records))
        elif raw.status == dnslookup.NXDOMAIN:
            answer = Answer(NXDOMAIN)
        elif raw.status == dnslookup.NODATA:
            answer = Answer(NODATA)
        else:
            answer = Answer(ERROR, detail=raw.failure())
        if not answer.error:
            self._cache[key] = answer
        return answer


def _convert(rdtype: str, text: str):
    if rdtype == "MX":
        pref, _, host = text.partition(" ")
        return int(pref), names.normalize(host)
    if rdtype in ("PTR", "CNAME"):
        return names.normalize(text)
    return text


def _askable(name: str) -> bool:
    if not name.isascii():
        return False
    import dns.name

    try:
        dns.name.from_text(name)
    except Exception:
        return False
    return True
