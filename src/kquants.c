/*
 * kquants.c — ggml's K-quant super-blocks (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; moe.h has their layouts): one
 * super-block of 256 values to floats and back. dtype.c converts rows through these; the CPU
 * backend's packing reads the scales with moe_kq_scale_min (Q3_K's with moe_q3k_scale); the GPU kernels
 * decode the same bytes themselves (shaders/weights.glsl, opencl/weights.cl).
 *
 * Dequantising computes what ggml's dequantize_row_q*_K computes, in float and in the same
 * order (d·sc first, then times q, minus dmin·m), so the values are bit for bit those of ggml
 * and of the `gguf` package (tests/test_dtype.c checks fixtures it made).
 *
 * Quantising fits each sub-block in one pass: Q4_K/Q5_K (Q2_K) take the sub-block's range [min(x, 0),
 * max(x)] as scale·[0, 15 or 31 (3)] − min, Q6_K (Q3_K) its value of largest magnitude as scale·(−32)
 * (scale·(−4)); the scales (and mins) are then quantised to 6 bits (int8 for Q6_K, 4 bits for Q2_K)
 * against the super-block's largest, and each value rounded against its sub-block's quantised scale. ggml
 * refines the sub-block fits iteratively (make_qkx2_quants, make_qx_quants); this is the plain fit it starts
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

/* A Q4_K/Q5_K super-block's quants, 0..15 (0..31), one byte each: value 64c + l is the low nibble
 * of byte 32c + l, value 64c + 32 + l its high one (l < 32), plus 16·(bit i / 32 of qh byte l) for
 * Q5_K. (Loops over l: the compiler vectorises them.) */
static void q45_unpack(bool q5, const unsigned char *qh, const unsigned char *qs, uint8_t q[QK])
{
    for (int c = 0; c < 4; c++)
        for (int hi = 0; hi < 2; hi++)
            for (int l = 0; l < 32; l++) {
                const int nib = hi ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 0xf;
                q[64 * c + 32 * hi + l] = (uint8_t)(q5 ? nib | ((qh[l] >> (2 * c + hi)) & 1) << 4 : nib);
            }
}

/* A Q6_K super-block's quants, 0..63: value 128n + 32g + l (g < 4) has its low nibble in ql byte
 * 64n + 32(g % 2) + l (the high nibble for g ≥ 2) and two high bits at 2g of qh byte 32n + l. */
static void q6_unpack(const unsigned char *ql, const unsigned char *qh, uint8_t q[QK])
{
    for (int n = 0; n < 2; n++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                const unsigned char b = ql[64 * n + (g & 1) * 32 + l];
                const int lo = g >= 2 ? b >> 4 : b & 0xf;
                q[128 * n + 32 * g + l] = (uint8_t)(lo | ((qh[32 * n + l] >> (2 * g)) & 3) << 4);
            }
}

/* Q3_K's 6-bit scale s (0..15) of its 12 scale bytes, as stored (ggml subtracts 32): the low 4 bits
 * are byte s's low nibble (s < 8) or byte s − 8's high one, the top 2 those at 2·(s / 4) of byte
 * 8 + s % 4. */
