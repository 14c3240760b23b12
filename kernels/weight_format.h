/*
 * weight_format.h — how the GPU kernels that read weights (gemm, matvec) see a weight format:
 * the value of their WTYPE parameter (the moe_dtype of include/moe.h; src/kernel_args.c checks
 * that the two agree) and the bytes of a stored row. Plain #defines, read the same in C, GLSL
 * and OpenCL C. Not a kernel: it has no MOE_KERNEL line.
 *
 * A weight matrix [N][K] is stored as N rows of MOE_WROW_BYTES(WTYPE, K) bytes, rows and
 * matrices back to back with no padding (Hugging Face layout [E][N][K], a gated pair
 * [E][2][N][K]), so the device holds exactly the format's bytes:
 *   F32   4 bytes a value;  F16  IEEE binary16;  BF16  the upper half of a float32
 *   Q8_0  blocks of 32 values along K, 34 bytes: fp16 scale d, 32 int8 q; value = q·d
 *   Q4_0  blocks of 32 values, 18 bytes: fp16 scale d, 16 bytes; value j in the low nibble of
 *         byte j, value j + 16 in its high nibble; value = (q − 8)·d
 *   Q4_K  super-blocks of 256 values, 144 bytes: fp16 d, fp16 dmin, 12 bytes of 6-bit scales
 *         and mins (sub-block j of 32: moe.h), 128 bytes of nibbles (byte 32c + l: value
 *         64c + l low, 64c + 32 + l high); value = d·sc·q − dmin·m
 *   Q5_K  176 bytes: as Q4_K with 32 bytes of fifth bits before the nibbles (byte l, bit 2c:
 *         value 64c + l; bit 2c + 1: value 64c + 32 + l)
 *   Q6_K  210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales (one
 *         per 16 values), fp16 d; value = d·sc·(q − 32)
 *   Q3_K  110 bytes: 32 bytes of third bits hmask, 64 bytes of 2-bit pairs qs, 12 bytes packing
 *         sixteen 6-bit scales, fp16 d; value 128n + 32j + l: q = ((qs[32n + l] >> 2j) & 3) +
 *         4·((hmask[l] >> (4n + j)) & 1), value = d·(sc − 32)·(q − 4) (scale packing: moe.h)
 *   Q2_K  84 bytes: 16 scale bytes (low nibble sc, high nibble m, one per 16 values), 64 bytes
 *         of 2-bit q qs (as Q3_K's), fp16 d, fp16 dmin; value 128n + 32j + l: q = (qs[32n + l] >>
 *         2j) & 3, value = d·sc·q − dmin·m
 *   MXFP4 blocks of 32 values, 17 bytes: scale byte e, 16 bytes of 4-bit codes laid out as
 *         Q4_0's; value = kv[q]·2^(e − 128), kv = {0, 1, 2, 3, 4, 6, 8, 12, and their negatives}
 * Every size but MXFP4's is even, so a row, a block or a matrix starts at an even byte offset
 * but not always at a multiple of 4 (F16 with an odd K, every other Q8_0/Q4_0 block); MXFP4's
 * may start at any byte, and it reads no 16-bit field. The kernels read 32-bit words and shift
 * (shaders/weights.glsl, opencl/weights.cl), so no 8- or 16-bit storage feature is needed.
 */
#ifndef MOE_KERNEL_WEIGHT_FORMAT_H
#define MOE_KERNEL_WEIGHT_FORMAT_H

#define MOE_WTYPE_F32   1
#define MOE_WTYPE_F16   2
#define MOE_WTYPE_BF16  3
#define MOE_WTYPE_Q8_0  4
#define MOE_WTYPE_Q4_0  5
#define MOE_WTYPE_Q4_K  6
#define MOE_WTYPE_Q5_K  7
#define MOE_WTYPE_Q6_K  8
#define MOE_WTYPE_MXFP4 9
#define MOE_WTYPE_Q3_K  10
#define MOE_WTYPE_Q2_K  11

#define MOE_WBLOCK             32 /* values per Q8_0 / Q4_0 / MXFP4 block */
#define MOE_WBLOCK_BYTES_Q8_0  34
#define MOE_WBLOCK_BYTES_Q4_0  18
#define MOE_WBLOCK_BYTES_MXFP4 17
#define MOE_WSUPER             256 /* values per K-quant super-block */
#define MOE_WBLOCK_BYTES_Q2_K  84
#define MOE_WBLOCK_BYTES_Q3_K  110
#define MOE_WBLOCK_BYTES_Q4_K  144
#define MOE_WBLOCK_BYTES_Q5_K  176
#define MOE_WBLOCK_BYTES_Q6_K  210

/* Bytes of a stored row of k values (k a multiple of MOE_WBLOCK, or MOE_WSUPER for the K-quants). */
#define MOE_WROW_BYTES(wtype, k)                                                                             \
    ((wtype) == MOE_WTYPE_F32     ? 4 * (k)                                                                  \
     : (wtype) == MOE_WTYPE_Q8_0  ? (k) / MOE_WBLOCK * MOE_WBLOCK_BYTES_Q8_0                                 \
     : (wtype) == MOE_WTYPE_Q4_0  ? (k) / MOE_WBLOCK * MOE_WBLOCK_BYTES_Q4_0                                 \
     : (wtype) == MOE_WTYPE_MXFP4 ? (k) / MOE_WBLOCK * MOE_WBLOCK_BYTES_MXFP4                                \
     : (wtype) == MOE_WTYPE_Q2_K  ? (k) / MOE_WSUPER * MOE_WBLOCK_BYTES_Q2_K                                 \
     : (wtype) == MOE_WTYPE_Q3_K  ? (k) / MOE_WSUPER * MOE_WBLOCK_BYTES_Q3_K                                 \
     : (wtype) == MOE_WTYPE_Q4_K  ? (k) / MOE_WSUPER * MOE_WBLOCK_BYTES_Q4_K                                 \
     : (wtype) == MOE_WTYPE_Q5_K  ? (k) / MOE_WSUPER * MOE_WBLOCK_BYTES_Q5_K                                 \
     : (wtype) == MOE_WTYPE_Q6_K  ? (k) / MOE_WSUPER * MOE_WBLOCK_BYTES_Q6_K                                 \
                                  : 2 * (k))

#endif
