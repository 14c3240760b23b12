/*
 * plan_scatter.h — the interface of the plan's pass 3 of 3 (shaders/plan_scatter.comp,
 * opencl/plan_scatter.cl): each block places its (token, slot) entries at their rows, stable
 * in token order; rows past the capacity are dropped. The lists are explained in interface.h.
 */
#ifndef MOE_KERNEL_PLAN_SCATTER_H
#define MOE_KERNEL_PLAN_SCATTER_H
#include "interface.h"
#include "plan.h"

#define MOE_PLAN_SCATTER_PARAMS(P)                                                                           \
    P(0, wg, WG, 64)                                                                                         \
    P(1, int, E, 1)                                                                                          \
    P(2, int, TOP_K, 1)                                                                                      \
    P(3, int, PLAN_BLOCK, MOE_PLAN_BLOCK)                                                                    \
    P(4, int, CAPACITY, 0) /* rows an expert keeps, 0 = unlimited */

#define MOE_PLAN_SCATTER_BUFFERS(B)                                                                          \
    B(0, in, int, ids)          /* [T][TOP_K] */                                                             \
    B(1, inout, int, block_pos) /* [n_blocks][E]: each block's next position per expert */                   \
    B(2, in, int, offsets)      /* [E + 1] */                                                                \
    B(3, out, int, slot_row)    /* [T][TOP_K] */                                                             \
    B(4, out, int, row_token)   /* [n_rows] */

#define MOE_PLAN_SCATTER_FIELDS(F) F(n_tokens)

MOE_KERNEL(plan_scatter, MOE_PLAN_SCATTER_PARAMS, MOE_PLAN_SCATTER_BUFFERS, MOE_PLAN_SCATTER_FIELDS)

#endif
