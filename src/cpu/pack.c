/*
 * pack.c — the CPU backend's weight upload: each matrix into pairs of 16-column panels in its
 * storage format (the layouts are in cpu.h). A source row is fetched once in the storage
 * format (moe_matrix_row_as: the bytes themselves when the source has that format, else
 * converted or quantised as moe_convert_row does) and its values or blocks are scattered to
 * their column of the panel, so the packed tensor holds exactly the format's bytes,
 * rearranged. And the other operand of the integer kernels: activation rows quantised.
 */
#include "../internal.h"
#include "cpu.h"

#include <float.h>
#include <math.h>
#include <string.h>

size_t moe_cpu_weight_bytes(const moe_weight_src *s)
{
    return (size_t)s->batch * moe_cpu_packed_bytes(s->dtype, s->rows, s->cols, s->second != NULL);
}

/* A block's scale as a pair keeps it, 2 bytes: Q8_0's and Q4_0's fp16 d as it is; MXFP4's scale
 * byte e as the bfloat16 2^(e − 128) (exact: a power of two). Returns the bytes of the scale in
 * the ggml block. */
static int put_scale(unsigned char *dst, moe_dtype dt, const unsigned char *src)
{
    if (dt != MOE_DTYPE_MXFP4) {
        memcpy(dst, src, 2);
        return 2;
    }
    const uint16_t d = moe_f32_to_bf16(moe_e8m0_half(src[0]));
    memcpy(dst, &d, 2);
    return 1;
}

/* Column col of a pair in a block format (Q8_0, Q4_0, MXFP4; cpu.h): each block's scale, then its
 * quant bytes. In the byte layouts byte j of the column goes to row j of the block; in the word
 * layouts (words: Q8_0 / Q4_0 for integer activations, Q4_0 and MXFP4 for the float kernels at
 * 512 bits) to byte j % 4 of the column's word in group j / 4, Q8_0's quants made unsigned by
 * + 128 (a flip of the top bit). */
static void scatter_blocks(unsigned char *pair, moe_dtype dt, int64_t blocks, int col, bool words,
                           const unsigned char *row)
{
    const bool q8 = dt == MOE_DTYPE_Q8_0;
    const size_t src_block = moe_dtype_row_bytes(dt, MOE_CPU_BLOCK),
                 dst_block = q8 ? MOE_CPU_Q8_PAIR_BLOCK : MOE_CPU_Q4_PAIR_BLOCK;
    const int n = q8 ? MOE_CPU_BLOCK : MOE_CPU_BLOCK / 2; /* bytes of quants per column */
    const unsigned char flip = words && q8 ? 0x80 : 0;
    for (int64_t b = 0; b < blocks; b++) {
        unsigned char *dst = pair + (size_t)b * dst_block, *q = dst + MOE_CPU_SCALES;
        const unsigned char *src = row + (size_t)b * src_block;
        const int head = put_scale(dst + 2 * col, dt, src);
        for (int j = 0; j < n; j++)
            q[words ? (j / 4) * 4 * 2 * MOE_CPU_PANEL + col * 4 + j % 4 : j * 2 * MOE_CPU_PANEL + col] =
                (unsigned char)(src[head + j] ^ flip);
    }
}

/* Byte t = 16j + l of a Q4_K super-block's nibbles in the byte layout (cpu.h): values 32j + l (low)
 * and 32j + l + 16 (high), from ggml's qs, whose byte 32c + l holds 64c + l and 64c + 32 + l. */
static unsigned char q4k_paired_byte(const unsigned char *qs, int t)
{
    const int j = t / 16, l = t % 16;
    const unsigned char *c = qs + 32 * (j / 2); /* ggml's 32 bytes of sub-blocks 2(j / 2) and + 1 */
    const int shift = 4 * (j % 2);              /* sub-block j's nibbles: low (j even), high */
    return (unsigned char)(((c[l] >> shift) & 15) | (((c[l + 16] >> shift) & 15) << 4));
}

