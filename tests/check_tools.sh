#!/usr/bin/env bash
# The command-line tools end to end (label "cpu"): moe-run on every tests/data/hf-moe model
# (output compared with y_ref by test_hf_models --compare), --stats, --weights (bf16 on every
# model; q8_0/q4_0, which none of these models' sizes allow, refused clearly), the user errors
# (each a message naming the file, a non-zero exit, and nothing at the output path), the output
# path (written through links, atomically; devices, FIFOs and directories refused; inputs that
# are FIFOs or devices refused without blocking), --device (by name, type and index, in moe-run
# and moe-info), and moe-info in both formats (its features and weight formats included: each
# device's text and JSON agree, a GPU shows no CPU feature); GGUF files (tests/data/gguf-moe)
# through moe-run and moe-info --model, and their user errors.
# Usage: check_tools.sh <moe-run> <moe-info> <test_hf_models> <hf-moe dir> <work dir>
# MOE_TEST_EMULATOR (optional): the command the programs run under when cross-compiled, its
# words separated by '|' (CMake's CMAKE_CROSSCOMPILING_EMULATOR, e.g. qemu-user).
set -euo pipefail
# A command failing outside any check ends the script (set -e): say which line and status, so
# that a failure the program itself does not explain (a Windows program under Wine, whose own
# messages WINEDEBUG=-all hides) can still be found in the log.
trap 'echo "check_tools.sh: stopped at line $LINENO: a command exited with status $?" >&2' ERR
emulator=()
[ -n "${MOE_TEST_EMULATOR:-}" ] && IFS='|' read -r -a emulator <<< "$MOE_TEST_EMULATOR"
# Windows programs (cross-built with mingw-w64, run under Wine): the POSIX-only checks give way
# to their Windows counterparts.
windows=0
case "$1" in *.exe) windows=1 ;; esac
data=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
if [ "$windows" -eq 1 ]; then
    # Their text ends lines with CR LF: each runs through a wrapper (a script, so that `timeout`
    # can run it) that passes its exit status on and its output with LF line ends.
    cat > "$work/lf.sh" <<'SH'
#!/usr/bin/env bash
out=$(mktemp) err=$(mktemp) rc=0
"$@" > "$out" 2> "$err" || rc=$?
tr -d '\r' < "$out"
tr -d '\r' < "$err" >&2
rm -f "$out" "$err"
exit "$rc"
SH
    chmod +x "$work/lf.sh"
    emulator=("$work/lf.sh" "${emulator[@]}")
fi
run=("${emulator[@]}" "$1") info=("${emulator[@]}" "$2") compare=("${emulator[@]}" "$3")
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_BACKEND=cpu

# ---- every model through moe-run ---------------------------------------------------------------
models=(deepseek_v3_T8_d36_f20_E16_k4_g4:1 mixtral_T5_d48_f80_E4_k2:0 olmoe_T9_d40_f24_E32_k8:0
        qwen2_moe_T6_d32_f40_E8_k2:0 switch_T12_d32_f48_E4_cf1.0:1)
