#!/usr/bin/env bash
# The bfloat16-pair activations (moe 0.11.0, activation_dtype BF16) beside float32 activations and the
# integer opt-in, decode T=1 and prefill T=512, on the 2-core Zen 4 KVM guest (machine.txt: AVX512_BF16).
# Per preset: the layer with the 8 experts a forward uses held in the 32 MiB L3 (--experts 8 --top-k 8
# --layers 1: the kernels' own floor, as ../amd-epyc-zen4-2core-compute-floor/floors.sh), then the preset
# streamed from memory, every run timed forward by forward in turn (--interleave); then prefill T=512
# at qwen3-30b-a3b. Run from the repository root after the README's build; writes <name>.json / .txt here.
set -euo pipefail
out=$(dirname "$0")
bench() { # name, moe-bench flags...
  local name=$1
  shift
  MOE_BENCH_NO_PROGRESS=1 build/moe-bench --backend cpu --min-time 3 --no-ref \
    --json "$out/$name.json" "$@" | tee "$out/$name.txt"
}
for p in qwen3-30b-a3b olmoe-1b-7b; do
  bench "$p-l3" --preset "$p" --tokens 1 --experts 8 --top-k 8 --layers 1 --weights q4_0,mxfp4,q4_k \
    --activations f32,bf16,q8_0
  bench "$p-stream" --preset "$p" --tokens 1 --layers auto --weights f32,q4_0,mxfp4,q4_k \
    --activations f32,bf16 --interleave
done
bench qwen3-30b-a3b-prefill --preset qwen3-30b-a3b --tokens 512 --weights f32,q4_0,mxfp4,q4_k \
  --activations f32,bf16
