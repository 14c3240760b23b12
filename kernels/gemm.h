/*
 * gemm.h — the interface of the grouped GEMM (shaders/gemm.comp, opencl/gemm.cl), every matrix
 * product of a forward at larger T: result[r][n] = epilogue(Σ_k a[row(r)][k] · w[e][n][k]), one
 * expert e per row tile (tile_expert); w in its storage format (weight_format.h). At small T the
 * decode kernel (matvec.h) takes its place. The lists are explained in interface.h.
 */
#ifndef MOE_KERNEL_GEMM_H
#define MOE_KERNEL_GEMM_H
#include "interface.h"
#include "weight_format.h"

#define MOE_GEMM_PARAMS(P)                                                                                   \
    P(0, wg, WG, 256)                 /* (BM / TM) · (BN / TN) invocations */                               \
    P(1, int, BM, 64)                 /* rows of a workgroup's tile (the backend's row_tile) */              \
    P(2, int, BN, 64)                 /* columns of a workgroup's tile */                                    \
    P(3, int, BK, 16)                 /* reduction slice staged through shared memory */                     \
    P(4, int, TM, 4)                  /* rows of one invocation's accumulators */                            \
    P(5, int, TN, 4)                  /* columns of one invocation's accumulators */                         \
    P(6, int, K_DIM, 1)               /* reduction length */                                                 \
    P(7, int, N_OUT, 1)               /* output columns */                                                   \
    P(8, bool, GATED, false)          /* w is a gate/up pair [E][2][N_OUT][K_DIM] */                         \
    P(9, int, ACT, -1)                /* moe_activation of the epilogue, -1 (ACT_NONE) for none */           \
    P(10, bool, GATHER, false)        /* a's row of row r is row_token[r] */                                 \
    P(11, bool, HAS_ROWS, false)      /* row_token marks the valid rows (-1: padding) */                     \
    P(12, bool, HAS_TILES, false)     /* tile_expert names each row tile's expert, else expert 0 */          \
    P(13, bool, USE_SHARED, true)     /* stage tiles through shared memory (GPUs); Vulkan only */            \
    P(14, int, WTYPE, 1)              /* w's format: MOE_WTYPE_* (= moe_dtype), weight_format.h */           \
    P(15, bool, HAS_BIAS, false)      /* add bias[expert] to the products before the activation */           \
    P(16, float, SWIGLU_ALPHA, 1.702) /* ACT SWIGLU_OAI's alpha (moe_layer_desc.swiglu_alpha) */             \
    P(17, float, SWIGLU_LIMIT, 7.0)   /* and its limit */

#define MOE_GEMM_BUFFERS(B)                                                                                  \
    B(0, in, float, a)         /* [rows of a][K_DIM] */                                                      \
    B(1, in, int, row_token)   /* [n_rows] */                                                                \
    B(2, in, int, tile_expert) /* [n_rows / BM] */                                                           \
    B(3, in, uint, w)          /* the experts' matrices in WTYPE's bytes, from byte w_start */               \
    B(4, out, float, result)   /* [n_rows][N_OUT] */                                                         \
    B(5, in, float, bias)      /* [experts][GATED ? 2 : 1][N_OUT]: gate's, then up's */

/* One dispatch covers the experts [expert_begin, expert_end): Vulkan binds w one group of
 * experts at a time (a layer's weights can exceed maxStorageBufferRange), from an offset
 * aligned down to minStorageBufferOffsetAlignment, and expert_begin's matrix starts w_start
 * bytes into the binding (not always a multiple of 4; odd for MXFP4). Every byte offset a
 * kernel forms inside the binding is below its size, at most maxStorageBufferRange, so 32-bit
 * unsigned arithmetic holds it. OpenCL covers every expert in one launch (0, n_experts, 0) and
 * forms its offsets in size_t. */
#define MOE_GEMM_FIELDS(F) F(n_rows) F(expert_begin) F(expert_end) F(w_start)

MOE_KERNEL(gemm, MOE_GEMM_PARAMS, MOE_GEMM_BUFFERS, MOE_GEMM_FIELDS)

#endif
