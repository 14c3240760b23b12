/*
 * kernels_bf16.c — the bfloat16-pair tiles: Q4_0, MXFP4 and Q4_K experts on activations split into
 * two bfloat16 (moe.h: activation_dtype BF16; backend.h: MOE_ACT_BF16X2), at 512 bits. Built for the
 * avx512vnni level with AVX512_BF16 on (used only where the CPU reports it: cpu_backend.c) and for
 * simde512, where SIMDe emulates vdpbf16ps, so their logic is tested on any machine. kernels.c walks
 * the rows and pairs (gemm_bf16) and calls this level's tile through its one exported symbol.
 *
 * Why: 4-bit float decode is bound by its instructions, not by memory (bench/results/
 * amd-epyc-zen4-2core-compute-floor): each 4-bit value costs a shift, a vpermps and an FMA lane. Here
 * a shift and one vpermw turn a vector of the float kernels' nibble words (cpu.h, the word layouts:
 * the same bytes, no second copy) into 32 exact bfloat16 values (Q4_0's codes −8..7, MXFP4's twice-E2M1
 * values −12..12, Q4_K's 0..15), two k of 16 columns, and two vdpbf16ps (the activation's hi and lo
 * parts) multiply them: the products are exact in float32 and each dot-product step rounds once, as an
 * FMA does. Only the activation's rounding to hi + lo (16 significant bits) moves the result: ~4e-6 of
 * the output (rel L2). nibble_loop.c measured Q4_0's loop at 1.76× the float one.
 *
 * A row's arithmetic is the same for any number of rows in a tile (each row its own chains, in the
 * same order), so a token's output does not depend on its batch (test_forward's batch_invariance).
 */
#include "cpu.h"
#include "simd.h"

#include <string.h>

#if MOE_CPU_LEVEL != 2
#error "kernels_bf16.c reads the 512-bit nibble word layouts: MOE_CPU_LEVEL 2 only"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define UNROLL_4      _Pragma("GCC unroll 4")
/* kernels.c's prefetch_line: 8 KiB ahead into L2 (it says why). */
#define PREFETCH(p) __builtin_prefetch((const unsigned char *)(p) + 8192, 0, 2)
#else
#define ALWAYS_INLINE static inline
#define UNROLL_4
#define PREFETCH(p) ((void)(p))
#endif

#define PAIR (2 * MOE_CPU_PANEL) /* columns per pair: two vectors of 16 */

/* Each code's value as bfloat16 bits: Q4_0's q − 8, MXFP4's kvalues (twice the E2M1 values: its block
 * scale is the halved one, cpu.h), Q4_K's q (its min is subtracted per sub-block). */
