#!/usr/bin/env bash
# Reproduces the files of this folder: decode (T=1, layers cycled past the last-level cache) at
# qwen3-30b-a3b on the CPU backend, the Q4_K target of the K-quants issue side by side with F32
# and Q4_0, float and integer activations. decode-before.json is the build before the 512-bit
# integer K-quant kernel prefetched into L2 instead of L1 (commit f100cf5), decode-after.json the
# build with it. Waits (up to WAIT_S seconds per run) for the 1-minute load average to drop under
# 0.5 before each run, and logs the load each run started at.
# usage: bench/results/intel-xeon-avx512vnni-2core-decode/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
bench "decode-after" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,q4_0,q4_k --activations f32,q8_0 --layers auto --min-time 2
