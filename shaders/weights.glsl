// weights.glsl — reading weights stored in their format (kernels/weight_format.h) from the `w`
// binding, an array of 32-bit words, so that no 8/16-bit storage feature is needed. Included
// after the kernel's description, which declares `w` and the WTYPE constant; every branch on
// WTYPE folds away when the pipeline is specialised.
//
// Offsets are bytes from the start of the binding, in uint: a binding is at most
// maxStorageBufferRange (< 2^32) bytes, and every offset formed points inside it. They are
// even but not always multiples of 4 (an F16 row of odd length, every other Q8_0/Q4_0 block),
// so 16- and 32-bit reads shift within, or across, aligned words; MXFP4's (17-byte blocks) may
// be odd, and it reads bytes and w_u32_any only. A read never touches a
// word that holds none of the bytes asked for: the binding ends at the word holding its last
// byte.

// The 16 bits at even byte offset `off`.
uint w_u16(uint off)
{
    return (w[off >> 2] >> ((off & 2u) << 3)) & 0xffffu;
}

// The 32 bits at even byte offset `off`: the upper half of word i and the lower half of word
// i + 1 when it is 2 mod 4. Without a branch: neighbouring invocations read blocks of both
// parities (a Q8_0/Q4_0 block is 34/18 bytes), and a branch would run both paths for the whole
// subgroup. At an aligned offset the second read is word i again, so nothing past the bytes
// asked for is touched.
uint w_u32(uint off)
{
    const uint i = off >> 2, lo = w[i], hi = w[i + ((off >> 1) & 1u)];
    return (off & 2u) == 0u ? lo : (lo >> 16) | (hi << 16);
}

float w_half(uint bits)
{
    return unpackHalf2x16(bits).x;
}

float w_bf16(uint bits)
{
    return uintBitsToFloat(bits << 16);
}

// The byte at offset `off`.
uint w_u8(uint off)
{
    return (w[off >> 2] >> ((off & 3u) << 3)) & 0xffu;
}

// The 32 bits at any byte offset `off` (MXFP4's codes follow a 1-byte scale in 17-byte blocks):
// the top of word i and the bottom of word i + 1, or word i alone when aligned, without a
// branch; the second shift in two steps so that an aligned offset shifts by 32 nowhere.
uint w_u32_any(uint off)
{
    const uint i = off >> 2, sh = (off & 3u) << 3;
    const uint lo = w[i], hi = w[i + uint(sh != 0u)];
    return (lo >> sh) | ((hi << (31u - sh)) << 1u);
}

// ---- MXFP4: blocks of 32 E2M1 codes and an E8M0 scale byte (kernels/weight_format.h) ----
const float W_MXFP4[16] = float[16](0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0);

// The scale byte e as 2^(e − 128) (e = 0, 1: the subnormals 2^-128, 2^-127, which a device that
// flushes subnormals reads as 0; such a block's values are below 2^-124 anyway).
float w_e8m0_half(uint e)
{
    return uintBitsToFloat(e < 2u ? 0x00200000u << e : (e - 1u) << 23);
}

// ---- K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): super-blocks of 256 values (kernels/weight_format.h) ----
const bool W_KQUANT = WTYPE == MOE_WTYPE_Q2_K || WTYPE == MOE_WTYPE_Q3_K || WTYPE == MOE_WTYPE_Q4_K ||
                      WTYPE == MOE_WTYPE_Q5_K || WTYPE == MOE_WTYPE_Q6_K;
const uint W_KBYTES = WTYPE == MOE_WTYPE_Q2_K   ? uint(MOE_WBLOCK_BYTES_Q2_K)
                      : WTYPE == MOE_WTYPE_Q3_K ? uint(MOE_WBLOCK_BYTES_Q3_K)
                      : WTYPE == MOE_WTYPE_Q4_K ? uint(MOE_WBLOCK_BYTES_Q4_K)
                      : WTYPE == MOE_WTYPE_Q5_K ? uint(MOE_WBLOCK_BYTES_Q5_K)
                                                : uint(MOE_WBLOCK_BYTES_Q6_K);
