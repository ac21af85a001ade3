#!/usr/bin/env bash
# real-data.sh measures the real-data path of issue 13 in one run, on the
# default corpus (the Go standard library source that `trainer prepare`
# reads without --input) and a Parquet copy of it (scripts/parquet-corpus):
#   a. prepare with a 32768-token BPE, one worker, text and Parquet input,
#      in MB per CPU-second, against the Hugging Face library's batch encode
#      (node, one thread) of the same documents with the same tokenizer;
#   b. `trainer tokenizer train` against the Hugging Face trainer (its node
#      binding trains only to its default vocabulary of 30000: both at
#      30000, ours at 32768 too);
#   c. prepare tokens per CPU-second against the training tokens/s of the
#      demo model (4 layers, d 128, 4 heads, batch 24, seq 128, --threads 1);
#   d. the demo model trained for STEPS steps on the first MB MiB of the
#      corpus with the byte-level and with the 32k BPE tokenizer (one node,
#      `trainer train --min-nodes 1 --threads 1`), then `trainer eval` of both
#      on the whole validation split (the same documents: the split is
#      decided by document key), ELBO in nats/token and bits per byte.
# Trainings run under nice -n 5, one at a time. Results go to W/results.txt.
#
# Knobs (environment): W (work dir, /tmp/real-data), STEPS (600), MB (24),
# STAGES (default "corpus tok prep hf train eval"), HFTOK (node_modules of
# the npm package tokenizers 0.23.x), TRAINER (built from this tree if unset).
set -euo pipefail
W=${W:-/tmp/real-data}
STEPS=${STEPS:-600}
MB=${MB:-24}
STAGES=${STAGES:-corpus tok prep hf train eval}
HFTOK=${HFTOK:-/tmp/hftok/node_modules}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mkdir -p "$W"
R="$W/results.txt"
T=${TRAINER:-$W/trainer}
if [ -z "${TRAINER:-}" ]; then (cd "$repo" && go build -o "$W/trainer" ./cmd/trainer); fi
has() { [[ " $STAGES " == *" $1 "* ]]; }
say() { echo "$*" | tee -a "$R"; }
# cpu CMD...: runs CMD under /usr/bin/time, appends "cpu U S wall E" to $W/time.
cpu() { /usr/bin/time -f 'cpu %U %S wall %e maxrss_kb %M' -o "$W/time" "$@"; cat "$W/time"; }
secs() { awk '{print $2 + $3}' "$W/time"; }
wall() { awk '{print $5}' "$W/time"; }

say "== real-data.sh $(date -u +%FT%TZ) $(git -C "$repo" rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
if has corpus; then
	go run "$repo/scripts/parquet-corpus" -out "$W/corpus"
	ls -l "$W/corpus" | tee -a "$R"
fi
if has tok; then
	say "-- b. tokenizer training on the default corpus"
	for v in 30000 32768; do
		cpu "$T" --log-level warn tokenizer train --vocab $v --out "$W/ours$v.json"
		say "ours train vocab $v: $(secs) CPU-s, $(wall) s wall"
	done
	# The HF trainer reads files; give it the same documents, one file each.
	rm -rf "$W/docs" && mkdir "$W/docs"
	node -e '
		const fs = require("fs"); const [, jl, dir] = process.argv; let i = 0;
		for (const l of fs.readFileSync(jl, "utf8").split("\n")) if (l) fs.writeFileSync(`${dir}/${String(i++).padStart(6, "0")}.txt`, JSON.parse(l).text);
	' "$W/corpus/corpus.jsonl" "$W/docs"
	NODE_PATH=$HFTOK node "$here/bench-hf.js" train "$W/ours30000.json" "$W/docs" "$W/hf30000.json" | tee -a "$R"
fi
if has prep; then
	say "-- a/c. prepare with the 32768 BPE, one worker"
	for in in text parquet; do
		args=()
		[ $in = parquet ] && args=(--input "$W/corpus/corpus.parquet")
		rm -rf "$W/prep-$in"
		GOMAXPROCS=1 cpu "$T" --log-level info prepare --tokenizer "$W/ours32768.json" --workers 1 \
			"${args[@]}" --out "$W/prep-$in" --progress=false >"$W/prep-$in.log" 2>&1
		toks=$(grep -o ' tokens=[0-9]*' "$W/prep-$in.log" | tail -n 1 | cut -d= -f2)
		say "ours prepare $in: $(secs) CPU-s, $(wall) s wall, $toks tokens: $(grep '^prepared' "$W/prep-$in.log")"
		mb=$(grep -o 'from [0-9.]* MB' "$W/prep-$in.log" | cut -d' ' -f2)
		say "  = $(awk -v t="$toks" -v m="$mb" -v c="$(secs)" 'BEGIN { printf "%.2f MB per CPU-s, %.0f tokens per CPU-s", m / c, t / c }')"
	done
fi
if has hf; then
	say "-- a. Hugging Face batch encode, one thread, same documents"
	RAYON_NUM_THREADS=1 NODE_PATH=$HFTOK node "$here/bench-hf.js" encode "$W/ours32768.json" "$W/corpus/corpus.jsonl" | tee -a "$R"
fi
if has train; then
	say "-- c/d. the demo model, one node, --threads 1, $STEPS steps, first $MB MiB"
	for tk in bytes bpe; do
		targs=()
		[ $tk = bpe ] && targs=(--tokenizer "$W/ours32768.json")
		if [ ! -f "$W/demo-$tk/manifest.json" ]; then
			"$T" --log-level warn prepare "${targs[@]}" --out "$W/demo-$tk" --seq-len 128 --max-mb "$MB" --progress=false
		fi
		rm -rf "$W/run-$tk"
		cpu nice -n 5 "$T" --log-level warn train --data "$W/demo-$tk" --run-dir "$W/run-$tk" --layers 4 --dim 128 \
			--heads 4 --batch 24 --steps "$STEPS" --warmup 30 --lr 0.5 --noise masked --min-nodes 1 --threads 1 \
			--codec none --checkpoint-every 100 --log-every 25 --progress none \
			--bind 127.0.0.1:28940 --grpc 127.0.0.1:28941 --metrics-addr ""
		say "train $tk: $(wall) s wall, $(secs) CPU-s; $(jq -c '{vocab, seq_len}' "$W/demo-$tk/manifest.json")"
		tail -n 1 "$W/run-$tk/metrics.jsonl" | tee -a "$R"
	done
fi
if has eval; then
	say "-- d. eval on the whole validation split"
	for tk in bytes bpe; do
		n=$(jq '[.shards[] | select(.split == "val") | .sequences] | add' "$W/demo-$tk/manifest.json")
		say "eval $tk ($n val sequences):"
		nice -n 5 "$T" --log-level warn eval --checkpoint "$W/run-$tk/checkpoints" --data "$W/demo-$tk" \
			--samples "$n" --likelihood-samples 16 --threads 1 | tee -a "$R"
	done
fi
say "== done $(date -u +%FT%TZ)"
