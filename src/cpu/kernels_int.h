/*
 * kernels_int.h — the CPU kernels for integer activations (avx512vnni, avx2vnni, avx2, and
 * simde512): not a header of its own but a part of kernels.c, which includes it once, after the
 * float kernels, where it has their vocabulary (simd.h, PAIR, NV, ALWAYS_INLINE, the prefetches),
 * so it is compiled once per ISA level with the rest; kept apart as the one concern of
 * kernels.c that the float paths never touch. Empty unless MOE_CPU_INT8.
 */
/* ---- integer activations (avx512vnni, avx2vnni, avx2, and simde512) ---------------------- */

#if MOE_CPU_INT8
/* The integer vocabulary of the levels with the integer kernels: AVX512_VNNI (and SIMDe's
 * emulation of it, the simde512 level); AVX-VNNI at 256 bits, which SIMDe does not map (its
 * 256-bit dpbusd is AVX512VL's), so that level calls the intrinsics itself; and plain AVX2, whose
 * vpmaddubsw (u8·s8 pairs summed to int16, saturating) and vpmaddwd (s16·s16 pairs summed to
 * int32) make the same dot products in two or three instructions (ggml's AVX2 kernels do so too).
 * MR_INT: rows a call — 4 integer sums a vector of the pair (2 halves) a row, plus the weights,
 * fit 32 zmm for 4 rows; 16 ymm for 1 (a 256-bit pair is 4 vectors, so one row already keeps 8
 * sums). */
#if MOE_CPU_LEVEL == 2
#define MR_INT               4
#define INT_VNNI             1
#define ivec_loadu(p)        simde_mm512_loadu_si512(p)
#define ivec_zero()          simde_mm512_setzero_si512()
#define ivec_xor(a, b)       simde_mm512_xor_si512((a), (b))
#define ivec_set1_i8(x)      simde_mm512_set1_epi8(x)
#define ivec_dpbusd(c, a, b) simde_mm512_dpbusd_epi32((c), (a), (b))
#define ivec_dpwssd(c, a, b) simde_mm512_dpwssd_epi32((c), (a), (b))
#elif MOE_CPU_LEVEL == 1
#define MR_INT          1
#define ivec_loadu(p)   simde_mm256_loadu_si256(p)
#define ivec_zero()     simde_mm256_setzero_si256()
#define ivec_xor(a, b)  simde_mm256_xor_si256((a), (b))
#define ivec_set1_i8(x) simde_mm256_set1_epi8(x)
#if defined(__AVXVNNI__)
#include <immintrin.h>
#define INT_VNNI             1
#define ivec_dpbusd(c, a, b) _mm256_dpbusd_avx_epi32((c), (a), (b))
#define ivec_dpwssd(c, a, b) _mm256_dpwssd_avx_epi32((c), (a), (b))
#else
#define INT_VNNI             0
/* vpdpwssd is vpmaddwd plus an add: the same int32 results (the weights' 16-bit values are at
 * most 255, so no pair of products reaches vpmaddwd's one overflow, −32768²·2). */
#define ivec_dpwssd(c, a, b) simde_mm256_add_epi32((c), simde_mm256_madd_epi16((a), (b)))
/* vpdpbusd on any unsigned byte: vpmaddubsw would saturate where a pair of products passes
 * 32767 (255·127·2 does), so each byte is taken as 16·(its high nibble) + (its low nibble), whose
 * products with an int8 cannot (15·128·2), and each part's pairs are summed to int32 by vpmaddwd. */
static inline moe_ivec ivec_dpbusd(moe_ivec c, moe_ivec w, moe_ivec a)
{
    const moe_ivec nib = simde_mm256_set1_epi8(0x0f), one = simde_mm256_set1_epi16(1);
    const moe_ivec lo =
        simde_mm256_madd_epi16(simde_mm256_maddubs_epi16(simde_mm256_and_si256(w, nib), a), one);
    const moe_ivec hi = simde_mm256_madd_epi16(
        simde_mm256_maddubs_epi16(simde_mm256_and_si256(simde_mm256_srli_epi16(w, 4), nib), a), one);
    return simde_mm256_add_epi32(c, simde_mm256_add_epi32(lo, simde_mm256_slli_epi32(hi, 4)));
}
#endif
#else
#error "the integer kernels need 512-bit vectors or AVX2"
#endif

