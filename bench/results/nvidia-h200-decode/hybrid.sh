#!/usr/bin/env bash
# The hybrid placement of #14 point 4 at a model size where the CPU decodes from DRAM: 24 layers
# of qwen3-30b-a3b in Q4_0 (7.8 GB; with the trace's reuse the experts read between two visits
# of a layer are ~0.6 GB, twice the host's 300 MiB L3), all on the CPU backend against the same
# layers with the last 32, 48 or 64 experts of each on the CPU and the rest on the GPU (a GPU
# budget of 75%, 62% or 50% of the model), routed and combined on the CPU (--home cpu). The
# GPU's clocks are logged beside (nvidia-smi), since its kernel times moved by 3x between runs
# of one lease. Lease 3 (log-3.txt) ran 32 and 64 on every core: the GPU holding 75% won (0.333
# against 0.557 ms all-CPU), holding 50% lost (1.564 ms; the CPU context's steps took 1.8 ms a
# forward for half the experts, where all 8 took 0.56 alone). The runs after the first two are
# for the next lease: 48 between them, and the CPU on 14 threads, leaving cores to the GPU
# driver's threads and the calling thread's waits, all-CPU beside it: whether that step time
# is oversubscription.
# usage (from the repository root): bench/results/nvidia-h200-decode/hybrid.sh BUILD
set -u
build=$1
. bench/results/nvidia-h200/loaders.sh
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu \
    --format=csv -lms 500 > "$out/clocks.csv" 2>&1 &
smi=$!
b() { # b NAME LIMIT ARGS...: one moe-bench run, its JSON kept as NAME.json
    local name=$1 limit=$2; shift 2
    step "moe-bench $*"
    MOE_BENCH_NO_PROGRESS=1 timeout "$limit" "$build/moe-bench" "$@" --json "$out/json/$name.json"
}
hyb=(--preset qwen3-30b-a3b --tokens 1 --weights q4_0 --layers 24 --trace-reuse 0.8 --min-time 0.5)
b hybrid-24-cpu 40 --backend cpu "${hyb[@]}"
b hybrid-24-placed 150 --backend vulkan "${hyb[@]}" --cpu-experts 32,48,64 --home cpu
b hybrid-24-cpu-t14 40 --backend cpu "${hyb[@]}" --threads 14
b hybrid-24-placed-t14 120 --backend vulkan "${hyb[@]}" --cpu-experts 48,64 --home cpu --threads 14
kill $smi
step "done"
tar -C "$out" -czf "$out/json.tar.gz" json && rm -rf "$out/json"
