#!/usr/bin/env bash
# A Q4_K_M / Q5_K_M file's layer shape (moe 0.12.0): Q4_K (Q5_K) gate/up with the down projections in Q6_K
# (--down-weights q6_k), as llama.cpp's _M files keep about half of a model's layers, on float32 activations
# and on the two opt-ins, which now run Q4_K's gate/up there and leave down on float32 (before 0.12.0 the
# whole group fell back to float32: the f32 row; Q5_K takes neither opt-in). Beside it the layer with Q4_K
# down too. Decode T=1 on the 2-core Zen 4 KVM
# guest (AVX512_BF16): the 8 experts a forward uses held in the 32 MiB L3 (--experts 8 --top-k 8
# --layers 1: the kernels' own floor), then qwen3-30b-a3b streamed from memory, every run timed forward
# by forward in turn (--interleave). Run from the repository root after the README's build; writes
# <name>.json / .txt here.
set -euo pipefail
out=$(dirname "$0")
bench() { # name, moe-bench flags...
  local name=$1
  shift
  MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --min-time 3 --no-ref \
    --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}
for p in qwen3-30b-a3b olmoe-1b-7b; do
  bench "$p-l3-q6_k-down" --preset "$p" --tokens 1 --experts 8 --top-k 8 --layers 1 --weights q4_k,q5_k \
    --down-weights q6_k --activations f32,q8_0,bf16
  bench "$p-l3-q4_k-down" --preset "$p" --tokens 1 --experts 8 --top-k 8 --layers 1 --weights q4_k \
    --activations f32,q8_0,bf16
done
bench qwen3-30b-a3b-stream-q6_k-down --preset qwen3-30b-a3b --tokens 1 --layers auto --weights f32,q4_k,q5_k \
  --down-weights q6_k --activations f32,q8_0,bf16 --interleave