int moe_q3k_scale(const unsigned char *scales, int s)
{
    const int low = s < 8 ? scales[s] & 0xf : scales[s - 8] >> 4;
    return low | (((scales[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
}

/* Q2_K's quants, 0..3: value 128n + 32j + l is bits 2j of qs byte 32n + l (Q3_K's low bits). */
static void q2_unpack(const unsigned char *qs, uint8_t q[QK])
{
    for (int n = 0; n < 2; n++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) q[128 * n + 32 * j + l] = (uint8_t)((qs[32 * n + l] >> (2 * j)) & 3);
}

/* A Q3_K super-block's quants, 0..7 (ggml subtracts 4): value 128n + 32j + l has Q2_K's two bits (at 2j of
 * qs byte 32n + l) and bit 4n + j of hmask byte l above them. */
static void q3_unpack(const unsigned char *hmask, const unsigned char *qs, uint8_t q[QK])
{
    q2_unpack(qs, q);
    for (int s = 0; s < 8; s++)
        for (int l = 0; l < 32; l++) q[32 * s + l] |= (uint8_t)(((hmask[l] >> s) & 1) << 2);
}

/* Q4_K / Q5_K / Q2_K: value i = d·sc[s]·q[i] − dmin·m[s] over sub-blocks s of `sub` values. */
static void min_values(const uint8_t q[QK], float d, float dmin, const uint8_t *sc, const uint8_t *m, int sub,
                       float *out)
{
    for (int s = 0; s < QK / sub; s++) {
        const float d1 = d * (float)sc[s], m1 = dmin * (float)m[s];
        for (int i = sub * s; i < sub * s + sub; i++) out[i] = d1 * (float)q[i] - m1;
    }
}

/* Q6_K / Q3_K: value i = d·sc[i / 16]·(q[i] − z), the zero point z 32 (4). */
static void signed_values(const uint8_t q[QK], float d, const int sc[16], int z, float *out)
{
    for (int s = 0; s < 16; s++) {
        const float dl = d * (float)sc[s];
        for (int i = 16 * s; i < 16 * s + 16; i++) out[i] = dl * (float)(q[i] - z);
    }
}

/* The quants of a super-block unpacked to one byte each first (loops the compiler vectorises), then
 * scaled a sub-block at a time: value by value, the bit fields' shifts and the scale's unpacking
 * took most of a decode. The arithmetic is the same, in the same order. */
void moe_kq_decode(moe_dtype dt, const unsigned char *blk, float *out)
{
    uint8_t q[QK];
    int signed_sc[16];
    if (dt == MOE_DTYPE_Q3_K) { /* hmask[32], qs[64], scales[12], fp16 d */
        q3_unpack(blk, blk + 32, q);
        for (int s = 0; s < 16; s++) signed_sc[s] = moe_q3k_scale(blk + 96, s) - 32;
        signed_values(q, moe_f16_to_f32(load16(blk + 108)), signed_sc, 4, out);
        return;
    }
    if (dt == MOE_DTYPE_Q6_K) { /* ql[128], qh[64], int8 scales[16], fp16 d */
        const int8_t *sc8 = (const int8_t *)(const void *)(blk + 192);
        q6_unpack(blk, blk + 128, q);
        for (int s = 0; s < 16; s++) signed_sc[s] = sc8[s];
        signed_values(q, moe_f16_to_f32(load16(blk + 208)), signed_sc, 32, out);
        return;
    }
    uint8_t sc[16], m[16];
    if (dt == MOE_DTYPE_Q2_K) { /* scales[16] (sc low nibble, m high), qs[64], fp16 d, fp16 dmin */
        q2_unpack(blk + 16, q);
        for (int s = 0; s < 16; s++) {
            sc[s] = blk[s] & 0xf;
            m[s] = blk[s] >> 4;
        }
        min_values(q, moe_f16_to_f32(load16(blk + 80)), moe_f16_to_f32(load16(blk + 82)), sc, m, 16, out);
        return;
    }
    const bool q5 = dt == MOE_DTYPE_Q5_K;
    const unsigned char *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
    q45_unpack(q5, qh, qs, q);
    for (int j = 0; j < 8; j++) moe_kq_scale_min(blk + 4, j, &sc[j], &m[j]);
    min_values(q, moe_f16_to_f32(load16(blk)), moe_f16_to_f32(load16(blk + 2)), sc, m, 32, out);
}

/* clamp((int)lrintf(v), lo, hi) for lo <= 0 <= hi: v rounded to the nearest integer, ties to even
 * (lrintf in the default rounding mode), then clamped, with no libm call and no branch, so that
 * the encoders' loops over a sub-block of these vectorise (a libm call a value was most of a
 * quantizer's time; a branch a value kept the loops scalar, each 2-3x the time it takes now).
 * Below 2^22 in magnitude, adding 1.5·2^23 makes the float addition round v to an integer and
 * subtracting it again is exact; beyond, r is still beyond the bounds, and the clamp (as monotonic
 * as the rounding, with integer bounds) gives what clamping first would. NaN stays NaN in r, is
 * clamped to hi (it fails r < hi), then replaced by 0 (x86-64's (int) lrintf); infinities clamp.
 * Checked against the branching form this replaced on every float, for every (lo, hi) used below.
 * It needs each operation rounded to float, as SSE2 and NEON do (x87's wider intermediates
 * would not round here), and not reassociated (-ffast-math would fold r to v). */
static inline int round_clamp(float v, int lo, int hi)
{
    const float r = (v + 12582912.0f) - 12582912.0f;
    const float below_hi = r < (float)hi ? r : (float)hi, c = below_hi > (float)lo ? below_hi : (float)lo;
    return (int)(v == v ? c : 0.0f);
}

/* Q5_K's fifth bits and Q3_K's third bits (hmask): bit `shift` of value 32s + l (a quant with nothing
 * above that bit) goes to bit s of byte l. */
static void top_bits(const uint8_t q[QK], int shift, unsigned char out[32])
{
    for (int l = 0; l < 32; l++) {
        unsigned bits = 0;
        for (int s = 0; s < 8; s++) bits |= (unsigned)(q[32 * s + l] >> shift) << s;
        out[l] = (unsigned char)bits;
    }
}

/* Q4_K / Q5_K / Q2_K: sub-blocks of `sub` values, value ≈ d·sc·q − dmin·m with q in 0..qmax and sc,
 * m in 0..smax (63: 6 bits; Q2_K 15: 4 bits). Each sub-block's range [min(x, 0), max(x)] gives its
 * scale and min, which are quantised against the super-block's largest; d and dmin (fp16) are
 * stored through dh and mh, then the quants are rounded against the stored d·sc and dmin·m. */
static void min_fit(const float *x, int sub, int qmax, int smax, uint8_t *sc, uint8_t *m, uint16_t *dh,
                    uint16_t *mh, uint8_t q[QK])
{
    const int nsub = QK / sub;
    float scale[16], min[16], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < nsub; j++) {
        float lo = 0.0f, hi = -INFINITY;
        for (int i = sub * j; i < sub * j + sub; i++) {
            lo = x[i] < lo ? x[i] : lo; /* fminf, fmaxf: a NaN is passed over */
            hi = x[i] > hi ? x[i] : hi;
        }
        scale[j] = hi > lo ? (hi - lo) / (float)qmax : 0.0f;
        min[j] = -lo;
        max_scale = scale[j] > max_scale ? scale[j] : max_scale;
        max_min = min[j] > max_min ? min[j] : max_min;
    }
    const float is = max_scale > 0.0f ? (float)smax / max_scale : 0.0f,
                im = max_min > 0.0f ? (float)smax / max_min : 0.0f;
    for (int j = 0; j < nsub; j++) {
        sc[j] = (uint8_t)round_clamp(is * scale[j], 0, smax);
        m[j] = (uint8_t)round_clamp(im * min[j], 0, smax);
    }
    *dh = moe_f32_to_f16(max_scale / (float)smax);
    *mh = moe_f32_to_f16(max_min / (float)smax);
    const float d = moe_f16_to_f32(*dh), dmin = moe_f16_to_f32(*mh);
    /* The values first, a sub-block at a time (a loop the compiler vectorises); the callers then put
     * their bits in place. */
    for (int j = 0; j < nsub; j++) {
        const float dl = d * (float)sc[j], ml = dmin * (float)m[j];
        /* (a branch a sub-block, outside the loop: a division inside a select is not vectorised) */
        if (!(dl > 0.0f))
            memset(q + sub * j, 0, (size_t)sub);
        else
            for (int i = sub * j; i < sub * j + sub; i++)
                q[i] = (uint8_t)round_clamp((x[i] + ml) / dl, 0, qmax);
    }
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, value ≈ d·sc·q − dmin·m with q in 0..15 (0..31), 6-bit sc and m. */
static void encode_q45(bool q5, const float *x, unsigned char *blk)
{
    uint8_t sc[8], m[8], q[QK];
    uint16_t dh, mh;
    min_fit(x, 32, q5 ? 31 : 15, 63, sc, m, &dh, &mh, q);
    store16(blk, dh);
    store16(blk + 2, mh);
    pack_scale_min(sc, m, blk + 4);
    unsigned char *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
    /* The nibble of value 64c + l (32c + l's high one: 64c + 32 + l) in byte 32c + l, its fifth bit
     * (Q5_K) at bit i / 32 of byte l. */
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (unsigned char)((q[64 * c + l] & 0xf) | (q[64 * c + 32 + l] & 0xf) << 4);
    if (q5) top_bits(q, 4, qh);
}

/* Value 128n + 32j + l's two low bits at bits 2j of byte 32n + l (Q3_K's qs, Q2_K's). */
static void pack_pairs(const uint8_t q[QK], unsigned char qs[64])
{
    for (int n = 0; n < 2; n++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *v = q + 128 * n + l;
            qs[32 * n + l] =
                (unsigned char)((v[0] & 3) | (v[32] & 3) << 2 | (v[64] & 3) << 4 | (v[96] & 3) << 6);
        }
}

/* Q2_K: 16 sub-blocks of 16, value ≈ d·sc·q − dmin·m with q in 0..3 and 4-bit sc, m (scale byte s:
 * sc low nibble, m high), as ggml's quantize_row_q2_K_ref lays them out (its fit is make_qkx2_quants'
 * search, weighted by |x|). */
static void encode_q2(const float *x, unsigned char *blk)
{
    uint8_t sc[16], m[16], q[QK];
    uint16_t dh, mh;
    min_fit(x, 16, 3, 15, sc, m, &dh, &mh, q);
    for (int s = 0; s < 16; s++) blk[s] = (unsigned char)(sc[s] | m[s] << 4);
    pack_pairs(q, blk + 16);
    store16(blk + 80, dh);
    store16(blk + 82, mh);
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

/* Q6_K / Q3_K: each value's quant against its sub-block's quantised scale d·sc[j], offset by the
 * zero point z (32, 4): round(x / (d·sc)) clamped to −z..z − 1, plus z; a sub-block whose scale is
 * 0 takes z. (The test is outside the loop: a division inside a select is not vectorised.) */
static void signed_quants(const float *x, float d, const int sc[16], int z, uint8_t q[QK])
{
    for (int j = 0; j < 16; j++) {
        const float dl = d * (float)sc[j];
        if (dl == 0.0f)
            memset(q + 16 * j, z, 16);
        else
            for (int i = 16 * j; i < 16 * j + 16; i++)
                q[i] = (uint8_t)(round_clamp(x[i] / dl, -z, z - 1) + z);
    }
}

/* Q6_K: 16 sub-blocks of 16, value ≈ d·sc·(q − 32) with q in 0..63, sc int8. */
static void encode_q6(const float *x, unsigned char *blk)
{
    float scale[16];
    const float max_scale = signed_scales(x, 32.0f, scale);
    unsigned char *ql = blk, *qh = blk + 128;
    const float iscale = max_scale != 0.0f ? -128.0f / max_scale : 0.0f;
    int8_t sc[16];
    for (int j = 0; j < 16; j++) sc[j] = (int8_t)round_clamp(iscale * scale[j], -128, 127);
    memcpy(blk + 192, sc, 16);
    const uint16_t dh = moe_f32_to_f16(iscale != 0.0f ? 1.0f / iscale : 0.0f);
    store16(blk + 208, dh);
    const float d = moe_f16_to_f32(dh);
    int scales[16];
    for (int j = 0; j < 16; j++) scales[j] = sc[j];
    uint8_t q[QK]; /* as encode_q45: the values, then their bits */
    signed_quants(x, d, scales, 32, q);
    /* Value 128n + 32g + l (g < 4): low nibble in byte 64n + 32(g % 2) + l (g ≥ 2: its high
     * nibble), two high bits at bit 2g of qh byte 32n + l. */
    for (int n = 0; n < 2; n++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *v = q + 128 * n + l;
            ql[64 * n + l] = (unsigned char)((v[0] & 0xf) | (v[64] & 0xf) << 4);
            ql[64 * n + 32 + l] = (unsigned char)((v[32] & 0xf) | (v[96] & 0xf) << 4);
            qh[32 * n + l] =
                (unsigned char)((v[0] >> 4) | (v[32] >> 4) << 2 | (v[64] >> 4) << 4 | (v[96] >> 4) << 6);
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
    uint8_t q[QK]; /* as encode_q45: the values, then their bits */
    signed_quants(x, d, sc, 4, q);
    /* Third bit of value 128n + 32j + l at bit 4n + j of hmask byte l (so value 32s + l's at bit s). */
    pack_pairs(q, qs);
    top_bits(q, 2, hmask);
}

void moe_kq_encode(moe_dtype dt, const float *in, unsigned char *blk)
{
    /* A non-finite value would make every scale of its super-block NaN or infinite; ggml's
     * quantizers do not guard either, and the result is then whatever the arithmetic gives. */
    if (dt == MOE_DTYPE_Q2_K)
        encode_q2(in, blk);
    else if (dt == MOE_DTYPE_Q3_K)
        encode_q3(in, blk);
    else if (dt == MOE_DTYPE_Q6_K)
        encode_q6(in, blk);
    else
        encode_q45(dt == MOE_DTYPE_Q5_K, in, blk);
}
