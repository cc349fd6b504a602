"""DKIM key records (RFC 6376 §3.6.1), their key sizes (RFC 8301) and Ed25519 (RFC 8463).

`lookup_key(client, domain, selector)` asks for the TXT record at
`selector._domainkey.domain` (the resolver follows a CNAME, as providers publish
selectors) and returns a `KeyLookup`: the answer, the record a verifier would use,
parsed into a `KeyRecord` (tags, key type, flags, the public key's size and
fingerprint). Facts only: what a key size or a flag means for a check is the
plugin's to decide. Nothing here raises for what the DNS or the record says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import namedtuple

from check_smtp_posture.sanitize import one_line

#: key types RFC 6376 (rsa) and RFC 8463 (ed25519) define
RSA = "rsa"
ED25519 = "ed25519"
#: hash algorithms a verifier still accepts (RFC 8301 §3.1: no sha1)
ACCEPTED_HASHES = frozenset({"sha256"})
#: the tags of a key record (RFC 6376 §3.6.1)
KNOWN_TAGS = ("v", "h", "k", "n", "p", "s", "t")
#: the bytes of a raw Ed25519 public key (RFC 8032 §5.1.5)
ED25519_KEY_BYTES = 32
#: how much of a SHA-256 fingerprint the status line shows
SHORT_FINGERPRINT = 16

# a tag-spec (RFC 6376 §3.2): tag-name "=" value, whitespace around both
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

#: KeyLookup.status values
FOUND = "found"  # a key record (maybe revoked or unusable: see KeyRecord)
MISSING = "missing"  # NXDOMAIN, or no TXT record that is a key record
FAILED = "failed"  # no answer: the DNS failed (DnsAnswer.failure())
SEVERAL = "several"  # more than one key record: verifiers' results are undefined


def key_name(domain: str, selector: str) -> str:
    """Where a selector's key record lives (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain}"


class KeyRecord(namedtuple("KeyRecord", (
        "text",
        "tags",  # (name, value) in the record's order
        "version",  # v=, or None
        "key_type",  # k= (default rsa)
        "key_data",  # p= decoded; b"" when p= is empty (revoked); None: not base64
        "hashes",  # h= (empty: any)
        "services",  # s=
        "flags",  # t=
        "unknown_tags",
        "rsa_bits",  # an RSA key's size, or None
        "problems"))):  # what makes verifiers refuse it
    """One key record, parsed."""

    __slots__ = ()

    @property
    def revoked(self) -> bool:
        """p= empty: the key was revoked (RFC 6376 §3.6.1)."""
        return self.key_data == b""

    @property
    def testing(self) -> bool:
        """t=y: the domain is testing DKIM; verifiers treat its mail as unsigned."""
        return "y" in self.flags

    @property
    def strict(self) -> bool:
        """t=s: the i= domain must be d= exactly, no subdomain."""
        return "s" in self.flags

    @property
    def usable(self) -> bool:
        """A verifier could check a signature with it."""
        return not self.problems and not self.revoked

    @property
    def for_email(self) -> bool:
        return "*" in self.services or "email" in self.services

    @property
    def fingerprint(self) -> str | None:
        """'sha256:' and the hex SHA-256 of the key bytes (p= decoded), None without a key."""
        if not self.key_data:
            return None
        return "sha256:" + hashlib.sha256(self.key_data).hexdigest()

    def describe(self) -> str:
        """The key in a few words: 'rsa-2048', 'ed25519', 'revoked'."""
        if self.revoked:
            return "revoked"
        if self.key_type == RSA and self.rsa_bits:
            return f"rsa-{self.rsa_bits}"
        return self.key_type


def short(fingerprint: str | None) -> str:
    """A fingerprint as the status line shows it: 'sha256:' and its first 16 hex digits."""
    if not fingerprint:
        return "none"
    kind, _, digest = fingerprint.partition(":")
    return f"{kind}:{digest[:SHORT_FINGERPRINT]}"


def parse_tags(text: str) -> tuple[tuple, str]:
    """The tag-list of a record (RFC 6376 §3.2): ((name, value), ...) and a syntax problem
    or ""."""
    tags, seen = [], set()
    for part in text.split(";"):
        if not part.strip():
            continue  # a trailing ';' or an empty tag-spec
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not _TAG_NAME.match(name):
            return tuple(tags), f"malformed tag {one_line(part.strip(), 40)!r}"
        if name in seen:
            return tuple(tags), f"tag {name}= appears twice"
        seen.add(name)
        tags.append((name, value.strip()))
    return tuple(tags), ""


def _colon_list(value: str) -> tuple:
    return tuple(v.strip().lower() for v in value.split(":") if v.strip())


def parse_record(text: str) -> KeyRecord:
    """A key record's text (the TXT strings joined) as a KeyRecord."""
    tags, problem = parse_tags(text)
    problems = [problem] if problem else []
    values = dict(tags)
    version = values.get("v")
    if version is not None and version != "DKIM1":
        problems.append(f"v={one_line(version, 20)} is not DKIM1")
    elif version is not None and tags[0][0] != "v":
        problems.append("v= is not the first tag")
    key_type = values.get("k", RSA).lower()
    if key_type not in (RSA, ED25519):
        problems.append(f"unknown key type k={one_line(key_type, 20)}")
    hashes = _colon_list(values.get("h", ""))
    services = _colon_list(values.get("s", "*")) or ("*",)
    flags = _colon_list(values.get("t", ""))
    unknown = tuple(name for name, _ in tags if name not in KNOWN_TAGS)
    key_data = None
    rsa_bits = None
    if "p" not in values:
        problems.append("no p= tag")
    else:
        key_data, bits, key_problem = _public_key(values["p"], key_type)
        rsa_bits = bits
        if key_problem:
            problems.append(key_problem)
    return KeyRecord(text, tags, version, key_type, key_data, hashes, services, flags,
                     unknown, rsa_bits, tuple(problems))


