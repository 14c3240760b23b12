/*
 * stats.h — the interface of the loss statistics (shaders/stats.comp, opencl/stats.cl), one
 * workgroup: the load-balancing aux loss and the router z-loss. The lists are explained in
 * interface.h.
 */
#ifndef MOE_KERNEL_STATS_H
#define MOE_KERNEL_STATS_H
#include "interface.h"

#define MOE_STATS_PARAMS(P)                                                                                  \
    P(0, wg, WG, 64)                                                                                         \
    P(1, int, E, 1)                                                                                          \
    P(2, int, TOP_K, 1)                                                                                      \
    P(3, bool, SIGMOID, false) /* sigmoid scores, else softmax */

#define MOE_STATS_BUFFERS(B)                                                                                 \
    B(0, in, float, logits)  /* [T][E] */                                                                    \
    B(1, in, int, counts)    /* [E + 1] */                                                                   \
    B(2, inout, float, ws)   /* [T][2] (lse, norm), then [E] */                                              \
    B(3, out, float, losses) /* [2]: aux, z */

#define MOE_STATS_FIELDS(F) F(n_tokens)

MOE_KERNEL(stats, MOE_STATS_PARAMS, MOE_STATS_BUFFERS, MOE_STATS_FIELDS)

#endif
