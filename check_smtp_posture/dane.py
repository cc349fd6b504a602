"""DANE for SMTP (RFC 7672, RFC 7671, RFC 6698): TLSA records against a presented chain.

Logic on DER bytes and record text, no nagiosplugin; its one I/O, the TLSA
lookup, goes through the DnsClient a caller hands in. What SMTP
senders do with each record:

- usages 2 (DANE-TA) and 3 (DANE-EE) only; 0 and 1 (PKIX) are unusable for
  SMTP (RFC 7672 §3.1.3), as are unknown usages, selectors and matching types;
- DANE-EE matches the leaf's certificate or key, without name or expiry checks;
- DANE-TA matches an issuer in the presented chain; the chain from the leaf up
  to it must hold together, be within its validity dates and the leaf must be
  valid for one of the reference names (RFC 7672 §3.2.3: the MX host name, and
  where a secure CNAME led);
- a digest of the wrong length is malformed (and so unusable).

Rollover by meaning, not by count: a key change keeps mail flowing when a
DANE-TA record matches an issuer of the live chain, or a DANE-EE record matches
no live key (an announced next key).

Where the records are (RFC 7672 §2.2): `lookup_tlsa` asks for the TLSA RRset of
every MX host through the DnsClient (DNSSEC) handed in; a host whose address
records are insecure, or whose TLSA RRset is, has no DANE; a host name that is a
secure alias is asked about where it leads first, then under its own name.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from check_smtp_posture.fanout import each

USAGES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
SELECTORS = {0: "certificate", 1: "public key"}
MATCHING = {0: "full", 1: "SHA-256", 2: "SHA-512"}
DIGEST_SIZES = {1: 32, 2: 64}

# what DNS says about one MX host's TLSA records
PUBLISHED = "published"  # secure, non-empty
NO_TLSA = "no TLSA"  # securely denied: no DANE for this host
NOT_APPLICABLE = "not applicable"  # the host's addresses or the TLSA RRset are insecure
LOOKUP_FAILED = "lookup failed"  # senders defer mail

# what became of a record against one chain
MATCHED = "matched"
FAILED = "matched, checks failed"  # DANE-TA: matched an issuer, but the chain or name fails
UNUSED = "unused"  # usable, matches nothing presented
UNUSABLE = "unusable"
MALFORMED = "malformed"


@dataclass(frozen=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes
    problem: str = ""  # why it is malformed or unusable; "" for a usable record

    @classmethod
    def from_text(cls, text: str) -> TlsaRecord:
        """A record from presentation format ("3 1 1 ab12...") or RFC 3597 generic text
        ("\\# 35 030101ab12...", the DNS layer's form of a record dnspython refused);
        never raises."""
        fields = text.split()
        try:
            if fields[:1] == ["\\#"]:
                wire = bytes.fromhex("".join(fields[2:]))
                if len(wire) < 3 or len(wire) != int(fields[1]):
                    raise ValueError(text)
                usage, selector, mtype, data = wire[0], wire[1], wire[2], wire[3:]
            else:
                usage, selector, mtype = (int(f) for f in fields[:3])
                data = bytes.fromhex("".join(fields[3:]))
        except (ValueError, IndexError):
            return cls(-1, -1, -1, b"", f"{MALFORMED}: not a TLSA record")
        record = cls(usage, selector, mtype, data)
        return cls(usage, selector, mtype, data, record._problem())

    def _problem(self) -> str:
        if not self.data:
            return f"{MALFORMED}: no data"
        size = DIGEST_SIZES.get(self.mtype)
        if size is not None and len(self.data) != size:
            return (f"{MALFORMED}: {len(self.data)}-octet {MATCHING[self.mtype]} digest "
                    f"(needs {size})")
        if self.usage in (0, 1):
            return f"{UNUSABLE}: {USAGES[self.usage]} usage, not for SMTP (RFC 7672 §3.1.3)"
        if self.usage not in USAGES:
            return f"{UNUSABLE}: unknown usage {self.usage}"
        if self.selector not in SELECTORS:
            return f"{UNUSABLE}: unknown selector {self.selector}"
        if self.mtype not in MATCHING:
            return f"{UNUSABLE}: unknown matching type {self.mtype}"
        return ""

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    @property
    def short(self) -> str:
        """The record with its data cut, for status lines."""
        data = self.data.hex()
        return f"{self.usage} {self.selector} {self.mtype} " + (
            data if len(data) <= 12 else data[:12] + "...")


@dataclass(frozen=True)
class RecordOutcome:
    record: TlsaRecord
    status: str
    depth: int | None = None  # where in the chain it matched (0: the leaf)
    detail: str = ""

    def describe(self) -> str:
        if self.status == MATCHED:
            return f"{self.record.short}: matched at depth {self.depth}"
        if self.status == FAILED:
            return f"{self.record.short}: matched at depth {self.depth}, but {self.detail}"
        if self.status in (UNUSABLE, MALFORMED):
            return f"{self.record.short}: {self.record.problem}"
        return f"{self.record.short}: {self.detail or 'unused'}"


@dataclass(frozen=True)
class ChainCheck:
    """Every record against the chain one handshake presented."""

    key_type: str  # of the leaf: RSA, ECDSA, Ed25519...
    outcomes: tuple  # RecordOutcome per record, in record order
    live_record: str  # the `3 1 1` record that would match this leaf

    @property
    def authenticated(self) -> bool:
        return any(o.status == MATCHED for o in self.outcomes)

    @property
    def matched(self) -> list:
        return [o for o in self.outcomes if o.status == MATCHED]


def spki_der(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def association(cert_der: bytes, cert, selector: int, mtype: int) -> bytes:
    """The certificate association data of a certificate for a selector and matching type."""
    content = cert_der if selector == 0 else spki_der(cert)
    if mtype == 1:
        return hashlib.sha256(content).digest()
    if mtype == 2:
        return hashlib.sha512(content).digest()
    return content


def key_type(cert) -> str:
    """The key's kind as DANE operators name it (ECDSA, not EC), "unknown" if unreadable."""
    from check_smtp_posture.tls import key_kind

    try:
        kind = key_kind(cert.public_key())
    except Exception:
        return "unknown"
    return {"EC": "ECDSA"}.get(kind, kind)


def check_chain(records, chain_der, reference_names, now: datetime.datetime | None = None
                ) -> ChainCheck:
    """Every TLSA record against `chain_der` (leaf first), as senders would judge it."""
    from cryptography import x509

    now = now or datetime.datetime.now(datetime.timezone.utc)
    chain = []
    for der in chain_der:
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError:
            break  # what follows an unreadable certificate cannot be chained to
    if not chain:
        return ChainCheck("unreadable", tuple(RecordOutcome(r, UNUSED if r.usable else (
            MALFORMED if r.problem.startswith(MALFORMED) else UNUSABLE),
            detail="no readable certificate") for r in records), "")
    leaf = chain[0]
    outcomes = []
    for record in records:
        if not record.usable:
            status = MALFORMED if record.problem.startswith(MALFORMED) else UNUSABLE
            outcomes.append(RecordOutcome(record, status))
            continue
        depths = [0] if record.usage == 3 else range(1, len(chain))
        depth = next((d for d in depths if association(chain_der[d], chain[d], record.selector,
                                                         record.mtype) == record.data), None)
        if depth is None:
            detail = ("does not match this certificate's key" if record.usage == 3 else
                      "matches no issuer in this chain")
            outcomes.append(RecordOutcome(record, UNUSED, detail=detail))
            continue
        problem = _trust_anchor_problem(chain, depth, reference_names, now) \
            if record.usage == 2 else ""
        outcomes.append(RecordOutcome(record, FAILED if problem else MATCHED, depth, problem))
    live = f"3 1 1 {hashlib.sha256(spki_der(leaf)).hexdigest()}"
    return ChainCheck(key_type(leaf), tuple(outcomes), live)


def _trust_anchor_problem(chain, depth: int, names, now) -> str:
    """Why the chain from the leaf to the DANE-TA at `depth` fails senders' checks, or ""."""
    from check_smtp_posture.tls import names_match, signed_by

    for index in range(depth):
        if not signed_by(chain[index], chain[index + 1]):
            return f"the certificate at depth {index} is not issued by the one above it"
        cert = chain[index]
        if now < cert.not_valid_before_utc:
            return f"the certificate at depth {index} is not yet valid"
        if now > cert.not_valid_after_utc:
            return f"the certificate at depth {index} expired"
    if not any(names_match(chain[0], name) for name in names):
        return "the certificate is not valid for " + " or ".join(names)
    return ""


@dataclass(frozen=True)
class Rollover:
    ready: bool
    how: str  # why a key change keeps mail flowing, or why it would not
    stale: tuple = ()  # record texts that match nothing (notes)


def rollover(checks) -> Rollover:
    """Would a change of the server's key keep DANE working, given every handshake's check?"""
    if not checks:
        return Rollover(False, "nothing presented")
    by_record: dict[TlsaRecord, list] = {}
    for check in checks:
        for outcome in check.outcomes:
            by_record.setdefault(outcome.record, []).append(outcome)
    anchors = [r for r, outs in by_record.items()
               if r.usage == 2 and any(o.status == MATCHED for o in outs)]
    announced = [r for r, outs in by_record.items()
                 if r.usage == 3 and r.usable and all(o.status == UNUSED for o in outs)]
    stale = tuple(r.short for r, outs in by_record.items()
                  if r.usage == 2 and r.usable and all(o.status == UNUSED for o in outs))
    if anchors:
        return Rollover(True, f"a DANE-TA record ({anchors[0].short}) matches an issuer",
                        stale)
    if announced:
        return Rollover(True, f"a next key is published ({announced[0].short})", stale)
    return Rollover(False, "a new key would match no TLSA record", stale)


@dataclass(frozen=True)
class HostTlsa:
    """What DNS says about one MX host for DANE."""

    name: str
    status: str
    tlsa_name: str
    records: tuple = ()  # TlsaRecord
    answer: object = None  # the TLSA DnsAnswer (None when not asked)
    why: str = ""  # for NOT_APPLICABLE and LOOKUP_FAILED
    reference_names: tuple = ()  # names the certificate may carry (RFC 7672 §3.2.3)

    @property
    def usable(self) -> list:
        return [r for r in self.records if r.usable]

    @property
    def bogus(self) -> bool:
        answer = self.answer
        return answer is not None and answer.bogus


def lookup_tlsa(client, hosts, port: int, concurrency: int) -> list:
    """HostTlsa of every MX host (targets.Target), `concurrency` lookups at once."""
    return each(hosts, lambda target: host_tlsa(client, target, port), concurrency)


def host_tlsa(client, target, port: int) -> HostTlsa:
    """The TLSA RRset of one MX host, with the RFC 7672 §2.2.2 alias rule."""
    name = target.name
    if not target.authenticated:
        return HostTlsa(name, NOT_APPLICABLE, f"_{port}._tcp.{name}",
                        why=f"the address records of {name} are not signed (insecure)")
    # A host name that is a (secure) alias: the TLSA records of where it leads come first,
    # the original name's are the fallback; both names are reference names (§3.2.3).
    names = [target.canonical, name] if target.canonical and target.canonical != name \
        else [name]
    answer = None
    for base in names:
        tlsa_name = f"_{port}._tcp.{base}"
        answer = client.query(tlsa_name, "TLSA")
        if answer.failed:
            return HostTlsa(name, LOOKUP_FAILED, tlsa_name, answer=answer,
                            why=f"TLSA lookup of {tlsa_name} failed: {answer.failure()}")
        if not answer.authenticated:
            return HostTlsa(name, NOT_APPLICABLE, tlsa_name, answer=answer,
                            why=f"the TLSA records of {name} are not signed (insecure)")
        if answer.ok:
            records = tuple(TlsaRecord.from_text(r) for r in answer.records)
            return HostTlsa(name, PUBLISHED, tlsa_name, records, answer,
                            reference_names=tuple(names))
    return HostTlsa(name, NO_TLSA, f"_{port}._tcp.{name}", answer=answer,
                    why=f"{name} has no TLSA records")
