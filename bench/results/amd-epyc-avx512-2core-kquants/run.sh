#!/usr/bin/env bash
# Reproduces the files of this folder: the K-quants (Q4_K, Q5_K, Q6_K) side by side with F32 and
# Q4_0 on the CPU backend — decode (T=1, layers cycled past the last-level cache) and prefill
# (T=512) at qwen3-30b-a3b and olmoe-1b-7b, each format's accuracy against the float32 layer
# (T=16), and decode on the Vulkan and OpenCL CPU drivers. Waits (up to WAIT_S seconds per run)
# for the 1-minute load average to drop under 0.5 before each run, and logs the load each run
# started at.
# usage: bench/results/amd-epyc-avx512-2core-kquants/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,q4_0,q4_k,q5_k,q6_k
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for p in qwen3-30b-a3b olmoe-1b-7b; do
    bench "decode-$p" --backend cpu --preset "$p" --tokens 1 --weights "$formats" --layers auto --min-time 3
    bench "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights "$formats" --min-time 3 --no-ref --no-bandwidth
done
bench "quality-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 16 --weights "$formats" --iters 3 --no-bandwidth
for b in vulkan opencl; do
    bench "decode-$b-olmoe-1b-7b" --backend "$b" --preset olmoe-1b-7b --tokens 1 --weights "$formats" --iters 10 --no-ref --no-bandwidth
done
