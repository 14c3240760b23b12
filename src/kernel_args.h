/*
 * kernel_args.h — the GPU backends' steps as kernel launches, written once: for each backend step
 * (src/backend.h) the launches it needs, in order, each with its arguments (kernels/<kernel>.h
 * filled by name and packed into a moe_kargs) and its grid. Vulkan (vk_steps.c) and OpenCL
 * (cl_steps.c) run the same kernels with the same parameters, so only what a device chose
 * differs — workgroup sizes, the GEMM's tiling and the decode kernel's shape, passed in as a
 * moe_kconfig — and what each backend keeps to itself: which compiled variant runs a launch
 * (the subgroup combine and decode kernel),
 * and how a GEMM's weights are bound (Vulkan splits the experts into groups under
 * maxStorageBufferRange; see moe_klaunch_gemm).
 */
#ifndef MOE_KERNEL_ARGS_H
#define MOE_KERNEL_ARGS_H

#include "backend.h"
#include "interface.h" /* kernels/: needs backend.h first */

#include <stdbool.h>
#include <stdint.h>

/* What a backend chose for its device; everything else a launch needs comes from the step. */
typedef struct moe_kconfig {
    int64_t wg_small, wg_big;                            /* per-item kernels, reductions */
    int64_t gemm_bm, gemm_bn, gemm_bk, gemm_tm, gemm_tn; /* the GEMM's tiling (kernels/gemm.h) */
    bool gemm_shared;                                    /* stage the GEMM's tiles in shared memory */
    int64_t row_tile;                                    /* moe_backend.row_tile (the plan's padding) */
    int64_t matvec_wg, matvec_cols;                      /* the decode kernel's shape (kernels/matvec.h) */
    int64_t matvec_max_rows; /* moe_kuse_matvec's bound on rows per expert; 0: never the decode kernel */
} moe_kconfig;

/* One launch: the kernel's arguments and the workgroups it takes (x by y). */
typedef struct moe_klaunch {
    moe_kargs args;
    int64_t groups_x, groups_y;
} moe_klaunch;

/* route: the router product logits = x·routerᵀ, returned as a GEMM step of one "expert" so the
 * backend runs it exactly as it runs the experts' products (on Vulkan through the same
 * weight-binding checks), then the select launch. */
void moe_klaunch_route(const moe_kconfig *c, const moe_route_step *s, moe_ffn_step *router,
                       moe_klaunch *select);
/* The select kernel's shared memory for n_experts with workgroups of wg (kernels/select.h). */
int64_t moe_kselect_shared_bytes(int64_t n_experts, int64_t wg);

/* plan: its three passes, launched in this order. */
typedef struct moe_kplan {
    moe_klaunch count, scan, scatter;
} moe_kplan;
moe_kplan moe_klaunch_plan(const moe_kconfig *c, const moe_plan_step *s);

/* The bytes of one expert's matrix in the step's weight format (a gated pair counts as one):
 * the unit in which the weights of an ffn step are split into groups of experts. */
int64_t moe_kgemm_expert_bytes(const moe_ffn_step *s);

/* The GEMM of an ffn step over the experts [expert_begin, expert_end), with w bound from `w`
 * and expert_begin's matrix w_start bytes into that binding. The whole step in one launch is
 * (0, s->n_experts, s->weights, 0). The split is the caller's: a binding's size limit and
 * offset alignment are a Vulkan matter (a cl_mem has neither), so Vulkan chooses the groups
 * and where each binding starts, and this fills the same names for every group. */
moe_klaunch moe_klaunch_gemm(const moe_kconfig *c, const moe_ffn_step *s, int64_t expert_begin,
                             int64_t expert_end, moe_addr w, int64_t w_start);

/* Whether an ffn step runs as the decode kernel (moe_klaunch_matvec) rather than the GEMM: when
 * its rows, spread evenly over the experts that can receive them, would be at most
 * c->matvec_max_rows per expert — n_slots ≤ matvec_max_rows · min(n_experts, n_slots). The GEMM
 * computes a whole tile of row_tile rows per expert that has any, and reads each expert's
 * weights once per tile; the decode kernel computes the valid rows only, reading the weights
 * once per row. So it wins while experts get few rows: always at T·k ≤ E (decode: 1 row per
 * expert), and for the dense products (router, shared expert: one "expert") at
 * T ≤ matvec_max_rows. */
bool moe_kuse_matvec(const moe_kconfig *c, const moe_ffn_step *s);

/* The decode kernel of an ffn step over the experts [expert_begin, expert_end), its weights
 * bound as for moe_klaunch_gemm. One workgroup per COLS output columns and slot. */
moe_klaunch moe_klaunch_matvec(const moe_kconfig *c, const moe_ffn_step *s, int64_t expert_begin,
                               int64_t expert_end, moe_addr w, int64_t w_start);

moe_klaunch moe_klaunch_combine(const moe_kconfig *c, const moe_combine_step *s);
moe_klaunch moe_klaunch_stats(const moe_kconfig *c, const moe_stats_step *s);

#endif /* MOE_KERNEL_ARGS_H */
