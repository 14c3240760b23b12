#!/usr/bin/env bash
# Reproduces the files of this folder: integer activations (the opt-in, --activations q8_0) beside
# float ones on the CPU backend — decode (T=1, layers cycled past the last-level cache) at
# qwen3-30b-a3b and olmoe-1b-7b with every format the ratio targets name, prefill (T=512) of the
# block formats both ways, and what the integer rounding moves each preset's output by (T=16).
# Waits (up to WAIT_S seconds per run) for the 1-minute load average to drop under 0.5 before
# each run, and logs the load each run started at.
# usage: bench/results/intel-xeon-avx512-2core-int8/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for p in qwen3-30b-a3b olmoe-1b-7b; do
    bench "decode-$p" --backend cpu --preset "$p" --tokens 1 --weights f32,bf16,q8_0,q4_0 --activations f32,q8_0 \
        --layers auto --min-time 3
done
for p in qwen3-30b-a3b olmoe-1b-7b; do
    bench "prefill-$p" --backend cpu --preset "$p" --tokens 512 --weights f32,q8_0,q4_0 --activations f32,q8_0 \
        --min-time 3 --no-ref --no-bandwidth
done
for p in mixtral-8x7b qwen1.5-moe-a2.7b qwen3-30b-a3b olmoe-1b-7b deepseek-v2-lite switch-base-8; do
    bench "quality-$p" --backend cpu --preset "$p" --tokens 16 --weights q8_0,q4_0 --activations f32,q8_0 --iters 3 \
        --no-bandwidth
done
# Two more samples of each decode run (the machine swings ±15% between runs), and the 256-bit
# integer kernels (AVX-VNNI, forced: the CPU's best is avx512vnni).
for run in 2 3; do
    for p in qwen3-30b-a3b olmoe-1b-7b; do
        bench "decode-$p-$run" --backend cpu --preset "$p" --tokens 1 --weights f32,bf16,q8_0,q4_0 \
            --activations f32,q8_0 --layers auto --min-time 3
    done
done
MOE_CPU_ISA=avx2vnni bench decode-avx2vnni-qwen3-30b-a3b --backend cpu --preset qwen3-30b-a3b --tokens 1 \
    --weights q8_0,q4_0 --activations f32,q8_0 --layers auto --min-time 3
