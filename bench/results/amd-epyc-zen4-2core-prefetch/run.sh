#!/usr/bin/env bash
# The dense formats' decode with and without software prefetch (MOE_CPU_PREFETCH), in runs of the
# real moe-bench, side by side with the block formats: once with the default (auto: off for
# F32/F16/BF16 on this AMD CPU at 512 bits) and once with it forced on, at qwen3-30b-a3b and
# olmoe-1b-7b. This guest's bandwidth moves by half from minute to minute, so these runs compare
# formats within one run; the distances themselves were compared in one process (interleave.log,
# from a moe-bench built with interleave.patch: none, 2, 8 and 4 KiB ahead in turn, forward by forward).
# usage: bench/results/amd-epyc-zen4-2core-prefetch/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
formats=f32,f16,bf16,q8_0,q4_0,q4_k,mxfp4
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
for p in qwen3-30b-a3b olmoe-1b-7b; do
    bench "decode-$p" --backend cpu --preset "$p" --tokens 1 --weights "$formats" --layers auto --min-time 2
    MOE_CPU_PREFETCH=on bench "decode-$p-prefetch-on" --backend cpu --preset "$p" --tokens 1 --weights f32,f16,bf16 --layers auto --min-time 2
done
