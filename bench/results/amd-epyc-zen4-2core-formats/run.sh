#!/usr/bin/env bash
# Reproduces the files of this folder: every weight format side by side on the CPU backend, in
# one run each, for the speed points of #11 (F16/BF16/Q8_0/Q4_0) and #13 (K-quants, MXFP4):
# decode (T=1, layers cycled past the last-level cache) and prefill (T=512) at qwen3-30b-a3b and
# olmoe-1b-7b, then mixtral-8x7b in every format with its arena bytes and its accuracy against
# the float32 layer (T=16). Waits (up to WAIT_S seconds per run) for the 1-minute load average
# to drop under 0.5 before each run, and logs the load each run started at.
# usage: bench/results/amd-epyc-zen4-2core-formats/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,f16,bf16,q8_0,q4_0,q4_k,q5_k,q6_k,mxfp4
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for p in qwen3-30b-a3b olmoe-1b-7b; do
    bench "decode-$p" --backend cpu --preset "$p" --tokens 1 --weights "$formats" --layers auto --min-time 3
    bench "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights "$formats" --min-time 3 --no-ref --no-bandwidth
done
bench "quality-mixtral-8x7b" --backend cpu --preset mixtral-8x7b --tokens 16 --weights "$formats" --iters 3 --no-bandwidth
