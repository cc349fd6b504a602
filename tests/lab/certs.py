"""Certificates for the lab, made with `cryptography` (no openssl CLI).

A `LabCA` issues leaf certificates for any case the tests need::

    ca = LabCA()
    ca.write(tmpdir)                                 # -> tmpdir/ca.pem
    good = ca.issue(["mx1.posture.test", "mx2.posture.test"])
    certfile, keyfile = good.write(tmpdir, "mx1")    # leaf + CA chain, key unencrypted

    ca.issue(["mx1.posture.test"], not_after=now - timedelta(days=1))   # expired
    ca.issue(["mx1.posture.test"], not_before=now + timedelta(days=1))  # not yet valid
    ca.issue(["other.example"])                                         # wrong host
    ca.issue(["mx1.posture.test"], key_bits=1024)                       # weak key
    ca.issue(["mx1.posture.test"], hash="sha1")                         # weak signature
    ca.issue(["mx1.posture.test"], not_after=now + timedelta(days=5))   # expiring soon
    self_signed("mx1.posture.test")                                     # self-signed

`write_standard_set(dir)` writes all of these at once under fixed stems.

SHA-1: cryptography (>= 42 or so) refuses to *sign* certificates with SHA-1.
We still want SHA-1 certificates to test the "weak signature" finding, so
`hash="sha1"` (RSA keys only) builds the certificate with SHA-256, swaps the
signature algorithm OID for sha1WithRSAEncryption (same DER length) and
re-signs the TBS bytes with the raw RSA PKCS#1 v1.5 + SHA-1 primitive, which
cryptography still allows. A TLS server must run at OpenSSL security level 0
to load such a certificate (``ctx.set_ciphers("DEFAULT:@SECLEVEL=0")``); the
same holds for RSA keys under 2048 bits.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = datetime.timezone.utc

_HASHES = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_EC_CURVES = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}

# DER contents of the AlgorithmIdentifier OIDs swapped for SHA-1 certificates
# (1.2.840.113549.1.1.11 sha256WithRSAEncryption -> 1.2.840.113549.1.1.5).
_OID_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
_OID_SHA1_RSA = bytes.fromhex("06092a864886f70d010105")

#: generated keys, reused across certificates: key generation is the slow part
_KEY_CACHE: dict[tuple[str, int], Any] = {}


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC).replace(microsecond=0)


def make_key(key_type: str = "rsa", key_bits: int = 2048, *, fresh: bool = False):
    """A private key; cached per (type, bits) unless `fresh`."""
    key_type = key_type.lower()
    cache_key = (key_type, key_bits)
    if not fresh and cache_key in _KEY_CACHE:
        return _KEY_CACHE[cache_key]
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    elif key_type == "ec":
        if key_bits not in _EC_CURVES:
            raise ValueError(f"EC key_bits must be one of {sorted(_EC_CURVES)}")
        key = ec.generate_private_key(_EC_CURVES[key_bits]())
    elif key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif key_type == "dsa":  # deprecated by cryptography 51; servers may still present one
        import warnings

        from cryptography.hazmat.primitives.asymmetric import dsa

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="DSA is deprecated")
            key = dsa.generate_private_key(key_bits)
    else:
        raise ValueError(f"unknown key_type {key_type!r} (rsa, ec, ed25519, dsa)")
    if not fresh:
        _KEY_CACHE[cache_key] = key
    return key


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, org: str = "check_smtp_posture lab") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _san(hostnames: Sequence[str], ip_addresses: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return x509.SubjectAlternativeName(names)


def _sign(builder: x509.CertificateBuilder, signing_key, hash_name: str) -> x509.Certificate:
    hash_name = hash_name.lower()
    if isinstance(signing_key, ed25519.Ed25519PrivateKey):
        return builder.sign(signing_key, None)
    if hash_name == "sha1":
        return _sign_sha1(builder, signing_key)
    if hash_name not in _HASHES:
        raise ValueError(f"unknown hash {hash_name!r} ({', '.join([*_HASHES, 'sha1'])})")
    return builder.sign(signing_key, _HASHES[hash_name]())


def _sign_sha1(builder: x509.CertificateBuilder, signing_key) -> x509.Certificate:
    """Sign with sha1WithRSAEncryption although cryptography refuses to (see module doc)."""
    if not isinstance(signing_key, rsa.RSAPrivateKey):
        raise ValueError("hash='sha1' is supported for RSA signing keys only")
    cert = builder.sign(signing_key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    new_tbs = tbs.replace(_OID_SHA256_RSA, _OID_SHA1_RSA)
    if new_tbs.count(_OID_SHA1_RSA) != 1:
        raise RuntimeError("unexpected TBS layout while making a SHA-1 certificate")
    new_sig = signing_key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA1())
    old_sig = cert.signature
    assert len(new_sig) == len(old_sig)
    new_der = der.replace(tbs, new_tbs).replace(_OID_SHA256_RSA, _OID_SHA1_RSA)
    new_der = new_der.replace(old_sig, new_sig)
    return x509.load_der_x509_certificate(new_der)


@dataclass(frozen=True)
class IssuedCert:
    """A certificate with its private key and the chain up to (and including) its CA."""

    cert: x509.Certificate
    key: Any
    chain: tuple[x509.Certificate, ...] = ()  # issuers above the leaf, nearest first

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    @property
    def chain_pem(self) -> bytes:
        """Leaf followed by its issuers (what a server sends)."""
        return self.cert_pem + b"".join(_cert_pem(c) for c in self.chain)

    @property
    def chain_der(self) -> list[bytes]:
        return [self.cert_der] + [c.public_bytes(serialization.Encoding.DER)
                                  for c in self.chain]

    def write(self, directory: str | Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.crt` (leaf + chain) and `<stem>.key` (unencrypted, mode 0600)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        certfile = directory / f"{stem}.crt"
        keyfile = directory / f"{stem}.key"
        certfile.write_bytes(self.chain_pem)
        keyfile.touch(mode=0o600)
        keyfile.chmod(0o600)
        keyfile.write_bytes(self.key_pem)
        return certfile, keyfile


def _leaf_builder(hostnames: Sequence[str], ip_addresses: Iterable[str],
                  not_before, not_after, public_key, issuer: x509.Name,
                  common_name: str | None) -> x509.CertificateBuilder:
    now = _now()
    not_before = not_before or now - datetime.timedelta(days=1)
    not_after = not_after or now + datetime.timedelta(days=90)
    ip_addresses = list(ip_addresses)
    cn = common_name or (hostnames[0] if hostnames else
                         (ip_addresses[0] if ip_addresses else "lab"))
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(issuer)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                              critical=False))
    if hostnames or ip_addresses:
        builder = builder.add_extension(_san(hostnames, ip_addresses), critical=False)
    return builder


class LabCA:
    """A lab certificate authority (RSA 2048, SHA-256) issuing leaf certificates."""

    def __init__(self, common_name: str = "check_smtp_posture Lab CA", *,
                 valid_days: int = 3650, parent: LabCA | None = None, key=None):
        # `key`: a fixed key, for a CA whose key digests the lab publishes (DANE TLSA)
        self.key = key or make_key("rsa", 2048, fresh=True)
        self.parent = parent
        now = _now()
        name = _name(common_name)
        pub = self.key.public_key()
        builder = (x509.CertificateBuilder()
                   .subject_name(name)
                   .issuer_name(parent.cert.subject if parent else name)
                   .public_key(pub)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=30))
                   .not_valid_after(now + datetime.timedelta(days=valid_days))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                  critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                                crl_sign=True, content_commitment=False,
                                                key_encipherment=False,
                                                data_encipherment=False,
                                                key_agreement=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub),
                                  critical=False))
        if parent:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                critical=False)
        self.cert = builder.sign(parent.key if parent else self.key, hashes.SHA256())

    def intermediate(self, common_name: str = "check_smtp_posture Lab Intermediate CA",
                     **kwargs) -> LabCA:
        """A CA signed by this one; its leaves carry the chain intermediate -> root."""
        return LabCA(common_name, parent=self, **kwargs)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """This CA's certificate and its parents' up to the root."""
        return (self.cert,) + (self.parent.chain if self.parent else ())

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def write(self, directory: str | Path, name: str = "ca.pem") -> Path:
        """Write the CA certificate (PEM) as `<directory>/ca.pem`; return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_bytes(self.cert_pem)
        return path

    def issue(self, hostnames: Sequence[str] | str, *,
              not_before: datetime.datetime | None = None,
              not_after: datetime.datetime | None = None,
              key_type: str = "rsa", key_bits: int = 2048, hash: str = "sha256",
              ip_addresses: Iterable[str] = (), common_name: str | None = None,
              fresh_key: bool = False, key=None) -> IssuedCert:
        """A leaf for `hostnames` (SAN DNS names; the first is also the CN).

        Defaults: valid from yesterday for 90 days. `hash` names the CA's
        signature hash (sha256, sha384, sha512, sha1). Leaf keys are cached
        per (key_type, key_bits) unless `fresh_key`; `key` gives the leaf's key instead.
        """
        if isinstance(hostnames, str):
            hostnames = [hostnames]
        key = key or make_key(key_type, key_bits, fresh=fresh_key)
        builder = _leaf_builder(hostnames, ip_addresses, not_before, not_after,
                                key.public_key(), self.cert.subject, common_name)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
            critical=False)
        return IssuedCert(_sign(builder, self.key, hash), key, self.chain)


