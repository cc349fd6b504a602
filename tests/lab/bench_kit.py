"""What the benchmarks share: the interpreter under test, one measured run, the targets.

The interpreter. A plugin's cost is mostly its interpreter's start-up and its
imports, so the figures mean something only for the interpreter Icinga runs:
by default the virtualenv `make install-nagios-plugins` makes for the nagios
user (NAGIOS_PYTHON), else the interpreter running the benchmark; BENCH_PYTHON
or --python chooses another. Whichever it is, the plugins' code is this
working tree's (PYTHONPATH; BENCH_TREE names another copy, to compare a
before with an after: `git archive HEAD | tar -x -C /tmp/before`), started
through a console script written like pip's, so that an edit is measured
without reinstalling; `python3 -c pass` runs from the same interpreter with
the same environment. Bytecode is
written (to a cache of the benchmark's own, PYTHONPYCACHEPREFIX) and reused,
as an installed package's is: a first run of every command, not counted,
writes it.

One run. CPU (user + sys) and wall time come from wait4() on the child itself.
Peak RSS cannot: a child forked from this (large) interpreter inherits its
high-water mark (Linux counts the old address space at exec), so it is read
from GNU time (/usr/bin/time -f %M), whose own small process forks the command.

Targets. Each benchmark records the issue's targets with `target()`; `make
bench` prints them all at the end (TARGETS), PASS or FAIL, with the figure.
"""

from __future__ import annotations

import configparser
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the interpreter of `make install-nagios-plugins` (Makefile: NAGIOS_PREFIX)
NAGIOS_PYTHON = "/opt/check_smtp_posture/bin/python3"
GNU_TIME = "/usr/bin/time"
MONITORING_PLUGINS = Path("/usr/lib/nagios/plugins")


def interpreter(choice: str | None = None) -> str:
    choice = choice or os.environ.get("BENCH_PYTHON")
    if choice:
        return choice
    if os.access(NAGIOS_PYTHON, os.X_OK):
        return NAGIOS_PYTHON
    return sys.executable


def console_scripts(tree: Path = REPO) -> dict[str, str]:
    """name -> "module:function", from setup.cfg's entry points."""
    config = configparser.ConfigParser()
    config.read(Path(tree) / "setup.cfg")
    entries = config.get("options.entry_points", "console_scripts", fallback="")
    scripts = {}
    for line in entries.strip().splitlines():
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


class Plugins:
    """The plugins of this working tree, run by `python` as their console scripts."""

    def __init__(self, python: str | None = None):
        self.python = interpreter(python)
        self.tree = os.environ.get("BENCH_TREE") or str(REPO)
        self._dir = tempfile.TemporaryDirectory(prefix="bench-scripts-")
        self.scripts = {}
        for name, target in console_scripts(self.tree).items():
            module, _, function = target.partition(":")
            path = Path(self._dir.name) / name
            # what pip writes into bin/ (less the shebang: the interpreter is named)
            path.write_text(
                "import re\nimport sys\n"
                f"from {module} import {function}\n"
                "if __name__ == '__main__':\n"
                "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                f"    sys.exit({function}())\n")
            self.scripts[name] = str(path)
        path = os.pathsep.join(p for p in (self.tree, os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "PYTHONPATH": path,
                    # Installed plugins run from compiled bytecode; without it every
                    # run would compile the package anew. Written outside the tree.
                    "PYTHONPYCACHEPREFIX": str(Path(self._dir.name) / "pycache")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def command(self, name: str, *args) -> list[str]:
        return [self.python, self.scripts[name], *map(str, args)]

    def python_c(self, code: str) -> list[str]:
        return [self.python, "-c", code]

    def describe(self) -> str:
        version = subprocess.run([self.python, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True, env=self.env).stdout.strip()
        return f"{self.python} (Python {version}), plugins from {self.tree}"

    def close(self) -> None:
        self._dir.cleanup()


def peer(name: str) -> str | None:
    """A monitoring-plugins (or -contrib) binary, or None when it is not installed."""
    path = MONITORING_PLUGINS / name
    return str(path) if os.access(path, os.X_OK) else None


def cannot_run(done: Run) -> str | None:
    """Why a peer's run says nothing about its cost, or None: installed without its
    own dependencies (contrib's Recommends), it prints UNKNOWN or a Perl error."""
    import re

    if done.status in (0, 1, 2) and re.search(r"\b(OK|WARNING|CRITICAL)\b", done.first_line):
        return None
    return f"cannot run: {done.first_line[:80] or f'exit {done.status}'}"


@dataclass
class Run:
    cpu: float  # user + sys seconds of the child (and anything it waited for)
    wall: float
    status: int | str  # exit status, or "hung"
    output: str

    @property
    def first_line(self) -> str:
        return self.output.splitlines()[0] if self.output else ""


def run(argv: list[str], env=None, timeout: float = 60.0) -> Run:
    """One run of `argv`: CPU and wall time, exit status, output (stdout and stderr)."""
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env)
    # Read first, then wait4(): Popen.wait() would reap the child and lose its rusage.
    timer = _Killer(child, timeout)
    output = child.stdout.read()
    child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    hung = timer.cancel()
    return Run(usage.ru_utime + usage.ru_stime, wall,
               "hung" if hung else child.returncode, output.decode("utf-8", "replace"))


class _Killer:
    """Kills a child that outlives `timeout` (a hung plugin must not hang the bench)."""

    def __init__(self, child: subprocess.Popen, timeout: float):
        import threading

        self.fired = False
        self._timer = threading.Timer(timeout, self._kill, args=(child,))
        self._timer.daemon = True
        self._timer.start()

    def _kill(self, child) -> None:
        self.fired = True
        child.kill()

    def cancel(self) -> bool:
        self._timer.cancel()
        return self.fired


def peak_rss_kib(argv: list[str], env=None) -> int | None:
    """Peak RSS of one run of `argv` in KiB, by GNU time; None without /usr/bin/time."""
    if not os.access(GNU_TIME, os.X_OK):
        return None
    with tempfile.NamedTemporaryFile("r") as report:
        subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *argv], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL, timeout=60)
        lines = report.read().split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    bench: str
    what: str
    figure: str  # the measured value, as printed
    limit: str  # the target, as printed
    passed: bool | None  # None: not measured (a peer or the lab missing)
    note: str = ""  # printed under the table: e.g. why a FAIL cannot be helped


#: every target recorded in this process, in order (`make bench` prints them at the end)
TARGETS: list[Target] = []


def target(bench: str, what: str, figure: str, limit: str, passed: bool | None,
           note: str = "") -> Target:
    found = Target(bench, what, figure, limit, passed, note)
    TARGETS.append(found)
    return found


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def print_targets(targets: list[Target], out=None) -> None:
    out = out or sys.stdout
    if not targets:
        return
    width = max(len(t.what) for t in targets)
    fig = max(len(t.figure) for t in targets)
    print(f"  {'target':<{width}}  {'measured':>{fig}}  {'wanted':<12} verdict", file=out)
    for t in targets:
        print(f"  {t.what:<{width}}  {t.figure:>{fig}}  {t.limit:<12} {verdict(t.passed)}",
              file=out)
    for t in targets:
        if t.note:
            print(f"  note: {t.what}: {t.note}", file=out)
