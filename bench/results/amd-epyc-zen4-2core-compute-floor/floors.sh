#!/usr/bin/env bash
# What bounds decode T=1 of each format at issue #11's presets on the 2-core Zen 4 KVM guest
# (machine.txt). Per preset: first the layer with every expert a forward uses held in the 32 MiB
# L3 (--experts K --top-k K: the preset's shape, K experts all routed to, one layer, each run's
# layer made alone, so its weights are read from cache: the kernels' own floor; 8 experts of
# the 4-bit formats are 20-28 MiB, Q8_0's would not fit, so it runs 4 beside Q4_0's 4), on
# float32 activations and on the opt-in integer ones; then the preset itself streamed from
# memory, every run timed forward by forward in turn (--interleave, as
# ../amd-epyc-zen4-2core-interleave/run.sh), and again with the integer opt-in beside F32 (all
# nine runs at once would not fit the 23 GiB). Run from the repository
# root after the README's build; writes <preset>-<what>.json / .txt here.
set -euo pipefail
out=$(dirname "$0")
bench() { # name, moe-bench flags...
  local name=$1
  shift
  MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --tokens 1 --min-time 3 --no-ref \
    --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}
for p in qwen3-30b-a3b olmoe-1b-7b; do
  bench "$p-l3-top8" --preset "$p" --experts 8 --top-k 8 --layers 1 --weights q4_0,q4_k --activations f32,q8_0
  bench "$p-l3-top4" --preset "$p" --experts 4 --top-k 4 --layers 1 --weights q4_0,q8_0 --activations f32,q8_0
  bench "$p-stream" --preset "$p" --layers auto --weights f32,f16,bf16,q8_0,q4_0,q4_k --interleave
  bench "$p-stream-i8" --preset "$p" --layers auto --weights f32,q8_0,q4_0,q4_k --activations f32,q8_0 --interleave
done
