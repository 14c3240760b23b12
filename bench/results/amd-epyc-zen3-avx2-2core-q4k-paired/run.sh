#!/usr/bin/env bash
# Reproduces the files of this folder: Q4_K at the avx2 level packed with each byte's two values in
# one sub-block (k and k + 16) and read as its low nibble and whole byte, on the activations
# rearranged as Q4_0's (kernels.c: KQ_PAIRED), against OLD=DIR (a moe-bench and its libmoe.so*
# copied from an earlier build; results in NAME-old.json), each run right after the other:
#  1. decode-qwen3-30b-a3b / decode-olmoe-1b-7b: F32, Q4_0 and Q4_K side by side at T=1 on both
#     cores, --layers auto (#13's decode point: Q4_K >= 5x F32; #11's: Q4_0 >= 5x F32);
#  2. decode-qwen3-30b-a3b-1thread: Q4_K on one core (--threads 1), steadier on this shared host;
#  3. prefill-qwen3-30b-a3b-1thread: F32, Q4_K and Q6_K at T=512 on one core (the K-quants'
#     widened tiles were restructured: prefill should not move);
#  4. outputs-olmoe-1b-7b: both libraries' Q4_K output at T=48 against the scalar reference.
# Waits for a quiet machine before each run (wait_quiet.sh).
# usage: [OLD=DIR] bench/results/amd-epyc-zen3-avx2-2core-q4k-paired/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

both "decode-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,q4_0,q4_k --layers auto --min-time 2 --no-ref
both "decode-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 1 --weights f32,q4_0,q4_k --layers auto --min-time 2 --no-ref
both "decode-qwen3-30b-a3b-1thread" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights q4_k --layers auto --threads 1 --min-time 3 --no-ref
both "prefill-qwen3-30b-a3b-1thread" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q4_k,q6_k --threads 1 --min-time 4 --no-ref --no-bandwidth
both "outputs-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 48 --ref-tokens 48 --weights q4_k --iters 2 --no-bandwidth
