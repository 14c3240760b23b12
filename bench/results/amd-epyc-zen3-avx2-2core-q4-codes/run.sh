#!/usr/bin/env bash
# Reproduces the files of this folder: the avx2 level's Q4_0 kernel widening the codes q (a mask or a
# shift and a conversion a value) and taking the 8s off once per block as 8 times the activations'
# sum, against OLD=DIR (a moe-bench and its libmoe.so* copied from an earlier build; results in
# NAME-old.json), each run right after the other:
#  1. decode-PRESET-N: decode (T=1, --layers auto) of F32, BF16, Q8_0 and Q4_0 side by side at
#     qwen3-30b-a3b and olmoe-1b-7b (#11's decode point), twice;
#  2. prefill-PRESET: T=512, F32 and Q4_0;
#  3. outputs-olmoe-1b-7b: both libraries' Q4_0 output at T=48 against the scalar reference.
# Waits for a quiet machine before each run (wait_quiet.sh).
# usage: [OLD=DIR] bench/results/amd-epyc-zen3-avx2-2core-q4-codes/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

for i in 1 2; do
    for p in qwen3-30b-a3b olmoe-1b-7b; do
        both "decode-$p-$i" --backend cpu --preset "$p" --tokens 1 --weights f32,bf16,q8_0,q4_0 --layers auto --min-time 2 --no-ref
    done
done
for p in qwen3-30b-a3b olmoe-1b-7b; do
    both "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights f32,q4_0 --min-time 3 --no-ref --no-bandwidth
done
both "outputs-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 48 --ref-tokens 48 --weights q4_0 --iters 2 --no-bandwidth
