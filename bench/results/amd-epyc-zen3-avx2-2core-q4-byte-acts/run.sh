#!/usr/bin/env bash
# Reproduces the files of this folder: Q4_0 at the avx2 level reading each byte as its low nibble
# and the whole byte, with the activations rearranged once per GEMM call (cpu_backend.c:
# q4_byte_acts), against OLD=DIR (a moe-bench and its libmoe.so* copied from an earlier build;
# results in NAME-old.json), each run right after the other:
#  1. decode-qwen3-30b-a3b / decode-olmoe-1b-7b: F32, Q4_0 and Q4_K side by side at T=1 on both
#     cores, --layers auto (#11's decode point: Q4_0 >= 5x F32 and >= 75% of the read bandwidth;
#     #13's: Q4_K >= 5x F32);
#  2. decode-qwen3-30b-a3b-1thread: Q4_0 on one core (--threads 1), steadier on this shared host;
#  3. prefill-qwen3-30b-a3b-1thread: F32 and Q4_0 at T=512 on one core (the rearranging is once
#     per GEMM call: prefill should not move);
#  4. outputs-olmoe-1b-7b: both libraries' Q4_0 output at T=48 against the scalar reference.
# Waits for a quiet machine before each run (wait_quiet.sh).
# usage: [OLD=DIR] bench/results/amd-epyc-zen3-avx2-2core-q4-byte-acts/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

both "decode-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,q4_0,q4_k --layers auto --min-time 2 --no-ref
both "decode-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 1 --weights f32,q4_0,q4_k --layers auto --min-time 2 --no-ref
both "decode-qwen3-30b-a3b-1thread" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights q4_0 --layers auto --threads 1 --min-time 3 --no-ref
both "prefill-qwen3-30b-a3b-1thread" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q4_0 --threads 1 --min-time 4 --no-ref --no-bandwidth
both "outputs-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 48 --ref-tokens 48 --weights q4_0 --iters 2 --no-bandwidth
