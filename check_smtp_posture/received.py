"""Received: fields read back into hops: who handed the probe to whom, how, and when.

Every MTA writes this field its own way (RFC 5321 §4.4 only sketches it), and
the date after the last ';' is the one part the round trip's timing rests on.
So the reader is tolerant: clauses in any order, comments anywhere (nested,
with ';' inside), missing clauses, obsolete and malformed dates. What it cannot
read it leaves as None; it never raises. A date without a zone, or with a zone
name RFC 5322 does not define ("CET"), is unknown rather than guessed.

Hop delays keep their sign: a negative delay means a clock is wrong, and the
plugin reports it instead of hiding it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from check_smtp_posture.sanitize import one_line


class Hop(NamedTuple):
    """One Received: field, as parsed."""

    by: str | None  # the host that received (the "by" clause's first word)
    sender: str | None  # what the client called itself (HELO name; else the "from" word)
    address: str | None  # the client's address from the "from" clause, without brackets
    protocol: str | None  # the "with" keyword, upper case: ESMTPS, SMTP, LMTP, HTTP, ...
    tls: bool | None  # True: TLS said; False: a plain protocol and no TLS comment; None: unknown
    timestamp: datetime | None  # the date after the last ';', in UTC; None if unknown
    raw: str  # the unfolded field value, for -vv output


class HopDelay(NamedTuple):
    hop: Hop
    delay: float | None  # seconds since the previous known time; None if either is unknown
    skewed: bool  # delay < 0: a clock is wrong (reported, never clamped to 0)


def parse_received(value: str) -> Hop:
    """One Received: field value (folded or not, with or without the field name)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    raw = re.sub(_FOLD, "", str(value))
    text = re.sub(_FIELD_NAME, "", raw, count=1)
    comments = _comment_spans(text)
    uncommented = _outside(text, comments)
    separator = uncommented.rfind(";")  # the last ';' outside comments ends the clauses
    if separator < 0:
        clauses_text, timestamp = text, _date_within(uncommented)
    else:
        clauses_text = text[:separator]
        date_text = text[separator + 1:]
        timestamp = parse_date(date_text)
        if timestamp is None:
            timestamp = _date_within(_outside(date_text, _comment_spans(date_text)))
    clauses = _clauses(clauses_text, _comment_spans(clauses_text))
    sender, address = _client(clauses.get("from"))
    protocol = _protocol(clauses.get("with"))
    return Hop(
        by=_first_word(clauses.get("by")),
        sender=sender,
        address=address,
        protocol=protocol,
        tls=_tls(protocol, clauses),
        timestamp=timestamp,
        raw=raw,
    )


def hops(values: list[str]) -> list[Hop]:
    """Received: values as they appear in a message (newest on top), returned oldest first."""
    return [parse_received(value) for value in reversed(values)]


def hop_delays(chain: list[Hop], sent: datetime | None = None) -> list[HopDelay]:
    """The time each hop took, oldest first; the first measured from `sent` (aware) if given.

    A hop without a readable date gets None, and the next hop measures from the
    last known time (seconds_between: a stamp of whole seconds is the second it
    fell in). Every negative delay is skew.
    """
    delays = []
    previous = sent
    for hop in chain:
        if hop.timestamp is None:
            delays.append(HopDelay(hop, None, False))
            continue
        if previous is None:
            delays.append(HopDelay(hop, None, False))
        else:
            delay = seconds_between(previous, hop.timestamp)
            delays.append(HopDelay(hop, delay, delay < 0))
        previous = hop.timestamp
    return delays


def seconds_between(earlier: datetime, stamp: datetime) -> float:
    """Seconds from `earlier` to `stamp` (both aware).

    A stamp of whole seconds (a Received date, an IMAP INTERNALDATE: the time
    printed truncated) is the second the event fell in, so a precise earlier
    time is truncated before it is compared with one: a probe sent at
    10:00:00.7 and stamped 10:00:00 took 0 s (under a second), not -0.7 s.
    """
    if stamp.microsecond == 0:
        earlier = earlier.replace(microsecond=0)
    return (stamp - earlier).total_seconds()


def slowest(delays: list[HopDelay]) -> HopDelay | None:
    """The hop with the largest known delay, None if no delay is known."""
    known = [d for d in delays if d.delay is not None]
    return max(known, key=lambda d: d.delay) if known else None