/* Where byte row t of a K-quant field (nibbles, high bits) keeps column col's byte: row t in the
 * byte layout, byte t % 4 of the column's word in group t / 4 in the word layout (cpu.h). */
static size_t kq_at(bool words, int t, int col)
{
    const int C = MOE_CPU_KQ_COLS;
    return words ? (size_t)((t / 4) * 4 * C + col * 4 + t % 4) : (size_t)(t * C + col);
}

/* Column col of a pair in a K-quant layout (cpu.h): each super-block's fields to their rows; with words
 * (Q4_K and Q2_K at 512 bits, and Q2_K / Q3_K / Q5_K / Q6_K for integer activations) the nibble bytes, and
 * the high bits, in groups of 4, one 32-bit word a column; Q4_K without them has its nibbles paired within
 * sub-blocks (q4k_paired_byte). */
static void scatter_kquant(unsigned char *pair, moe_dtype dt, int64_t k_dim, int col, bool words,
                           const unsigned char *row)
{
    const size_t src_bytes = moe_dtype_row_bytes(dt, MOE_SUPER_BLOCK_SIZE),
                 dst_bytes = MOE_CPU_KQ_PAIR_SUPER(dt);
    const int C = MOE_CPU_KQ_COLS;
    for (int64_t b = 0; b < k_dim / MOE_SUPER_BLOCK_SIZE; b++) {
        unsigned char *dst = pair + (size_t)b * dst_bytes;
        const unsigned char *src = row + (size_t)b * src_bytes;
        if (dt == MOE_DTYPE_Q2_K) { /* scales[16] (sc | m << 4, kept so), qs[64], fp16 d, fp16 dmin */
            memcpy(dst + 2 * col, src + 80, 2);
            memcpy(dst + MOE_CPU_KQ_DMIN + 2 * col, src + 82, 2);
            for (int j = 0; j < 16; j++) dst[MOE_CPU_KQ_SC(dt) + j * C + col] = src[j];
            for (int t = 0; t < 64; t++) dst[MOE_CPU_KQ_NIB(dt) + kq_at(words, t, col)] = src[16 + t];
            continue;
        }
        if (dt == MOE_DTYPE_Q3_K) { /* hmask[32], qs[64], scales[12], fp16 d */
            memcpy(dst + 2 * col, src + 108, 2);
            for (int j = 0; j < 16; j++)
                dst[MOE_CPU_KQ_SC(dt) + j * C + col] =
                    (unsigned char)(int8_t)(moe_q3k_scale(src + 96, j) - 32);
            for (int t = 0; t < 64; t++) dst[MOE_CPU_KQ_NIB(dt) + kq_at(words, t, col)] = src[32 + t];
            for (int l = 0; l < 32; l++) dst[MOE_CPU_KQ_QH(dt) + kq_at(words, l, col)] = src[l];
            continue;
        }
        if (dt == MOE_DTYPE_Q6_K) { /* ql[128], qh[64], int8 sc[16], fp16 d */
            memcpy(dst + 2 * col, src + 208, 2);
            for (int j = 0; j < 16; j++) dst[MOE_CPU_KQ_SC(dt) + j * C + col] = src[192 + j];
            for (int t = 0; t < 128; t++) dst[MOE_CPU_KQ_NIB(dt) + kq_at(words, t, col)] = src[t];
            for (int l = 0; l < 64; l++) dst[MOE_CPU_KQ_QH(dt) + kq_at(words, l, col)] = src[128 + l];
            continue;
        }
        /* Q4_K / Q5_K: fp16 d, fp16 dmin, scales[12], (Q5_K: qh[32]), qs[128] */
        const bool q5 = dt == MOE_DTYPE_Q5_K;
        memcpy(dst + 2 * col, src, 2);
        memcpy(dst + MOE_CPU_KQ_DMIN + 2 * col, src + 2, 2);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            moe_kq_scale_min(src + 4, j, &sc, &m);
            dst[MOE_CPU_KQ_SC(dt) + j * C + col] = sc;
            dst[MOE_CPU_KQ_M + j * C + col] = m;
        }
        const unsigned char *qs = src + (q5 ? 48 : 16);
        for (int t = 0; t < 128; t++)
            dst[MOE_CPU_KQ_NIB(dt) + kq_at(words, t, col)] =
                dt == MOE_DTYPE_Q4_K && !words ? q4k_paired_byte(qs, t) : qs[t];
        if (q5)
            for (int l = 0; l < 32; l++) dst[MOE_CPU_KQ_QH(dt) + kq_at(words, l, col)] = src[16 + l];
    }
}

