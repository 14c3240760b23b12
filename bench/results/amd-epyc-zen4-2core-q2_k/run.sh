#!/usr/bin/env bash
# Q2_K (moe 0.16.0) beside Q3_K and Q4_K on the 2-core Zen 4 KVM guest (AVX512_VNNI, AVX512_BF16), on float32
# activations and on the integer opt-in: decode T=1 with the 8 experts a forward uses held in the 32 MiB L3
# (--experts 8 --top-k 8 --layers 1: the kernels' own floor), a Q2_K layer as llama.cpp's Q2_K files keep it
# (Q2_K gate/up, a Q3_K down), qwen3-30b-a3b streamed from memory (--interleave), prefill T=512, and what each
# format rounds away (--tokens 16 with the reference: the check lines' rel_l2_vs_f32). Run from the
# repository root after the README's build; writes <name>.json / .txt here.
set -euo pipefail
out=$(dirname "$0")
bench() { # name, moe-bench flags...
  local name=$1
  shift
  MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}
L3=(--tokens 1 --experts 8 --top-k 8 --layers 1 --min-time 3 --no-ref)
for p in qwen3-30b-a3b olmoe-1b-7b; do
  bench "$p-l3" --preset "$p" "${L3[@]}" --weights q2_k,q3_k,q4_k --activations f32,q8_0
  bench "$p-l3-q2_k-mix" --preset "$p" "${L3[@]}" --weights q2_k --down-weights q3_k --activations f32,q8_0
done
bench qwen3-30b-a3b-stream --preset qwen3-30b-a3b --tokens 1 --layers auto --min-time 3 --no-ref \
  --weights f32,q2_k,q3_k,q4_k --activations f32,q8_0 --interleave
bench olmoe-1b-7b-prefill --preset olmoe-1b-7b --tokens 512 --layers 1 --min-time 3 --no-ref \
  --weights f32,q2_k,q3_k,q4_k --activations f32,q8_0
bench qwen3-30b-a3b-quality --preset qwen3-30b-a3b --tokens 16 --iters 3 --weights f32,q2_k,q3_k,q4_k \
  --activations f32,q8_0
# The 256-bit level (its byte layout: Q2_K's values widened with a shift and a mask, no table lookup)
MOE_CPU_ISA=avx2 bench qwen3-30b-a3b-l3-avx2 --preset qwen3-30b-a3b "${L3[@]}" --weights q2_k,q3_k,q4_k \
  --activations f32,q8_0
