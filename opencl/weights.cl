// weights.cl — reading weights stored in their format (kernels/weight_format.h), included after
// the kernel's description (WTYPE is a -D option); the same definitions as shaders/weights.glsl.
// A matrix is addressed by byte offsets (size_t: a layer's weights may exceed 4 GiB in one
// cl_mem) from `wb`, the start of the w argument (4-byte aligned). Rows, blocks and matrices
// start at even offsets but not always at multiples of 4 (an F16 row of odd length, every other
// Q8_0/Q4_0 block), so 16-bit values are read through ushort pointers and 32 bits as two of
// them, and halves are converted in integer operations (w_half; the GEMM's single values with
// vload_half, core OpenCL C): no cl_khr_fp16, no unaligned access.

// The 16 bits at even offset `off`.
uint w_u16(__global const uchar *wb, size_t off)
{
    return *(__global const ushort *)(wb + off);
}

// The 32 bits at even offset `off`, little-endian (every GPU; the host writes the format's bytes).
uint w_u32(__global const uchar *wb, size_t off)
{
    const ushort2 h = vload2(0, (__global const ushort *)(wb + off));
    return (uint)h.x | ((uint)h.y << 16);
}

// IEEE binary16 bits → float, exactly, in integer operations and selects (no branch: a CPU
// driver vectorises it across work-items; on PoCL this form decodes F16 rows faster than
// vload_half2): a normal number rebiased (exponent + 112), a subnormal as m · 2^-24 (exact, and
// no denormal float that a device may flush), inf and NaN rebiased once more to exponent 255.
float w_half(uint h)
{
    const uint x = (h & 0x7fffu) << 13, e = h & 0x7c00u;
    uint r = x + 0x38000000u;
    r = e == 0u ? as_uint((float)(int)(h & 0x3ffu) * 5.9604644775390625e-8f) : r;
    r = e == 0x7c00u ? x + 0x70000000u : r;
    return as_float(r | ((h & 0x8000u) << 16));
}

float w_bf16(uint bits)
{
    return as_float(bits << 16);
}

#define W_BLOCK_BYTES (WTYPE == MOE_WTYPE_Q8_0 ? MOE_WBLOCK_BYTES_Q8_0 : MOE_WBLOCK_BYTES_Q4_0)

// ---- MXFP4: blocks of 32 E2M1 codes and an E8M0 scale byte (kernels/weight_format.h) ----
// A block may start at any byte (17 bytes a block): read as bytes (vload4 of uchar needs no
// alignment).
#if WTYPE == MOE_WTYPE_MXFP4
__constant float W_MXFP4[16] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 6.0f, 8.0f, 12.0f,
                                0.0f, -1.0f, -2.0f, -3.0f, -4.0f, -6.0f, -8.0f, -12.0f};

// The scale byte e as 2^(e − 128) (e = 0, 1: the subnormals 2^-128, 2^-127; see weights.glsl).
float w_e8m0_half(uint e)
{
    return as_float(e < 2u ? 0x00200000u << e : (e - 1u) << 23);
}
#endif

// ---- K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): super-blocks of 256 values (kernels/weight_format.h) ----
#define W_KQUANT                                                                                             \
    (WTYPE == MOE_WTYPE_Q2_K || WTYPE == MOE_WTYPE_Q3_K || WTYPE == MOE_WTYPE_Q4_K ||                        \
     WTYPE == MOE_WTYPE_Q5_K || WTYPE == MOE_WTYPE_Q6_K)
#if W_KQUANT
#define W_KBYTES                                                                                             \
    (WTYPE == MOE_WTYPE_Q2_K   ? MOE_WBLOCK_BYTES_Q2_K                                                       \
     : WTYPE == MOE_WTYPE_Q3_K ? MOE_WBLOCK_BYTES_Q3_K                                                       \
     : WTYPE == MOE_WTYPE_Q4_K ? MOE_WBLOCK_BYTES_Q4_K                                                       \
     : WTYPE == MOE_WTYPE_Q5_K ? MOE_WBLOCK_BYTES_Q5_K                                                       \
                               : MOE_WBLOCK_BYTES_Q6_K)
#define W_KQS (WTYPE == MOE_WTYPE_Q5_K ? 48 : 16) // Q4_K / Q5_K: the nibbles' offset

