#!/usr/bin/env bash
# Integer activations on Q5_K and Q6_K (moe 0.13.0): a Q4_K_M / Q5_K_M file's layer (Q4_K / Q5_K gate/up,
# the down projections in Q6_K: --down-weights q6_k) and the pure formats, on float32 activations and on
# the opt-ins, on the 2-core Zen 4 KVM guest (AVX512_VNNI, AVX512_BF16). Decode T=1 with the 8 experts a
# forward uses held in the 32 MiB L3 (--experts 8 --top-k 8 --layers 1: the kernels' own floor), at the
# machine's level and at the avx2 one (MOE_CPU_ISA=avx2: AVX2's vpmaddubsw / vpmaddwd, as an AVX2-only CPU
# runs them); qwen3-30b-a3b streamed from memory (--interleave); prefill T=512. With OLD=<an older
# build/moe-bench> it then alternates that binary and this one on the L3 and streamed layers (the A/B in
# README.md). Run from the repository root after the README's build; writes <name>.json / .txt here.
set -euo pipefail
out=$(dirname "$0")
bench() { # name, moe-bench flags...
  local name=$1
  shift
  MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --no-ref --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}
L3=(--tokens 1 --experts 8 --top-k 8 --layers 1 --min-time 3)
for p in qwen3-30b-a3b olmoe-1b-7b; do
  bench "$p-l3-q6_k-down" --preset "$p" "${L3[@]}" --weights q4_k,q5_k,q6_k --down-weights q6_k \
    --activations f32,q8_0,bf16
  bench "$p-l3-pure" --preset "$p" "${L3[@]}" --weights q4_k,q5_k,q6_k --activations f32,q8_0
done
MOE_CPU_ISA=avx2 bench qwen3-30b-a3b-l3-q6_k-down-avx2 --preset qwen3-30b-a3b "${L3[@]}" \
  --weights q4_k,q5_k,q6_k --down-weights q6_k --activations f32,q8_0
bench qwen3-30b-a3b-stream-q6_k-down --preset qwen3-30b-a3b --tokens 1 --layers auto --min-time 3 \
  --weights f32,q4_k,q5_k,q6_k --down-weights q6_k --activations f32,q8_0,bf16 --interleave
bench olmoe-1b-7b-prefill-q6_k-down --preset olmoe-1b-7b --tokens 512 --layers 1 --min-time 3 \
  --weights q4_k,q5_k,q6_k --down-weights q6_k --activations f32,q8_0
if [ -n "${OLD:-}" ]; then
  ab() { # label, binary, moe-bench flags...
    local label=$1 bin=$2
    shift 2
    echo "== $label"
    MOE_BENCH_NO_PROGRESS=1 "$bin" --backend cpu --no-ref "$@" | grep -E "^(backend|cpu) "
  }
  {
    for i in 1 2; do
      ab "old, L3, run $i" "$OLD" --preset qwen3-30b-a3b "${L3[@]}" --weights q4_k,q5_k,q6_k --down-weights q6_k \
        --activations f32,q8_0
      ab "new, L3, run $i" build/moe-bench --preset qwen3-30b-a3b "${L3[@]}" --weights q4_k,q5_k,q6_k \
        --down-weights q6_k --activations f32,q8_0
    done
    for b in old new; do
      bin=$OLD
      [ "$b" = new ] && bin=build/moe-bench
      ab "$b, streamed" "$bin" --preset qwen3-30b-a3b --tokens 1 --layers auto --min-time 3 --weights q4_k,q5_k,q6_k \
        --down-weights q6_k --activations f32,q8_0 --interleave
    done
  } | tee "$out/ab-old-new.txt"
fi
