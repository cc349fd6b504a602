"""TLS facts from real handshakes over loopback against a small threaded ssl server."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest

from check_smtp_posture.tls import (
    CertificateFacts,
    certificate_facts,
    client_context,
    dns_name_matches,
    peer_chain_der,
    tls_session,
)
from tests.lab.certs import LabCA, self_signed, standard_set

ADDRESS = "127.0.27.200"
MX1 = "mx1.posture.test"
MX2 = "mx2.posture.test"


class TlsServer:
    """Accepts connections on ADDRESS:ephemeral, completes a TLS handshake, waits, closes."""

    def __init__(self, issued, workdir, *, min_version=None, max_version=None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.set_ciphers("ALL:@SECLEVEL=0")  # accept 1024-bit and SHA-1 certs
        if min_version:
            self.context.minimum_version = min_version
        if max_version:
            self.context.maximum_version = max_version
        certfile, keyfile = issued.write(workdir, f"srv{id(self)}")
        self.context.load_cert_chain(certfile, keyfile)
        self.listener = socket.create_server((ADDRESS, 0))
        self.listener.settimeout(5)
        self.address = self.listener.getsockname()
        self.errors: list[Exception] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes
            except (OSError, ssl.SSLError) as exc:
                self.errors.append(exc)
            finally:
                conn.close()

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tlsfacts")
    ca = LabCA()
    certs = standard_set(ca, (MX1, MX2))
    return {"dir": workdir, "ca": ca, "ca_file": str(ca.write(workdir)), "certs": certs}


@pytest.fixture
def serve(lab):
    servers = []

    def start(issued, **kwargs):
        server = TlsServer(issued, lab["dir"], **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def handshake(server, sni=MX1, **ctx_kwargs):
    ctx = client_context(**ctx_kwargs)
    with socket.create_connection(server.address, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni) as tls:
        return tls_session(tls), peer_chain_der(tls)


def facts_via_handshake(serve, lab, case, hostname=MX1, ca_file="lab") -> CertificateFacts:
    server = serve(lab["certs"][case] if isinstance(case, str) else case)
    _, chain = handshake(server, sni=hostname)
    return certificate_facts(chain, hostname=hostname,
                             ca_file=lab["ca_file"] if ca_file == "lab" else ca_file)


# ---------------------------------------------------------------- real handshakes

def test_valid_certificate_trusted_and_matching(serve, lab):
    server = serve(lab["certs"]["valid"])
    session, chain = handshake(server, sni=MX2)
    assert session.version == "TLSv1.3"
    assert session.cipher and session.cipher_bits >= 128
    assert session.sni == MX2
    assert len(chain) == 2  # leaf + CA, as the server sent them
    assert chain[0] == lab["certs"]["valid"].cert_der
    facts = certificate_facts(chain, hostname=MX2, ca_file=lab["ca_file"])
    assert facts.error is None
    assert facts.chain_trusted and facts.chain_error is None
    assert facts.hostname_matches
    assert facts.san_dns == (MX1, MX2) and facts.san_ip == ()
    assert facts.subject == f"CN={MX1},O=check_smtp_posture lab"
    assert facts.issuer == "CN=check_smtp_posture Lab CA,O=check_smtp_posture lab"
    assert not facts.expired and not facts.not_yet_valid and not facts.self_signed
    assert 89 < facts.days_left <= 90
    assert facts.not_after.tzinfo is not None
    assert (facts.key_type, facts.key_bits, facts.signature_hash) == ("RSA", 2048, "sha256")
    assert not facts.weak_key and not facts.weak_signature
    assert facts.chain_length == 2
    assert facts.problems() == ()


def test_lab_ca_unknown_to_the_system_store(serve, lab):
    facts = facts_via_handshake(serve, lab, "valid", ca_file=None)
    assert not facts.chain_trusted
    assert facts.chain_error == "self-signed certificate in chain"
    assert facts.hostname_matches


def test_wrong_host(serve, lab):
    facts = facts_via_handshake(serve, lab, "wronghost")
    assert facts.chain_trusted
    assert not facts.hostname_matches
    assert facts.san_dns == ("wrong.example.test",)
    assert facts.problems() == (f"name mismatch for {MX1}",)


def test_self_signed(serve, lab):
    facts = facts_via_handshake(serve, lab, "selfsigned")
    assert facts.self_signed
    assert not facts.chain_trusted
    assert facts.chain_error == "self-signed certificate"
    assert facts.hostname_matches
    assert facts.chain_length == 1


def test_expired_is_a_time_finding_not_a_trust_failure(serve, lab):
    facts = facts_via_handshake(serve, lab, "expired")
    assert facts.expired and not facts.not_yet_valid
    assert -1.01 < facts.days_left < -0.99
    assert facts.chain_trusted and facts.hostname_matches
    assert facts.problems() == ("expired 1 day ago",)


def test_not_yet_valid(serve, lab):
    facts = facts_via_handshake(serve, lab, "notyet")
    assert facts.not_yet_valid and not facts.expired
    assert facts.chain_trusted
    assert facts.problems()[0].startswith("not valid before ")


def test_weak_rsa_1024_key(serve, lab):
    facts = facts_via_handshake(serve, lab, "rsa1024")
    assert (facts.key_type, facts.key_bits) == ("RSA", 1024)
    assert facts.weak_key and not facts.weak_signature
    assert facts.chain_trusted
    assert facts.problems() == ("weak key (RSA 1024 bits)",)


def test_expiring_in_five_days(serve, lab):
    facts = facts_via_handshake(serve, lab, "expiring5")
    assert abs(facts.days_left - 5) < 0.01
    assert not facts.expired and not facts.problems()


def test_sha1_signature(serve, lab):
    facts = facts_via_handshake(serve, lab, "sha1")
    assert facts.signature_hash == "sha1"
    assert facts.signature_algorithm == "sha1WithRSAEncryption"
    assert facts.weak_signature and not facts.weak_key
    # trusted (the CA did sign it) though web PKI forbids the algorithm
    assert facts.chain_trusted
    assert facts.problems() == ("weak signature (sha1)",)


def test_ec_key(serve, lab):
    facts = facts_via_handshake(serve, lab, "ec256")
    assert (facts.key_type, facts.key_bits, facts.weak_key) == ("EC", 256, False)
    assert not facts.problems()


# A DSA key is still told apart; on cryptography 51 and later, where DSA is deprecated,
# only such a key makes the family look at the DSA class (and warn, kept for -vvv).
@pytest.mark.filterwarnings("ignore:DSA is deprecated")
@pytest.mark.parametrize("key_type, bits, facts_kind, dane_kind", [
    ("rsa", 2048, "RSA", "RSA"),
    ("ec", 384, "EC", "ECDSA"),
    ("ed25519", 256, "Ed25519", "Ed25519"),
    ("dsa", 1024, "DSA", "DSA"),
])
def test_every_key_type_is_told_apart(key_type, bits, facts_kind, dane_kind):
    from cryptography import x509

    from check_smtp_posture import dane

    cert = self_signed(MX1, key_type=key_type, key_bits=bits)
    facts = certificate_facts(cert.chain_der, hostname=MX1)
    assert (facts.key_type, facts.key_bits) == (facts_kind, bits)
    assert facts.self_signed  # the signature verified with that kind of key
    assert dane.key_type(x509.load_der_x509_certificate(cert.chain_der[0])) == dane_kind


def test_no_key_type_but_dsa_touches_the_deprecated_dsa_module():
    """With the filterwarnings of pyproject.toml a DSA deprecation from our code fails
    this test; it needs cryptography 51, where reading the DSA names warns."""
    from cryptography import x509

    from check_smtp_posture import dane

    for key_type, bits in (("rsa", 2048), ("ec", 256), ("ed25519", 256)):
        cert = self_signed(MX1, key_type=key_type, key_bits=bits)
        assert not certificate_facts(cert.chain_der, hostname=MX1).error
        dane.key_type(x509.load_der_x509_certificate(cert.chain_der[0]))


def test_intermediate_chain_and_missing_intermediate(serve, lab, tmp_path):
    root = LabCA("Posture Root")
    issuing = root.intermediate("Posture Issuing CA")
    leaf = issuing.issue([MX1])
    root_file = str(root.write(tmp_path, "root.pem"))
    server = serve(leaf)
    _, chain = handshake(server)
    assert chain == leaf.chain_der and len(chain) == 3  # leaf, intermediate, root
    facts = certificate_facts(chain, hostname=MX1, ca_file=root_file)
    assert facts.chain_trusted and not facts.problems()
    facts = certificate_facts(chain[:1], hostname=MX1, ca_file=root_file)
    assert not facts.chain_trusted
    assert facts.chain_error == "unable to get local issuer certificate"


def test_no_sni_for_an_ip_address(serve, lab):
    session, _ = handshake(serve(lab["certs"]["valid"]), sni=ADDRESS)
    assert session.sni is None


def test_tls12_server_is_reported(serve, lab):
    server = serve(lab["certs"]["valid"], max_version=ssl.TLSVersion.TLSv1_2)
    session, chain = handshake(server)
    assert session.version == "TLSv1.2"
    assert len(chain) == 2


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_tls10_server_is_observed_not_refused(serve, lab):
    try:
        server = serve(lab["certs"]["valid"], min_version=ssl.TLSVersion.TLSv1,
                       max_version=ssl.TLSVersion.TLSv1)
        session, _ = handshake(server)
    except (ssl.SSLError, ValueError) as exc:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.0 at all: {exc}")
    assert session.version == "TLSv1"


def test_min_version_refuses_older(serve, lab):
    server = serve(lab["certs"]["valid"], max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        handshake(server, min_version=ssl.TLSVersion.TLSv1_3)


def test_client_context_is_permissive():
    ctx = client_context()
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.MINIMUM_SUPPORTED


# ---------------------------------------------------------------- no network

def test_peer_chain_falls_back_to_the_leaf():
    class Leafy:
        def getpeercert(self, binary_form=False):
            return b"leaf-der"

    assert peer_chain_der(Leafy()) == [b"leaf-der"]


def test_ip_address_san(lab):
    issued = lab["ca"].issue([MX1], ip_addresses=[ADDRESS, "2001:db8::25"])
    chain = issued.chain_der
    ca_file = lab["ca_file"]
    assert certificate_facts(chain, hostname=ADDRESS, ca_file=ca_file).hostname_matches
    assert certificate_facts(chain, hostname="[2001:db8:0::25]", ca_file=ca_file).hostname_matches
    assert not certificate_facts(chain, hostname="127.0.27.201", ca_file=ca_file).hostname_matches
    # an IP target never matches a DNS SAN spelled like it
    dns_only = lab["ca"].issue([ADDRESS])
    assert not certificate_facts(dns_only.chain_der, hostname=ADDRESS).hostname_matches


def test_common_name_only_without_san(lab):
    no_san = lab["ca"].issue([], common_name=MX1)
    facts = certificate_facts(no_san.chain_der, hostname=MX1, ca_file=lab["ca_file"])
    assert facts.san_dns == () and facts.hostname_matches
    with_san = lab["ca"].issue(["other.posture.test"], common_name=MX1)
    assert not certificate_facts(with_san.chain_der, hostname=MX1).hostname_matches


@pytest.mark.parametrize("pattern, host, expected", [
    ("mx1.posture.test", "MX1.Posture.Test.", True),
    ("*.posture.test", "mx1.posture.test", True),
    ("*.posture.test", "posture.test", False),
    ("*.posture.test", "a.mx1.posture.test", False),
    ("*.test", "posture.test", False),
    ("mx*.posture.test", "mx1.posture.test", False),
    ("*.*.test", "a.b.test", False),
    ("mx1.*.test", "mx1.posture.test", False),
    ("*.posture.test", "xn--bcher-kva.posture.test", False),
    ("xn--bcher-kva.posture.test", "bücher.posture.test", True),
    ("", "mx1.posture.test", False),
])
def test_dns_name_matching(pattern, host, expected):
    assert dns_name_matches(pattern, host) is expected


def test_pinned_self_signed_certificate_is_trusted(tmp_path):
    cert = self_signed(MX1)
    pin = tmp_path / "pin.pem"
    pin.write_bytes(cert.cert_pem)
    facts = certificate_facts(cert.chain_der, hostname=MX1, ca_file=str(pin))
    assert facts.self_signed and facts.chain_trusted


@pytest.mark.parametrize("chain", [
    [b"garbage"],
    [b""],
    [],
    [b"\x30\x82\xff\xff" + b"\x00" * 20],
])
def test_garbage_der_gives_an_error_not_an_exception(chain):
    facts = certificate_facts(chain, hostname=MX1)
    assert facts.error
    assert "\n" not in facts.error and "|" not in facts.error
    assert not facts.chain_trusted and not facts.hostname_matches
    assert facts.problems() == (facts.error,)


def test_truncated_certificate_and_junk_intermediate(lab):
    der = lab["certs"]["valid"].cert_der
    assert certificate_facts([der[:-10]], hostname=MX1).error
    facts = certificate_facts([der, b"junk"], hostname=MX1, ca_file=lab["ca_file"])
    assert facts.error is None and facts.chain_trusted and facts.chain_length == 2


def test_unreadable_ca_file(lab, tmp_path):
    facts = certificate_facts(lab["certs"]["valid"].chain_der, hostname=MX1,
                              ca_file=str(tmp_path / "missing.pem"))
    assert not facts.chain_trusted and facts.chain_error.startswith("cannot read CA file")
    assert facts.hostname_matches


def test_now_is_injectable(lab):
    cert = lab["certs"]["valid"]
    later = cert.cert.not_valid_after_utc + datetime.timedelta(days=2)
    facts = certificate_facts(cert.chain_der, hostname=MX1, ca_file=lab["ca_file"], now=later)
    assert facts.expired and -2.01 < facts.days_left < -1.99 and facts.chain_trusted


# ---------------------------------------------------------------- CA policy

def _odd_ca_and_leaf(*, ca_extensions, leaf_issuer=None):
    """A CA built with only `ca_extensions`, and an mx1 leaf it signs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from tests.lab.certs import make_key

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = make_key("rsa", 2048, fresh=True)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Private Mail CA")])
    builder = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(7)
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30)))
    for ext, critical in ca_extensions:
        builder = builder.add_extension(ext, critical=critical)
    ca_cert = builder.sign(ca_key, hashes.SHA256())
    leaf_key = make_key("rsa", 2048)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MX1)]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(8)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(MX1)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return ca_cert, leaf


