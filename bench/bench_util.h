/*
 * bench_util.h — helpers of moe-bench that know nothing of moe: a seeded PRNG (splitmix64
 * seeding a xorshift64*), a monotonic clock, checked size arithmetic, and summary statistics
 * (min, median, mean, p95) of a list of timings.
 */
#ifndef MOE_BENCH_UTIL_H
#define MOE_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct bench_rng {
    uint64_t state;
} bench_rng;

/* Seeds the generator; any seed (0 included) gives a good nonzero state. */
void bench_rng_seed(bench_rng *rng, uint64_t seed);
uint64_t bench_rng_next(bench_rng *rng);
/* Fills p[0..n) with floats uniform in [-bound, bound). */
void bench_fill_uniform(bench_rng *rng, float *p, size_t n, float bound);

/* Seconds from a monotonic clock (CLOCK_MONOTONIC); only differences are meaningful. */
double bench_now(void);

/* *out = a * b * c as size_t; returns 0 (and leaves *out alone) on a negative value or
 * overflow. */
int bench_mul_size(int64_t a, int64_t b, int64_t c, size_t *out);

typedef struct bench_summary {
    size_t n;
    double min, median, mean, p95, max;
} bench_summary;

/* Summary of v[0..n), n >= 1. Sorts v in place. p95 is the nearest-rank percentile. */
bench_summary bench_summarize(double *v, size_t n);

#endif /* MOE_BENCH_UTIL_H */
