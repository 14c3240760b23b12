/*
 * dtype.c — the weight formats (moe.h): names, row sizes, and conversion between them.
 *
 * Quantisation to Q8_0 / Q4_0 / MXFP4 follows ggml's reference quantizers (ggml-quants.c,
 * quantize_row_q8_0_ref, quantize_row_q4_0_ref, quantize_row_mxfp4_ref) operation for operation, in float, so
 * a row quantised here has the bytes ggml's tools and the `gguf` Python package give it (tests/test_dtype.c
 * checks fixtures the package made); the K-quants' codecs are kquants.c's (decoding as ggml, quantising by a
 * simpler fit). CMake compiles this file and kquants.c with -ffp-contract=off: a fused multiply-add would
 * round differently from ggml's separate ones. float32 → fp16 and → bf16 round to nearest even, as F16C,
 * NumPy and PyTorch do; an fp16 scale is rounded the same way. This is host code, run once per row at upload:
 * the kernels read the stored bytes themselves.
 */
#include "internal.h"
#include "platform/thread.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <string.h>

static const struct {
    moe_dtype dtype;
    const char *name;
    int64_t block;      /* values per block */
    size_t block_bytes; /* bytes per block */
} formats[] = {
    {MOE_DTYPE_F32, "f32", 1, 4},       {MOE_DTYPE_F16, "f16", 1, 2},
    {MOE_DTYPE_BF16, "bf16", 1, 2},     {MOE_DTYPE_Q8_0, "q8_0", 32, 34},
    {MOE_DTYPE_Q4_0, "q4_0", 32, 18},   {MOE_DTYPE_Q4_K, "q4_k", 256, 144},
    {MOE_DTYPE_Q5_K, "q5_k", 256, 176}, {MOE_DTYPE_Q6_K, "q6_k", 256, 210},
    {MOE_DTYPE_MXFP4, "mxfp4", 32, 17}, {MOE_DTYPE_Q3_K, "q3_k", 256, 110},
    {MOE_DTYPE_Q2_K, "q2_k", 256, 84},
};
#define N_FORMATS (sizeof formats / sizeof formats[0])

static int format_index(moe_dtype dtype)
{
    for (size_t i = 0; i < N_FORMATS; i++)
        if (formats[i].dtype == dtype) return (int)i;
    return -1;
}

const char *moe_dtype_name(moe_dtype dtype)
{
    if (dtype == MOE_DTYPE_DEFAULT) return "default";
    const int i = format_index(dtype);
    return i < 0 ? NULL : formats[i].name;
}

moe_status moe_dtype_from_name(const char *name, moe_dtype *out)
{
    moe_clear_error(NULL);
    if (!name || !out) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "name or out is NULL");
    for (size_t i = 0; i < N_FORMATS; i++) {
        const char *a = name, *b = formats[i].name;
        while (*a && *b && tolower((unsigned char)*a) == *b) a++, b++;
        if (!*a && !*b) {
            *out = formats[i].dtype;
            return MOE_OK;
        }
    }
    return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                    "'%.64s' is not a weight format: f32, f16, bf16, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, "
                    "q6_k or mxfp4 expected",
                    name);
}

int64_t moe_dtype_block_size(moe_dtype dtype)
{
    const int i = format_index(dtype);
    return i < 0 ? 0 : formats[i].block;
}

size_t moe_dtype_row_bytes(moe_dtype dtype, int64_t n)
{
    const int i = format_index(dtype);
    if (i < 0 || n <= 0 || n % formats[i].block != 0) return 0;
    size_t bytes;
    return moe_mul_size((size_t)(n / formats[i].block), formats[i].block_bytes, &bytes) ? bytes : 0;
}

bool moe_dtype_is_kquant(moe_dtype dtype)
{
    return dtype == MOE_DTYPE_Q2_K || dtype == MOE_DTYPE_Q3_K || dtype == MOE_DTYPE_Q4_K ||
           dtype == MOE_DTYPE_Q5_K || dtype == MOE_DTYPE_Q6_K;
}

