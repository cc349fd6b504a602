"""The Maildir mailbox, through the standard library's mailbox module: looked at by polling.

The Maildir itself is INBOX; its Maildir++ subfolders named by --junk-folder
(default Junk) are junk. The arrival time is the delivery time the Maildir
records (the file's modification time).
"""

from __future__ import annotations

import mailbox
import time

from check_smtp_posture.mailbox import (
    BODY_CAP,
    FOLDER,
    HEADER_CAP,
    MailboxError,
    Seen,
    header_block,
    header_has,
    tokens_in,
)

#: the messages looked at per folder; a probe mailbox holds few
SCAN_CAP = 2000


class MaildirBox:
    idles = False
    tls = None

    def __init__(self, spec, junk_names, poll_interval):
        self.spec = spec
        self.poll_interval = poll_interval
        self.transcript: list = []
        try:
            root = mailbox.Maildir(spec.path, factory=None, create=False)
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
                    with box.get_file(key) as f:
                        head = header_block(f.read(HEADER_CAP))
                        matched = ("header" if header_has(head, *header)
                                   else tokens_in(head, texts))
                        if matched is None and texts:
                            f.seek(0)
                            matched = tokens_in(f.read(BODY_CAP), texts)
                    if matched is None:
                        continue
                    arrived = box.get_message(key).get_date()
                except (KeyError, FileNotFoundError):
                    continue  # delivered elsewhere or deleted meanwhile (cur/new moves)
                found.append(Seen(name, junk, head, arrived, time.time(), matched, (name, key)))
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