// Scale (x) and min (y) of sub-block j (0..7) of the Q4_K / Q5_K super-block at `blk`: ggml's
// 6-bit packing of its 12 bytes at blk + 4 (as shaders/weights.glsl's w_kq_scale_min).
float2 w_kq_scale_min(__global const uchar *wb, size_t blk, int j)
{
    __global const uchar *s = wb + blk + 4;
    if (j < 4) return (float2)((float)(s[j] & 63), (float)(s[j + 4] & 63));
    return (float2)((float)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)), (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4)));
}

// Q6_K's int8 scale j of the super-block at `blk`.
float w_q6_scale(__global const uchar *wb, size_t blk, int j)
{
    return (float)as_char(wb[blk + 192 + j]);
}

// Q3_K's scale j of the super-block at `blk`, less 32: 6 bits from its 12 bytes at blk + 96 (as
// shaders/weights.glsl's w_q3_scale).
float w_q3_scale(__global const uchar *wb, size_t blk, int j)
{
    __global const uchar *s = wb + blk + 96;
    const int low = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    return (float)((low | (((s[8 + (j & 3)] >> (2 * (j >> 2))) & 3) << 4)) - 32);
}

// Scale (x) and min (y) of Q2_K's sub-block j (0..15) of the super-block at `blk`: the nibbles of
// byte j (as shaders/weights.glsl's w_q2_scale_min).
float2 w_q2_scale_min(__global const uchar *wb, size_t blk, int j)
{
    const uint b = wb[blk + j];
    return (float2)((float)(b & 15u), (float)(b >> 4));
}

// Value i (0..255) of the K-quant super-block at `blk`: ggml's formula (see weights.glsl).
float w_kq_value(__global const uchar *wb, size_t blk, int i)
{
#if WTYPE == MOE_WTYPE_Q2_K // qs byte 32n + l, bits 2j (Q3_K's low bits, at 16); scale byte i / 16
    const int n = i >> 7, j = (i >> 5) & 3, l = i & 31;
    const uint q = (wb[blk + 16 + 32 * n + l] >> (2 * j)) & 3u;
    const float2 sm = w_q2_scale_min(wb, blk, i >> 4);
    return w_half(w_u16(wb, blk + 80)) * sm.x * (float)q - w_half(w_u16(wb, blk + 82)) * sm.y;
#elif WTYPE == MOE_WTYPE_Q3_K // qs byte 32n + l, bits 2j; hmask byte l, bit 4n + j
    const int n = i >> 7, j = (i >> 5) & 3, l = i & 31;
    const uint q = ((wb[blk + 32 + 32 * n + l] >> (2 * j)) & 3u) | (((wb[blk + l] >> (4 * n + j)) & 1u) << 2);
    return w_half(w_u16(wb, blk + 108)) * w_q3_scale(wb, blk, i >> 4) * (float)((int)q - 4);
#elif WTYPE == MOE_WTYPE_Q6_K // ql byte 64n + 32(g & 1) + l, qh byte 32n + l, bits 2g
    const int n = i >> 7, g = (i >> 5) & 3, l = i & 31;
    const uint b = wb[blk + 64 * n + 32 * (g & 1) + l];
    const uint q = ((g >= 2 ? b >> 4 : b) & 15u) | (((wb[blk + 128 + 32 * n + l] >> (2 * g)) & 3u) << 4);
    return w_half(w_u16(wb, blk + 208)) * w_q6_scale(wb, blk, i >> 4) * (float)((int)q - 32);
#else
    const int c = i >> 6, h = (i >> 5) & 1, l = i & 31; // byte 32c + l, the high nibble for h
    const uint b = wb[blk + W_KQS + 32 * c + l];
    uint q = h ? b >> 4 : b & 15u;
#if WTYPE == MOE_WTYPE_Q5_K
    q |= ((wb[blk + 16 + l] >> (2 * c + h)) & 1u) << 4;
#endif
    const float2 sm = w_kq_scale_min(wb, blk, i >> 5);
    return w_half(w_u16(wb, blk)) * sm.x * (float)q - w_half(w_u16(wb, blk + 2)) * sm.y;
#endif
}
#endif

