/*
 * nibble_loop.c — a measurement, not a part of the library: how many 4-bit weights one core can
 * turn into float products a second, in the inner loop of Q4_0 decode at 512 bits, by four ways
 * of widening the nibbles. The weights are in the library's word layout (src/cpu/cpu.h: each
 * column's 32-bit word holds 8 nibbles) and small enough to stay in L2, so memory does not
 * count: this is the instruction bound that `floors.sh` finds in the whole layer.
 *
 *   vpermps   the library's kernel: a shift, then vpermps looks the code up in a table of the 16
 *             values q − 8 (it reads only the index's low 4 bits); one FMA.
 *   exponent  the nibble put into a float's mantissa under a fixed exponent with one vpternlogd,
 *             then a subtraction leaves (q − 8)·2^s; the activations come scaled by 2^−s, so
 *             each product is the same real number and the sums are bit for bit vpermps' (checked
 *             below). Nibbles 5 to 7 of a word take one shift between them.
 *   bf16x3    vpermw looks up the code as a bfloat16 (exact: −8..7), vdpbf16ps multiplies pairs;
 *             each activation is split into three bfloat16 parts whose sum is the float exactly,
 *             so every product is exact, as with an FMA: 3 dot products per 32 weights.
 *   bf16x2    the same with two parts: the activation rounded to about 16 bits (an opt-in in
 *             issue #11's terms: it quantises activations).
 *
 * Build and run from the repository root (needs AVX512F/BW and AVX512_BF16; one thread):
 *
 *     cc -O2 -march=native -o /tmp/nibble_loop \
 *         bench/results/amd-epyc-zen4-2core-compute-floor/nibble_loop.c -lm
 *     /tmp/nibble_loop
 *
 * It prints each way's error against a double-precision sum and its rate, the median of 7 rounds
 * (nibble_loop.txt: this machine).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GROUPS 1024 /* word vectors of a pair's two panels: 1024 · 2 · 64 bytes = 128 KiB, in L2 */
#define ROUNDS 7
#define PASSES 400

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The library's 4 sums (panel 0 and 1 of the even nibbles, then of the odd ones): 4 FMA chains. */
static inline void add_products(int n, __m512 b, __m512 w0, __m512 w1, __m512 s[4])
{
    const int i = 2 * (n & 1);
    s[i] = _mm512_fmadd_ps(b, w0, s[i]);
    s[i + 1] = _mm512_fmadd_ps(b, w1, s[i + 1]);
}

/* Group g: words w[2g] (panel 0) and w[2g + 1] (panel 1), nibble n of each the weight of k = 8g + n;
 * the 4 sums are the library's (two panels × low and high nibbles) added at the end. */
__attribute__((noinline)) static __m512 run_vpermps(const __m512i *w, const float *a)
{
    const __m512 table = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int g = 0; g < GROUPS; g++) {
        const __m512i x0 = _mm512_load_si512(w + 2 * g), x1 = _mm512_load_si512(w + 2 * g + 1);
#pragma GCC unroll 8
        for (int n = 0; n < 8; n++) {
            const __m512 b = _mm512_set1_ps(a[8 * g + n]);
            const __m512 w0 = _mm512_permutexvar_ps(n ? _mm512_srli_epi32(x0, 4 * n) : x0, table);
            const __m512 w1 = _mm512_permutexvar_ps(n ? _mm512_srli_epi32(x1, 4 * n) : x1, table);
            add_products(n, b, w0, w1, s);
        }
    }
    return _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
}

/* Position p (0..4) of a nibble in the word it is read from (nibbles 5..7 from the word shifted
 * right by 20), its mantissa weight 2^(4p − 8) under the exponent 2^15. */
static int position(int n)
{
    return n < 5 ? n : n - 5;
}
static float pos_scale(int p)
{
    return ldexpf(1.0f, 4 * p - 8);
}

