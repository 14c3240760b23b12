/*
 * simd.h — the CPU backend's tiny vector vocabulary, mapped onto SIMDe at one of several
 * widths so that every kernel is written once (ggml's simd-mappings idea).
 *
 * MOE_CPU_LEVEL picks the width: 0 = 128-bit (SSE2 on x86, NEON on Arm through SIMDe's
 * mapping, portable C elsewhere), 1 = 256-bit (AVX2 + FMA + F16C), 2 = 512-bit (AVX-512F; when
 * the file is compiled without AVX-512 flags, SIMDe emulates it — the tests use that to run
 * the 16-lane code on any machine). The compiler flags of each object decide what SIMDe emits.
 *
 * Besides float arithmetic there are the weight formats' loaders: each reads MOE_VLEN weights
 * in a storage format (moe.h: F16, BF16, the int8 of Q8_0, the nibbles of Q4_0 and MXFP4) and widens
 * them to float32 lanes in registers, so the kernels never keep a float copy of the weights.
 */
#ifndef MOE_CPU_SIMD_H
#define MOE_CPU_SIMD_H

#include <stdint.h>

#ifndef MOE_CPU_LEVEL
#error "MOE_CPU_LEVEL must be defined (0, 1 or 2)"
#endif

#if MOE_CPU_LEVEL == 2
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
typedef simde__m512 moe_vec;
#define MOE_VLEN           16
#define vec_load(p)        simde_mm512_loadu_ps(p)
#define vec_store(p, v)    simde_mm512_storeu_ps((p), (v))
#define vec_set1(x)        simde_mm512_set1_ps(x)
#define vec_zero()         simde_mm512_setzero_ps()
#define vec_fmadd(a, b, c) simde_mm512_fmadd_ps((a), (b), (c))
#define vec_add(a, b)      simde_mm512_add_ps((a), (b))
#define vec_mul(a, b)      simde_mm512_mul_ps((a), (b))
#define vec_sub(a, b)      simde_mm512_sub_ps((a), (b))
#define vec_div(a, b)      simde_mm512_div_ps((a), (b))
#define vec_min(a, b)      simde_mm512_min_ps((a), (b))
#define vec_max(a, b)      simde_mm512_max_ps((a), (b))
typedef simde__m512i moe_ivec;
#define vec_bits(v)       simde_mm512_castps_si512(v)
#define vec_from_bits(i)  simde_mm512_castsi512_ps(i)
#define ivec_add(a, b)    simde_mm512_add_epi32((a), (b))
#define ivec_sub(a, b)    simde_mm512_sub_epi32((a), (b))
#define ivec_and(a, b)    simde_mm512_and_si512((a), (b))
#define ivec_andnot(a, b) simde_mm512_andnot_si512((a), (b)) /* ~a & b */
#define ivec_or(a, b)     simde_mm512_or_si512((a), (b))
#define ivec_set1(x)      simde_mm512_set1_epi32(x)
#if defined(__clang__) && defined(SIMDE_ARM_NEON_A64V8_NATIVE)
/* Shifts by a count in a register, as at 128 bits (below, why). */
#define ivec_slli(a, n) simde_mm512_sll_epi32((a), simde_mm_cvtsi32_si128((int)(n)))
#define ivec_srli(a, n) simde_mm512_srl_epi32((a), simde_mm_cvtsi32_si128((int)(n)))
#else
#define ivec_slli(a, n) simde_mm512_slli_epi32((a), (n))
#define ivec_srli(a, n) simde_mm512_srli_epi32((a), (n))
#endif
#define ivec_shl23(a) simde_mm512_slli_epi32((a), 23)
#if defined(SIMDE_X86_AVX512F_NATIVE)
/* SIMDe 0.7 has no 512-bit widening loads or int → float conversion; AVX-512F has them all. */
#define MOE_CPU_NATIVE_512 1
#define ivec_load_u8(p)    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ivec_load_i8(p)    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define ivec_load_u16(p)   _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define vec_from_int(i)    _mm512_cvtepi32_ps(i)
#define vec_load_f16(p)    _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#else
/* Emulated (the simde512 test level): two 256-bit halves. */
#define MOE_CPU_NATIVE_512 0
static inline moe_ivec ivec_join(simde__m256i lo, simde__m256i hi)
{
    return simde_mm512_inserti64x4(simde_mm512_castsi256_si512(lo), hi, 1);
}
#define ivec_load_u8(p)                                                                                      \
    ivec_join(simde_mm256_cvtepu8_epi32(simde_mm_loadu_si64(p)),                                             \
              simde_mm256_cvtepu8_epi32(simde_mm_loadu_si64((const uint8_t *)(p) + 8)))