for m in "${models[@]}"; do
    name=${m%:*} layer=${m#*:}
    "${run[@]}" --model "$data/$name" --layer "$layer" --input "$data/$name/x.npy" --output "$work/$name.npy" \
        --backend cpu --stats > "$work/$name.stats"
    "${compare[@]}" --compare "$work/$name.npy" "$data/$name/y_ref.npy" 1e-4
    for key in "backend: cpu" "expert tokens:" "aux_loss:" "z_loss:"; do
        grep -q "$key" "$work/$name.stats" || fail "moe-run --stats for $name prints no '$key'"
    done
done
grep -q "dropped: [1-9]" "$work/switch_T12_d32_f48_E4_cf1.0.stats" || fail "the Switch model dropped no token"
grep -q "^weights: f32 (the checkpoint's own)" "$work/mixtral_T5_d48_f80_E4_k2.stats" ||
    fail "moe-run --stats does not name the checkpoint's own storage format"

# ---- --weights ------------------------------------------------------------------------------------
mix=$data/mixtral_T5_d48_f80_E4_k2
# bf16 on every model: within bf16's rounding of the float64 reference (relative L2 ~3e-3), and
# not within float32's 1e-4, so the experts really were stored in bf16.
for m in "${models[@]}"; do
    name=${m%:*} layer=${m#*:}
    "${run[@]}" --model "$data/$name" --layer "$layer" --input "$data/$name/x.npy" --output "$work/$name.bf16.npy" \
        --backend cpu --weights BF16 --stats > "$work/$name.bf16.stats"
    grep -q "^weights: bf16" "$work/$name.bf16.stats" || fail "moe-run --weights bf16 --stats for $name: no 'weights: bf16'"
    "${compare[@]}" --compare "$work/$name.bf16.npy" "$data/$name/y_ref.npy" 1e-2 > /dev/null ||
        fail "moe-run --weights bf16 on $name is further than 1e-2 from the reference"
    ! "${compare[@]}" --compare "$work/$name.bf16.npy" "$data/$name/y_ref.npy" 1e-4 > /dev/null 2>&1 ||
        fail "moe-run --weights bf16 on $name gives float32's result: the experts were not stored in bf16"
done
grep -q "^weights: bf16 (shared expert: bf16)" "$work/qwen2_moe_T6_d32_f40_E8_k2.bf16.stats" ||
    fail "moe-run --weights bf16 does not store the shared expert in bf16"
# q8_0 and q4_0 store rows in blocks of 32 values; no model here has hidden and intermediate
# sizes that are both multiples of 32 (mixtral d48 f80, qwen2_moe d32 f40, ...), so each is
# refused: exit 2, the flag, the format and the size named, nothing written.
for m in mixtral_T5_d48_f80_E4_k2:0:hidden_size:48 qwen2_moe_T6_d32_f40_E8_k2:0:intermediate:40 \
         switch_T12_d32_f48_E4_cf1.0:1:intermediate:48; do
    IFS=: read -r name layer what size <<< "$m"
    for w in q8_0 q4_0; do
        rm -f "$work/q.npy"
        rc=0
        "${run[@]}" --model "$data/$name" --layer "$layer" --input "$data/$name/x.npy" --output "$work/q.npy" \
            --backend cpu --weights "$w" > "$work/err.txt" 2>&1 || rc=$?
        [ "$rc" -eq 2 ] || fail "moe-run --weights $w on $name: exit $rc, expected 2: $(cat "$work/err.txt")"
        grep -q -- "--weights $w stores each weight row in blocks of 32 values, but .*$what.* is $size, not a multiple of 32" \
            "$work/err.txt" || fail "moe-run --weights $w on $name: unclear refusal: $(cat "$work/err.txt")"
        [ ! -e "$work/q.npy" ] || fail "moe-run --weights $w on $name wrote an output"
    done
done
echo "ok: --weights q8_0 and q4_0 refused for sizes that are not whole blocks: $(head -n 1 "$work/err.txt")"
# A name that is no format: a usage error listing the names.
rc=0
"${run[@]}" --model "$mix" --layer 0 --input "$mix/x.npy" --output "$work/q.npy" --weights bogus > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "wants f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, mxfp4, q3_k or q2_k, not 'bogus'" "$work/err.txt" && [ ! -e "$work/q.npy" ] ||
    fail "moe-run --weights bogus: exit $rc: $(cat "$work/err.txt")"

# ---- --expert-budget-mib: experts past the budget on a CPU context ----------------------------------
# On a CPU --backend the "device" is a CPU context too, so every split is bit-identical to the
# one-context run: a budget of 0 puts every expert on the second context, a large one none.
olm=$data/olmoe_T9_d40_f24_E32_k8
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/one.npy" --backend cpu
for mib in 0 1024; do
    "${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/placed.npy" --backend cpu \
        --expert-budget-mib $mib --stats > "$work/placed.stats"
    cmp -s "$work/one.npy" "$work/placed.npy" || fail "moe-run --expert-budget-mib $mib differs from one context"
    on_cpu=$([ $mib -eq 0 ] && echo 32 || echo 0)
    grep -q "^placement: $((32 - on_cpu)) experts on cpu (budget $mib MiB), $on_cpu on the CPU" "$work/placed.stats" ||
        fail "moe-run --expert-budget-mib $mib --stats: $(grep placement "$work/placed.stats")"
done
rc=0
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/q.npy" --expert-budget-mib -3 > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "expert-budget-mib wants a number of MiB" "$work/err.txt" && [ ! -e "$work/q.npy" ] ||
    fail "moe-run --expert-budget-mib -3: exit $rc: $(cat "$work/err.txt")"
echo "ok: --expert-budget-mib 0 and 1024 give the one-context output bit for bit"
# --usage-out saves the experts' counts as layer 0; --usage-in orders a budget's fill by them.
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/placed.npy" --backend cpu \
    --usage-out "$work/usage.json" --stats > "$work/usage.stats"
grep -q '"format": "moe-usage"' "$work/usage.json" && grep -q '"index": 0' "$work/usage.json" ||
    fail "moe-run --usage-out wrote no usage file: $(head -c 300 "$work/usage.json")"
rows=$(grep "^expert tokens:" "$work/usage.stats" | awk '{s = 0; for (i = 3; i <= NF; i++) s += $i; print s}' || true)
saved=$(tr -d ' \n' < "$work/usage.json" | sed 's/.*"routed_total":\[\([0-9,]*\)\].*/\1/' |
    awk -F, '{s = 0; for (i = 1; i <= NF; i++) s += $i; print s}')
[ "$rows" = "$saved" ] && [ "$rows" -eq $((9 * 8)) ] || fail "--usage-out saved $saved rows, --stats counted $rows"
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/placed.npy" --backend cpu \
    --expert-budget-mib 1 --usage-in "$work/usage.json"
cmp -s "$work/one.npy" "$work/placed.npy" || fail "moe-run --usage-in differs from one context"
# --cache-slots: every expert on the CPU context, 4 slots on the "device" (a CPU context here):
# one forward is bit-identical to one context; token by token (--batch 1) it is the reference's
# result, and --stats reports the cache (hits + misses = the experts each token routed, 9 x 8).
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/cached.npy" --backend cpu \
    --cache-slots 4 --cache-policy lfu --usage-in "$work/usage.json"
cmp -s "$work/one.npy" "$work/cached.npy" || fail "moe-run --cache-slots 4 differs from one context"
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/cached.npy" --backend cpu \
    --cache-slots 4 --batch 1 --stats > "$work/cached.stats"
"${compare[@]}" --compare "$work/cached.npy" "$olm/y_ref.npy" 1e-4
line=$(grep "^cache: 4 slots on cpu" "$work/cached.stats") || fail "moe-run --cache-slots --stats: no cache line"
lookups=$(sed 's/.*: \([0-9]*\) hits, \([0-9]*\) misses.*/\1 + \2/' <<< "$line")
[ $((lookups)) -eq 72 ] || fail "moe-run --cache-slots 4 --batch 1: $lookups lookups, expected 72: $line"
grep -q "^forwards: 9 of up to 1 tokens" "$work/cached.stats" && grep -q "^device time: cpu" "$work/cached.stats" ||
    fail "moe-run --batch 1 --stats: $(cat "$work/cached.stats")"
# Misuse: exit 2, nothing written.
for bad in "--cache-slots 0" "--cache-slots x" "--cache-policy lfu" "--cache-slots 2 --cache-policy mru" \
           "--cache-slots 2 --cache-min-rows -1" "--batch 0"; do
    rm -f "$work/q.npy"
    rc=0
    # shellcheck disable=SC2086 # the flags are meant to split
    "${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/q.npy" --backend cpu $bad \
        > "$work/err.txt" 2>&1 || rc=$?
    [ "$rc" -eq 2 ] && [ ! -e "$work/q.npy" ] && grep -q "^moe-run: --" "$work/err.txt" ||
        fail "moe-run $bad: exit $rc: $(cat "$work/err.txt")"
done
sw=$data/switch_T12_d32_f48_E4_cf1.0
rc=0
"${run[@]}" --model "$sw" --layer 1 --input "$sw/x.npy" --output "$work/q.npy" --backend cpu --batch 4 > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "expert capacity" "$work/err.txt" && [ ! -e "$work/q.npy" ] ||
    fail "moe-run --batch on a layer with a capacity: exit $rc: $(cat "$work/err.txt")"
echo "ok: --cache-slots and --batch: $line"
rc=0
"${run[@]}" --model "$olm" --layer 0 --input "$olm/x.npy" --output "$work/q.npy" --usage-in "$work/usage.json" > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "give both" "$work/err.txt" || fail "moe-run --usage-in alone: exit $rc: $(cat "$work/err.txt")"
rc=0
"${run[@]}" --model "$data/deepseek_v3_T8_d36_f20_E16_k4_g4" --layer 1 --input "$data/deepseek_v3_T8_d36_f20_E16_k4_g4/x.npy" \
    --output "$work/q.npy" --backend cpu --expert-budget-mib 1 --usage-in "$work/usage.json" > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "no layer with index 1" "$work/err.txt" && [ ! -e "$work/q.npy" ] ||
    fail "moe-run --usage-in of another model's layer: exit $rc: $(cat "$work/err.txt")"
echo "ok: --usage-out saved $saved rows; --usage-in ordered a budget's fill by them"

# ---- --device: an index, a name or a type, read by the library ----------------------------------
cpu_name=$(grep -m1 "^  device 0:" <("${info[@]}") | sed 's/^  device 0: //')
"${run[@]}" --model "$mix" --layer 0 --input "$mix/x.npy" --output "$work/dev.npy" --backend cpu \
    --device "name:${cpu_name:0:5}" --stats > "$work/dev.stats" || fail "moe-run --device name:${cpu_name:0:5}"
"${run[@]}" --model "$mix" --layer 0 --input "$mix/x.npy" --output "$work/dev.npy" --backend cpu --device cpu \
    --stats > "$work/dev.stats" || fail "moe-run --device cpu"
rc=0
"${run[@]}" --model "$mix" --layer 0 --input "$mix/x.npy" --output "$work/q.npy" --backend cpu --device discrete \
    > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "no device 0 among those of type discrete" "$work/err.txt" && [ ! -e "$work/q.npy" ] ||
    fail "moe-run --device discrete on the CPU backend: exit $rc: $(cat "$work/err.txt")"
rc=0
"${run[@]}" --model "$mix" --layer 0 --input "$mix/x.npy" --output "$work/q.npy" --device "" > "$work/err.txt" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "an empty device choice" "$work/err.txt" || fail "moe-run --device '': exit $rc"
MOE_BACKEND= "${info[@]}" --device cpu > "$work/info-dev.txt" || true
grep -q "^AUTO picks: cpu device 0" "$work/info-dev.txt" || fail "moe-info --device cpu: $(tail -n 2 "$work/info-dev.txt")"
MOE_BACKEND= "${info[@]}" --device 1 > "$work/info-dev.txt" || true
grep -q "^AUTO picks nothing: .*with backend AUTO" "$work/info-dev.txt" ||
    fail "moe-info --device 1 (AUTO, an index): $(tail -n 2 "$work/info-dev.txt")"
echo "ok: --device by name, type and index"

# ---- errors: message, exit status, no output -----------------------------------------------------
python3 - "$work" <<'PY'
import struct, sys
w = sys.argv[1]
def npy(path, header, nbytes):
    h = header.encode()
    open(path, 'wb').write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(h)) + h + b'\0' * nbytes)
