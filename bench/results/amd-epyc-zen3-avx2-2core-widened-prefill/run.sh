#!/usr/bin/env bash
# Reproduces the files of this folder: prefill (T=512) at the avx2 level with the widened chunk
# tiles of the block formats and the K-quants taking the pair 2 vectors at a time for 4 rows
# (SPLIT_WIDENED: block_rows_split, kq_rows_split) instead of the whole pair for 2, against OLD=DIR
# (a moe-bench and its libmoe.so* copied from an earlier build; results in NAME-old.json), each run
# right after the other:
#  1. prefill-qwen3-30b-a3b / prefill-olmoe-1b-7b: F32, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K and MXFP4
#     side by side on both cores (#11's and #13's prefill points: >= 0.85x F32 GFLOPS);
#  2. prefill-qwen3-30b-a3b-1thread: the same on one core (--threads 1), which on this shared host
#     moves far less from run to run than two;
#  3. outputs-olmoe-1b-7b: both libraries' block-format and K-quant outputs at T=48 against the
#     scalar reference (the same sums in the same order: equal rel L2).
# Waits for a quiet machine before each run (wait_quiet.sh).
# usage: [OLD=DIR] bench/results/amd-epyc-zen3-avx2-2core-widened-prefill/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

both "prefill-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q8_0,q4_0,q4_k,q5_k,q6_k,mxfp4 --min-time 3 --no-ref --no-bandwidth
both "prefill-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 512 --weights f32,q8_0,q4_0,q4_k,q5_k,q6_k,mxfp4 --min-time 3 --no-ref --no-bandwidth
both "prefill-qwen3-30b-a3b-1thread" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q4_0,q4_k,q5_k,q6_k,mxfp4 --threads 1 --min-time 4 --no-ref --no-bandwidth
both "outputs-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 48 --ref-tokens 48 --weights q8_0,q4_0,mxfp4,q4_k,q5_k,q6_k --iters 2 --no-bandwidth
# A second run of the two-core qwen3-30b-a3b comparison (added after the first; its lines follow
# the first runs' in runs.log)
both "prefill-qwen3-30b-a3b-2" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights f32,q8_0,q4_0,q4_k,q5_k,q6_k,mxfp4 --min-time 3 --no-ref --no-bandwidth
