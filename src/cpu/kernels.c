/*
 * kernels.c — the CPU backend's SIMD kernels, written once against simd.h and compiled once
 * per ISA level (CMake builds this file several times with different MOE_CPU_LEVEL and
 * target flags; each copy exports its own moe_cpu_kernels table).
 *
 * The GEMM micro-kernel computes MR rows × one pair of 16-column panels over the whole
 * reduction: MR·32 accumulators stay in registers, each step loads 32 weights once and
 * broadcasts one value per row. MR is chosen per level so the accumulators, the weight
 * vectors and a broadcast fit the register file (16 SSE/AVX2 registers, 32 for AVX-512).
 */
#include "cpu.h"
#include "simd.h"

#include <math.h>
#include <string.h>

#if MOE_CPU_LEVEL == 2
#define MR 8
#elif MOE_CPU_LEVEL == 1
#define MR 3
#else
#define MR 2
#endif

#define VPP (MOE_CPU_PANEL / MOE_VLEN) /* vectors per panel */
#define NV  (2 * VPP)                  /* vectors per pair */

/* acc[r][v] = Σ_k a_r[k] · pair[v][k]; results to tmp[MR][32]. */
static void micro_kernel(int64_t k_dim, const float *const arow[MR], const float *b0, float *restrict tmp)
{
    const float *b1 = b0 + k_dim * MOE_CPU_PANEL;
    moe_vec acc[MR][NV];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = vec_zero();
    for (int64_t k = 0; k < k_dim; k++) {
        moe_vec bv[NV];
        for (int v = 0; v < VPP; v++) {
            bv[v] = vec_load(b0 + k * MOE_CPU_PANEL + v * MOE_VLEN);
            bv[VPP + v] = vec_load(b1 + k * MOE_CPU_PANEL + v * MOE_VLEN);
        }
        for (int r = 0; r < MR; r++) {
            const moe_vec a = vec_set1(arow[r][k]);
            for (int v = 0; v < NV; v++) acc[r][v] = vec_fmadd(a, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) vec_store(tmp + r * 2 * MOE_CPU_PANEL + v * MOE_VLEN, acc[r][v]);
}

/* GELU, erf form (GeGLU and GELU). */
static float gelu(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

/* The activation on one vector: SiLU and ReLU vectorised; GELU's erf per lane (no SIMD erf
 * is at hand, and GELU experts are rare among MoE models). */
static moe_vec activate_vec(int act, moe_vec v)
{
    if (act == MOE_ACTIVATION_SWIGLU)
        return vec_div(v, vec_add(vec_set1(1.0f), vec_exp(vec_sub(vec_zero(), v))));
    if (act == MOE_ACTIVATION_RELU) return vec_max(v, vec_zero());
    float lanes[MOE_VLEN];
    vec_store(lanes, v);
    for (int i = 0; i < MOE_VLEN; i++) lanes[i] = gelu(lanes[i]);
    return vec_load(lanes);
}

/* Applies the epilogue to rows [0, n_rows) of tmp in place, then writes their valid columns
 * of pair q. Gated: act(gate) · up into the first 16 columns. */
static void epilogue(const moe_cpu_gemm *g, float *tmp, int64_t row0, int n_rows, int64_t q)
{
    const int64_t per_pair = g->gated ? MOE_CPU_PANEL : 2 * MOE_CPU_PANEL;
    const int64_t col0 = q * per_pair;
    const int64_t n_cols = g->n_out - col0 < per_pair ? g->n_out - col0 : per_pair;
    for (int r = 0; r < n_rows; r++) {
        float *t = tmp + r * 2 * MOE_CPU_PANEL;
        if (g->gated) {
            for (int v = 0; v < VPP; v++) {
                const moe_vec h = activate_vec(g->activation, vec_load(t + v * MOE_VLEN));
                vec_store(t + v * MOE_VLEN, vec_mul(h, vec_load(t + MOE_CPU_PANEL + v * MOE_VLEN)));
            }
        } else if (g->activation >= 0) {
            for (int v = 0; v < NV; v++)
                vec_store(t + v * MOE_VLEN, activate_vec(g->activation, vec_load(t + v * MOE_VLEN)));
        }
        memcpy(g->out + (row0 + r) * g->n_out + col0, t, sizeof(float) * (size_t)n_cols);
    }
}

static void gemm(const moe_cpu_gemm *g, int64_t r0, int64_t r1, int64_t p0, int64_t p1)
{
    float tmp[MR * 2 * MOE_CPU_PANEL];
    const int64_t K = g->k_dim;
    for (int64_t q = p0; q < p1; q++) {
        const float *b = g->b + q * 2 * K * MOE_CPU_PANEL;
        for (int64_t r = r0; r < r1; r += MR) {
            const int n = r1 - r < MR ? (int)(r1 - r) : MR;
            const float *arow[MR];
            /* Rows past the end repeat the first row; their results are discarded. */
            for (int i = 0; i < MR; i++) {
                const int64_t row = r + (i < n ? i : 0);
                arow[i] = g->a + (g->row_token ? (int64_t)g->row_token[row] : row) * K;
            }
            micro_kernel(K, arow, b, tmp);
            epilogue(g, tmp, r, n, q);
        }
    }
}

static void axpy(int64_t n, float a, const float *x, float *y)
{
    const moe_vec av = vec_set1(a);
    int64_t i = 0;
    for (; i + MOE_VLEN <= n; i += MOE_VLEN)
        vec_store(y + i, vec_fmadd(av, vec_load(x + i), vec_load(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

const moe_cpu_kernels MOE_CPU_KERNELS_SYMBOL = {
    .name = MOE_CPU_KERNELS_NAME,
    .gemm = gemm,
    .axpy = axpy,
};