__attribute__((noinline)) static __m512 run_exponent(const __m512i *w, const float *a_scaled)
{
    const __m512i expo = _mm512_set1_epi32(0x7f800000);
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int g = 0; g < GROUPS; g++) {
        const __m512i x0 = _mm512_load_si512(w + 2 * g), x1 = _mm512_load_si512(w + 2 * g + 1);
        const __m512i y0 = _mm512_srli_epi32(x0, 20), y1 = _mm512_srli_epi32(x1, 20);
#pragma GCC unroll 8
        for (int n = 0; n < 8; n++) {
            const int p = position(n);
            /* the nibble's bits and the exponent of 2^15: out = keep & (expo | x) */
            const __m512i keep = _mm512_set1_epi32((int)((0xfu << (4 * p)) | ((127u + 15u) << 23)));
            const __m512 zero_point = _mm512_set1_ps(32768.0f + 8.0f * pos_scale(p));
            const __m512i v0 = n < 5 ? x0 : y0, v1 = n < 5 ? x1 : y1;
            const __m512 w0 = _mm512_sub_ps(
                _mm512_castsi512_ps(_mm512_ternarylogic_epi32(v0, keep, expo, 0xc8)), zero_point);
            const __m512 w1 = _mm512_sub_ps(
                _mm512_castsi512_ps(_mm512_ternarylogic_epi32(v1, keep, expo, 0xc8)), zero_point);
            const __m512 b = _mm512_set1_ps(a_scaled[8 * g + n]);
            add_products(n, b, w0, w1, s);
        }
    }
    return _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]));
}

/* vpermw on the words' 16-bit halves: index bits 0..4, so a 32-entry table, entry i the value of
 * code i & 15. Shift j (0, 4, 8, 12) gives each column's dword (k = 8g + j', 8g + j' + 4) as a pair,
 * j' = j / 4 (nibble j' of the low half, nibble j' of the high half: k + 4); the activations come
 * in the same pairs, `parts` bfloat16 pairs each. */