int moe_dtype_takes_activations(moe_dtype weights, moe_dtype act)
{
    if (act == MOE_DTYPE_Q8_0)
        return weights == MOE_DTYPE_Q8_0 || weights == MOE_DTYPE_Q4_0 || moe_dtype_is_kquant(weights);
    if (act == MOE_DTYPE_BF16)
        return weights == MOE_DTYPE_Q4_0 || weights == MOE_DTYPE_MXFP4 || weights == MOE_DTYPE_Q4_K;
    return (act == MOE_DTYPE_F32 || act == MOE_DTYPE_DEFAULT) && moe_dtype_block_size(weights) > 0;
}

/* ---- scalar conversions -------------------------------------------------------------------- */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float moe_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return float_of(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (exp != 0) return float_of(sign | ((exp + 112u) << 23) | (man << 13));
    /* zero or subnormal: man · 2^-24, exact in float */
    return float_of(sign | bits_of((float)man * 5.9604644775390625e-8f));
}

uint16_t moe_f32_to_f16(float f)
{
    uint32_t u = bits_of(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) /* inf stays inf; NaN stays a (quiet) NaN */
        return sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u);
    if (u >= 0x47800000u) return sign | 0x7c00u; /* 2^16 and above: beyond the largest half */
    if (u < 0x38800000u) {
        /* Below 2^-14, the smallest normal half: the result is a subnormal (or zero) counting
         * 2^-24 steps. Adding 0.5 puts the value at the exponent where one mantissa step of
         * the float is 2^-24, so the float addition itself rounds to nearest even. */
        const float t = float_of(u) + 0.5f;
        return sign | (uint16_t)(bits_of(t) - 0x3f000000u);
    }
    /* Normal: rebias the exponent (127 → 15) and round the 13 dropped mantissa bits to nearest
     * even; a carry out of the mantissa correctly bumps the exponent (up to infinity). */
    const uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000000u + 0xfffu + odd; /* (15 − 127) << 23, plus the rounding */
    return sign | (uint16_t)(u >> 13);
}

static uint16_t load16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static void store16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8);
}

/* ---- blocks ----------------------------------------------------------------------------- */

