"""The defaults the man pages state are the defaults the plugins have.

Each option item of a page (a ``.TP`` tag naming options, in OPTIONS of a
check_*.1 page, in COMMON OPTIONS of check_smtp_posture.7) that says
``(default V)``, ``(default: V)``, ``(defaults V and W)`` (for the tag's options
in turn) or ``V (default)`` is compared with the default of that option in the
plugin's build_parser(). Where check_smtp_posture(7) gives several values, each
is ``V in check_a, check_b``; a value with no plugins named is every plugin's
that has the option. A default the parser leaves to the run (None: "half of
-t", "this host's fully qualified name") has nothing to compare with.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.faultmatrix import PLUGINS

MAN = Path(__file__).resolve().parents[1] / "man"
OVERVIEW = MAN / "check_smtp_posture.7"


def plain(roff: str) -> str:
    """Roff source as the reader sees the words: no font escapes, no quotes."""
    text = re.sub(r"\\f[BIRP]|\\&|\\%", "", roff)
    text = text.replace("\\-", "-").replace("\\~", " ").replace("\\(mu", "x")
    text = re.sub(r"^\.(?:BR|BI|IR|IB|B|I)\s+", "", text, flags=re.M).replace('"', "")
    return " ".join(text.split())


def section(text: str, name: str) -> str:
    match = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH |\Z)", text, re.S | re.M)
    assert match, f"no {name} section"
    return match.group(1)


def items(text: str):
    """(option strings of the tag, plain body) of each .TP item of `text`."""
    for block in re.split(r"^\.TP\n", text, flags=re.M)[1:]:
        lines = block.split("\n")
        tags = [lines[0]]
        rest = lines[1:]
        while rest[:1] == [".TQ"]:
            tags.append(rest[1])
            rest = rest[2:]
        body = "\n".join(line for line in rest if not line.startswith((".SS", ".PP")))
        options = re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", plain("\n".join(tags)))
        yield options, plain(body)


def stated(body: str) -> list[str]:
    """The default values a body states, in the order of the tag's options."""
    match = re.search(r"\(defaults?:? ([^)]*)\)?", body)
    if match:
        text = match.group(1)
        if match.group(0).startswith("(defaults"):
            return re.findall(r"(\S+?)(?:,)? (?:and|or) (\S+)", text)[0] if " and " in text \
                else [text.split()[0]]
        return [text.split()[0]]
    match = re.search(r"(\S+) \(default\)", body)
    return [match.group(1)] if match else []


def per_plugin(body: str) -> list[tuple[str, tuple[str, ...]]]:
    """check_smtp_posture(7)'s values: (value, plugins it names -- none: all)."""
    match = re.search(r"\(default:? ([^)]*)\)", body)
    if not match:
        return [(value, ()) for value in stated(body)]
    parts = match.group(1).split("; ")
    values = [(parts[0].split()[0], tuple(re.findall(r"check_\w+", parts[0])))]
    for part in parts[1:]:
        if re.match(r"\S+ in check_", part):
            values.append((part.split()[0], tuple(re.findall(r"check_\w+", part))))
    return values


def parser_default(script: str, option: str):
    parser = importlib.import_module(f"check_smtp_posture.plugins.{script}").build_parser()
    action = parser._option_string_actions.get(option)
    return (action.default if action else None), action is not None


def agrees(value: str, default) -> bool:
    bare = value.rstrip(",;.:")
    if isinstance(default, bool):
        return False
    if isinstance(default, (int, float)):
        try:
            return float(bare) == float(default)
        except ValueError:
            return False
    # the value as written, or without the punctuation of the sentence around it
    return str(default).lower() in {v.lower() for v in (value, value[:-1], bare)}


def claims(script: str, text: str):
    """(option, value) of every default an OPTIONS section states."""
    for options, body in items(section(text, "OPTIONS")):
        values = stated(body)
        known = []
        for option in options:
            default, exists = parser_default(script, option)
            if exists and option.startswith("--"):
                known.append(option)
        for option, value in zip(known if len(values) > 1 else known[:1], values):
            yield option, value


def comparable(default) -> bool:
    return default is not None and default is not False and default != []


@pytest.mark.parametrize("script", PLUGINS)
def test_plugin_page_states_the_parser_defaults(script):
    text = (MAN / f"{script}.1").read_text()
    wrong = []
    checked = 0
    for option, value in claims(script, text):
        default, _ = parser_default(script, option)
        if not comparable(default):
            continue
        checked += 1
        if not agrees(value, default):
            wrong.append(f"{option}: the page says {value!r}, the parser has {default!r}")
    assert not wrong, f"man/{script}.1: " + "; ".join(wrong)
    assert checked, f"man/{script}.1 states no default the test could read"


def test_overview_states_each_plugins_defaults():
    wrong = []
    checked = set()
    for options, body in items(section(OVERVIEW.read_text(), "COMMON OPTIONS")):
        longs = [o for o in options if o.startswith("--")]
        if not longs:
            continue
        values = per_plugin(body)
        named_all = {script for _, named in values for script in named}
        if named_all:  # values per plugin: every plugin with a default has one
            missing = [s for s in PLUGINS if s not in named_all
                       and comparable(parser_default(s, longs[0])[0])]
            assert not missing, f"{longs[0]}: no default stated for {missing}"
        for value, named in values:
            for script in named or PLUGINS:
                default, exists = parser_default(script, longs[0])
                if not exists or not comparable(default):
                    assert not named, f"{longs[0]}: {script} has no default to state"
                    continue
                checked.add(longs[0])
                if not agrees(value, default):
                    wrong.append(f"{longs[0]} in {script}: the page says {value!r}, "
                                 f"the parser has {default!r}")
    assert not wrong, "man/check_smtp_posture.7: " + "; ".join(wrong)
    assert {"--timeout", "--concurrency", "--unreachable-state"} <= checked
