/*
 * bench_util.c — moe-independent helpers of moe-bench (see bench_util.h): the seeded PRNG
 * that makes weights and inputs reproducible, the monotonic clock, checked size products
 * and the timing summary.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

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
    const double r = ceil(0.95 * (double)n);
    size_t rank = (size_t)r; /* nearest rank, 1-based */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    s.p95 = v[rank - 1];
    return s;
}
