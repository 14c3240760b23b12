#!/usr/bin/env bash
# Decode T=1 of every format side by side, timed forward by forward in turn (--interleave), at
# the two presets of issue #11, on the 2-core Zen 4 KVM guest (machine.txt). Run from the
# repository root after the README's build; writes <preset>.json and <preset>.txt here.
set -euo pipefail
out=$(dirname "$0")
for p in qwen3-30b-a3b olmoe-1b-7b; do
  MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --preset "$p" --tokens 1 \
    --weights f32,f16,bf16,q8_0,q4_0,q4_k --layers auto --min-time 3 --no-ref --interleave \
    --json "$out/$p.json" | tee "$out/$p.txt"
done
