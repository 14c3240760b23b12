/*
 * plan_scan.h — the interface of the plan's pass 2 of 3 (shaders/plan_scan.comp,
 * opencl/plan_scan.cl), one workgroup: each expert's block counts scanned in token order, the
 * totals and dropped rows, the padded row offsets, the tile → expert map, every row marked as
 * padding. The lists are explained in interface.h.
 */
#ifndef MOE_KERNEL_PLAN_SCAN_H
#define MOE_KERNEL_PLAN_SCAN_H
#include "interface.h"
#include "plan.h"

#define MOE_PLAN_SCAN_PARAMS(P)                                                                              \
    P(0, wg, WG, 64)                                                                                         \
    P(1, int, E, 1)                                                                                          \
    P(2, int, PLAN_BLOCK, MOE_PLAN_BLOCK)                                                                    \
    P(3, int, ROW_TILE, 64) /* each expert's rows are padded to it (the GEMM's BM) */                        \
    P(4, int, CAPACITY, 0)  /* rows an expert keeps, 0 = unlimited */

#define MOE_PLAN_SCAN_BUFFERS(B)                                                                             \
    B(0, inout, int, block_counts) /* [n_blocks][E]: counts in, first positions out */                       \
    B(1, inout, int, counts)       /* [E + 1]: rows per expert, then dropped rows */                         \
    B(2, inout, int, offsets)      /* [E + 1]: first padded row of each expert, then the end */              \
    B(3, out, int, tile_expert)    /* [n_rows / ROW_TILE] */                                                 \
    B(4, out, int, row_token)      /* [n_rows] */

#define MOE_PLAN_SCAN_FIELDS(F) F(n_tokens) F(n_rows)

MOE_KERNEL(plan_scan, MOE_PLAN_SCAN_PARAMS, MOE_PLAN_SCAN_BUFFERS, MOE_PLAN_SCAN_FIELDS)

#endif