const uint W_KQS = WTYPE == MOE_WTYPE_Q5_K ? 48u : 16u; // Q4_K / Q5_K: the nibbles' offset

// Scale (x) and min (y) of sub-block j (0..7) of the Q4_K / Q5_K super-block at `blk`: ggml's
// 6-bit packing of its 12 bytes at blk + 4 (j < 4: the low 6 bits of bytes j and j + 4; else
// byte j + 4's nibbles below the top 2 bits of bytes j − 4 and j).
vec2 w_kq_scale_min(uint blk, int j)
{
    const uint s = blk + 4u;
    if (j < 4) return vec2(float(w_u8(s + uint(j)) & 63u), float(w_u8(s + uint(j + 4)) & 63u));
    const uint a = w_u8(s + uint(j + 4));
    return vec2(float((a & 15u) | ((w_u8(s + uint(j - 4)) >> 6) << 4)),
                float((a >> 4) | ((w_u8(s + uint(j)) >> 6) << 4)));
}

// Q6_K's int8 scale j of the super-block at `blk`.
float w_q6_scale(uint blk, int j)
{
    return float(bitfieldExtract(int(w_u8(blk + 192u + uint(j))), 0, 8));
}

// Q3_K's scale j of the super-block at `blk`, less 32: its low 4 bits are the low nibble of
// byte j (j < 8) or the high one of byte j − 8 of the 12 at blk + 96, its top 2 bits those at
// 2(j / 4) of byte 8 + j % 4.
float w_q3_scale(uint blk, int j)
{
    const uint s = blk + 96u;
    const uint low = j < 8 ? w_u8(s + uint(j)) & 15u : w_u8(s + uint(j - 8)) >> 4;
    return float(int(low | (((w_u8(s + 8u + uint(j & 3)) >> (2 * (j >> 2))) & 3u) << 4)) - 32);
}

// Scale (x) and min (y) of Q2_K's sub-block j (0..15) of the super-block at `blk`: the low and
// high nibble of byte j (4 bits each, one byte a sub-block: no packing to undo, unlike Q4_K's).
vec2 w_q2_scale_min(uint blk, int j)
{
    const uint b = w_u8(blk + uint(j));
    return vec2(float(b & 15u), float(b >> 4));
}

// Value i (0..255) of the K-quant super-block at `blk`: ggml's formula (the compiler may fuse
// its last multiply-subtract, so not always ggml's last bit; the tests hold it to 1e-5).
float w_kq_value(uint blk, int i)
{
    if (WTYPE == MOE_WTYPE_Q2_K) { // qs byte 32n + l, bits 2j (Q3_K's low bits, at 16); scale byte i / 16
        const int n = i >> 7, j = (i >> 5) & 3, l = i & 31;
        const uint q = (w_u8(blk + 16u + uint(32 * n + l)) >> (2 * j)) & 3u;
        const vec2 sm = w_q2_scale_min(blk, i >> 4);
        return w_half(w_u16(blk + 80u)) * sm.x * float(q) - w_half(w_u16(blk + 82u)) * sm.y;
    }
    if (WTYPE == MOE_WTYPE_Q3_K) { // qs byte 32n + l, bits 2j; hmask byte l, bit 4n + j
        const int n = i >> 7, j = (i >> 5) & 3, l = i & 31;
        const uint q = ((w_u8(blk + 32u + uint(32 * n + l)) >> (2 * j)) & 3u) | (((w_u8(blk + uint(l)) >> (4 * n + j)) & 1u) << 2);
        return w_half(w_u16(blk + 108u)) * w_q3_scale(blk, i >> 4) * float(int(q) - 4);
    }
    if (WTYPE == MOE_WTYPE_Q6_K) { // ql byte 64n + 32(g & 1) + l, qh byte 32n + l, bits 2g
        const int n = i >> 7, g = (i >> 5) & 3, l = i & 31;
        const uint b = w_u8(blk + uint(64 * n + 32 * (g & 1) + l));
        const uint q = ((g >= 2 ? b >> 4 : b) & 15u) | (((w_u8(blk + 128u + uint(32 * n + l)) >> (2 * g)) & 3u) << 4);
        return w_half(w_u16(blk + 208u)) * w_q6_scale(blk, i >> 4) * float(int(q) - 32);
    }
    const int c = i >> 6, h = (i >> 5) & 1, l = i & 31; // byte 32c + l, the high nibble for h
    const uint b = w_u8(blk + W_KQS + uint(32 * c + l));
    uint q = h != 0 ? b >> 4 : b & 15u;
    if (WTYPE == MOE_WTYPE_Q5_K) q |= ((w_u8(blk + 16u + uint(l)) >> (2 * c + h)) & 1u) << 4;
    const vec2 sm = w_kq_scale_min(blk, i >> 5);
    return w_half(w_u16(blk)) * sm.x * float(q) - w_half(w_u16(blk + 2u)) * sm.y;
}

