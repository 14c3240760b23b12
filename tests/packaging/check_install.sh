#!/usr/bin/env bash
# Installs a built moe into a scratch prefix and checks that a downstream project can use it:
#   1. CMake package: find_package(moe CONFIG REQUIRED), link moe::moe and moe::moe_static, run both;
#   2. pkg-config: cc main.c $(pkg-config --cflags --libs moe), run with LD_LIBRARY_PATH;
#   3. the installed tools (moe-info, moe-run, moe-bench, moe-plot) run from the prefix with no
#      LD_LIBRARY_PATH and load the installed libmoe.
# Usage: check_install.sh <cmake> <moe binary dir> <moe source dir> <C compiler> <work dir>
#                         [config] [extra C/link flags, e.g. sanitizers]
# Cross-compiled builds: MOE_TEST_EMULATOR is the command the built programs run under (words
# separated by '|', e.g. qemu-user or wine) and MOE_TEST_TOOLCHAIN_FILE the toolchain the consumer
# project is configured with. Windows programs (.exe; mingw-w64) find libmoe.dll beside them or
# on the PATH: it is copied beside each consumer, as an application ships it, and the installed
# tools find it in bin/, where it is installed; their imports are read with the toolchain's
# objdump instead of readelf and ldd.
# Exits non-zero on any failure.
set -euo pipefail
emulator=()
[ -n "${MOE_TEST_EMULATOR:-}" ] && IFS='|' read -r -a emulator <<< "$MOE_TEST_EMULATOR"

