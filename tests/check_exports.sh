#!/usr/bin/env bash
# The shared library exports exactly the public API: every function a public header declares
# with MOE_API (moe.h, and moe_vulkan.h / moe_opencl.h when that backend is built in), and
# nothing else — no internal function, nor anything of the C runtime, cJSON, volk or the
# toolchain linked into it. ELF (.so): its dynamic symbol table (nm -D); Windows (.dll): its
# export table (the toolchain's objdump -p), where MOE_API is __declspec(dllexport).
# Usage: check_exports.sh <shared library> <objdump or nm> <header>...
set -euo pipefail
lib=$1 tool=$2
shift 2
fail() { echo "FAIL: $*" >&2; exit 1; }
declared=$(grep -hv '^[[:space:]]*#' "$@" | tr -s ' \n' ' ' | grep -o 'MOE_API [^(;]*(' | sed 's/($//; s/.*[ *]//' | sort -u)
[ -n "$declared" ] || fail "no MOE_API declaration found in $*"
case $lib in
*.dll)
    # objdump -p: the "[Ordinal/Name Pointer] Table" lists one export a line: "[ n] name"
    exported=$("$tool" -p "$lib" | sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' |
        sed -n 's/^[[:space:]]*\[[[:space:]]*[0-9]*\][[:space:]]*\([^[:space:]]*\).*/\1/p' | sort -u) ;;
*)
    exported=$("$tool" -D --defined-only "$lib" | awk '$2 ~ /^[TWDBRVi]$/ {print $3}' | sed 's/@.*//' |
        grep -v '^_\(init\|fini\|edata\|end\|_bss_start\)$' | sort -u) ;;
esac
[ -n "$exported" ] || fail "$lib exports nothing ($tool found no export table)"
missing=$(comm -23 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
extra=$(comm -13 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
[ -z "$missing" ] || fail "declared with MOE_API but not exported by $lib: $(echo $missing)"
[ -z "$extra" ] || fail "exported by $lib but not declared with MOE_API: $(echo $extra)"
echo "ok: $lib exports the $(printf '%s\n' "$declared" | wc -l) MOE_API functions of $(basename -a "$@" | tr '\n' ' ')and nothing else"
