"""check_smtp_phases never reports OK on a server that did not say OK: a greeting that
is not 220, a refused RSET, and arguments that used to slip through or crash."""

from __future__ import annotations

import pytest

from check_smtp_posture.plugins.check_smtp_phases import main
from tests.conftest import run_main


def run(server, *argv):
    return run_main(main, ["-H", server.host, "-p", server.port, "-t", "3", *argv])


@pytest.mark.parametrize("banner", ["250 fake.posture.test ESMTP", "221 fake.posture.test bye"])
def test_a_banner_other_than_220_is_critical(fake_smtp, banner):
    server = fake_smtp({"banner": banner})
    result = run(server, "--to", "p@posture.test")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(f"SMTP_PHASES CRITICAL - {server.host} banner: {banner}")
    assert server.wait_ended()
    assert "MAIL" not in server.commands


@pytest.mark.parametrize("reply, state, word", [
    ("452 4.3.1 Insufficient system storage", 1, "WARNING"),
    ("503 5.5.1 Error: nested MAIL command", 2, "CRITICAL"),
])
def test_a_refused_rset_is_judged(fake_smtp, reply, state, word):
    server = fake_smtp({"RSET": reply})
    result = run(server, "--to", "p@posture.test")
    assert result.exitcode == state, result.output
    assert result.first_line.startswith(f"SMTP_PHASES {word} - {server.host} rset: {reply}")


@pytest.mark.parametrize("argv, message", [
    (["-t", "1e11"], "argument -t/--timeout: must be at most 86400 seconds: '1e11'"),
    (["--command", "NOOP\r\nDATA"],
     "argument --command: a line break or NUL in a command line: 'NOOP\\r\\nDATA'"),
    (["--command", " "], "argument --command: an empty command line"),
    (["--payload-file", ""], "--payload/--payload-file need --send-data"),
])
def test_arguments_that_slipped_through_are_usage_errors(argv, message):
    result = run_main(main, ["-H", "127.0.27.1", *argv])
    assert result.exitcode == 3, result.output
    assert f"check_smtp_phases: error: {message}\n" in result.output


def test_an_empty_payload_file_name_is_not_the_default_message():
    result = run_main(main, ["-H", "127.0.27.1", "--to", "p@posture.test", "--send-data",
                             "--payload-file", ""])
    assert result.exitcode == 3, result.output
    assert "check_smtp_phases: error: --payload-file: empty payload file name\n" \
        in result.output