#define ivec_load_i8(p)                                                                                      \
    ivec_join(simde_mm256_cvtepi8_epi32(simde_mm_loadu_si64(p)),                                             \
              simde_mm256_cvtepi8_epi32(simde_mm_loadu_si64((const uint8_t *)(p) + 8)))
#define ivec_load_u16(p)                                                                                     \
    ivec_join(simde_mm256_cvtepu16_epi32(simde_mm_loadu_si128(p)),                                           \
              simde_mm256_cvtepu16_epi32(simde_mm_loadu_si128((const uint16_t *)(p) + 8)))
#define vec_from_int(i) vec_from_small_int(i)
#define vec_load_f16(p) vec_f16_bits(ivec_load_u16(p))
#endif
#elif MOE_CPU_LEVEL == 1
#include <simde/x86/avx2.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
typedef simde__m256 moe_vec;
#define MOE_VLEN           8
#define vec_load(p)        simde_mm256_loadu_ps(p)
#define vec_store(p, v)    simde_mm256_storeu_ps((p), (v))
#define vec_set1(x)        simde_mm256_set1_ps(x)
#define vec_zero()         simde_mm256_setzero_ps()
#define vec_fmadd(a, b, c) simde_mm256_fmadd_ps((a), (b), (c))
#define vec_add(a, b)      simde_mm256_add_ps((a), (b))
#define vec_mul(a, b)      simde_mm256_mul_ps((a), (b))
#define vec_sub(a, b)      simde_mm256_sub_ps((a), (b))
#define vec_div(a, b)      simde_mm256_div_ps((a), (b))
#define vec_min(a, b)      simde_mm256_min_ps((a), (b))
#define vec_max(a, b)      simde_mm256_max_ps((a), (b))
typedef simde__m256i moe_ivec;
#define vec_bits(v)        simde_mm256_castps_si256(v)
#define vec_from_bits(i)   simde_mm256_castsi256_ps(i)
#define ivec_add(a, b)     simde_mm256_add_epi32((a), (b))
#define ivec_sub(a, b)     simde_mm256_sub_epi32((a), (b))
#define ivec_and(a, b)     simde_mm256_and_si256((a), (b))
#define ivec_andnot(a, b)  simde_mm256_andnot_si256((a), (b))
#define ivec_or(a, b)      simde_mm256_or_si256((a), (b))
#define ivec_set1(x)       simde_mm256_set1_epi32(x)
#define ivec_slli(a, n)    simde_mm256_slli_epi32((a), (n))
#define ivec_srli(a, n)    simde_mm256_srli_epi32((a), (n))
#define ivec_shl23(a)      simde_mm256_slli_epi32((a), 23)
#define ivec_load_u8(p)    simde_mm256_cvtepu8_epi32(simde_mm_loadu_si64(p))
#define ivec_load_i8(p)    simde_mm256_cvtepi8_epi32(simde_mm_loadu_si64(p))
#define ivec_load_u16(p)   simde_mm256_cvtepu16_epi32(simde_mm_loadu_si128(p))
#define vec_from_int(i)    simde_mm256_cvtepi32_ps(i)
/* Native F16C where the object is compiled with -mf16c (the avx2 level always is). */
#define vec_load_f16(p)    simde_mm256_cvtph_ps(simde_mm_loadu_si128(p))
#elif MOE_CPU_LEVEL == 0
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#include <simde/x86/sse2.h>
#include <simde/x86/sse4.1.h>
typedef simde__m128 moe_vec;
#define MOE_VLEN           4
#define vec_load(p)        simde_mm_loadu_ps(p)
#define vec_store(p, v)    simde_mm_storeu_ps((p), (v))
#define vec_set1(x)        simde_mm_set1_ps(x)
#define vec_zero()         simde_mm_setzero_ps()
#define vec_fmadd(a, b, c) simde_mm_fmadd_ps((a), (b), (c))
#define vec_add(a, b)      simde_mm_add_ps((a), (b))
#define vec_mul(a, b)      simde_mm_mul_ps((a), (b))
#define vec_sub(a, b)      simde_mm_sub_ps((a), (b))
#define vec_div(a, b)      simde_mm_div_ps((a), (b))
#define vec_min(a, b)      simde_mm_min_ps((a), (b))
#define vec_max(a, b)      simde_mm_max_ps((a), (b))
typedef simde__m128i moe_ivec;
#define vec_bits(v)        simde_mm_castps_si128(v)
#define vec_from_bits(i)   simde_mm_castsi128_ps(i)
#define ivec_add(a, b)     simde_mm_add_epi32((a), (b))
#define ivec_sub(a, b)     simde_mm_sub_epi32((a), (b))
#define ivec_and(a, b)     simde_mm_and_si128((a), (b))
#define ivec_andnot(a, b)  simde_mm_andnot_si128((a), (b))
#define ivec_or(a, b)      simde_mm_or_si128((a), (b))
#define ivec_set1(x)       simde_mm_set1_epi32(x)
#if defined(__clang__) && defined(SIMDE_ARM_NEON_A64V8_NATIVE)
/* clang's NEON shifts by an immediate (SIMDe's mapping of these) take only a constant expression,
 * and the kernels shift by loop indices that are constant only once unrolled; NEON's shift by a
 * register (ushl), which clang turns back into the immediate form where the count is constant. */