npy(w + '/f64.npy', "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 48), }", 5 * 48 * 8)
npy(w + '/rank1.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (240,), }", 240 * 4)
npy(w + '/fortran.npy', "{'descr': '<f4', 'fortran_order': True, 'shape': (5, 48), }", 5 * 48 * 4)
npy(w + '/width.npy', "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 40), }", 5 * 40 * 4)
PY
expect_fail() { # expect_fail WHAT PATTERN ARGS...
    local what=$1 pattern=$2 out=$work/out.npy rc=0
    shift 2
    rm -f "$out"
    "${run[@]}" "$@" --output "$out" --backend cpu > "$work/err.txt" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || fail "$what: moe-run exited 0"
    [ ! -e "$out" ] && ! compgen -G "$out.partial*" > /dev/null || fail "$what: moe-run left a file at the output path"
    grep -q -- "$pattern" "$work/err.txt" || fail "$what: message lacks '$pattern': $(cat "$work/err.txt")"
    echo "ok: $what (exit $rc): $(head -n 1 "$work/err.txt")"
}
expect_fail "missing directory" "$work/none" --model "$work/none" --layer 0 --input "$mix/x.npy"
expect_fail "layer out of range" "layer 3" --model "$mix" --layer 3 --input "$mix/x.npy"
expect_fail "missing input" "nothing.npy" --model "$mix" --layer 0 --input "$work/nothing.npy"
expect_fail "float64 input" "f64.npy: dtype '<f8'" --model "$mix" --layer 0 --input "$work/f64.npy"
expect_fail "rank-1 input" "rank1.npy: shape (240) has rank 1" --model "$mix" --layer 0 --input "$work/rank1.npy"
expect_fail "Fortran-order input" "fortran.npy: Fortran" --model "$mix" --layer 0 --input "$work/fortran.npy"
expect_fail "input of the wrong width" "width.npy: width 40" --model "$mix" --layer 0 --input "$work/width.npy"
expect_fail "dense layer" "no MoE block" --model "$data/deepseek_v3_T8_d36_f20_E16_k4_g4" --layer 0 \
    --input "$data/deepseek_v3_T8_d36_f20_E16_k4_g4/x.npy"
expect_fail "unknown option" "unknown option" --model "$mix" --layer 0 --input "$mix/x.npy" --frobnicate

# ---- the output path: written atomically, through a link, only ever to a regular file -------------
# moe-run on the mixtral model writing to OUT; the caller checks the outcome.
run_to() { # run_to OUT [INPUT]: exit status in $rc, messages in $work/err.txt
    rc=0
    timeout 60 "${run[@]}" --model "$mix" --layer 0 --input "${2:-$mix/x.npy}" --output "$1" --backend cpu \
        > "$work/err.txt" 2>&1 || rc=$?
    [ "$rc" -ne 124 ] || fail "moe-run --output $1 hung"
}
out=$work/out
mkdir -p "$out"
if [ "$windows" -eq 1 ]; then
    # Windows programs (under Wine): no FIFOs or device nodes there, and links are not followed
    # (tools/npy.c); a new file, an existing one replaced, a directory refused, and a bad input
    # leaving the output as it was.
    rm -f "$out/new.npy"
    run_to "$out/new.npy"
    [ "$rc" -eq 0 ] && "${compare[@]}" --compare "$out/new.npy" "$mix/y_ref.npy" 1e-4 > /dev/null ||
        fail "a new output: exit $rc: $(cat "$work/err.txt")"
    echo old > "$out/kept.npy"
    run_to "$out/kept.npy"
    [ "$rc" -eq 0 ] && "${compare[@]}" --compare "$out/kept.npy" "$mix/y_ref.npy" 1e-4 > /dev/null ||
        fail "an existing output: exit $rc: $(cat "$work/err.txt")"
    mkdir -p "$out/dir.npy"
    run_to "$out/dir.npy"
    [ "$rc" -ne 0 ] && grep -q "is a directory" "$work/err.txt" && [ -d "$out/dir.npy" ] ||
        fail "a directory as the output: exit $rc: $(cat "$work/err.txt")"
    run_to "$out/nodir/y.npy"
    [ "$rc" -ne 0 ] && grep -q "does not exist" "$work/err.txt" && [ ! -e "$out/nodir" ] ||
        fail "an output in a missing directory: exit $rc: $(cat "$work/err.txt")"
    echo old > "$out/target.npy"
    cp "$out/target.npy" "$out/untouched.npy"
    run_to "$out/target.npy" "$work/f64.npy"
    [ "$rc" -ne 0 ] && cmp -s "$out/target.npy" "$out/untouched.npy" ||
        fail "a bad input changed the output: exit $rc: $(cat "$work/err.txt")"
    leftover=$(find "$out" -name '*.tmp')
    [ -z "$leftover" ] || fail "temporary files left behind: $leftover"
    echo "ok: the output path (new and existing files written whole; directories refused)"
else
    # A symbolic link is written through: it stays a link, its target gets the data.
    echo old > "$out/target.npy"
    ln -s target.npy "$out/link.npy"
    run_to "$out/link.npy"
    [ "$rc" -eq 0 ] || fail "writing through a link: exit $rc: $(cat "$work/err.txt")"
    [ -L "$out/link.npy" ] || fail "the output link was replaced by a file"
    "${compare[@]}" --compare "$out/target.npy" "$mix/y_ref.npy" 1e-4 > /dev/null || fail "the link's target lacks the output"
    # A chain of links, relative and absolute, ending at a name that does not exist yet.
    ln -s "$out/sub/final.npy" "$out/chain2.npy" && mkdir -p "$out/sub"
    ln -s chain2.npy "$out/chain1.npy"
    run_to "$out/chain1.npy"
    [ "$rc" -eq 0 ] && [ -L "$out/chain1.npy" ] && [ -L "$out/chain2.npy" ] && [ -f "$out/sub/final.npy" ] ||
        fail "a dangling chain of links: exit $rc, $(ls -l "$out" "$out/sub"): $(cat "$work/err.txt")"
    # A dangling link into a directory that does not exist: refused, nothing made.
    ln -s nodir/y.npy "$out/nodir.npy"
    run_to "$out/nodir.npy"
    [ "$rc" -ne 0 ] && grep -q "does not exist" "$work/err.txt" && [ ! -e "$out/nodir" ] ||
        fail "a link into a missing directory: exit $rc: $(cat "$work/err.txt")"
    # An existing regular file keeps its mode.
    echo old > "$out/kept.npy" && chmod 640 "$out/kept.npy"
    run_to "$out/kept.npy"
    [ "$rc" -eq 0 ] && [ "$(stat -c %a "$out/kept.npy")" = 640 ] ||
        fail "an existing output: exit $rc, mode $(stat -c %a "$out/kept.npy")"
    # A device is refused and left alone. Root could replace a device node by rename, so as root
    # the test uses a private node (a copy of /dev/null's numbers), never /dev/null itself.
    dev=/dev/null
    if [ "$(id -u)" -eq 0 ] && mknod "$out/null" c 1 3 2> /dev/null; then dev=$out/null; fi
    run_to "$dev"
    [ "$rc" -ne 0 ] && grep -q "is a character device; the output is written only to a regular file" "$work/err.txt" ||
        fail "a device as the output: exit $rc: $(cat "$work/err.txt")"
    [ -c "$dev" ] || fail "$dev is no longer a character device"
    ln -s "$dev" "$out/devlink.npy"
    run_to "$out/devlink.npy"
    [ "$rc" -ne 0 ] && grep -q "which is a character device" "$work/err.txt" && [ -c "$dev" ] ||
        fail "a link to a device as the output: exit $rc: $(cat "$work/err.txt")"
    # A FIFO is refused at once (nothing opens it, so nothing waits for a reader); a directory too.
    mkfifo "$out/fifo.npy"
    run_to "$out/fifo.npy"
    [ "$rc" -ne 0 ] && grep -q "is a FIFO" "$work/err.txt" && [ -p "$out/fifo.npy" ] ||
        fail "a FIFO as the output: exit $rc: $(cat "$work/err.txt")"
    mkdir "$out/dir.npy"
    run_to "$out/dir.npy"
    [ "$rc" -ne 0 ] && grep -q "is a directory" "$work/err.txt" && [ -d "$out/dir.npy" ] ||
        fail "a directory as the output: exit $rc: $(cat "$work/err.txt")"
    # A bad input writes nothing: an existing output and a link's target keep their bytes.
    echo old > "$out/target.npy"
    cp "$out/target.npy" "$out/untouched.npy"
    run_to "$out/link.npy" "$work/f64.npy"
    [ "$rc" -ne 0 ] && cmp -s "$out/target.npy" "$work/out/untouched.npy" ||
        fail "a bad input changed the output: exit $rc: $(cat "$work/err.txt")"
    # The input side: a FIFO or a device as the input is refused at once as well.
    run_to "$out/in.npy" "$out/fifo.npy"
    [ "$rc" -ne 0 ] && grep -q "fifo.npy: is a FIFO, not a regular file" "$work/err.txt" ||
        fail "a FIFO as the input: exit $rc: $(cat "$work/err.txt")"
    run_to "$out/in.npy" /dev/zero
    [ "$rc" -ne 0 ] && grep -q "/dev/zero: is a character device, not a regular file" "$work/err.txt" ||
        fail "/dev/zero as the input: exit $rc: $(cat "$work/err.txt")"
    leftover=$(find "$out" -name '*.partial*')
    [ -z "$leftover" ] || fail "temporary files left behind: $leftover"
    echo "ok: the output path (links written through; devices, FIFOs, directories refused)"
fi

# ---- moe-info -------------------------------------------------------------------------------------
"${info[@]}" > "$work/info.txt"
grep -q "backend cpu: 1 device" "$work/info.txt" || fail "moe-info does not list the CPU device"
grep -q "AUTO picks: cpu" "$work/info.txt" || fail "moe-info does not say what AUTO picks (MOE_BACKEND=cpu)"
# Per device: its features and those moe uses, and the weight formats (every one, on every backend).
grep -q "^    features:         .* (used: .*)$" "$work/info.txt" || fail "moe-info prints no 'features:' line"
grep -q "^    weights:          f32 f16\( ([A-Z0-9_+]*)\)\? bf16\( ([A-Z0-9_+]*)\)\? q8_0" "$work/info.txt" ||
    fail "moe-info prints no 'weights:' line naming the formats"
[ "$(grep -c "^    features:" "$work/info.txt")" -eq "$(grep -c "^  device [0-9]*:" "$work/info.txt")" ] &&
    [ "$(grep -c "^    weights:" "$work/info.txt")" -eq "$(grep -c "^  device [0-9]*:" "$work/info.txt")" ] ||
    fail "moe-info: not every device has its features and weights lines"
"${info[@]}" --json > "$work/info.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["auto"]["backend"]=="cpu"; \
assert d["backends"][0]["devices"][0]["subgroup_size"] > 0' "$work/info.json" || fail "moe-info --json is not valid"
python3 - "$work/info.json" "$work/info.txt" <<'PY' || fail "moe-info --json: features or weights wrong"
import json, sys
d = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
names = {"f16c", "avx512_bf16", "avx512_vnni", "avx_vnni", "storage_16bit", "storage_8bit", "float16",
         "int_dot", "subgroup_reduce"}
devices = [dev for b in d["backends"] for dev in b["devices"]]
assert devices
for dev in devices:
    assert set(dev["features"]) <= names and set(dev["features_used"]) <= set(dev["features"]), dev
    assert [w["dtype"] for w in dev["weights"]] == ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "mxfp4", "q3_k", "q2_k"], dev["weights"]
    for w in dev["weights"]:
        assert set(w["uses"]) <= set(dev["features_used"]), w