// Value k of the row at offset `row`, as a float (exact for Q8_0 / Q4_0: an fp16 scale times a
// small integer fits float's mantissa; a K-quant's d·sc·q − dmin·m rounds once, or not at all
// where the compiler fuses it). The GEMM reads its tiles with it.
float w_value(__global const uchar *wb, size_t row, int k)
{
#if WTYPE == MOE_WTYPE_F32
    return ((__global const float *)(wb + row))[k]; // F32 rows are 4-byte aligned
#elif WTYPE == MOE_WTYPE_F16
    return vload_half(k, (__global const half *)(wb + row));
#elif WTYPE == MOE_WTYPE_BF16
    return w_bf16(w_u16(wb, row + 2 * (size_t)k));
#elif W_KQUANT
    return w_kq_value(wb, row + (size_t)(k >> 8) * W_KBYTES, k & 255);
#elif WTYPE == MOE_WTYPE_MXFP4
    const size_t blk = row + (size_t)(k >> 5) * MOE_WBLOCK_BYTES_MXFP4;
    const int j = k & 31; // value j + 16: the high nibble of code byte j
    return W_MXFP4[(wb[blk + 1 + (j & 15)] >> ((j >> 4) << 2)) & 15] * w_e8m0_half(wb[blk]);
#else
    const size_t blk = row + (size_t)(k >> 5) * W_BLOCK_BYTES;
    const float d = w_half(w_u16(wb, blk));
    const int j = k & 31;
#if WTYPE == MOE_WTYPE_Q8_0
    return (float)as_char(wb[blk + 2 + j]) * d; // int8
#else
    const int q = (wb[blk + 2 + (j & 15)] >> ((j >> 4) << 2)) & 15; // value j + 16: high nibble of byte j
    return (float)(q - 8) * d;
#endif
#endif
}

// ---- the decode kernel's unit: one 32-bit word of a row's payload per work-item and step ----
// As in shaders/weights.glsl: F32 unit u = value u; F16/BF16 = aligned word u of the row's
// span, values 2u − s and 2u + 1 − s (s = 1 when the row starts 2 mod 4), activations
// 2u − 1 .. 2u + 1; Q8_0 = int8 values 4u .. 4u + 3; Q4_0 (and MXFP4) = 4 bytes of a block, values
// k .. k + 3 and k + 16 .. k + 19; K-quants = 4 bytes of a super-block's nibbles (Q3_K's and
// Q2_K's 2-bit pairs), 4 low values and the 4 high ones (the layout is in weights.glsl). W_UNIT
// activation values per unit, W_UNITS units per row.
#define W_HALVES (WTYPE == MOE_WTYPE_F16 || WTYPE == MOE_WTYPE_BF16)
#if WTYPE == MOE_WTYPE_F32
#define W_UNIT  1
#define W_UNITS K_DIM
#elif WTYPE == MOE_WTYPE_Q8_0
#define W_UNIT  4
#define W_UNITS (K_DIM / 4)
#elif WTYPE == MOE_WTYPE_Q4_0 || WTYPE == MOE_WTYPE_MXFP4 || W_KQUANT
#define W_UNIT  8
#define W_UNITS (K_DIM / 8)
#else
#define W_UNIT  3
#define W_UNITS (K_DIM / 2 + 1)
#endif

// k of activation value i of unit u (may be -1 or K_DIM for F16/BF16: no value).
int w_unit_k(int u, int i)
{
#if WTYPE == MOE_WTYPE_Q4_0 || WTYPE == MOE_WTYPE_MXFP4
    return (u >> 2) * 32 + (u & 3) * 4 + (i & 3) + (i >> 2) * 16;
#elif WTYPE == MOE_WTYPE_Q6_K || WTYPE == MOE_WTYPE_Q3_K || WTYPE == MOE_WTYPE_Q2_K
    const int w4 = u & 31;
    return (u >> 5) * 256 + (w4 >> 4) * 128 + ((w4 >> 3) & 1) * 32 + 4 * (w4 & 7) + (i & 3) + (i >> 2) * 64;
#elif W_KQUANT
    const int w4 = u & 31;
    return (u >> 5) * 256 + (w4 >> 3) * 64 + 4 * (w4 & 7) + (i & 3) + (i >> 2) * 32;
#elif W_HALVES
    return 2 * u - 1 + i;
#else
    return u * W_UNIT + i;
#endif
}

