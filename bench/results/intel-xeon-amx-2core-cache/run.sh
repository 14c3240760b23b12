#!/usr/bin/env bash
# Reproduces the files of this folder: what an expert cache's uploads cost, before and after they
# stopped quantising on the forward's critical path (placement.c's convert_sources). A Q4_0
# decode (T=1) of qwen3-30b-a3b on the CPU backend, both cores, 2 layers, routing from a
# generated trace with 80% reuse, the last 96 experts on a second CPU context, without a cache
# and with 32 slots on the target: every miss is an upload between two host arenas, the path a
# GPU's cache takes (on an H200 the 32 slots made this decode 106 ms a forward; see
# ../nvidia-h200). BEFORE_DIR (default /tmp/bp-base: commit a5f57f0, uploads quantise each
# expert from the float32 weights) and BUILD_DIR (uploads copy the bytes converted at creation),
# alternating, twice each.
# usage: bench/results/intel-xeon-amx-2core-cache/run.sh [BUILD_DIR]   (from the repository root;
#        BEFORE_DIR from the environment)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
before=${BEFORE_DIR:-/tmp/bp-base}
# other DIR NAME FLAGS...: bench's run from another build directory (its own libmoe).
other() {
    local dir=$1 name=$2; shift 2
    quiet "$dir/moe-bench $*"
    LD_LIBRARY_PATH="$dir" MOE_BENCH_NO_PROGRESS=1 "$dir/moe-bench" "$@" --json "$out/$name.json" | tee -a "$log"
}
run=(--backend cpu --preset qwen3-30b-a3b --tokens 1 --weights q4_0 --layers 2 --trace-reuse 0.8
     --cpu-experts 96 --cache-slots 0,32 --min-time 2 --no-ref)
for i in 1 2; do
    other "$before" "before-$i" "${run[@]}"
    bench "after-$i" "${run[@]}"
done
