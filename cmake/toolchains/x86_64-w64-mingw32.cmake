# Cross-compiling for 64-bit Windows with Debian's mingw-w64 toolchain (gcc-mingw-w64-x86-64-posix)
# and running the tests under Wine (wine64). Libraries built for the target (cJSON, from its Debian
# source package: tools/install-deps.sh --windows) go under /usr/x86_64-w64-mingw32, the
# toolchain's own root. .ci/run's windows stage uses it:
#   cmake -S . -B build-windows -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/x86_64-w64-mingw32.cmake
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
# The posix flavour of the compiler: its C11 runtime (winpthreads) is the one Debian builds
# libgcc and libssp against, and the library itself calls only Windows' own thread API.
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)

# Headers, libraries and packages of the target only; programs (glslang, python) of the build
# machine. Appended, so that -DCMAKE_FIND_ROOT_PATH=<prefix> adds a Windows install of moe (or of
# anything else) to the roots: how a project cross-built with this file finds moe::moe.
list(APPEND CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)

# The toolchain's own runtime (libgcc; winpthreads, which the posix flavour's thread-local
# storage and the tests' threads use) is linked statically into libmoe.dll and the programs, so
# that they need only Windows' own DLLs: nothing of the toolchain's to ship or put on a PATH.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static")

# Wine, through a wrapper that keeps Wine's own long-lived processes off CTest's pipes
set(CMAKE_CROSSCOMPILING_EMULATOR ${CMAKE_CURRENT_LIST_DIR}/wine-run.sh)
