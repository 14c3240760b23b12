/*
 * kquants.c — ggml's K-quant super-blocks (Q3_K, Q4_K, Q5_K, Q6_K; moe.h has their layouts): one
 * super-block of 256 values to floats and back. dtype.c converts rows through these; the CPU
 * backend's packing reads the scales with moe_kq_scale_min (Q3_K's with moe_q3k_scale); the GPU kernels
 * decode the same bytes themselves (shaders/weights.glsl, opencl/weights.cl).
 *
 * Dequantising computes what ggml's dequantize_row_q*_K computes, in float and in the same
 * order (d·sc first, then times q, minus dmin·m), so the values are bit for bit those of ggml
 * and of the `gguf` package (tests/test_dtype.c checks fixtures it made).
 *
 * Quantising fits each sub-block in one pass: Q4_K/Q5_K take the sub-block's range [min(x, 0),
 * max(x)] as scale·[0, 15 or 31] − min, Q6_K (Q3_K) its value of largest magnitude as scale·(−32)
 * (scale·(−4)); the scales (and mins) are then quantised to 6 bits (int8 for Q6_K) against the super-block's
 * largest, and each value rounded against its sub-block's quantised scale. ggml refines the
 * sub-block fits iteratively (make_qkx2_quants, make_qx_quants); this is the plain fit it starts
 * from, so the bytes differ from llama-quantize's while the format is the same.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define QK 256

static uint16_t load16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static void store16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8);
}

void moe_kq_scale_min(const unsigned char *scales, int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4));
        *m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

/* The inverse of moe_kq_scale_min: eight 6-bit scales and mins into 12 bytes. */
static void pack_scale_min(const uint8_t sc[8], const uint8_t m[8], unsigned char *scales)
{
    for (int j = 0; j < 4; j++) {
        scales[j] = (unsigned char)(sc[j] | ((sc[j + 4] >> 4) << 6));
        scales[j + 4] = (unsigned char)(m[j] | ((m[j + 4] >> 4) << 6));
        scales[j + 8] = (unsigned char)((sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4));
    }
}

/* Value i (0..255) of a Q4_K/Q5_K super-block's quants: the nibble of byte 32c + l (c = i / 64,
 * l = i % 32; the high nibble for the second 32 of each 64), plus 16·(its fifth bit) for Q5_K. */
static int q45_quant(bool q5, const unsigned char *qh, const unsigned char *qs, int i)
{
    const int c = i / 64, l = i % 32, hi = (i / 32) & 1;
    const int nib = hi ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 0xf;
    return q5 ? nib + (((qh[l] >> (2 * c + hi)) & 1) << 4) : nib;
}

/* Value i of a Q6_K super-block's quants, 0..63: ql byte 64n + (i % 64 ≥ 32 ? 32 : 0) + i % 32
 * (n = i / 128; low nibble for the first 64 of each 128, high for the second), and two bits of
 * qh byte 32n + i % 32 at 2·((i % 128) / 32). */
static int q6_quant(const unsigned char *ql, const unsigned char *qh, int i)
{
    const int n = i / 128, r = i % 128, l = i % 32, quarter = r / 32;
    const unsigned char b = ql[64 * n + (quarter & 1) * 32 + l];
    const int lo = quarter >= 2 ? b >> 4 : b & 0xf;
    return lo | (((qh[32 * n + l] >> (2 * quarter)) & 3) << 4);
}

/* Q3_K's 6-bit scale s (0..15) of its 12 scale bytes, as stored (ggml subtracts 32): the low 4 bits
 * are byte s's low nibble (s < 8) or byte s − 8's high one, the top 2 those at 2·(s / 4) of byte
 * 8 + s % 4. */
