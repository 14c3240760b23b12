/*
 * kernels_bf16.c — the bfloat16-pair tile: Q4_0 experts on activations split into two bfloat16
 * (moe.h: activation_dtype BF16; backend.h: MOE_ACT_BF16X2), at 512 bits. Built for the avx512vnni
 * level with AVX512_BF16 on (used only where the CPU reports it: cpu_backend.c) and for simde512,
 * where SIMDe emulates vdpbf16ps, so its logic is tested on any machine. kernels.c walks the rows and
 * pairs (gemm_bf16) and calls this level's tile through its one exported symbol.
 *
 * Why: Q4_0's float decode is bound by its instructions, not by memory (bench/results/
 * amd-epyc-zen4-2core-compute-floor): each 4-bit value costs a shift, a vpermps and an FMA lane. Here
 * a shift and one vpermw turn a word vector of nibbles into 32 exact bfloat16 values (codes −8..7),
 * two k of 16 columns, and two vdpbf16ps (the activation's hi and lo parts) multiply them: the
 * products are exact in float32 and each dot-product step rounds once, as an FMA does. What moves the
 * result is only the activation's rounding to hi + lo (16 significant bits): ~3e-6 of the output (rel
 * L2), within the float path's 1e-5. nibble_loop.c measured the loop at 1.76× the float one.
 *
 * A row's arithmetic is the same for any number of rows in a tile (each row its own chains, in the
 * same order), so a token's output does not depend on its batch (test_forward's batch_invariance).
 */
#include "cpu.h"
#include "simd.h"

#include <string.h>

#if MOE_CPU_LEVEL != 2
#error "kernels_bf16.c reads the 512-bit Q4_0 word layout: MOE_CPU_LEVEL 2 only"
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

/* Each code's value q − 8 as bfloat16 bits, twice: vpermw reads 5 index bits, and the fifth is the
 * next nibble's low bit. */
static const uint16_t q4_values[32] = {0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,
                                       0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0,
                                       0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,
                                       0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};

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

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in Q4_0 words, a_r in bfloat16 pairs
 * (pack.c: bf16x2_row; 32 words a block). Per block and row, 8 chains: the two vectors, the hi and lo
 * parts, the even and odd shifts (vdpbf16ps waits ~6 cycles for its sum); then the block's scales
 * multiply their sum into the row's total in out. */
ALWAYS_INLINE void bf16_rows(const int nr, int64_t k_dim, const uint32_t *const *a, const unsigned char *b,
                             float *restrict out)
{
    const simde__m512i table = simde_mm512_loadu_si512(q4_values);
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < 2; v++) vec_store(out + r * PAIR + v * MOE_VLEN, vec_zero());
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_CPU_BLOCK) {
        const unsigned char *p = b + (size_t)(k0 / MOE_CPU_BLOCK) * MOE_CPU_Q4_PAIR_BLOCK;
        const unsigned char *q = p + MOE_CPU_SCALES;
        PREFETCH(p);
        moe_vec s[MOE_CPU_BF16_MR][2][2][2]; /* [row][shift parity][part][vector] */
        for (int r = 0; r < nr; r++)
            for (int i = 0; i < 8; i++) s[r][i >> 2][(i >> 1) & 1][i & 1] = vec_zero();
        UNROLL_4
        for (int g = 0; g < 4; g++) {
            PREFETCH(q + g * 2 * 64);
            PREFETCH(q + g * 2 * 64 + 64);
            const simde__m512i x0 = simde_mm512_loadu_si512(q + g * 2 * 64);
            const simde__m512i x1 = simde_mm512_loadu_si512(q + g * 2 * 64 + 64);
            UNROLL_4
            for (int m = 0; m < 4; m++) { /* shifts by constants once unrolled */
                const simde__m512bh w0 = as_bh(simde_mm512_permutexvar_epi16(nibble_shift(x0, m), table));
                const simde__m512bh w1 = as_bh(simde_mm512_permutexvar_epi16(nibble_shift(x1, m), table));
                for (int r = 0; r < nr; r++) {
                    const uint32_t *ap = a[r] + k0 + 2 * (4 * g + m);
                    for (int part = 0; part < 2; part++) {
                        const simde__m512bh x = as_bh(simde_mm512_set1_epi32((int32_t)ap[part]));
                        moe_vec *t = s[r][m & 1][part];
                        t[0] = simde_mm512_dpbf16_ps(t[0], x, w0);
                        t[1] = simde_mm512_dpbf16_ps(t[1], x, w1);
                    }
                }
            }
        }
        for (int v = 0; v < 2; v++) {
            const moe_vec d = vec_load_f16((const uint16_t *)(const void *)p + v * MOE_VLEN);
            for (int r = 0; r < nr; r++) {
                const moe_vec sum =
                    vec_add(vec_add(s[r][0][1][v], s[r][1][1][v]), vec_add(s[r][0][0][v], s[r][1][0][v]));
                float *o = out + r * PAIR + v * MOE_VLEN;
                vec_store(o, vec_fmadd(d, sum, vec_load(o)));
            }
        }
    }
}

#define KERNELS_CAT_(a, b) a##b
#define KERNELS_CAT(a, b)  KERNELS_CAT_(a, b)
void KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_tile)(int n, int64_t k_dim, const uint32_t *const *a,
                                                     const unsigned char *b, float *out);
/* n rows (1..MOE_CPU_BF16_MR) of one pair: each row count its own copy. */
void KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_tile)(int n, int64_t k_dim, const uint32_t *const *a,
                                                     const unsigned char *b, float *out)
{
    _Static_assert(MOE_CPU_BF16_MR == 3, "one case per row count");
    switch (n) {
    case 1:
        bf16_rows(1, k_dim, a, b, out);
        return;
    case 2:
        bf16_rows(2, k_dim, a, b, out);
        return;
    default:
        bf16_rows(3, k_dim, a, b, out);
        return;
    }
}
