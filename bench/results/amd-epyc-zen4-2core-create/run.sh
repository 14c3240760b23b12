#!/usr/bin/env bash
# Layer creation from float32 (moe-bench's `created from float32 in` / JSON create_ms) before and after
# session 46's conversions, on the 2-core Zen 4 KVM guest: the library of commit BEFORE (default 57c945c,
# built in a git worktree) and this tree's, under the same moe-bench binary (this tree's: the library's
# ABI is the same, LD_LIBRARY_PATH picks which one runs), in alternation, three rounds each. The CPU
# backend, qwen3-30b-a3b (604M expert weights a layer), one layer per format; f32 (first) is the packing
# alone, no conversion. Run from the repository root after the README's build; writes
# {before,after}-<round>.json / .txt here.
set -euo pipefail
out=$(dirname "$0")
before=${BEFORE:-57c945c}
tree=/tmp/moe-create-before
if [ ! -f "$tree/build/libmoe.so.0" ]; then
  rm -rf "$tree" && git worktree prune
  git worktree add --detach "$tree" "$before"
  cmake -S "$tree" -B "$tree/build" -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF -DMOE_BUILD_TOOLS=OFF -DMOE_MPI=OFF
  cmake --build "$tree/build" -j2 --target moe
fi
run() { # name, library directory
  LD_LIBRARY_PATH=$2 MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --preset qwen3-30b-a3b --tokens 1 \
    --layers 1 --iters 3 --warmup 1 --no-ref --weights f32,bf16,f16,q8_0,q4_0,mxfp4,q3_k,q4_k,q5_k,q6_k \
    --json "$out/$1.json" | tee "$out/$1.txt"
}
for round in 1 2 3; do
  run "before-$round" "$tree/build"
  run "after-$round" "$PWD/build"
done
