# Sourced by the run.sh of each results folder (run from the repository root, its one argument
# the build directory, default build): sets build, out (the folder), wait_s (WAIT_S, else the
# script's own default, else 300 s) and log (out/runs.log, emptied). quiet MESSAGE waits (up to $wait_s seconds)
# for the 1-minute load average to drop under 0.5, then logs the time, the load and MESSAGE
# to $log and the terminal.
build=${1:-build}
out=$(dirname "$0")
wait_s=${WAIT_S:-${wait_s:-300}}
log=$out/runs.log
: > "$log"

quiet() {
    local t=0
    while awk "BEGIN{exit !($(cut -d' ' -f1 /proc/loadavg) >= 0.5)}" && [ "$t" -lt "$wait_s" ]; do
        sleep 10; t=$((t + 10))
    done
    echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) | $*" | tee -a "$log"
}

# bench NAME FLAGS...: one moe-bench run once the machine is quiet, its table to the terminal and
# $log, its results to $out/NAME.json ($build: the build directory).
bench() {
    local name=$1; shift
    quiet "moe-bench $*"
    MOE_BENCH_NO_PROGRESS=1 "$build/moe-bench" "$@" --json "$out/$name.json" | tee -a "$log"
}

# ep_bench NAME RANKS FLAGS...: moe-bench --ep under mpiexec with RANKS ranks, likewise: unbound (Open
# MPI binds each of up to 2 ranks to one core, so one rank would get one core of two), more ranks
# than cores allowed, as root where needed.
ep_bench() {
    local name=$1 ranks=$2; shift 2
    quiet "mpiexec -n $ranks moe-bench $*"
    OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1 OMPI_ALLOW_RUN_AS_ROOT=1 \
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MOE_BENCH_NO_PROGRESS=1 \
        mpiexec -n "$ranks" --bind-to none "$build/moe-bench" "$@" --json "$out/$name.json" | tee -a "$log"
}

# both NAME FLAGS...: bench, then the same with $OLD's library when OLD is set (a moe-bench and
# its libmoe.so* copied from an earlier build; LD_LIBRARY_PATH=$OLD), results in $out/NAME-old.json.
both() {
    local name=$1; shift
    bench "$name" "$@"
    if [ -n "${OLD:-}" ]; then
        quiet "old library $OLD: moe-bench $*"
        LD_LIBRARY_PATH=$OLD MOE_BENCH_NO_PROGRESS=1 "$OLD/moe-bench" "$@" --json "$out/$name-old.json" | tee -a "$log"
    fi
}
