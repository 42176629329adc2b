#!/usr/bin/env bash
# Runs the sweep's fault matrix (tests/test_faults.py, tests/test_resources.py) N times in a row and prints one row
# per round: passed/failed, wall time, its slowest test, and Ray processes left behind. A hang cannot hold it: each
# test has pytest-timeout's limit (pyproject.toml) and each round ROUND_LIMIT_S.
#
#   scripts/soak_faults.sh [N=5]        (after `make setup`; logs in outputs/soak/)
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
ROUND_LIMIT_S=${ROUND_LIMIT_S:-1800}
LOGS=outputs/soak/$(date +%Y%m%d-%H%M%S)
mkdir -p "$LOGS"
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_faults.py tests/test_resources.py)

ray_processes() { pgrep -c -f 'ray/core/src/ray/(raylet|gcs)' || true; }

printf '| round | result | wall s | slowest test | Ray processes left |\n|---|---|---|---|---|\n'
passes=0 failures=0 slowest_round=0 slowest_s=0
for round in $(seq 1 "$ROUNDS"); do
    log="$LOGS/round-$round.log"
    started=$(date +%s)
    timeout --signal=INT --kill-after=60 "$ROUND_LIMIT_S" "${PYTEST[@]}" >"$log" 2>&1
    status=$?
    wall=$(( $(date +%s) - started ))
    summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$log" | tail -1 | tr -d '=' | xargs)
    slow=$(grep -E '^[0-9.]+s call' "$log" | head -1 | awk '{print $1, $3}' | sed 's#tests/##')
    if [ "$status" -eq 0 ]; then result="pass ($summary)"; passes=$((passes + 1))
    elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then  # timeout's own, or its SIGKILL after --kill-after
        result="HANG (round over ${ROUND_LIMIT_S} s)"; failures=$((failures + 1))
    else result="FAIL ($summary)"; failures=$((failures + 1)); fi
    if [ "$wall" -gt "$slowest_s" ]; then slowest_s=$wall; slowest_round=$round; fi
    printf '| %s | %s | %s | %s | %s |\n' "$round" "$result" "$wall" "$slow" "$(ray_processes)"
done
echo
echo "$passes passed, $failures failed of $ROUNDS rounds; slowest: round $slowest_round, ${slowest_s} s; logs in $LOGS"
[ "$failures" -eq 0 ]
