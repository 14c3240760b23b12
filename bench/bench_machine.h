/*
 * bench_machine.h — what moe-bench measures of the machine itself, apart from moe: the
 * last-level cache size (which decides how many layers --layers auto cycles through) and the
 * host's read bandwidth (the ceiling a memory-bound CPU forward is compared with).
 */
#ifndef MOE_BENCH_MACHINE_H
#define MOE_BENCH_MACHINE_H

#include <stddef.h>
#include <stdint.h>

/* The size assumed when the system does not say. */
#define BENCH_LLC_DEFAULT_BYTES (32ull << 20)

/* Bytes of the last-level (L3) cache: sysconf(_SC_LEVEL3_CACHE_SIZE), else
 * /sys/devices/system/cpu/cpu0/cache/index3/size, else BENCH_LLC_DEFAULT_BYTES. *source
 * (optional) says which: "sysconf", "sysfs" or "unknown, assumed". */
uint64_t bench_llc_bytes(const char **source);

/* Parses a sysfs cache size ("32768K", "260M", "1024"); 0 when it is not one. */
uint64_t bench_parse_cache_size(const char *text);

typedef struct bench_bandwidth {
    double gbs;        /* best pass, 1e9 bytes per second; 0 when not measured */
    double median_gbs; /* median pass, for the record */
    uint64_t bytes;    /* buffer size */
    int threads, passes;
    int streams;    /* interleaved streams per thread of the best pass */
    char note[160]; /* why the buffer is smaller than asked, or why nothing was measured */
} bench_bandwidth;

/* Multi-threaded streaming read of a buffer of `bytes` (written once first, so its pages
 * exist; huge pages where the system has them): each of `threads` threads sums its own
 * contiguous share as 1, 2 or 4 interleaved sequential streams (the count changes from pass to
 * pass), `passes` times. The best
 * pass is the figure (a streaming read is never faster than the memory allows, so the best
 * is the least disturbed by other work on the machine). Returns 0, or -1 with r->note set
 * when the buffer or a thread cannot be had. */
int bench_measure_read_bandwidth(uint64_t bytes, int threads, int passes, bench_bandwidth *r);

#endif /* MOE_BENCH_MACHINE_H */
