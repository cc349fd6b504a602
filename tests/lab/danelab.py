"""The DANE lab: a DNSSEC-signed zone with one mail domain per TLSA case.

`dane.test` is signed here (dnspython, ECDSA P-256, deterministic signatures over
a validity window fixed per day, so every session of a day builds the same text)
and served by the lab's one NSD; the validating resolver (tests/lab/unbound.py)
trusts its key. `unsigned.dane.test` is delegated from it without DS: provably
insecure.

Keys are fixed so the records can be written before any server starts: the RSA
leaf key is tests/lab/keys/dane-rsa.pem, the others (ECDSA leaf, next and old
keys, the DANE CA, the zone key) are derived from fixed labels. The certificates
themselves are issued afresh by LabPostfix (certificates(), for its DANE
endpoints); only their keys' digests are in DNS (selector 1, SPKI).

Endpoints (tests/lab/postfix.py ENDPOINTS):

  127.0.25.9:25   dane       RSA certificate for every DANE host name, chain with the DANE CA
  127.0.25.10:25  danedual   RSA and ECDSA certificates (the server picks by the client's offer)
  127.0.25.11:25  danenotls  no STARTTLS
  127.0.25.12     nothing listens (refused)

Domains under dane.test (each has MX 10 mx.<case>.dane.test), see CASES; and
offsite.dane.test (its MX host in the unsigned posture.test), partial.dane.test
(mx.ee and mx.none: one MX host without TLSA); mxalias.dane.test is a host name
aliased to mx.ee.dane.test.
"""

from __future__ import annotations

import datetime
import hashlib
from functools import cache
from pathlib import Path

ZONE = "dane.test"
UNSIGNED_ZONE = "unsigned.dane.test"
NS_ADDRESS = "127.0.25.53"  # the lab NSD: every name server of the DANE zones
RESOLVER_ADDRESS = "127.0.25.54"  # the validating resolver (unbound)
LAME_ZONE = "lame.test"  # no lab server answers for it: NSD refuses
RESOLVER_ARG = f"{RESOLVER_ADDRESS}:53"

RSA_ENDPOINT = "127.0.25.9"
DUAL_ENDPOINT = "127.0.25.10"
NOTLS_ENDPOINT = "127.0.25.11"
REFUSED_ENDPOINT = "127.0.25.12"

#: names the validator proof asks (check_dane --secure-name / --bogus-name)
SECURE_PROBE = ZONE
BOGUS_PROBE = "badsig.dane.test"

KEYS_DIR = Path(__file__).parent / "keys"

#: case -> (endpoint address, TLSA records as "usage selector mtype <data key>")
#: data keys: rsa, ec (the live leaf keys), next (an announced next key), old (a
#: retired key), ca (the DANE CA, an issuer in the live chain); a key with ":short" or
#: ":long" is its digest one octet short or long (a malformed record, RFC 6698 §2.1.3)
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ee": (RSA_ENDPOINT, ("3 1 1 rsa", "3 1 1 next")),           # current + next: OK
    "ta": (RSA_ENDPOINT, ("2 1 1 ca",)),                          # trust anchor: OK
    "eeta": (RSA_ENDPOINT, ("3 1 1 rsa", "2 1 1 ca")),            # both: OK
    "single": (RSA_ENDPOINT, ("3 1 1 rsa",)),                     # no rollover protection
    "rolled": (RSA_ENDPOINT, ("3 1 1 old",)),                     # key changed, TLSA not
    "stale": (RSA_ENDPOINT, ("3 1 1 rsa", "2 1 1 old")),          # a TA that matches nothing
    "pkix": (RSA_ENDPOINT, ("0 1 1 ca", "1 1 1 rsa")),            # usages unusable for SMTP
    "sha512": (RSA_ENDPOINT, ("3 1 2 rsa", "3 1 2 next")),        # matching type 2
    "unknown": (RSA_ENDPOINT, ("4 1 1 rsa", "3 1 1 rsa", "3 1 1 next")),  # usage 4: unusable
    "dual": (DUAL_ENDPOINT, ("3 1 1 ec",)),                       # RSA certificate unmatched
    "dualok": (DUAL_ENDPOINT, ("3 1 1 rsa", "3 1 1 ec", "2 1 1 ca")),
    "notls": (NOTLS_ENDPOINT, ("3 1 1 rsa", "2 1 1 ca")),         # TLSA but no STARTTLS
    "refused": (REFUSED_ENDPOINT, ("3 1 1 rsa", "2 1 1 ca")),     # nobody listens
    "bogus": (RSA_ENDPOINT, ("3 1 1 rsa", "2 1 1 ca")),           # broken TLSA signature
    "servfail": (RSA_ENDPOINT, ()),                               # TLSA name SERVFAILs
    "none": (RSA_ENDPOINT, ()),                                   # signed, no TLSA at all
    # malformed records beside good ones: OK, the malformed ones unusable
    "malformed": (RSA_ENDPOINT, ("3 1 1 rsa", "3 1 1 next", "3 1 1 rsa:short",
                                 "3 1 2 rsa:long")),
}

