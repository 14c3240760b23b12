#!/usr/bin/env bash
# Reproduces the files of this folder: five presets at T=512 and an OLMoE token sweep on the
# CPU backend, then the charts. Waits (up to WAIT_S seconds per run) for the 1-minute load
# average to drop under 0.5 before each run, and logs the load each run started at.
# usage: bench/results/amd-epyc-2core/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
wait_s=900
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for p in olmoe-1b-7b qwen3-30b-a3b qwen1.5-moe-a2.7b deepseek-v2-lite switch-base-8; do
    quiet "moe-bench --backend cpu --preset $p --tokens 512 --min-time 3"
    MOE_BENCH_NO_PROGRESS=1 "$build/moe-bench" --backend cpu --preset "$p" --tokens 512 --min-time 3 \
        --json "$out/preset-$p.json" | tee -a "$log"
done
quiet "moe-bench --backend cpu --preset olmoe-1b-7b --sweep-tokens 1,8,64,512,2048 --min-time 2"
MOE_BENCH_NO_PROGRESS=1 "$build/moe-bench" --backend cpu --preset olmoe-1b-7b --sweep-tokens 1,8,64,512,2048 \
    --min-time 2 --json "$out/sweep-olmoe-1b-7b.json" | tee -a "$log"
tools/moe-plot -o "$out" --only gflops \
    --title "moe-bench, CPU backend (AMD EPYC, 2 cores, AVX2): GFLOPS per preset, T=512" "$out"/preset-*.json
tools/moe-plot -o "$out" --only sweep \
    --sweep-title "moe-bench, CPU backend (AMD EPYC, 2 cores): OLMoE-1B-7B layer" "$out/sweep-olmoe-1b-7b.json"
