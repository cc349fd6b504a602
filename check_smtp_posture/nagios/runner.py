"""Run a nagiosplugin Check and print the result the way the family promises.

nagiosplugin's own Runtime is a process-wide singleton that exits the
interpreter and prints tracebacks for unexpected errors; plugins here need a
`main(argv) -> int` that tests can call many times in one process, a first
line that always carries the perfdata, and no traceback ever.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import namedtuple

import nagiosplugin

from check_smtp_posture.deadline import DeadlineExceeded
from check_smtp_posture.nagios import states, warningpolicy
from check_smtp_posture.sanitize import one_line, printable

# The deadline should end the run by itself; the alarm is the last resort for
# code that ignored it (dnspython swallows nagiosplugin's SIGALRM, so it
# cannot be the primary mechanism). It fires just inside the promised
# `-t + 0.5 s`.
ALARM_GRACE = 0.35


class _LastResortTimeout(BaseException):
    """Raised from the SIGALRM handler; BaseException so `except Exception` won't eat it."""


#: what a run prints and the status it exits with
Outcome = namedtuple("Outcome", ("exitcode", "text"))


def new_check(*objects, name: str) -> nagiosplugin.Check:
    """A Check of `objects` whose status line starts with `name`.

    nagiosplugin takes `name=` only from 1.4; Debian (bookworm and trixie) ships 1.3.2.
    """
    made = nagiosplugin.Check(*objects)
    made.name = name
    return made


#: NRPE 2 keeps 1 KiB of a plugin's output, Nagios Core 8 KiB: the status line (its
#: newline included) stays under the one, the whole output under the other
FIRST_LINE_MAX = 1024
OUTPUT_MAX = 8192
#: the status line's bound with --perfdata-per-endpoint: room for perfdata, and for the
#: long output within OUTPUT_MAX
PER_ENDPOINT_LINE_MAX = OUTPUT_MAX // 2
#: from this verbosity on (-vvv: transcripts, for a person at a shell) the output is not cut
UNBOUNDED_VERBOSITY = 3


def render(check: nagiosplugin.Check, verbose: int, *,
           first_line_max: int = FIRST_LINE_MAX) -> Outcome:
    """Status line with perfdata first, long output after it.

    The status line with its newline stays under `first_line_max` bytes: whole
    perfdata items are left out from the end where they would not fit, and the long
    output says how many. Below -vvv the whole output stays under OUTPUT_MAX bytes,
    the long output cut at a line boundary with a closing "... N more lines".
    """
    state = check.state
    summary = one_line(check.summary_str, limit=300)
    line = f"{check.name.upper()} {str(state).upper()}"
    if summary:
        line += f" - {summary}"
    perfdata = [p for p in check.perfdata if p]
    line, kept = _fit(line, perfdata, first_line_max - 2)
    lines = []
    if kept < len(perfdata):
        lines.append(f"perfdata: {len(perfdata) - kept} of {len(perfdata)} items left out, "
                     f"the status line stays under {first_line_max} bytes")
    if verbose > 0:
        extra = check.verbose_str
        if isinstance(extra, str):
            extra = extra.splitlines()
        lines += [printable(x) for x in extra if x is not None]
    if verbose < UNBOUNDED_VERBOSITY:
        lines = _cut(lines, OUTPUT_MAX - 1 - _size(line))
    return Outcome(check.exitcode, "\n".join([line, *lines]) + "\n")


def _size(line: str) -> int:
    """Bytes of `line` and its newline, as written (UTF-8)."""
    return len(line.encode("utf-8", "backslashreplace")) + 1


def _fit(text: str, perfdata: list, limit: int) -> tuple:
    """(`text | perfdata` in at most `limit` bytes, how many perfdata items it kept):
    whole items are left out from the end; text too long alone is cut at a character."""
    encoded = text.encode("utf-8", "backslashreplace")
    if len(encoded) > limit:
        return encoded[:limit].decode("utf-8", "ignore"), 0
    kept = []
    used = len(encoded) + len(" | ")
    for item in perfdata:
        used += len(item.encode("utf-8", "backslashreplace")) + (1 if kept else 0)
        if used > limit:
            break
        kept.append(item)
    return (f"{text} | {' '.join(kept)}" if kept else text), len(kept)


def _cut(lines: list, budget: int) -> list:
    """As many of `lines` as fit in `budget` bytes (newlines included), and a closing
    "... N more lines" when some do not."""
    sizes = [_size(line) for line in lines]
    if sum(sizes) <= budget:
        return lines
    kept, used = 0, 0
    while used + sizes[kept] + _size(f"... {len(lines) - kept - 1} more lines") <= budget:
        used += sizes[kept]
        kept += 1
    return lines[:kept] + [f"... {len(lines) - kept} more lines"]


