/*
 * kernel_args.c — the mapping from a backend step to the kernel launches it needs, written
 * once for the GPU backends (kernel_args.h says what differs per backend and what is left to
 * it). Each kernel's parameters, buffers and fields are filled by name from the step; a buffer
 * gets the element count its kernel may touch (Vulkan binds exactly that much).
 */
#include "kernel_args.h"

#include "combine.h"
#include "gemm.h"
#include "matvec.h"
#include "plan_count.h"
#include "plan_scan.h"
#include "plan_scatter.h"
#include "select.h"
#include "stats.h"

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

void moe_klaunch_route(const moe_kconfig *c, const moe_route_step *s, moe_ffn_step *router,
                       moe_klaunch *select)
{
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens, E = d->n_experts, K = d->top_k;
    /* Row r is token r, every row valid (no row_token), all rows of one matrix (no tile_expert). */
    *router = (moe_ffn_step){.n_rows = T,
                             .k_dim = d->d_model,
                             .n_out = E,
                             .a = s->x,
                             .a_rows = T,
                             .gather = false,
                             .weights = s->router,
                             .weight_dtype = MOE_DTYPE_F32,
                             .n_experts = 1,
                             .gated = false,
                             .apply_activation = false,
                             .bias = d->router_has_bias ? s->router_bias : (moe_addr){0},
                             .out = s->logits,
                             .n_slots = T,
                             .top_k = 1};
    const struct moe_select_params p = {.WG = c->wg_small,
                                        .E = E,
                                        .TOP_K = K,
                                        .N_GROUP = d->n_group,
                                        .TOPK_GROUP = d->topk_group,
                                        .SIGMOID = d->score_func == MOE_SCORE_SIGMOID,
                                        .GROUP_MAX = d->group_score == MOE_GROUP_SCORE_MAX,
                                        .RENORM = d->renormalize,
                                        .HAS_BIAS = d->has_selection_bias,
                                        .SCALE = d->routed_scaling_factor};
    const struct moe_select_buffers buf = {.logits = {s->logits, T * E},
                                           .bias = {s->router_bias, E},
                                           .ws = {s->workspace, T * (E + d->n_group)},
                                           .ids = {s->topk_ids, T * K},
                                           .weights = {s->topk_weights, T * K}};
    const struct moe_select_fields f = {.n_tokens = T};
    /* One workgroup per token. */
    *select = (moe_klaunch){moe_select_args(&p, &buf, &f), T, 1};
}

int64_t moe_kselect_shared_bytes(int64_t n_experts, int64_t wg)
{
    return 8 * wg + 4 * ceil_div(n_experts, 32);
}

moe_kplan moe_klaunch_plan(const moe_kconfig *c, const moe_plan_step *s)
{
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens, E = d->n_experts, K = d->top_k, R = s->n_rows;
    const int64_t blocks = ceil_div(T, MOE_PLAN_BLOCK);
    /* The core passes this forward's capacity (moe_effective_capacity): 0 or below T·k. */
    const int64_t cap = d->expert_capacity;
    moe_kplan plan;

    /* One invocation per block of tokens. */
    const struct moe_plan_count_params pc = {
        .WG = c->wg_small, .E = E, .TOP_K = K, .PLAN_BLOCK = MOE_PLAN_BLOCK};
    const struct moe_plan_count_buffers bc = {.ids = {s->topk_ids, T * K},
                                              .block_counts = {s->workspace, blocks * E}};
    const struct moe_plan_count_fields fc = {.n_tokens = T};
    plan.count = (moe_klaunch){moe_plan_count_args(&pc, &bc, &fc), ceil_div(blocks, c->wg_small), 1};

    /* One workgroup scans every expert. */
    const struct moe_plan_scan_params pn = {
        .WG = c->wg_big, .E = E, .PLAN_BLOCK = MOE_PLAN_BLOCK, .ROW_TILE = c->row_tile, .CAPACITY = cap};
    const struct moe_plan_scan_buffers bn = {.block_counts = {s->workspace, blocks * E},
                                             .counts = {s->expert_counts, E + 1},
                                             .offsets = {s->expert_offsets, E + 1},
                                             .tile_expert = {s->tile_expert, R / c->row_tile},
                                             .row_token = {s->row_token, R}};
    const struct moe_plan_scan_fields fn = {.n_tokens = T, .n_rows = R};
    plan.scan = (moe_klaunch){moe_plan_scan_args(&pn, &bn, &fn), 1, 1};

    const struct moe_plan_scatter_params ps = {
        .WG = c->wg_small, .E = E, .TOP_K = K, .PLAN_BLOCK = MOE_PLAN_BLOCK, .CAPACITY = cap};
    const struct moe_plan_scatter_buffers bs = {.ids = {s->topk_ids, T * K},
                                                .block_pos = {s->workspace, blocks * E},
                                                .offsets = {s->expert_offsets, E + 1},
                                                .slot_row = {s->slot_row, T * K},
                                                .row_token = {s->row_token, R}};
    const struct moe_plan_scatter_fields fs = {.n_tokens = T};
    plan.scatter = (moe_klaunch){moe_plan_scatter_args(&ps, &bs, &fs), ceil_div(blocks, c->wg_small), 1};
    return plan;
}