#define ivec_slli(a, n) vreinterpretq_s64_u32(vshlq_u32(vreinterpretq_u32_s64(a), vdupq_n_s32((int)(n))))
#define ivec_srli(a, n) vreinterpretq_s64_u32(vshlq_u32(vreinterpretq_u32_s64(a), vdupq_n_s32(-(int)(n))))
#else
#define ivec_slli(a, n) simde_mm_slli_epi32((a), (n))
#define ivec_srli(a, n) simde_mm_srli_epi32((a), (n))
#endif
#define ivec_shl23(a)    simde_mm_slli_epi32((a), 23)
#define ivec_load_u8(p)  simde_mm_cvtepu8_epi32(simde_mm_loadu_si32(p))
#define ivec_load_i8(p)  simde_mm_cvtepi8_epi32(simde_mm_loadu_si32(p))
#define ivec_load_u16(p) simde_mm_unpacklo_epi16(simde_mm_loadu_si64(p), simde_mm_setzero_si128())
#define vec_from_int(i)  simde_mm_cvtepi32_ps(i)
#if defined(SIMDE_X86_F16C_NATIVE) ||                                                                        \
    (defined(SIMDE_ARM_NEON_A32V7_NATIVE) && defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC))
#define vec_load_f16(p) simde_mm_cvtph_ps(simde_mm_loadu_si64(p))
#else
/* SIMDe's fallback converts lane by lane with branches; the bit version below is branch-free. */
#define vec_load_f16(p) vec_f16_bits(ivec_load_u16(p))
#endif
#else
#error "unknown MOE_CPU_LEVEL"
#endif

/* An integer |i| < 2^22 as a float, exactly: its bits added to those of 1.5·2^23 give the
 * float 1.5·2^23 + i (the integer lands in the mantissa), minus 1.5·2^23. Two integer/float
 * adds at any width, where SIMDe has no 512-bit conversion. */
static inline moe_vec vec_from_small_int(moe_ivec i)
{
    return vec_sub(vec_from_bits(ivec_add(i, ivec_set1(0x4B400000))), vec_set1(12582912.0f));
}

