#!/usr/bin/env bash
# Reproduces the files of this folder: the integer-activation opt-in on an AVX2-only CPU (the avx2
# level's vpmaddubsw / vpmaddwd path, 0.7.1) and on Q4_K, beside the float kernels, on the CPU
# backend at qwen3-30b-a3b — decode (T=1, layers cycled past the last-level cache; three runs, the
# targets being ratios on a shared machine) and prefill (T=512). Waits (up to WAIT_S seconds per
# run) for the 1-minute load average to drop under 0.5 before each run, and logs the load each
# run started at.
# usage: bench/results/amd-epyc-zen1-avx2-2core-int8/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,q8_0,q4_0,q4_k
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for run in 1 2 3; do
    bench "decode-qwen3-30b-a3b-$run" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights "$formats" --activations f32,q8_0 --layers auto --min-time 3
done
bench "prefill-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights "$formats" --activations f32,q8_0 --min-time 3 --no-ref --no-bandwidth
