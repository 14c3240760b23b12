#!/usr/bin/env bash
# Installs the Debian 12 packages moe builds and tests with, if any is missing (design card's
# list, plus make, pkg-config, clang-format for the format check, the clang sanitizer runtimes
# matplotlib for tools/moe-plot, and Open MPI for moe_mpi and its tests).
# Does nothing when all are there, so the README's commands and CI can both start with it.
# Needs root or sudo only when something is missing.
set -euo pipefail
packages=(
    cmake gcc clang clang-format make pkg-config
    libvulkan-dev libvulkan-volk-dev glslang-tools spirv-tools
    mesa-vulkan-drivers vulkan-tools vulkan-validationlayers
    ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
    libsimde-dev libcjson-dev python3 python3-venv libclang-rt-14-dev
    python3-matplotlib
    libopenmpi-dev openmpi-bin
)
missing=()
for p in "${packages[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} Debian packages are installed"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: not root and no sudo: cannot install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
