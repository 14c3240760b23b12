#!/usr/bin/env bash
# Reproduces the files of this folder: prefill (T=512) of the K-quants and MXFP4 beside F32 on the
# CPU backend at qwen3-30b-a3b and olmoe-1b-7b (#13's prefill point), each run repeated right after
# with an earlier library when OLD=DIR is set (a moe-bench and its libmoe.so* copied from an
# earlier build; results in NAME-old.json); then the outputs of both libraries at T=48 with
# reference checks, whose rel L2 must be equal (the change is meant to leave results bit for bit).
# Waits for a quiet machine before each run (wait_quiet.sh).
# usage: [OLD=DIR] bench/results/amd-epyc-zen4-2core-kquant-prefill/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,q4_k,q5_k,q6_k,mxfp4
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, both

for p in qwen3-30b-a3b olmoe-1b-7b; do
    both "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights "$formats" --min-time 3 --no-ref --no-bandwidth
done
both "outputs-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 48 --ref-tokens 48 --weights q4_k,q5_k,q6_k --iters 2 --no-bandwidth