# The text says the same as the JSON for every device: its block under its backend's heading
# has the JSON's features line (a GPU backend without a device has no block, and is skipped).
blocks, backend, device = {}, None, None
for l in text.splitlines():
    if l.startswith("backend "):
        backend, device = l.split()[1].rstrip(":"), None
    elif l.startswith("  device "):
        device = int(l.split()[1].rstrip(":"))
    elif l.startswith("    features:") and backend is not None and device is not None:
        blocks[(backend, device)] = l
cpu_bits = {"f16c", "avx512_bf16", "avx512_vnni", "avx_vnni"}
# The CPU also reports int_dot (0.7.1: the integer-activation kernels' instructions) where it has
# AVX2; a GPU may report int_dot too, so it is not a CPU-only bit.
cpu_allowed = cpu_bits | {"int_dot"}
for b in d["backends"]:
    for dev in b["devices"]:
        line = "    features:         %s (used: %s)" % (" ".join(dev["features"]) or "none",
                                                      " ".join(dev["features_used"]) or "none")
        assert blocks.get((b["name"], dev["index"])) == line, (b["name"], dev["index"], line)
        if b["name"] == "cpu":
            assert set(dev["features"]) <= cpu_allowed, dev["features"]
            continue
        # A GPU: no CPU bit; OpenCL reports no storage bit (byte/short access is core there); the
        # kernels use subgroup reductions at most (they read 32-bit words, compute in float32).
        assert not set(dev["features"]) & cpu_bits, (b["name"], dev["features"])
        assert b["name"] != "opencl" or not {"storage_16bit", "storage_8bit"} & set(dev["features"]), dev
        assert set(dev["features_used"]) <= {"subgroup_reduce"}, (b["name"], dev["features_used"])
        print("ok: moe-info: %s device %d: %s" % (b["name"], dev["index"], line.strip()))