def describe_hop(d: HopDelay) -> str:
    """One line of long output: "mx1.example.org <- client.example [192.0.2.7] ESMTPS 0.4s"."""
    hop = d.hop
    parts = [_safe(hop.by) or "?"]
    client = [_safe(hop.sender)] if hop.sender else []
    if hop.address and _ip((hop.sender or "").strip("[]")) != hop.address:
        client.append(f"[{_safe(hop.address)}]")
    if client:
        parts += ["<-", *client]
    if hop.protocol:
        # a protocol name that does not say TLS ("Microsoft SMTP Server" -> SMTP) gets the
        # comment's verdict beside it, so the line never reads as plain when it was not
        says_tls = re.match(_TLS_PROTOCOL, hop.protocol)
        parts.append(_safe(hop.protocol) + ("+TLS" if hop.tls and not says_tls else ""))
    elif hop.tls:
        parts.append("TLS")
    if hop.timestamp is None:
        parts.append("(no readable date)")
    elif d.delay is not None:
        parts.append(f"{d.delay:.1f}s" if abs(d.delay) < 60 else f"{d.delay:.0f}s")
        if d.skewed:
            parts.append("(clock skew)")
    return one_line(" ".join(parts), 200)


def _safe(text: str | None) -> str:
    return one_line(text, 80) if text else ""


# --------------------------------------------------------------------------- structure

# patterns are strings, compiled (and cached by re) on first use: a run that finds no
# probe never parses a field, and startup time is most of a plugin's cost
_FOLD = r"\r?\n(?=[ \t])"
_FIELD_NAME = r"(?i)^\s*Received\s*:"
_KEYWORDS = frozenset({"from", "by", "via", "with", "id", "for"})


def _comment_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each outermost balanced comment, parentheses included.

    A '(' that never closes is a plain character, not a comment to the end (a
    broken field would lose its date to it); a '\\' inside a comment quotes
    the next character.
    """
    pairs: list[tuple[int, int]] = []
    opened: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and opened:
            i += 2
            continue
        if ch == "(":
            opened.append(i)
        elif ch == ")" and opened:
            pairs.append((opened.pop(), i + 1))
        i += 1
    outermost: list[tuple[int, int]] = []
    for start, end in sorted(pairs):
        if not outermost or start >= outermost[-1][1]:
            outermost.append((start, end))
    return outermost


def _outside(text: str, comments: list[tuple[int, int]]) -> str:
    """The text with every comment blanked out (same length, so positions still match)."""
    pieces, position = [], 0
    for start, end in comments:
        pieces += [text[position:start], " " * (end - start)]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


class _Clause(NamedTuple):
    words: list[str]
    comments: list[str]


def _clauses(text: str, comments: list[tuple[int, int]]) -> dict[str, _Clause]:
    """The first clause of each keyword: its words and the comments that follow them."""
    clauses: dict[str, _Clause] = {}
    current = _Clause([], [])  # words before any keyword: kept only for their comments
    preamble = current
    position = 0
    for start, end in [*comments, (len(text), len(text))]:
        for word in re.split(r"[\s;()]+", text[position:start]):
            if not word:
                continue
            keyword = word.lower()
            if keyword in _KEYWORDS:
                current = _Clause([], [])
                clauses.setdefault(keyword, current)
            else:
                current.words.append(word)
        if start < end:
            current.comments.append(text[start + 1:end - 1])
        position = end
    if preamble.comments:
        clauses.setdefault("", preamble)
    return clauses


def _first_word(clause: _Clause | None) -> str | None:
    return clause.words[0] if clause and clause.words else None


_HELO = r"(?i)(?:^|[\s(])(?:HELO|EHLO)[\s=]+(\[[^\]\s]*\]|[^\s()\[\]]+)"
_BRACKETED = r"\[([^\]]*)\]"


def _client(clause: _Clause | None) -> tuple[str | None, str | None]:
    """(name the client gave, its address) from the "from" clause."""
    if clause is None:
        return None, None
    sender = _first_word(clause)
    for comment in clause.comments:
        helo = re.search(_HELO, comment)  # qmail "(HELO name)", Exim "(... helo=name)"
        if helo:
            sender = helo.group(1)
            break
    candidates = []
    for comment in clause.comments:
        candidates += re.findall(_BRACKETED, comment)  # Postfix, sendmail, Exim: [192.0.2.1]
    candidates += re.findall(_BRACKETED, " ".join(clause.words))  # "from [192.0.2.1]"
    candidates += clause.words  # "from 192.0.2.1"
    for comment in clause.comments:
        candidates += re.split(r"[\s,@\[\]()]+", comment)  # Exchange, qmail: bare (2001:db8::1)
    for candidate in candidates:
        address = _ip(candidate)
        if address:
            return sender, address
    return sender, None


def _ip(text: str) -> str | None:
    """An address literal's address in its canonical text form, or None."""
    import ipaddress

    text = text.strip()
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _protocol(clause: _Clause | None) -> str | None:
    word = _first_word(clause)
    if word is None:
        return None
    if word.lower() == "microsoft" and len(clause.words) > 1 and clause.words[1].upper() == "SMTP":
        return "SMTP"  # Exchange: "with Microsoft SMTP Server (version=TLS1_2, ...)"
    return word.upper()


