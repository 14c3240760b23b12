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

/* Bytes of last-level cache the CPUs this process may run on have between them: from sysfs (the
 * kernel's description of each cache; bench_llc_sysfs over the affinity mask, Linux), else
 * sysconf(_SC_LEVEL3_CACHE_SIZE), else BENCH_LLC_DEFAULT_BYTES. sysfs comes first because glibc's
 * sysconf can be far off on a virtual machine: on a 2-CPU KVM guest (Zen 4) it said 320 MiB
 * where the kernel listed one 32 MiB L3 shared by both CPUs, and --layers auto made 10x the
 * layers it needed. *source (optional) says where the size came from, in words. */
uint64_t bench_llc_bytes(const char **source);

/* What bench_llc_sysfs found: how many distinct caches, their level, and (the first one's) CPUs. */
typedef struct bench_llc_info {
    int instances;
    long level;
    char shared[128]; /* shared_cpu_list, e.g. "0-1" */
} bench_llc_info;

/* The sum of the last-level caches of cpus[0..n_cpus) in a sysfs tree laid out as
 * /sys/devices/system/cpu (root/cpuN/cache/indexM/{level,type,size,shared_cpu_list}): per CPU
 * the index of the highest level that holds data, each cache counted once however many of the
 * CPUs share it (same level and shared_cpu_list). 0 when none is listed; *info (optional). */
uint64_t bench_llc_sysfs(const char *root, const int *cpus, int n_cpus, bench_llc_info *info);

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