if [ $# -lt 5 ]; then
    echo "usage: $0 <cmake> <binary dir> <source dir> <C compiler> <work dir> [config] [extra flags]" >&2
    exit 2
fi
cmake_exe=$1
bin_dir=$2
src_dir=$3
cc=$4
work=$5
config=${6:-}
extra_flags=${7:-}

prefix=$work/prefix
consumer_build=$work/consumer-build
pc_build=$work/pkgconfig-build
rm -rf "$prefix" "$consumer_build" "$pc_build"
mkdir -p "$prefix" "$consumer_build" "$pc_build"

step() { printf '\n=== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# deps_of FILE: the shared libraries FILE loads, as ldd lists them. ldd is the host's; under an
# emulator the target's own loader lists them (LD_TRACE_LOADED_OBJECTS, what ldd sets for it).
windows=0
case "$(basename "$cc")" in *mingw32*) windows=1 ;; esac
exe=""
[ "$windows" -eq 0 ] || exe=.exe
can_list_deps() { [ "$windows" -eq 0 ] && { [ ${#emulator[@]} -gt 0 ] || command -v ldd >/dev/null 2>&1; }; }
deps_of() {
    if [ ${#emulator[@]} -gt 0 ]; then LD_TRACE_LOADED_OBJECTS=1 "${emulator[@]}" "$1"; else ldd "$1"; fi
}

# ---- install ----------------------------------------------------------------------------------
step "install $bin_dir -> $prefix"
config_args=()
if [ -n "$config" ]; then config_args=(--config "$config"); fi
"$cmake_exe" --install "$bin_dir" --prefix "$prefix" "${config_args[@]}"

[ -f "$prefix/include/moe.h" ] || fail "moe.h was not installed in $prefix/include"
pc_file=$(find "$prefix" -path '*/pkgconfig/moe.pc' -print | head -n 1)
[ -n "$pc_file" ] || fail "moe.pc was not installed under $prefix"
pc_dir=$(dirname "$pc_file")
libdir=$(dirname "$pc_dir")           # <prefix>/<CMAKE_INSTALL_LIBDIR>
[ -f "$(find "$libdir" -maxdepth 3 -name moeConfig.cmake -print | head -n 1)" ] \
    || fail "moeConfig.cmake was not installed under $libdir/cmake"
echo "libdir: $libdir"

# ---- CMake package ----------------------------------------------------------------------------
step "configure the consumer project with find_package(moe)"
cmake_flags=()
if [ -n "$extra_flags" ]; then
    cmake_flags=("-DCMAKE_C_FLAGS=$extra_flags" "-DCMAKE_EXE_LINKER_FLAGS=$extra_flags")
fi
if [ -n "${MOE_TEST_TOOLCHAIN_FILE:-}" ]; then
    # A cross toolchain searches packages under its roots only: the prefix is made one.
    cmake_flags+=("-DCMAKE_TOOLCHAIN_FILE=$MOE_TEST_TOOLCHAIN_FILE" "-DCMAKE_FIND_ROOT_PATH=$prefix")
fi
# Only the scratch prefix may satisfy find_package(moe): ignore the package registry and any
# prefix inherited from the environment.
CMAKE_PREFIX_PATH="$prefix" "$cmake_exe" -S "$src_dir/tests/packaging/consumer" -B "$consumer_build" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF \
    -DMOE_QUICKSTART="$src_dir/examples/quickstart.c" \
    ${config:+-DCMAKE_BUILD_TYPE="$config"} "${cmake_flags[@]}"
found_dir=$(sed -n 's/^moe_DIR:PATH=//p' "$consumer_build/CMakeCache.txt")
case "$found_dir" in
    "$prefix"/*) echo "found moe in $found_dir" ;;
    *) fail "find_package(moe) found '$found_dir', not the package in $prefix" ;;
esac

step "build the consumer project"
"$cmake_exe" --build "$consumer_build" ${config:+--config "$config"}

find_exe() {
    local f
    f=$(find "$consumer_build" -type f \( -name "$1" -o -name "$1.exe" \) -print | head -n 1)
    [ -n "$f" ] || fail "built executable $1 not found in $consumer_build"
    printf '%s\n' "$f"
}
consumer=$(find_exe consumer)
consumer_static=$(find_exe consumer_static)

# (Outputs are captured before grep: with pipefail, grep -q closing a pipe early can fail it.)
if [ "$windows" -eq 1 ]; then
    objdump=${MOE_TEST_OBJDUMP:?the toolchain's objdump (tests/packaging/CMakeLists.txt passes CMake's)}
    imports=$("$objdump" -p "$consumer_static")
    case "$imports" in *"DLL Name: libmoe"*) fail "consumer_static (moe::moe_static) imports libmoe.dll" ;; esac
    imports=$("$objdump" -p "$consumer")
    case "$imports" in *"DLL Name: libmoe.dll"*) ;; *) fail "consumer (moe::moe) does not import libmoe.dll" ;; esac
    cp "$prefix/bin/libmoe.dll" "$(dirname "$consumer")/"
elif command -v readelf >/dev/null 2>&1; then
    dyn=$(readelf -d "$consumer_static")
    case "$dyn" in *"NEEDED"*"libmoe"*) fail "consumer_static (moe::moe_static) depends on the shared libmoe" ;; esac
    dyn=$(readelf -d "$consumer")
    case "$dyn" in *"NEEDED"*"libmoe"*) ;; *) fail "consumer (moe::moe) does not depend on the shared libmoe" ;; esac
fi

step "run consumer (moe::moe)"
"${emulator[@]}" "$consumer"
step "run consumer_static (moe::moe_static)"
"${emulator[@]}" "$consumer_static"
step "run the README's quickstart, built against the installed package"
quickstart=$(find_exe quickstart)
out=$("${emulator[@]}" "$quickstart") || fail "the quickstart failed"
case "$out" in *"relative L2 error vs reference"*) ;; *) fail "the quickstart printed no comparison:
$out" ;; esac

# ---- pkg-config -------------------------------------------------------------------------------
step "pkg-config build (PKG_CONFIG_PATH=$pc_dir)"
command -v pkg-config >/dev/null 2>&1 || fail "pkg-config is not installed"
export PKG_CONFIG_PATH="$pc_dir"
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
pc_version=$(pkg-config --modversion moe) || fail "pkg-config cannot read $pc_file"
pc_includedir=$(pkg-config --variable=includedir moe)
pc_libdir=$(pkg-config --variable=libdir moe)
echo "moe.pc: version $pc_version, includedir $pc_includedir, libdir $pc_libdir"
# moe.pc must describe this install, not the configure-time CMAKE_INSTALL_PREFIX: otherwise the
# build below would use (or fail to find) a different copy of moe.
[ "$(cd "$pc_includedir" 2>/dev/null && pwd -P)" = "$(cd "$prefix/include" && pwd -P)" ] \
    || fail "moe.pc's includedir '$pc_includedir' is not $prefix/include (moe.pc is not relocatable)"
[ "$(cd "$pc_libdir" 2>/dev/null && pwd -P)" = "$(cd "$libdir" && pwd -P)" ] \
    || fail "moe.pc's libdir '$pc_libdir' is not $libdir (moe.pc is not relocatable)"

pc_flags=$(pkg-config --cflags --libs moe)
echo "$cc main.c $pc_flags"
# shellcheck disable=SC2086  # the flags must split into words
"$cc" $extra_flags "-DEXPECTED_VERSION=$pc_version" "$src_dir/tests/packaging/consumer/main.c" \
    -o "$pc_build/consumer_pc$exe" $pc_flags
[ "$windows" -eq 0 ] || cp "$prefix/bin/libmoe.dll" "$pc_build/"
step "run consumer_pc (LD_LIBRARY_PATH=$libdir)"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "${emulator[@]}" "$pc_build/consumer_pc$exe"
if can_list_deps; then
    deps=$(LD_LIBRARY_PATH="$libdir" deps_of "$pc_build/consumer_pc")
    case "$deps" in *"libmoe"*" => $libdir/libmoe"*) ;; *) fail "consumer_pc did not load libmoe from $libdir:
$deps" ;; esac
fi

# ---- installed tools --------------------------------------------------------------------------
# They must run from the prefix as they are: no LD_LIBRARY_PATH, the libmoe they load the
# installed one (RPATH relative to the binary), whatever the build tree holds.
bindir=$prefix/bin
step "installed tools in $bindir, run without LD_LIBRARY_PATH"
# Each tool this build made (MOE_BUILD_TOOLS: moe-info, moe-run and moe-plot; MOE_BUILD_BENCH:
# moe-bench) must be installed.
built() { [ -f "$bin_dir/$1" ] || [ -f "$bin_dir/$1.exe" ]; }
for tool in moe-info moe-run moe-bench; do
    if built "$tool"; then [ -x "$bindir/$tool$exe" ] || fail "$tool was built but not installed in $bindir"; fi
done
if built moe-info; then [ -x "$bindir/moe-plot" ] || fail "moe-plot was not installed in $bindir"; fi
if can_list_deps; then
    for tool in moe-info moe-run moe-bench; do
        [ -x "$bindir/$tool" ] || continue
        deps=$(unset LD_LIBRARY_PATH && deps_of "$bindir/$tool")
        # The RPATH shows as <prefix>/bin/../lib: compare the directories, resolved.
        lib=$(printf '%s\n' "$deps" | sed -n 's/^[[:space:]]*libmoe[^ ]* => \([^ ]*\).*/\1/p' | head -n 1)
        [ -n "$lib" ] && [ "$(cd "$(dirname "$lib")" && pwd -P)" = "$(cd "$libdir" && pwd -P)" ] \
            || fail "installed $tool does not load libmoe from $libdir:
$deps"
    done
fi
if [ -x "$bindir/moe-info$exe" ]; then
    out=$(env -u LD_LIBRARY_PATH "${emulator[@]}" "$bindir/moe-info$exe") || fail "installed moe-info failed"
    case "$out" in *"cpu"*) ;; *) fail "installed moe-info did not list the cpu backend:
$out" ;; esac
    env -u LD_LIBRARY_PATH "${emulator[@]}" "$bindir/moe-run$exe" --help >/dev/null || fail "installed moe-run --help failed"
fi
if [ -x "$bindir/moe-bench$exe" ]; then
    out=$(env -u LD_LIBRARY_PATH MOE_BENCH_NO_PROGRESS=1 "${emulator[@]}" "$bindir/moe-bench$exe" --backend cpu --tokens 3 --d-model 32 \
        --d-ff 16 --experts 4 --top-k 2 --iters 2 --warmup 1 --no-bandwidth) || fail "installed moe-bench failed"
    case "$out" in *"cpu "*) ;; *) fail "installed moe-bench printed no result:
$out" ;; esac
fi
if [ -x "$bindir/moe-plot" ] && command -v python3 >/dev/null 2>&1 && python3 -c 'import matplotlib' 2>/dev/null; then
    "$bindir/moe-plot" --help >/dev/null || fail "installed moe-plot --help failed"
fi

step "OK: the installed package works through CMake and pkg-config, and its tools run from $prefix"
