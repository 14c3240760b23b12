#!/usr/bin/env bash
# Reproduces the files of this folder: the weight formats side by side on the CPU backend —
# decode (T=1, layers cycled past the last-level cache) and prefill (T=512) at qwen3-30b-a3b
# and olmoe-1b-7b, each format's accuracy against the float32 layer on every preset that fits
# the machine (T=16), mixtral-8x7b in every format with its arena bytes, and decode on the
# Vulkan and OpenCL CPU drivers. Waits (up to
# WAIT_S seconds per run) for the 1-minute load average to drop under 0.5 before each run, and
# logs the load each run started at.
# usage: bench/results/intel-xeon-avx512-2core-formats/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,f16,bf16,q8_0,q4_0
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for p in qwen3-30b-a3b olmoe-1b-7b; do
    bench "decode-$p" --backend cpu --preset "$p" --tokens 1 --weights "$formats" --layers auto --min-time 3
    bench "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights "$formats" --min-time 3 --no-ref --no-bandwidth
done
for p in mixtral-8x7b qwen1.5-moe-a2.7b qwen3-30b-a3b olmoe-1b-7b deepseek-v2-lite switch-base-8; do
    bench "quality-$p" --backend cpu --preset "$p" --tokens 16 --weights "$formats" --iters 3 --no-bandwidth
done
# The GPU backends on this machine's CPU drivers (lavapipe, PoCL): decode in every format (one
# layer: these drivers are far from the memory bound, the cache does not matter to them).
for b in vulkan opencl; do
    bench "decode-$b-olmoe-1b-7b" --backend "$b" --preset olmoe-1b-7b --tokens 1 --weights "$formats" --iters 10 --no-ref --no-bandwidth
done