// Σ_i value i of unit u of the row at offset `row` · av[i], av[i] the activation at
// w_unit_k(u, i) (0 where there is none).
float w_unit_dot(__global const uchar *wb, size_t row, int u, const float *av)
{
#if WTYPE == MOE_WTYPE_F32
    return ((__global const float *)(wb + row))[u] * av[0];
#elif W_HALVES
    const uint s = (uint)(row >> 1) & 1u;
    const size_t off = (row & ~(size_t)3) + 4 * (size_t)u;
    if (off >= row + 2 * (size_t)K_DIM) return 0.0f; // past the row: not read
    const int k = 2 * u - (int)s;                     // of the low half
    const uint p = *(__global const uint *)(wb + off);
#if WTYPE == MOE_WTYPE_F16
    float lo = w_half(p & 0xffffu), hi = w_half(p >> 16);
#else
    float lo = w_bf16(p), hi = as_float(p & 0xffff0000u);
#endif
    // A half outside the row (the previous row's last value) counts 0 whatever its bits.
    lo = k >= 0 ? lo : 0.0f;
    hi = k + 1 < K_DIM ? hi : 0.0f;
    return s == 0u ? FMA(hi, av[2], lo * av[1]) : FMA(hi, av[1], lo * av[0]);
#elif WTYPE == MOE_WTYPE_Q2_K // Q3_K's units without the third bits: qs byte 32n + l bits 2g (+ 4)
    const int w4 = u & 31, n = w4 >> 4, g = (w4 >> 3) & 1, l = 4 * (w4 & 7);
    const size_t blk = row + (size_t)(u >> 5) * W_KBYTES;
    const int4 qs = convert_int4(vload4(0, wb + blk + 16 + 32 * n + l));
    const float4 lo = convert_float4((qs >> (2 * g)) & 3);
    const float4 hi = convert_float4((qs >> (2 * g + 4)) & 3);
    const float slo = FMA(lo.w, av[3], FMA(lo.z, av[2], FMA(lo.y, av[1], lo.x * av[0])));
    const float shi = FMA(hi.w, av[7], FMA(hi.z, av[6], FMA(hi.y, av[5], hi.x * av[4])));
    const float alo = av[0] + av[1] + av[2] + av[3], ahi = av[4] + av[5] + av[6] + av[7];
    // As Q4_K's: d·(sc·Σ q·a) − dmin·(m·Σ a), per sub-block.
    const int j = 8 * n + 2 * g + ((w4 & 7) >> 2); // the low values' sub-block; the high: j + 4
    const float2 sl = w_q2_scale_min(wb, blk, j), sh = w_q2_scale_min(wb, blk, j + 4);
    return w_half(w_u16(wb, blk + 80)) * FMA(sl.x, slo, sh.x * shi) - w_half(w_u16(wb, blk + 82)) * FMA(sl.y, alo, sh.y * ahi);
#elif WTYPE == MOE_WTYPE_Q3_K // Q6_K's units: qs byte 32n + l bits 2g (+ 4), hmask byte l bits 4n + g (+ 2)
    const int w4 = u & 31, n = w4 >> 4, g = (w4 >> 3) & 1, l = 4 * (w4 & 7);
    const size_t blk = row + (size_t)(u >> 5) * W_KBYTES;
    const int4 qs = convert_int4(vload4(0, wb + blk + 32 + 32 * n + l));
    const int4 hm = convert_int4(vload4(0, wb + blk + l));
    const float4 lo = convert_float4((((qs >> (2 * g)) & 3) | (((hm >> (4 * n + g)) & 1) << 2)) - 4);
    const float4 hi = convert_float4((((qs >> (2 * g + 4)) & 3) | (((hm >> (4 * n + g + 2)) & 1) << 2)) - 4);
    const float slo = FMA(lo.w, av[3], FMA(lo.z, av[2], FMA(lo.y, av[1], lo.x * av[0])));
    const float shi = FMA(hi.w, av[7], FMA(hi.z, av[6], FMA(hi.y, av[5], hi.x * av[4])));
    const int j = 8 * n + 2 * g + ((w4 & 7) >> 2); // the low values' scale; the high: j + 4
    return w_half(w_u16(wb, blk + 108)) * FMA(w_q3_scale(wb, blk, j), slo, w_q3_scale(wb, blk, j + 4) * shi);
#elif WTYPE == MOE_WTYPE_Q6_K
    const int w4 = u & 31, n = w4 >> 4, g = (w4 >> 3) & 1, l = 4 * (w4 & 7);
    const size_t blk = row + (size_t)(u >> 5) * W_KBYTES;
    const int4 ql = convert_int4(vload4(0, wb + blk + 64 * n + 32 * g + l));
    const int4 qh = convert_int4(vload4(0, wb + blk + 128 + 32 * n + l));
    const float4 lo = convert_float4(((ql & 15) | (((qh >> (2 * g)) & 3) << 4)) - 32);
    const float4 hi = convert_float4(((ql >> 4) | (((qh >> (2 * g + 4)) & 3) << 4)) - 32);
    const float slo = FMA(lo.w, av[3], FMA(lo.z, av[2], FMA(lo.y, av[1], lo.x * av[0])));
    const float shi = FMA(hi.w, av[7], FMA(hi.z, av[6], FMA(hi.y, av[5], hi.x * av[4])));
    const int j = 8 * n + 2 * g + ((w4 & 7) >> 2); // the low values' scale; the high: j + 4
    return w_half(w_u16(wb, blk + 208)) * FMA(w_q6_scale(wb, blk, j), slo, w_q6_scale(wb, blk, j + 4) * shi);
#elif W_KQUANT
    const int w4 = u & 31, c = w4 >> 3, l = 4 * (w4 & 7);
    const size_t blk = row + (size_t)(u >> 5) * W_KBYTES;
    const int4 qs = convert_int4(vload4(0, wb + blk + W_KQS + 32 * c + l));
#if WTYPE == MOE_WTYPE_Q5_K
    const int4 qh = convert_int4(vload4(0, wb + blk + 16 + l));
#else
    const int4 qh = (int4)(0);
#endif
    const float4 lo = convert_float4((qs & 15) | (((qh >> (2 * c)) & 1) << 4));
    const float4 hi = convert_float4((qs >> 4) | (((qh >> (2 * c + 1)) & 1) << 4));
    const float slo = FMA(lo.w, av[3], FMA(lo.z, av[2], FMA(lo.y, av[1], lo.x * av[0])));
    const float shi = FMA(hi.w, av[7], FMA(hi.z, av[6], FMA(hi.y, av[5], hi.x * av[4])));
    const float alo = av[0] + av[1] + av[2] + av[3], ahi = av[4] + av[5] + av[6] + av[7];
    // Σ (d·sc·q − dmin·m)·a = d·(sc·Σ q·a) − dmin·(m·Σ a), per sub-block.
    const float2 sl = w_kq_scale_min(wb, blk, 2 * c), sh = w_kq_scale_min(wb, blk, 2 * c + 1);
    return w_half(w_u16(wb, blk)) * FMA(sl.x, slo, sh.x * shi) - w_half(w_u16(wb, blk + 2)) * FMA(sl.y, alo, sh.y * ahi);
#elif WTYPE == MOE_WTYPE_MXFP4
    const size_t blk = row + (size_t)(u >> 2) * MOE_WBLOCK_BYTES_MXFP4;
    const uchar4 b = vload4(0, wb + blk + 1 + 4 * (size_t)(u & 3));
    float s = FMA(W_MXFP4[b.w & 15], av[3], FMA(W_MXFP4[b.z & 15], av[2], FMA(W_MXFP4[b.y & 15], av[1], W_MXFP4[b.x & 15] * av[0])));
    s = FMA(W_MXFP4[b.w >> 4], av[7], FMA(W_MXFP4[b.z >> 4], av[6], FMA(W_MXFP4[b.y >> 4], av[5], FMA(W_MXFP4[b.x >> 4], av[4], s))));
    return s * w_e8m0_half(wb[blk]);
#elif WTYPE == MOE_WTYPE_Q8_0
    const size_t blk = row + (size_t)(u >> 3) * MOE_WBLOCK_BYTES_Q8_0;
    const float4 q = convert_float4(vload4(0, (__global const char *)(wb + blk + 2 + 4 * (size_t)(u & 7))));
    const float s = FMA(q.w, av[3], FMA(q.z, av[2], FMA(q.y, av[1], q.x * av[0])));
    return s * w_half(w_u16(wb, blk));
#else
    const size_t blk = row + (size_t)(u >> 2) * MOE_WBLOCK_BYTES_Q4_0;
    const int4 b = convert_int4(vload4(0, (__global const uchar *)(wb + blk + 2 + 4 * (size_t)(u & 3))));
    const float4 lo = convert_float4((b & 15) - 8), hi = convert_float4((b >> 4) - 8);
    float s = FMA(lo.w, av[3], FMA(lo.z, av[2], FMA(lo.y, av[1], lo.x * av[0])));
    s = FMA(hi.w, av[7], FMA(hi.z, av[6], FMA(hi.y, av[5], FMA(hi.x, av[4], s))));
    return s * w_half(w_u16(wb, blk));
#endif
}