PY
# The cache: its directory, entries and bound, in both formats (MOE_CACHE_DIR set here).
MOE_CACHE_DIR="$work/cache" MOE_CACHE_SIZE_MB=3 "${info[@]}" > "$work/info.txt"
grep -q "cache: $work/cache, 0 files, 0.0 MiB (bounded at 3 MiB" "$work/info.txt" || fail "moe-info: no cache line"
MOE_CACHE_DIR="$work/cache" MOE_CACHE_SIZE_MB=3 "${info[@]}" --json > "$work/info.json"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["cache"]; \
assert c["path"]==sys.argv[2] and c["files"]==0 and c["limit_bytes"]==3<<20, c' "$work/info.json" "$work/cache" \
    || fail "moe-info --json: no cache object"
# Help asked for goes to stdout with exit 0; a wrong flag to stderr with exit 2.
"${info[@]}" --help > "$work/help.txt" 2> "$work/help.err" && grep -q "usage: moe-info" "$work/help.txt" && \
    [ ! -s "$work/help.err" ] || fail "moe-info --help does not print its usage on stdout"
rc=0; "${info[@]}" --bogus > "$work/help.txt" 2> "$work/help.err" || rc=$?
[ "$rc" -eq 2 ] && [ ! -s "$work/help.txt" ] && grep -q "usage: moe-info" "$work/help.err" || \
    fail "moe-info --bogus: exit $rc, usage not on stderr alone"
