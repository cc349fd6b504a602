"""Share one lab server between test sessions that run at the same time.

The lab's servers listen on fixed addresses (127.0.25.1:25, ...), so two pytest
sessions on one machine cannot each start their own. Instead the first session
starts the server and every session holds a shared `flock` on a lock file while
it uses it; the last one to leave stops it.

    lock = SharedLock("/tmp/.../postfix.lock")
    if lock.acquire(is_up): # True: nobody else uses the server, (re)start it
        server.restart()
    lock.ready()            # now shared: others may join
    ...
    if lock.release():      # True: we were the last user, stop the server
        server.stop()
    lock.close()

A session leaving drops its shared lock before trying for the exclusive one, so
of several leaving at once exactly one stops the server; one arriving meanwhile
waits, finds the server down and starts it again. A session killed outright
leaves the server running; the next one to start alone restarts it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Callable


class SharedLock:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self, is_up: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Join. True if we are alone (exclusive lock held: start the server).

        False once another session's server is up (shared lock held). A server
        found down (its last user is stopping it) is waited out, then started.
        """
        end = time.monotonic() + timeout
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except BlockingIOError:
                pass
            # Someone uses it; this blocks only while a starter or stopper holds LOCK_EX.
            fcntl.flock(fd, fcntl.LOCK_SH)
            if is_up():
                self._fd = fd
                return False
            os.close(fd)
            if time.monotonic() > end:
                raise RuntimeError(f"lab server behind {self.path} neither up nor free")
            time.sleep(0.05)

    def ready(self) -> None:
        """The server is up: let others join (exclusive -> shared)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> bool:
        """Leave. True if we were the last user: stop the server, then close()."""
        self.close()
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SharedServer:
    """One lab server shared by concurrent sessions: the join/leave protocol, once.

    A subclass says how its server is handled: `_is_up()`, `_start_fresh()` (start
    ours once `_kill_leftover()` removed what an earlier session left), `_joined()`
    (checks on another session's server; none by default), `_let_go()` (forget the
    process another session still uses) and `_server()` (what start() returns).
    """

    def __init__(self, lock_path: str | os.PathLike):
        self._lock = SharedLock(lock_path)
        self._running = False

    def start(self):
        if self._running:
            return self._server()
        alone = self._lock.acquire(self._is_up)
        try:
            if alone:
                self._kill_leftover()
                self._start_fresh()
            else:
                self._joined()
        except BaseException:
            if alone:
                self._kill_leftover()
            self._lock.close()
            raise
        self._lock.ready()
        self._running = True
        return self._server()

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._lock.release():
            self._kill_leftover()
        else:
            self._let_go()  # another session still uses it: leave it running
        self._lock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _joined(self) -> None:
        pass


def kill_pidfile(pidfile: Path, name: bytes, wait: float = 5.0) -> None:
    """SIGTERM the process `pidfile` names if its command line holds `name`; wait for it."""
    import signal

    from tests.lab.postfix import _alive

    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if _alive(pid) and name in _cmdline(pid):
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.02)


class SharedDns(SharedServer):
    """The world's lab DNS (tests/lab/world.py), shared like LabPostfix.

    `start()` returns the LabDns (for `.server_arg`, `.address`, `.port`);
    `stop()` stops NSD only when the last session leaves.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        from tests.lab.postfix import LAB_ROOT
        from tests.lab.world import lab_dns

        root = Path(root or LAB_ROOT)
        self.dns = lab_dns(root / "dns")
        super().__init__(root / "dns.lock")

    def _server(self):
        return self.dns

    def _is_up(self) -> bool:
        return self.dns._answers()

    def _start_fresh(self) -> None:
        self.dns.start()

    def _kill_leftover(self) -> None:
        self.dns.stop()
        kill_pidfile(self.dns.workdir / "nsd.pid", b"nsd")

    def _let_go(self) -> None:
        self.dns.process = None

    def _joined(self) -> None:
        """Joining another session's NSD: it must serve every zone of ours.

        An NSD started from an older checkout may lack zones added since, and a
        reload cannot add zones (only a restart, which would cut off its users).
        """
        missing = self.dns.missing_zones()
        if missing:
            raise RuntimeError(
                f"the shared lab DNS {self.dns.server_arg} (pid {self.dns.running_pid()}), "
                f"started by another test session, does not serve {', '.join(missing)} "
                "(tests/lab/world.ZONES changed since): let that session end, or stop "
                "that NSD, and run again")


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
