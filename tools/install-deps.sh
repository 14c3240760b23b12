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
#   tools/install-deps.sh --windows   also what cross-building for 64-bit Windows with mingw-w64
#                                     and running the tests under Wine takes
#                                     (cmake/toolchains/x86_64-w64-mingw32.cmake): the compiler,
#                                     Wine, cJSON built from its Debian source package into the
#                                     toolchain's root /usr/x86_64-w64-mingw32 (Debian has no
#                                     mingw build of it), and links there to the headers that are
#                                     the same for every target (SIMDe, Vulkan, volk, OpenCL)
set -euo pipefail
aarch64=0
windows=0
for arg in "$@"; do
    case $arg in
    --aarch64) aarch64=1 ;;
    --windows) windows=1 ;;
    *) echo "install-deps: unknown option '$arg' (expected --aarch64 or --windows)" >&2; exit 2 ;;
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
if [ "$windows" -eq 1 ]; then
    packages+=(gcc-mingw-w64-x86-64-posix binutils-mingw-w64-x86-64 mingw-w64-x86-64-dev wine wine64 dpkg-dev)
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
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    need_root() { command -v sudo >/dev/null 2>&1 || { echo "install-deps: not root and no sudo: cannot $1" >&2; exit 1; }; }
    sudo=(sudo)
else
    need_root() { :; }
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} Debian packages are installed"
else
    echo "install-deps: installing ${missing[*]}"
    need_root "install ${missing[*]}"
    if [ "$aarch64" -eq 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        "${sudo[@]}" dpkg --add-architecture arm64
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ "$windows" -eq 1 ]; then
    root=/usr/x86_64-w64-mingw32
    # The target-independent headers, where the toolchain looks (never /usr/include itself: the
    # host's C library headers would be found with them).
    for h in simde vulkan vk_video volk.h volk.c CL; do
        if [ -e "/usr/include/$h" ] && [ ! -e "$root/include/$h" ]; then
            need_root "link /usr/include/$h into $root/include"
            "${sudo[@]}" ln -s "/usr/include/$h" "$root/include/$h"
        fi
    done
    # cJSON for the target: Debian's source package (the version and patches Debian ships),
    # built with the toolchain file as a static library whose functions are not dllexport
    # (CJSON_HIDE_SYMBOLS): libmoe.dll, which links it in, exports only moe's API.
    if [ ! -f "$root/lib/cmake/cJSON/cJSONConfig.cmake" ]; then
        need_root "install cJSON into $root"
        src=$(mktemp -d)
        if ! (cd "$src" && apt-get source -qq cjson > /dev/null 2>&1); then
            # no deb-src entry: Debian's own archive, as the deb lines name it
            echo "install-deps: adding Debian's source archive (deb-src) for cJSON's source package"
            printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
                "${sudo[@]}" tee /etc/apt/sources.list.d/moe-deb-src.sources > /dev/null
            "${sudo[@]}" apt-get update
            (cd "$src" && apt-get source -qq cjson > /dev/null)
        fi
        here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
        cmake -S "$(find "$src" -maxdepth 1 -type d -name 'cjson-*' | head -n 1)" -B "$src/build" \
            -DCMAKE_TOOLCHAIN_FILE="$here/cmake/toolchains/x86_64-w64-mingw32.cmake" -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_C_FLAGS=-DCJSON_HIDE_SYMBOLS -DCMAKE_INSTALL_PREFIX="$root" -DBUILD_SHARED_LIBS=OFF -DBUILD_SHARED_AND_STATIC_LIBS=OFF \
            -DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF -DENABLE_CUSTOM_COMPILER_FLAGS=OFF > /dev/null
        cmake --build "$src/build" -j2 > /dev/null
        "${sudo[@]}" cmake --install "$src/build" > /dev/null
        rm -rf "$src"
        echo "install-deps: cJSON (Debian's source) built and installed into $root"
    fi
fi
