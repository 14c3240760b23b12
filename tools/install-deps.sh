#!/usr/bin/env bash
# Installs the Debian 12 packages moe builds and tests with, if any is missing (design card's
# list, plus make, pkg-config, clang-format for the format check, the clang sanitizer runtimes
# matplotlib for tools/moe-plot, and Open MPI for moe_mpi and its tests).
# Does nothing when all are there, so the README's commands and CI can both start with it.
# Needs root or sudo only when something is missing.
#   tools/install-deps.sh --aarch64   also what cross-building for 64-bit Arm Linux and running
#                                     the tests under qemu-user takes (cmake/toolchains): the
#                                     cross gcc and libc, qemu-user-static, and Debian's arm64
#                                     builds of cJSON, the Vulkan headers and the OpenCL ICD
#                                     loader (multiarch: dpkg learns the arm64 architecture)
set -euo pipefail
aarch64=0
for arg in "$@"; do
    case $arg in
    --aarch64) aarch64=1 ;;
    *) echo "install-deps: unknown option '$arg' (expected --aarch64)" >&2; exit 2 ;;
    esac
done
packages=(
    cmake gcc clang clang-format make pkg-config
    libvulkan-dev libvulkan-volk-dev glslang-tools spirv-tools
    mesa-vulkan-drivers vulkan-tools vulkan-validationlayers
    ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
    libsimde-dev libcjson-dev python3 python3-venv libclang-rt-14-dev
    python3-matplotlib
    libopenmpi-dev openmpi-bin
)
if [ "$aarch64" -eq 1 ]; then
    packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static libcjson-dev:arm64
               libvulkan-dev:arm64 ocl-icd-opencl-dev:arm64)
fi
# installed PACKAGE[:ARCH]: installed for ARCH (default: this machine's) or architecture-independent.
# (A plain query of a package installed for two architectures answers twice.)
native=$(dpkg --print-architecture)
installed() {
    local name=${1%%:*} arch=${1#*:}
    [ "$arch" = "$1" ] && arch=$native
    dpkg-query -W -f='${Architecture} ${db:Status-Status}\n' "$name" 2>/dev/null | grep -Eqx "($arch|all) installed"
}
missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
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
if [ "$aarch64" -eq 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    "${sudo[@]}" dpkg --add-architecture arm64
fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