static const uint16_t values_q4_0[16] = {0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,
                                         0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
static const uint16_t values_mxfp4[16] = {0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40c0, 0x4100, 0x4140,
                                          0x0000, 0xbf80, 0xc000, 0xc040, 0xc080, 0xc0c0, 0xc100, 0xc140};
static const uint16_t values_plain[16] = {0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0,
                                          0x4100, 0x4110, 0x4120, 0x4130, 0x4140, 0x4150, 0x4160, 0x4170};

/* The format's table for vpermw, each value twice: vpermw reads 5 index bits, and the fifth is the
 * next nibble's low bit. */
ALWAYS_INLINE simde__m512i value_table(const moe_dtype dt)
{
    const uint16_t *v = dt == MOE_DTYPE_Q4_0    ? values_q4_0
                        : dt == MOE_DTYPE_MXFP4 ? values_mxfp4
                                                : values_plain;
    return simde_mm512_broadcast_i64x4(simde_mm256_loadu_si256(v));
}

ALWAYS_INLINE simde__m512bh as_bh(simde__m512i x)
{
    simde__m512bh r;
    memcpy(&r, &x, sizeof r);
    return r;
}

/* Each 16-bit half of x's words shifted right by 4m bits, m = 0..3: its nibble m (and m + 4) in the
 * low index bits. A switch of literal shifts: SIMDe's emulation asks for a constant. */
ALWAYS_INLINE simde__m512i nibble_shift(simde__m512i x, int m)
{
    switch (m) {
    case 1:
        return simde_mm512_srli_epi16(x, 4);
    case 2:
        return simde_mm512_srli_epi16(x, 8);
    case 3:
        return simde_mm512_srli_epi16(x, 12);
    default:
        return x;
    }
}

/* One word group's products for nr rows: the group's two word vectors (the pair's panels) at q, their
 * 4 shifts, each row's 8 chains s[r][m & 1][part][vector]; a_r's group starts at ap[r] (pack.c:
 * bf16x2_row, 8 words a group). vdpbf16ps waits ~6 cycles for its sum, so a decode row needs the 8. */
ALWAYS_INLINE void word_group(const int nr, const unsigned char *q, const simde__m512i table,
                              const uint32_t *const *ap, moe_vec s[MOE_CPU_BF16_MR][2][2][2])
{
    PREFETCH(q);
    PREFETCH(q + 64);
    const simde__m512i x0 = simde_mm512_loadu_si512(q), x1 = simde_mm512_loadu_si512(q + 64);
    UNROLL_4
    for (int m = 0; m < 4; m++) { /* shifts by constants once unrolled */
        const simde__m512bh w0 = as_bh(simde_mm512_permutexvar_epi16(nibble_shift(x0, m), table));
        const simde__m512bh w1 = as_bh(simde_mm512_permutexvar_epi16(nibble_shift(x1, m), table));
        for (int r = 0; r < nr; r++)
            for (int part = 0; part < 2; part++) {
                const simde__m512bh x = as_bh(simde_mm512_set1_epi32((int32_t)ap[r][2 * m + part]));
                moe_vec *t = s[r][m & 1][part];
                t[0] = simde_mm512_dpbf16_ps(t[0], x, w0);
                t[1] = simde_mm512_dpbf16_ps(t[1], x, w1);
            }
    }
}

ALWAYS_INLINE void zero_sums(const int nr, moe_vec s[MOE_CPU_BF16_MR][2][2][2])
{
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < 8; i++) s[r][i >> 2][(i >> 1) & 1][i & 1] = vec_zero();
}
/* Chain set h of row r, vector v, added up: the lo part's sums first, then the hi part's. */
ALWAYS_INLINE moe_vec chain_sum(moe_vec s[MOE_CPU_BF16_MR][2][2][2], int r, int h, int v)
{
    return vec_add(s[r][h][1][v], s[r][h][0][v]);
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in Q4_0 or MXFP4 words: per block of 32
 * k, 4 word groups (k 4g..4g + 3 in the low nibbles, + 16 in the high ones), then d · the block's sum
 * into the row's total in out. */
ALWAYS_INLINE void block_rows_bf16(const int nr, const moe_dtype dt, int64_t k_dim, const uint32_t *const *a,
                                   const unsigned char *b, float *restrict out)
{
    const simde__m512i table = value_table(dt);
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < 2; v++) vec_store(out + r * PAIR + v * MOE_VLEN, vec_zero());
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_CPU_BLOCK) {
        const unsigned char *p = b + (size_t)(k0 / MOE_CPU_BLOCK) * MOE_CPU_Q4_PAIR_BLOCK;
        PREFETCH(p);
        moe_vec s[MOE_CPU_BF16_MR][2][2][2];
        zero_sums(nr, s);
        UNROLL_4
        for (int g = 0; g < 4; g++) {
            const uint32_t *ap[MOE_CPU_BF16_MR];
            for (int r = 0; r < nr; r++) ap[r] = a[r] + k0 + 8 * g;
            word_group(nr, p + MOE_CPU_SCALES + g * 2 * 64, table, ap, s);
        }
        for (int v = 0; v < 2; v++) {
            const uint16_t *d16 = (const uint16_t *)(const void *)p + v * MOE_VLEN;
            const moe_vec d =
                dt == MOE_DTYPE_MXFP4 ? vec_from_bits(ivec_slli(ivec_load_u16(d16), 16)) : vec_load_f16(d16);
            for (int r = 0; r < nr; r++) {
                const moe_vec sum = vec_add(chain_sum(s, r, 1, v), chain_sum(s, r, 0, v));
                float *o = out + r * PAIR + v * MOE_VLEN;
                vec_store(o, vec_fmadd(d, sum, vec_load(o)));
            }
        }
    }
}

/* The same for Q4_K in its word layout: per super-block of 256 k and pair of sub-blocks (2c, 2c + 1),
 * 8 word groups (their low nibbles sub-block 2c, their high ones 2c + 1: the shift's parity tells the
 * sub-block), then each sub-block's d·sc times its sum, less dmin·m times its activations' sum (a_r's
 * sums, after its k words), into the row's total in out. */
