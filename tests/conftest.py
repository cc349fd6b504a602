"""Shared pytest fixtures: plugin runner helpers and the lab."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass

import pytest


@dataclass
class PluginRun:
    exitcode: int
    output: str

    @property
    def first_line(self) -> str:
        return self.output.splitlines()[0] if self.output else ""

    @property
    def perfdata(self) -> dict[str, str]:
        """label -> value[UOM] from the first line's perfdata."""
        _, _, perf = self.first_line.partition(" | ")
        result = {}
        for item in perf.split():
            label, _, rest = item.partition("=")
            result[label.strip("'")] = rest.split(";")[0]
        return result


def run_main(main, argv) -> PluginRun:
    """Call a plugin's main(argv) in-process and capture what it prints."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main([str(a) for a in argv])
    return PluginRun(code, buf.getvalue())


@pytest.fixture
def run_plugin():
    return run_main


def pytest_report_header(config):
    return f"python: {sys.executable}"