# ---- GGUF files (tests/data/gguf-moe) ----------------------------------------------------------------
gguf=$data/../gguf-moe
"${run[@]}" --model "$gguf/deepseek2.gguf" --layer 1 --input "$data/deepseek_v3_T8_d36_f20_E16_k4_g4/x.npy" \
    --output "$work/g.npy" --backend cpu --stats > "$work/g.stats"
"${compare[@]}" --compare "$work/g.npy" "$data/deepseek_v3_T8_d36_f20_E16_k4_g4/y_ref.npy" 1e-4
"${run[@]}" --model "$gguf/synthetic-q4_0.gguf" --layer 0 --input "$gguf/synthetic-x.npy" --output "$work/g.npy" \
    --backend cpu --stats > "$work/g.stats"
grep -q "^weights: q4_0 (the checkpoint's own)" "$work/g.stats" || fail "moe-run on a Q4_0 GGUF: $(grep weights "$work/g.stats")"
"${run[@]}" --model "$gguf/synthetic-mixed.gguf" --layer 0 --input "$gguf/synthetic-x.npy" --output "$work/g.npy" \
    --backend cpu --stats > "$work/g.stats"
grep -q "^weights: q4_0 (down: q8_0) (the checkpoint's own)" "$work/g.stats" ||
    fail "moe-run on a GGUF with a Q8_0 down: $(grep weights "$work/g.stats")"
