# Sourced by the run.sh of each results folder: quiet MESSAGE waits (up to $wait_s seconds)
# for the 1-minute load average to drop under 0.5, then logs the time, the load and MESSAGE
# to $log and the terminal.
quiet() {
    local t=0
    while awk "BEGIN{exit !($(cut -d' ' -f1 /proc/loadavg) >= 0.5)}" && [ "$t" -lt "$wait_s" ]; do
        sleep 10; t=$((t + 10))
    done
    echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) | $*" | tee -a "$log"
}
