#!/usr/bin/env bash
# Decode latency on a lent NVIDIA GPU machine (no network): where a T=1 forward's time goes on
# the GPU (moe-bench --kernel-times: each kernel's device time), and the placements of the
# hybrid-placement issue (#14 point 4) against the all-CPU decode; each build given runs the
# same decode and placement runs, side by side in one lease, and the last one (the change under
# test) also runs the placements routed on the CPU (--home cpu), the all-CPU decode, the same
# with its fences polled (MOE_VK_WAIT_SPIN_US) and its Vulkan and OpenCL test suites. The
# builds are Release builds made on the development machine (-DMOE_MPI=OFF) that travel with
# the working tree, with .gl/ (bench/results/nvidia-h200's machine.txt: the Debian packages
# such a machine may lack), which loaders.sh sets up. Each step has its own time limit; the
# log goes to $OUT/log.txt, the JSON results to $OUT/json.tar.gz.
# usage (from the repository root): bench/results/nvidia-h200-decode/run.sh BUILD [BUILD...]
set -u
. bench/results/nvidia-h200/loaders.sh
b() { # b BUILD NAME LIMIT ARGS...: one moe-bench run, its JSON kept as NAME-BUILD.json
    local build=$1 name=$2 limit=$3; shift 3
    step "$build: moe-bench $*"
    MOE_BENCH_NO_PROGRESS=1 timeout "$limit" "$build/moe-bench" "$@" --json "$out/json/$name-$build.json"
}
dec=(--preset qwen3-30b-a3b --tokens 1 --weights q4_0 --layers 6 --min-time 0.3)
hyb=(--preset qwen3-30b-a3b --tokens 1 --weights q4_0 --layers 8 --trace-reuse 0.8 --min-time 0.3)
for build in "$@"; do
    step "$build: moe-info"
    timeout 20 "$build/moe-info" | grep -E 'backend|device 0|features' | head -12
    b "$build" decode 70 --backend all --device discrete "${dec[@]}" --kernel-times
    b "$build" placed 50 --backend vulkan "${hyb[@]}" --cpu-experts 0,64 --kernel-times
done
last=${!#}
b "$last" placed-home-cpu 50 --backend vulkan "${hyb[@]}" --cpu-experts 64,96 --home cpu --kernel-times
b "$last" cpu 25 --backend cpu "${hyb[@]}"
export MOE_VK_WAIT_SPIN_US=200
b "$last" decode-spin 45 --backend vulkan "${dec[@]}"
b "$last" placed-home-cpu-spin 50 --backend vulkan "${hyb[@]}" --cpu-experts 64,96 --home cpu
unset MOE_VK_WAIT_SPIN_US
step "$last: ctest Vulkan and OpenCL"
timeout 110 ctest --test-dir "/work/main/$last" -R 'vulkan|opencl' -E validation -j 16 \
    --timeout 100 --output-on-failure 2>&1 | grep -v -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed'
step "done"
tar -C "$out" -czf "$out/json.tar.gz" json && rm -rf "$out/json"
