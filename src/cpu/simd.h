/*
 * simd.h — the CPU backend's tiny vector vocabulary, mapped onto SIMDe at one of several
 * widths so that every kernel is written once (ggml's simd-mappings idea).
 *
 * MOE_CPU_LEVEL picks the width: 0 = 128-bit (SSE2 on x86, NEON on Arm through SIMDe's
 * mapping, portable C elsewhere), 1 = 256-bit (AVX2 + FMA), 2 = 512-bit (AVX-512F; when the
 * file is compiled without AVX-512 flags, SIMDe emulates it — the tests use that to run the
 * 16-lane code on any machine). The compiler flags of each object decide what SIMDe emits.
 */
#ifndef MOE_CPU_SIMD_H
#define MOE_CPU_SIMD_H

#ifndef MOE_CPU_LEVEL
#error "MOE_CPU_LEVEL must be defined (0, 1 or 2)"
#endif

#if MOE_CPU_LEVEL == 2
#include <simde/x86/avx512.h>
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
#define vec_bits(v)      simde_mm512_castps_si512(v)
#define vec_from_bits(i) simde_mm512_castsi512_ps(i)
#define ivec_add(a, b)   simde_mm512_add_epi32((a), (b))
#define ivec_set1(x)     simde_mm512_set1_epi32(x)
#define ivec_shl23(a)    simde_mm512_slli_epi32((a), 23)
#elif MOE_CPU_LEVEL == 1
#include <simde/x86/avx2.h>
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
#define ivec_set1(x)       simde_mm256_set1_epi32(x)
#define ivec_shl23(a)      simde_mm256_slli_epi32((a), 23)
#elif MOE_CPU_LEVEL == 0
#include <simde/x86/fma.h>
#include <simde/x86/sse2.h>
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
#define ivec_set1(x)       simde_mm_set1_epi32(x)
#define ivec_shl23(a)      simde_mm_slli_epi32((a), 23)
#else
#error "unknown MOE_CPU_LEVEL"
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
