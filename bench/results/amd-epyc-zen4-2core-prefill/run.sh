#!/usr/bin/env bash
# Reproduces the files of this folder: prefill (T=512) of every weight format side by side on the
# CPU backend at qwen3-30b-a3b and olmoe-1b-7b (the prefill points of #11 and #13), then decode
# (T=1, layers cycled past the last-level cache) at qwen3-30b-a3b for four formats, to show the
# decode path unchanged. With OLD=DIR (a moe-bench and its libmoe.so* copied from an earlier
# build) each run is repeated right after with that library (LD_LIBRARY_PATH=DIR), results in
# NAME-old.json. Waits for a quiet machine before each run (wait_quiet.sh).
# usage: [OLD=DIR] bench/results/amd-epyc-zen4-2core-prefill/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,f16,bf16,q8_0,q4_0,q4_k,q5_k,q6_k,mxfp4
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

for p in qwen3-30b-a3b olmoe-1b-7b; do
    both "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights "$formats" --min-time 3 --no-ref --no-bandwidth
done
both "decode-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,bf16,q8_0,q4_0 --layers auto --min-time 2 --no-ref