int moe_q3k_scale(const unsigned char *scales, int s)
{
    const int low = s < 8 ? scales[s] & 0xf : scales[s - 8] >> 4;
    return low | (((scales[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
}

/* Value i of a Q3_K super-block's quants, 0..7 (ggml subtracts 4): i = 128n + 32j + l, the two
 * bits at 2j of qs byte 32n + l and bit 4n + j of hmask byte l above them. */
static int q3_quant(const unsigned char *hmask, const unsigned char *qs, int i)
{
    const int n = i / 128, j = (i / 32) % 4, l = i % 32;
    return ((qs[32 * n + l] >> (2 * j)) & 3) | (((hmask[l] >> (4 * n + j)) & 1) << 2);
}

void moe_kq_decode(moe_dtype dt, const unsigned char *blk, float *out)
{
    if (dt == MOE_DTYPE_Q3_K) { /* hmask[32], qs[64], scales[12], fp16 d */
        const float d = moe_f16_to_f32(load16(blk + 108));
        for (int i = 0; i < QK; i++)
            out[i] =
                d * (float)(moe_q3k_scale(blk + 96, i / 16) - 32) * (float)(q3_quant(blk, blk + 32, i) - 4);
        return;
    }
    if (dt == MOE_DTYPE_Q6_K) {
        const unsigned char *ql = blk, *qh = blk + 128;
        const int8_t *sc = (const int8_t *)(const void *)(blk + 192);
        const float d = moe_f16_to_f32(load16(blk + 208));
        for (int i = 0; i < QK; i++) out[i] = d * (float)sc[i / 16] * (float)(q6_quant(ql, qh, i) - 32);
        return;
    }
    const bool q5 = dt == MOE_DTYPE_Q5_K;
    const float d = moe_f16_to_f32(load16(blk)), dmin = moe_f16_to_f32(load16(blk + 2));
    const unsigned char *scales = blk + 4, *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        moe_kq_scale_min(scales, j, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        for (int i = 32 * j; i < 32 * j + 32; i++) out[i] = d1 * (float)q45_quant(q5, qh, qs, i) - m1;
    }
}

/* clamp((int)lrintf(v), lo, hi) for lo <= 0 <= hi: v rounded to the nearest integer, ties to even
 * (lrintf in the default rounding mode), then clamped, without a libm call a value (the calls were
 * most of a quantizer's time). Clamped first, so |v| < 2^22: adding 1.5·2^23 makes the float
 * addition round v to an integer, which the sum's low mantissa bits hold. The same as before for
 * every float below 2^31 in magnitude (checked on all of them) and for NaN (0, x86-64's (int)
 * lrintf); beyond 2^31, where the int conversion kept only lrintf's low 32 bits, it saturates. */
static int round_clamp(float v, int lo, int hi)
{
    if (isnan(v)) return 0;
    if (!(v > (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    const float t = v + 12582912.0f;
    uint32_t u;
    memcpy(&u, &t, sizeof u);
    return (int)(u & 0x7fffffu) - 0x400000;
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, value ≈ d·sc·q − dmin·m with q in 0..qmax. */
static void encode_q45(bool q5, const float *x, unsigned char *blk)
{
    const int qmax = q5 ? 31 : 15;
    float scale[8], min[8], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        float lo = 0.0f, hi = -INFINITY;
        for (int i = 32 * j; i < 32 * j + 32; i++) {
            lo = x[i] < lo ? x[i] : lo; /* fminf, fmaxf: a NaN is passed over */
            hi = x[i] > hi ? x[i] : hi;
        }
        scale[j] = hi > lo ? (hi - lo) / (float)qmax : 0.0f;
        min[j] = -lo;
        max_scale = scale[j] > max_scale ? scale[j] : max_scale;
        max_min = min[j] > max_min ? min[j] : max_min;
    }
    uint8_t sc[8], m[8];
    const float is = max_scale > 0.0f ? 63.0f / max_scale : 0.0f,
                im = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)round_clamp(is * scale[j], 0, 63);
        m[j] = (uint8_t)round_clamp(im * min[j], 0, 63);
    }
    const uint16_t dh = moe_f32_to_f16(max_scale / 63.0f), mh = moe_f32_to_f16(max_min / 63.0f);
    store16(blk, dh);
    store16(blk + 2, mh);
    pack_scale_min(sc, m, blk + 4);
    unsigned char *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
    memset(qh, 0, q5 ? 32 + 128 : 128);
    const float d = moe_f16_to_f32(dh), dmin = moe_f16_to_f32(mh);
    for (int i = 0; i < QK; i++) {
        const float dl = d * (float)sc[i / 32], ml = dmin * (float)m[i / 32];
        const int q = dl > 0.0f ? round_clamp((x[i] + ml) / dl, 0, qmax) : 0;
        const int c = i / 64, l = i % 32, hi = (i / 32) & 1;
        qs[32 * c + l] |= (unsigned char)((q & 0xf) << (4 * hi));
        if (q5) qh[l] |= (unsigned char)((q >> 4) << (2 * c + hi));
    }
}

/* Q6_K / Q3_K: each sub-block of 16 gets the scale that maps its value of largest magnitude (the
 * first of equals) to the lowest code, −qneg; returns the scale of largest magnitude of the 16. */
static float signed_scales(const float *x, float qneg, float scale[16])
{
    float max_scale = 0.0f;
    for (int j = 0; j < 16; j++) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 16 * j; i < 16 * j + 16; i++)
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        scale[j] = max / -qneg;
        if (fabsf(scale[j]) > fabsf(max_scale)) max_scale = scale[j];
    }
    return max_scale;
}

/* Q6_K: 16 sub-blocks of 16, value ≈ d·sc·(q − 32) with q in 0..63, sc int8. */
static void encode_q6(const float *x, unsigned char *blk)
{
    float scale[16];
    const float max_scale = signed_scales(x, 32.0f, scale);
    unsigned char *ql = blk, *qh = blk + 128;
    memset(blk, 0, 210);
    const float iscale = max_scale != 0.0f ? -128.0f / max_scale : 0.0f;
    int8_t sc[16];
    for (int j = 0; j < 16; j++) sc[j] = (int8_t)round_clamp(iscale * scale[j], -128, 127);
    memcpy(blk + 192, sc, 16);
    const uint16_t dh = moe_f32_to_f16(iscale != 0.0f ? 1.0f / iscale : 0.0f);
    store16(blk + 208, dh);
    const float d = moe_f16_to_f32(dh);
    for (int i = 0; i < QK; i++) {
        const float dl = d * (float)sc[i / 16];
        const int q = dl != 0.0f ? round_clamp(x[i] / dl, -32, 31) + 32 : 32;
        const int n = i / 128, r = i % 128, l = i % 32, quarter = r / 32;
        ql[64 * n + (quarter & 1) * 32 + l] |= (unsigned char)((q & 0xf) << (quarter >= 2 ? 4 : 0));
        qh[32 * n + l] |= (unsigned char)((q >> 4) << (2 * quarter));
    }
}

/* Q3_K: 16 sub-blocks of 16, value ≈ d·(sc − 32)·(q − 4) with q in 0..7 and sc in 0..63, as ggml's
 * quantize_row_q3_K_ref lays them out (its per-sub-block fit is make_q3_quants' search). */
static void encode_q3(const float *x, unsigned char *blk)
{
    float scale[16];
    const float max_scale = signed_scales(x, 4.0f, scale);
    memset(blk, 0, 110);
    unsigned char *hmask = blk, *qs = blk + 32, *scales = blk + 96;
    const float iscale = max_scale != 0.0f ? -32.0f / max_scale : 0.0f;
    int sc[16];
    for (int j = 0; j < 16; j++) {
        sc[j] = iscale != 0.0f ? round_clamp(iscale * scale[j], -32, 31) : -32; /* ggml's bytes: all 0 */
        const int u = sc[j] + 32;
        scales[j % 8] |= (unsigned char)((u & 0xf) << (j < 8 ? 0 : 4));
        scales[8 + j % 4] |= (unsigned char)((u >> 4) << (2 * (j / 4)));
    }
    const uint16_t dh = moe_f32_to_f16(iscale != 0.0f ? 1.0f / iscale : 0.0f);
    store16(blk + 108, dh);
    const float d = moe_f16_to_f32(dh);
    for (int i = 0; i < QK; i++) {
        const float dl = d * (float)sc[i / 16];
        const int q = dl != 0.0f ? round_clamp(x[i] / dl, -4, 3) + 4 : 4;
        const int n = i / 128, j = (i / 32) % 4, l = i % 32;
        qs[32 * n + l] |= (unsigned char)((q & 3) << (2 * j));
        hmask[l] |= (unsigned char)((q >> 2) << (4 * n + j));
    }
}

void moe_kq_encode(moe_dtype dt, const float *in, unsigned char *blk)
{
    /* A non-finite value would make every scale of its super-block NaN or infinite; ggml's
     * quantizers do not guard either, and the result is then whatever the arithmetic gives. */
    if (dt == MOE_DTYPE_Q3_K)
        encode_q3(in, blk);
    else if (dt == MOE_DTYPE_Q6_K)
        encode_q6(in, blk);
    else
        encode_q45(dt == MOE_DTYPE_Q5_K, in, blk);
}
