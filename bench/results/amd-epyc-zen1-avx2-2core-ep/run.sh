#!/usr/bin/env bash
# Reproduces the files of this folder: expert parallelism (moe-bench --ep, moe_mpi over Open MPI's
# shared-memory transport) on one 2-core machine, CPU backend on every rank, each rank one thread
# (two with one rank; with 4 ranks two ranks share a core).
#  - scaling-{strong,weak}-N: qwen3-30b-a3b (128 experts, top-8) over N = 1, 2, 4 ranks; strong:
#    1, 16 and 512 tokens in all; weak: 1, 8 and 256 tokens per rank; f32 weights, and q4_0 with
#    float and with int8 activations (the latter the fastest decode path on this CPU).
#  - model-*: the per-rank work of a multi-node deployment, for the model in docs/ARCHITECTURE.md
#    ("A multi-node model"): 2 ranks holding what one rank of the real deployment holds and
#    receiving as many rows per token — deepseek-v3's expert shape with 16 experts (8 per rank, as
#    on 32 ranks of the real 256), and mixtral-8x22b's with 2 experts (1 per rank, as on 8 ranks).
# Waits (up to WAIT_S seconds per run) for the 1-minute load average to drop under 0.5 first.
# usage: bench/results/amd-epyc-zen1-avx2-2core-ep/run.sh [BUILD_DIR]   (from the repository root)
set -euo pipefail
. "$(dirname "$0")/../wait_quiet.sh" # build, out, wait_s, log; quiet, bench, ep_bench
common=(--backend cpu --weights f32,q4_0 --activations f32,q8_0 --warmup 2 --iters 10)
for n in 1 2 4; do
    ep_bench "scaling-strong-$n" "$n" --ep strong --preset qwen3-30b-a3b --sweep-tokens 1,16,512 "${common[@]}"
done
for n in 1 2 4; do
    ep_bench "scaling-weak-$n" "$n" --ep weak --preset qwen3-30b-a3b --sweep-tokens 1,8,256 "${common[@]}"
done
model=(--backend cpu --weights q8_0,q4_0 --activations q8_0 --warmup 1 --iters 5 --sweep-tokens 1,8,64)
ep_bench model-deepseek-v3-shape 2 --ep weak --preset deepseek-v3 --experts 16 --groups 0 --topk-group 0 "${model[@]}"
ep_bench model-mixtral-8x22b-shape 2 --ep weak --preset mixtral-8x22b --experts 2 "${model[@]}"