const int8_t moe_mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float moe_e8m0_half(uint8_t e)
{
    /* 2^(e − 128): e = 0 and 1 are the subnormals 2^-128 and 2^-127 (ggml_e8m0_to_fp32_half). */
    return float_of(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

/* ggml's float -> int8 casts as x86 performs them: through a 32-bit integer (cvttss2si), which is
 * 0x80000000 for NaN and for values out of its range, low byte 0. C leaves those undefined, and
 * aarch64 saturates instead (+inf -> 0x7fffffff, byte 0xff), yet they occur: a block of tiny
 * values has 1/d = inf, so x·(1/d) is inf or NaN there (d rounds to 0 in fp16 and the block
 * decodes to zeros either way). The gguf package's bytes are x86's, so this spells them out.
 * Such a value is replaced by 0 before the conversion, a select rather than a branch, so that
 * quantize_q4_0's loop vectorises (half its time value by value). */
static inline unsigned char x86_cast_i8(float v)
{
    const float in_range = v > -2147483648.0f && v < 2147483648.0f ? v : 0.0f;
    return (unsigned char)((uint32_t)(int32_t)in_range & 0xffu);
}

/* roundf(v) (halves away from zero) without a libm call: v less its integer part (the conversion
 * truncates) is exact below 2^23, and from there on every float is an integer already (as are
 * inf and NaN, returned as they are). Only the value matters, not a zero's sign: x86_cast_i8 takes it. */
static float round_half_away(float v)
{
    if (!(fabsf(v) < 8388608.0f)) return v;
    const float t = (float)(int32_t)v, f = v - t;
    return f >= 0.5f ? t + 1.0f : f <= -0.5f ? t - 1.0f : t;
}

/* ggml's quantize_row_q8_0_ref on one block: d = max|x| / 127, q = round(x / d). Where every x·(1/d)
 * is below 2^23 in magnitude (a block of finite values whose d is not subnormal: |x·(1/d)| is then
 * 127 at most, give or take the roundings of d, 1/d and the product),
 * round_half_away is the truncation plus one where the fraction is a half or more (less one where it
 * is minus a half or less), written for the compiler to vectorise; otherwise value by value. */
static void quantize_q8_0(const float *x, unsigned char *out)
{
    float amax = 0.0f;
    for (int j = 0; j < MOE_BLOCK_SIZE; j++) { /* fmaxf without the call: a NaN is passed over */
        const float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store16(out, moe_f32_to_f16(d));
    float v[MOE_BLOCK_SIZE];
    int small = 1;
    for (int j = 0; j < MOE_BLOCK_SIZE; j++) {
        v[j] = x[j] * id;
        small &= fabsf(v[j]) < 8388608.0f; /* (false for NaN) */
    }
    if (!small) {
        for (int j = 0; j < MOE_BLOCK_SIZE; j++) out[2 + j] = x86_cast_i8(round_half_away(v[j]));
        return;
    }
    for (int j = 0; j < MOE_BLOCK_SIZE; j++) {
        const int32_t t = (int32_t)v[j];
        const float f = v[j] - (float)t;
        out[2 + j] = (unsigned char)((uint32_t)(t + (f >= 0.5f) - (f <= -0.5f)) & 0xffu);
    }
}

/* ggml's quantize_row_q4_0_ref on one block: d = (the value of largest magnitude) / −8, so
 * that value maps to q = 0, and q = min(15, trunc(x / d + 8.5)). */
static void quantize_q4_0(const float *x, unsigned char *out)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < MOE_BLOCK_SIZE; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store16(out, moe_f32_to_f16(d));
    for (int j = 0; j < MOE_BLOCK_SIZE / 2; j++) {
        const int8_t lo = (int8_t)x86_cast_i8(x[j] * id + 8.5f),
                     hi = (int8_t)x86_cast_i8(x[j + MOE_BLOCK_SIZE / 2] * id + 8.5f);
        const uint8_t q0 = lo < 15 ? (uint8_t)lo : 15, q1 = hi < 15 ? (uint8_t)hi : 15;
        out[2 + j] = (unsigned char)(q0 | (q1 << 4));
    }
}

/* ggml's quantize_row_mxfp4_ref on one block: the shared exponent e = floor(log2(max|x|)) − 2
 * + 127, so max|x| lands in kv's top octave (4·2^(e−127) ≤ max|x| < 8·2^(e−127)), then each
 * value's nearest code (the first of equals: +0 before −0). ggml casts the float exponent to
 * uint8_t: on x86 a negative one (max|x| < 2^-125) wraps modulo 256, and so does this, which
 * turns such a block into zeros (the nearest code to a tiny x at scale 2^127 and more is 0).
 *
 * ggml scans all 16 codes per value; this scans the 8 of x's sign, which picks the same code:
 * a code of the other sign is never strictly nearer than +0 (|c·d + |x|| ≥ |x|, rounding being
 * monotonic), −0 only ties +0 (which comes first), and kv[8 + i] = −kv[i] gives the same error
 * as kv[i] does for |x| (rounding to nearest is symmetric). NaN: no error compares below the
 * first, code 0, as in ggml. The products c·d are those ggml computes, once per block. */
static void quantize_mxfp4(const float *x, unsigned char *out)
{
    float amax = 0.0f;
    for (int j = 0; j < MOE_BLOCK_SIZE; j++)
        if (amax < fabsf(x[j])) amax = fabsf(x[j]);
    /* An infinite value: the float → int cast is undefined in C; ggml on x86 gets 0x80000000,
     * whose low byte 0 is what it writes, and so does this. */
    const uint8_t e =
        amax > 0.0f && amax <= FLT_MAX ? (uint8_t)((int)(floorf(log2f(amax)) - 2 + 127) & 0xff) : 0;
    const float d = moe_e8m0_half(e);
    float kd[8]; /* the non-negative codes' values */
    for (int i = 0; i < 8; i++) kd[i] = (float)moe_mxfp4_values[i] * d;
    out[0] = e;
    for (int j = 0; j < MOE_BLOCK_SIZE / 2; j++) {
        uint8_t q[2];
        for (int h = 0; h < 2; h++) {
            const float v = x[j + h * MOE_BLOCK_SIZE / 2], a = fabsf(v);
            float best = fabsf(kd[0] - a);
            q[h] = 0;
            for (uint8_t i = 1; i < 8; i++) {
                const float err = fabsf(kd[i] - a);
                if (err < best) best = err, q[h] = i;
            }
            if (v < 0.0f && q[h]) q[h] += 8;
        }
        out[1 + j] = (unsigned char)(q[0] | (q[1] << 4));
    }
}

/* n values of `dtype` starting at value `first` of the row, as floats (n within one block for
 * the block formats, which the callers guarantee by working a block at a time). */
static void decode(moe_dtype dtype, const unsigned char *row, int64_t first, int n, float *out)
{
    if (moe_dtype_is_kquant(dtype)) {
        const int i = format_index(dtype);
        moe_kq_decode(dtype, row + formats[i].block_bytes * (size_t)(first / MOE_SUPER_BLOCK_SIZE), out);
        return;
    }
    switch (dtype) {
    case MOE_DTYPE_F32:
        memcpy(out, row + 4 * first, sizeof(float) * (size_t)n);
        return;
    case MOE_DTYPE_F16:
        for (int i = 0; i < n; i++) out[i] = moe_f16_to_f32(load16(row + 2 * (first + i)));
        return;
    case MOE_DTYPE_BF16:
        for (int i = 0; i < n; i++) out[i] = moe_bf16_to_f32(load16(row + 2 * (first + i)));
        return;
    case MOE_DTYPE_Q8_0: {
        const unsigned char *b = row + 34 * (first / MOE_BLOCK_SIZE);
        const float d = moe_f16_to_f32(load16(b));
        for (int i = 0; i < n; i++) out[i] = (float)(int8_t)b[2 + i] * d;
        return;
    }
    case MOE_DTYPE_Q4_0: {
        const unsigned char *b = row + 18 * (first / MOE_BLOCK_SIZE);
        const float d = moe_f16_to_f32(load16(b));
        for (int i = 0; i < n; i++) {
            const int q = i < 16 ? b[2 + i] & 0x0f : b[2 + i - 16] >> 4;
            out[i] = (float)(q - 8) * d;
        }
        return;
    }
    case MOE_DTYPE_MXFP4: { /* ggml's dequantize_row_mxfp4: kv · 2^(e − 128), exact */
        const unsigned char *b = row + 17 * (first / MOE_BLOCK_SIZE);
        const float d = moe_e8m0_half(b[0]);
        for (int i = 0; i < n; i++)
            out[i] = (float)moe_mxfp4_values[i < 16 ? b[1 + i] & 0x0f : b[1 + i - 16] >> 4] * d;
        return;
    }
    default:
        return;
    }
}

static void encode(moe_dtype dtype, const float *in, int n, unsigned char *row, int64_t first)
{
    if (moe_dtype_is_kquant(dtype)) {
        const int i = format_index(dtype);
        moe_kq_encode(dtype, in, row + formats[i].block_bytes * (size_t)(first / MOE_SUPER_BLOCK_SIZE));
        return;
    }
    switch (dtype) {
    case MOE_DTYPE_F32:
        memcpy(row + 4 * first, in, sizeof(float) * (size_t)n);
        return;
    case MOE_DTYPE_F16:
        for (int i = 0; i < n; i++) store16(row + 2 * (first + i), moe_f32_to_f16(in[i]));
        return;
    case MOE_DTYPE_BF16:
        for (int i = 0; i < n; i++) store16(row + 2 * (first + i), moe_f32_to_bf16(in[i]));
        return;
    case MOE_DTYPE_Q8_0:
        quantize_q8_0(in, row + 34 * (first / MOE_BLOCK_SIZE));
        return;
    case MOE_DTYPE_Q4_0:
        quantize_q4_0(in, row + 18 * (first / MOE_BLOCK_SIZE));
        return;
    case MOE_DTYPE_MXFP4:
        quantize_mxfp4(in, row + 17 * (first / MOE_BLOCK_SIZE));
        return;
    default:
        return;
    }
}

void moe_convert_row_unchecked(moe_dtype src_dtype, const void *src, moe_dtype dst_dtype, void *dst,
                               int64_t n)
{
    if (src_dtype == dst_dtype) {
        memcpy(dst, src, moe_dtype_row_bytes(src_dtype, n));
        return;
    }
    /* A block of the larger format (or 32 values) at a time through a float buffer on the
     * stack, no allocation: a 256-value K-quant super-block holds 8 blocks of 32, which the
     * other format's decode / encode takes one at a time. */
    float buf[MOE_SUPER_BLOCK_SIZE];
    const int step = moe_dtype_is_kquant(src_dtype) || moe_dtype_is_kquant(dst_dtype) ? MOE_SUPER_BLOCK_SIZE
                                                                                      : MOE_BLOCK_SIZE;
    for (int64_t i = 0; i < n; i += step) {
        const int c = n - i < step ? (int)(n - i) : step;
        for (int j = 0; j < c; j += MOE_BLOCK_SIZE) /* a K-quant's decode fills all 256 at j = 0 */
            if (j == 0 || !moe_dtype_is_kquant(src_dtype))
                decode(src_dtype, src, i + j, c - j < MOE_BLOCK_SIZE ? c - j : MOE_BLOCK_SIZE, buf + j);
        for (int j = 0; j < c; j += MOE_BLOCK_SIZE)
            if (j == 0 || !moe_dtype_is_kquant(dst_dtype))
                encode(dst_dtype, buf + j, c - j < MOE_BLOCK_SIZE ? c - j : MOE_BLOCK_SIZE, dst, i + j);
    }
}

moe_status moe_convert_row(moe_dtype src_dtype, const void *src, moe_dtype dst_dtype, void *dst, int64_t n)
{
    moe_clear_error(NULL);
    if (!src || !dst) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "src or dst is NULL");
    if (format_index(src_dtype) < 0 || format_index(dst_dtype) < 0)
        return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                        "moe_convert_row: %s dtype %d is not a weight format",
                        format_index(src_dtype) < 0 ? "source" : "destination",
                        (int)(format_index(src_dtype) < 0 ? src_dtype : dst_dtype));
    /* The format with the larger block decides which lengths both take (32 divides 256). */
    const moe_dtype block =
        moe_dtype_block_size(src_dtype) >= moe_dtype_block_size(dst_dtype) ? src_dtype : dst_dtype;
    if (n <= 0 || n > MOE_MAX_DIM || moe_dtype_row_bytes(block, n) == 0)
        return moe_fail(
            NULL, MOE_ERROR_INVALID_SIZE,
            "moe_convert_row: a row of %lld values; %s needs a positive multiple of %lld (at most "
            "%d)",
            (long long)n, moe_dtype_name(block), (long long)moe_dtype_block_size(block), MOE_MAX_DIM);
    moe_convert_row_unchecked(src_dtype, src, dst_dtype, dst, n);
    return MOE_OK;
}