def _public_key(value: str, key_type: str) -> tuple[bytes | None, int | None, str]:
    """p= decoded, the RSA key's bits, and why the key is unusable (or "")."""
    data = re.sub(r"\s+", "", value)
    if not data:
        return b"", None, ""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None, None, "p= is not base64"
    if key_type == ED25519:
        if len(raw) != ED25519_KEY_BYTES:
            return raw, None, f"Ed25519 key of {len(raw)} bytes, not {ED25519_KEY_BYTES}"
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            return raw, None, "p= is not an Ed25519 public key"
        return raw, None, ""
    if key_type != RSA:
        return raw, None, ""  # the unknown type is the problem already
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:  # SubjectPublicKeyInfo, as everyone publishes (RFC 6376 erratum 3017)
        key = load_der_public_key(raw)
    except (ValueError, TypeError):
        key = _pkcs1_key(raw)
        if key is None:
            return raw, None, "p= is not an RSA public key"
    if not isinstance(key, rsa.RSAPublicKey):
        return raw, None, "p= is not an RSA public key"
    return raw, key.key_size, ""


def _pkcs1_key(raw: bytes):
    """A bare RSAPublicKey (PKCS #1), which RFC 6376's text names, or None."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    # wrap it in the SubjectPublicKeyInfo of rsaEncryption with NULL parameters
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
    bit_string = b"\x03" + _der_length(len(raw) + 1) + b"\x00" + raw
    body = algorithm + bit_string
    try:
        return load_der_public_key(b"\x30" + _der_length(len(body)) + body)
    except (ValueError, TypeError):
        return None


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


class KeyLookup(namedtuple("KeyLookup", (
        "domain", "selector",
        "answer",  # dnslookup.DnsAnswer
        "status",  # FOUND, MISSING, FAILED, SEVERAL
        "key",  # the KeyRecord, or None
        "other_records"), defaults=(None, 0))):  # TXT records there that are no key record
    """A selector's key record as DNS gave it."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return key_name(self.domain, self.selector)

    @property
    def alias(self) -> str:
        """The name the selector is an alias (CNAME) of, or ""."""
        answer = self.answer
        return answer.canonical_name.rstrip(".") if answer.is_alias else ""

    def absence(self) -> str:
        """Why there is no key, in words: 'NXDOMAIN', 'no key record among 3 TXT records'."""
        answer = self.answer
        where = f", alias of {self.alias}" if self.alias else ""
        if answer.status != "NOERROR":
            return answer.status + where
        if self.other_records:
            records = "record" if self.other_records == 1 else "records"
            return f"no key record among {self.other_records} TXT {records}" + where
        return "NODATA" + where


def is_key_record(text: str) -> bool:
    """Is a TXT record at a key name meant as a key record: v=DKIM1 first, or a p= tag?"""
    tags, _ = parse_tags(text)
    names = [name for name, _ in tags]
    return (bool(names) and names[0] == "v") or "p" in names


def lookup_key(client, domain: str, selector: str) -> KeyLookup:
    """The key record of `selector` in `domain`, via the run's DnsClient."""
    answer = client.query(key_name(domain, selector), "TXT")
    if answer.failed:
        return KeyLookup(domain, selector, answer, FAILED)
    if not answer.ok:
        return KeyLookup(domain, selector, answer, MISSING)
    keys = [text for text in answer.records if is_key_record(text)]
    others = len(answer.records) - len(keys)
    if not keys:
        return KeyLookup(domain, selector, answer, MISSING, other_records=others)
    if len(keys) > 1:
        return KeyLookup(domain, selector, answer, SEVERAL, other_records=others)
    return KeyLookup(domain, selector, answer, FOUND, parse_record(keys[0]), others)


#: where check_mail_roundtrip keeps the selectors its probes arrived signed with, in its
#: state file: {signing domain: {selector: when last seen (epoch)}}, read by check_dkim
ROUNDTRIP_STATE_KEY = "dkim_selectors"


def signature_selectors(values: list) -> list:
    """(d=, s=) of each DKIM-Signature header field value (RFC 6376 §3.5), normalised;
    a signature without a usable d= or s= is left out."""
    from check_smtp_posture import names

    found = []
    for value in values:
        tags = dict(parse_tags(value)[0])
        domain, selector = tags.get("d", ""), re.sub(r"\s+", "", tags.get("s", ""))
        if names.is_hostname(domain) and names.is_hostname(selector):
            pair = (names.normalize(domain), names.normalize(selector))
            if pair not in found:
                found.append(pair)
    return found


def recorded_selectors(data: dict, domain: str) -> list:
    """The selectors a round-trip state file (its `data`) saw `domain` sign with, sorted;
    entries of another shape are ignored."""
    from check_smtp_posture import names

    table = data.get(ROUNDTRIP_STATE_KEY) if isinstance(data, dict) else None
    seen = table.get(domain) if isinstance(table, dict) else None
    if not isinstance(seen, dict):
        return []
    return sorted(s for s in seen if isinstance(s, str) and names.is_hostname(s))
