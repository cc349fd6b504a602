"""Authentication-Results fields (RFC 8601) read into verdicts: spf=pass, dkim=none, ...

The `authres` library does the grammar. Around it: unfolding, Microsoft 365's
fields that leave out the authserv-id, the RFC 8601 §5 rule that only the
receiving side's own authserv-ids count, and a verdict for a field that does
not parse at all (the plugin shows it rather than dropping it). Nothing raises.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from check_smtp_posture.sanitize import one_line


class Verdict(NamedTuple):
    authserv_id: str  # who wrote it, lower case; "" when the field does not say
    method: str  # spf, dkim, dmarc, arc, ... lower case; "none" for a field with no results
    result: str  # pass, fail, none, softfail, neutral, temperror, permerror, policy, ...
    detail: str  # the most useful property, e.g. "smtp.mailfrom=example.org"; "" if none


#: the property that best names what was checked, per method (first present wins)
_DETAIL_PROPERTIES = {
    "spf": ("smtp.mailfrom", "smtp.helo"),
    "dkim": ("header.d", "header.i"),
    "domainkeys": ("header.d", "header.from"),
    "dmarc": ("header.from",),
    "iprev": ("policy.iprev", "smtp.remote-ip"),
    "auth": ("smtp.auth", "smtp.mailfrom"),
    "arc": ("header.oldest-pass", "smtp.remote-ip"),
}
#: longer fields are not Authentication-Results a receiver wrote; authres's parser is
#: quadratic in the length, so they are not handed to it
_MAX_FIELD = 8192
# patterns are strings, compiled (and cached by re) on first use
_FOLD = r"\r?\n(?=[ \t])"
_FIELD_NAME = r"(?i)^\s*Authentication-Results\s*:"
# "spf=pass ..." at the start: a result where the authserv-id belongs (Microsoft 365)
_NO_AUTHSERV_ID = r"^\s*[A-Za-z0-9_-]+(?:\s*/\s*\d+)?\s*="
_LEADING_ID = r"^\s*([A-Za-z0-9_.-]+)(?:\s+\d+)?\s*(?:\([^()]*\)\s*)?;"
_PLACEHOLDER_ID = "authserv-id.invalid"


def verdicts(values: list[str], trusted: set[str] | None = None) -> list[Verdict]:
    """Every result of every field, in order; only `trusted` authserv-ids when given.

    RFC 8601 §5: a field whose authserv-id is not the receiving side's own may
    have been written by anyone, so with `trusted` (lower case ids) the others
    are dropped, and so are fields without an id. A field with no results
    ("id; none") gives Verdict(id, "none", "", ""); a field that does not parse
    gives Verdict(id or "", "unparsed", "", <its start, sanitised, at most 80 characters>).
    """
    wanted = None if trusted is None else {t.lower() for t in trusted}
    found = []
    for value in values:
        for verdict in _field_verdicts(value):
            if wanted is None or verdict.authserv_id in wanted:
                found.append(verdict)
    return found


def describe(found: list[Verdict]) -> str:
    """One line: "spf=pass dkim=none dmarc=pass (mx.monitor.test)"; ids joined by "; "."""
    groups: dict[str, list[str]] = {}
    for verdict in found:
        if verdict.method == "unparsed":
            text = f'unparsed "{verdict.detail}"'
        elif verdict.result:
            text = f"{verdict.method}={verdict.result}"
        else:
            text = verdict.method
        groups.setdefault(verdict.authserv_id, []).append(text)
    return "; ".join(
        " ".join(texts) + (f" ({authserv_id})" if authserv_id else "")
        for authserv_id, texts in groups.items()
    )


def _field_verdicts(value: str) -> list[Verdict]:
    text = re.sub(_FIELD_NAME, "", re.sub(_FOLD, "", str(value)), count=1)
    text = re.sub(r"[\r\n]+", " ", text).strip()
    anonymous = bool(re.match(_NO_AUTHSERV_ID, text))
    header = _parse(f"{_PLACEHOLDER_ID}; {text}" if anonymous else text)
    if header is None:
        leading = re.match(_LEADING_ID, text)
        authserv_id = one_line(leading.group(1).lower(), 80) if leading else ""
        return [Verdict(authserv_id, "unparsed", "", one_line(text[:200], 80))]
    authserv_id = "" if anonymous else one_line(header.authserv_id, 80)
    if not header.results:
        return [Verdict(authserv_id, "none", "", "")]
    return [
        Verdict(authserv_id, one_line(result.method, 40), one_line(result.result, 40),
                _detail(result))
        for result in header.results
    ]


def _parse(text: str):
    """authres's header object, or None when the text is not an Authentication-Results value."""
    if len(text) > _MAX_FIELD:
        return None
    import authres

    try:
        return authres.AuthenticationResultsHeader.parse_value(text)
    except Exception:  # authres raises its own errors, ValueError and RecursionError alike
        return None


def _detail(result) -> str:
    properties = {}
    for prop in result.properties:
        properties.setdefault(f"{prop.type}.{prop.name}", prop.value or "")
    for key in _DETAIL_PROPERTIES.get(result.method, ()):
        if key in properties:
            return one_line(f"{key}={properties[key]}", 80)
    if properties:
        key, text = next(iter(properties.items()))
        return one_line(f"{key}={text}", 80)
    if result.reason:
        return one_line(f"reason={result.reason}", 80)
    return ""
