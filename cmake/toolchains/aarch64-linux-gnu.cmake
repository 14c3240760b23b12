# Cross-compiling for 64-bit Arm Linux with Debian's toolchain (gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross), arm64 libraries from Debian's multiarch packages (libcjson-dev:arm64),
# and the tests run under qemu-user (qemu-user-static). .ci/run's aarch64 stage uses it:
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# Headers, libraries and packages of the target only; programs (glslang, python) of the build
# machine. Appended, so that -DCMAKE_FIND_ROOT_PATH=<prefix> adds an arm64 install of moe (or of
# anything else) to the roots: how a project cross-built with this file finds moe::moe.
list(APPEND CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)

# The tests run under qemu-user. Debian's arm64 libraries (libc6:arm64, which libcjson1:arm64
# brings) give the programs their loader and libraries at the usual paths, so qemu runs them as
# they are. (Its -L sysroot option instead, with the cross libc in /usr/aarch64-linux-gnu,
# left multi-threaded programs spinning forever under qemu 7.2.)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static)
