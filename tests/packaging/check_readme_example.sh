#!/usr/bin/env bash
# Checks that README.md shows examples/quickstart.c verbatim: the ```c fenced block that follows
# the first line containing <!-- quickstart --> must equal the file.
# Usage: check_readme_example.sh <README.md> <examples/quickstart.c>
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <README.md> <example.c>" >&2
    exit 2
fi
readme=$1
example=$2
[ -f "$readme" ] || { echo "FAIL: $readme does not exist" >&2; exit 1; }
[ -f "$example" ] || { echo "FAIL: $example does not exist" >&2; exit 1; }

extracted=$(mktemp)
trap 'rm -f "$extracted"' EXIT

# state 0: looking for the marker; 1: looking for the opening ```c; 2: inside the block; 3: closed.
# Only blank lines may separate the marker from the fence.
awk -v out="$extracted" '
    state == 0 { if (index($0, "<!-- quickstart -->")) state = 1; next }
    state == 1 {
        if ($0 ~ /^```[ \t]*c[ \t]*$/) { state = 2; next }
        if ($0 ~ /^[ \t]*$/) next
        print "FAIL: the line after <!-- quickstart --> is not a ```c fence: " $0 > "/dev/stderr"
        state = 9; exit 3
    }
    state == 2 { if ($0 ~ /^```[ \t]*$/) { state = 3; exit 0 } print > out; next }
    END {
        if (state == 0) { print "FAIL: no <!-- quickstart --> marker in README" > "/dev/stderr"; exit 1 }
        if (state == 1) { print "FAIL: no ```c block after <!-- quickstart -->" > "/dev/stderr"; exit 1 }
        if (state == 2) { print "FAIL: the ```c block after <!-- quickstart --> is not closed" > "/dev/stderr"; exit 1 }
    }
' "$readme"

if ! diff -u --label "$example" --label "README.md (quickstart block)" "$example" "$extracted"; then
    echo "FAIL: README.md's quickstart block differs from $example; copy the file into the block" >&2
    exit 1
fi
echo "OK: README.md shows $example verbatim"
