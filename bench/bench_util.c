/*
 * bench_util.c — moe-independent helpers of moe-bench (see bench_util.h): the seeded PRNG
 * that makes weights and inputs reproducible, the monotonic clock, checked size products,
 * the timing summary, the host memory probe and the stderr progress bar.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define BENCH_HAVE_UNISTD 1
#endif

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bench_rng_seed(bench_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    rng->state = splitmix64(&x);
    if (rng->state == 0) rng->state = 0x2545F4914F6CDD1Dull;
}

uint64_t bench_rng_next(bench_rng *rng)
{
    uint64_t x = rng->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void bench_fill_uniform(bench_rng *rng, float *p, size_t n, float bound)
{
    const double scale = 2.0 * (double)bound / 16777216.0; /* 24 random bits → [0, 2·bound) */
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((double)(bench_rng_next(rng) >> 40) * scale - (double)bound);
}

double bench_rng_uniform(bench_rng *rng)
{
    return (double)(bench_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0); /* 53 bits */
}

double bench_now(void)
{
    struct timespec ts;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    timespec_get(&ts, TIME_UTC);
#endif
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bench_mul_size(int64_t a, int64_t b, int64_t c, size_t *out)
{
    if (a < 0 || b < 0 || c < 0) return 0;
    const uint64_t f[3] = {(uint64_t)a, (uint64_t)b, (uint64_t)c};
    size_t r = 1;
    for (int i = 0; i < 3; i++) {
#if SIZE_MAX < UINT64_MAX
        if (f[i] > SIZE_MAX) return 0;
#endif
        if (f[i] != 0 && r > SIZE_MAX / (size_t)f[i]) return 0;
        r *= (size_t)f[i];
    }
    *out = r;
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile_sorted(const double *v, size_t n, double q)
{
    size_t rank = (size_t)ceil(q / 100.0 * (double)n); /* nearest rank, 1-based */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

bench_summary bench_summarize(double *v, size_t n)
{
    bench_summary s = {0};
    if (n == 0) return s;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    s.n = n;
    s.min = v[0];
    s.max = v[n - 1];
    s.mean = sum / (double)n;
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (v[i] - s.mean) * (v[i] - s.mean);
    s.stddev = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
    s.p95 = bench_percentile_sorted(v, n, 95.0);
    s.p99 = bench_percentile_sorted(v, n, 99.0);
    return s;
}

/* A "Name:   123 kB" line of /proc/meminfo, in bytes; 0 if absent. */
static uint64_t meminfo_bytes(const char *name)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    const size_t len = strlen(name);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, name, len) == 0 && line[len] == ':') {
            uint64_t kb = 0;
            if (sscanf(line + len + 1, "%" SCNu64, &kb) == 1) v = kb * 1024u;
            break;
        }
    }
    fclose(f);
    return v;
}

uint64_t bench_host_available(uint64_t *total)
{
    uint64_t phys = meminfo_bytes("MemTotal");
#if defined(BENCH_HAVE_UNISTD) && defined(_SC_PHYS_PAGES)
    if (phys == 0) {
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) phys = (uint64_t)pages * (uint64_t)page;
    }
#endif
    if (total) *total = phys;
    const uint64_t avail = meminfo_bytes("MemAvailable");
    return avail > 0 ? avail : phys;
}

void bench_progress_init(bench_progress *p)
{
    memset(p, 0, sizeof *p);
    const char *off = getenv("MOE_BENCH_NO_PROGRESS");
#if defined(BENCH_HAVE_UNISTD)
    p->enabled = isatty(fileno(stderr)) && !(off && *off && strcmp(off, "0") != 0);
#else
    (void)off;
#endif
    p->start = bench_now();
}

void bench_progress_update(bench_progress *p, double fraction, const char *label)
{
    if (!p->enabled) return;
    const double now = bench_now();
    if (now - p->start < BENCH_PROGRESS_DELAY || now - p->last_draw < 0.1) return;
    enum { WIDTH = 30 };
    if (!(fraction >= 0.0)) fraction = 0.0;
    if (fraction > 1.0) fraction = 1.0;
    const int filled = (int)(fraction * WIDTH + 0.5);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r\033[K[%s] %3.0f%% %6.1fs  %.60s", bar, fraction * 100.0, now - p->start,
            label ? label : "");
    fflush(stderr);
    p->drawn = 1;
    p->last_draw = now;
}

void bench_progress_clear(bench_progress *p)
{
    if (!p->drawn) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->drawn = 0;
    p->last_draw = 0.0; /* the next update draws at once */
}

double bench_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double diff = (double)a[i] - (double)b[i];
        num += diff * diff;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}
