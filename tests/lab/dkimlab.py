"""Lab zone for check_dkim (tests/test_dkim.py): one selector per case under dkim.test.

Served by the shared lab NSD (tests/lab/world.ZONES, 127.0.25.53:53). The keys are
fixed data in tests/lab/keys/dkim-*.pub (the base64 p= values: RSA keys as DER
SubjectPublicKeyInfo, the Ed25519 key as its 32 raw bytes), so every session serves
the same zone; no private key is kept, nothing here signs. A key "changed between
two runs" needs no zone change (NSD is shared by concurrent sessions): the tests
write a state file that remembers another fingerprint for a selector.
"""

from __future__ import annotations

from pathlib import Path

from tests.lab.spflab import _quoted

DKIM_DOMAIN = "dkim.test"
KEYS = Path(__file__).resolve().parent / "keys"


def public_key(name: str) -> str:
    """The p= value of tests/lab/keys/dkim-NAME.pub."""
    return (KEYS / f"dkim-{name}.pub").read_text().strip()


RSA512, RSA1024 = public_key("rsa512"), public_key("rsa1024")
RSA2048, RSA4096 = public_key("rsa2048"), public_key("rsa4096")
ED25519 = public_key("ed25519")


DKIM_ZONES: dict[str, str] = {
    DKIM_DOMAIN: f"""
        rsa512._domainkey    TXT {_quoted("v=DKIM1; k=rsa; p=" + RSA512)}
        rsa1024._domainkey   TXT {_quoted("v=DKIM1; k=rsa; p=" + RSA1024)}
        rsa2048._domainkey   TXT {_quoted("v=DKIM1; k=rsa; p=" + RSA2048)}
        rsa4096._domainkey   TXT {_quoted("v=DKIM1; k=rsa; p=" + RSA4096)}
        ed._domainkey        TXT {_quoted("v=DKIM1; k=ed25519; p=" + ED25519)}
        revoked._domainkey   TXT "v=DKIM1; k=rsa; p="
        testing._domainkey   TXT {_quoted("v=DKIM1; t=y; p=" + RSA2048)}
        strict._domainkey    TXT {_quoted("v=DKIM1; t=s; x_note=lab; p=" + RSA2048)}
        sha1._domainkey      TXT {_quoted("v=DKIM1; h=sha1; p=" + RSA2048)}
        notmail._domainkey   TXT {_quoted("v=DKIM1; s=other; p=" + RSA2048)}
        badkey._domainkey    TXT "v=DKIM1; p=bm90IGEga2V5"
        twice._domainkey     TXT {_quoted("v=DKIM1; p=" + RSA2048)}
        twice._domainkey     TXT {_quoted("v=DKIM1; p=" + RSA4096)}
        other._domainkey     TXT "google-site-verification=abc"
        provider._domainkey  CNAME provider.keys.{DKIM_DOMAIN}.
        provider.keys        TXT {_quoted("v=DKIM1; p=" + RSA2048)}
        dangling._domainkey  CNAME nothing.keys.{DKIM_DOMAIN}.
        """,
}
