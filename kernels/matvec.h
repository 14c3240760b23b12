/*
 * matvec.h — the interface of the decode kernel (shaders/matvec.comp, opencl/matvec.cl): the
 * products of an ffn step one (token, slot) row at a time, for small T, where the grouped GEMM
 * (gemm.h) would compute whole row tiles around one or two valid rows. The same results as the
 * GEMM (the same epilogue, result[row][n] for the same rows; padding rows are never written),
 * reading w in its storage format (weight_format.h). The lists are explained in interface.h.
 *
 * A workgroup computes COLS output columns of one slot: the slot is gl_WorkGroupID.y /
 * get_group_id(1), the column block the x one. With HAS_SLOTS (the routed experts) slot i is
 * (token i / TOP_K, slot i % TOP_K): its row is slot_row[i] (-1: dropped by capacity, nothing
 * computed), its expert slot_expert[i], and it reads a at the token (GATHER: the up projection
 * reads x) or at its row (the down projection reads h). Without (the router, the shared
 * expert) slot i is row i of a and of the result, expert 0. The WG invocations split the
 * reduction along K: consecutive invocations read consecutive 32-bit words of a weight row
 * (coalesced), each keeping COLS (gated: 2·COLS) partial sums, which are then added across the
 * workgroup — subgroupAdd / sub_group_reduce_add where the device has subgroup arithmetic (a
 * variant the backend picks), else a tree in shared memory — in an order fixed by the
 * workgroup's shape, so a result is the same on every run. WG is a power of two.
 */
#ifndef MOE_KERNEL_MATVEC_H
#define MOE_KERNEL_MATVEC_H
#include "interface.h"
#include "weight_format.h"

#define MOE_MATVEC_PARAMS(P)                                                                                 \
    P(0, wg, WG, 64)                  /* invocations splitting K; a power of two */                          \
    P(1, int, COLS, 4)                /* output columns of a workgroup */                                    \
    P(2, int, K_DIM, 1)               /* reduction length */                                                 \
    P(3, int, N_OUT, 1)               /* output columns */                                                   \
    P(4, bool, GATED, false)          /* w is a gate/up pair [E][2][N_OUT][K_DIM] */                         \
    P(5, int, ACT, -1)                /* moe_activation of the epilogue, -1 (ACT_NONE) for none */           \
    P(6, bool, GATHER, false)         /* a's row of slot i is its token i / TOP_K, else the slot's row */    \
    P(7, bool, HAS_SLOTS, false)      /* slot_row / slot_expert given, else slot i = row i, expert 0 */      \
    P(8, int, TOP_K, 1)               /* slots per token */                                                  \
    P(9, int, WTYPE, 1)               /* w's format: MOE_WTYPE_* (= moe_dtype), weight_format.h */           \
    P(10, bool, HAS_BIAS, false)      /* add bias[expert] to the products before the activation */           \
    P(11, float, SWIGLU_ALPHA, 1.702) /* ACT SWIGLU_OAI's alpha (moe_layer_desc.swiglu_alpha) */             \
    P(12, float, SWIGLU_LIMIT, 7.0)   /* and its limit */

#define MOE_MATVEC_BUFFERS(B)                                                                                \
    B(0, in, float, a)         /* [rows of a][K_DIM] */                                                      \
    B(1, in, int, slot_row)    /* [n_slots] */                                                               \
    B(2, in, int, slot_expert) /* [n_slots] */                                                               \
    B(3, in, uint, w)          /* the experts' matrices in WTYPE's bytes, from byte w_start */               \
    B(4, out, float, result)   /* [rows][N_OUT] */                                                           \
    B(5, in, float, bias)      /* [experts][GATED ? 2 : 1][N_OUT]: gate's, then up's */

/* n_slots: the workgroups along y (the kernels do not read it; GLSL has no empty block). The
 * experts [expert_begin, expert_end) and w_start: as in gemm.h (Vulkan binds w one group of
 * experts at a time; a slot of another group's expert does nothing in this dispatch). */
#define MOE_MATVEC_FIELDS(F) F(n_slots) F(expert_begin) F(expert_end) F(w_start)

MOE_KERNEL(matvec, MOE_MATVEC_PARAMS, MOE_MATVEC_BUFFERS, MOE_MATVEC_FIELDS)

#endif
