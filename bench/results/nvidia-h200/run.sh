#!/usr/bin/env bash
# Runs the GPU checks of the weight-format (#11) and hybrid-placement (#14) issues on a lent
# machine with an NVIDIA GPU and no network: the Vulkan and OpenCL CTest suites, then moe-bench
# decode and prefill per format on every backend side by side, then placements (all GPU, hybrid
# with a GPU budget smaller than the model, cached, all CPU) on routing with temporal locality.
#
# Nothing is built there: BUILD_DIR (default build-dev) is a Release build made on the
# development machine (Debian 12, -DMOE_MPI=OFF) that travels with the working tree, and the
# shared libraries it needs that such a machine may lack travel as Debian packages in .gl/
# (libvulkan1 and libglvnd's libraries, libcjson1, ocl-icd-libopencl1; fetched with
# apt-get download, see machine.txt). The driver's
# Vulkan and OpenCL ICDs are found under /usr/local/nvidia when the usual folders have none.
# CTest's files name the build by its absolute path, so /work/main is made a link to the
# checkout when it does not exist there.
#
# Decode runs 6 layers (not --layers auto, whose rule sizes the count by the host's last-level
# cache): at 6 the weights read between two visits of a layer exceed the H200's 60 MB L2 in every
# format (110 MB for qwen3-30b-a3b at 4 bits).
# Each step has its own time limit, so one that hangs costs only its own share; everything
# goes to $OUT/log.txt (kept here as log-2.txt) and the JSON results of the runs that finished to
# $OUT/json.tar.gz (unpacked into this folder). machine.txt says what ran and what was cut short.
# usage (from the repository root): bench/results/nvidia-h200/run.sh [BUILD_DIR]
set -u
build=${1:-build-dev}
. bench/results/nvidia-h200/loaders.sh

step "moe-info"
timeout 20 "$build/moe-info"
"$build/moe-info" 2>&1 | grep -q 'backend vulkan: 0 devices' &&
    VK_LOADER_DEBUG=error,warn,driver timeout 20 "$build/moe-info" 2>&1 | head -60

step "ctest: Vulkan and OpenCL"
timeout 100 ctest --test-dir "/work/main/$build" -R 'vulkan|opencl' -E validation -j 16 \
    --timeout 90 --output-on-failure 2>&1 | grep -v -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed'

b() {
    local name=$1 limit=$2; shift 2
    step "moe-bench $*"
    MOE_BENCH_NO_PROGRESS=1 timeout "$limit" "$build/moe-bench" "$@" --json "$out/json/$name.json"
}
# The GPU devices only (--device discrete): this machine's CPU figures are in log-1.txt.
gpu=(--backend all --device discrete)
b decode-olmoe-1b-7b 60 "${gpu[@]}" --preset olmoe-1b-7b --tokens 1 --weights f32,f16,bf16,q8_0,q4_0,q4_k --layers 6 --min-time 0.3
b decode-qwen3-30b-a3b 55 "${gpu[@]}" --preset qwen3-30b-a3b --tokens 1 --weights f32,bf16,q8_0,q4_0,q4_k --layers 6 --min-time 0.3
b prefill-olmoe-1b-7b 35 "${gpu[@]}" --preset olmoe-1b-7b --tokens 512 --weights f32,bf16,q8_0,q4_0,q4_k --min-time 0.3 --no-ref
hyb=(--preset qwen3-30b-a3b --tokens 1 --weights q4_0 --layers 8 --trace-reuse 0.8 --min-time 0.5)
b placed-qwen3-30b-a3b-vulkan 80 --backend vulkan "${hyb[@]}" --cpu-experts 0,64,96,128 --cache-slots 0,32
b placed-qwen3-30b-a3b-cpu 25 --backend cpu "${hyb[@]}"

step "done"
tar -C "$out" -czf "$out/json.tar.gz" json && rm -rf "$out/json"
