"""The Maildir mailbox, through the standard library's mailbox module: looked at by polling.

The Maildir itself is INBOX; its Maildir++ subfolders named by --junk-folder
(default Junk) are junk. The arrival time is the delivery time the Maildir
records (the file's modification time). A message file is opened without
blocking and read only if it is a regular file: an entry of new/ or cur/ that
is none (a named pipe, a symbolic link loop, a file it may not read) is
skipped and named in `skipped`.
"""

from __future__ import annotations

import mailbox
import os
import time

from check_smtp_posture.failures import FOLDER
from check_smtp_posture.mailbox import (
    BODY_CAP,
    HEADER_CAP,
    MailboxError,
    Seen,
    header_block,
    header_has,
    tokens_in,
)
from check_smtp_posture.userfiles import UserFileError, open_regular

#: the messages looked at per folder; a probe mailbox holds few
SCAN_CAP = 2000


class _Maildir(mailbox.Maildir):
    """mailbox.Maildir whose messages are opened as the family opens files it reads."""

    def entry(self, key: str) -> str:
        """Where message `key` is in this folder: new/NAME or cur/NAME (KeyError: gone)."""
        return self._lookup(key)

    def open_message(self, key: str, where: str):
        """(binary file, modification time) of message `key`, `where` naming it in errors.

        KeyError or FileNotFoundError when it is gone (taken, or moved from new/
        to cur/), UserFileError when it is no regular file, OSError otherwise.
        """
        fd = open_regular(os.path.join(self._path, self._lookup(key)), where)
        return os.fdopen(fd, "rb"), os.fstat(fd).st_mtime

    def get_folder(self, folder: str) -> _Maildir:
        return _Maildir(os.path.join(self._path, "." + folder), factory=None, create=False)


class MaildirBox:
    idles = False
    tls = None

    def __init__(self, spec, junk_names, poll_interval):
        self.spec = spec
        self.poll_interval = poll_interval
        self.transcript: list = []
        self.skipped: dict = {}  # why an entry was not read (one line each) -> None
        try:
            root = _Maildir(spec.path, factory=None, create=False)
            root.iterkeys()  # a directory without cur/ and new/ fails here
            names = {name.lower(): name for name in root.list_folders()}
        except (OSError, mailbox.Error) as exc:
            raise MailboxError(FOLDER, f"{spec.path} is no Maildir: "
                                       f"{getattr(exc, 'strerror', None) or exc}") from None
        self.boxes = [("INBOX", False, root)]
        for name in junk_names:
            real = names.get(name.lower())
            if real is not None:
                self.boxes.append((real, True, root.get_folder(real)))
        self.folders = [(name, junk) for name, junk, _box in self.boxes]

    def close(self) -> None:
        pass

    def scan(self, header: tuple, texts) -> list:
        found = []
        for name, junk, box in self.boxes:
            try:
                keys = list(box.iterkeys())[-SCAN_CAP:]
            except OSError as exc:
                raise MailboxError(FOLDER, f"{name}: {exc.strerror or exc}") from None
            for key in keys:
                try:
                    where = box.entry(key) if name == "INBOX" else f".{name}/{box.entry(key)}"
                    f, arrived = box.open_message(key, where)
                except (KeyError, FileNotFoundError):
                    continue  # delivered elsewhere or deleted meanwhile (cur/new moves)
                except UserFileError as exc:  # a named pipe would block the read for ever
                    self.skipped.setdefault(str(exc))
                    continue
                except OSError as exc:  # a symbolic link loop, no permission
                    self.skipped.setdefault(f"{where}: {exc.strerror}")
                    continue
                with f:
                    head = header_block(f.read(HEADER_CAP))
                    matched = "header" if header_has(head, *header) else tokens_in(head, texts)
                    if matched is None and texts:
                        f.seek(0)
                        matched = tokens_in(f.read(BODY_CAP), texts)
                if matched is not None:
                    found.append(Seen(name, junk, head, arrived, time.time(), matched,
                                      (name, key)))
        return found

    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.poll_interval)))

    def delete(self, seen: list) -> int:
        boxes = {name: box for name, _junk, box in self.boxes}
        removed = 0
        for item in seen:
            name, key = item.ref
            try:
                boxes[name].remove(key)
                removed += 1
            except (KeyError, FileNotFoundError):
                pass
        return removed