# A K-quant mix as llama.cpp's _M and Q2_K files make it (file, name, the weights line, the bfloat16 one):
# each projection as the file has it. The opt-ins there, per product (0.12.0): int8 on gate/up and down
# alike (Q6_K 0.13.0, Q3_K 0.15.0, Q2_K 0.16.0) where the CPU has the integer path; bfloat16 pairs on the
# product whose format takes them and the other on f32, said so, where it has the bfloat16 path. F32 and
# why where it has none, and always where neither format takes them (no bfloat16 line given).
kquant_mix() {
    "${run[@]}" --model "$gguf/$1" --layer 0 --input "$gguf/synthetic-kx.npy" --output "$work/g.npy" \
        --backend cpu --stats > "$work/g.stats"
    grep -q "^weights: $3 (the checkpoint's own)" "$work/g.stats" ||
        fail "moe-run on a $2 GGUF: $(grep weights "$work/g.stats")"
    "${run[@]}" --model "$gguf/$1" --layer 0 --input "$gguf/synthetic-kx.npy" --output "$work/g.npy" \
        --backend cpu --activations q8_0 --stats > "$work/g.stats"
    grep -q "^activations: q8_0$" "$work/g.stats" ||
        grep -q "^activations: f32 (q8_0 asked for: no integer path here for these weights)$" "$work/g.stats" ||
        fail "moe-run --activations q8_0 on a $2 GGUF: $(grep activations "$work/g.stats")"
    "${run[@]}" --model "$gguf/$1" --layer 0 --input "$gguf/synthetic-kx.npy" --output "$work/g.npy" \
        --backend cpu --activations bf16 --stats > "$work/g.stats"
    { [ -n "$4" ] && grep -q "^activations: bf16 ($4 on f32: no bf16 path for it)$" "$work/g.stats"; } ||
        grep -q "^activations: f32 (bf16 asked for: no bfloat16-pair path here for these weights; it needs" "$work/g.stats" ||
        fail "moe-run --activations bf16 on a $2 GGUF: $(grep activations "$work/g.stats")"
}
kquant_mix synthetic-q4_k_m.gguf Q4_K_M "q4_k (down: q6_k)" "the routed experts' down, q6_k,"
kquant_mix synthetic-q3_k_m.gguf Q3_K_M "q3_k (down: q4_k)" "the routed experts' gate/up, q3_k,"
kquant_mix synthetic-q2_k.gguf Q2_K "q2_k (down: q3_k)" "" # neither Q2_K nor Q3_K takes bfloat16 pairs
"${info[@]}" --model "$gguf/synthetic-mixed.gguf" > "$work/ginfo.txt"
grep -q "architecture qwen3moe: 1 layer, 1 with an MoE block; hidden size 64; 8 experts, top-2" "$work/ginfo.txt" &&
    grep -q "tensor types: F32 ×5 (.*), Q8_0 ×1 (.*), Q4_0 ×2" "$work/ginfo.txt" &&
    grep -q "layer 0: .*; experts d_ff 32 stored as q4_0 (down q8_0)$" "$work/ginfo.txt" || fail "moe-info --model: $(cat "$work/ginfo.txt")"
