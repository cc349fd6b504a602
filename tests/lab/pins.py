"""The project's two version sets, read from its own files (README, "Dependencies").

- constraints.txt, the known-good set: every runtime and test dependency at the
  version the suite last passed with; `python3 -m tests.lab.pins freeze PIP` writes
  it from what an environment holds.
- the floors: setup.cfg's `install_requires` lower bounds, each installed exactly
  (`python3 -m tests.lab.pins floors`), with the test tools of the known-good set.

Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEADER = """\
# The known-good set: every runtime and test dependency at the version the suite last
# passed with. Installed by tests/lab/install-deps.sh (make demo, make test, CI) and
# make install-nagios-plugins; moved only by `make deps-latest` (README, "Dependencies").
"""


def _name(requirement: str) -> str:
    """The normalised project name of a requirement line (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def runtime_floors() -> dict[str, str]:
    """name -> lowest version, from setup.cfg's install_requires (each must say `>=`)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    floors = {}
    for line in config["options"]["install_requires"].strip().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9._-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", line)
        if not match:
            raise SystemExit(f"setup.cfg: install_requires line without a floor: {line!r}")
        floors[match.group(1)] = match.group(2)
    return floors


def floor_constraints(known_good: Path) -> str:
    """Constraints for the floor run: the floors exactly, the rest as in `known_good`."""
    floors = runtime_floors()
    runtime = {_name(n) for n in floors}
    kept = [line for line in known_good.read_text().splitlines()
            if line.strip() and not line.startswith("#") and _name(line) not in runtime]
    return "".join(f"{n}=={v}\n" for n, v in floors.items()) + "".join(f"{ln}\n" for ln in kept)


def freeze(pip: str) -> str:
    """The known-good set as `pip freeze` of the environment of `pip` shows it."""
    listed = subprocess.run([pip, "freeze", "--exclude-editable", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in listed.splitlines()
             if ln.strip() and _name(ln) != "check-smtp-posture" and " @ " not in ln]
    return HEADER + "".join(f"{ln}\n" for ln in sorted(lines, key=str.lower))


def main(argv: list[str]) -> int:
    if argv[:1] == ["floors"] and len(argv) <= 2:
        sys.stdout.write(floor_constraints(Path(argv[1]) if len(argv) == 2
                                           else ROOT / "constraints.txt"))
        return 0
    if argv[:1] == ["freeze"] and len(argv) == 2:
        sys.stdout.write(freeze(argv[1]))
        return 0
    print("usage: python3 -m tests.lab.pins floors [CONSTRAINTS] | freeze PIP", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
