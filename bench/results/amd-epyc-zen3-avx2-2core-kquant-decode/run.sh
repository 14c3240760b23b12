#!/usr/bin/env bash
# Reproduces the files of this folder: the avx2 level's K-quant decode (a single row: each vector's
# two values into their FMAs as soon as they are widened, no spilled sums; conversions instead of
# the mantissa trick; Q5_K's and Q6_K's high bits put in 32 columns at a time), against OLD=DIR (a
# moe-bench and its libmoe.so* copied from an earlier build; results in NAME-old.json), each run
# right after the other:
#  1. decode-qwen3-30b-a3b: decode (T=1, --layers auto) of F32, Q4_0, Q4_K, Q5_K and Q6_K side by
#     side (#13's decode point: Q4_K >= 5x F32);
#  2. prefill-qwen3-30b-a3b: T=512, F32, Q4_K, Q6_K and MXFP4 (#13's prefill point);
#  3. outputs-olmoe-1b-7b: both libraries' K-quant outputs at T=48 against the scalar reference.
# Waits for a quiet machine before each run (wait_quiet.sh). The files here came from the change one
# step before it landed: its one-row prefill chunk tiles (src WIDENING / FROM_WIDENED) also took one
# pass; the decode path they measure is the one that landed.
# usage: [OLD=DIR] bench/results/amd-epyc-zen3-avx2-2core-kquant-decode/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

both "decode-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,q4_0,q4_k,q5_k,q6_k --layers auto --min-time 2 --no-ref
both "prefill-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q4_k,q6_k,mxfp4 --min-time 3 --no-ref --no-bandwidth
both "outputs-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 48 --ref-tokens 48 --weights q4_k,q5_k,q6_k --iters 2 --no-bandwidth
# Second runs of the two noisiest comparisons (added after the first: Q6_K decode and K-quant prefill)
both "decode-qwen3-30b-a3b-2" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,q4_k,q6_k --layers auto --min-time 2 --no-ref
both "prefill-qwen3-30b-a3b-2" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q4_k,q6_k --min-time 3 --no-ref --no-bandwidth
