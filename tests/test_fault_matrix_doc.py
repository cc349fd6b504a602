"""The FAULT MATRIX of check_smtp_posture(7) is the rows the tests run, no more, no less."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.faultmatrix import AREAS, all_rows, roff_table

PAGE = Path(__file__).resolve().parents[1] / "man" / "check_smtp_posture.7"


def matrix_section() -> str:
    text = PAGE.read_text()
    match = re.search(r"^\.SH FAULT MATRIX\n(.*?)(?=^\.SH )", text, re.S | re.M)
    assert match, "check_smtp_posture.7 has no FAULT MATRIX section"
    return match.group(1)


def test_the_page_carries_the_generated_table():
    # Regenerate with: python3 -m tests.faultmatrix (and paste into the section)
    assert roff_table(all_rows()) in matrix_section()


def test_rows_are_unique_and_cover_every_area_and_plugin():
    rows = all_rows()
    assert not [i for i, n in Counter(r.id for r in rows).items() if n > 1]
    assert {r.area for r in rows} == set(AREAS)
    assert {r.state for r in rows} <= {"OK", "WARNING", "CRITICAL", "UNKNOWN"}
    plugins = " ".join(r.plugins for r in rows)
    for script in ("check_smtp_phases", "check_mx_sanity", "check_dnsbl", "check_spf",
                   "check_open_relay", "check_dane", "check_mta_sts", "check_mail_roundtrip"):
        assert script in plugins
    assert f"generated from them, {len(rows)} rows" in " ".join(matrix_section().split())