#: every host name the DANE certificates carry
HOSTNAMES = tuple(f"mx.{case}.{ZONE}" for case in CASES) + (f"mx.{UNSIGNED_ZONE}",)


# -- keys --------------------------------------------------------------------------------


@cache
def ec_key(label: str):
    """A P-256 key derived from `label`: the same key in every session."""
    from cryptography.hazmat.primitives.asymmetric import ec

    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    secret = int.from_bytes(hashlib.sha256(f"check_smtp_posture {label}".encode()).digest(),
                            "big") % (order - 1) + 1
    return ec.derive_private_key(secret, ec.SECP256R1())


@cache
def rsa_key():
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key((KEYS_DIR / "dane-rsa.pem").read_bytes(), None)


def _keys() -> dict:
    return {"rsa": rsa_key(), "ec": ec_key("dane leaf ec"), "next": ec_key("dane next"),
            "old": ec_key("dane old"), "ca": ec_key("dane ca")}


def spki(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def tlsa_data(key_name: str, mtype: int) -> str:
    key, _, damage = key_name.partition(":")
    digest = (hashlib.sha256 if mtype == 1 else hashlib.sha512)(spki(_keys()[key])).digest()
    return {"": digest, "short": digest[:-1], "long": digest + b"\x5a"}[damage].hex()


def live_tlsa(key_name: str = "rsa") -> str:
    """The `3 1 1` record of a live key, as the plugin's long output should suggest it."""
    return f"3 1 1 {tlsa_data(key_name, 1)}"


# -- certificates (issued by LabPostfix for its DANE endpoints) -----------------------------


@cache
def dane_ca():
    from tests.lab.certs import LabCA

    return LabCA("check_smtp_posture DANE lab CA", key=ec_key("dane ca"))


def write_chain_files(directory: Path) -> dict[str, Path]:
    """`<dir>/dane-rsa.pem` and `<dir>/dane-ec.pem`: key, leaf and the DANE CA, each one file
    (Postfix smtpd_tls_chain_files)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, key in (("rsa", rsa_key()), ("ec", ec_key("dane leaf ec"))):
        issued = dane_ca().issue(list(HOSTNAMES), key=key)
        path = directory / f"dane-{name}.pem"
        path.touch(mode=0o600)
        path.write_bytes(issued.key_pem + issued.cert_pem + dane_ca().cert_pem)
        files[name] = path
    return files


# -- zones ---------------------------------------------------------------------------------


def _records() -> str:
    lines = [
        f"@ NS ns.{ZONE}.",
        f"ns A {NS_ADDRESS}",
        # the validator proof's bogus name: its signature is broken below
        "badsig A 127.0.25.9",
        # unsigned.dane.test: delegated without DS, so provably insecure
        f"unsigned NS ns.{ZONE}.",
        # the TLSA name of mx.servfail is an alias into a zone whose server refuses to
        # answer (a lame delegation): resolvers SERVFAIL
        f"_25._tcp.mx.servfail CNAME _25._tcp.mx.{LAME_ZONE}.",
    ]
    for case, (address, records) in CASES.items():
        lines.append(f"{case} MX 10 mx.{case}.{ZONE}.")
        lines.append(f"mx.{case} A {address}")
        for record in records:
            if ":" not in record:  # the malformed ones: _malformed_records()
                usage, selector, mtype, key_name = record.split()
                lines.append(f"_25._tcp.mx.{case} TLSA {usage} {selector} {mtype} "
                             f"{tlsa_data(key_name, int(mtype))}")
    lines.append('_mta-sts.eeta TXT "v=STSv1; id=20261121"')  # noted by check_dane
    # a signed MX pointing into an unsigned zone: DANE not applicable to that host
    lines.append("offsite MX 10 mx1.posture.test.")
    # an MX host name that is an alias (RFC 7672 §2.2.2: the target's TLSA records first)
    lines.append(f"mxalias CNAME mx.ee.{ZONE}.")
    # two MX hosts, only one with TLSA records
    lines += [f"partial MX 10 mx.ee.{ZONE}.", f"partial MX 20 mx.none.{ZONE}."]
    return "\n".join(lines) + "\n"


def _malformed_records() -> list:
    """(owner, rdata) of the malformed TLSA records of CASES: dnspython's zone parser
    refuses them, so they go in as generic data (RFC 3597), which NSD serves as it is."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    found = []
    for case, (_, records) in CASES.items():
        for record in records:
            if ":" in record:
                usage, selector, mtype, key_name = record.split()
                wire = bytes([int(usage), int(selector), int(mtype)]) + \
                    bytes.fromhex(tlsa_data(key_name, int(mtype)))
                found.append((f"_25._tcp.mx.{case}.{ZONE}.", dns.rdata.GenericRdata(
                    dns.rdataclass.IN, dns.rdatatype.TLSA, wire)))
    return found


def _zone_text(origin: str, body: str) -> str:
    return (f"$ORIGIN {origin}.\n$TTL 300\n"
            f"@ SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 300\n" + body)


@cache
def dnssec():
    """dnspython's dns.dnssec, imported without its DSA deprecation warnings.

    dnspython (2.9) still registers DSA for DNSSEC, and cryptography 51 warns on
    every name of its DSA module that dnspython reads at import. The lab signs with
    ECDSA only; the warnings would be the first lines of `make demo`.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated")
        import dns.dnssec
    return dns.dnssec


@cache
def zone_key():
    """(private key, DNSKEY) of dane.test: one key, KSK and ZSK (flags 257)."""
    key = ec_key("dane.test zone")
    dnskey = dnssec().make_dnskey(key.public_key(), dnssec().Algorithm.ECDSAP256SHA256,
                                    flags=257)
    return key, dnskey


def trust_anchor() -> str:
    """The resolver's trust anchor for dane.test, as an unbound `trust-anchor:` value."""
    return f"{ZONE}. DNSKEY {zone_key()[1].to_text()}"


def signature_window(today: datetime.date | None = None) -> tuple[int, int]:
    """(inception, expiration): from yesterday 00:00 UTC, 31 days: the same all day."""
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    start = datetime.datetime.combine(today - datetime.timedelta(days=1), datetime.time(),
                                      datetime.timezone.utc)
    return int(start.timestamp()), int(start.timestamp()) + 31 * 86400


def signed_zone_text() -> str:
    """dane.test, signed (NSEC), with the bogus case's signatures broken."""
    import dns.name
    import dns.rdataset
    import dns.rdatatype
    import dns.zone

    zone = dns.zone.from_text(_zone_text(ZONE, _records()), origin=ZONE + ".",
                              relativize=False, check_origin=True)
    with zone.writer() as txn:
        for owner, rdata in _malformed_records():
            txn.add(dns.name.from_text(owner), 300, rdata)
    inception, expiration = signature_window()
    dnssec().sign_zone(zone, keys=[zone_key()], inception=inception,
                       expiration=expiration, deterministic=True)
    with zone.writer() as txn:
        for owner in (f"_25._tcp.mx.bogus.{ZONE}.", f"{BOGUS_PROBE}."):
            name = dns.name.from_text(owner)
            for rdataset in list(txn.get_node(name) or ()):
                if rdataset.rdtype != dns.rdatatype.RRSIG:
                    continue
                broken = [rd.replace(signature=bytes(b ^ 0x55 for b in rd.signature))
                          for rd in rdataset]
                txn.replace(name, dns.rdataset.from_rdata_list(rdataset.ttl, broken))
    return zone.to_text(relativize=False)


def unsigned_zone_text() -> str:
    body = (f"@ NS ns.{ZONE}.\n"
            f"@ MX 10 mx.{UNSIGNED_ZONE}.\n"
            f"mx A {RSA_ENDPOINT}\n"
            f"_25._tcp.mx TLSA 3 1 1 {tlsa_data('rsa', 1)}\n")
    return _zone_text(UNSIGNED_ZONE, body)


def dane_zones() -> dict[str, str]:
    """The DANE zones for the lab NSD: full texts with their own SOA."""
    return {ZONE: signed_zone_text(), UNSIGNED_ZONE: unsigned_zone_text()}

