#!/bin/sh
# Runs a Windows program under Wine for CTest (the mingw-w64 toolchain file's
# CMAKE_CROSSCOMPILING_EMULATOR), passing its exit status on. The program's output goes through
# files: Wine starts its services (services.exe, winedevice.exe, ...) on demand from whichever
# program needs them first, they inherit that program's descriptors and outlive it, and CTest
# would wait on a test's output pipe until the test timed out.
out=$(mktemp) || exit 125
err=$(mktemp) || { rm -f "$out"; exit 125; }
wine "$@" > "$out" 2> "$err"
rc=$?
cat "$out"
cat "$err" >&2
rm -f "$out" "$err"
exit "$rc"
