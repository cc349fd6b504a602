"""The IMAP mailbox, through imapclient: IDLE when the server offers it, polling otherwise.

The connection goes to the address the family's resolver found while TLS is
verified against the URL's host name (imapclient would connect to the name and
resolve it itself). imap:// upgrades with STARTTLS when the server offers it.
The password is only sent over a verified TLS connection, or in clear text when
the server offers no TLS at all on imap:// (the user asked for imap://).
"""

from __future__ import annotations

import imaplib
import socket
import time

import imapclient
from imapclient import exceptions as imap_errors

from check_smtp_posture.failures import FOLDER, LOGIN, PROTOCOL, TIMEOUT
from check_smtp_posture.mailbox import (
    BODY_CAP,
    PASSWORD,
    MailboxError,
    Seen,
    ServerBox,
    connection_error,
    header_has,
    oauth_mechanism,
    tls_context,
    tokens_in,
)


class _Imap4(imaplib.IMAP4):
    """imaplib connected to an address, with TLS (implicit or STARTTLS) checked for `host`."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context=None):
        self._address = address
        self._implicit_context = context
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout=None):
        sock = socket.create_connection((self._address, self.port), timeout)
        if self._implicit_context is not None:
            sock = self._implicit_context.wrap_socket(sock, server_hostname=self.host)
        return sock


class _Client(imapclient.IMAPClient):
    def __init__(self, host, port, address, context, implicit, timeout):
        self._address = address
        self._context = context
        super().__init__(host, port=port, ssl=implicit, ssl_context=context, timeout=timeout)

    def _create_IMAP4(self):
        connect = getattr(self._timeout, "connect", None)
        return _Imap4(self.host, self.port, self._address, connect,
                      self._context if self.ssl else None)


class ImapBox(ServerBox):
    def __init__(self, spec, address, password, ca_file, deadline, junk_folders, idle,
                 poll_interval, transcript, auth=PASSWORD):
        super().__init__(spec, address, password, ca_file, deadline, poll_interval, transcript,
                         auth)
        self.mechanism = None  # the OAuth SASL mechanism logged in with
        self.junk_names = tuple(junk_folders)
        self.use_idle = idle
        self.client: _Client | None = None
        self.folders: list = []  # (name, junk) to scan, the main folder first
        self.idle_offered = False
        self._uidnext: dict = {}  # folder -> UIDNEXT when it was last looked at

    @property
    def idles(self) -> bool:
        return self.use_idle and self.idle_offered

    # -- connection ------------------------------------------------------------
    def open(self) -> None:
        spec = self.spec
        context = tls_context(self.ca_file)
        implicit = spec.scheme == "imaps"
        try:
            try:
                self.client = _Client(spec.host, spec.port, self.address, context, implicit,
                                      self.deadline.timeout("mailbox connect"))
            except OSError as exc:
                raise connection_error(exc, f"{self.address} port {spec.port}") from None
            except imaplib.IMAP4.error as exc:  # a greeting that is no IMAP
                raise MailboxError(PROTOCOL, f"greeting: {self._text(exc)}") from None
            self.client.normalise_times = False  # INTERNALDATE with its zone
            self.tls = "implicit TLS" if implicit else None
            self._log(f"connected to {self.address} port {spec.port}"
                      + (" with TLS" if implicit else ""))
            caps = self._call(self.client.capabilities)
            if not implicit and b"STARTTLS" in caps:
                self._call(self.client.starttls, context)
                self.tls = "STARTTLS"
                self._log("STARTTLS: certificate verified for " + spec.host)
            elif not implicit:
                self._log("no STARTTLS offered: logging in without TLS")
            self._login(caps)
            self.idle_offered = self._call(self.client.has_capability, "IDLE")
            self.folders = self._folders()
        except MailboxError:
            self.close()
            raise
        except imap_errors.LoginError as exc:
            self.close()
            # imapclient makes every failure of LOGIN a LoginError: only a tagged NO or
            # BAD is a refusal; garbage or a hang-up (imaplib's abort) is the server's fault
            if isinstance(exc.__context__, imaplib.IMAP4.abort):
                raise MailboxError(PROTOCOL, self._text(exc.__context__)) from None
            how = f"{self.mechanism} login" if self.mechanism else "login"
            raise MailboxError(LOGIN, f"{how} as {spec.user} refused: {self._text(exc)}") \
                from None

    def _login(self, caps) -> None:
        """LOGIN with the password, or AUTHENTICATE with the token (self.mechanism)."""
        spec = self.spec
        if self.auth == PASSWORD:
            self._log(f"LOGIN {spec.user} ********")
            self._call(self.client.login, spec.user, self.password or "")
            return
        if self.tls is not None:  # the capabilities before STARTTLS say nothing of after
            caps = self._call(self.client.capabilities)
        offered = [c[5:].decode("ascii", "replace") for c in caps if c.startswith(b"AUTH=")]
        self.mechanism = mech = oauth_mechanism(self.auth, offered, f"login as {spec.user}")
        self._log(f"AUTHENTICATE {mech} {spec.user} ********")
        if mech == "OAUTHBEARER":
            self._call(self.client.oauthbearer_login, spec.user, self.password)
        else:
            self._call(self.client.oauth2_login, spec.user, self.password, mech)

    def _folders(self) -> list:
        try:
            listed = self._call(self.client.list_folders)
        except MailboxError as exc:
            if exc.kind == PROTOCOL:
                raise MailboxError(PROTOCOL, f"listing folders: {exc.detail}") from None
            raise
        names = {name.lower(): name for _flags, _sep, name in listed}
        main = names.get(self.spec.folder.lower()) if self.spec.folder.upper() != "INBOX" \
            else "INBOX"
        if main is None:
            raise MailboxError(FOLDER, f"no folder {self.spec.folder!r}")
        folders = [(main, False)]
        wanted = {n.lower() for n in self.junk_names}
        for flags, _sep, name in listed:
            special = b"\\Junk" in flags  # RFC 6154 special use
            if (special or name.lower() in wanted) and name != main:
                folders.append((name, True))
        self._log("folders searched: " + ", ".join(
            f"{n}{' (junk)' if junk else ''}" for n, junk in folders))
        return folders

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.socket().settimeout(min(1.0, max(0.1, self.deadline.remaining())))
            client.logout()
        except Exception:  # the server is gone or misbehaves: nothing more to say to it
            try:
                client.shutdown()
            except Exception:
                pass

    # -- search ----------------------------------------------------------------
    def scan(self, header: tuple, texts) -> list:
        found = []
        for folder, junk in self.folders:
            # a fresh SELECT: its UIDNEXT tells wait() whether mail came meanwhile
            self._uidnext[folder] = self._select(folder).get(b"UIDNEXT")
            by_token: dict = {}
            uids = set(self._call(self.client.search, ["HEADER", header[0], header[1]]))
            for text in texts:
                for uid in self._call(self.client.search, ["TEXT", text]):
                    by_token.setdefault(uid, text)
            uids |= set(by_token)
            if not uids:
                continue
            data = self._call(self.client.fetch, sorted(uids),
                              ["BODY.PEEK[HEADER]", "INTERNALDATE"])
            noticed = time.time()
            heads = {uid: item.get(b"BODY[HEADER]") or b"" for uid, item in data.items()}
            matched = {uid: "header" if header_has(raw, *header) else tokens_in(raw, texts)
                       for uid, raw in heads.items()}
            # A hit counts, and may be deleted, only once its own text shows the token:
            # a full-text index (Dovecot fts, Exchange, Gmail) matches words, not strings.
            matched.update(self._tokens_in_bodies(
                [uid for uid, how in matched.items() if how is None and uid in by_token],
                texts))
            for uid, how in matched.items():
                if how is None:
                    continue  # the server's match was looser than ours
                arrived = self._arrival(uid, data[uid].get(b"INTERNALDATE"))
                found.append(Seen(folder, junk, heads[uid], arrived, noticed, how,
                                  (folder, uid)))
        return found

    def _arrival(self, uid: int, when) -> float | None:
        """The INTERNALDATE as epoch seconds; None when there is none to use.

        imapclient gives None for a date it cannot read, and a datetime that
        cannot be placed in time for one it reads but no clock has (a zone of
        -2400, a year past 9999): the Received date stands in for both.
        """
        if when is None or when.tzinfo is None:
            return None
        try:
            return when.timestamp()
        except (ValueError, OverflowError) as exc:
            self._log(f"UID {uid}: INTERNALDATE {when:%d-%b-%Y %H:%M:%S} with no place in "
                      f"time ({type(exc).__name__}): not used")
            return None

    def _tokens_in_bodies(self, uids: list, texts) -> dict:
        """uid -> the token found in the first BODY_CAP bytes of its body, or None."""
        if not uids:
            return {}
        data = self._call(self.client.fetch, sorted(uids), [f"BODY.PEEK[TEXT]<0.{BODY_CAP}>"])
        return {uid: tokens_in(data.get(uid, {}).get(b"BODY[TEXT]<0>") or b"", texts)
                for uid in uids}

    def wait(self, seconds: float) -> None:
        """Until the main folder changes (IDLE) or the poll interval is over, at most `seconds`.

        IDLE watches one folder: with junk folders to look at as well, it is
        also left after the poll interval.
        """
        if not self.idles or len(self.folders) > 1:
            seconds = min(seconds, self.poll_interval)
        if seconds <= 0:
            return
        if not self.idles:
            time.sleep(seconds)
            return
        main = self.folders[0][0]
        if self._select(main).get(b"UIDNEXT") != self._uidnext.get(main):
            return  # mail arrived while the last look was under way: look again now
        self._call(self.client.idle)
        try:
            self.client.socket().settimeout(None)
            responses = self.client.idle_check(timeout=seconds)
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise connection_error(exc, "IDLE") from None
        finally:
            self._set_timeout()
        self._call(self.client.idle_done)
        if responses:
            self._log(f"IDLE: {len(responses)} update(s)")

    def delete(self, seen: list) -> int:
        """Delete exactly these messages; without UIDPLUS they stay flagged \\Deleted."""
        by_folder: dict = {}
        for item in seen:
            folder, uid = item.ref
            by_folder.setdefault(folder, []).append(uid)
        uidplus = self._call(self.client.has_capability, "UIDPLUS")
        removed = 0
        for folder, uids in by_folder.items():
            self._select(folder)
            self._call(self.client.delete_messages, uids)
            if uidplus:  # UID EXPUNGE: only these; a plain EXPUNGE would take others' too
                self._call(self.client.uid_expunge, uids)
                removed += len(uids)
        if not uidplus:
            self._log("no UIDPLUS: probes flagged \\Deleted, left for the next expunge")
        return removed

    # -- plumbing --------------------------------------------------------------
    def _select(self, folder: str) -> dict:
        """SELECT `folder` (again, when selected: a fresh view); the server's response."""
        try:
            return self._call(self.client.select_folder, folder) or {}
        except MailboxError as exc:
            if exc.kind == PROTOCOL:
                raise MailboxError(FOLDER, f"cannot select folder {folder!r}: "
                                           f"{exc.detail}") from None
            raise

    def _set_timeout(self) -> None:
        self.client.socket().settimeout(self.deadline.timeout("mailbox"))

    def _call(self, method, *args):
        try:
            if self.client is not None:
                self._set_timeout()
            return method(*args)
        except imap_errors.LoginError:
            raise
        except (imaplib.IMAP4.error, imap_errors.IMAPClientError) as exc:
            raise MailboxError(PROTOCOL, self._text(exc)) from None
        except OSError as exc:
            raise connection_error(exc, f"{self.address} port {self.spec.port}") from None
        except Exception as exc:  # a deadline, or garbage the parser could not take
            from check_smtp_posture.deadline import DeadlineExceeded

            if isinstance(exc, DeadlineExceeded):
                raise MailboxError(TIMEOUT, f"{self.spec.label}: no time left") from None
            raise MailboxError(PROTOCOL, f"{type(exc).__name__}: {self._text(exc)}") from None

    def _text(self, exc: BaseException) -> str:
        """An imaplib or imapclient error as one line, the password masked in it."""
        from check_smtp_posture.sanitize import one_line

        text = self.redact(str(exc))
        if text.startswith("b'") or text.startswith('b"'):
            text = text[2:-1]
        # imaplib's words for a failed command: "command: LOGIN => socket error: EOF"
        command, arrow, what = text.partition(" => ")
        if arrow and command.startswith("command: "):
            text = f"{command.removeprefix('command: ')}: {what}"
        text = text.replace("socket error: EOF", "the server closed the connection")
        return one_line(text, 100)