ALWAYS_INLINE void kq_rows_bf16(const int nr, int64_t k_dim, const uint32_t *const *a, const unsigned char *b,
                                float *restrict out)
{
    const moe_dtype dt = MOE_DTYPE_Q4_K;
    const simde__m512i table = value_table(dt);
    const size_t super_bytes = (size_t)MOE_CPU_KQ_PAIR_SUPER(dt);
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < 2; v++) vec_store(out + r * PAIR + v * MOE_VLEN, vec_zero());
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_SUPER_BLOCK_SIZE) {
        const unsigned char *p = b + (size_t)(k0 / MOE_SUPER_BLOCK_SIZE) * super_bytes;
        for (size_t l = 0; l < MOE_CPU_KQ_NIB(dt); l += 64) PREFETCH(p + l);
        for (int c = 0; c < 4; c++) {
            moe_vec s[MOE_CPU_BF16_MR][2][2][2];
            zero_sums(nr, s);
            UNROLL_4
            for (int g = 8 * c; g < 8 * c + 8; g++) {
                const uint32_t *ap[MOE_CPU_BF16_MR];
                for (int r = 0; r < nr; r++) ap[r] = a[r] + k0 + 8 * g;
                word_group(nr, p + MOE_CPU_KQ_NIB(dt) + g * 2 * 64, table, ap, s);
            }
            for (int v = 0; v < 2; v++) {
                const int col = v * MOE_VLEN;
                const moe_vec d = vec_load_f16((const uint16_t *)(const void *)p + col);
                const moe_vec dmin =
                    vec_load_f16((const uint16_t *)(const void *)(p + MOE_CPU_KQ_DMIN) + col);
                for (int h = 0; h < 2; h++) {
                    const int j = 2 * c + h;
                    const moe_vec scale = vec_mul(
                        d, vec_from_int(ivec_load_u8(p + MOE_CPU_KQ_SC(dt) + j * MOE_CPU_KQ_COLS + col)));
                    const moe_vec min = vec_mul(
                        dmin, vec_from_int(ivec_load_u8(p + MOE_CPU_KQ_M + j * MOE_CPU_KQ_COLS + col)));
                    for (int r = 0; r < nr; r++) {
                        const float *asum = (const float *)(const void *)(a[r] + k_dim);
                        float *o = out + r * PAIR + col;
                        const moe_vec t = vec_fmadd(scale, chain_sum(s, r, h, v), vec_load(o));
                        vec_store(o, vec_fmadd(min, vec_set1(-asum[(k0 + 32 * j) / 32]), t));
                    }
                }
            }
        }
    }
}

#define KERNELS_CAT_(a, b) a##b
#define KERNELS_CAT(a, b)  KERNELS_CAT_(a, b)
#define BF16_TILE          KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_tile)
void BF16_TILE(int n, moe_dtype dt, int64_t k_dim, const uint32_t *const *a, const unsigned char *b,
               float *out);

#define ROWS(X, n)                                                                                           \
    switch (n) {                                                                                             \
    case 1:                                                                                                  \
        X(1);                                                                                                \
        return;                                                                                              \
    case 2:                                                                                                  \
        X(2);                                                                                                \
        return;                                                                                              \
    default:                                                                                                 \
        X(3);                                                                                                \
        return;                                                                                              \
    }
#define Q4_0_ROWS(r)  block_rows_bf16(r, MOE_DTYPE_Q4_0, k_dim, a, b, out)
#define MXFP4_ROWS(r) block_rows_bf16(r, MOE_DTYPE_MXFP4, k_dim, a, b, out)
#define Q4_K_ROWS(r)  kq_rows_bf16(r, k_dim, a, b, out)

/* n rows (1..MOE_CPU_BF16_MR) of one pair of format dt (Q4_0, MXFP4 or Q4_K): each format and row count
 * its own copy. */
void BF16_TILE(int n, moe_dtype dt, int64_t k_dim, const uint32_t *const *a, const unsigned char *b,
               float *out)
{
    _Static_assert(MOE_CPU_BF16_MR == 3, "one case per row count");
    if (dt == MOE_DTYPE_Q4_K) ROWS(Q4_K_ROWS, n)
    if (dt == MOE_DTYPE_MXFP4) ROWS(MXFP4_ROWS, n)
    ROWS(Q4_0_ROWS, n)
}
