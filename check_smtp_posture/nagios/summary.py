"""The family's Summary: how every plugin phrases its first line and long output.

Rules, the same in every plugin:

- OK: the plugin's headline, then what the user asked for by an option (the
  "answers": check_host() for `--ip`, say), then the notes of OK results.
- Not OK: the answers first, then the hints of the non-OK results, worst
  state first, each once, at most `HINT_CAP` of them and "(+N more)". The
  answer to the question the user asked is never hidden behind a finding.
- Long output (-v): every non-OK hint, one per line, then the plugin's
  details; the verbosity comes in through the constructor, nowhere else.
"""

from __future__ import annotations

import nagiosplugin
from nagiosplugin.state import Ok

#: hints the status line shows before "(+N more)"
HINT_CAP = 3


def worst_first(results, *, skip=(), cap: int = HINT_CAP) -> list:
    """Hints of the non-OK results, worst state first, each once; the last says "(+N more)"."""
    bad = sorted((r for r in results if r.state != Ok and r.hint),
                 key=lambda r: -int(r.state))
    return capped([h for h in dict.fromkeys(str(r.hint) for r in bad) if h not in skip], cap)


def capped(items: list, cap: int = HINT_CAP) -> list:
    """The first `cap` items, and "(+N more)" for the rest: a status line stays short."""
    if len(items) > cap:
        return items[:cap] + [f"(+{len(items) - cap} more)"]
    return items


class FamilySummary(nagiosplugin.Summary):
    """Subclasses say what is theirs: `headline`, `answers`, `details`."""

    def __init__(self, verbosity: int = 0):
        self.verbosity = verbosity

    def headline(self, results) -> str:
        """The OK status line's own text."""
        return ""

    def answers(self, results) -> list:
        """What the user asked by an option; always in the first line."""
        return []

    def details(self, results) -> list:
        """Long output lines after the non-OK hints."""
        return []

    def ok(self, results):
        answers = self.answers(results)
        notes = [str(r.hint) for r in results if r.state == Ok and r.hint]
        parts = [self.headline(results)] + answers + notes
        return "; ".join(dict.fromkeys(p for p in parts if p)) or "nothing to check"

    def problem(self, results):
        answers = self.answers(results)
        hints = worst_first(results, skip=answers)
        if not answers and not hints:
            return str(results.first_significant)
        return "; ".join(answers + hints)

    def verbose(self, results):
        lines = [f"{str(r.state).lower()}: {r.hint}" for r in results
                 if r.state != Ok and r.hint]
        return lines + self.details(results)


class ResourceSummary(FamilySummary):
    """A FamilySummary phrasing what its Resource found (`self.resource`, which carries the
    run's Options as `.options`), at the verbosity of those Options."""

    def __init__(self, resource):
        super().__init__(resource.options.verbose)
        self.resource = resource