/* c + Σ_j (4-byte dot products of w[j]'s unsigned bytes with a[j]'s signed ones) in each 32-bit
 * lane, for weights that are nibbles (0..15: Q4_0, Q4_K). With VNNI four vpdpbusd; on AVX2 the
 * four vpmaddubsw are summed as int16 before one vpmaddwd: exact, since a pair of products is at
 * most 15·127·2 = 3810 in magnitude (activations are −127..127) and four pairs 15240 < 32767. */
ALWAYS_INLINE moe_ivec ivec_dot4_nib(moe_ivec c, const moe_ivec w[4], const moe_ivec a[4])
{
#if INT_VNNI
    for (int j = 0; j < 4; j++) c = ivec_dpbusd(c, w[j], a[j]);
    return c;
#else
    moe_ivec s = simde_mm256_maddubs_epi16(w[0], a[0]);
    for (int j = 1; j < 4; j++) s = simde_mm256_add_epi16(s, simde_mm256_maddubs_epi16(w[j], a[j]));
    return simde_mm256_add_epi32(c, simde_mm256_madd_epi16(s, simde_mm256_set1_epi16(1)));
#endif
}

/* One row of quantised activations (moe_cpu_quantize_row): quants (int8, or int16 in pairs),
 * then a scale and a sum of quants per 16 values. */
typedef struct qrow {
    const unsigned char *q;
    const float *d;
    const int32_t *sum;
} qrow;

/* 4 bytes of a row's quants from byte offset `at`, in every lane: vpdpbusd's signed operand (4
 * int8 activations) or vpdpwssd's (a pair of int16 ones). */
ALWAYS_INLINE moe_ivec lanes4(const qrow *a, int64_t at)
{
    int32_t v;
    memcpy(&v, a->q + at, sizeof v);
    return ivec_set1(v);
}

/* An int32 as float, rounded once as vcvtdq2ps does; where SIMDe emulates the 512-bit code and
 * has neither that conversion nor a 32-bit arithmetic shift, as hi·65536 + (i & 0xffff) in one
 * fused step, exact until rounded, hi the top 16 bits sign-extended by (x ^ 0x8000) − 0x8000. */
#if MOE_CPU_LEVEL == 1 || MOE_CPU_NATIVE_512
#define vec_from_i32(i) vec_from_int(i)
#else
static inline moe_vec vec_from_i32(moe_ivec i)
{
    const moe_ivec hi = ivec_sub(ivec_xor(ivec_srli(i, 16), ivec_set1(0x8000)), ivec_set1(0x8000));
    return vec_fmadd(vec_from_small_int(hi), vec_set1(65536.0f),
                     vec_from_small_int(ivec_and(i, ivec_set1(0xffff))));
}
#endif

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in the integer layout of Q8_0 or
 * Q4_0 (cpu.h), a_r quantised (int8, or int16 when wide): per half block (16 k, one activation
 * scale), the exact integer Σ q_w·q_a (vpdpbusd / vpdpwssd on the unsigned weights, minus the
 * zero point 128 or 8 times Σ q_a), then d_w·(d_a0·that of the first half + d_a1·that of the
 * second) into out. The halves' sums are apart anyway (Q4_0: the low and the high nibbles),
 * which also gives a decode row four dependency chains, not two. */