"${info[@]}" --json --model "$gguf/qwen2moe-split-00001-of-00003.gguf" > "$work/ginfo.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["model_type"]=="qwen2moe" and d["n_files"]==3 \
and d["layers"][0]["d_ff_shared"]==96, d' "$work/ginfo.json" || fail "moe-info --json --model on a split GGUF"
# User errors: one message naming the file (and the tensor or the type), exit 1, nothing written
# (the input is 32 wide, as the refused files' layers are).
printf 'GGUF\003\000\000\000' > "$work/short.gguf"
for c in "synthetic-iq2_xxs.gguf:has type IQ2_XXS, which this version does not read (it reads F32, F16, BF16, Q8_0, Q4_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and MXFP4)" \
         "unknown-arch.gguf:architecture 'falcon' is not one this version runs" \
         "qwen2moe-split-00002-of-00003.gguf:open the first" "$work/short.gguf:the header ends inside"; do
    f=${c%%:*} what=${c#*:}
    case $f in /*) ;; *) f=$gguf/$f ;; esac
    rm -f "$work/g.npy"
    rc=0
    "${run[@]}" --model "$f" --layer 0 --input "$data/qwen2_moe_T6_d32_f40_E8_k2/x.npy" --output "$work/g.npy" --backend cpu \
        > "$work/err.txt" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] && grep -qF "$what" "$work/err.txt" && grep -qF "$(basename "$f")" "$work/err.txt" &&
        [ "$(wc -l < "$work/err.txt")" -eq 1 ] && [ ! -e "$work/g.npy" ] ||
        fail "moe-run on $(basename "$f"): exit $rc, expected 1 and one line saying '$what': $(cat "$work/err.txt")"
    rc=0
    "${info[@]}" --model "$f" > "$work/err.txt" 2>&1 || rc=$?
    [ "$rc" -eq 1 ] && grep -qF "$what" "$work/err.txt" || fail "moe-info --model $(basename "$f"): exit $rc: $(cat "$work/err.txt")"
done
echo "ok: GGUF files through moe-run and moe-info --model"
echo "OK: moe-run and moe-info"