/* The kernels' WTYPE is the moe_dtype itself (kernels/weight_format.h spells it for GLSL and
 * OpenCL C); the row sizes agree with dtype.c's by construction of both tables. */
_Static_assert(MOE_WTYPE_F32 == MOE_DTYPE_F32 && MOE_WTYPE_F16 == MOE_DTYPE_F16 &&
                   MOE_WTYPE_BF16 == MOE_DTYPE_BF16 && MOE_WTYPE_Q8_0 == MOE_DTYPE_Q8_0 &&
                   MOE_WTYPE_Q4_0 == MOE_DTYPE_Q4_0 && MOE_WTYPE_Q4_K == MOE_DTYPE_Q4_K &&
                   MOE_WTYPE_Q5_K == MOE_DTYPE_Q5_K && MOE_WTYPE_Q6_K == MOE_DTYPE_Q6_K &&
                   MOE_WTYPE_MXFP4 == MOE_DTYPE_MXFP4 && MOE_WTYPE_Q3_K == MOE_DTYPE_Q3_K &&
                   MOE_WTYPE_Q2_K == MOE_DTYPE_Q2_K && MOE_WBLOCK == MOE_BLOCK_SIZE &&
                   MOE_WSUPER == MOE_SUPER_BLOCK_SIZE,
               "kernels/weight_format.h disagrees with moe_dtype");

/* Floats of an ffn step's bias: every expert's, bound whole (indexed by the absolute expert). */
static int64_t moe_kbias_elements(const moe_ffn_step *s)
{
    return s->n_experts * (s->gated ? 2 : 1) * s->n_out;
}

int64_t moe_kgemm_expert_bytes(const moe_ffn_step *s)
{
    return (s->gated ? 2 : 1) * s->n_out * (int64_t)MOE_WROW_BYTES(s->weight_dtype, s->k_dim);
}

moe_klaunch moe_klaunch_gemm(const moe_kconfig *c, const moe_ffn_step *s, int64_t expert_begin,
                             int64_t expert_end, moe_addr w, int64_t w_start)
{
    const struct moe_gemm_params p = {.WG = (c->gemm_bm / c->gemm_tm) * (c->gemm_bn / c->gemm_tn),
                                      .BM = c->gemm_bm,
                                      .BN = c->gemm_bn,
                                      .BK = c->gemm_bk,
                                      .TM = c->gemm_tm,
                                      .TN = c->gemm_tn,
                                      .K_DIM = s->k_dim,
                                      .N_OUT = s->n_out,
                                      .GATED = s->gated,
                                      .ACT = s->apply_activation ? (int64_t)s->activation : -1,
                                      .GATHER = s->gather,
                                      .HAS_ROWS = s->row_token.buf != NULL,
                                      .HAS_TILES = s->tile_expert.buf != NULL,
                                      .USE_SHARED = c->gemm_shared,
                                      .WTYPE = s->weight_dtype,
                                      .HAS_BIAS = s->bias.buf != NULL,
                                      .SWIGLU_ALPHA = s->swiglu_alpha,
                                      .SWIGLU_LIMIT = s->swiglu_limit};
    const int64_t n_rows = s->n_rows;
    const struct moe_gemm_buffers buf = {
        .a = {s->a, s->a_rows * s->k_dim},
        .row_token = {s->row_token, n_rows},
        .tile_expert = {s->tile_expert, ceil_div(n_rows, c->gemm_bm)},
        .w = {w, ceil_div(w_start + (expert_end - expert_begin) * moe_kgemm_expert_bytes(s), 4)},
        .result = {s->out, n_rows * s->n_out},
        .bias = {s->bias, moe_kbias_elements(s)}};
    const struct moe_gemm_fields f = {
        .n_rows = n_rows, .expert_begin = expert_begin, .expert_end = expert_end, .w_start = w_start};
    /* A workgroup per BM×BN tile of the output; a group's launch still covers every row tile,
     * and the tiles of experts outside it exit at once. */
    return (moe_klaunch){moe_gemm_args(&p, &buf, &f), ceil_div(s->n_out, c->gemm_bn),
                         ceil_div(n_rows, c->gemm_bm)};
}

