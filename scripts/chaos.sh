#!/usr/bin/env bash
# The long chaos run: 3 trainer processes on 127.0.0.1, CHAOS_EVENTS random
# kill -9 / restart events (coordinator and seed included, same or new
# address, conflicting joiners) spread over CHAOS_MINUTES minutes, then the
# checks of package chaos (every sample once per step, no step skipped or
# repeated, equal losses, checksums, final checkpoint loads) and a summary
# of recovery and rejoin times. `make test` runs a short version (TestChaos).
#
#   scripts/chaos.sh                       # 100 events over 30 minutes
#   CHAOS_EVENTS=20 CHAOS_MINUTES=5 scripts/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_EVENTS=${CHAOS_EVENTS:-100}
export CHAOS_MINUTES=${CHAOS_MINUTES:-30}
export CHAOS_SEED=${CHAOS_SEED:-$(date +%s)}
timeout=$((CHAOS_MINUTES * 2 + 20))m
echo "== chaos: $CHAOS_EVENTS events over $CHAOS_MINUTES minutes, seed $CHAOS_SEED"
go test -count=1 -timeout "$timeout" -run '^TestChaosLong$' -v ./chaos/ 2>&1 | tee "${CHAOS_LOG:-chaos.log}" |
	grep -E 'event [0-9]+/|summary:|checked|--- |^(ok|FAIL)' || true
grep -q -- '--- PASS: TestChaosLong' "${CHAOS_LOG:-chaos.log}"