def self_signed(hostname: str | Sequence[str], *,
                not_before: datetime.datetime | None = None,
                not_after: datetime.datetime | None = None,
                key_type: str = "rsa", key_bits: int = 2048, hash: str = "sha256",
                ip_addresses: Iterable[str] = (), fresh_key: bool = False) -> IssuedCert:
    """A self-signed end-entity certificate for `hostname` (no CA, empty chain)."""
    hostnames = [hostname] if isinstance(hostname, str) else list(hostname)
    key = make_key(key_type, key_bits, fresh=fresh_key)
    cn = hostnames[0] if hostnames else "lab"
    builder = _leaf_builder(hostnames, ip_addresses, not_before, not_after,
                            key.public_key(), _name(cn), cn)
    return IssuedCert(_sign(builder, key, hash), key, ())


#: stems written by write_standard_set(), for the lab's servers and tests
STANDARD_CASES = ("valid", "expired", "notyet", "selfsigned", "wronghost",
                  "rsa1024", "sha1", "expiring5", "ec256")


def standard_set(ca: LabCA, hostnames: Sequence[str] = ("mx1.posture.test", "mx2.posture.test"),
                 *, now: datetime.datetime | None = None) -> dict[str, IssuedCert]:
    """One certificate per case in STANDARD_CASES, for `hostnames`."""
    now = now or _now()
    day = datetime.timedelta(days=1)
    hostnames = list(hostnames)
    return {
        "valid": ca.issue(hostnames),
        "expired": ca.issue(hostnames, not_before=now - 60 * day, not_after=now - day),
        "notyet": ca.issue(hostnames, not_before=now + 10 * day, not_after=now + 100 * day),
        "selfsigned": self_signed(hostnames),
        "wronghost": ca.issue(["wrong.example.test"]),
        "rsa1024": ca.issue(hostnames, key_bits=1024),
        "sha1": ca.issue(hostnames, hash="sha1"),
        "expiring5": ca.issue(hostnames, not_after=now + 5 * day),
        "ec256": ca.issue(hostnames, key_type="ec", key_bits=256),
    }


def write_standard_set(directory: str | Path, ca: LabCA | None = None,
                       hostnames: Sequence[str] = ("mx1.posture.test", "mx2.posture.test"),
                       ) -> dict[str, tuple[Path, Path]]:
    """Write ca.pem and `<case>.crt`/`<case>.key` for every STANDARD_CASES entry.

    Returns case -> (certfile, keyfile); the CA is at `<directory>/ca.pem`.
    """
    ca = ca or LabCA()
    ca.write(directory)
    return {case: issued.write(directory, case)
            for case, issued in standard_set(ca, hostnames).items()}
