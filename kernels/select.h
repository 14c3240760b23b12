/*
 * select.h — the interface of routing after the router GEMM (shaders/select.comp,
 * opencl/select.cl; the OpenCL kernel is select_topk, `select` being a built-in): scores,
 * selection keys, group-limited routing, top-k, weights. One workgroup of WG invocations per
 * token, which share its experts; its shared memory is 8·WG bytes plus a bit per expert
 * (moe_kselect_shared_bytes, which the backends check against the device's limit). The lists
 * are explained in interface.h.
 */
#ifndef MOE_KERNEL_SELECT_H
#define MOE_KERNEL_SELECT_H
#include "interface.h"

#define MOE_SELECT_PARAMS(P)                                                                                 \
    P(0, wg, WG, 64)                                                                                         \
    P(1, int, E, 1) /* n_experts */                                                                          \
    P(2, int, TOP_K, 1)                                                                                      \
    P(3, int, N_GROUP, 1)        /* groups of experts, 1 = plain top-k */                                    \
    P(4, int, TOPK_GROUP, 1)     /* groups kept */                                                           \
    P(5, bool, SIGMOID, false)   /* sigmoid scores, else softmax */                                          \
    P(6, bool, GROUP_MAX, false) /* a group's score is its best key, else its two best summed */             \
    P(7, bool, RENORM, false)    /* chosen weights divided by their sum */                                   \
    P(8, bool, HAS_BIAS, false)  /* bias added to the selection keys only */                                 \
    P(9, float, SCALE, 1.0)      /* routed_scaling_factor, exact */

#define MOE_SELECT_BUFFERS(B)                                                                                \
    B(0, in, float, logits)     /* [T][E] */                                                                 \
    B(1, in, float, bias)       /* [E] */                                                                    \
    B(2, inout, float, ws)      /* [T][E + N_GROUP]: keys, then group scores */                              \
    B(3, inout, int, ids)       /* [T][TOP_K] */                                                             \
    B(4, inout, float, weights) /* [T][TOP_K] */

#define MOE_SELECT_FIELDS(F) F(n_tokens)

MOE_KERNEL(select, MOE_SELECT_PARAMS, MOE_SELECT_BUFFERS, MOE_SELECT_FIELDS)

#endif
