"""The pages carry the fault matrix the tests run, no more, no less.

Each plugin's DIAGNOSTICS section (man/check_*.1) and the FAULTS section of
check_smtp_posture(7) are generated from the rows of tests/test_faults_*.py and
the lines they say; regenerate them with the command the failure names.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faultmatrix import (
    AREAS,
    COMMAND,
    MAN,
    PLUGINS,
    all_rows,
    all_says,
    carried,
    check_says,
    generated,
    pattern,
    script_of,
)


@pytest.mark.parametrize("page", sorted(generated()), ids=lambda page: page.name)
def test_the_page_carries_the_generated_section(page):
    assert carried(page) == generated()[page], (
        f"man/{page.name} and the fault rows disagree: run {COMMAND}")


def test_every_plugin_page_has_its_diagnostics():
    assert {page.name for page in generated()} == {
        "check_smtp_posture.7", *(f"{script}.1" for script in PLUGINS)}
    assert {page.name for page in MAN.glob("check_*.1")} <= {
        page.name for page in generated()}


def test_rows_are_unique_and_cover_every_area_and_plugin():
    rows = all_rows()
    assert not [i for i, n in Counter(r.id for r in rows).items() if n > 1]
    assert {r.area for r in rows} == set(AREAS)
    assert {r.state for r in rows} <= {"OK", "WARNING", "CRITICAL", "UNKNOWN"}
    said = {script_of(line) for lines in all_says().values() for line in lines}
    assert said == set(PLUGINS)


def test_each_row_says_a_whole_line_for_each_plugin_it_names():
    rows, says = all_rows(), all_says()
    assert set(says) == {row.id for row in rows}
    for row in rows:
        lines = says[row.id]
        assert lines and len(set(lines)) == len(lines), row.id
        scripts = {script_of(line) for line in lines}
        named = {name.split()[0] for name in row.plugins.split(", ")}
        assert scripts == named or named == {"all"}, (row.id, scripts, named)
        for line in lines:
            state = line.split(" - ", 1)[0].rpartition(" ")[2]
            usage = line.startswith(f"{script_of(line)}: error: ")
            assert (row.state == "UNKNOWN") if usage else (state == row.state), (row.id, line)
            assert line.isprintable(), (row.id, line)


def test_a_says_line_is_the_whole_line():
    says = {"r": ("DANE CRITICAL - {HOST} timed out after {N}s",)}
    check_says(says, "r", [("check_dane", "DANE CRITICAL - mx.example timed out after 0.5s")])
    for script, line in [
        ("check_dane", "DANE CRITICAL - mx.example timed out after 0.5s, and more"),
        ("check_dane", "DANE CRITICAL - mx.example timed out after soon"),
        ("check_dnsbl", "DANE CRITICAL - mx.example timed out after 0.5s"),
    ]:
        with pytest.raises(AssertionError):
            check_says(says, "r", [(script, line)])
    with pytest.raises(AssertionError, match="never said"):
        check_says({"r": (*says["r"], "DANE OK - fine")}, "r",
                   [("check_dane", "DANE CRITICAL - mx.example timed out after 1s")])
    assert pattern("SPF OK - {PATH}: x").fullmatch("SPF OK - /tmp/a b: x")
    detail = pattern("SERVFAIL (DNSSEC Bogus (6){DETAIL})")
    assert detail.fullmatch("SERVFAIL (DNSSEC Bogus (6))")
    assert detail.fullmatch("SERVFAIL (DNSSEC Bogus (6): signature crypto failed)")
    assert not detail.fullmatch("SERVFAIL (DNSSEC Bogus (6) and more)")
    more = pattern("SPF WARNING - a{MORE}")
    assert more.fullmatch("SPF WARNING - a") and more.fullmatch("SPF WARNING - a; b")
    assert not more.fullmatch("SPF WARNING - ab")
