"""The four Nagios states by name: what options accept and what the status line says.

One table for the family, so `--unreachable-state warning` means the same in
every plugin and the runner prints the same word the Contexts decided.
"""

from __future__ import annotations

#: option values, in exit-code order (0 OK .. 3 UNKNOWN)
NAMES = ("ok", "warning", "critical", "unknown")
#: states an option about a failure may choose: "ok" would hide the failure
FAILURE_NAMES = ("warning", "critical", "unknown")


def exit_code(name: str) -> int:
    """0..3 for an option value ("ok" .. "unknown")."""
    return NAMES.index(name)


def word(code: int) -> str:
    """The status-line word for an exit code: OK, WARNING, CRITICAL, UNKNOWN."""
    return NAMES[code].upper()


def failure_state(kind: str, unreachable: str):
    """The state of a connection that failed with `kind` (failures.py), whatever the protocol.

    Not reached, or no answer in time: `unreachable` (--unreachable-state). Options
    that do not fit the connection: UNKNOWN. Anything else the peer did: CRITICAL.
    """
    from check_smtp_posture import failures

    if kind in failures.UNREACHED:
        return state(unreachable)
    return state("unknown" if kind == failures.USAGE else "critical")


def state(name: str):
    """The nagiosplugin state object for an option value."""
    from nagiosplugin.state import Critical, Ok, Unknown, Warn

    return (Ok, Warn, Critical, Unknown)[exit_code(name)]
