/*
 * kernels_int.h — the CPU kernels for integer activations (avx512vnni, avx2vnni, avx2, neondot, and
 * the test levels simde512 and simdedot): not a header of its own but a part of kernels.c, which includes it
 * once, after the float kernels, where it has their vocabulary (simd.h, PAIR, NV, ALWAYS_INLINE, the
 * prefetches), so it is compiled once per ISA level with the rest; kept apart as the one concern of kernels.c
 * that the float paths never touch. Empty unless MOE_CPU_INT8.
 */
/* ---- integer activations (avx512vnni, avx2vnni, avx2, neondot; simde512, simdedot) ---------- */

#if MOE_CPU_INT8
/* The integer vocabulary of the levels with the integer kernels, three operations a level:
 *  - ivec_dot_small(c, w, a): c + the 4-byte dot products of w's bytes (unsigned, at most 127: every
 *    format's values but Q8_0's) with a's signed ones, in each 32-bit lane;
 *  - ivec_dpbusd(c, w, a): the same for any unsigned byte (Q8_0's, offset by 128);
 *  - ivec_dpwssd(c, w, a): c + the dot products of w's 16-bit pairs with a's (the int16 path).
 * AVX512_VNNI (and SIMDe's emulation of it, the simde512 level) and AVX-VNNI at 256 bits (which SIMDe
 * does not map: its 256-bit dpbusd is AVX512VL's, so that level calls the intrinsics itself) have
 * all three as instructions. Plain AVX2's vpmaddubsw (u8·s8 pairs summed to int16, saturating) and
 * vpmaddwd (s16·s16 pairs summed to int32) make them in two or three instructions (ggml's AVX2
 * kernels do so too). At 128 bits Arm's sdot (FEAT_DotProd: 4 signed bytes by 4 signed bytes into
 * each 32-bit lane; the neondot level) is ivec_dot_small in one instruction, since a value of at
 * most 127 is the same byte signed; SIMDe emulates it elsewhere (the simdedot test level, x86-64).
 * Where no instruction takes unsigned bytes, ivec_dpbusd takes a byte as 16·(its high nibble) + (its
 * low nibble), two ivec_dot_small (below).
 * INT_DOT4: one instruction makes ivec_dot_small (ivec_dot4_nib then chains them).
 * MR_INT: rows a call — 4 integer sums a vector of the pair (2 halves) a row, plus the weights,
 * fit 32 zmm for 4 rows; 16 ymm for 1 (a 256-bit pair is 4 vectors, so one row already keeps 8
 * sums); 4 at 128 bits, where NEON has 32 registers: counted under qemu-user (no Arm machine timed
 * it; bench/results/qemu-aarch64-neondot-instructions), a Q4_K_M layer at T = 8 took 362 M kernel
 * instructions a forward with 1 row a call and 239 M with 4 (float activations 355 M), decode 0.2-0.9%
 * more (each row count is its own copy of the kernel). */
#if MOE_CPU_LEVEL == 2
#define MR_INT               4
#define INT_DOT4             1
#define INT_DPBUSD           1
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
#define INT_DOT4             1
#define INT_DPBUSD           1
#define ivec_dpbusd(c, a, b) _mm256_dpbusd_avx_epi32((c), (a), (b))
#define ivec_dpwssd(c, a, b) _mm256_dpwssd_avx_epi32((c), (a), (b))
#else
#define INT_DOT4             0
#define INT_DPBUSD           0
/* vpdpwssd is vpmaddwd plus an add: the same int32 results (the weights' 16-bit values are at
 * most 255, so no pair of products reaches vpmaddwd's one overflow, −32768²·2). */
#define ivec_dpwssd(c, a, b) simde_mm256_add_epi32((c), simde_mm256_madd_epi16((a), (b)))
/* One vpmaddubsw and one vpmaddwd: exact, since a pair of products is at most 127·128·2 = 32512,
 * inside int16 (vpmaddubsw saturates past 32767, which 255·127·2 would pass: ivec_dpbusd's bytes). */
#define ivec_dot_small(c, w, a)                                                                              \
    simde_mm256_add_epi32(                                                                                   \
        (c), simde_mm256_madd_epi16(simde_mm256_maddubs_epi16((w), (a)), simde_mm256_set1_epi16(1)))