/* ---- matrices ---------------------------------------------------------------------------- */

static const unsigned char *row_ptr(const moe_matrix_src *m, int64_t cols, int64_t r)
{
    return (const unsigned char *)m->data + (size_t)r * moe_dtype_row_bytes(m->dtype, cols);
}

/* Blocks [b0, b0 + n) of row r of a Hugging Face MXFP4 source (moe_matrix_src.hf_scales) as
 * ggml's 17-byte blocks: ggml's byte j holds value j (low nibble) and j + 16 (high); HF's byte
 * i values 2i (low) and 2i + 1 (high). The scale byte is the same (HF's FP4 table is half
 * ggml's kv and its exponent bias 127 rather than 128: the same values). */
static void hf_mxfp4_blocks(const moe_matrix_src *m, int64_t cols, int64_t r, int64_t b0, int64_t n,
                            unsigned char *out)
{
    const int64_t nb = cols / MOE_BLOCK_SIZE, src_row = r * m->hf_row_step;
    const unsigned char *q = (const unsigned char *)m->data + (size_t)(src_row * nb) * 16;
    for (int64_t b = b0; b < b0 + n; b++, out += 17) {
        const unsigned char *s = q + (size_t)b * 16;
        out[0] = m->hf_scales[src_row * nb + b];
        for (int j = 0; j < 16; j++) {
            const int sh = (j & 1) * 4; /* value j: HF byte j / 2; value j + 16: byte 8 + j / 2 */
            out[1 + j] = (unsigned char)(((s[j / 2] >> sh) & 15) | (((s[8 + j / 2] >> sh) & 15) << 4));
        }
    }
}