/* IEEE binary16 in the low half of each 32-bit lane (upper half zero) → float32, exactly
 * (subnormals, infinities and NaN included), with integer operations only: for CPUs without
 * F16C / fp16 NEON. Fabian Giesen's conversion (the one SIMDe uses per lane) made branch-free:
 * the exponent is rebiased by adding 112 << 23; an all-ones exponent (inf/NaN) gets another
 * 112 << 23; a zero exponent (zero/subnormal) gets 1 << 23 and then 2^-14 subtracted as a
 * float, which renormalises exactly without touching a subnormal float. */
static inline moe_vec vec_f16_bits(moe_ivec h)
{
    const moe_ivec o = ivec_slli(ivec_and(h, ivec_set1(0x7fff)), 13);
    const moe_ivec e = ivec_and(o, ivec_set1(0x0f800000));
    /* 0x10000000 where the exponent is all ones (adding 1 carries out of the field). */
    const moe_ivec inf = ivec_and(ivec_add(e, ivec_set1(0x00800000)), ivec_set1(0x10000000));
    /* inf·3.5 = 0x38000000 = 112 << 23, as shifts. */
    const moe_ivec inf_fix = ivec_add(ivec_add(inf, ivec_srli(inf, 1)), ivec_slli(inf, 1));
    const moe_ivec normal = ivec_add(ivec_add(o, ivec_set1(0x38000000)), inf_fix);
    /* All ones where the exponent is zero: (e − 2^23) is negative only for e = 0. */
    const moe_ivec zero = ivec_sub(ivec_set1(0), ivec_srli(ivec_sub(e, ivec_set1(0x00800000)), 31));
    const moe_ivec sub =
        vec_bits(vec_sub(vec_from_bits(ivec_add(o, ivec_set1(0x38800000))), vec_set1(6.103515625e-05f)));
    const moe_ivec mag = ivec_or(ivec_and(zero, sub), ivec_andnot(zero, normal));
    return vec_from_bits(ivec_or(mag, ivec_slli(ivec_and(h, ivec_set1(0x8000)), 16)));
}

/* MOE_VLEN 32-bit words each holding two bfloat16 (the low half and the high half) → two
 * float32 vectors. A bfloat16 is the upper half of a float: the low one is shifted into place,
 * the high one is already there once the low half is masked off. One load and two integer
 * operations for 2·MOE_VLEN weights. */
static inline void vec_load_bf16x2(const uint16_t *p, moe_vec *lo, moe_vec *hi)
{
    const moe_ivec x = vec_bits(vec_load((const float *)(const void *)p));
    *lo = vec_from_bits(ivec_slli(x, 16));
    *hi = vec_from_bits(ivec_and(x, ivec_set1(-65536))); /* 0xffff0000 */
}

/* MOE_VLEN int8 (Q8_0 quants) → float32. */
static inline moe_vec vec_load_i8(const int8_t *p)
{
    return vec_from_int(ivec_load_i8(p));
}

#if MOE_CPU_LEVEL == 2
/* Nibble n (bits 4n .. 4n + 3) of each 32-bit lane of x, as the value `table` gives its code
 * (16 floats: Q4_0's q − 8, Q4_K's q, MXFP4's kv[q]), exactly: a shift and a 16-entry table
 * lookup (vpermps reads only the index's low 4 bits: the mask, the conversion and the value at
 * once). At 512 bits the 4-bit formats keep a column's nibbles in 32-bit words (cpu.h), so one
 * plain load gives 8 values of 16 columns; the widening load a byte layout needs (vpmovzxbd, a
 * shuffle) was what bounded Q4_0 / Q4_K decode on Zen 4. */
static inline moe_vec vec_nibble(moe_ivec x, int n, moe_vec table)
{
    return simde_mm512_permutexvar_ps(n ? ivec_srli(x, 4 * n) : x, table);
}
/* The 2-bit code at bits s, s + 1 of each 32-bit lane of x, by the same lookup: `table` repeats the
 * 4 codes' values, so the 2 bits above them that vpermps also reads do not matter (Q2_K). */