def _pem_file(tmp_path, cert):
    from cryptography.hazmat.primitives.serialization import Encoding

    path = tmp_path / "private-ca.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return str(path)


def _der(cert):
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def test_private_ca_without_key_usage_or_key_ids_is_trusted(tmp_path):
    # what `openssl req -x509` makes with Debian's default v3_ca section minus key ids
    from cryptography import x509

    ca_cert, leaf = _odd_ca_and_leaf(
        ca_extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    facts = certificate_facts([_der(leaf)], hostname=MX1, ca_file=_pem_file(tmp_path, ca_cert))
    assert facts.chain_trusted and not facts.problems()


def test_ca_without_cert_sign_usage_is_not_trusted(tmp_path):
    from cryptography import x509

    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    ca_cert, leaf = _odd_ca_and_leaf(
        ca_extensions=[(x509.BasicConstraints(ca=True, path_length=None), True),
                       (usage, True)])
    facts = certificate_facts([_der(leaf)], hostname=MX1, ca_file=_pem_file(tmp_path, ca_cert))
    assert not facts.chain_trusted
    assert facts.chain_error == "issuer key usage does not allow certificate signing"


def test_leaf_cannot_issue_certificates(lab):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from tests.lab.certs import make_key

    parent = lab["certs"]["valid"]  # CA:FALSE, signed by the lab CA
    now = datetime.datetime.now(datetime.timezone.utc)
    key = make_key("ec", 256)
    forged = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, MX2)]))
              .issuer_name(parent.cert.subject).public_key(key.public_key())
              .serial_number(9).not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(MX2)]), critical=False)
              .sign(parent.key, hashes.SHA256()))
    facts = certificate_facts([_der(forged), parent.cert_der], hostname=MX2,
                              ca_file=lab["ca_file"])
    assert facts.hostname_matches
    assert not facts.chain_trusted
    assert facts.chain_error == "issuer is not a CA"


def test_expired_intermediate_is_a_trust_failure(tmp_path):
    root = LabCA("Posture Root")
    stale = root.intermediate("Stale Issuing CA", valid_days=-2)
    leaf = stale.issue([MX1])
    facts = certificate_facts(leaf.chain_der, hostname=MX1,
                              ca_file=str(root.write(tmp_path, "root.pem")))
    assert not facts.expired
    assert not facts.chain_trusted
    assert facts.chain_error == "expired intermediate certificate"