/* Column i of panel h (0, 1) of a pair, from one source row in the storage format; words: the
 * tensor takes a word layout (cpu.h). */
static void scatter_row(unsigned char *pair, moe_dtype dt, int64_t k_dim, int h, int i, bool words,
                        const unsigned char *row)
{
    const int col = h * MOE_CPU_PANEL + i; /* column within the pair */
    const int64_t blocks = k_dim / MOE_CPU_BLOCK;
    if (moe_dtype_is_kquant(dt)) {
        scatter_kquant(pair, dt, k_dim, col, words, row);
        return;
    }
    switch (dt) {
    case MOE_DTYPE_Q8_0:  /* ggml block: fp16 d, int8 q[32] */
    case MOE_DTYPE_Q4_0:  /* ggml block: fp16 d, 16 bytes of nibble pairs (q[j], q[j + 16]) */
    case MOE_DTYPE_MXFP4: /* ggml block: scale byte e, then the code pairs laid out as Q4_0's */
        scatter_blocks(pair, dt, blocks, col, words, row);
        return;
    case MOE_DTYPE_BF16: /* 32-bit words: panel 0's value in the low half, panel 1's in the high */
        for (int64_t k = 0; k < k_dim; k++)
            memcpy(pair + ((size_t)k * MOE_CPU_PANEL + (size_t)i) * 4 + (size_t)h * 2, row + (size_t)k * 2,
                   2);
        return;
    default: { /* one value per k: F32 (4 bytes), F16 (2) */
        const size_t es = dt == MOE_DTYPE_F32 ? 4 : 2;
        for (int64_t k = 0; k < k_dim; k++)
            memcpy(pair + ((size_t)k * 2 * MOE_CPU_PANEL + (size_t)col) * es, row + (size_t)k * es, es);
        return;
    }
    }
}

int64_t moe_cpu_pack_units(const moe_weight_src *s)
{
    return s->batch * moe_cpu_pairs(s->rows, s->second != NULL);
}

void moe_cpu_pack(unsigned char *dst, const moe_weight_src *s, bool nibble_words, int64_t u0, int64_t u1,
                  unsigned char *row_buf)
{
    const bool gated = s->second != NULL;
    const int64_t N = s->rows, K = s->cols, pairs = moe_cpu_pairs(N, gated);
    const size_t pair_bytes = moe_cpu_pair_bytes(s->dtype, K);
    const moe_dtype dt = s->dtype;
    /* The word layouts (cpu.h): integer activations' formats, and the 4-bit ones of the float
     * kernels where the kernel set has nibble_words. */
    const bool words = s->int_dot || (nibble_words && (dt == MOE_DTYPE_Q4_0 || dt == MOE_DTYPE_Q4_K ||
                                                       dt == MOE_DTYPE_MXFP4 || dt == MOE_DTYPE_Q2_K));
    for (int64_t u = u0; u < u1; u++) {
        const int64_t b = u / pairs, q = u % pairs;
        unsigned char *pair = dst + (size_t)u * pair_bytes;
        memset(pair, 0, pair_bytes); /* columns past N: scale 0, quants 0 */
        for (int h = 0; h < 2; h++) {
            /* Gated: (gate panel q, up panel q); plain: (panel 2q, panel 2q + 1). */
            const moe_matrix_src *m = gated && h == 1 ? &s->second[b] : &s->first[b];
            const int64_t panel = gated ? q : 2 * q + h;
            for (int i = 0; i < MOE_CPU_PANEL; i++) {
                const int64_t row = panel * MOE_CPU_PANEL + i;
                if (row >= N) break;
                moe_matrix_row_as(m, K, row, dt, row_buf);
                scatter_row(pair, dt, K, h, i, words, row_buf);
            }
        }
    }
}