static inline moe_vec vec_pair(moe_ivec x, int s, moe_vec table)
{
    return simde_mm512_permutexvar_ps(s ? ivec_srli(x, s) : x, table);
}
#else
/* MOE_VLEN bytes of Q4_0 quants → two vectors: the low nibbles q_lo and the whole bytes
 * q_lo + 16·q_hi, as floats (a mask and two conversions). The codes, not the values q − 8: the
 * kernel takes the 8s off once per block, as 8 times the activations' sum, and its activations
 * are rearranged so that the byte stands in for the high nibble (kernels.c: Q4_CODES), which
 * saves the shift a vector that, beside the widening shuffle, bounded Q4_0 decode at 256 bits. */
static inline void vec_load_q4(const uint8_t *p, moe_vec *lo, moe_vec *byte)
{
    const moe_ivec x = ivec_load_u8(p);
    *lo = vec_from_int(ivec_and(x, ivec_set1(15)));
    *byte = vec_from_int(x);
}
#endif

#if MOE_CPU_LEVEL < 2
/* MOE_VLEN bytes of MXFP4 codes → two vectors: the low and the high nibbles' values kv[q]
 * (moe.h: twice the E2M1 values, exact in float): a byte shuffle (pshufb, SSSE3 / NEON's tbl
 * through SIMDe) looks the 16 codes of a 128-bit register up at once, then the int8 values
 * widen to float. (At 512 bits MXFP4 is in words, read by vec_nibble.) */
static inline void vec_load_mxfp4(const uint8_t *p, moe_vec *lo, moe_vec *hi)
{
    const simde__m128i table = simde_mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const simde__m128i m = simde_mm_set1_epi8(15);
#if MOE_CPU_LEVEL == 1
    const simde__m128i x = simde_mm_loadu_si64(p);
#define MOE_WIDEN_I8(b) simde_mm256_cvtepi8_epi32(b)
#else
    const simde__m128i x = simde_mm_loadu_si32(p);
#define MOE_WIDEN_I8(b) simde_mm_cvtepi8_epi32(b)
#endif
    const simde__m128i l = simde_mm_shuffle_epi8(table, simde_mm_and_si128(x, m));
    const simde__m128i h = simde_mm_shuffle_epi8(table, simde_mm_and_si128(simde_mm_srli_epi16(x, 4), m));
    *lo = vec_from_int(MOE_WIDEN_I8(l));
    *hi = vec_from_int(MOE_WIDEN_I8(h));
#undef MOE_WIDEN_I8
}
#endif

/* e^x for every lane, within 2 ulp of expf on [-87, 88] (inputs are clamped there, so the
 * result stays a normal float). Cody-Waite range reduction x = n·ln2 + r, the classic
 * degree-6 minimax polynomial for e^r on [-ln2/2, ln2/2], then 2^n through the exponent bits.
 * n is rounded with the 1.5·2^23 trick (it lands in the low mantissa bits), which needs no
 * float/int conversion instruction at any width. Used by the SiLU epilogue, where a scalar
 * expf per output would cost ~10% of the GEMM. */
static inline moe_vec vec_exp(moe_vec x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23, bit pattern 0x4B400000 */
    x = vec_min(vec_max(x, vec_set1(-87.0f)), vec_set1(88.0f));
    const moe_vec t = vec_fmadd(x, vec_set1(1.44269504088896341f), vec_set1(magic));
    const moe_vec nf = vec_sub(t, vec_set1(magic));
    moe_vec r = vec_fmadd(nf, vec_set1(-0.693359375f), x);
    r = vec_fmadd(nf, vec_set1(2.12194440e-4f), r);
    moe_vec p = vec_set1(1.9875691500e-4f);
    p = vec_fmadd(p, r, vec_set1(1.3981999507e-3f));
    p = vec_fmadd(p, r, vec_set1(8.3334519073e-3f));
    p = vec_fmadd(p, r, vec_set1(4.1665795894e-2f));
    p = vec_fmadd(p, r, vec_set1(1.6666665459e-1f));
    p = vec_fmadd(p, r, vec_set1(5.0000001201e-1f));
    p = vec_fmadd(p, vec_mul(r, r), vec_add(r, vec_set1(1.0f)));
    const moe_ivec two_n = ivec_shl23(ivec_add(vec_bits(t), ivec_set1(127 - 0x4B400000)));
    return vec_mul(p, vec_from_bits(two_n));
}

#endif /* MOE_CPU_SIMD_H */
