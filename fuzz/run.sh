#!/usr/bin/env bash
# Run every atheris target in fuzz/ for a fixed time budget.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   targets to run (default: "reply spf")
#   PYTHON         interpreter (default python3)
#   FUZZ_ARGS      extra libFuzzer flags, e.g. "-seed=1 -jobs=2"
#
# The committed corpus fuzz/corpus/<target>/ is a read-only seed: libFuzzer
# writes new units to the FIRST corpus directory it is given, so that is the
# scratch dir fuzz/corpus-new/<target>/. Crash/timeout inputs go to
# fuzz/findings/, logs to fuzz/findings/<target>.log; fuzz/<target>.dict, when
# there is one, gives libFuzzer the protocol's tokens. Exit status: 0 when no
# target found anything, 1 otherwise.
set -u

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-reply spf}

case $seconds in
    ''|*[!0-9]*|0) echo "FUZZ_SECONDS must be a positive whole number, not '$seconds'" >&2; exit 2 ;;
esac

# the longest reply line the reader accepts is 8192 bytes: let inputs go past it
declare -A max_len=([reply]=20000 [spf]=8192)

mkdir -p "$here/findings"
status=0
for target in $targets; do
    script=$here/fuzz_$target.py
    if [ ! -f "$script" ]; then
        echo "fuzz: no target $script" >&2
        status=1
        continue
    fi
    new=$here/corpus-new/$target
    log=$here/findings/$target.log
    mkdir -p "$new"
    dict=
    [ -f "$here/$target.dict" ] && dict=$here/$target.dict
    # -timeout: one input running 10 s is a hang, reported like a crash
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    "$python" "$script" \
        -max_total_time="$seconds" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -max_len="${max_len[$target]:-4096}" \
        -print_final_stats=1 \
        -artifact_prefix="$here/findings/$target-" \
        ${dict:+"-dict=$dict"} \
        ${FUZZ_ARGS:-} \
        "$new" "$here/corpus/$target" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        verdict="no finding"
    else
        status=1
        artifact=$(sed -n "s/.*Test unit written to //p" "$log" | tail -n 1)
        if [ -n "$artifact" ]; then
            verdict="FINDING (exit $rc): $artifact"
        else
            verdict="FAILED (exit $rc, no artifact; see the log)"
        fi
    fi
    printf '%-6s budget %ss: %s executions, %s new corpus units, %s\n' \
        "$target" "$seconds" "${execs:-?}" "${added:-?}" "$verdict"
    if [ "$rc" -ne 0 ]; then
        # the Python traceback (or libFuzzer's reason), so the finding is readable here
        sed -n '/=== Uncaught Python exception/,/^SUMMARY/p; /ERROR: libFuzzer: timeout/,/^SUMMARY/p' \
            "$log" | head -n 40 | sed 's/^/    /'
        echo "    log: $log"
        echo "    reproduce: $python $script $artifact"
    fi
done
exit $status