#define BF16_RUN(name, PARTS)                                                                                \
    __attribute__((noinline)) static __m512 name(const __m512i *w, const uint32_t *ap, __m512i table)        \
    {                                                                                                        \
        __m512 s[PARTS][4];                                                                                  \
        for (int p = 0; p < PARTS; p++)                                                                      \
            for (int j = 0; j < 4; j++) s[p][j] = _mm512_setzero_ps();                                       \
        for (int g = 0; g < GROUPS; g++) {                                                                   \
            const __m512i x0 = _mm512_load_si512(w + 2 * g), x1 = _mm512_load_si512(w + 2 * g + 1);          \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)                                              \
            {                                                                                                \
                const __m512bh w0 =                                                                          \
                    (__m512bh)_mm512_permutexvar_epi16(j ? _mm512_srli_epi16(x0, 4 * j) : x0, table);        \
                const __m512bh w1 =                                                                          \
                    (__m512bh)_mm512_permutexvar_epi16(j ? _mm512_srli_epi16(x1, 4 * j) : x1, table);        \
                _Pragma("GCC unroll 3") for (int p = 0; p < PARTS; p++)                                      \
                {                                                                                            \
                    const __m512bh b = (__m512bh)_mm512_set1_epi32((int)ap[(4 * g + j) * PARTS + p]);        \
                    const int i = 2 * (j & 1);                                                               \
                    s[p][i] = _mm512_dpbf16_ps(s[p][i], b, w0);                                              \
                    s[p][i + 1] = _mm512_dpbf16_ps(s[p][i + 1], b, w1);                                      \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
        __m512 t = _mm512_setzero_ps();                                                                      \
        for (int p = PARTS - 1; p >= 0; p--)                                                                 \
            t = _mm512_add_ps(                                                                               \
                t, _mm512_add_ps(_mm512_add_ps(s[p][0], s[p][2]), _mm512_add_ps(s[p][1], s[p][3])));         \
        return t;                                                                                            \
    }
BF16_RUN(run_bf16x3, 3)
BF16_RUN(run_bf16x2, 2)

static uint16_t bf16_bits(float f) /* round to nearest even (no NaNs here) */
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float bf16_value(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* a = Σ parts (exact for 3 parts), a pair (k, k + 4) a dword per part, in run_bf16x*'s order. */
static void split(const float *a, int parts, uint32_t *ap)
{
    for (int g = 0; g < GROUPS; g++)
        for (int j = 0; j < 4; j++) {
            float r0 = a[8 * g + j], r1 = a[8 * g + j + 4];
            for (int p = 0; p < parts; p++) {
                const uint16_t h0 = bf16_bits(r0), h1 = bf16_bits(r1);
                ap[(4 * g + j) * parts + p] = (uint32_t)h0 | (uint32_t)h1 << 16;
                r0 -= bf16_value(h0);
                r1 -= bf16_value(h1);
            }
        }
}

typedef struct way {
    const char *name;
    double rate[ROUNDS];
    float out[16];
} way;

static int by_value(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(void)
{
    __m512i *w = aligned_alloc(64, (size_t)GROUPS * 2 * 64);
    float *a = aligned_alloc(64, (size_t)GROUPS * 8 * sizeof(float));
    float *a_scaled = aligned_alloc(64, (size_t)GROUPS * 8 * sizeof(float));
    uint32_t *a3 = malloc((size_t)GROUPS * 4 * 3 * sizeof(uint32_t)),
             *a2 = malloc((size_t)GROUPS * 4 * 2 * 4);
    uint32_t seed = 12345;
    for (size_t i = 0; i < (size_t)GROUPS * 32; i++) {
        seed = seed * 1664525u + 1013904223u;
        ((uint32_t *)w)[i] = seed;
    }
    for (int i = 0; i < GROUPS * 8; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = (float)((double)(seed >> 8) / 16777216.0 * 2.0 - 1.0);
        a_scaled[i] = a[i] / pos_scale(position(i % 8));
    }
    split(a, 3, a3);
    split(a, 2, a2);
    uint16_t t16[32];
    for (int i = 0; i < 32; i++) t16[i] = bf16_bits((float)((i & 15) - 8));
    const __m512i table = _mm512_loadu_si512(t16);

    /* The exact sums: column c of both panels, Σ_k a[k]·(q − 8), in double. */
    double exact[16] = {0};
    for (int g = 0; g < GROUPS; g++)
        for (int c = 0; c < 16; c++)
            for (int panel = 0; panel < 2; panel++) {
                const uint32_t word = ((const uint32_t *)(w + 2 * g + panel))[c];
                for (int n = 0; n < 8; n++)
                    exact[c] += (double)a[8 * g + n] * ((int)((word >> (4 * n)) & 15) - 8);
            }

    way ways[4] = {{.name = "vpermps"}, {.name = "exponent"}, {.name = "bf16x3"}, {.name = "bf16x2"}};
    for (int round = 0; round < ROUNDS; round++)
        for (int i = 0; i < 4; i++) {
            __m512 sum = _mm512_setzero_ps(), r = sum;
            const double t0 = now();
            for (int pass = 0; pass < PASSES; pass++) {
                __asm__ volatile("" : "+r"(w)); /* each pass runs */
                r = i == 0   ? run_vpermps(w, a)
                    : i == 1 ? run_exponent(w, a_scaled)
                    : i == 2 ? run_bf16x3(w, a3, table)
                             : run_bf16x2(w, a2, table);
                sum = _mm512_add_ps(sum, r);
            }
            ways[i].rate[round] = (double)PASSES * GROUPS * 2 * 16 * 8 / (now() - t0) / 1e9;
            _mm512_storeu_ps(ways[i].out, r);
            if (_mm512_reduce_add_ps(sum) != _mm512_reduce_add_ps(sum)) return 1; /* (keeps sum live) */
        }
    printf("one core, 4-bit weights in L2 (%d KiB), median of %d rounds\n", GROUPS * 2 * 64 / 1024, ROUNDS);
    for (int i = 0; i < 4; i++) {
        double err = 0, norm = 0;
        for (int c = 0; c < 16; c++) {
            err += (ways[i].out[c] - exact[c]) * (ways[i].out[c] - exact[c]);
            norm += exact[c] * exact[c];
        }
        qsort(ways[i].rate, ROUNDS, sizeof(double), by_value);
        printf("%-9s %6.1f G weights/s   rel L2 vs double %.1e%s\n", ways[i].name, ways[i].rate[ROUNDS / 2],
               sqrt(err / norm),
               i == 1 ? (memcmp(ways[0].out, ways[1].out, sizeof ways[0].out) ? "   NOT bit for bit vpermps'"
                                                                              : "   bit for bit vpermps'")
                      : "");
    }
    free(w), free(a), free(a_scaled), free(a3), free(a2);
    return 0;
}
