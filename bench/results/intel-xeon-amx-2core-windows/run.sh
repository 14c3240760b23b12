#!/usr/bin/env bash
# Reproduces the files of this folder: the Windows port's cost on x86-64 Linux (#17 point 4).
# before-N: BEFORE_DIR (default /tmp/before/build: commit 5aed89e, the clock, core count, memory
# size and aligned allocation called directly; configured with -DMOE_BUILD_TESTS=OFF
# -DMOE_BUILD_TOOLS=OFF -DMOE_MPI=OFF, so without the test hooks' counted allocation points);
# after-N: BUILD_DIR (the README's build, test hooks on: a conservative comparison; the same
# calls through src/platform/system.h and the Windows-ready src/file.c), alternating, twice each:
#   decode: Q4_0 at olmoe-1b-7b, T=1, layers cycled past the last-level cache (--layers auto):
#           five thread-pool jobs a forward of a few hundred microseconds, timed with moe_now_ms;
#   prefill: F32 at olmoe-1b-7b, T=128, one layer.
# Waits (up to WAIT_S seconds per run) for the 1-minute load average to drop under 0.5 before
# each run, and logs the load each run started at.
# usage: bench/results/intel-xeon-amx-2core-windows/run.sh [BUILD_DIR]   (from the repository root;
#        BEFORE_DIR from the environment)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench
before=${BEFORE_DIR:-/tmp/before/build}
# other DIR NAME FLAGS...: bench's run from another build directory.
other() {
    local dir=$1 name=$2; shift 2
    quiet "$dir/moe-bench $*"
    MOE_BENCH_NO_PROGRESS=1 "$dir/moe-bench" "$@" --json "$out/$name.json" | tee -a "$log"
}
decode=(--backend cpu --preset olmoe-1b-7b --tokens 1 --weights q4_0 --layers auto --min-time 2 --no-ref)
prefill=(--backend cpu --preset olmoe-1b-7b --tokens 128 --weights f32 --layers 1 --min-time 2 --no-ref)
for i in 1 2; do
    other "$before" "decode-before-$i" "${decode[@]}"
    bench "decode-after-$i" "${decode[@]}"
    other "$before" "prefill-before-$i" "${prefill[@]}"
    bench "prefill-after-$i" "${prefill[@]}"
done
