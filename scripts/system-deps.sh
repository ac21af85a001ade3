#!/usr/bin/env bash
# Installs the Debian packages difftrain uses at run time when they are missing:
# OpenBLAS (the CPU backend's GEMM; without it the trainer falls back to gonum,
# several times slower). Needs root; as another user it only says what to run.
set -euo pipefail
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
missing=()
have_lib libopenblas.so.0 || missing+=(libopenblas0)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "system-deps: installing ${missing[*]} (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	echo "system-deps: ${missing[*]} missing; install with: sudo apt-get install ${missing[*]} (continuing with the gonum fallback)" >&2
fi
