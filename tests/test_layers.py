"""The layers ARCHITECTURE.md describes, held by the imports themselves."""

import ast
import pathlib

import check_smtp_posture

PACKAGE = pathlib.Path(check_smtp_posture.__file__).parent


def imported_modules(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(under: str = "") -> list[pathlib.Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


def relative(path: pathlib.Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_only_the_plugin_contract_and_the_plugins_import_nagiosplugin():
    importers = {relative(p) for p in modules()
                 if any(m.split(".")[0] == "nagiosplugin" for m in imported_modules(p))}
    outside = {p for p in importers
               if not p.startswith(("check_smtp_posture/nagios/",
                                    "check_smtp_posture/plugins/"))}
    assert outside == set()
    assert "check_smtp_posture/nagios/contexts.py" in importers  # the test sees imports


def test_libraries_do_not_reach_up_into_the_plugins():
    upward = {relative(p) for p in modules()
              if not relative(p).startswith("check_smtp_posture/plugins/")
              and any(m.startswith("check_smtp_posture.plugins") for m in imported_modules(p))}
    assert upward == set()


def test_the_smtp_library_knows_nothing_of_the_plugin_contract():
    # smtp/, spf/ and mailbox/ speak their protocols; states are decided above them.
    reaching = {relative(p) for d in ("smtp", "spf", "mailbox") for p in modules(d)
                if any(m.startswith("check_smtp_posture.nagios") for m in imported_modules(p))}
    assert reaching == set()
