/*
 * bench_machine.c — the machine probes of moe-bench (see bench_machine.h): the last-level
 * cache size and a multi-threaded streaming-read bandwidth measurement. Nothing here knows
 * moe; the figures only give the forwards' numbers something to be compared with.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* _SC_LEVEL3_CACHE_SIZE is a glibc extension */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity, cpu_set_t */
#include <sched.h>
#endif

#include "bench_machine.h"

#include "bench_util.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
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

/* The first line of a small sysfs file, without its newline; false when it cannot be read. */
static bool read_line(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    const bool ok = fgets(buf, (int)size, f) != NULL;
    fclose(f);
    if (ok) buf[strcspn(buf, "\n")] = '\0';
    return ok;
}

enum { SYSFS_MAX_INDEX = 16, SHARED_TEXT = 128, CPU_LIST_MAX = 1024 };

/* CPU cpu's last-level cache in the tree at root: the index with the highest level that holds
 * data (Unified or Data, not Instruction). Its size (0 when none is listed), its level, and in
 * key the CPUs that share it (what tells its instances apart, with the level). */
static uint64_t cpu_llc(const char *root, int cpu, long *level_out, char key[SHARED_TEXT])
{
    uint64_t best_size = 0;
    long best_level = 0;
    for (int i = 0; i < SYSFS_MAX_INDEX; i++) {
        char path[512], text[SHARED_TEXT];
        snprintf(path, sizeof path, "%s/cpu%d/cache/index%d/level", root, cpu, i);
        if (!read_line(path, text, sizeof text)) continue;
        const long level = strtol(text, NULL, 10);
        snprintf(path, sizeof path, "%s/cpu%d/cache/index%d/type", root, cpu, i);
        if (level <= best_level || !read_line(path, text, sizeof text) || strcmp(text, "Instruction") == 0)
            continue;
        snprintf(path, sizeof path, "%s/cpu%d/cache/index%d/size", root, cpu, i);
        const uint64_t size = read_line(path, text, sizeof text) ? bench_parse_cache_size(text) : 0;
        snprintf(path, sizeof path, "%s/cpu%d/cache/index%d/shared_cpu_list", root, cpu, i);
        if (size == 0 || !read_line(path, text, sizeof text)) continue;
        best_size = size;
        best_level = level;
        snprintf(key, SHARED_TEXT, "%s", text);
    }
    *level_out = best_level;
    return best_size;
}

uint64_t bench_llc_sysfs(const char *root, const int *cpus, int n_cpus, bench_llc_info *info)
{
    typedef struct seen_cache {
        long level;
        char shared[SHARED_TEXT];
    } seen_cache;
    seen_cache *seen = n_cpus > 0 ? malloc((size_t)n_cpus * sizeof *seen) : NULL;
    int n_seen = 0;
    uint64_t total = 0;
    for (int c = 0; seen && c < n_cpus; c++) {
        seen_cache *s = &seen[n_seen];
        const uint64_t size = cpu_llc(root, cpus[c], &s->level, s->shared);
        bool again = size == 0;
        for (int k = 0; k < n_seen && !again; k++)
            again = seen[k].level == s->level && strcmp(seen[k].shared, s->shared) == 0;
        if (again) continue;
        total += size;
        n_seen++;
    }
    if (info) {
        memset(info, 0, sizeof *info);
        info->instances = n_seen;
        if (n_seen > 0) {
            info->level = seen[0].level;
            snprintf(info->shared, sizeof info->shared, "%s", seen[0].shared);
        }
    }
    free(seen);
    return total;
}

/* The CPUs this process may run on (its affinity mask), the CPU backend's threads among them. */
static int allowed_cpus(int *cpus, int cap)
{
    int n = 0;
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE && n < cap; c++)
            if (CPU_ISSET(c, &set)) cpus[n++] = c;
#else
    (void)cpus;
    (void)cap;
#endif
    return n;
}

uint64_t bench_llc_bytes(const char **source)
{
    static char text[SHARED_TEXT + 96]; /* what *source points to */
    int cpus[CPU_LIST_MAX] = {0};       /* none outside Linux (allowed_cpus) */
    const int n_cpus = allowed_cpus(cpus, CPU_LIST_MAX);
    bench_llc_info info;
    const uint64_t sysfs = bench_llc_sysfs("/sys/devices/system/cpu", cpus, n_cpus, &info);
    if (sysfs > 0) {
        if (info.instances == 1)
            snprintf(text, sizeof text, "sysfs: one L%ld, shared by cpus %s", info.level, info.shared);
        else
            snprintf(text, sizeof text,
                     "sysfs: %d L%ld caches summed, those of the CPUs moe-bench may run on", info.instances,
                     info.level);
        if (source) *source = text;
        return sysfs;
    }
#if defined(_SC_LEVEL3_CACHE_SIZE)
    const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (v > 0) {
        if (source) *source = "sysconf";
        return (uint64_t)v;
    }
#endif
    if (source) *source = "unknown, assumed";
    return BENCH_LLC_DEFAULT_BYTES;
}