ALWAYS_INLINE void int_rows(const int nr, const moe_dtype dt, const bool wide, int64_t k_dim, const qrow *a,
                            const unsigned char *b, float *restrict out)
{
    const bool q4 = dt == MOE_DTYPE_Q4_0;
    const size_t block_bytes = q4 ? MOE_CPU_Q4_PAIR_BLOCK : MOE_CPU_Q8_PAIR_BLOCK;
    const int32_t zero_point = q4 ? 8 : 128;
    const int qb = wide ? 2 : 1; /* bytes of an activation quant */
    /* Weights as bytes (int8 activations) or as 16-bit pairs: bytes (0, 2) of each word. */
    const moe_ivec mask = wide ? (q4 ? ivec_set1(0x000f000f) : ivec_set1(0x00ff00ff)) : ivec_set1_i8(0x0f);
    zero_rows(nr, out);
    for (int64_t blk = 0; blk < k_dim / MOE_CPU_BLOCK; blk++) {
        const unsigned char *p = b + (size_t)blk * block_bytes, *q = p + MOE_CPU_SCALES;
        const int64_t k0 = blk * MOE_CPU_BLOCK;
        for (size_t l = 0; l < block_bytes; l += 64) prefetch_line(p + l);
        moe_ivec s[MR_INT][NV][2];
        for (int r = 0; r < nr; r++)
            for (int v = 0; v < NV; v++) s[r][v][0] = s[r][v][1] = ivec_zero();
        if (!wide && q4) {                 /* group g: k 4g..4g+3 in the low nibbles, k 16+4g.. in the high */
            for (int v = 0; v < NV; v++) { /* columns v·VLEN.. of the pair: 4 bytes each */
                moe_ivec lo[4], hi[4];
                for (int g = 0; g < 4; g++) {
                    const moe_ivec w = ivec_loadu(q + g * 4 * PAIR + v * 4 * MOE_VLEN);
                    lo[g] = ivec_and(w, mask);
                    hi[g] = ivec_and(ivec_srli(w, 4), mask);
                }
                for (int r = 0; r < nr; r++) {
                    moe_ivec al[4], ah[4];
                    for (int g = 0; g < 4; g++) {
                        al[g] = lanes4(&a[r], k0 + 4 * g);
                        ah[g] = lanes4(&a[r], k0 + 16 + 4 * g);
                    }
                    s[r][v][0] = ivec_dot4_nib(s[r][v][0], lo, al);
                    s[r][v][1] = ivec_dot4_nib(s[r][v][1], hi, ah);
                }
            }
        } else {
            for (int g = 0; g < (q4 ? 4 : 8); g++) {
                for (int v = 0; v < NV; v++) { /* columns v·VLEN.. of the pair: 4 bytes each */
                    const moe_ivec w = ivec_loadu(q + g * 4 * PAIR + v * 4 * MOE_VLEN);
                    if (!wide) { /* Q8_0: k 4g..4g+3, in the first half for g < 4 */
                        for (int r = 0; r < nr; r++)
                            s[r][v][g / 4] = ivec_dpbusd(s[r][v][g / 4], w, lanes4(&a[r], k0 + 4 * g));
                    } else if (q4) { /* pairs (k 4g, 4g+2), (4g+1, 4g+3), and the same + 16 */
                        const moe_ivec e[4] = {ivec_and(w, mask), ivec_and(ivec_srli(w, 8), mask),
                                               ivec_and(ivec_srli(w, 4), mask),
                                               ivec_and(ivec_srli(w, 12), mask)};
                        for (int r = 0; r < nr; r++)
                            for (int j = 0; j < 4; j++) {
                                const int64_t k = k0 + 4 * g + (j & 1) * 2 + (j / 2) * 16;
                                s[r][v][j / 2] = ivec_dpwssd(s[r][v][j / 2], e[j], lanes4(&a[r], k * qb));
                            }
                    } else { /* Q8_0, int16: pairs (k 4g, 4g+2) and (4g+1, 4g+3) */
                        const moe_ivec e[2] = {ivec_and(w, mask), ivec_and(ivec_srli(w, 8), mask)};
                        for (int r = 0; r < nr; r++)
                            for (int j = 0; j < 2; j++)
                                s[r][v][g / 4] = ivec_dpwssd(s[r][v][g / 4], e[j],
                                                             lanes4(&a[r], (k0 + 4 * g + 2 * j) * qb));
                    }
                }
            }
        }
        for (int v = 0; v < NV; v++) {
            const moe_vec dw = vec_load_f16((const uint16_t *)(const void *)p + v * MOE_VLEN);
            for (int r = 0; r < nr; r++) {
                moe_vec half[2];
                for (int h = 0; h < 2; h++) {
                    const moe_ivec zp = ivec_set1(zero_point * a[r].sum[2 * blk + h]);
                    half[h] = vec_mul(vec_from_i32(ivec_sub(s[r][v][h], zp)), vec_set1(a[r].d[2 * blk + h]));
                }
                float *o = out + r * PAIR + v * MOE_VLEN;
                vec_store(o, vec_fmadd(vec_add(half[0], half[1]), dw, vec_load(o)));
            }
        }
    }
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in Q4_K's integer layout (cpu.h),
 * a_r quantised (int8, or int16 when wide). Per sub-block j of 32 k and half of it (16 k, one
 * activation scale d_a), the exact integer Σ q·q_a; then out += d·sc_j·(d_a0·Σ_0 + d_a1·Σ_1)
 * − dmin·m_j·(Σ of the sub-block's quantised activations, d_a0·Σq_a0 + d_a1·Σq_a1): the min
 * multiplies the activations as they were rounded, so the result is the exact product with the
 * rounded row, as the reference computes it. A group of 4 nibble bytes holds 4 k of sub-block 2c
 * (low nibbles) and the same 4 of sub-block 2c + 1 (high), so one load serves two sub-blocks. The
 * super-block is read in memory order, chunk c (its 1 KiB of nibbles for sub-blocks 2c, 2c + 1)
 * after chunk c − 1, each vector of the pair in turn; as a chunk starts, the lines as far past it
 * as MOE_CPU_PREFETCH_DIST are prefetched into L1 (prefetch_line_l1), the head's as a super-block
 * starts: decode streams these bytes once. (Each vector's column through the whole super-block,
 * its 74 lines prefetched at once into L2, decoded at 0.7× the speed of this order.) */
ALWAYS_INLINE void int_kq_rows(const int nr, const bool wide, int64_t k_dim, const qrow *a,
                               const unsigned char *b, float *restrict out)
{
    const moe_dtype dt = MOE_DTYPE_Q4_K;
    const size_t super_bytes = MOE_CPU_KQ_PAIR_SUPER(dt), chunk = 8 * 4 * PAIR;
    const moe_ivec nib = ivec_set1_i8(0x0f), nib16 = ivec_set1(0x000f000f);
    zero_rows(nr, out);
    for (int64_t sb = 0; sb < k_dim / MOE_SUPER_BLOCK_SIZE; sb++) {
        const unsigned char *p = b + (size_t)sb * super_bytes, *q = p + MOE_CPU_KQ_NIB(dt);
        const int64_t k0 = sb * MOE_SUPER_BLOCK_SIZE, g0 = k0 / MOE_ACT_GROUP;
        for (size_t l = 0; l < MOE_CPU_KQ_NIB(dt); l += 64) prefetch_line_l1(p + l); /* a later head */
        float msum[MR_INT][8]; /* each sub-block's sum of the rounded activations */
        for (int r = 0; r < nr; r++)
            for (int j = 0; j < 8; j++) {
                const int64_t g = g0 + 2 * j;
                msum[r][j] = a[r].d[g] * (float)a[r].sum[g] + a[r].d[g + 1] * (float)a[r].sum[g + 1];
            }
        for (int c = 0; c < 4; c++) {
            const unsigned char *qc = q + (size_t)c * chunk;
            for (size_t l = 0; l < chunk; l += 64) prefetch_line_l1(qc + l);
            for (int v = 0; v < NV; v++) {
                const unsigned char *qv = qc + (size_t)v * 4 * MOE_VLEN;
                /* s[r][2h + half]: sub-block 2c + h (h = 0 low nibbles, 1 high), k half·16.. of it */
                moe_ivec s[MR_INT][4];
                if (!wide) {
                    for (int half = 0; half < 2; half++) {
                        moe_ivec lo[4], hi[4];
                        for (int i = 0; i < 4; i++) {
                            const moe_ivec w = ivec_loadu(qv + (4 * half + i) * 4 * PAIR);
                            lo[i] = ivec_and(w, nib);
                            hi[i] = ivec_and(ivec_srli(w, 4), nib);
                        }
                        for (int r = 0; r < nr; r++) {
                            moe_ivec al[4], ah[4];
                            for (int i = 0; i < 4; i++) {
                                const int64_t k = k0 + 64 * c + 16 * half + 4 * i;
                                al[i] = lanes4(&a[r], k);
                                ah[i] = lanes4(&a[r], k + 32);
                            }
                            s[r][half] = ivec_dot4_nib(ivec_zero(), lo, al);
                            s[r][2 + half] = ivec_dot4_nib(ivec_zero(), hi, ah);
                        }
                    }
                } else { /* int16 pairs (k 4g, 4g+2), (4g+1, 4g+3) of the low nibbles, then the high */
                    for (int half = 0; half < 2; half++) {
                        moe_ivec lo[MR_INT], hi[MR_INT];
                        for (int r = 0; r < nr; r++) lo[r] = hi[r] = ivec_zero();
                        for (int i = 0; i < 4; i++) {
                            const moe_ivec w = ivec_loadu(qv + (4 * half + i) * 4 * PAIR);
                            const moe_ivec e0 = ivec_and(w, nib16), e1 = ivec_and(ivec_srli(w, 8), nib16),
                                           e2 = ivec_and(ivec_srli(w, 4), nib16),
                                           e3 = ivec_and(ivec_srli(w, 12), nib16);
                            const int64_t k = k0 + 64 * c + 16 * half + 4 * i;
                            for (int r = 0; r < nr; r++) {
                                lo[r] = ivec_dpwssd(lo[r], e0, lanes4(&a[r], 2 * k));
                                lo[r] = ivec_dpwssd(lo[r], e1, lanes4(&a[r], 2 * (k + 2)));
                                hi[r] = ivec_dpwssd(hi[r], e2, lanes4(&a[r], 2 * (k + 32)));
                                hi[r] = ivec_dpwssd(hi[r], e3, lanes4(&a[r], 2 * (k + 34)));
                            }
                        }
                        for (int r = 0; r < nr; r++) {
                            s[r][half] = lo[r];
                            s[r][2 + half] = hi[r];
                        }
                    }
                }
                const moe_vec d = vec_load_f16((const uint16_t *)(const void *)p + v * MOE_VLEN);
                const moe_vec dmin =
                    vec_load_f16((const uint16_t *)(const void *)(p + MOE_CPU_KQ_DMIN) + v * MOE_VLEN);
                moe_vec o[MR_INT];
                for (int r = 0; r < nr; r++) o[r] = vec_load(out + r * PAIR + v * MOE_VLEN);
                for (int h = 0; h < 2; h++) {
                    const int j = 2 * c + h;
                    const size_t at = (size_t)j * MOE_CPU_KQ_COLS + (size_t)v * MOE_VLEN;
                    const moe_vec scale = vec_mul(d, vec_from_int(ivec_load_u8(p + MOE_CPU_KQ_SC(dt) + at)));
                    const moe_vec min = vec_mul(dmin, vec_from_int(ivec_load_u8(p + MOE_CPU_KQ_M + at)));
                    for (int r = 0; r < nr; r++) {
                        const int64_t g = g0 + 2 * j;
                        const moe_vec x = vec_fmadd(vec_from_i32(s[r][2 * h + 1]), vec_set1(a[r].d[g + 1]),
                                                    vec_mul(vec_from_i32(s[r][2 * h]), vec_set1(a[r].d[g])));
                        o[r] = vec_fmadd(min, vec_set1(-msum[r][j]), vec_fmadd(scale, x, o[r]));
                    }
                }
                for (int r = 0; r < nr; r++) vec_store(out + r * PAIR + v * MOE_VLEN, o[r]);
            }
        }
    }
}

typedef void (*int_tile_fn)(int n, int64_t k_dim, const qrow *a, const unsigned char *b, float *out);
#define CASE_I8_Q8(r, unused)  CASE_INT_(r, MOE_DTYPE_Q8_0, false)
#define CASE_I8_Q4(r, unused)  CASE_INT_(r, MOE_DTYPE_Q4_0, false)
#define CASE_I16_Q8(r, unused) CASE_INT_(r, MOE_DTYPE_Q8_0, true)
#define CASE_I16_Q4(r, unused) CASE_INT_(r, MOE_DTYPE_Q4_0, true)
#define CASE_INT_(r, dt, wide)                                                                               \
    case r:                                                                                                  \
        int_rows(r, dt, wide, k_dim, a, b, out);                                                             \
        return;
#define INT_TILE(name, CASE)                                                                                 \
    static void name(int n, int64_t k_dim, const qrow *a, const unsigned char *b, float *out)                \
    {                                                                                                        \
        switch (n) {                                                                                         \
            ROWS(MR_INT, CASE, 0)                                                                            \
        }                                                                                                    \
    }
INT_TILE(tile_i8_q8, CASE_I8_Q8)
INT_TILE(tile_i8_q4, CASE_I8_Q4)
INT_TILE(tile_i16_q8, CASE_I16_Q8)
INT_TILE(tile_i16_q4, CASE_I16_Q4)
#define CASE_I8_Q4K(r, unused)                                                                               \
    case r:                                                                                                  \
        int_kq_rows(r, false, k_dim, a, b, out);                                                             \
        return;
#define CASE_I16_Q4K(r, unused)                                                                              \
    case r:                                                                                                  \
        int_kq_rows(r, true, k_dim, a, b, out);                                                              \
        return;
INT_TILE(tile_i8_q4k, CASE_I8_Q4K)
INT_TILE(tile_i16_q4k, CASE_I16_Q4K)
#endif /* MOE_CPU_INT8 */
