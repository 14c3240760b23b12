#!/bin/bash
# Guest instructions the CPU kernels execute per forward on 64-bit Arm, counted under qemu-user:
# the baseline level on float activations (what every Arm CPU ran before 0.14.0) against neondot on
# float and on int8 activations. No Arm machine ran these: an instruction count is not a time (it
# weighs a load the same as an sdot), but two kernels of one build on one preset compare.
#
#   bench/results/qemu-aarch64-neondot-instructions/run.sh BUILD [preset] [weights] [down] [tokens]
#
# BUILD: an aarch64 build with the tests (README: tools/install-deps.sh --aarch64 and the toolchain
# file). For each configuration moe-bench runs with 1 and with 3 timed forwards under
# `qemu-aarch64-static -d in_asm,exec,nochain -dfilter RANGES`, which logs every translated block
# that starts inside the level's kernel objects and every execution of one; count.py adds up the
# blocks' instructions; the difference of the two runs over 2 is one forward's (set-up and the first
# forward cancel out). The objects' ranges come from a link map of libmoe (the library relinked
# with -Map, checked to be the same file), the library's load address from the same command's
# -strace, rounded up as ld.so does to the segments' 64 KiB alignment. One thread
# (MOE_NUM_THREADS=1); the activations' quantisation (moe_cpu_quantize_row, pack.c) is outside the
# kernel objects and not counted (~8 K values a decode forward).
set -euo pipefail
B=$(cd "${1:?usage: run.sh BUILD [preset] [weights] [down] [tokens]}" && pwd)
preset=${2:-qwen3-30b-a3b} w=${3:-q4_k} down=${4:-} tokens=${5:-1}
here=$(cd "$(dirname "$0")" && pwd)
lib=$(readlink -f "$B/libmoe.so.0")
map=$(mktemp) relinked=$(mktemp)
trap 'rm -f "$map" "$relinked"' EXIT
(cd "$B" && eval "$(sed "s| -o libmoe.so.[0-9.]*| -o $relinked -Wl,-Map=$map|" CMakeFiles/moe.dir/link.txt)")
cmp -s "$relinked" "$lib" || { echo "the relinked library differs from $lib: rebuild first" >&2; exit 1; }
# "start end" of an object's .text in the map
text() {
  python3 -c 'import sys
for l in open(sys.argv[1]):
    p = l.split()
    if len(p) == 4 and p[0] == ".text" and p[3].startswith("CMakeFiles/" + sys.argv[2] + ".dir/"):
        print(int(p[1], 16), int(p[1], 16) + int(p[2], 16))' "$map" "$1"
}
read -r b0 b1 < <(text moe_kernels_baseline)
read -r p0 p1 < <(text moe_kernels_baseline_prefill)
read -r n0 n1 < <(text moe_kernels_neondot)
args=(--backend cpu --preset "$preset" --tokens "$tokens" --experts 8 --top-k 8 --layers 1 --weights "$w" --no-ref --warmup 0)
[ -n "$down" ] && args+=(--down-weights "$down")
for cfg in "baseline f32" "neondot f32" "neondot q8_0"; do
  read -r isa act <<< "$cfg"
  export MOE_CPU_ISA=$isa MOE_NUM_THREADS=1
  res=$(qemu-aarch64-static -strace "$B/moe-bench" "${args[@]}" --activations "$act" --iters 1 2>&1 >/dev/null |
        grep -A6 "openat(AT_FDCWD,\"$B/libmoe.so.0\",O_RDONLY|O_CLOEXEC) = 3" | grep -m1 "mmap(NULL,[0-9]*,PROT_NONE" | sed 's/.*= //')
  base=$(( (res + 0xffff) & ~0xffff ))
  r() { printf "0x%x..0x%x" $((base + $1)) $((base + $2)); }
  # neondot's float prefill tiles are the baseline's (CMakeLists.txt: float_twin)
  if [ "$isa" = baseline ]; then f="$(r "$b0" "$b1"),$(r "$p0" "$p1")"; else f="$(r "$n0" "$n1"),$(r "$p0" "$p1")"; fi
  c=()
  for it in 1 3; do
    c+=("$(qemu-aarch64-static -d in_asm,exec,nochain -dfilter "$f" "$B/moe-bench" "${args[@]}" --activations "$act" --iters "$it" 2>&1 >/dev/null | python3 "$here/count.py")")
  done
  echo "$preset weights $w${down:+ down $down} T=$tokens $isa $act: $(( (${c[1]%% *} - ${c[0]%% *}) / 2 )) instructions a forward (1 timed forward: ${c[0]%% *}, 3: ${c[1]%% *})"
done
