#!/usr/bin/env bash
# gpu-check.sh: the CUDA backend's checks on a machine with an NVIDIA GPU.
#
# It builds NOTHING: it runs binaries built beforehand on a development
# machine (same architecture, cgo enabled, no CUDA toolkit needed), with this
# one command (the Makefile's gpu-check-build target):
#
#   mkdir -p bin && go build -trimpath -ldflags='-s -w' -o bin/trainer ./cmd/trainer &&
#     go test -c -trimpath -ldflags='-s -w' -o bin/cuda.test ./compute/cuda &&
#     go test -c -trimpath -ldflags='-s -w' -o bin/device.test ./compute/device
#
# then copy the tree with bin/ to the GPU machine and run scripts/gpu-check.sh
# from the repository root. Steps, each under its own timeout (about 7 minutes
# in all, under 8):
#   1. environment: nvidia-smi, glibc, where the CUDA libraries are;
#   2. bin/cuda.test: loading, NVRTC compilation for this GPU, the conformance
#      suite, CPU-vs-GPU parity of every op forward and backward (fp32 1e-5;
#      tf32/bf16 1e-2 normwise at training shapes), seq-1024 attention parity,
#      determinism (bitwise), pinned/asynchronous/bf16/int8 downloads.
#      DIFFTRAIN_REQUIRE_GPU makes a backend that does not open a failure, not
#      a skip (and skips the CPU-emulator test, which is for machines without
#      a GPU);
#   3. bin/device.test: --device auto picks the GPU;
#   4. Go benchmarks of GEMM, attention, loss and embedding backward;
#   5. bin/trainer bench step for L12-d768-H12, seq 1024, vocab 50304, batch 8
#      in fp32, tf32 and bf16: tokens/s and model-FLOPs utilisation (JSON).
# Everything goes to $OUT (default ./gpu-check-out); summary.txt lists each
# step's result. The exit status is non-zero when any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$OUT/cache}" # NVRTC kernel cache
export DIFFTRAIN_REQUIRE_GPU=1
failed=0

log() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME SECONDS CMD...: run CMD with a timeout, output to $OUT/NAME.log.
step() {
	local name=$1 secs=$2
	shift 2
	local t0=$SECONDS
	timeout --kill-after=10 "$secs" "$@" >"$OUT/$name.log" 2>&1
	local rc=$?
	local verdict=ok
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		verdict="TIMEOUT after ${secs}s"
		failed=1
	elif [ $rc -ne 0 ]; then
		verdict="FAIL (exit $rc)"
		failed=1
	fi
	log "$(printf '%-22s %-22s %4ds  %s' "$name" "$verdict" $((SECONDS - t0)) "$OUT/$name.log")"
	return $rc
}

for b in bin/trainer bin/cuda.test bin/device.test; do
	if [ ! -x "$b" ]; then
		log "missing $b: build the binaries first (see this script's header)"
		exit 2
	fi
done

# 1. Environment. The CUDA libraries may sit outside the loader's path (a
# toolkit in /usr/local/cuda, or a Python wheel's nvidia/*/lib): find them.
{
	nvidia-smi || echo "nvidia-smi not found"
	ldd --version | head -1
	echo "--- CUDA libraries found:"
	timeout 30 find /usr /opt /lib /lib64 /root /home -xdev \( -name 'libcuda.so*' -o -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libnvrtc.so*' \
		-o -name 'libnvrtc-builtins.so*' \) 2>/dev/null | grep -v -e '/proc/' -e "$PWD" | sort
} >"$OUT/env.log" 2>&1
dirs=$(grep -E '/lib(cublas|nvrtc)\.so\.[0-9]' "$OUT/env.log" | xargs -r -n1 dirname | sort -u | paste -sd: -)
if [ -n "$dirs" ]; then
	export DIFFTRAIN_CUDA_LIBS="${DIFFTRAIN_CUDA_LIBS:+$DIFFTRAIN_CUDA_LIBS:}$dirs"
	export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" # for cuBLAS's own libcublasLt
fi
log "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
log "CUDA library dirs: ${dirs:-none found outside the default path}"

# 2-3. Tests.
step cuda-tests 180 bin/cuda.test -test.v -test.count=1 -test.timeout=170s
step device-tests 30 bin/device.test -test.v -test.count=1
grep -E '^(--- FAIL|FAIL|panic)' "$OUT/cuda-tests.log" "$OUT/device-tests.log" | head -20 | tee -a "$SUMMARY"
grep -E 'relative error|NVRTC [0-9]' "$OUT/cuda-tests.log" | head -5 >>"$SUMMARY"

# 4. Micro-benchmarks.
step go-bench 60 bin/cuda.test -test.run '^$' -test.bench . -test.benchtime 20x
grep -E '^Benchmark' "$OUT/go-bench.log" | tee -a "$SUMMARY"

# 5. Whole training steps. MFU is against the vendor's dense peak for this
# GPU (the table of compute/cuda's peakTFLOPS) when it is known, else against
# the GEMM rate that bench step measures itself.
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
peak() { # precision -> dense TFLOP/s, empty when unknown
	case "$gpu" in
	*H100\ PCIe*) set -- "$1" 51 378 756 ;;
	*H100\ NVL*) set -- "$1" 60 417.5 835 ;;
	*H200* | *H100* | *GH200*) set -- "$1" 67 494.7 989.4 ;;
	*A100*) set -- "$1" 19.5 156 312 ;;
	*) return ;;
	esac
	case "$1" in fp32) echo "$2" ;; tf32) echo "$3" ;; bf16) echo "$4" ;; esac
}
for p in fp32 tf32 bf16; do
	pk=$(peak "$p")
	step "bench-step-$p" 45 bin/trainer bench step --device cuda --precision "$p" --layers 12 --dim 768 \
		--heads 12 --seq 1024 --vocab 50304 --batch 8 --steps 10 --json ${pk:+--peak-tflops "$pk"}
	# The JSON object is the last line that starts with '{'.
	grep '^{' "$OUT/bench-step-$p.log" | tail -1 >"$OUT/bench-step-$p.json"
	log "  $p (peak ${pk:-measured GEMM} TFLOP/s): $(cat "$OUT/bench-step-$p.json")"
done

if [ $failed -ne 0 ]; then
	log "gpu-check: FAILED (see the logs in $OUT)"
	exit 1
fi
log "gpu-check: all steps passed"
