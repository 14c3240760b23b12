#!/usr/bin/env bash
# Reproduces the files of this folder: MXFP4 side by side with F32, Q4_0 and the K-quants Q4_K and
# Q6_K on the CPU backend — decode (T=1, layers cycled past the last-level cache; three runs, the
# decode target being a ratio on a shared machine) and prefill (T=512) at qwen3-30b-a3b, and the
# gpt-oss-20b preset (its clamped SwiGLU, router and expert biases; 2880 is whole MXFP4 blocks but
# not K-quant super-blocks, so F32, Q4_0 and MXFP4 there). Waits (up to WAIT_S seconds per run)
# for the 1-minute load average to drop under 0.5 before each run, and logs the load each run
# started at.
# usage: bench/results/amd-epyc-avx512-2core-mxfp4/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,q4_0,q4_k,q6_k,mxfp4
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for run in 1 2 3; do
    bench "decode-qwen3-30b-a3b-$run" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights "$formats" --layers auto --min-time 3
done
bench "prefill-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 512 --weights "$formats" --min-time 3 --no-ref --no-bandwidth
bench "decode-gpt-oss-20b" --backend cpu --preset gpt-oss-20b --tokens 1 --weights f32,q4_0,mxfp4 --layers auto --min-time 3
bench "prefill-gpt-oss-20b" --backend cpu --preset gpt-oss-20b --tokens 512 --weights f32,q4_0,mxfp4 --min-time 3 --no-ref --no-bandwidth
