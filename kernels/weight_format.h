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
 * Every size is even, so a row, a block or a matrix starts at an even byte offset but not
 * always at a multiple of 4 (F16 with an odd K, every other Q8_0/Q4_0 block): the kernels read
 * 32-bit words and shift (shaders/weights.glsl, opencl/weights.cl), so no 8- or 16-bit storage
 * feature is needed.
 */
#ifndef MOE_KERNEL_WEIGHT_FORMAT_H
#define MOE_KERNEL_WEIGHT_FORMAT_H

#define MOE_WTYPE_F32  1
#define MOE_WTYPE_F16  2
#define MOE_WTYPE_BF16 3
#define MOE_WTYPE_Q8_0 4
#define MOE_WTYPE_Q4_0 5

#define MOE_WBLOCK            32 /* values per Q8_0 / Q4_0 block */
#define MOE_WBLOCK_BYTES_Q8_0 34
#define MOE_WBLOCK_BYTES_Q4_0 18

/* Bytes of a stored row of k values (k a multiple of MOE_WBLOCK for the block formats). */
#define MOE_WROW_BYTES(wtype, k)                                                                             \
    ((wtype) == MOE_WTYPE_F32    ? 4 * (k)                                                                   \
     : (wtype) == MOE_WTYPE_Q8_0 ? (k) / MOE_WBLOCK * MOE_WBLOCK_BYTES_Q8_0                                  \
     : (wtype) == MOE_WTYPE_Q4_0 ? (k) / MOE_WBLOCK * MOE_WBLOCK_BYTES_Q4_0                                  \
                                 : 2 * (k))

#endif