void moe_matrix_row_as(const moe_matrix_src *m, int64_t cols, int64_t r, moe_dtype dtype, void *out)
{
    if (!m->hf_scales) {
        moe_convert_row_unchecked(m->dtype, row_ptr(m, cols, r), dtype, out, cols);
        return;
    }
    if (dtype == MOE_DTYPE_MXFP4) {
        hf_mxfp4_blocks(m, cols, r, 0, cols / MOE_BLOCK_SIZE, out);
        return;
    }
    /* Another format: a super-block's worth at a time through the stack (every format's block
     * divides 256, and a K-quant's rows are whole super-blocks). */
    unsigned char blocks[(MOE_SUPER_BLOCK_SIZE / MOE_BLOCK_SIZE) * 17];
    for (int64_t c = 0; c < cols; c += MOE_SUPER_BLOCK_SIZE) {
        const int64_t n = cols - c < MOE_SUPER_BLOCK_SIZE ? cols - c : MOE_SUPER_BLOCK_SIZE;
        hf_mxfp4_blocks(m, cols, r, c / MOE_BLOCK_SIZE, n / MOE_BLOCK_SIZE, blocks);
        moe_convert_row_unchecked(MOE_DTYPE_MXFP4, blocks, dtype,
                                  (unsigned char *)out + moe_dtype_row_bytes(dtype, c), n);
    }
}

