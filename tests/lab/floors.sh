#!/usr/bin/env bash
# The floors of setup.cfg's install_requires, tested (README, "Dependencies"): a
# virtualenv holding exactly those versions, and the test tools of the known-good set,
# runs the tests that run the plugins. Part of `make test`.
#
# The virtualenv is kept between runs, in the cache folder, keyed by the constraints it
# was built from and the interpreter, so an unchanged set costs no download; only this tree is installed
# into it again (editable, without dependencies), which takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
CACHE=${FLOORS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/check_smtp_posture}

mkdir -p "$CACHE"
wanted=$(mktemp)
trap 'rm -f "$wanted"' EXIT
"$PY" -m tests.lab.pins floors "$CONSTRAINTS" > "$wanted"
key=$({ cat "$wanted"; "$PY" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
VENV="$CACHE/floors-$key"

(
    flock 9
    if [ ! -f "$VENV/.complete" ]; then
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
        cp "$wanted" "$VENV/constraints.txt"
        "$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints.txt" -e '.[test,oauth]'
        touch "$VENV/.complete"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
) 9> "$CACHE/floors.lock"

echo "floors: $(tr '\n' ' ' < "$VENV/constraints.txt" | grep -oE '^([^ ]+ ){5}')"
# What the floors can change: the plugins' DNS, TLS, IMAP/POP3 and Authentication-Results
# paths and nagiosplugin's contexts. Left out: the Icinga 2, Nagios Core, NRPE and
# Graphite tests (they run the plugins of /opt/check_smtp_posture, the known-good set),
# the lab's own tests, the checks of the man pages and the import layers, and the
# tests of code that uses no dependency: the SMTP dialogue's failures over plain sockets
# (mostly waits for a deadline), the fuzz corpus, the property tests, the Received
# parser, the generated fault-matrix documentation, the import budget.
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --ignore=tests/test_icinga_daemon.py --ignore=tests/test_nrpe.py \
    --ignore=tests/test_icinga_conf.py --ignore=tests/test_fuzz_corpus.py \
    --ignore=tests/test_properties.py --ignore=tests/test_received.py \
    --ignore=tests/test_fault_matrix_doc.py --ignore=tests/test_import_budget.py \
    --ignore=tests/test_lab.py --ignore=tests/test_faults_smtp.py \
    --ignore=tests/test_smtp_phases_failures.py --ignore=tests/test_nagios_daemon.py \
    --ignore=tests/test_nagios_conf.py --ignore=tests/test_graphite.py \
    --ignore=tests/test_man_defaults.py --ignore=tests/test_layers.py "$@"
