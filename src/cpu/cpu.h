/*
 * cpu.h — what the CPU backend's files share: the packed weight layout, the per-ISA kernel
 * table, ISA detection and the thread pool.
 *
 * Packed layout. A weight matrix W[N][K] (HF [out][in]) is stored as panels of 16 output
 * columns, K-major inside a panel: panel p holds W[16p + i][k] at [p][k][i], zero-padded past
 * N. Panels go in pairs, [pair][2][K][16], and the micro-kernel computes a pair at a time:
 * for a gated (SwiGLU/GeGLU) tensor a pair is (gate panel q, up panel q), so the activation
 * fuses into the GEMM's epilogue; for a plain tensor it is (panel 2q, panel 2q + 1). 16
 * floats are one AVX-512, two AVX2 or four SSE/NEON vectors, so one layout serves every ISA.
 */
#ifndef MOE_CPU_H
#define MOE_CPU_H

#include "moe.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MOE_CPU_PANEL 16

/* Pairs in a packed tensor of n_out columns, and output columns per pair. */
static inline int64_t moe_cpu_pairs(int64_t n_out, bool gated)
{
    const int64_t per_pair = gated ? MOE_CPU_PANEL : 2 * MOE_CPU_PANEL;
    return (n_out + per_pair - 1) / per_pair;
}
/* Floats of one packed matrix (one expert). */
static inline int64_t moe_cpu_packed_floats(int64_t n_out, int64_t k_dim, bool gated)
{
    return moe_cpu_pairs(n_out, gated) * 2 * k_dim * MOE_CPU_PANEL;
}

/* One grouped-GEMM call on rows [r0, r1) — all valid — and pairs [p0, p1). */
typedef struct moe_cpu_gemm {
    int64_t k_dim, n_out;
    const float *a;           /* A rows, stride k_dim */
    const int32_t *row_token; /* gather: row r reads A row row_token[r]; NULL: row r */
    const float *b;           /* this expert's packed tensor */
    bool gated;
    int activation; /* a moe_activation, or -1 for none */
    float *out;     /* rows of n_out floats */
} moe_cpu_gemm;

typedef struct moe_cpu_kernels {
    const char *name; /* "baseline", "avx2", "avx512", "simde512" */
    void (*gemm)(const moe_cpu_gemm *g, int64_t r0, int64_t r1, int64_t p0, int64_t p1);
    /* y[i] += a * x[i] */
    void (*axpy)(int64_t n, float a, const float *x, float *y);
} moe_cpu_kernels;

extern const moe_cpu_kernels moe_cpu_kernels_baseline;
#if MOE_CPU_SIMDE512
extern const moe_cpu_kernels moe_cpu_kernels_simde512; /* a test level (built with the tests) */
#endif
#if MOE_CPU_X86
extern const moe_cpu_kernels moe_cpu_kernels_avx2;
extern const moe_cpu_kernels moe_cpu_kernels_avx512;
#endif

/* The best kernel set this CPU runs, or the one MOE_CPU_ISA names; NULL if MOE_CPU_ISA names
 * one the CPU cannot run (or an unknown one). */
const moe_cpu_kernels *moe_cpu_select_kernels(const char **why);

/* ---- thread pool ------------------------------------------------------------------------ */

typedef struct moe_pool moe_pool;
typedef void (*moe_task_fn)(void *arg, int64_t task);

/* n_threads includes the calling thread. NULL if a thread could not be started. */
moe_pool *moe_pool_create(int n_threads);
void moe_pool_destroy(moe_pool *pool);
int moe_pool_threads(const moe_pool *pool);
/* Runs fn(arg, i) for i in [0, n_tasks) over all threads; returns when all are done. Tasks
 * are handed out dynamically, so results must not depend on which thread runs what. */
void moe_pool_run(moe_pool *pool, int64_t n_tasks, moe_task_fn fn, void *arg);

#endif /* MOE_CPU_H */
