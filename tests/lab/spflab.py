"""Lab zones for check_spf (tests/test_spf_lab.py): one name per case.

Served by the shared lab NSD (tests/lab/world.ZONES, 127.0.25.53:53). The
addresses the records name are in 127.0.29.0/24; nothing listens there except
the test's never-answering socket (.54) and its dropping forwarder (.55), which
never answers names under slow.spf.test.
"""

from __future__ import annotations

SPF_DOMAIN = "spf.test"

LONG_RECORD = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(1, 30)) + " -all"


def _quoted(text: str) -> str:
    """A TXT value as zone-file character-strings of at most 255 bytes."""
    return " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))


SPF_ZONES: dict[str, str] = {
    "spf.test": f"""
        ok            TXT "v=spf1 ip4:127.0.29.0/28 mx include:_spf.ok.spf.test -all"
        ok            MX 10 mx.ok
        mx.ok         A  127.0.29.20
        _spf.ok       TXT "v=spf1 ip4:192.0.2.0/24 ~all"
        ok            TXT "google-site-verification=abc"
        none          A  127.0.29.1
        multi         TXT "v=spf1 -all"
        multi         TXT "v=spf1 mx -all"
        syntax        TXT "v=spf1 ip4:192.0.2.1/33 -all"
        plusall       TXT "v=spf1 mx +all"
        plusinc       TXT "v=spf1 include:plusall.spf.test -all"
        neutral       TXT "v=spf1 ip4:192.0.2.1 ?all"
        noall         TXT "v=spf1 ip4:192.0.2.1"
        ptr           TXT "v=spf1 ptr -all"
        long          TXT {_quoted(LONG_RECORD)}
        inclnone      TXT "v=spf1 include:nothing.spf.test -all"
        at8           TXT "v=spf1 a a a a a a a a -all"
        at8           A   127.0.29.30
        at10          TXT "v=spf1 a a a a a a a include:ok.spf.test -all"
        at10          A   127.0.29.30
        over          TXT "v=spf1 a include:at10.spf.test -all"
        over          A   127.0.29.30
        void          TXT "v=spf1 a:v1.spf.test a:v2.spf.test exists:v3.spf.test -all"
        loop          TXT "v=spf1 include:loop2.spf.test -all"
        loop2         TXT "v=spf1 include:loop.spf.test -all"
        redirect      TXT "v=spf1 redirect=ok.spf.test"
        macro         TXT "v=spf1 exists:%{{ir}}.allow.spf.test -all exp=why.spf.test"
        why           TXT "%{{i}} is not allowed to send for %{{d}}"
        20.29.0.127.allow A 127.0.0.2
        slowinc       TXT "v=spf1 ip4:192.0.2.1 include:x.slow.spf.test -all"
        x.slow        TXT "v=spf1 -all"
        badmx         TXT "v=spf1 ip4:192.0.2.1 -all"
        badmx         MX 10 mx.ok
        """,
    "29.0.127.in-addr.arpa": """
        20   PTR mx.ok.spf.test.
        """,
}