#endif
#elif MOE_CPU_LEVEL == 0 && (defined(__ARM_FEATURE_DOTPROD) || MOE_CPU_X86)
#if defined(__ARM_FEATURE_DOTPROD)
#include <arm_neon.h>
#else
#include <simde/arm/neon/dot.h>
#endif
#define MR_INT               4
#define INT_DOT4             1
#define INT_DPBUSD           0
#define INT_SIGNED_DOT       1
#define ivec_loadu(p)        simde_mm_loadu_si128(p)
#define ivec_zero()          simde_mm_setzero_si128()
#define ivec_xor(a, b)       simde_mm_xor_si128((a), (b))
#define ivec_set1_i8(x)      simde_mm_set1_epi8(x)
/* pmaddwd plus an add, as at 256 bits (SIMDe maps it onto NEON's widening multiplies). */
#define ivec_dpwssd(c, a, b) simde_mm_add_epi32((c), simde_mm_madd_epi16((a), (b)))
/* sdot on the vector as bytes: NEON's own where the object is compiled for it (a moe_ivec, SIMDe's
 * __m128i, is NEON's int64x2_t there, so the reinterpretations cost nothing); SIMDe's emulation on
 * x86-64's __m128i otherwise. */
static inline moe_ivec ivec_dot_small(moe_ivec c, moe_ivec w, moe_ivec a)
{
#if defined(__ARM_FEATURE_DOTPROD)
    return vreinterpretq_s64_s32(
        vdotq_s32(vreinterpretq_s32_s64(c), vreinterpretq_s8_s64(w), vreinterpretq_s8_s64(a)));
#else
    return simde_int32x4_to_m128i(simde_vdotq_s32(simde_int32x4_from_m128i(c), simde_int8x16_from_m128i(w),
                                                  simde_int8x16_from_m128i(a)));
#endif
}
#else
#error "the integer kernels need 512-bit vectors, AVX2, or Arm's dot products (or SIMDe's on x86-64)"
#endif
/* INT_SIGNED_DOT: ivec_dot_small takes signed bytes too (sdot), so Q8_0's int8 path reads its quants
 * as they were (byte ^ 0x80) with no zero point, one sdot a word where ivec_dpbusd takes two. */
#ifndef INT_SIGNED_DOT
#define INT_SIGNED_DOT 0
#endif
#if INT_DPBUSD
#define ivec_dot_small(c, w, a) ivec_dpbusd((c), (w), (a))
#else
/* vpdpbusd on any unsigned byte w = 16·h + l: the high nibbles' dot product shifted by 4, then the
 * low ones', each exact in ivec_dot_small. */
static inline moe_ivec ivec_dpbusd(moe_ivec c, moe_ivec w, moe_ivec a)
{
    const moe_ivec nib = ivec_set1_i8(0x0f);
    const moe_ivec hi = ivec_dot_small(ivec_zero(), ivec_and(ivec_srli(w, 4), nib), a);
    return ivec_dot_small(ivec_add(c, ivec_slli(hi, 4)), ivec_and(w, nib), a);
}
#endif

/* c + Σ_j (4-byte dot products of w[j]'s unsigned bytes with a[j]'s signed ones) in each 32-bit
 * lane, for weights of at most 5 bits (0..15: Q4_0, Q4_K; 0..31: Q5_K). With one instruction a dot
 * product (INT_DOT4) four of them; on AVX2 the four vpmaddubsw are summed as int16 before one
 * vpmaddwd: exact, since a pair of products is at most 31·127·2 = 7874 in magnitude (activations are
 * −127..127) and four pairs 31496 < 32767. */