// Byte offset of the block holding value k of the row at byte `row` (block formats).
uint w_block(uint row, int k)
{
    return row + uint(k >> 5) * uint(WTYPE == MOE_WTYPE_Q8_0 ? MOE_WBLOCK_BYTES_Q8_0 : MOE_WBLOCK_BYTES_Q4_0);
}

// Value k of the row that starts at byte `row`, as a float (exact for Q8_0 / Q4_0: an fp16 scale
// times a small integer fits float32's mantissa; a K-quant's d·sc·q − dmin·m rounds once, or
// not at all where the compiler fuses it). The GEMM reads its tiles with it.
float w_value(uint row, int k)
{
    if (WTYPE == MOE_WTYPE_F32) return uintBitsToFloat(w[(row >> 2) + uint(k)]); // rows 4-aligned
    if (WTYPE == MOE_WTYPE_F16) return w_half(w_u16(row + 2u * uint(k)));
    if (WTYPE == MOE_WTYPE_BF16) return w_bf16(w_u16(row + 2u * uint(k)));
    if (W_KQUANT) return w_kq_value(row + uint(k >> 8) * W_KBYTES, k & 255);
    if (WTYPE == MOE_WTYPE_MXFP4) { // value j + 16 is the high nibble of code byte j, as Q4_0's
        const uint blk = row + uint(k >> 5) * uint(MOE_WBLOCK_BYTES_MXFP4);
        const int j = k & 31;
        return W_MXFP4[(w_u8(blk + 1u + uint(j & 15)) >> ((j >> 4) << 2)) & 15u] * w_e8m0_half(w_u8(blk));
    }
    const uint blk = w_block(row, k);
    const float d = w_half(w_u16(blk));
    const int j = k & 31;
    if (WTYPE == MOE_WTYPE_Q8_0) {
        const uint off = blk + 2u + uint(j);
        return float(bitfieldExtract(int(w[off >> 2]), int((off & 3u) << 3), 8)) * d; // int8
    }
    const uint off = blk + 2u + uint(j & 15); // Q4_0: value j + 16 is the high nibble of byte j
    const int q = int(bitfieldExtract(w[off >> 2], int((off & 3u) << 3) + ((j >> 4) << 2), 4));
    return float(q - 8) * d;
}

