"""check_dkim end to end: main([...]) against the real lab NSD serving dkim.test
(tests/lab/dkimlab.py), and the key record parser (check_smtp_posture.dkim) on its own.

State-file runs use an injected clock (build_check's `clock`): a run "a year later" is
a run whose clock says so, against the same zone.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from check_smtp_posture import dkim
from check_smtp_posture.nagios import runner
from check_smtp_posture.plugins import check_dkim
from check_smtp_posture.plugins.check_dkim import main
from tests.lab.dkimlab import ED25519, RSA1024, RSA2048
from tests.lab.world import DNS_SERVER_ARG

SERVER = DNS_SERVER_ARG  # the shared lab NSD: conftest.py lab_dns
DOMAIN = "dkim.test"
DAY = 86400
T0 = 1_780_000_000  # 2026-05-28, the first run of the state-file cases


def fingerprint(p: str) -> str:
    return dkim.parse_record("p=" + p).fingerprint


def short(p: str) -> str:
    return dkim.short(fingerprint(p))


def stable(line: str) -> str:
    """The first line with the (timing-dependent) dns_time value blanked."""
    return re.sub(r"dns_time=[0-9.]+s", "dns_time=Xs", line)


def perf(selectors=1, ok=1, bits=None, age=None, max_age="") -> str:
    parts = ["dns_time=Xs;;;0"]
    if age is not None:
        parts.append(f"key_age_days_max={age};{max_age};;0")
    if bits is not None:
        parts.append(f"rsa_bits_min={bits};;;0")
    parts += [f"selectors={selectors};;;0", f"selectors_ok={ok};;;0"]
    return " ".join(parts)


def run_at(run_plugin, now, *args):
    """check_dkim at the moment `now` (epoch seconds) against the lab NSD."""
    def at(argv):
        return runner.plugin_main(argv, check_dkim.build_parser, check_dkim.options_from,
                                  lambda options, deadline: check_dkim.build_check(
                                      options, deadline, clock=lambda: now))
    return run_plugin(at, ["--dns-server", SERVER, "-D", DOMAIN, *args])


def run(run_plugin, *args):
    return run_plugin(main, ["--dns-server", SERVER, "-D", DOMAIN, *args])


# -- the key records of the lab, one selector each ------------------------------------


@pytest.mark.parametrize("selectors, code, summary, perfdata", [
    (["rsa2048"], 0, "DKIM OK - dkim.test: rsa2048 rsa-2048", perf(bits=2048)),
    (["rsa4096"], 0, "DKIM OK - dkim.test: rsa4096 rsa-4096", perf(bits=4096)),
    (["rsa1024"], 1, "DKIM WARNING - dkim.test: selector rsa1024: RSA key of 1024 bits, "
                     "under 2048 (RFC 8301)", perf(ok=0, bits=1024)),
    (["rsa512"], 2, "DKIM CRITICAL - dkim.test: selector rsa512: RSA key of 512 bits, under "
                    "1024 (RFC 8301)", perf(ok=0, bits=512)),
    (["ed"], 1, "DKIM WARNING - dkim.test: Ed25519 keys only: verifiers without RFC 8463 "
                "fail the mail (add an RSA selector)", perf()),
    (["ed", "rsa2048"], 0, "DKIM OK - dkim.test: ed ed25519, rsa2048 rsa-2048",
     perf(2, 2, 2048)),
    (["revoked"], 2, "DKIM CRITICAL - dkim.test: selector revoked: key revoked (p= empty)",
     perf(ok=0)),
    (["testing"], 1, "DKIM WARNING - dkim.test: selector testing: test mode (t=y): verifiers "
                     "treat its mail as unsigned", perf(ok=0, bits=2048)),
    (["strict"], 0, "DKIM OK - dkim.test: strict rsa-2048; selector strict: unknown tags "
                    "x_note", perf(bits=2048)),
    (["sha1"], 1, "DKIM WARNING - dkim.test: selector sha1: h=sha1 allows no hash verifiers "
                  "accept (RFC 8301: sha256)", perf(ok=0, bits=2048)),
    (["notmail"], 2, "DKIM CRITICAL - dkim.test: selector notmail: s=other excludes email",
     perf(ok=0, bits=2048)),
    (["badkey"], 2, "DKIM CRITICAL - dkim.test: selector badkey: p= is not an RSA public key",
     perf(ok=0)),
    (["twice"], 2, "DKIM CRITICAL - dkim.test: selector twice: several key records at "
                   "twice._domainkey.dkim.test: verifiers' results are undefined", perf(ok=0)),
    (["other"], 2, "DKIM CRITICAL - dkim.test: selector other: no DKIM key at "
                   "other._domainkey.dkim.test (no key record among 1 TXT record)",
     perf(ok=0)),
    (["provider"], 0, "DKIM OK - dkim.test: provider rsa-2048", perf(bits=2048)),
    (["dangling"], 2, "DKIM CRITICAL - dkim.test: selector dangling: no DKIM key at "
                      "dangling._domainkey.dkim.test (NXDOMAIN, alias of "
                      "nothing.keys.dkim.test)", perf(ok=0)),
    (["nosuch"], 2, "DKIM CRITICAL - dkim.test: selector nosuch: no DKIM key at "
                    "nosuch._domainkey.dkim.test (NXDOMAIN)", perf(ok=0)),
    (["rsa1024", "rsa512", "revoked"], 2,
     "DKIM CRITICAL - dkim.test: selector rsa512: RSA key of 512 bits, under 1024 (RFC 8301); "
     "selector revoked: key revoked (p= empty); selector rsa1024: RSA key of 1024 bits, "
     "under 2048 (RFC 8301)", perf(3, 0, 512)),
])
def test_selectors(lab_dns, run_plugin, selectors, code, summary, perfdata):
    args = [a for s in selectors for a in ("--selector", s)]
    result = run(run_plugin, *args)
    assert result.exitcode == code, result.output
    assert stable(result.first_line) == f"{summary} | {perfdata}"


def test_a_cname_selector_shows_where_it_points(lab_dns, run_plugin):
    result = run(run_plugin, "--selector", "provider", "-v")
    assert result.exitcode == 0, result.output
    assert (f"provider._domainkey.dkim.test -> provider.keys.dkim.test: rsa-2048, "
            f"{fingerprint(RSA2048)}") in result.output.splitlines()


def test_without_selectors_it_says_why_it_cannot_judge(lab_dns, run_plugin):
    result = run(run_plugin)
    assert result.exitcode == 3, result.output
    assert result.output == ("DKIM UNKNOWN - dkim.test: DKIM cannot be judged without "
                             "selectors: name the ones the domain signs with (--selector) "
                             "| selectors=0;;;0\n")


@pytest.mark.parametrize("argv, message", [
    (["-D", DOMAIN, "--selector", "a..b"], "argument --selector: bad selector 'a..b'"),
    (["-D", DOMAIN, "--selector", "s", "--max-key-age", "30"],
     "--max-key-age needs --state-file"),
    (["-D", DOMAIN, "--selector", "s", "--state-file", ""], "--state-file: empty path"),
    (["-D", DOMAIN, "--selector", "s", "--state-file", "x", "--max-key-age", "0"],
     "argument --max-key-age: must be at least 1: '0'"),
])
def test_usage_errors(run_plugin, argv, message):
    result = run_plugin(main, argv)
    assert result.exitcode == 3, result.output
    assert result.output.startswith("usage: check_dkim")
    assert f"check_dkim: error: {message}\n" in result.output


# -- the state file: rotation, age, disappearance --------------------------------------


def remember(path, **selectors) -> None:
    """A state file as an earlier run left it: selector -> (p= value, first seen)."""
    path.write_text(json.dumps({f"dkim:{DOMAIN}": {
        s: {"fingerprint": fingerprint(p), "first_seen": seen}
        for s, (p, seen) in selectors.items()}}))


def test_a_rotated_key_warns_once(lab_dns, run_plugin, tmp_path):
    state = tmp_path / "dkim.state"
    remember(state, rsa2048=(RSA1024, T0))  # the key the selector had before
    first = run_at(run_plugin, T0 + 30 * DAY, "--selector", "rsa2048", "--state-file", state)
    assert first.exitcode == 1, first.output
    assert stable(first.first_line) == (
        f"DKIM WARNING - dkim.test: selector rsa2048: key rotated: {short(RSA1024)} -> "
        f"{short(RSA2048)} | {perf(ok=0, bits=2048, age=0)}")
    again = run_at(run_plugin, T0 + 31 * DAY, "--selector", "rsa2048", "--state-file", state)
    assert again.exitcode == 0, again.output
    assert stable(again.first_line) == (
        f"DKIM OK - dkim.test: rsa2048 rsa-2048 | {perf(bits=2048, age=1)}")
    stored = json.loads(state.read_text())[f"dkim:{DOMAIN}"]["rsa2048"]
    assert stored == {"fingerprint": fingerprint(RSA2048), "first_seen": T0 + 30 * DAY}


def test_key_age_since_first_seen_and_rotation_overdue(lab_dns, run_plugin, tmp_path):
    state = tmp_path / "dkim.state"
    args = ("--selector", "rsa2048", "--selector", "ed", "--state-file", state,
            "--max-key-age", "365")
    first = run_at(run_plugin, T0, *args)
    assert stable(first.first_line) == (
        "DKIM OK - dkim.test: rsa2048 rsa-2048, ed ed25519 | "
        + perf(2, 2, 2048, age=0, max_age=365))
    later = run_at(run_plugin, T0 + 365 * DAY, *args)
    assert later.exitcode == 0, later.output
    assert later.perfdata["key_age_days_max"] == "365"
    overdue = run_at(run_plugin, T0 + 400 * DAY + 5, *args)
    assert overdue.exitcode == 1, overdue.output
    assert stable(overdue.first_line) == (
        "DKIM WARNING - dkim.test: selector rsa2048: key unchanged for 400 days, over 365 "
        "(rotation overdue); selector ed: key unchanged for 400 days, over 365 (rotation "
        "overdue) | " + perf(2, 0, 2048, age=400, max_age=365))


def test_a_selector_that_disappeared_is_critical(lab_dns, run_plugin, tmp_path):
    state = tmp_path / "dkim.state"
    remember(state, gone=(ED25519, T0), rsa2048=(RSA2048, T0))
    result = run_at(run_plugin, T0 + 10 * DAY, "--selector", "gone", "--selector", "rsa2048",
                    "--state-file", state)
    assert result.exitcode == 2, result.output
    assert stable(result.first_line) == (
        f"DKIM CRITICAL - dkim.test: selector gone: disappeared (NXDOMAIN), was key "
        f"{short(ED25519)} | {perf(2, 1, 2048, age=10)}")
    # remembered still: it stays a disappearance, not a selector never seen
    assert "gone" in json.loads(state.read_text())[f"dkim:{DOMAIN}"]


def test_a_corrupt_state_entry_is_started_afresh(lab_dns, run_plugin, tmp_path):
    state = tmp_path / "dkim.state"
    state.write_text(json.dumps({f"dkim:{DOMAIN}": {"rsa2048": "not a key"}}))
    result = run_at(run_plugin, T0, "--selector", "rsa2048", "--state-file", state)
    assert result.exitcode == 1, result.output
    assert stable(result.first_line) == (
        f"DKIM WARNING - dkim.test: state file {state} was corrupt and has been started "
        f"afresh | {perf(bits=2048, age=0)}")
    again = run_at(run_plugin, T0, "--selector", "rsa2048", "--state-file", state)
    assert again.exitcode == 0, again.output


# -- the record parser ---------------------------------------------------------------


def test_a_pkcs1_rsa_key_is_read_as_rfc_6376_names_it():
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_der_public_key,
    )

    key = load_der_public_key(base64.b64decode(RSA1024))
    pkcs1 = base64.b64encode(key.public_bytes(Encoding.DER, PublicFormat.PKCS1)).decode()
    assert dkim.parse_record("p=" + pkcs1).rsa_bits == 1024


@pytest.mark.parametrize("text, problems", [
    ("v=DKIM1; p=" + ED25519[:20] + " \t" + ED25519[20:] + "; k=ed25519", ()),
    ("v=DKIM2; p=" + RSA1024, ("v=DKIM2 is not DKIM1",)),
    ("p=" + RSA1024 + "; v=DKIM1", ("v= is not the first tag",)),
    ("v=DKIM1; k=dsa; p=" + RSA1024, ("unknown key type k=dsa",)),
    ("v=DKIM1; k=ed25519; p=" + RSA1024, ("Ed25519 key of 162 bytes, not 32",)),
    ("v=DKIM1; p=" + RSA1024 + "; p=" + RSA1024, ("tag p= appears twice",)),
    ("v=DKIM1; h", ("malformed tag 'h'", "no p= tag")),
    ("v=DKIM1; p=\ufffd\ufffd", ("p= is not base64",)),
])
def test_record_problems(text, problems):
    assert dkim.parse_record(text).problems == problems


# -- selectors from check_mail_roundtrip's state file (--from-roundtrip-state) --------------


def test_signature_selectors_are_read_from_dkim_signature_fields():
    values = ["v=1; a=rsa-sha256; c=relaxed/relaxed; d=Example.ORG; s=S2024;\t"
              "h=From:To:Subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=abc==",
              "v=1; a=ed25519-sha256; d=example.org; s = ed 2024; b=xyz",  # FWS in s=
              "v=1; a=rsa-sha256; d=example.org; s=s2024; b=again",  # the same pair again
              "v=1; a=rsa-sha256; d=bad..domain; s=x; b=1",
              "v=1; a=rsa-sha256; d=example.net; b=no-selector"]
    assert dkim.signature_selectors(values) == [("example.org", "s2024"),
                                                ("example.org", "ed2024")]


def roundtrip_state(path, table) -> None:
    path.write_text(json.dumps({"loop.test": {}, "seen": True,
                                dkim.ROUNDTRIP_STATE_KEY: table}))


def test_selectors_recorded_by_the_round_trip_are_checked(lab_dns, run_plugin, tmp_path):
    state = tmp_path / "roundtrip.json"
    roundtrip_state(state, {DOMAIN: {"rsa2048": T0, "ed": T0}, "other.test": {"x": T0}})
    result = run(run_plugin, "--from-roundtrip-state", state)
    assert result.exitcode == 0, result.output
    assert stable(result.first_line) == (
        f"DKIM OK - dkim.test: ed ed25519, rsa2048 rsa-2048 | {perf(2, 2, 2048)}")
    # and beside the named ones, each once
    both = run(run_plugin, "--selector", "rsa1024", "--selector", "ed",
               "--from-roundtrip-state", state)
    assert stable(both.first_line) == (
        "DKIM WARNING - dkim.test: selector rsa1024: RSA key of 1024 bits, under 2048 "
        f"(RFC 8301) | {perf(3, 2, 1024)}")


def test_a_round_trip_that_saw_no_signature_cannot_judge(lab_dns, run_plugin, tmp_path):
    state = tmp_path / "roundtrip.json"
    roundtrip_state(state, {"other.test": {"x": T0}})
    result = run(run_plugin, "--from-roundtrip-state", state)
    assert result.exitcode == 3, result.output
    assert result.first_line == (
        "DKIM UNKNOWN - dkim.test: DKIM cannot be judged without selectors: the round-trip "
        "state file has seen no signature of the domain yet; name them with --selector "
        "| selectors=0;;;0")


def test_an_unreadable_round_trip_state_is_unknown_naming_it(lab_dns, run_plugin, tmp_path):
    missing = tmp_path / "nothing.json"
    result = run(run_plugin, "--selector", "rsa2048", "--from-roundtrip-state", missing)
    assert result.exitcode == 3, result.output
    assert stable(result.first_line) == (
        f"DKIM UNKNOWN - dkim.test: state file {missing} cannot be read: No such file or "
        f"directory | {perf(bits=2048)}")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    alone = run(run_plugin, "--from-roundtrip-state", broken)
    assert alone.first_line == (f"DKIM UNKNOWN - dkim.test: state file {broken} cannot be "
                                "read: not JSON (JSONDecodeError) | selectors=0;;;0")


def test_the_long_output_says_why_a_selector_has_no_key(lab_dns, run_plugin):
    result = run(run_plugin, "--selector", "nosuch", "--selector", "twice",
                 "--selector", "dangling", "-v")
    assert result.exitcode == 2, result.output
    assert result.output.splitlines()[-3:] == [
        "nosuch._domainkey.dkim.test: no key (NXDOMAIN)",
        "twice._domainkey.dkim.test: 2 key records",
        "dangling._domainkey.dkim.test -> nothing.keys.dkim.test: no key (NXDOMAIN, alias "
        "of nothing.keys.dkim.test)"]