/* ---- activations for the integer kernels (the bfloat16 pairs: kernels_bf16.c) -------------- */

/* Round half away from zero, as roundf, for |v| < 2^31: r = v truncated, f = v − r (exact), and 2f
 * truncated is ±1 exactly where |f| >= 0.5. Conversions and subtractions only, so the group's loop
 * below vectorises, where roundf is a call a value at the baseline level. */
static inline int32_t round_away(float v)
{
    const int32_t r = (int32_t)v;
    const float f = v - (float)r;
    return r + (int32_t)(f + f);
}

void moe_cpu_quantize_row(moe_act_quant quant, const float *a, int64_t k, void *out)
{
    const bool wide = quant == MOE_ACT_INT16;
    const float qmax = wide ? 32767.0f : 127.0f;
    const int64_t ng = k / MOE_ACT_GROUP;
    unsigned char *tail = (unsigned char *)out + (size_t)k * (wide ? 2 : 1);
    for (int64_t g = 0; g < ng; g++) {
        const float *x = a + g * MOE_ACT_GROUP;
        /* max|x| as the largest of the magnitudes' bits (ordered as the magnitudes are, an integer
         * maximum that vectorises): past float's largest only for an infinity or a NaN. */
        uint32_t top = 0;
        for (int j = 0; j < MOE_ACT_GROUP; j++) {
            uint32_t u;
            memcpy(&u, &x[j], sizeof u);
            u &= 0x7fffffffu;
            top = u > top ? u : top;
        }
        const bool finite = top <= 0x7f7fffffu;
        float amax;
        memcpy(&amax, &top, sizeof amax);
        /* A non-finite value makes the group's scale NaN, so it reaches the token's output as the
         * float path would carry it (moe.h: non-finite input); its quants are 0. A group so small
         * that 1/d overflows (max|a| < ~1.5e-36) is rounded to zero, d = 0: the int32 cast of
         * x·inf would be undefined. */
        float d = finite ? amax / qmax : NAN, id = finite && d != 0.0f ? 1.0f / d : 0.0f;
        if (id > FLT_MAX) d = id = 0.0f;
        int32_t q[MOE_ACT_GROUP], sum = 0;
        for (int j = 0; j < MOE_ACT_GROUP; j++) q[j] = finite ? round_away(x[j] * id) : 0;
        for (int j = 0; j < MOE_ACT_GROUP; j++) sum += q[j];
        if (wide) { /* pairs (0, 2), (1, 3) of every 4 */
            int16_t *o = (int16_t *)out + g * MOE_ACT_GROUP;
            for (int j = 0; j < MOE_ACT_GROUP; j += 4) {
                o[j] = (int16_t)q[j];
                o[j + 1] = (int16_t)q[j + 2];
                o[j + 2] = (int16_t)q[j + 1];
                o[j + 3] = (int16_t)q[j + 3];
            }
        } else {
            int8_t *o = (int8_t *)out + g * MOE_ACT_GROUP;
            for (int j = 0; j < MOE_ACT_GROUP; j++) o[j] = (int8_t)q[j];
        }
        memcpy(tail + (size_t)g * sizeof(float), &d, sizeof d);
        memcpy(tail + (size_t)(ng + g) * sizeof(float), &sum, sizeof sum);
    }
}
