"""TLS for the SMTP library: a permissive client context and certificate facts.

The check wants to *see* a bad certificate, not fail the handshake on it:
`client_context()` completes handshakes with untrusted, expired, wrong-host
and weak certificates, and `certificate_facts()` turns the presented chain
into plain facts (trust, name match, validity, key and signature strength)
that the plugin's Contexts judge.

Never imports nagiosplugin. `cryptography` is imported only inside the
functions that parse certificates, so a plain (non-TLS) run does not pay for it.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import re
import ssl
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .sanitize import one_line

UTC = datetime.timezone.utc

#: OpenSSL cipher string: everything with authentication, at security level 0,
#: so old servers (TLS 1.0/1.1, small keys, SHA-1) can be observed, not refused.
#: aNULL stays out: an anonymous cipher would hide the certificate.
CLIENT_CIPHERS = "ALL:!aNULL:!eNULL:@SECLEVEL=0"

_OP_LEGACY_SERVER_CONNECT = getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
#: a certificate in a PEM bundle (a CA file)
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)

# kinds of certificate findings
UNREADABLE, EXPIRED, NOT_YET_VALID = "unreadable", "expired", "not yet valid"
UNTRUSTED, NAME_MISMATCH = "untrusted", "name mismatch"
WEAK_KEY, WEAK_SIGNATURE = "weak key", "weak signature"

WEAK_HASHES = frozenset({"md2", "md4", "md5", "sha1"})
#: minimum acceptable key sizes in bits, by key type
MIN_KEY_BITS = {"RSA": 2048, "DSA": 2048, "EC": 224}


# --------------------------------------------------------------------------- context

def client_context(*, ca_file: str | None = None,
                   min_version: ssl.TLSVersion | None = None,
                   max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """An SSLContext whose handshake succeeds whatever certificate the server shows.

    Verification is off (CERT_NONE, no hostname check): trust and name are
    judged afterwards by `certificate_facts()`. The lowest protocol version
    OpenSSL allows is enabled (unless `min_version`), with security level 0,
    so a server that only speaks TLS 1.0 is reported as such instead of
    failing. `ca_file` is loaded for completeness (it does not change the
    handshake); pass the same file to `certificate_facts()`.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers(CLIENT_CIPHERS)
    except ssl.SSLError:  # a libssl without security levels or some ciphers
        ctx.set_ciphers("ALL:!aNULL:!eNULL")
    ctx.options |= _OP_LEGACY_SERVER_CONNECT  # old MTAs without RFC 5746
    ctx.minimum_version = min_version or ssl.TLSVersion.MINIMUM_SUPPORTED
    if max_version is not None:
        ctx.maximum_version = max_version
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def key_type_context(key_type: str) -> ssl.SSLContext:
    """A `client_context()` that asks for the server's certificate of `key_type` ("RSA" or
    "ECDSA"), for a server that has one of each.

    TLS 1.2 lets the client choose the certificate's key type by the cipher suites
    it offers (TLS 1.3 suites say nothing about it): only suites authenticated by
    that key type are offered, at security level 0 like every client context.
    """
    ctx = client_context(max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(("aECDSA" if key_type == "ECDSA" else "aRSA") + ":@SECLEVEL=0")
    return ctx


# --------------------------------------------------------------------------- session

@dataclass(frozen=True)
class TlsSession:
    """What was negotiated: protocol version, cipher, and the SNI name sent."""

    version: str | None          # 'TLSv1.3', 'TLSv1.2', ...
    cipher: str | None           # OpenSSL cipher name
    cipher_bits: int | None      # secret bits of the cipher
    sni: str | None = None       # server_name sent, None when no SNI

    def describe(self) -> str:
        parts = [self.version or "TLS", self.cipher or "unknown cipher"]
        if self.cipher_bits:
            parts.append(f"({self.cipher_bits} bits)")
        return " ".join(parts)


def tls_session(sslsock: Any) -> TlsSession:
    """TlsSession of a handshaken ssl.SSLSocket or ssl.SSLObject."""
    cipher = sslsock.cipher() or (None, None, None)
    sni = getattr(sslsock, "server_hostname", None) or None
    if sni is not None and _as_ip(sni) is not None:
        sni = None  # ssl never sends an IP address as server_name
    return TlsSession(version=sslsock.version(), cipher=cipher[0],
                      cipher_bits=cipher[2], sni=sni)


def peer_chain_der(sslsock: Any) -> list[bytes]:
    """The certificates the server sent, DER, leaf first, then intermediates.

    Uses get_unverified_chain() (public from Python 3.13, private on the
    _sslobj before), falling back to the leaf alone.
    """
    getter = getattr(sslsock, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(sslsock, "_sslobj", None), "get_unverified_chain", None)
    chain: list[bytes] = []
    if getter is not None:
        try:
            for item in getter() or ():
                if isinstance(item, (bytes, bytearray)):
                    chain.append(bytes(item))
                else:
                    import _ssl
                    chain.append(item.public_bytes(_ssl.ENCODING_DER))
        except Exception:  # private API: never let it break a check
            chain = []
    if not chain:
        leaf = sslsock.getpeercert(binary_form=True)
        if leaf:
            chain = [leaf]
    return chain


# --------------------------------------------------------------------------- facts

@dataclass(frozen=True)
class CertificateFacts:
    """Facts about a presented certificate chain (leaf first), for Contexts to judge.

    Text fields taken from the certificate are sanitised (one line, no '|').
    `error` is set, and most facts left empty, when the leaf could not be parsed.
    """

    hostname: str = ""                       # the name (or IP) the leaf was checked against
    error: str | None = None
    subject: str = ""                        # RFC 4514
    issuer: str = ""                         # RFC 4514
    serial: str = ""                         # upper-case hex
    fingerprint_sha256: str = ""             # hex, of the leaf's DER
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    days_left: float | None = None        # negative when expired
    expired: bool = False
    not_yet_valid: bool = False
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    hostname_matches: bool = False
    self_signed: bool = False
    chain_length: int = 0                    # certificates presented
    chain_trusted: bool = False
    chain_error: str | None = None        # short text when not trusted
    key_type: str | None = None           # 'RSA', 'EC', 'Ed25519', 'Ed448', 'DSA'
    key_bits: int | None = None
    signature_algorithm: str | None = None  # e.g. 'sha256WithRSAEncryption'
    signature_hash: str | None = None     # 'sha256', 'sha1', ... (None for EdDSA)
    weak_key: bool = False
    weak_signature: bool = False

    def findings(self) -> tuple[tuple[str, str], ...]:
        """(kind, phrase) for everything wrong, in the one wording users see.

        Kinds: UNREADABLE, EXPIRED, NOT_YET_VALID (the certificate cannot be
        used), UNTRUSTED, NAME_MISMATCH (common with private MX certificates),
        WEAK_KEY, WEAK_SIGNATURE. Phrases are short and sanitised.
        """
        if self.error:
            return ((UNREADABLE, self.error),)
        out = []
        if self.expired and self.days_left is not None:
            out.append((EXPIRED, f"expired {_days(-self.days_left)} ago"))
        if self.not_yet_valid and self.not_before is not None:
            out.append((NOT_YET_VALID, f"not valid before {self.not_before:%Y-%m-%d %H:%M}Z"))
        if not self.chain_trusted:
            out.append((UNTRUSTED, f"untrusted ({self.chain_error or 'unknown reason'})"))
        if not self.hostname_matches:
            out.append((NAME_MISMATCH, f"name mismatch for {one_line(self.hostname, 80)}"))
        if self.weak_key:
            out.append((WEAK_KEY, f"weak key ({self.key_type} {self.key_bits} bits)"))
        if self.weak_signature:
            out.append((WEAK_SIGNATURE,
                        f"weak signature ({self.signature_hash or self.signature_algorithm})"))
        return tuple(out)

    def problems(self) -> tuple[str, ...]:
        """The phrases of `findings()`."""
        return tuple(phrase for _, phrase in self.findings())


def _days(days: float) -> str:
    if days < 1:
        hours = round(days * 24)
        return f"{hours} hour" + ("" if hours == 1 else "s")
    whole = round(days)
    return f"{whole} day" + ("" if whole == 1 else "s")


def certificate_facts(chain_der: Sequence[bytes], *, hostname: str,
                      ca_file: str | None = None,
                      now: datetime.datetime | None = None) -> CertificateFacts:
    """Facts about `chain_der` (leaf first) as presented for `hostname`.

    Trust is checked against `ca_file` (a PEM bundle) when given, else the
    system trust store, and independently of name and time: the chain is
    verified at a moment inside the leaf's validity, the name is matched
    here (RFC 6125). Never raises: unparsable input gives facts with `error`.
    """
    hostname = (hostname or "").strip()
    try:
        with warnings.catch_warnings():  # e.g. cryptography's negative-serial warning
            warnings.simplefilter("ignore")
            return _certificate_facts(chain_der, hostname, ca_file, now)
    except Exception as exc:  # never a traceback from hostile or odd input
        return CertificateFacts(hostname=hostname,
                                error=one_line(f"not analysable: {exc}", 100),
                                chain_length=len(chain_der or ()))


def _certificate_facts(chain_der, hostname, ca_file, now) -> CertificateFacts:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    chain_der = [bytes(d) for d in (chain_der or ()) if d]
    if not chain_der:
        return CertificateFacts(hostname=hostname, error="none presented")
    try:
        leaf = x509.load_der_x509_certificate(chain_der[0])
    except Exception as exc:
        return CertificateFacts(hostname=hostname, chain_length=len(chain_der),
                                error=one_line(f"unparsable: {exc}", 100))
    intermediates = []
    for der in chain_der[1:]:
        try:
            intermediates.append(x509.load_der_x509_certificate(der))
        except Exception:
            continue  # ignore junk after the leaf; the path check will notice
    now = now or datetime.datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    not_before = leaf.not_valid_before_utc
    not_after = leaf.not_valid_after_utc
    san_dns, san_ip, has_san = _sans(leaf)
    key_type, key_bits = _key_info(leaf)
    sig_alg, sig_hash = _signature_info(leaf)
    trusted, chain_error = _chain_trust(leaf, intermediates, ca_file, now)

    return CertificateFacts(
        hostname=hostname,
        subject=one_line(_rfc4514(leaf.subject), 200),
        issuer=one_line(_rfc4514(leaf.issuer), 200),
        serial=format(leaf.serial_number, "X"),
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        not_before=not_before,
        not_after=not_after,
        days_left=(not_after - now).total_seconds() / 86400.0,
        expired=now > not_after,
        not_yet_valid=now < not_before,
        san_dns=tuple(one_line(n, 255) for n in san_dns),
        san_ip=tuple(san_ip),
        hostname_matches=_hostname_matches(hostname, leaf, san_dns, san_ip, has_san),
        self_signed=_is_self_signed(leaf),
        chain_length=len(chain_der),
        chain_trusted=trusted,
        chain_error=chain_error,
        key_type=key_type,
        key_bits=key_bits,
        signature_algorithm=sig_alg,
        signature_hash=sig_hash,
        weak_key=bool(key_type in MIN_KEY_BITS and key_bits is not None
                      and key_bits < MIN_KEY_BITS[key_type]),
        weak_signature=bool(sig_hash in WEAK_HASHES
                            or (sig_hash is None and sig_alg
                                and re.search(r"md[245]|sha1", sig_alg.lower()))),
    )


def _rfc4514(name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "<unparsable name>"


def _sans(cert) -> tuple[list[str], list[str], bool]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [], [], False
    except Exception:  # malformed extension: treat as "SAN present, nothing usable"
        return [], [], True
    dns = [str(n) for n in ext.value.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)]
    return dns, ips, True


def _key_info(cert) -> tuple[str | None, int | None]:
    try:
        key = cert.public_key()
    except Exception:
        return "unknown", None
    kind = key_kind(key)
    if kind == "Ed25519":
        return kind, 256
    if kind == "Ed448":
        return kind, 456
    if kind == "EC":
        return kind, key.curve.key_size
    if kind in ("RSA", "DSA"):
        return kind, key.key_size
    return kind, None


def key_kind(key) -> str:
    """"RSA", "EC", "Ed25519", "Ed448", "DSA", or the class name of another public key.

    cryptography 51 deprecates DSA: reading any name of its `dsa` module warns. So
    the current kinds are tried first and the DSA class is looked at only for a key
    that is none of them, which in practice means a DSA key.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    for cls, kind in ((rsa.RSAPublicKey, "RSA"), (ec.EllipticCurvePublicKey, "EC"),
                      (ed25519.Ed25519PublicKey, "Ed25519"), (ed448.Ed448PublicKey, "Ed448")):
        if isinstance(key, cls):
            return kind
    from cryptography.hazmat.primitives.asymmetric import dsa

    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    return type(key).__name__


def _signature_info(cert) -> tuple[str | None, str | None]:
    oid = cert.signature_algorithm_oid
    alg = getattr(oid, "_name", None) or oid.dotted_string
    try:
        hash_alg = cert.signature_hash_algorithm
    except Exception:  # unsupported (e.g. md2) or unknown algorithm
        hash_alg = None
        low = alg.lower()
        for name in ("md2", "md4", "md5", "sha1"):
            if name in low:
                return alg, name
    return alg, (hash_alg.name if hash_alg is not None else None)


# --------------------------------------------------------------------------- names

def _hostname_matches(hostname: str, cert, san_dns: Iterable[str],
                      san_ip: Iterable[str], has_san: bool) -> bool:
    """RFC 6125 matching: SAN only when present, CN only when there is no SAN."""
    ip = _as_ip(hostname)
    if ip is not None:
        return any(_as_ip(s) == ip for s in san_ip)
    target = _normalise_dns(hostname)
    if not target:
        return False
    if has_san:
        patterns = list(san_dns)
    else:
        from cryptography.x509.oid import NameOID
        patterns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return any(dns_name_matches(p, target) for p in patterns)


def names_match(cert, hostname: str) -> bool:
    """Is a parsed certificate valid for `hostname` (RFC 6125: SAN, else CN)?"""
    san_dns, san_ip, has_san = _sans(cert)
    return _hostname_matches(hostname, cert, san_dns, san_ip, has_san)


def signed_by(cert, issuer) -> bool:
    """Does `issuer`'s key verify `cert`'s signature? (parsed certificates)"""
    return cert.issuer == issuer.subject and _signed_by(cert, issuer)


def _as_ip(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _normalise_dns(name: str) -> str:
    name = name.strip().rstrip(".").lower()
    if name and not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    return name


def dns_name_matches(pattern: str, hostname: str) -> bool:
    """Does certificate name `pattern` cover `hostname`? (RFC 6125 section 6.4)

    Case-insensitive; a wildcard only as the whole left-most label, standing
    for exactly one label, with at least two labels after it; never matches
    an IDN A-label.
    """
    pattern = _normalise_dns(pattern)
    hostname = _normalise_dns(hostname)
    if not pattern or not hostname:
        return False
    if "*" not in pattern:
        return pattern == hostname
    p_first, _, p_rest = pattern.partition(".")
    h_first, _, h_rest = hostname.partition(".")
    if p_first != "*" or "*" in p_rest or p_rest.count(".") < 1:
        return False
    if not h_first or h_first.startswith("xn--"):
        return False
    return p_rest == h_rest


# --------------------------------------------------------------------------- trust

@functools.lru_cache(maxsize=8)
def _load_anchors(ca_file: str | None) -> tuple:
    """Trust anchors from `ca_file` or the system store, parsed once per process."""
    from cryptography import x509

    if ca_file:
        paths = [ca_file]
    else:
        paths = []
        vp = ssl.get_default_verify_paths()
        cafile = os.environ.get(vp.openssl_cafile_env) or vp.cafile or vp.openssl_cafile
        if cafile and os.path.isfile(cafile):
            paths.append(cafile)
        else:
            capath = os.environ.get(vp.openssl_capath_env) or vp.capath or vp.openssl_capath
            if capath and os.path.isdir(capath):
                paths += sorted(os.path.join(capath, f) for f in os.listdir(capath)
                                if re.fullmatch(r"[0-9a-f]{8}\.\d+", f))
    anchors = []
    seen = set()
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            if ca_file:
                raise
            continue
        for block in _PEM_CERTIFICATE.findall(data):
            try:
                with warnings.catch_warnings():  # odd old roots (negative serials...)
                    warnings.simplefilter("ignore")
                    cert = x509.load_pem_x509_certificate(block)
            except Exception:
                continue
            if block not in seen:
                seen.add(block)
                anchors.append(cert)
    return tuple(anchors)


def _chain_trust(leaf, intermediates, ca_file, now) -> tuple[bool, str | None]:
    try:
        anchors = _load_anchors(ca_file)
    except OSError as exc:
        return False, one_line(f"cannot read CA file: {exc.strerror or exc}", 80)
    if not anchors:
        return False, "no trust anchors"
    from cryptography.x509 import verification as v

    # a certificate the operator trusts explicitly (pinned in the CA file)
    if any(a == leaf for a in anchors):
        return True, None

    # verify at a time inside the leaf's validity: expiry is its own finding
    when = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    builder = (v.PolicyBuilder().store(v.Store(list(anchors))).time(when)
               .max_chain_depth(8)
               .extension_policies(ca_policy=_ca_policy(),
                                   ee_policy=v.ExtensionPolicy.permit_all()))
    try:
        builder.build_client_verifier().verify(leaf, list(intermediates))
        return True, None
    except v.VerificationError as exc:
        message = str(exc)

    # find out why with a simple path walk by name and signature
    path_ok, reason = _walk_path(leaf, intermediates, anchors, when)
    low = message.lower()
    if path_ok and ("forbidden" in low or "unsupported" in low):
        # trusted, but with an algorithm or key web PKI forbids: reported as
        # weak_signature / weak_key, not as a trust failure
        return True, None
    if reason:
        return False, reason
    return False, _verifier_reason(message)


_VERIFIER_PREFIX = re.compile(r"^(validation failed|candidates exhausted"
                              r"|Python extension validator failed|[A-Za-z]*Error"
                              r"|invalid extension|[0-9.]+):\s*")


def _verifier_reason(message: str) -> str:
    """cryptography's verification message as a short reason."""
    if "basicConstraints.cA must be asserted" in message:
        return "issuer is not a CA"
    text = message.strip()
    while True:  # peel "validation failed: candidates exhausted: ...: " prefixes
        shorter = _VERIFIER_PREFIX.sub("", text)
        if shorter == text:
            break
        text = shorter
    text = re.sub(r"\s*\(encountered processing .*$", "", text)
    return one_line(text or message, 80)


def _ca_policy():
    """What a CA certificate in the path must satisfy: what OpenSSL asks, not web PKI.

    Web PKI rules (required keyUsage, authority/subject key identifiers, ...)
    would call many private mail CAs untrusted although every MTA and OpenSSL
    client accepts them. Kept: an issuing certificate must be a CA
    (basicConstraints cA; cryptography insists on that extension) and, when
    it has keyUsage, keyCertSign.
    """
    from cryptography import x509
    from cryptography.x509 import verification as v

    def basic_constraints(_policy, _cert, value) -> None:
        if not value.ca:
            raise ValueError("issuer is not a CA")

    def key_usage(_policy, _cert, value) -> None:
        if value is not None and not value.key_cert_sign:
            raise ValueError("issuer key usage does not allow certificate signing")

    return (v.ExtensionPolicy.permit_all()
            .require_present(x509.BasicConstraints, v.Criticality.AGNOSTIC, basic_constraints)
            .may_be_present(x509.KeyUsage, v.Criticality.AGNOSTIC, key_usage))


def _walk_path(leaf, intermediates, anchors, when) -> tuple[bool, str | None]:
    """Follow issuer names up to a trust anchor; (reached an anchor, why not)."""
    current = leaf
    used = [leaf]
    for _depth in range(10):
        for anchor in anchors:
            if anchor.subject == current.issuer and _signed_by(current, anchor):
                return True, None
        if current.issuer == current.subject:
            if current is leaf:
                return False, "self-signed certificate"
            return False, "self-signed certificate in chain"
        issuer = next((c for c in intermediates
                       if c not in used and c.subject == current.issuer
                       and _signed_by(current, c)), None)
        if issuer is None:
            if any(c.subject == current.issuer for c in [*intermediates, *anchors]):
                return False, "certificate signature failure"
            return False, "unable to get local issuer certificate"
        if not (issuer.not_valid_before_utc <= when <= issuer.not_valid_after_utc):
            return False, "expired intermediate certificate"
        used.append(issuer)
        current = issuer
    return False, "certificate chain too long"


def _signed_by(cert, issuer) -> bool:
    """Does `issuer`'s key verify `cert`'s signature (any algorithm, SHA-1 included)?"""
    try:
        key = issuer.public_key()
        kind = key_kind(key)
        sig, tbs = cert.signature, cert.tbs_certificate_bytes
        if kind == "RSA":
            key.verify(sig, tbs, cert.signature_algorithm_parameters,
                       cert.signature_hash_algorithm)
        elif kind == "EC":
            key.verify(sig, tbs, cert.signature_algorithm_parameters)
        elif kind in ("Ed25519", "Ed448"):
            key.verify(sig, tbs)
        elif kind == "DSA":
            key.verify(sig, tbs, cert.signature_hash_algorithm)
        else:
            return False
        return True
    except Exception:
        return False


def _is_self_signed(cert) -> bool:
    if cert.subject != cert.issuer:
        return False
    return _signed_by(cert, cert)


class NoTrustAnchors(ValueError):
    """A CA file in which no certificate loads: no chain can be verified against it."""


def verified_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A context that refuses an untrusted chain or a wrong name: for sending a password.

    Where a password crosses the connection (a mailbox login, submission AUTH) the
    certificate is checked before anything is sent, not reported afterwards.
    `ca_file` replaces the system trust store. Its certificates are read as
    certificate_facts() reads them: a PEM block that is no certificate is
    skipped (OpenSSL would refuse the whole file for it), and a file without
    one is NoTrustAnchors, "untrusted (no trust anchors)" as the other plugins say.
    """
    if not ca_file:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # chain and name verified
    try:
        with open(ca_file, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise NoTrustAnchors(f"CA file {ca_file}: {exc.strerror}") from None
    anchors = 0
    for block in _PEM_CERTIFICATE.findall(data):
        try:
            context.load_verify_locations(cadata=block.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError):
            continue
        anchors += 1
    if not anchors:
        raise NoTrustAnchors(f"no trust anchors in CA file {ca_file}")
    return context
