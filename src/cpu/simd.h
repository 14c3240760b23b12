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
#define MOE_VLEN 16
#define vec_load(p) simde_mm512_loadu_ps(p)
#define vec_store(p, v) simde_mm512_storeu_ps((p), (v))
#define vec_set1(x) simde_mm512_set1_ps(x)
#define vec_zero() simde_mm512_setzero_ps()
#define vec_fmadd(a, b, c) simde_mm512_fmadd_ps((a), (b), (c))
#define vec_add(a, b) simde_mm512_add_ps((a), (b))
#define vec_mul(a, b) simde_mm512_mul_ps((a), (b))
#elif MOE_CPU_LEVEL == 1
#include <simde/x86/avx2.h>
#include <simde/x86/fma.h>
typedef simde__m256 moe_vec;
#define MOE_VLEN 8
#define vec_load(p) simde_mm256_loadu_ps(p)
#define vec_store(p, v) simde_mm256_storeu_ps((p), (v))
#define vec_set1(x) simde_mm256_set1_ps(x)
#define vec_zero() simde_mm256_setzero_ps()
#define vec_fmadd(a, b, c) simde_mm256_fmadd_ps((a), (b), (c))
#define vec_add(a, b) simde_mm256_add_ps((a), (b))
#define vec_mul(a, b) simde_mm256_mul_ps((a), (b))
#elif MOE_CPU_LEVEL == 0
#include <simde/x86/fma.h>
#include <simde/x86/sse2.h>
typedef simde__m128 moe_vec;
#define MOE_VLEN 4
#define vec_load(p) simde_mm_loadu_ps(p)
#define vec_store(p, v) simde_mm_storeu_ps((p), (v))
#define vec_set1(x) simde_mm_set1_ps(x)
#define vec_zero() simde_mm_setzero_ps()
#define vec_fmadd(a, b, c) simde_mm_fmadd_ps((a), (b), (c))
#define vec_add(a, b) simde_mm_add_ps((a), (b))
#define vec_mul(a, b) simde_mm_mul_ps((a), (b))
#else
#error "unknown MOE_CPU_LEVEL"
#endif

#endif /* MOE_CPU_SIMD_H */
