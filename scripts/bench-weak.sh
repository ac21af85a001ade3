#!/bin/bash
# Weak scaling on loopback: 8 sequences per node, 1 thread per node, L4-d128 seq128,
# 1, 2 and 4 nodes; prints tokens/s per node and the communication share of a step.
# Needs `make build` and a dataset of 128-token sequences: DATA=dir (default demo/data,
# made by `make demo` or `bin/trainer prepare --out demo/data --seq-len 128 --max-mb 24`).
set -u
cd "$(dirname "$0")/.."
T=$PWD/bin/trainer
DATA=$(realpath "${DATA:-demo/data}")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
for n in 1 2 4; do
	rm -rf ws*
	B=$((8 * n)); P=19100
	"$T" train --data "$DATA" --layers 4 --dim 128 --heads 4 --batch $B --steps 40 --warmup 5 --run-dir ws0 --min-nodes $n \
		--bind 127.0.0.1:$P --grpc 127.0.0.1:$((P + 1)) --metrics-addr 127.0.0.1:$((P + 2)) --threads 1 --progress none \
		--checkpoint-every 0 >ws0.log 2>&1 &
	pids=($!)
	sleep 1
	for i in $(seq 1 $((n - 1))); do
		"$T" join --seed 127.0.0.1:$P --bind 127.0.0.1:$((P + 10 * i)) --grpc 127.0.0.1:$((P + 10 * i + 1)) \
			--metrics-addr 127.0.0.1:$((P + 10 * i + 2)) --run-dir ws$i --threads 1 --progress none >ws$i.log 2>&1 &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	python3 - "$n" <<'PY'
import json, sys
n = int(sys.argv[1])
recs = [json.loads(l) for l in open('ws0/metrics.jsonl')]
recs = [r for r in recs if r['members'] == n][10:]
tps = sum(r['tokens'] for r in recs) / sum(r['step_s'] for r in recs)
comm = sum(r['comm_s'] for r in recs) / sum(r['step_s'] for r in recs)
print(f"nodes {n}: {tps:.0f} tokens/s total, {tps/n:.0f} per node, comm share {comm*100:.1f}% ({len(recs)} steps)")
PY
done