ALWAYS_INLINE moe_ivec ivec_dot4_nib(moe_ivec c, const moe_ivec w[4], const moe_ivec a[4])
{
#if INT_DOT4
    for (int j = 0; j < 4; j++) c = ivec_dot_small(c, w[j], a[j]);
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
#if MOE_CPU_LEVEL < 2 || MOE_CPU_NATIVE_512
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
    const int32_t zero_point = q4 ? 8 : !wide && INT_SIGNED_DOT ? 0 : 128;
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
#if INT_SIGNED_DOT
                        const moe_ivec ws = ivec_xor(w, ivec_set1_i8((char)0x80)); /* the quants, signed */
                        for (int r = 0; r < nr; r++)
                            s[r][v][g / 4] = ivec_dot_small(s[r][v][g / 4], ws, lanes4(&a[r], k0 + 4 * g));
#else
                        for (int r = 0; r < nr; r++)
                            s[r][v][g / 4] = ivec_dpbusd(s[r][v][g / 4], w, lanes4(&a[r], k0 + 4 * g));
#endif
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

/* Bit 4 of each of x's bytes from its bit b (0..7), the others 0: the bit masked first, then a 32-bit
 * shift by 4 − b, which moves it within its byte (Q5_K's fifth bits, from a word of its high-bit bytes;
 * masked after the shift, the or with the nibbles took one more operation). */
ALWAYS_INLINE moe_ivec fifth_bits(moe_ivec x, int b)
{
    x = ivec_and(x, ivec_set1_i8((char)(1 << b)));
    return b < 4 ? ivec_slli(x, 4 - b) : b > 4 ? ivec_srli(x, b - 4) : x;
}
/* Q5_K's values (0..31, a byte each) of nibble word w of chunk c and the word of their fifth bits hb:
 * *lo the low nibbles' (bit 2c), *hi the high ones' (bit 2c + 1). */
ALWAYS_INLINE void q5k_values(moe_ivec w, moe_ivec hb, int c, moe_ivec *lo, moe_ivec *hi)
{
    const moe_ivec nib = ivec_set1_i8(0x0f);
    *lo = ivec_or(ivec_and(w, nib), fifth_bits(hb, 2 * c));
    *hi = ivec_or(ivec_and(ivec_srli(w, 4), nib), fifth_bits(hb, 2 * c + 1));
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in Q4_K's or Q5_K's integer layout
 * (cpu.h), a_r quantised (int8, or int16 when wide). Q5_K is Q4_K with a fifth bit to each value, from
 * its high-bit bytes in words (qh byte l: bit 2c for the low nibble's value of nibble byte 32c + l,
 * 2c + 1 for the high one's), put in before the products; the rest is Q4_K's. Per sub-block j of 32 k
 * and half of it (16 k, one
 * activation scale d_a), the exact integer Σ q·q_a; then out += d·sc_j·(d_a0·Σ_0 + d_a1·Σ_1)
 * − dmin·m_j·(Σ of the sub-block's quantised activations, d_a0·Σq_a0 + d_a1·Σq_a1): the min
 * multiplies the activations as they were rounded, so the result is the exact product with the
 * rounded row, as the reference computes it. A group of 4 nibble bytes holds 4 k of sub-block 2c
 * (low nibbles) and the same 4 of sub-block 2c + 1 (high), so one load serves two sub-blocks. The
 * super-block is read in memory order, chunk c (its 1 KiB of nibbles for sub-blocks 2c, 2c + 1)
 * after chunk c − 1, each vector of the pair in turn; as a chunk starts, the lines as far past it
 * as MOE_CPU_PREFETCH_DIST are prefetched into L1 (prefetch_line_l1), the head's (and Q5_K's high
 * bits) as a super-block starts: decode streams these bytes once. (Each vector's column through the whole
 * super-block, its 74 lines prefetched at once into L2, decoded at 0.7× the speed of this order.) */
ALWAYS_INLINE void int_kq_rows(const int nr, const moe_dtype dt, const bool wide, int64_t k_dim,
                               const qrow *a, const unsigned char *b, float *restrict out)
{
    const bool q5 = dt == MOE_DTYPE_Q5_K;
    const size_t super_bytes = MOE_CPU_KQ_PAIR_SUPER(dt), chunk = 8 * 4 * PAIR;
    const moe_ivec nib = ivec_set1_i8(0x0f), nib16 = ivec_set1(0x000f000f), bytes02 = ivec_set1(0x00ff00ff);
    zero_rows(nr, out);
    for (int64_t sb = 0; sb < k_dim / MOE_SUPER_BLOCK_SIZE; sb++) {
        const unsigned char *p = b + (size_t)sb * super_bytes, *q = p + MOE_CPU_KQ_NIB(dt);
        const int64_t k0 = sb * MOE_SUPER_BLOCK_SIZE, g0 = k0 / MOE_ACT_GROUP;
        for (size_t l = 0; l < MOE_CPU_KQ_NIB(dt); l += 64) prefetch_line_l1(p + l); /* a later head */
        for (size_t l = MOE_CPU_KQ_QH(dt); l < super_bytes; l += 64) prefetch_line_l1(p + l); /* Q5_K's qh */
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
                const unsigned char *qv = qc + (size_t)v * 4 * MOE_VLEN,
                                    *hv = p + MOE_CPU_KQ_QH(dt) + (size_t)v * 4 * MOE_VLEN;
                /* s[r][2h + half]: sub-block 2c + h (h = 0 low nibbles, 1 high), k half·16.. of it */
                moe_ivec s[MR_INT][4];
                if (!wide) {
                    for (int half = 0; half < 2; half++) {
                        moe_ivec lo[4], hi[4];
                        for (int i = 0; i < 4; i++) {
                            const moe_ivec w = ivec_loadu(qv + (4 * half + i) * 4 * PAIR);
                            if (q5) { /* values 0..31: ivec_dot4_nib's int16 sums stay exact (its bound) */
                                q5k_values(w, ivec_loadu(hv + (4 * half + i) * 4 * PAIR), c, &lo[i], &hi[i]);
                            } else {
                                lo[i] = ivec_and(w, nib);
                                hi[i] = ivec_and(ivec_srli(w, 4), nib);
                            }
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
                            moe_ivec e0, e1, e2,
                                e3;   /* the 16-bit pairs: bytes (0, 2), (1, 3), low then high */
                            if (q5) { /* the 5-bit values as bytes first */
                                moe_ivec l5, h5;
                                q5k_values(w, ivec_loadu(hv + (4 * half + i) * 4 * PAIR), c, &l5, &h5);
                                e0 = ivec_and(l5, bytes02);
                                e1 = ivec_and(ivec_srli(l5, 8), bytes02);
                                e2 = ivec_and(h5, bytes02);
                                e3 = ivec_and(ivec_srli(h5, 8), bytes02);
                            } else { /* the nibbles straight from the word */
                                e0 = ivec_and(w, nib16);
                                e1 = ivec_and(ivec_srli(w, 8), nib16);
                                e2 = ivec_and(ivec_srli(w, 4), nib16);
                                e3 = ivec_and(ivec_srli(w, 12), nib16);
                            }
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

/* Q6_K's values (0..63, unsigned) of 4 words: k + 0, + 32, + 64, + 96 (int_kq16_rows) from nibble words
 * n0 (low nibbles k, high k + 64) and n1 (k + 32, k + 96) and the word of their high bits hb (bits 0-1,
 * 2-3, 4-5, 6-7 of each byte for k, + 32, + 64, + 96), each value's two high bits to bits 4-5 of its
 * byte. At 512 bits a byte's low nibble and its high bits are put together by one vpternlogd (a bitwise
 * select), after masking hb once into the pairs that land in place (0x33) and the others (0xcc): bits
 * a shift moves past a byte's edge land in the part the select takes from the nibbles. 11 operations for
 * the 4 words, where masking each part and or-ing them takes 17, as at 256 bits, where a select is 3. */
ALWAYS_INLINE void q6k_values(moe_ivec n0, moe_ivec n1, moe_ivec hb, moe_ivec w[4])
{
    const moe_ivec nib = ivec_set1_i8(0x0f);
#if MOE_CPU_LEVEL == 2
#define ivec_select(m, a, b) simde_mm512_ternarylogic_epi32((m), (a), (b), 0xca) /* m ? a : b, bitwise */
    const moe_ivec h03 = ivec_and(hb, ivec_set1_i8(0x33)), h0c = ivec_and(hb, ivec_set1_i8((char)0xcc));
    w[0] = ivec_select(nib, n0, ivec_slli(h03, 4));
    w[1] = ivec_select(nib, n1, ivec_slli(h0c, 2));
    w[2] = ivec_select(nib, ivec_srli(n0, 4), h03);
    w[3] = ivec_select(nib, ivec_srli(n1, 4), ivec_srli(h0c, 2));
#undef ivec_select
#else
    const moe_ivec high = ivec_set1_i8(0x30);
    w[0] = ivec_or(ivec_and(n0, nib), ivec_and(ivec_slli(hb, 4), high));
    w[1] = ivec_or(ivec_and(n1, nib), ivec_and(ivec_slli(hb, 2), high));
    w[2] = ivec_or(ivec_and(ivec_srli(n0, 4), nib), ivec_and(hb, high));
    w[3] = ivec_or(ivec_and(ivec_srli(n1, 4), nib), ivec_and(ivec_srli(hb, 2), high));
#endif
}

/* Q3_K's values (0..7, unsigned) of 4 words: k + 0, + 32, + 64, + 96 of half n (int_kq16_rows) from the
 * word of their 2-bit pairs q (bits 2m of each byte for k + 32m) and that of their third bits hm (bit
 * 4n + m), each third bit shifted to bit 2 of its byte: no shift here moves a bit it keeps past a byte's
 * edge, so 32-bit lanes serve. */
ALWAYS_INLINE void q3k_values(moe_ivec q, moe_ivec hm, int n, moe_ivec w[4])
{
    const moe_ivec pair = ivec_set1_i8(3), bit2 = ivec_set1_i8(4);
    for (int m = 0; m < 4; m++) {
        const int s = 4 * n + m - 2;
        const moe_ivec h = s > 0 ? ivec_srli(hm, s) : s < 0 ? ivec_slli(hm, -s) : hm;
        w[m] = ivec_or(ivec_and(ivec_srli(q, 2 * m), pair), ivec_and(h, bit2));
    }
}
/* Q2_K's values (0..3) of 4 words, as q3k_values' without the third bits. */
ALWAYS_INLINE void q2k_values(moe_ivec q, moe_ivec w[4])
{
    const moe_ivec pair = ivec_set1_i8(3);
    for (int m = 0; m < 4; m++) w[m] = ivec_and(ivec_srli(q, 2 * m), pair);
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in Q6_K's, Q3_K's or Q2_K's integer layout
 * (cpu.h: its quants and its high bits in words), a_r quantised (int8, or int16 when wide). A sub-block of
 * Q6_K (and of Q3_K, Q2_K) is 16 values, one scale, as an activation group is 16 values, one d_a: per
 * sub-block j the exact integer Σ q·q_a − 32·Σ q_a (the values enter unsigned, 0..63, the zero point 32 taken
 * off with the activations' sum; Q3_K's 0..7 and 4; Q2_K's 0..3 and none), then out += d·sc_j·d_a·that (Q2_K:
 * − dmin·m_j·d_a·Σ q_a, its min, as int_kq_rows takes Q4_K's). Q3_K's words are as Q6_K's qh: group 8n + 4h +
 * i of its 2-bit pairs (Q2_K's too) holds, per column, 4 consecutive k of values 128n + 16h + 4i + 32m in
 * bits 2m, and group 4h + i of its third bits serves both n (bits 4n + m). Nibble word group 16n + 8g + 4h +
 * i holds, per column, 4 consecutive k of value 128n + 32g + 16h + 4i (low nibbles) and the same + 64 (high);
 * their high bits are in one word, qh group 8n + 4h + i (bits 2g, 2g + 1 of each byte for the low nibble's
 * value, 2g + 4, 2g + 5 for the high one's), so one qh load serves both g: 4 words of 4 k at k + 32m, m =
 * 0..3, of sub-blocks 8n + h + 2m. The super-block is read a quarter (n, h) at a time, its 8 nibble groups
 * and 4 qh groups (24 lines), each vector of the pair in turn, out read and written once a quarter; as a
 * quarter starts, its lines as far ahead as MOE_CPU_PREFETCH_DIST are prefetched (the head's as the
 * super-block starts), as int_kq_rows does by chunks. The super-block's 105 lines prefetched at once as it
 * started held the stream back: 2-core Zen 4, qwen3-30b-a3b decode from memory, Q6_K on int8, 1.26-1.29 ms a
 * forward (float activations 1.23-1.28), by quarters 0.89-1.02. */
ALWAYS_INLINE void int_kq16_rows(const int nr, const moe_dtype dt, const bool wide, int64_t k_dim,
                                 const qrow *a, const unsigned char *b, float *restrict out)
{ /* dt: MOE_DTYPE_Q6_K, MOE_DTYPE_Q3_K or MOE_DTYPE_Q2_K */
    const bool q2 = dt == MOE_DTYPE_Q2_K, q3 = dt == MOE_DTYPE_Q3_K, pairs = q2 || q3;
    const int zero = q2 ? 0 : q3 ? 4 : 32; /* the values' zero point */
    const size_t super_bytes = MOE_CPU_KQ_PAIR_SUPER(dt), group = 4 * PAIR;
    const moe_ivec bytes02 = ivec_set1(0x00ff00ff);
    zero_rows(nr, out);
    for (int64_t sb = 0; sb < k_dim / MOE_SUPER_BLOCK_SIZE; sb++) {
        const unsigned char *p = b + (size_t)sb * super_bytes, *ql = p + MOE_CPU_KQ_NIB(dt),
                            *qh = p + MOE_CPU_KQ_QH(dt);
        const int64_t k0 = sb * MOE_SUPER_BLOCK_SIZE, g0 = k0 / MOE_ACT_GROUP;
        for (size_t l = 0; l < MOE_CPU_KQ_NIB(dt); l += 64) prefetch_line_l1(p + l); /* d, the scales */
        for (int n = 0; n < 2; n++)
            for (int h = 0; h < 2; h++) {
                /* the quarter's lines: 4 nibble groups for each g, 4 qh groups (Q3_K: 4 groups of
                 * each field; Q2_K: of its one) */
                for (size_t l = 0; l < 4 * group; l += 64) {
                    if (pairs) {
                        prefetch_line_l1(ql + (size_t)(8 * n + 4 * h) * group + l);
                        if (q3) prefetch_line_l1(qh + (size_t)(4 * h) * group + l);
                        continue;
                    }
                    prefetch_line_l1(ql + (size_t)(16 * n + 4 * h) * group + l);
                    prefetch_line_l1(ql + (size_t)(16 * n + 8 + 4 * h) * group + l);
                    prefetch_line_l1(qh + (size_t)(8 * n + 4 * h) * group + l);
                }
                for (int v = 0; v < NV; v++) {
                    const size_t col = (size_t)v * 4 * MOE_VLEN;
                    moe_ivec s[MR_INT][4];
                    for (int r = 0; r < nr; r++)
                        for (int m = 0; m < 4; m++) s[r][m] = ivec_zero();
                    for (int i = 0; i < 4; i++) {
                        moe_ivec w[4]; /* k + 0, + 32, + 64, + 96 */
                        if (q2) {
                            q2k_values(ivec_loadu(ql + (size_t)(8 * n + 4 * h + i) * group + col), w);
                        } else if (q3) {
                            q3k_values(ivec_loadu(ql + (size_t)(8 * n + 4 * h + i) * group + col),
                                       ivec_loadu(qh + (size_t)(4 * h + i) * group + col), n, w);
                        } else {
                            const moe_ivec hb = ivec_loadu(qh + (size_t)(8 * n + 4 * h + i) * group + col);
                            const moe_ivec n0 = ivec_loadu(ql + (size_t)(16 * n + 4 * h + i) * group + col);
                            const moe_ivec n1 =
                                ivec_loadu(ql + (size_t)(16 * n + 8 + 4 * h + i) * group + col);
                            q6k_values(n0, n1, hb, w);
                        }
                        const int64_t k = k0 + 128 * n + 16 * h + 4 * i;
                        if (!wide) {
                            for (int r = 0; r < nr; r++)
                                for (int m = 0; m < 4; m++)
                                    s[r][m] = ivec_dot_small(s[r][m], w[m], lanes4(&a[r], k + 32 * m));
                        } else { /* int16 pairs (k, k + 2) and (k + 1, k + 3) */
                            for (int m = 0; m < 4; m++) {
                                const moe_ivec e0 = ivec_and(w[m], bytes02),
                                               e1 = ivec_and(ivec_srli(w[m], 8), bytes02);
                                for (int r = 0; r < nr; r++) {
                                    const int64_t km = k + 32 * m;
                                    s[r][m] = ivec_dpwssd(s[r][m], e0, lanes4(&a[r], 2 * km));
                                    s[r][m] = ivec_dpwssd(s[r][m], e1, lanes4(&a[r], 2 * (km + 2)));
                                }
                            }
                        }
                    }
                    const moe_vec d = vec_load_f16((const uint16_t *)(const void *)p + v * MOE_VLEN);
                    const moe_vec dmin =
                        q2 ? vec_load_f16((const uint16_t *)(const void *)(p + MOE_CPU_KQ_DMIN) +
                                          v * MOE_VLEN)
                           : vec_zero();
                    moe_vec o[MR_INT];
                    for (int r = 0; r < nr; r++) o[r] = vec_load(out + r * PAIR + v * MOE_VLEN);
                    for (int m = 0; m < 4; m++) {
                        const int j = 8 * n + h + 2 * m;
                        const unsigned char *sc =
                            p + MOE_CPU_KQ_SC(dt) + (size_t)j * MOE_CPU_KQ_COLS + (size_t)v * MOE_VLEN;
                        moe_vec scale, min = vec_zero();
                        if (q2)
                            q2k_scale_min(d, dmin, sc, &scale, &min);
                        else
                            scale = vec_mul(d, vec_from_int(ivec_load_i8(sc)));
                        for (int r = 0; r < nr; r++) {
                            const int64_t g = g0 + j;
                            const moe_vec x = vec_from_i32(ivec_sub(s[r][m], ivec_set1(zero * a[r].sum[g])));
                            o[r] = vec_fmadd(vec_mul(scale, vec_set1(a[r].d[g])), x, o[r]);
                            if (q2) o[r] = vec_fmadd(min, vec_set1(-a[r].d[g] * (float)a[r].sum[g]), o[r]);
                        }
                    }
                    for (int r = 0; r < nr; r++) vec_store(out + r * PAIR + v * MOE_VLEN, o[r]);
                }
            }
    }
}

typedef void (*int_tile_fn)(int n, int64_t k_dim, const qrow *a, const unsigned char *b, float *out);
/* A tile: a switch over the row counts 1..MR_INT, each case the kernel `fn` with its constants (dt, wide),
 * passed down ROWS as one parenthesised argument and spread again by INT_CALL. */
#define INT_ARGS_(fn, dt, wide)    fn, dt, wide
#define INT_CALL_(fn, dt, wide, r) fn(r, dt, wide, k_dim, a, b, out)
#define INT_CALL(...)              INT_CALL_(__VA_ARGS__)
#define CASE_INT_(r, args)                                                                                   \
    case r:                                                                                                  \
        INT_CALL(INT_ARGS_ args, r);                                                                         \
        return;
#define INT_TILE(name, fn, dt, wide)                                                                         \
    static void name(int n, int64_t k_dim, const qrow *a, const unsigned char *b, float *out)                \
    {                                                                                                        \
        switch (n) {                                                                                         \
            ROWS(MR_INT, CASE_INT_, (fn, dt, wide))                                                          \
        }                                                                                                    \
    }
INT_TILE(tile_i8_q8, int_rows, MOE_DTYPE_Q8_0, false)
INT_TILE(tile_i8_q4, int_rows, MOE_DTYPE_Q4_0, false)
INT_TILE(tile_i16_q8, int_rows, MOE_DTYPE_Q8_0, true)
INT_TILE(tile_i16_q4, int_rows, MOE_DTYPE_Q4_0, true)
INT_TILE(tile_i8_q4k, int_kq_rows, MOE_DTYPE_Q4_K, false)
INT_TILE(tile_i16_q4k, int_kq_rows, MOE_DTYPE_Q4_K, true)
INT_TILE(tile_i8_q5k, int_kq_rows, MOE_DTYPE_Q5_K, false)
INT_TILE(tile_i16_q5k, int_kq_rows, MOE_DTYPE_Q5_K, true)
INT_TILE(tile_i8_q6k, int_kq16_rows, MOE_DTYPE_Q6_K, false)
INT_TILE(tile_i16_q6k, int_kq16_rows, MOE_DTYPE_Q6_K, true)
INT_TILE(tile_i8_q3k, int_kq16_rows, MOE_DTYPE_Q3_K, false)
INT_TILE(tile_i16_q3k, int_kq16_rows, MOE_DTYPE_Q3_K, true)
INT_TILE(tile_i8_q2k, int_kq16_rows, MOE_DTYPE_Q2_K, false)
INT_TILE(tile_i16_q2k, int_kq16_rows, MOE_DTYPE_Q2_K, true)
#endif /* MOE_CPU_INT8 */