bool moe_kuse_matvec(const moe_kconfig *c, const moe_ffn_step *s)
{
    const int64_t used = s->n_experts < s->n_slots ? s->n_experts : s->n_slots;
    return c->matvec_max_rows > 0 && s->n_slots <= c->matvec_max_rows * used;
}

moe_klaunch moe_klaunch_matvec(const moe_kconfig *c, const moe_ffn_step *s, int64_t expert_begin,
                               int64_t expert_end, moe_addr w, int64_t w_start)
{
    const bool slots = s->slot_row.buf != NULL;
    const struct moe_matvec_params p = {.WG = c->matvec_wg,
                                        .COLS = c->matvec_cols,
                                        .K_DIM = s->k_dim,
                                        .N_OUT = s->n_out,
                                        .GATED = s->gated,
                                        .ACT = s->apply_activation ? (int64_t)s->activation : -1,
                                        .GATHER = s->gather,
                                        .HAS_SLOTS = slots,
                                        .TOP_K = s->top_k,
                                        .WTYPE = s->weight_dtype,
                                        .HAS_BIAS = s->bias.buf != NULL,
                                        .SWIGLU_ALPHA = s->swiglu_alpha,
                                        .SWIGLU_LIMIT = s->swiglu_limit};
    const int64_t n_slots = s->n_slots;
    const struct moe_matvec_buffers buf = {
        .a = {s->a, s->a_rows * s->k_dim},
        .slot_row = {s->slot_row, n_slots},
        .slot_expert = {s->slot_expert, n_slots},
        .w = {w, ceil_div(w_start + (expert_end - expert_begin) * moe_kgemm_expert_bytes(s), 4)},
        .result = {s->out, s->n_rows * s->n_out},
        .bias = {s->bias, moe_kbias_elements(s)}};
    const struct moe_matvec_fields f = {
        .n_slots = n_slots, .expert_begin = expert_begin, .expert_end = expert_end, .w_start = w_start};
    return (moe_klaunch){moe_matvec_args(&p, &buf, &f), ceil_div(s->n_out, c->matvec_cols), n_slots};
}

moe_klaunch moe_klaunch_combine(const moe_kconfig *c, const moe_combine_step *s)
{
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens, D = d->d_model, K = d->top_k;
    const struct moe_combine_params p = {.WG = c->wg_big,
                                         .D = D,
                                         .TOP_K = K,
                                         .PASSTHROUGH = d->drop_policy == MOE_DROP_PASSTHROUGH,
                                         .HAS_SHARED = s->shared_out.buf != NULL,
                                         .HAS_SHARED_GATE = s->shared_gate.buf != NULL};
    const struct moe_combine_buffers buf = {.x = {s->x, T * D},
                                            .expert_out = {s->expert_out, s->n_rows * D},
                                            .slot_row = {s->slot_row, T * K},
                                            .weights = {s->topk_weights, T * K},
                                            .shared_out = {s->shared_out, T * D},
                                            .shared_gate = {s->shared_gate, D},
                                            .y = {s->y, T * D}};
    const struct moe_combine_fields f = {.n_tokens = T};
    /* A workgroup per token, exactly: the kernels do not check n_tokens (see combine.h). */
    return (moe_klaunch){moe_combine_args(&p, &buf, &f), T, 1};
}

moe_klaunch moe_klaunch_stats(const moe_kconfig *c, const moe_stats_step *s)
{
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens, E = d->n_experts;
    const struct moe_stats_params p = {
        .WG = c->wg_big, .E = E, .TOP_K = d->top_k, .SIGMOID = d->score_func == MOE_SCORE_SIGMOID};
    const struct moe_stats_buffers buf = {.logits = {s->logits, T * E},
                                          .counts = {s->expert_counts, E + 1},
                                          .ws = {s->workspace, 2 * T + E},
                                          .losses = {s->losses, 2}};
    const struct moe_stats_fields f = {.n_tokens = T};
    /* One workgroup: the sums run in token order. */
    return (moe_klaunch){moe_stats_args(&p, &buf, &f), 1, 1};
}
