"""The kinds of failure of a connection, one vocabulary for every protocol library.

An SMTP dialogue (smtp.errors), an HTTPS fetch (https) and a mailbox
(mailbox) fail in the same few ways; each exception carries one of these
names as its `kind`, so the plugin contract maps a kind to a state in one
place (nagios.states.failure_state) whatever the protocol.

- CONNECT: no connection (refused, no route, the address lookup failed)
- TIMEOUT: no answer within the run's deadline
- CLOSED: reached, then the peer closed or reset the connection
- PROTOCOL: the peer sent what the protocol does not allow (garbage, overlong)
- TLS: the TLS handshake failed
- LOGIN: the peer refused the credentials (mailbox)
- FOLDER: the mailbox has no such folder
- USAGE: the options cannot be applied to this connection (a PROXY family
  that does not fit)
- ERROR: anything else
"""

CONNECT, TIMEOUT, CLOSED, PROTOCOL, TLS = "connect", "timeout", "closed", "protocol", "tls"
LOGIN, FOLDER, USAGE, ERROR = "login", "folder", "usage", "error"

#: the target was not reached, or did not answer in time: a fault of the path to it
#: (--unreachable-state), not of what it did
UNREACHED = frozenset({CONNECT, TIMEOUT})
