/*
 * harness.h — what the test programs share: backend selection from the command line (a
 * backend without a device exits with SKIP, 77), a seeded PRNG, random layers and inputs,
 * near-tie redraws so no run is flaky, guarded output buffers and comparison helpers.
 *
 * Every test program takes the backend as argv[1] ("cpu", "vulkan", "opencl"); CTest sets
 * MOE_CPU_ISA to run the CPU backend once per ISA level.
 */
#ifndef MOE_TEST_HARNESS_H
#define MOE_TEST_HARNESS_H

#include "moe.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SKIP_CODE 77

#if defined(_WIN32)
/* POSIX's setenv / unsetenv over the C runtime's _putenv_s, whose environment getenv (and so
 * the library) reads; an empty value removes the variable. */
static inline int setenv(const char *name, const char *value, int overwrite)
{
    return !overwrite && getenv(name) ? 0 : _putenv_s(name, value);
}
static inline int unsetenv(const char *name)
{
    return _putenv_s(name, "");
}
#include <direct.h> /* _mkdir */
#include <io.h>     /* _mktemp_s */
#include <string.h>
/* POSIX's mkdtemp: the XXXXXX made unique, the directory made. */
static inline char *mkdtemp(char *tmpl)
{
    return _mktemp_s(tmpl, strlen(tmpl) + 1) == 0 && _mkdir(tmpl) == 0 ? tmpl : NULL;
}
#define h_mkdir(path) _mkdir(path)
#else
#include <sys/stat.h>
#define h_mkdir(path) mkdir(path, 0700)
#endif

/* A new directory <temporary directory>/<prefix>XXXXXX (mkdtemp) in buf[0..size): the
 * temporary directory is $TMPDIR, else on Windows %TEMP% or %TMP%, else /tmp. buf, or NULL. */
char *h_make_temp_dir(const char *prefix, char *buf, size_t size);

extern int h_failures;
extern int h_checks;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        h_checks++;                                                                                          \
        if (!(cond)) {                                                                                       \
            h_failures++;                                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                  \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
        }                                                                                                    \
    } while (0)

#define CHECK_STATUS(expr, want)                                                                             \
    do {                                                                                                     \
        const moe_status st_ = (expr);                                                                       \
        CHECK(st_ == (want), "%s returned %s, expected %s (%s)", #expr, moe_status_string(st_),              \
              moe_status_string(want), moe_last_error());                                                    \
    } while (0)

/* ---- setup -------------------------------------------------------------------------------- */

/* Parses argv[1] into a backend and creates a context on it; exits 77 (skip) when the
 * backend is not built or has no device (or MOE_CPU_ISA names a level the CPU lacks). */
moe_context *h_open(int argc, char **argv, moe_backend_kind *kind);
/* A further context on the same backend (n_threads 0 = default). */
moe_context *h_context(moe_backend_kind kind, int n_threads);
/* A context of device 0 says what it runs: moe_device_get_info's features, and no used feature
 * while `switch_env` (the backend's *_DISABLE_SUBGROUPS test switch) is "1", while
 * moe_device_get_info keeps the switch-free answer. The variable is restored. */
void h_check_context_features(moe_backend_kind kind, const char *switch_env);
/* GPU device i's info (written to *info) is consistent: features_used within features, none of
 * the bits in `never` (the CPU's, and those a backend cannot have), the subgroup variant used
 * exactly where the device has subgroup reductions, fp16 matching FLOAT16. Prints the bits. */
void h_check_gpu_device_features(moe_backend_kind kind, int i, uint32_t never, moe_device_info *info);
/* Prints a summary and returns the process exit code. */
int h_finish(const char *name);

/* ---- random data ---------------------------------------------------------------------------- */

typedef struct h_rng {
    uint64_t s;
} h_rng;

h_rng h_rng_seeded(const char *what); /* MOE_TEST_SEED or the clock; printed for replay */
uint64_t h_next(h_rng *r);
double h_uniform(h_rng *r);                        /* [0, 1) */
float h_sym(h_rng *r, float scale);                /* uniform in [-scale, scale) */
int64_t h_range(h_rng *r, int64_t lo, int64_t hi); /* [lo, hi] */

/* A random layer shape and variant, float32 weights (test_forward's and test_mpi's random cases):
 * odd sizes and the extremes (d_model 1..160, d_ff 1..200, E 1..64, k 1..8), every score,
 * activation, renormalisation, scaling, selection bias, groups, shared expert (gated or not),
 * capacity with either drop policy, gpt-oss's clamp and biases. *tokens gets a token count
 * 1..150 for it; max_tokens is that plus 0..20. */
moe_layer_desc h_random_desc(h_rng *r, int64_t *tokens);

/* A layer's config with owned host weights. */
typedef struct h_layer {
    moe_layer_desc desc;
    moe_layer_weights w;
    float *router, *router_bias, *gate, *up, *down;
    float *shared_gate, *shared_up, *shared_down, *shared_expert_gate;
    float *gate_bias, *up_bias, *down_bias; /* desc.expert_has_bias */
    int64_t hot_expert;                     /* >= 0: every token's best expert (see h_make_hot) */
} h_layer;

/* Random weights for `desc` (fan-in scaled); router scaled by router_scale. */
void h_layer_init(h_layer *l, const moe_layer_desc *desc, h_rng *r, float router_scale);
void h_layer_free(h_layer *l);
/* Makes expert e every token's clear first choice: input feature 0 is held at 1 and only
 * expert e's router row weighs it, heavily. */
void h_make_hot(h_layer *l, int64_t e);

/* Random inputs x [T][d] whose routing has no near-tie: every token whose k-th and
 * (k+1)-th selection keys (or group scores) are closer than float32 can resolve is redrawn. */
void h_fill_input(const h_layer *l, int64_t T, float *x, h_rng *r);
/* The smallest relative gap of token x's routing decisions (exposed for the tests' own use). */
double h_route_margin(const h_layer *l, const float *x);

/* ---- guarded outputs ------------------------------------------------------------------------ */

/* n floats with guard zones on both sides, prefilled with a sentinel pattern. */
typedef struct h_guarded {
    float *base, *data;
    size_t n;
} h_guarded;

h_guarded h_guarded_alloc(size_t n);
void h_guarded_free(h_guarded *g);
/* Refills data and guards with the sentinel, as after h_guarded_alloc. */
void h_guarded_reset(h_guarded *g);
/* True if the guard zones are intact. */
bool h_guards_ok(const h_guarded *g);
/* True if every element still holds the sentinel (the call wrote nothing). */
bool h_untouched(const h_guarded *g);

/* ---- comparisons ------------------------------------------------------------------------------ */

double h_rel_l2(const float *a, const float *ref, size_t n);

/* The weight bytes ctx's arena holds (moe_context_get_arena_stats), the call checked. */
size_t h_weights_bytes(const moe_context *ctx);
/* Same ids as sets per token, with matching weights; returns the number of mismatches. */
int h_compare_topk(const int32_t *ids, const float *w, const int32_t *ref_ids, const float *ref_w, int64_t T,
                   int64_t k, float tol);

#endif