// ---- the decode kernel's unit: one 32-bit word of a row's payload per invocation and step ----
// Consecutive units are consecutive words (coalesced reads).
//   F32        unit u = value u.
//   F16, BF16  unit u = aligned word u of the row's span (the row start rounded down to 4
//              bytes): values 2u − s and 2u + 1 − s, s = 1 when the row starts 2 mod 4 (an odd
//              K makes every other row do so). One read per two values; the activation values
//              2u − 1 .. 2u + 1 serve both parities, so every row of a workgroup shares them.
//   Q8_0       unit u = int8 values 4u .. 4u + 3 (8 units a block, sharing its scale).
//   Q4_0       unit u = 4 bytes of a block = values k .. k + 3 and k + 16 .. k + 19 (4 a block).
//   MXFP4      as Q4_0, the 4 bytes at any byte offset (17-byte blocks): read by w_u32_any.
//   K-quants   unit u = 4 bytes of super-block u / 32's nibbles (32 a super-block), word w = u % 32
//              = 4 low values and the 4 high ones of the same bytes (Q4_K/Q5_K: k = 64c + l ..
//              + 3 and + 32, c = w / 8, l = 4(w % 8); Q6_K, Q3_K and Q2_K: k = 128n + 32g + l .. + 3
//              and + 64, n = w / 16, g = (w / 8) % 2), each four in one sub-block, so a unit needs
//              two scales (and mins). The fifth bits (Q5_K), high pairs (Q6_K) or third bits (Q3_K)
//              of those 4 values are one more word; Q3_K's and Q2_K's word of 2-bit pairs serves two
//              units (g = 0, 1).
// The blocks are 34 / 18 / 110 / 210 bytes, so neighbouring units see both parities: read by w_u32.
const bool W_HALVES = WTYPE == MOE_WTYPE_F16 || WTYPE == MOE_WTYPE_BF16;
// Activation values per unit, and units per row (F16/BF16: the span may be one word longer).
const int W_UNIT = WTYPE == MOE_WTYPE_F32 ? 1 : WTYPE == MOE_WTYPE_Q8_0 ? 4 : W_HALVES ? 3 : 8;
const int W_UNITS = WTYPE == MOE_WTYPE_F32 ? K_DIM : WTYPE == MOE_WTYPE_Q8_0 ? K_DIM / 4 : W_HALVES ? K_DIM / 2 + 1 : K_DIM / 8;

// k of activation value i of unit u (i < W_UNIT; may be -1 or K_DIM for F16/BF16: no value).
int w_unit_k(int u, int i)
{
    if (WTYPE == MOE_WTYPE_Q4_0 || WTYPE == MOE_WTYPE_MXFP4) return (u >> 2) * 32 + (u & 3) * 4 + (i & 3) + (i >> 2) * 16;
    if (WTYPE == MOE_WTYPE_Q6_K || WTYPE == MOE_WTYPE_Q3_K || WTYPE == MOE_WTYPE_Q2_K) {
        const int w4 = u & 31;
        return (u >> 5) * 256 + (w4 >> 4) * 128 + ((w4 >> 3) & 1) * 32 + 4 * (w4 & 7) + (i & 3) + (i >> 2) * 64;
    }
    if (W_KQUANT) {
        const int w4 = u & 31;
        return (u >> 5) * 256 + (w4 >> 3) * 64 + 4 * (w4 & 7) + (i & 3) + (i >> 2) * 32;
    }
    if (W_HALVES) return 2 * u - 1 + i;
    return u * W_UNIT + i;
}