# RFC 3848 and RFC 6531 protocol names, and the TLS-wrapped ones
_TLS_PROTOCOL = r"^(?:(?:E|UTF8)?(?:SMTP|LMTP)SA?|HTTPS)$"
_PLAIN_PROTOCOL = r"^(?:(?:E|UTF8)?(?:SMTP|LMTP)A?|HTTP)$"
# Postfix "using TLSv1.3", sendmail "version=TLSv1.3 cipher=", Exchange "version=TLS1_2",
# Exim "(TLS1.3)", Courier "TLS: TLSv1.3,...", qmail "(DHE-RSA-AES256-SHA encrypted)",
# older Exchange "(TLS)"
# (the version pattern is case-sensitive: "(envelope-from <tls1@example.org>)" is no TLS)
_TLS_COMMENT = r"\b(?:TLS|SSL)v?\s?\d|(?i:\bcipher\b|\bencrypted\b)|^\s*TLS\s*$"


def _tls(protocol: str | None, clauses: dict[str, _Clause]) -> bool | None:
    if protocol and re.match(_TLS_PROTOCOL, protocol):
        return True
    if any(re.search(_TLS_COMMENT, c) for clause in clauses.values() for c in clause.comments):
        return True
    with_clause = clauses.get("with")
    if with_clause and any(w.lower() == "tls" for w in with_clause.words[1:]):
        return True  # Exim: "with esmtps (TLS1.3) tls TLS_AES_256_GCM_SHA384"
    if protocol and re.match(_PLAIN_PROTOCOL, protocol):
        return False
    return None


# --------------------------------------------------------------------------- dates

_MONTH_NAMES = {
    name: number
    for number, full in enumerate(
        ("january", "february", "march", "april", "may", "june", "july", "august",
         "september", "october", "november", "december"), start=1)
    for name in (full, full[:3], full[:4])
}
_DAY_NAMES = frozenset(
    name
    for full in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    for name in (full, full[:3], full[:4])
)
# RFC 5322 §4.3 obsolete zones; the military letters (all but Z) were defined with the
# wrong sign in RFC 822 and mean "-0000": UT, local zone unknown
_ZONE_HOURS = {
    "UT": 0, "UTC": 0, "GMT": 0, "Z": 0,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}
_MILITARY = frozenset("ABCDEFGHIKLMNOPQRSTUVWXYZ")

_MAX_DATE_TOKENS = 8  # "Sat, 21 Nov 2026 10:00:00 -0800 PST" and room to spare
_NUMERIC_ZONE = r"[+-]\d{2}(?::?\d{2})?"
_TIME = r"(?ai)^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|" + _NUMERIC_ZONE + r")?$"
_ISO_DATE = r"(?ai)^(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:T(.+))?$"
_RFC850_DATE = r"(?a)^(\d{1,2})-([A-Za-z]{3,9})-(\d{2,4})$"
_ZONE_TOKEN = r"(?ai)^(?:UTC|GMT|UT)?(" + _NUMERIC_ZONE + r")$"


class _DateParts:
    """The fields of one date, each set at most once."""

    def __init__(self) -> None:
        self.day: int | None = None
        self.month: int | None = None
        self.year: int | None = None
        self.time: tuple[int, int, int, int] | None = None
        self.zone: timedelta | None = None
        self.zone_was_numeric = False

    def set(self, field: str, value) -> bool:
        if getattr(self, field) is not None:
            return False
        setattr(self, field, value)
        return True


def parse_date(text: str) -> datetime | None:
    """An RFC 5322 date (obsolete forms too) or an ISO-8601 one, in UTC; None if unknown."""
    return _date_from_tokens(_date_tokens(text))


