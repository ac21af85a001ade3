#!/usr/bin/env bash
# bench.sh compares difftrain's tokenizer with the Hugging Face library on
# the first MB megabytes (default 8) of the default corpus (Go standard
# library source, *.go outside testdata, in path order), copied one file a
# document into a scratch directory:
#   - tokenizer training: `trainer tokenizer train --vocab 30000` against the
#     HF trainer (its node binding trains to 30000, its fixed default);
#   - encoding: `trainer prepare --tokenizer T --workers 1` with a 32768 BPE
#     we train, against HF's batch encode on one thread, same file.
# Needs node with the npm package tokenizers 0.23 (see fixtures.js). CPU
# seconds are the figures to compare on a shared machine.
set -euo pipefail
MB=${MB:-8}
HFTOK=${HFTOK:-/tmp/hftok/node_modules}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$repo" && go build -o "$work/trainer" ./cmd/trainer)
mkdir "$work/corpus"
i=0 total=0
while IFS= read -r f; do
  i=$((i + 1)); total=$((total + $(stat -c %s "$f")))
  cp "$f" "$work/corpus/$(printf %05d $i).go"
  [ "$total" -ge $((MB << 20)) ] && break
done < <(find "$(go env GOROOT)/src" -name '*.go' -not -path '*/testdata/*' | sort)
echo "corpus: $i files, $total bytes; load: $(cut -d' ' -f1-3 /proc/loadavg)"
t="/usr/bin/time -f %U+%Ss_cpu_%es_wall"
$t "$work/trainer" --log-level warn tokenizer train --vocab 30000 --input "$work/corpus" --out "$work/ours30k.json" 2>&1 | sed 's/^/ours train 30000: /'
NODE_PATH=$HFTOK node "$here/bench-hf.js" train "$work/ours30k.json" "$work/corpus" "$work/hf30k.json"
"$work/trainer" --log-level warn tokenizer train --vocab 32768 --input "$work/corpus" --out "$work/ours32k.json"
GOMAXPROCS=1 $t "$work/trainer" --log-level warn prepare --tokenizer "$work/ours32k.json" --workers 1 \
  --input "$work/corpus" --out "$work/data" --progress=false 2>&1 | sed 's/^/ours prepare 32768, 1 core: /'
RAYON_NUM_THREADS=1 NODE_PATH=$HFTOK node "$here/bench-hf.js" encode "$work/ours32k.json" "$work/corpus"
