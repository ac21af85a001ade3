#!/bin/bash
# Core-issue measurements: `trainer bench step` for three configs x BLAS x threads, one JSON line each (run `make build` first).
cd "$(dirname "$0")/.."
T=bin/trainer
for cfg in "260 4 128 4 128 16" "260 6 256 4 256 8" "4096 8 512 8 256 4"; do
  set -- $cfg
  for blas in openblas gonum; do
    for th in 1 2; do
      steps=5; warm=2
      if [ $blas = gonum ] && [ $3 = 512 ]; then steps=2; warm=1; fi
      out=$(env -u OPENBLAS_CORETYPE GOMAXPROCS=$th $T bench step --device cpu --blas $blas --threads $th --vocab $1 --layers $2 --dim $3 --heads $4 --seq $5 --batch $6 --steps $steps --warmup $warm --json 2>/dev/null)
      echo "$blas threads=$th $out"
    done
  done
done
