"""Hypothesis strategies for the parsers' property tests (tests/test_properties.py).

Two kinds of input: hostile bytes and text (anything at all), and near-valid
input built from each grammar so that the tests get past the first check and
into the deep code. Builders that know what they built return the expected
parse beside the text.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections import deque

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.MX
from hypothesis import strategies as st

from check_smtp_posture.spf.macro import Macro
from check_smtp_posture.spf.record import Mechanism, Modifier

# --------------------------------------------------------------------------- text

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = LETTERS + "0123456789"
VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))


def word(alphabet: str, min_size: int = 1, max_size: int = 8, first: str | None = None):
    """Text over `alphabet` (its first character from `first`, when given)."""
    rest = st.text(st.sampled_from(alphabet), min_size=max(0, min_size - (first is not None)),
                   max_size=max_size - (first is not None))
    if first is None:
        return rest
    return st.builds(lambda a, b: a + b, st.sampled_from(first), rest)


#: any text the UTF-8 codec can write (no lone surrogates)
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
#: text with the characters that break lines and strings pushed to the front
nasty_chars = st.sampled_from(["\x00", "\r", "\n", "\r\n", "\t", "\x1b", "\x7f", "|", "'",
                               "=", " ", "%", "\x85", "\x9b", "\u2028", "\u2029", "\ufffd",
                               "\u202e", "é", "²"])
nasty_text = st.lists(st.one_of(nasty_chars, any_text), max_size=12).map("".join)
#: text on one line, as a reply line is after CRLF is taken off
line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                    max_size=120)


# --------------------------------------------------------------------------- SMTP wire

reply_codes = st.integers(200, 599)


def wire(code_lines) -> bytes:
    """Reply lines (code, separator, text) as the server sends them, CRLF after each."""
    return b"".join(f"{code}{sep}{text}".encode() + b"\r\n" for code, sep, text in code_lines)


@st.composite
def well_formed_replies(draw, max_lines=12):
    """(code, texts, wire bytes) of one valid reply: '-' on every line but the last."""
    code = draw(reply_codes)
    texts = draw(st.lists(line_text, min_size=1, max_size=max_lines))
    lines = [(code, "-", t) for t in texts[:-1]]
    # the last line may be a bare code when its text is empty ("250")
    last_sep = "" if not texts[-1] and draw(st.booleans()) else " "
    lines.append((code, last_sep, texts[-1]))
    return code, tuple(texts), wire(lines)


@st.composite
def near_valid_wire(draw):
    """Reply-shaped bytes with the grammar bent: odd codes, separators, line ends, junk."""
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        code = draw(st.one_of(reply_codes, st.integers(0, 1200),
                              st.sampled_from(["", "25", "2500", "abc", " 250"])))
        sep = draw(st.sampled_from(["-", " ", "", "\t", "--", "x"]))
        text = draw(st.one_of(line_text, nasty_text))
        end = draw(st.sampled_from(["\r\n", "\r\n", "\n", "\r", "", "\n\r", "\x00\r\n"]))
        parts.append(f"{code}{sep}{text}{end}".encode("utf-8", "surrogatepass"))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(st.binary(max_size=40)))
    return b"".join(parts)


@st.composite
def overlong_wire(draw):
    """A line near the 8192-byte cap, CRLF included, either side of it."""
    from check_smtp_posture.smtp.reply import MAX_LINE

    size = draw(st.integers(MAX_LINE - 3, MAX_LINE + 3))
    body = b"250 " + b"x" * max(0, size - 6)
    ending = draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return body + ending + draw(st.binary(max_size=20))


hostile_wire = st.one_of(st.binary(max_size=600), near_valid_wire(), overlong_wire(),
                         well_formed_replies().map(lambda r: r[2]))

#: sizes of the successive recv() results; the rest of the data comes in one piece
chunk_sizes = st.lists(st.integers(1, 300), max_size=40)

#: what the socket does once its data is spent
SOCKET_ENDS = ("eof", "timeout", "reset", "oserror", "ssl")


def chunked(data: bytes, sizes) -> list:
    chunks, at = [], 0
    for size in sizes:
        if at >= len(data):
            break
        chunks.append(data[at:at + size])
        at += size
    if at < len(data):
        chunks.append(data[at:])
    return chunks


class ChunkedSocket:
    """The socket LineReader reads from: recv() hands out fixed chunks, then `end`."""

    def __init__(self, chunks, end: str = "eof"):
        self._chunks = deque(c for c in chunks if c)
        self.end = end
        self.timeouts: list = []

    def settimeout(self, value) -> None:
        self.timeouts.append(value)

    def recv(self, size: int) -> bytes:
        if self._chunks:
            chunk = self._chunks.popleft()
            if len(chunk) > size:
                self._chunks.appendleft(chunk[size:])
                chunk = chunk[:size]
            return chunk
        if self.end == "timeout":
            raise socket.timeout("timed out")
        if self.end == "reset":
            raise ConnectionResetError(104, "Connection reset by peer")
        if self.end == "oserror":
            raise OSError(32, "Broken pipe")
        if self.end == "ssl":
            # as the ssl module raises it: with the OpenSSL reason and library set
            error = ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption "
                                    "failed or bad record mac")
            error.reason, error.library = "DECRYPTION_FAILED_OR_BAD_RECORD_MAC", "SSL"
            raise error
        return b""

    @property
    def unread(self) -> bytes:
        return b"".join(self._chunks)


# --------------------------------------------------------------------------- EHLO

ehlo_keywords = word(ALNUM + "-", max_size=13, first=ALNUM)
ehlo_params = st.lists(word(VISIBLE, max_size=12), max_size=4)
sasl_mechanisms = st.lists(word(ALNUM + "_-", max_size=10),
                           min_size=1, max_size=4)


# --------------------------------------------------------------------------- SPF

QUALIFIER_CHARS = ("", "+", "-", "~", "?")
MACRO_LETTERS = "slodiphv"
DELIMITER_CHARS = ".-+,/_="

macros = st.builds(
    Macro,
    letter=st.sampled_from(MACRO_LETTERS + MACRO_LETTERS.upper()),
    digits=st.one_of(st.none(), st.integers(1, 130)),
    reverse=st.booleans(),
    delimiters=st.text(st.sampled_from(DELIMITER_CHARS), max_size=3),
)
#: a literal label of a domain-spec and what it stands for after unescaping
_ESCAPES = [("%%", "%"), ("%_", " "), ("%-", "%20")]


@st.composite
def literal_label(draw):
    pieces = draw(st.lists(st.one_of(
        word(ALNUM + "_-").map(lambda s: (s, s)),
        st.sampled_from(_ESCAPES)), min_size=1, max_size=3))
    return "".join(p[0] for p in pieces), "".join(p[1] for p in pieces)


toplabels = st.one_of(
    word(ALNUM, max_size=7, first=LETTERS),
    st.builds("{}-{}".format, word("0123456789", max_size=3), word(ALNUM, max_size=4)))


def _merge(pieces) -> list:
    """Tokens as tokenize() gives them: adjacent literals joined into one str."""
    tokens: list = []
    for piece in pieces:
        if isinstance(piece, str) and tokens and isinstance(tokens[-1], str):
            tokens[-1] += piece
        elif piece != "":
            tokens.append(piece)
    return tokens


@st.composite
def domain_specs(draw):
    """(text, tokens) of a valid RFC 7208 domain-spec, with macros and escapes."""
    pieces: list = []   # str (unescaped literal) or Macro
    text = []
    for index in range(draw(st.integers(0, 4))):
        if index:
            text.append(".")
            pieces.append(".")
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.booleans()):
                macro = draw(macros)
                text.append(str(macro))
                pieces.append(macro)
            else:
                written, value = draw(literal_label())
                text.append(written)
                pieces.append(value)
    if draw(st.booleans()):                  # domain-end: "." toplabel ["."]
        top = draw(toplabels) + draw(st.sampled_from(["", "."]))
        text.append("." + top)
        pieces.append("." + top)
    else:                                    # domain-end: macro-expand (["."] allowed too)
        macro = draw(macros)
        dot = draw(st.sampled_from(["", "."]))
        text += [str(macro), dot]
        pieces += [macro, dot]
    return "".join(text), _merge(pieces)


ipv4_addresses = st.ip_addresses(v=4)
ipv6_addresses = st.ip_addresses(v=6)


def _cased(draw, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in name)


@st.composite
def mechanisms(draw):
    """(text, expected Mechanism) of one valid mechanism term."""
    qual = draw(st.sampled_from(QUALIFIER_CHARS))
    name = draw(st.sampled_from(["all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"]))
    head = qual + _cased(draw, name)
    qualifier = qual or "+"
    if name == "all":
        return head, Mechanism(qualifier, name, head)
    if name in ("include", "exists"):
        spec, tokens = draw(domain_specs())
        text = f"{head}:{spec}"
        return text, Mechanism(qualifier, name, text, tokens)
    if name == "ptr":
        if draw(st.booleans()):
            return head, Mechanism(qualifier, name, head)
        spec, tokens = draw(domain_specs())
        text = f"{head}:{spec}"
        return text, Mechanism(qualifier, name, text, tokens)
    if name in ("ip4", "ip6"):
        v4 = name == "ip4"
        addr = draw(ipv4_addresses if v4 else ipv6_addresses)
        shown = str(addr) if v4 or draw(st.booleans()) else addr.exploded
        top = 32 if v4 else 128
        length = draw(st.one_of(st.none(), st.integers(0, top)))
        text = f"{head}:{shown}" + ("" if length is None else f"/{length}")
        length = top if length is None else length
        network = ipaddress.ip_network(f"{addr}/{length}", strict=False)
        cidr = {"cidr4": length} if v4 else {"cidr6": length}
        return text, Mechanism(qualifier, name, text, network=network, **cidr)
    # a, mx: [":" domain-spec] ["/" cidr4] ["//" cidr6]
    spec = draw(st.one_of(st.none(), domain_specs()))
    c4 = draw(st.one_of(st.none(), st.integers(0, 32)))
    c6 = draw(st.one_of(st.none(), st.integers(0, 128)))
    text = head + (f":{spec[0]}" if spec else "") + ("" if c4 is None else f"/{c4}") \
        + ("" if c6 is None else f"//{c6}")
    return text, Mechanism(qualifier, name, text, spec[1] if spec else None,
                           cidr4=32 if c4 is None else c4, cidr6=128 if c6 is None else c6)


modifier_names = word(ALNUM + "_.-", max_size=9, first=LETTERS).filter(
    lambda n: n.lower() not in ("redirect", "exp"))
#: unknown-modifier values: a macro-string (letters of explanations allowed too)
modifier_values = st.lists(st.one_of(
    word(VISIBLE.replace("%", "")),
    st.sampled_from(["%%", "%_", "%-", "%{c}", "%{r}", "%{t}", "%{d2r}", "%{L-}"])),
    max_size=4).map("".join)


@st.composite
def spf_records(draw):
    """(text, expected terms, expected redirect, expected exp) of a valid SPF record."""
    terms = [draw(st.one_of(mechanisms(), unknown_modifiers()))
             for _ in range(draw(st.integers(0, 8)))]
    specials = {}
    for name in ("redirect", "exp"):
        if draw(st.booleans()):
            spec, tokens = draw(domain_specs())
            text = f"{_cased(draw, name)}={spec}"
            specials[name] = Modifier(name, spec, text, tokens)
            terms.insert(draw(st.integers(0, len(terms))), (text, specials[name]))
    record = "v=spf1" + "".join(" " * draw(st.integers(1, 3)) + text for text, _ in terms)
    record += " " * draw(st.integers(0, 2))
    return record, [term for _, term in terms], specials.get("redirect"), specials.get("exp")


@st.composite
def unknown_modifiers(draw):
    name = draw(modifier_names)
    value = draw(modifier_values)
    text = f"{name}={value}"
    return text, Modifier(name.lower(), value, text)


#: record-shaped text with terms mangled: the parser's error paths
@st.composite
def near_valid_records(draw):
    record, *_ = draw(spf_records())
    words = record.split(" ")
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(words) - 1))
        choice = draw(st.integers(0, 5))
        word = words[at]
        if choice == 0 and word:      # cut it short
            words[at] = word[:draw(st.integers(0, len(word)))]
        elif choice == 1:             # a hostile character inside
            pos = draw(st.integers(0, len(word)))
            words[at] = word[:pos] + draw(nasty_chars) + word[pos:]
        elif choice == 2:             # a piece of grammar where it does not belong
            words[at] = word + draw(st.sampled_from(
                [":", "/", "//", "/33", "//129", "%", "%{", "%{x}", "%{d0}", "=", ".", "..",
                 ":%{d}", "/0", "/01", "//", "%{i}", "-"]))
        elif choice == 3:             # another mechanism name or modifier in front
            words[at] = draw(st.sampled_from(["", "+", "-", "a", "mx:", "ip4:", "ip6:",
                                              "redirect=", "exp=", "x="])) + word
        elif choice == 4:             # duplicate a term
            words.insert(at, word)
        else:                         # any text at all
            words[at] = draw(nasty_text)
    return " ".join(words)


@st.composite
def macro_strings(draw):
    """Macro-string-shaped text: literals, escapes and macros, some of them broken."""
    parts = st.one_of(
        word(VISIBLE.replace("%", ""), max_size=6),
        st.sampled_from(["%%", "%_", "%-", "%", "%{", "%{}", "%{d", "%{z}", "%{d0}", "%{c}",
                         "%{t}", " ", "\x00", "\r\n", "é", "%{d999}", "%{ir}", "%{L-+}"]),
        macros.map(str))
    return "".join(draw(st.lists(parts, max_size=8)))


# --------------------------------------------------------------------------- DNS names

#: labels with the characters a DNS name may carry but a display or a label must not
_odd_labels = st.sampled_from([b".", b"\"", b"'", b"=", b" ", b"|", b"\\", b"@", b"$", b";",
                               b"(", b")", b"\x00", b"\r\n", b"\xff", b"\xc3\xa9", b"*",
                               b"xn--nxasmq6b", b"-", b"_dmarc", b"1", b"127"])
dns_labels = st.one_of(_odd_labels, st.binary(min_size=1, max_size=20),
                       word("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=20).map(str.encode),
                       st.binary(min_size=63, max_size=63))


@st.composite
def dns_names(draw, allow_root=True):
    """An absolute dns.name.Name from random labels (the root name now and then)."""
    if allow_root and draw(st.integers(0, 9)) == 0:
        return dns.name.root
    labels = draw(st.lists(dns_labels, min_size=1, max_size=6))
    while True:
        try:
            return dns.name.Name([*labels, b""])
        except dns.name.NameTooLong:
            labels.pop(0)


def mx_text(preference: int, exchange: dns.name.Name) -> str:
    """An MX record as dnslookup.DnsClient hands it on: the rdata's presentation text."""
    rdata = dns.rdtypes.ANY.MX.MX(dns.rdataclass.IN, dns.rdatatype.MX, preference, exchange)
    return rdata.to_text()


any_addresses = st.one_of(ipv4_addresses, ipv6_addresses,
                          ipv4_addresses.map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")))

#: A-record answers a blocklist may give: listings, documented errors, the canary, junk
dnsbl_answer_addresses = st.one_of(
    st.integers(0, 255).map(lambda n: f"127.0.0.{n}"),
    st.sampled_from(["127.255.255.254", "127.255.255.255", "127.255.255.252",
                     "127.0.1.255", "127.0.0.1", "127.0.0.2", "0.0.0.0", "255.255.255.255",
                     "10.0.0.1", "192.0.2.1", "128.0.0.1", "126.255.255.255"]),
    st.integers(0x7F000000, 0x7FFFFFFF).map(lambda n: str(ipaddress.IPv4Address(n))),
    ipv4_addresses.map(str),
)
loopback_nets = st.builds(
    lambda n, p: ipaddress.IPv4Network((n, p), strict=False),
    st.integers(0x7F000000, 0x7FFFFFFF), st.integers(8, 32))