/* ---- read bandwidth ------------------------------------------------------------------------ */

typedef struct read_task {
    const uint64_t *p;
    size_t n;    /* words */
    int streams; /* interleaved sequential streams */
    uint64_t sum;
} read_task;

/* The thread's share is read as `streams` interleaved sequential streams, a line of each in
 * turn, each prefetched PREFETCH_WORDS ahead into L2, as a GEMM reads its weight panels. How
 * many streams keep a core's memory busiest depends on the machine (measured on a 2-core Xeon
 * VM: 14 GB/s with one plain stream, 21 with eight, 26-28 with four prefetched 4 KiB ahead, and
 * the best of them changes from run to run), so the passes go round READ_CONFIGS stream counts
 * and the best pass is the figure. */
enum { READ_BLOCK = 8 /* words: one 64-byte line */, PREFETCH_WORDS = 512 };
static const int READ_CONFIGS[] = {1, 2, 4};
#define N_READ_CONFIGS ((int)(sizeof READ_CONFIGS / sizeof READ_CONFIGS[0]))

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 2)
#else
#define PREFETCH(p) ((void)0)
#endif

/* Sums the words into a separate accumulator per stream, so the loop is bound by the loads (the
 * compiler vectorises the block sums), and keeps the sum so the reads cannot be dropped. A
 * prefetch past the end of a stream only touches the next stream or the buffer's last pages,
 * and a prefetch never faults. */
static void *read_words(void *arg)
{
    enum { MAX_STREAMS = 4 };
    read_task *t = arg;
    const int ns = t->streams;
    const size_t per = t->n / (size_t)ns / READ_BLOCK * READ_BLOCK; /* words of one stream */
    uint64_t acc[MAX_STREAMS] = {0};
    for (size_t i = 0; i < per; i += READ_BLOCK)
        for (int s = 0; s < ns; s++) {
            const uint64_t *p = t->p + (size_t)s * per + i;
            PREFETCH(p + PREFETCH_WORDS);
            uint64_t x = 0;
            for (int j = 0; j < READ_BLOCK; j++) x += p[j];
            acc[s] += x;
        }
    uint64_t sum = 0;
    for (size_t i = per * (size_t)ns; i < t->n; i++) sum += t->p[i]; /* the tail */
    for (int s = 0; s < ns; s++) sum += acc[s];
    t->sum = sum;
    return NULL;
}

/* Where the sums go, so the reads are not dead code. */
static volatile uint64_t read_sink;

/* The buffer in 2 MiB huge pages where the system has them (Linux: transparent huge pages on
 * madvise), as the CPU backend allocates its weights: with 4 KiB pages a stream misses the TLB
 * every 4 KiB and reads slower than the forwards it is compared with. */
static void *alloc_huge(size_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    (void)madvise(p, bytes, MADV_HUGEPAGE);
    return p;
#else
    return malloc(bytes);
#endif
}

static void free_huge(void *p, size_t bytes)
{
    if (!p) return;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    munmap(p, bytes);
#else
    (void)bytes;
    free(p);
#endif
}

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
    uint64_t *buf = words ? alloc_huge(words * sizeof *buf) : NULL;
    read_task *tasks = calloc((size_t)threads, sizeof *tasks);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!buf || !tasks || !tids) {
        snprintf(r->note, sizeof r->note, "no memory for a %.2f GiB buffer", (double)bytes / 1073741824.0);
        free_huge(buf, words * sizeof *buf);
        free(tasks);
        free(tids);
        return -1;
    }
    /* Written once, so every page is backed before the first timed pass (a pass over untouched
     * pages would time the kernel's page faults). */
    for (size_t i = 0; i < words; i++) buf[i] = i;
    const size_t share = words / (size_t)threads;
    double gbs[MAX_PASSES], best = 0.0;
    uint64_t sink = 0;
    int done = 0, rc = 0;
    for (int pass = 0; pass < passes && !rc; pass++) {
        const double t0 = bench_now();
        int started = 0;
        for (int t = 0; t < threads; t++) {
            tasks[t] =
                (read_task){buf + (size_t)t * share, t == threads - 1 ? words - (size_t)t * share : share,
                            READ_CONFIGS[pass % N_READ_CONFIGS], 0};
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
        if (!rc && dt > 0.0) {
            const double g = (double)words * sizeof(uint64_t) / dt * 1e-9;
            if (done == 0 || g > best) best = g, r->streams = tasks[0].streams;
            gbs[done++] = g;
        }
    }
    free_huge(buf, words * sizeof *buf);
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
