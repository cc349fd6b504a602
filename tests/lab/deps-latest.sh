#!/usr/bin/env bash
# `make deps-latest` (README, "Dependencies"): the newest release of every dependency in
# a separate virtualenv, the whole `make test` run with it, and constraints.txt
# rewritten from it only when that passed. The change is then one `git diff` to review.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3}
VENV=.venv-latest
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade -e '.[test]'
"$PY" -m tests.lab.pins freeze "$VENV/bin/pip" > "$VENV/constraints.txt"
echo "candidate set:"; grep -v '^#' "$VENV/constraints.txt" | sed 's/^/  /'

if make --no-print-directory test PYTHON="$VENV/bin/python" CONSTRAINTS="$VENV/constraints.txt"
then
    cp "$VENV/constraints.txt" constraints.txt
    echo "the suite passed on the newest versions: constraints.txt rewritten; review and commit it"
else
    # /opt/check_smtp_posture holds the candidate set now: have the next install put
    # the known-good set back.
    rm -f "${NAGIOS_PREFIX:-/opt/check_smtp_posture}/.installed"
    echo "the suite failed on the newest versions: constraints.txt unchanged" >&2
    exit 1
fi
