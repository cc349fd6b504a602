"""Share one lab server between test sessions that run at the same time.

The lab's servers listen on fixed addresses (127.0.25.1:25, ...), so two pytest
sessions on one machine cannot each start their own. Instead the first session
starts the server and every session holds a shared `flock` on a lock file while
it uses it; the last one to leave stops it.

    lock = SharedLock("/tmp/.../postfix.lock")
    if lock.acquire():      # True: nobody else uses the server, (re)start it
        server.restart()
    lock.ready()            # now shared: others may join
    ...
    if lock.release():      # True: we were the last user, stop the server
        server.stop()
    lock.close()

Two sessions leaving at the same instant may both see the other and leave the
server running; the next session to start finds it and restarts it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class SharedLock:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Join. True if we are alone (exclusive lock held: start the server)."""
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            # Someone uses it; this blocks only while a starter holds LOCK_EX.
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            return False

    def ready(self) -> None:
        """The server is up: let others join (exclusive -> shared)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> bool:
        """Leave. True if we were the last user (then stop the server, then close())."""
        if self._fd is None:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            self.close()
            return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SharedDns:
    """The world's lab DNS (tests/lab/world.py), shared like LabPostfix.

    `start()` returns the LabDns (for `.server_arg`, `.address`, `.port`);
    `stop()` stops NSD only when the last session leaves.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        from tests.lab.postfix import LAB_ROOT
        from tests.lab.world import lab_dns

        root = Path(root or LAB_ROOT)
        self.dns = lab_dns(root / "dns")
        self._lock = SharedLock(root / "dns.lock")
        self._running = False

    def _pidfile_pid(self) -> int | None:
        try:
            return int((self.dns.workdir / "nsd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _kill_leftover(self) -> None:
        import signal
        import time

        from tests.lab.postfix import _alive

        self.dns.stop()
        pid = self._pidfile_pid()
        if pid and _alive(pid) and b"nsd" in _cmdline(pid):
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.02)

    def start(self, wait: float = 10.0):
        if self._running:
            return self.dns
        alone = self._lock.acquire()
        try:
            if alone:
                self._kill_leftover()
                self.dns.start(wait)
            else:
                import time

                end = time.monotonic() + wait
                while not self.dns._answers():
                    if time.monotonic() > end:
                        raise RuntimeError("the shared lab DNS does not answer")
                    time.sleep(0.05)
        except BaseException:
            self._lock.close()
            raise
        self._lock.ready()
        self._running = True
        return self.dns

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._lock.release():
            self._kill_leftover()
        else:
            # Another session still uses our NSD: leave it running, just let go of it.
            self.dns.process = None
        self._lock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