def execute(check: nagiosplugin.Check, *, verbose: int, timeout: float,
            timeout_state: int = 2, first_line_max: int = FIRST_LINE_MAX) -> int:
    """Run `check` within `timeout` seconds, print its output, return the exit code."""
    name = check.name.upper()
    previous = _arm_alarm(timeout + ALARM_GRACE)
    try:
        check()
        outcome = render(check, verbose, first_line_max=first_line_max)
    except (_LastResortTimeout, DeadlineExceeded) as exc:
        reason = str(exc) if isinstance(exc, DeadlineExceeded) else f"timeout after {timeout:g}s"
        outcome = Outcome(timeout_state,
                          f"{name} {states.word(timeout_state)} - {one_line(reason)}\n")
    except Exception as exc:  # the promise: never a traceback
        outcome = internal_error(name, exc)
    finally:
        _disarm_alarm(previous)
    noise = warningpolicy.take()
    if verbose >= 3 and noise:
        kept = "".join(printable(line, 300) + "\n" for line in noise)
        outcome = outcome._replace(text=outcome.text + kept)
    sys.stdout.write(outcome.text)
    sys.stdout.flush()
    return outcome.exitcode


def internal_error(name: str, exc: Exception) -> Outcome:
    """UNKNOWN, naming the exception in one line: a fault of the plugin, not of the target."""
    return Outcome(3, f"{name} UNKNOWN - internal error: "
                      f"{one_line(type(exc).__name__ + ': ' + str(exc))}\n")


def run(check: nagiosplugin.Check, options) -> int:
    """execute() with the family's common options: -v, -t, --unreachable-state and
    --perfdata-per-endpoint (a longer status line; cli.add_perfdata_option).
    """
    per_endpoint = getattr(options, "perfdata_per_endpoint", False)
    return execute(check, verbose=options.verbose, timeout=options.timeout,
                   timeout_state=states.exit_code(options.unreachable_state),
                   first_line_max=PER_ENDPOINT_LINE_MAX if per_endpoint else FIRST_LINE_MAX)


def plugin_main(argv, build_parser, options_from, build_check, mode=None) -> int:
    """A plugin's main(): parse, turn the arguments into Options (a str is a usage
    error), build the Check against one deadline of -t, run it.

    `mode(parser, args)` runs first: an exit status ends the run there (a set-up
    mode of the plugin, not a check), None goes on with the check."""
    from check_smtp_posture.deadline import Deadline
    from check_smtp_posture.nagios import cli

    parser = build_parser()
    args = cli.parse(parser, argv)
    if isinstance(args, int):
        return args
    status = mode(parser, args) if mode is not None else None
    if status is not None:
        return status
    options = options_from(args)
    if isinstance(options, str):
        return parser.usage_error(options)
    return run(build_check(options, Deadline(options.timeout)), options)


def entry_points(build_parser, options_from, build_check, mode=None):
    """A plugin's `main(argv=None) -> int` (plugin_main over its parts) and its
    `console_main()` (the console script setup.cfg names: console() over that main)."""
    def main(argv=None) -> int:
        return plugin_main(argv, build_parser, options_from, build_check, mode)

    def console_main() -> None:
        console(main)

    return main, console_main


def _arm_alarm(seconds: float):
    if not hasattr(signal, "setitimer"):
        return None
    try:
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
    except ValueError:  # not the main thread (e.g. called from a test worker)
        return None
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return previous


def _disarm_alarm(previous) -> None:
    if previous is None:
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def _raise_timeout(signum, frame):
    raise _LastResortTimeout()


def console(main) -> None:
    """The console script: run `main()` and exit with its status.

    Whatever the locale's encoding, a character the output cannot carry (say,
    an undecodable byte of an argument echoed in a usage error) is written
    escaped instead of ending the run in a traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a text file of io's kind
            pass
    try:
        status = main()
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        # The reader went away (`| head -1`): nothing left to tell, and Python's
        # flush at exit must not print a traceback either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = states.exit_code("unknown")
    except Exception as exc:
        # A fault outside execute(), while the arguments become a Check: the status
        # line still comes first, named after the script (check_smtp_phases: SMTP_PHASES).
        script = os.path.basename(sys.argv[0] or "check_plugin")
        name = script.removesuffix(".py").removeprefix("check_").upper()
        outcome = internal_error(name, exc)
        sys.stdout.write(outcome.text)
        sys.stdout.flush()
        status = outcome.exitcode
    if isinstance(status, int):
        # Everything is said and written (the state file closed in its `with`): leave
        # without the interpreter's teardown, which frees every object and module one
        # by one, 10 to 20 ms of CPU per run once dnspython is loaded; and without
        # waiting for a probe thread the deadline has given up on.
        os._exit(status)
    sys.exit(status)

