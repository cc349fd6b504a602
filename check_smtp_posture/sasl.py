"""The SASL OAuth mechanisms (XOAUTH2, and OAUTHBEARER of RFC 7628) that IMAP, POP3 and
SMTP share: which to use, and what the client's initial response is.

A bearer token replaces the password; the mechanism is the one the caller forces,
else the first of OAUTH_MECHANISMS the server offers. OAUTHBEARER comes first, as
the standard one; Microsoft 365 offers XOAUTH2 alone over IMAP, so it gets that.
"""

from __future__ import annotations

XOAUTH2, OAUTHBEARER = "XOAUTH2", "OAUTHBEARER"
#: in order of preference when the server offers both
OAUTH_MECHANISMS = (OAUTHBEARER, XOAUTH2)
#: what the client sends to the server's error challenge (a base64 JSON object) to
#: have the final refusal: XOAUTH2 an empty line, OAUTHBEARER a lone %x01 (RFC 7628 3.2.3)
ERROR_ACK = {XOAUTH2: "", OAUTHBEARER: "AQ=="}


def pick(offered, forced: str | None = None) -> str | None:
    """The OAuth mechanism to use among `offered` (upper-case names), or None: `forced`
    when the server offers it, else the preferred one it offers."""
    offered = {mech.upper() for mech in offered}
    if forced:
        return forced if forced in offered else None
    return next((mech for mech in OAUTH_MECHANISMS if mech in offered), None)


def initial_response(mechanism: str, user: str, token: str) -> str:
    """The client's first message of `mechanism` for `user` with `token`, before base64."""
    if mechanism == XOAUTH2:
        return f"user={user}\1auth=Bearer {token}\1\1"
    if mechanism == OAUTHBEARER:
        # RFC 5801 saslname: "=" and "," escaped in the authorisation identity
        name = user.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={name},\1auth=Bearer {token}\1\1"
    raise ValueError(f"not an OAuth SASL mechanism: {mechanism!r}")


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")