void moe_matrix_row(const moe_matrix_src *m, int64_t cols, int64_t r, float *out)
{
    moe_matrix_row_as(m, cols, r, MOE_DTYPE_F32, out);
}

/* ---- the GPU backends' weight layout (backend.h) ------------------------------------------- */

size_t moe_weight_rows_bytes(const moe_weight_src *s)
{
    return moe_dtype_row_bytes(s->dtype, s->cols) * (size_t)s->batch * (s->second ? 2u : 1u) *
           (size_t)s->rows;
}

/* Rows [i0, i1) of a tensor in the GPU layout, converted to `out` one after another. */
typedef struct rows_job {
    const moe_weight_src *s;
    int64_t i0, i1;
    size_t row_bytes;
    unsigned char *out;
} rows_job;

static void *convert_rows(void *arg)
{
    const rows_job *j = arg;
    const moe_weight_src *s = j->s;
    const int halves = s->second ? 2 : 1;
    for (int64_t i = j->i0; i < j->i1; i++) {
        const int64_t matrix = i / s->rows, r = i % s->rows, e = matrix / halves;
        const moe_matrix_src *m = matrix % halves ? &s->second[e] : &s->first[e];
        moe_matrix_row_as(m, s->cols, r, s->dtype, j->out + (size_t)(i - j->i0) * j->row_bytes);
    }
    return NULL;
}

