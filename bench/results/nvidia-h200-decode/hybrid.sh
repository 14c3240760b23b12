#!/usr/bin/env bash
# The hybrid placement of #14 point 4 at a model size where the CPU decodes from DRAM: 24 layers
# of qwen3-30b-a3b in Q4_0 (7.8 GB; with the trace's reuse the experts read between two visits
# of a layer are ~0.6 GB, twice the host's 300 MiB L3), all on the CPU backend against the same
# layers with the last 32 or 64 experts of each on the CPU and the rest on the GPU (a GPU budget
# of 75% or 50% of the model), routed and combined on the CPU (--home cpu). The GPU's clocks
# are logged beside (nvidia-smi), since its kernel times moved by 3x between runs of one lease.
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
b hybrid-24-placed 150 --backend vulkan "${hyb[@]}" --cpu-experts 32,64 --home cpu
kill $smi
step "done"
tar -C "$out" -czf "$out/json.tar.gz" json && rm -rf "$out/json"
