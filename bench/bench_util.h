/*
 * bench_util.h — helpers of moe-bench that know nothing of moe: a seeded PRNG (splitmix64
 * seeding a xorshift64*), a monotonic clock, checked size arithmetic, summary statistics
 * (min, median, mean, stddev, p95, p99, max) of a list of timings, the host's available
 * memory, and a progress bar on stderr.
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
/* A double uniform in [0, 1). */
double bench_rng_uniform(bench_rng *rng);

/* Seconds from a monotonic clock (CLOCK_MONOTONIC); only differences are meaningful. */
double bench_now(void);

/* *out = a * b * c as size_t; returns 0 (and leaves *out alone) on a negative value or
 * overflow. */
int bench_mul_size(int64_t a, int64_t b, int64_t c, size_t *out);

typedef struct bench_summary {
    size_t n;
    double min, median, mean, stddev, p95, p99, max;
} bench_summary;

/* Summary of v[0..n) (all zero when n is 0). Sorts v in place. stddev is the sample standard
 * deviation (n - 1 in the denominator; 0 for one value); p95 and p99 are nearest-rank
 * percentiles, so they are always one of the measured values. */
bench_summary bench_summarize(double *v, size_t n);
/* Nearest-rank percentile q (0 < q <= 100) of sorted v[0..n), n >= 1. */
double bench_percentile_sorted(const double *v, size_t n, double q);

/* Bytes of memory the host can give a new allocation without swapping (Linux MemAvailable,
 * else the physical memory); 0 when unknown. *total gets the physical memory (0 if unknown). */
uint64_t bench_host_available(uint64_t *total);

/* ‖a − b‖ / ‖b‖ over n floats (‖a − b‖ when b is all zero), in double. */
double bench_rel_l2(const float *a, const float *b, size_t n);

/* A one-line progress bar on stderr, drawn only when stderr is a terminal and the run has
 * lasted BENCH_PROGRESS_DELAY seconds, redrawn at most ten times a second, and erased before
 * anything is printed to stdout (bench_progress_clear). MOE_BENCH_NO_PROGRESS=1 turns it off. */
#define BENCH_PROGRESS_DELAY 2.0
typedef struct bench_progress {
    int enabled, drawn;
    double start, last_draw;
} bench_progress;

void bench_progress_init(bench_progress *p);
/* fraction in [0, 1] of the whole run; label says what runs now. */
void bench_progress_update(bench_progress *p, double fraction, const char *label);
void bench_progress_clear(bench_progress *p);

#endif /* MOE_BENCH_UTIL_H */
