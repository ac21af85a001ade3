#!/usr/bin/env bash
# The long chaos run: 3 trainer processes, CHAOS_EVENTS random kill -9 /
# restart events (coordinator and seed included, same or new address,
# conflicting joiners) and CHAOS_PARTITIONS partitions (one member cut off
# from the other two for a few seconds, then healed) at random moments,
# spread over CHAOS_MINUTES minutes, then the checks of package chaos (every
# sample once per step, no step skipped or repeated, equal losses,
# checksums, no member trains alone, final checkpoint loads) and a summary
# of recovery and rejoin times. With partitions (the default as root) each
# member runs in its own network namespace; CHAOS_PARTITIONS=0 runs on
# 127.0.0.1. `make test` runs short versions (TestChaos, TestChaosPartitions).
#
#   scripts/chaos.sh                       # 100 kills and 20 partitions over 30 minutes
#   CHAOS_EVENTS=20 CHAOS_PARTITIONS=0 CHAOS_MINUTES=5 scripts/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_EVENTS=${CHAOS_EVENTS:-100}
export CHAOS_MINUTES=${CHAOS_MINUTES:-30}
if [ "$(id -u)" = 0 ]; then
	export CHAOS_PARTITIONS=${CHAOS_PARTITIONS:-20}
else
	export CHAOS_PARTITIONS=${CHAOS_PARTITIONS:-0}
fi
export CHAOS_SEED=${CHAOS_SEED:-$(date +%s)}
timeout=$((CHAOS_MINUTES * 2 + 20))m
echo "== chaos: $CHAOS_EVENTS kills and $CHAOS_PARTITIONS partitions over $CHAOS_MINUTES minutes, seed $CHAOS_SEED"
go test -count=1 -timeout "$timeout" -run '^TestChaosLong$' -v ./chaos/ 2>&1 | tee "${CHAOS_LOG:-chaos.log}" |
	grep -E 'event [0-9]+/|summary:|checked|--- |^(ok|FAIL)' || true
grep -q -- '--- PASS: TestChaosLong' "${CHAOS_LOG:-chaos.log}"