/* A helper thread converts at least this many bytes of output (fewer: not worth its start). */
#define ROWS_PER_THREAD_BYTES ((size_t)256 << 10)
#define MAX_UPLOAD_THREADS    64

moe_status moe_weight_rows_stream(moe_context *ctx, const char *who, const moe_weight_src *s, void *staging,
                                  size_t staging_size, moe_weight_flush_fn flush, void *user)
{
    const size_t row_bytes = moe_dtype_row_bytes(s->dtype, s->cols);
    if (row_bytes == 0 || row_bytes > staging_size)
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                        "%s: a weight row of %lld values in %s does not fit the %zu-byte staging buffer", who,
                        (long long)s->cols, moe_dtype_name(s->dtype), staging_size);
    const int64_t total = s->batch * (s->second ? 2 : 1) * s->rows;
    const int64_t per_buffer = (int64_t)(staging_size / row_bytes);
    const int threads = ctx->host_threads < 1                    ? 1
                        : ctx->host_threads > MAX_UPLOAD_THREADS ? MAX_UPLOAD_THREADS
                                                                 : ctx->host_threads;
    size_t at = 0;
    for (int64_t i0 = 0; i0 < total; i0 += per_buffer) {
        const int64_t n = total - i0 < per_buffer ? total - i0 : per_buffer;
        /* The staging buffer's rows in `parts` contiguous runs, the calling thread taking the
         * first; a helper that cannot start leaves its run to the calling thread. */
        int64_t parts = (int64_t)((size_t)n * row_bytes / ROWS_PER_THREAD_BYTES);
        parts = parts < 1 ? 1 : parts > threads ? threads : parts;
        rows_job jobs[MAX_UPLOAD_THREADS];
        moe_thread helper[MAX_UPLOAD_THREADS];
        bool started[MAX_UPLOAD_THREADS] = {false};
        for (int64_t p = 0; p < parts; p++) {
            const int64_t a = i0 + n * p / parts, b = i0 + n * (p + 1) / parts;
            jobs[p] = (rows_job){s, a, b, row_bytes, (unsigned char *)staging + (size_t)(a - i0) * row_bytes};
            if (p > 0) started[p] = moe_thread_create(&helper[p], convert_rows, &jobs[p]) == 0;
        }
        convert_rows(&jobs[0]);
        for (int64_t p = 1; p < parts; p++) {
            if (started[p])
                moe_thread_join(helper[p]);
            else
                convert_rows(&jobs[p]);
        }
        const moe_status st = flush(user, at, (size_t)n * row_bytes);
        if (st != MOE_OK) return st;
        at += (size_t)n * row_bytes;
    }
    return MOE_OK;
}

/* ---- device features the formats' kernels use ---------------------------------------------- */

const char *moe_feature_name(moe_feature feature)
{
    static const struct {
        moe_feature bit;
        const char *name;
    } names[] = {
        {MOE_FEATURE_F16C, "f16c"},
        {MOE_FEATURE_AVX512_BF16, "avx512_bf16"},
        {MOE_FEATURE_AVX512_VNNI, "avx512_vnni"},
        {MOE_FEATURE_AVX_VNNI, "avx_vnni"},
        {MOE_FEATURE_STORAGE_16BIT, "storage_16bit"},
        {MOE_FEATURE_STORAGE_8BIT, "storage_8bit"},
        {MOE_FEATURE_FLOAT16, "float16"},
        {MOE_FEATURE_INT_DOT, "int_dot"},
        {MOE_FEATURE_SUBGROUP_REDUCE, "subgroup_reduce"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].bit == feature) return names[i].name;
    return NULL;
}
