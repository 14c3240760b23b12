/*
 * plan_count.h — the interface of the plan's pass 1 of 3 (shaders/plan_count.comp,
 * opencl/plan_count.cl): per-expert counts of each block of PLAN_BLOCK tokens, one invocation
 * per block. The lists are explained in interface.h.
 */
#ifndef MOE_KERNEL_PLAN_COUNT_H
#define MOE_KERNEL_PLAN_COUNT_H
#include "interface.h"
#include "plan.h"

#define MOE_PLAN_COUNT_PARAMS(P)                                                                             \
    P(0, wg, WG, 64)                                                                                         \
    P(1, int, E, 1)                                                                                          \
    P(2, int, TOP_K, 1)                                                                                      \
    P(3, int, PLAN_BLOCK, MOE_PLAN_BLOCK)

#define MOE_PLAN_COUNT_BUFFERS(B)                                                                            \
    B(0, in, int, ids)             /* [T][TOP_K] */                                                          \
    B(1, inout, int, block_counts) /* [n_blocks][E] */

#define MOE_PLAN_COUNT_FIELDS(F) F(n_tokens)

MOE_KERNEL(plan_count, MOE_PLAN_COUNT_PARAMS, MOE_PLAN_COUNT_BUFFERS, MOE_PLAN_COUNT_FIELDS)

#endif
