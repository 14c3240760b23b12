#!/usr/bin/env bash
# Reproduces the files of this folder: decode (T=1, layers cycled past the last-level cache,
# --layers auto) on the CPU backend, both cores.
#  1. decode-olmoe-1b-7b: the weight-format issue's points at olmoe-1b-7b (BF16, Q8_0 and Q4_0
#     against F32, side by side in one run);
#  2. decode-qwen3-30b-a3b: the K-quant issue's point at qwen3-30b-a3b (Q4_K against F32, float
#     and integer activations);
#  3. threads-{before,after}-N: Q4_0 decode at olmoe-1b-7b (five thread-pool jobs a forward, a
#     few hundred microseconds each: where the pool's cost shows) from BEFORE_DIR (default
#     /tmp/bp-base: commit e88396b, POSIX threads called directly) and BUILD_DIR (the locks and
#     threads through src/platform/thread.h), alternating, twice each;
#  4. q4_k-chunks{16,4}-N: Q4_K decode at qwen3-30b-a3b from BUILD_DIR and VARIANT_DIR (default
#     /tmp/bp-c4: BUILD_DIR's source built with -DCPU_CHUNKS_PER_THREAD=4, decode tasks 4 times
#     larger than the default 16), alternating, twice each, to see a difference beside the
#     run-to-run spread.
# Waits (up to WAIT_S seconds per run) for the 1-minute load average to drop under 0.5 before
# each run, and logs the load each run started at.
# usage: bench/results/intel-xeon-amx-2core-decode/run.sh [BUILD_DIR]   (from the repository root;
#        BEFORE_DIR and VARIANT_DIR from the environment)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
before=${BEFORE_DIR:-/tmp/bp-base} variant=${VARIANT_DIR:-/tmp/bp-c4}
# other DIR NAME FLAGS...: bench's run from another build directory.
other() {
    local dir=$1 name=$2; shift 2
    quiet "$dir/moe-bench $*"
    MOE_BENCH_NO_PROGRESS=1 "$dir/moe-bench" "$@" --json "$out/$name.json" | tee -a "$log"
}
bench "decode-olmoe-1b-7b" --backend cpu --preset olmoe-1b-7b --tokens 1 --weights f32,bf16,q8_0,q4_0 --layers auto --min-time 2
bench "decode-qwen3-30b-a3b" --backend cpu --preset qwen3-30b-a3b --tokens 1 --weights f32,q4_k --activations f32,q8_0 --layers auto --min-time 2
q40=(--backend cpu --preset olmoe-1b-7b --tokens 1 --weights q4_0 --layers auto --min-time 2 --no-ref)
q4k=(--backend cpu --preset qwen3-30b-a3b --tokens 1 --weights q4_k --activations f32,q8_0 --layers auto --min-time 2 --no-ref)
for i in 1 2; do
    other "$before" "threads-before-$i" "${q40[@]}"
    bench "threads-after-$i" "${q40[@]}"
done
for i in 1 2; do
    bench "q4_k-chunks16-$i" "${q4k[@]}"
    other "$variant" "q4_k-chunks4-$i" "${q4k[@]}"
done
