#!/usr/bin/env bash
# make demo: a seed and two joining nodes on 127.0.0.1 train a small GIDD model on
# the default corpus (the Go standard library source), checkpoint, stop, and print
# a sample. Every process it starts is stopped on exit, Ctrl-C included.
#
# Knobs (environment): DEMO_DIR (demo), DEMO_STEPS (600), DEMO_MB (corpus MiB, 24),
# DEMO_PORT (base port, 27940), TRAINER (bin/trainer).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-demo}
STEPS=${DEMO_STEPS:-600}
MB=${DEMO_MB:-24}
P=${DEMO_PORT:-27940}
T=${TRAINER:-bin/trainer}
mkdir -p "$DIR"
pids=()
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 50); do
		alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

if [ ! -f "$DIR/data/manifest.json" ]; then
	echo "== preparing the default corpus (Go standard library source, first ${MB} MiB) into $DIR/data"
	"$T" prepare --out "$DIR/data" --seq-len 128 --max-mb "$MB"
fi
rm -rf "$DIR/node0" "$DIR/node1" "$DIR/node2"
common=(--threads 1 --codec none --checkpoint-every 100 --log-every 25)
echo "== starting the seed (127.0.0.1:$P) and two joiners; logs in $DIR/node*/node.log"
mkdir -p "$DIR/node0" "$DIR/node1" "$DIR/node2"
"$T" train --data "$DIR/data" --run-dir "$DIR/node0" --layers 4 --dim 128 --heads 4 --batch 24 \
	--steps "$STEPS" --warmup 30 --lr 0.5 --noise masked --min-nodes 1 --checkpoint-local \
	--bind 127.0.0.1:$P --grpc 127.0.0.1:$((P + 1)) --metrics-addr 127.0.0.1:$((P + 2)) \
	--progress bar "${common[@]}" 2> >(tee "$DIR/node0/node.log" >&2) &
pids+=($!)
sleep 1
for i in 1 2; do
	"$T" join --seed 127.0.0.1:$P --run-dir "$DIR/node$i" --cache-dir "$DIR/node$i/cache" \
		--bind 127.0.0.1:$((P + 10 * i)) --grpc 127.0.0.1:$((P + 10 * i + 1)) \
		--metrics-addr 127.0.0.1:$((P + 10 * i + 2)) --progress log "${common[@]}" \
		>"$DIR/node$i/node.log" 2>&1 &
	pids+=($!)
done
wait "${pids[0]}"
for pid in "${pids[@]:1}"; do wait "$pid" || true; done
pids=()
echo
echo "== metrics: http://127.0.0.1:$((P + 2))/metrics while running; per-step records in $DIR/node0/metrics.jsonl"
if "$T" plot "$DIR/node0" >/dev/null 2>&1; then
	echo "== plots: $(ls "$DIR"/node0/*.png 2>/dev/null | tr '\n' ' ')"
fi
echo "== checkpoints: $(ls -d "$DIR"/node0/checkpoints/step-* | tr '\n' ' ')"
echo "== sample from the final checkpoint (prompt: 'func main() {'):"
"$T" sample --checkpoint "$DIR/node0/checkpoints" --prompt "func main() {" --steps 64 --completion 96 --sampler ancestral --threads 2 2>/dev/null
echo
echo "== done: logs in $DIR/node{0,1,2}/node.log"