def _date_tokens(text: str) -> list[str]:
    spans = _comment_spans(text)
    return [t for t in re.split(r"[\s,]+", _outside(text, spans)) if t]


def _date_within(text: str) -> datetime | None:
    """A date at the end of the text (a field without ';'), else at its start.

    Courier writes its queue id after the date: "...; Sat, 21 Nov 2026 10:00:00 +0000 id 1A".
    The longest run of tokens that reads as a date wins, so a stray number
    before it ("id 123 Sat, 21 Nov ...") is not taken for its day or year.
    """
    tokens = [t for t in re.split(r"[\s,;]+", text) if t]
    tail, head = tokens[-_MAX_DATE_TOKENS:], tokens[:_MAX_DATE_TOKENS]
    for candidates in ([tail[start:] for start in range(len(tail))],
                       [head[:end] for end in range(len(head), 0, -1)]):
        for run in candidates:
            found = _date_from_tokens(run)
            if found:
                return found
    return None


def _date_from_tokens(tokens: list[str]) -> datetime | None:
    parts = _DateParts()
    for token in tokens:
        if not _read_token(token, parts):
            return None
    if None in (parts.day, parts.month, parts.year, parts.time, parts.zone):
        return None
    hour, minute, second, microsecond = parts.time
    leap = second == 60  # RFC 5322 allows a leap second; datetime does not
    try:
        local = datetime(parts.year, parts.month, parts.day, hour, minute,
                         59 if leap else second, microsecond, tzinfo=timezone(parts.zone))
        return (local + timedelta(seconds=leap)).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _read_token(token: str, parts: _DateParts) -> bool:
    """Put one token into its field; False if it fits none or its field is taken."""
    lower = token.lower()
    if lower in _DAY_NAMES:
        return True  # a wrong weekday does not make the date unreadable
    if lower in _MONTH_NAMES:
        return parts.set("month", _MONTH_NAMES[lower])
    if token.isascii() and token.isdigit():  # "¹".isdigit() too, but int() refuses it
        if len(token) <= 2 and parts.day is None and parts.year is None:
            return parts.set("day", int(token))
        return 2 <= len(token) <= 4 and parts.set("year", _full_year(token))
    iso = re.match(_ISO_DATE, token)
    if iso:
        year, month, day, time = iso.groups()
        return (parts.set("year", int(year)) and parts.set("month", int(month))
                and parts.set("day", int(day)) and (time is None or _read_time(time, parts)))
    rfc850 = re.match(_RFC850_DATE, token)
    if rfc850:
        day, month, year = rfc850.groups()
        return (month.lower() in _MONTH_NAMES and parts.set("day", int(day))
                and parts.set("month", _MONTH_NAMES[month.lower()])
                and parts.set("year", _full_year(year)))
    if ":" in token and re.match(_TIME, token):
        return _read_time(token, parts)
    if parts.zone_was_numeric and token.isalpha() and len(token) <= 5:
        return True  # "-0800 PST" without parentheses: the number decides
    zone = _zone(token)
    parts.zone_was_numeric = zone is not None and token[-1].isdigit()
    return zone is not None and parts.set("zone", zone)


def _read_time(token: str, parts: _DateParts) -> bool:
    match = re.match(_TIME, token)
    if not match:
        return False
    hour, minute, second, fraction, zone = match.groups()
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    if not parts.set("time", (int(hour), int(minute), int(second or 0), microsecond)):
        return False
    if zone is None:
        return True
    offset = _zone(zone)
    return offset is not None and parts.set("zone", offset)


def _zone(token: str) -> timedelta | None:
    upper = token.upper()
    if upper in _ZONE_HOURS:
        return timedelta(hours=_ZONE_HOURS[upper])
    if len(upper) == 1 and upper in _MILITARY:
        return timedelta(0)
    numeric = re.match(_ZONE_TOKEN, token)
    if not numeric:
        return None
    digits = numeric.group(1).replace(":", "")
    hours, minutes = int(digits[1:3]), int(digits[3:5] or 0)
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if digits[0] == "-" else offset


def _full_year(digits: str) -> int:
    """RFC 5322 §4.3: a two-digit year below 50 is 20xx, else 19xx; three digits add 1900."""
    year = int(digits)
    if len(digits) == 2:
        return year + (2000 if year < 50 else 1900)
    if len(digits) == 3:
        return year + 1900
    return year
