"""atheris target: SPF record parser, macro expander, check_host() and the linter.

The fuzz input is decoded as the DNS layer decodes TXT data (UTF-8, errors
replaced) and split on newlines:

    line 1  the SPF record of example.com ("v=spf1 " is put in front if missing)
    line 2  optional: the TXT record of _spf.example.com (an include/redirect target)
    line 3  optional: the TXT record of exp.example.com (an exp= explanation)

Each line also goes through the macro tokenizer, parse_domain_spec and
expand() with a fixed MacroContext. SpfSyntaxError and MacroError are the
expected failures; check_host() and lint() must never raise. Anything else is
a finding and propagates so atheris records the input.

Run: python3 fuzz/fuzz_spf.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import ipaddress
import sys

try:
    import atheris
    instrumented = atheris.instrument_imports
except ImportError:  # replaying the corpus (tests/test_fuzz_corpus.py) needs no atheris
    from contextlib import nullcontext as instrumented

with instrumented():
    from check_smtp_posture.spf.evaluate import RESULTS, check_host, truncate_name
    from check_smtp_posture.spf.linter import lint
    from check_smtp_posture.spf.lookup import ZoneDns
    from check_smtp_posture.spf.macro import (
        DOMAIN_LETTERS,
        EXP_LETTERS,
        Macro,
        MacroContext,
        MacroError,
        expand,
        parse_domain_spec,
        tokenize,
    )
    from check_smtp_posture.spf.record import (
        MECHANISMS,
        QUALIFIERS,
        SpfSyntaxError,
        is_spf,
        parse_record,
    )

NOW = 1_700_000_000.0  # fixed %{t}, so a run is reproducible
CONTEXTS = (
    MacroContext(ipaddress.ip_address("192.0.2.25"), "strong-bad@email.example.com",
                 "email.example.com", "mail.example.org", "mx.example.net",
                 lambda: "mail.example.com", NOW),
    MacroContext(ipaddress.ip_address("2001:db8::cb01"), "postmaster@example.com",
                 "example.com", "unknown", "unknown", None, NOW),
)
CLIENTS = ("192.0.2.25", "2001:db8::25", "198.51.100.7")
DEFAULT_AUX = "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:1::/48 ~all"
DEFAULT_EXP = "%{i} is not one of %{d}'s designated mail servers"


def zone(record: str, aux: str, exp: str) -> ZoneDns:
    """A small domain whose names the seeds' include:, a:, mx:, ptr and exp= point at."""
    return ZoneDns({
        "example.com": [("TXT", record), ("TXT", "google-site-verification=abc"),
                        ("A", "192.0.2.10"), ("AAAA", "2001:db8::10"),
                        ("MX", "10 mail.example.com"), ("MX", "20 backup.example.com")],
        "mail.example.com": [("A", "192.0.2.25"), ("AAAA", "2001:db8::25")],
        "backup.example.com": [("CNAME", "mail.example.com")],
        "_spf.example.com": [("TXT", aux)],
        "exp.example.com": [("TXT", exp)],
        "slow.example.com": [("TIMEOUT", True)],
        ipaddress.ip_address("192.0.2.25").reverse_pointer: [("PTR", "mail.example.com")],
        ipaddress.ip_address("2001:db8::25").reverse_pointer: [("PTR", "mail.example.com")],
        # %{ir}.%{v}._spf.%{d} style exists: targets
        "25.2.0.192.in-addr._spf.example.com": [("A", "127.0.0.2")],
    })


def check_record(text: str) -> None:
    try:
        record = parse_record(text)
    except SpfSyntaxError:
        return
    for term in record.terms:
        assert term.text in text, (term, text)
    for mech in record.mechanisms:
        assert mech.name in MECHANISMS and mech.qualifier in QUALIFIERS, mech
        if mech.name in ("ip4", "ip6"):
            assert mech.network.version == (4 if mech.name == "ip4" else 6), mech
    assert 0 <= record.lookup_terms() <= len(record.terms)


def check_macros(text: str) -> None:
    for letters, allow_space in ((DOMAIN_LETTERS, False), (EXP_LETTERS, True)):
        try:
            tokens = tokenize(text, letters=letters, allow_space=allow_space)
        except MacroError:
            continue
        for token in tokens:
            if isinstance(token, Macro):  # a macro prints back as itself
                assert tokenize(str(token), letters=EXP_LETTERS) == [token], token
        for ctx in CONTEXTS:
            assert isinstance(expand(tokens, ctx), str)
    try:
        tokens = parse_domain_spec(text)
    except MacroError:
        return
    for ctx in CONTEXTS:
        truncate_name(expand(tokens, ctx))


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    record = lines[0] if is_spf(lines[0]) else "v=spf1 " + lines[0]
    aux = lines[1] if len(lines) > 1 else DEFAULT_AUX
    exp = lines[2] if len(lines) > 2 else DEFAULT_EXP
    for line in lines[:3]:
        check_macros(line)
    check_record(record)
    check_record(aux)
    dns = zone(record, aux, exp)
    for client in CLIENTS:
        result = check_host(dns, client, "example.com", "user@example.org",
                            helo="mail.example.org", now=NOW)
        assert result.result in RESULTS, result
        result.describe()
    report = lint(dns, "example.com")
    assert report.status in ("ok", "none", "temperror"), report.status


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
