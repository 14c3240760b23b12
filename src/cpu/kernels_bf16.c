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
 * The activation rows are split here too (BF16_ROW, moe_cpu_kernels.bf16x2_row), 16 values at a time:
 * split value by value they were ~7% of a decode in the L3.
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
 * 4 shifts, each row's 8 chains s[r][m & 1][part][vector]; a_r's group starts at ap[r] (BF16_ROW
 * below, 8 words a group). vdpbf16ps waits ~6 cycles for its sum, so a decode row needs the 8. */
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

/* The two symbols kernels.c calls (moe_cpu_kernels.bf16_dot's tiles and rows), named after the level. */
#define KERNELS_CAT_(a, b) a##b
#define KERNELS_CAT(a, b)  KERNELS_CAT_(a, b)
#define BF16_TILE          KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_tile)
#define BF16_ROW           KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_row)
void BF16_TILE(int n, moe_dtype dt, int64_t k_dim, const uint32_t *const *a, const unsigned char *b,
               float *out);
void BF16_ROW(const float *a, int64_t k_dim, moe_dtype dt, uint32_t *out);

/* ---- the activation rows: a split into hi + lo and ordered for word_group ------------------------ */

/* u's floats rounded to bfloat16, to nearest even (internal.h: moe_f32_to_bf16), in their top halves. */
ALWAYS_INLINE simde__m512i round_bf16(simde__m512i u)
{
    const simde__m512i odd = ivec_and(ivec_srli(u, 16), ivec_set1(1));
    return ivec_and(ivec_add(u, ivec_add(odd, ivec_set1(0x7fff))), ivec_set1((int32_t)0xffff0000u));
}

/* 16 values at p as hi + lo (backend.h: MOE_ACT_BF16X2), each value's word hi's bits in its low half and
 * lo's in its high half; *sum gets hi + lo (exact in float: 16 significant bits). A value that rounds up
 * past bfloat16's largest is cut toward zero instead, so that its lo stays finite; an infinity or a NaN
 * is hi alone (lo 0, NaN quiet), so it reaches the output as the float path carries it. */
ALWAYS_INLINE simde__m512i split16(const float *p, moe_vec *sum)
{
    const moe_vec v = vec_load(p);
    const simde__m512i u = vec_bits(v), top = ivec_set1((int32_t)0xffff0000u), inf = ivec_set1(0x7f800000);
    const simde__mmask16 finite = (simde__mmask16)~simde_mm512_cmpeq_epi32_mask(ivec_and(u, inf), inf);
    const simde__mmask16 nan = simde_mm512_cmpgt_epi32_mask(ivec_and(u, ivec_set1(0x7fffffff)), inf);
    simde__m512i hi =
        simde_mm512_mask_mov_epi32(round_bf16(u), nan, ivec_and(ivec_or(u, ivec_set1(0x400000)), top));
    const simde__mmask16 over = finite & simde_mm512_cmpeq_epi32_mask(ivec_and(hi, inf), inf);
    hi = simde_mm512_mask_mov_epi32(hi, over, ivec_and(u, top));
    const simde__m512i lo =
        simde_mm512_maskz_mov_epi32(finite, round_bf16(vec_bits(vec_sub(v, vec_from_bits(hi)))));
    *sum = vec_add(vec_from_bits(hi), vec_from_bits(lo));
    return ivec_or(ivec_srli(hi, 16), lo);
}

/* Where each 16-bit part of two output vectors (4 word groups: [group][shift m][part][the word's two
 * halves]) comes from in (the low-nibble values' words, the high-nibble values' words): the part's half
 * of value 4·group + m / 2 + 2·half (m odd: in the second vector). */
static const uint16_t words_order[64] = {0,  4,  1,  5,  32, 36, 33, 37, 2,  6,  3,  7,  34, 38, 35, 39,
                                         8,  12, 9,  13, 40, 44, 41, 45, 10, 14, 11, 15, 42, 46, 43, 47,
                                         16, 20, 17, 21, 48, 52, 49, 53, 18, 22, 19, 23, 50, 54, 51, 55,
                                         24, 28, 25, 29, 56, 60, 57, 61, 26, 30, 27, 31, 58, 62, 59, 63};

/* Four word groups' 32 words at out from the 16 values at low (each the low nibble of a byte) and the 16
 * at high (the same bytes' high nibbles); *sum_low, *sum_high get their hi + lo. */
ALWAYS_INLINE void split_groups(const float *low, const float *high, uint32_t *out, moe_vec *sum_low,
                                moe_vec *sum_high)
{
    const simde__m512i l = split16(low, sum_low), h = split16(high, sum_high);
    for (int v = 0; v < 2; v++)
        simde_mm512_storeu_si512(out + 16 * v, simde_mm512_permutex2var_epi16(
                                                   l, simde_mm512_loadu_si512(words_order + 32 * v), h));
}

/* The sum of v's lanes, in lane order (the same on every level). */
ALWAYS_INLINE float lanes_sum(moe_vec v)
{
    float x[MOE_VLEN], t = 0.0f;
    vec_store(x, v);
    for (int i = 0; i < MOE_VLEN; i++) t += x[i];
    return t;
}

/* One row of k activations for weights of format dt (backend.h: MOE_ACT_BF16X2): per word group (8
 * values of a column: Q4_0 and MXFP4 4 a block, Q4_K 32 a super-block) and shift m (0..3), a 32-bit
 * word per part (hi, then lo) holding the pair that vpermw gives each column's word at that shift: in
 * the low half the value of the word's nibble m, in the high half that of nibble m + 4, 2 k further.
 * Then the sums of hi + lo per 32 k (Q4_K's mins take them). A Q4_0 / MXFP4 block's bytes hold k and
 * k + 16, a Q4_K byte of chunk c (64 k) k and k + 32 of it, so four groups take 16 values and the 16
 * values 16 or 32 further. */
void BF16_ROW(const float *a, int64_t k_dim, moe_dtype dt, uint32_t *out)
{
    float *sums = (float *)(void *)(out + k_dim);
    if (dt == MOE_DTYPE_Q4_K) {
        for (int64_t c = 0; c < k_dim; c += 64) {
            moe_vec l0, h0, l1, h1;
            split_groups(a + c, a + c + 32, out + c, &l0, &h0);
            split_groups(a + c + 16, a + c + 48, out + c + 32, &l1, &h1);
            sums[c / 32] = lanes_sum(vec_add(l0, l1));
            sums[c / 32 + 1] = lanes_sum(vec_add(h0, h1));
        }
        return;
    }
    for (int64_t b = 0; b < k_dim; b += MOE_CPU_BLOCK) {
        moe_vec l, h;
        split_groups(a + b, a + b + 16, out + b, &l, &h);
        sums[b / 32] = lanes_sum(vec_add(l, h));
    }
}

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