// Σ_i value i of unit u of the row at byte `row` · av[i], av[i] the activation at w_unit_k(u, i)
// (0 where there is none).
float w_unit_dot(uint row, int u, float av[8])
{
    if (WTYPE == MOE_WTYPE_F32) return uintBitsToFloat(w[(row >> 2) + uint(u)]) * av[0];
    if (W_HALVES) {
        const uint s = (row >> 1) & 1u, off = (row & ~3u) + 4u * uint(u);
        if (off >= row + 2u * uint(K_DIM)) return 0.0; // past the row: not read
        const uint p = w[off >> 2];
        const int k = 2 * u - int(s); // of the low half
        float lo, hi;
        if (WTYPE == MOE_WTYPE_F16) {
            const vec2 v = unpackHalf2x16(p);
            lo = v.x;
            hi = v.y;
        } else {
            lo = w_bf16(p);
            hi = uintBitsToFloat(p & 0xffff0000u);
        }
        // A half outside the row (the previous row's last value, or bytes ahead of w_start)
        // counts 0 whatever its bits: 0 · inf would be NaN.
        lo = k >= 0 ? lo : 0.0;
        hi = k + 1 < K_DIM ? hi : 0.0;
        return s == 0u ? fma(hi, av[2], lo * av[1]) : fma(hi, av[1], lo * av[0]);
    }
    if (WTYPE == MOE_WTYPE_Q2_K) { // Q3_K's units without the third bits: qs byte 32n + l bits 2g (+ 4)
        const int w4 = u & 31, n = w4 >> 4, g = (w4 >> 3) & 1, l = 4 * (w4 & 7);
        const uint blk = row + uint(u >> 5) * W_KBYTES;
        const uint qs = w_u32(blk + 16u + uint(32 * n + l));
        float lo = 0.0, hi = 0.0, alo = 0.0, ahi = 0.0;
        for (int b = 0; b < 4; b++) {
            const uint q_b = bitfieldExtract(qs, 8 * b, 8);
            lo = fma(float((q_b >> (2 * g)) & 3u), av[b], lo);
            hi = fma(float((q_b >> (2 * g + 4)) & 3u), av[4 + b], hi);
            alo += av[b];
            ahi += av[4 + b];
        }
        // As Q4_K's: d·(sc·Σ q·a) − dmin·(m·Σ a), per sub-block.
        const int j = 8 * n + 2 * g + ((w4 & 7) >> 2); // the low values' sub-block; the high: j + 4
        const vec2 sl = w_q2_scale_min(blk, j), sh = w_q2_scale_min(blk, j + 4);
        return w_half(w_u16(blk + 80u)) * fma(sl.x, lo, sh.x * hi) - w_half(w_u16(blk + 82u)) * fma(sl.y, alo, sh.y * ahi);
    }
    if (WTYPE == MOE_WTYPE_Q3_K) { // Q6_K's units: qs byte 32n + l bits 2g (+ 4), hmask byte l bits 4n + g (+ 2)
        const int w4 = u & 31, n = w4 >> 4, g = (w4 >> 3) & 1, l = 4 * (w4 & 7);
        const uint blk = row + uint(u >> 5) * W_KBYTES;
        const uint qs = w_u32(blk + 32u + uint(32 * n + l)), hm = w_u32(blk + uint(l));
        float lo = 0.0, hi = 0.0;
        for (int b = 0; b < 4; b++) {
            const uint q_b = bitfieldExtract(qs, 8 * b, 8), h_b = bitfieldExtract(hm, 8 * b, 8);
            lo = fma(float(int(((q_b >> (2 * g)) & 3u) | (((h_b >> (4 * n + g)) & 1u) << 2)) - 4), av[b], lo);
            hi = fma(float(int(((q_b >> (2 * g + 4)) & 3u) | (((h_b >> (4 * n + g + 2)) & 1u) << 2)) - 4), av[4 + b], hi);
        }
        const int j = 8 * n + 2 * g + ((w4 & 7) >> 2); // the low values' scale; the high: j + 4
        return w_half(w_u16(blk + 108u)) * fma(w_q3_scale(blk, j), lo, w_q3_scale(blk, j + 4) * hi);
    }
    if (WTYPE == MOE_WTYPE_Q6_K) {
        const int w4 = u & 31, n = w4 >> 4, g = (w4 >> 3) & 1, l = 4 * (w4 & 7);
        const uint blk = row + uint(u >> 5) * W_KBYTES;
        const uint ql = w_u32(blk + uint(64 * n + 32 * g + l)), qh = w_u32(blk + 128u + uint(32 * n + l));
        float lo = 0.0, hi = 0.0;
        for (int b = 0; b < 4; b++) {
            const uint ql_b = bitfieldExtract(ql, 8 * b, 8), qh_b = bitfieldExtract(qh, 8 * b, 8);
            lo = fma(float(int((ql_b & 15u) | (((qh_b >> (2 * g)) & 3u) << 4)) - 32), av[b], lo);
            hi = fma(float(int((ql_b >> 4) | (((qh_b >> (2 * g + 4)) & 3u) << 4)) - 32), av[4 + b], hi);
        }
        const int j = 8 * n + 2 * g + ((w4 & 7) >> 2); // the low values' scale; the high: j + 4
        return w_half(w_u16(blk + 208u)) * fma(w_q6_scale(blk, j), lo, w_q6_scale(blk, j + 4) * hi);
    }
    if (W_KQUANT) {
        const int w4 = u & 31, c = w4 >> 3, l = 4 * (w4 & 7);
        const uint blk = row + uint(u >> 5) * W_KBYTES;
        const uint qs = w_u32(blk + W_KQS + uint(32 * c + l));
        const uint qh = WTYPE == MOE_WTYPE_Q5_K ? w_u32(blk + 16u + uint(l)) : 0u;
        float lo = 0.0, hi = 0.0, alo = 0.0, ahi = 0.0;
        for (int b = 0; b < 4; b++) {
            const uint q_b = bitfieldExtract(qs, 8 * b, 8), h_b = bitfieldExtract(qh, 8 * b, 8);
            lo = fma(float((q_b & 15u) | (((h_b >> (2 * c)) & 1u) << 4)), av[b], lo);
            hi = fma(float((q_b >> 4) | (((h_b >> (2 * c + 1)) & 1u) << 4)), av[4 + b], hi);
            alo += av[b];
            ahi += av[4 + b];
        }
        // Σ (d·sc·q − dmin·m)·a = d·(sc·Σ q·a) − dmin·(m·Σ a), per sub-block.
        const vec2 sl = w_kq_scale_min(blk, 2 * c), sh = w_kq_scale_min(blk, 2 * c + 1);
        return w_half(w_u16(blk)) * fma(sl.x, lo, sh.x * hi) - w_half(w_u16(blk + 2u)) * fma(sl.y, alo, sh.y * ahi);
    }
    if (WTYPE == MOE_WTYPE_MXFP4) {
        const uint blk = row + uint(u >> 2) * uint(MOE_WBLOCK_BYTES_MXFP4);
        const uint q = w_u32_any(blk + 1u + 4u * uint(u & 3));
        float s = 0.0;
        for (int i = 0; i < 4; i++) {
            s = fma(W_MXFP4[bitfieldExtract(q, 8 * i, 4)], av[i], s);
            s = fma(W_MXFP4[bitfieldExtract(q, 8 * i + 4, 4)], av[4 + i], s);
        }
        return s * w_e8m0_half(w_u8(blk));
    }
    if (WTYPE == MOE_WTYPE_Q8_0) {
        const uint blk = row + uint(u >> 3) * uint(MOE_WBLOCK_BYTES_Q8_0);
        const int q = int(w_u32(blk + 2u + 4u * uint(u & 7)));
        float s = 0.0;
        for (int i = 0; i < 4; i++) s = fma(float(bitfieldExtract(q, 8 * i, 8)), av[i], s);
        return s * w_half(w_u16(blk));
    }
    const uint blk = row + uint(u >> 2) * uint(MOE_WBLOCK_BYTES_Q4_0);
    const uint q = w_u32(blk + 2u + 4u * uint(u & 3));
    float s = 0.0;
    for (int i = 0; i < 4; i++) {
        s = fma(float(int(bitfieldExtract(q, 8 * i, 4)) - 8), av[i], s);
        s = fma(float(int(bitfieldExtract(q, 8 * i + 4, 4)) - 8), av[4 + i], s);
    }
    return s * w_half(w_u16(blk));
}
