/*
 * combine.h — the interface of the combine (shaders/combine.comp, opencl/combine.cl): one
 * workgroup per token, y[t] = Σ_j weights[t][j] · expert_out[slot_row[t][j]] in slot order,
 * plus the (gated) shared expert. The lists are explained in interface.h.
 */
#ifndef MOE_KERNEL_COMBINE_H
#define MOE_KERNEL_COMBINE_H
#include "interface.h"

#define MOE_COMBINE_PARAMS(P)                                                                                \
    P(0, wg, WG, 256)                                                                                        \
    P(1, int, D, 1) /* d_model */                                                                            \
    P(2, int, TOP_K, 1)                                                                                      \
    P(3, bool, PASSTHROUGH, false)     /* a dropped slot adds weight · x, else 0 */                         \
    P(4, bool, HAS_SHARED, false)      /* add shared_out */                                                  \
    P(5, bool, HAS_SHARED_GATE, false) /* scaled by sigmoid(x · shared_gate) */

#define MOE_COMBINE_BUFFERS(B)                                                                               \
    B(0, in, float, x)           /* [T][D] */                                                                \
    B(1, in, float, expert_out)  /* [n_rows][D] */                                                           \
    B(2, in, int, slot_row)      /* [T][TOP_K] */                                                            \
    B(3, in, float, weights)     /* [T][TOP_K] */                                                            \
    B(4, in, float, shared_out)  /* [T][D] */                                                                \
    B(5, in, float, shared_gate) /* [D] */                                                                   \
    B(6, out, float, y)          /* [T][D] */

/* The tokens, one workgroup each. The kernels do not read it: the dispatch has exactly that many
 * workgroups, and PoCL 3.1 miscompiles combine.cl with any early return ahead of the gate's
 * barriers (output that changes run to run, then a corrupted heap). It is here because GLSL
 * has no empty push-constant block. */
#define MOE_COMBINE_FIELDS(F) F(n_tokens)

MOE_KERNEL(combine, MOE_COMBINE_PARAMS, MOE_COMBINE_BUFFERS, MOE_COMBINE_FIELDS)

#endif
