/*
 * bench_machine.c — the machine probes of moe-bench (see bench_machine.h): the last-level
 * cache size and a multi-threaded streaming-read bandwidth measurement. Nothing here knows
 * moe; the figures only give the forwards' numbers something to be compared with.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* _SC_LEVEL3_CACHE_SIZE is a glibc extension */

#include "bench_machine.h"

#include "bench_util.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

uint64_t bench_parse_cache_size(const char *text)
{
    char *end = NULL;
    while (*text == ' ') text++;
    if (*text < '0' || *text > '9') return 0;
    const unsigned long long v = strtoull(text, &end, 10);
    uint64_t mult = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        mult = 1ull << 10;
        end++;
        break;
    case 'M':
        mult = 1ull << 20;
        end++;
        break;
    case 'G':
        mult = 1ull << 30;
        end++;
        break;
    default:
        break;
    }
    while (*end == ' ' || *end == '\n') end++;
    if (*end != '\0' || v == 0 || v > UINT64_MAX / mult) return 0;
    return (uint64_t)v * mult;
}

uint64_t bench_llc_bytes(const char **source)
{
#if defined(_SC_LEVEL3_CACHE_SIZE)
    const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (v > 0) {
        if (source) *source = "sysconf";
        return (uint64_t)v;
    }
#endif
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        char line[64];
        const uint64_t b = fgets(line, sizeof line, f) ? bench_parse_cache_size(line) : 0;
        fclose(f);
        if (b > 0) {
            if (source) *source = "sysfs";
            return b;
        }
    }
    if (source) *source = "unknown, assumed";
    return BENCH_LLC_DEFAULT_BYTES;
}

/* ---- read bandwidth ------------------------------------------------------------------------ */

typedef struct read_task {
    const uint64_t *p;
    size_t n; /* words */
    uint64_t sum;
} read_task;

/* Streams per thread: the thread's share is read as this many interleaved sequential streams,
 * a line of each in turn, each prefetched PREFETCH_WORDS ahead, as a GEMM reads its weight
 * panels. One plain stream per core leaves the memory idle between a core's misses; measured
 * on a 2-core Xeon VM: 14 GB/s with one stream, 21 with eight, 26-28 with four prefetched 4 KiB
 * ahead (more streams or a longer distance lost again). */
enum { READ_STREAMS = 4, READ_BLOCK = 8 /* words: one 64-byte line */, PREFETCH_WORDS = 512 };

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Sums the words into a separate accumulator per stream, so the loop is bound by the loads (the
 * compiler vectorises the block sums), and keeps the sum so the reads cannot be dropped. A
 * prefetch past the end of a stream only touches the next stream or the buffer's last pages,
 * and a prefetch never faults. */
static void *read_words(void *arg)
{
    read_task *t = arg;
    const size_t per = t->n / READ_STREAMS / READ_BLOCK * READ_BLOCK; /* words of one stream */
    uint64_t acc[READ_STREAMS] = {0};
    for (size_t i = 0; i < per; i += READ_BLOCK)
        for (int s = 0; s < READ_STREAMS; s++) {
            const uint64_t *p = t->p + (size_t)s * per + i;
            PREFETCH(p + PREFETCH_WORDS);
            uint64_t x = 0;
            for (int j = 0; j < READ_BLOCK; j++) x += p[j];
            acc[s] += x;
        }
    uint64_t sum = 0;
    for (size_t i = per * READ_STREAMS; i < t->n; i++) sum += t->p[i]; /* the tail */
    for (int s = 0; s < READ_STREAMS; s++) sum += acc[s];
    t->sum = sum;
    return NULL;
}

/* Where the sums go, so the reads are not dead code. */
static volatile uint64_t read_sink;

static int cmp_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int bench_measure_read_bandwidth(uint64_t bytes, int threads, int passes, bench_bandwidth *r)
{
    enum { MAX_THREADS = 1024, MAX_PASSES = 64 };
    memset(r, 0, sizeof *r);
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (passes < 1) passes = 1;
    if (passes > MAX_PASSES) passes = MAX_PASSES;
    const size_t words = (size_t)(bytes / sizeof(uint64_t));
    uint64_t *buf = words ? malloc(words * sizeof *buf) : NULL;
    read_task *tasks = calloc((size_t)threads, sizeof *tasks);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!buf || !tasks || !tids) {
        snprintf(r->note, sizeof r->note, "no memory for a %.2f GiB buffer", (double)bytes / 1073741824.0);
        free(buf);
        free(tasks);
        free(tids);
        return -1;
    }
    /* Written once, so every page is backed before the first timed pass (a pass over untouched
     * pages would time the kernel's page faults). */
    for (size_t i = 0; i < words; i++) buf[i] = i;
    const size_t share = words / (size_t)threads;
    double gbs[MAX_PASSES];
    uint64_t sink = 0;
    int done = 0, rc = 0;
    for (int pass = 0; pass < passes && !rc; pass++) {
        const double t0 = bench_now();
        int started = 0;
        for (int t = 0; t < threads; t++) {
            tasks[t] =
                (read_task){buf + (size_t)t * share, t == threads - 1 ? words - (size_t)t * share : share, 0};
            if (pthread_create(&tids[t], NULL, read_words, &tasks[t]) != 0) {
                snprintf(r->note, sizeof r->note, "cannot start %d threads", threads);
                rc = -1;
                break;
            }
            started++;
        }
        for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
        const double dt = bench_now() - t0;
        for (int t = 0; t < started; t++) sink += tasks[t].sum;
        if (!rc && dt > 0.0) gbs[done++] = (double)words * sizeof(uint64_t) / dt * 1e-9;
    }
    free(buf);
    free(tasks);
    free(tids);
    read_sink = sink;
    if (rc || done == 0) return -1;
    qsort(gbs, (size_t)done, sizeof gbs[0], cmp_double);
    r->gbs = gbs[done - 1];
    r->median_gbs = done % 2 ? gbs[done / 2] : 0.5 * (gbs[done / 2 - 1] + gbs[done / 2]);
    r->bytes = (uint64_t)words * sizeof(uint64_t);
    r->threads = threads;
    r->passes = done;
    return 0;
}
