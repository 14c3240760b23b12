/*
 * layer.c — layer creation (weights uploaded once into the arena) and the forward's
 * orchestration, written once for every backend: lay out the scratch region for this token
 * count, then route → plan → grouped expert GEMMs → shared expert → combine → stats, with
 * no read-back until the result. Every dispatch size is known on the host because the
 * grouped GEMM runs over the padded row bound (moe_plan_rows), not the actual counts.
 */
#include "alloc.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- layer creation -------------------------------------------------------------------- */

/* One tensor of a layer's weights block: packed by the backend (src) or copied raw. */
typedef struct weight_item {
    moe_addr *dst;
    const moe_weight_src *src;
    const float *raw;
    size_t raw_bytes;
} weight_item;

/* A layer's weights block on one backend: its tensors, in the block's order, and their
 * offsets (layer_block_init), so measuring (moe_layer_block_bytes) and creating are one code. */
typedef struct layer_block {
    moe_weight_src router, ffn_in, ffn_down, shared_in, shared_down;
    weight_item all[9];
    moe_layer_addrs a;
    size_t bytes;
    bool overflow;
    moe_group_act routed_act, shared_act; /* moe_layer's */
} layer_block;

/* What one product of a group runs on: the layer's activation_dtype where the backend has its kernels
 * (Q8_0: integer dot products; BF16: bfloat16 pairs) and the product's format takes it, else F32. Each
 * product decides for itself (a Q4_K_M file's Q4_K gate/up with a Q6_K down: gate/up on the opt-in);
 * the two steps prepare their rows one after the other in the same scratch (moe_layout_forward). */
static moe_dtype product_act(const moe_backend *be, moe_dtype asked, bool here, moe_dtype format)
{
    const bool backend = asked == MOE_DTYPE_Q8_0 ? be->int_dot : asked == MOE_DTYPE_BF16 && be->bf16_dot;
    return here && backend && moe_dtype_takes_activations(format, asked) ? asked : MOE_DTYPE_F32;
}
static moe_group_act group_act(const moe_backend *be, moe_dtype asked, bool here, moe_dtype in,
                               moe_dtype down)
{
    return (moe_group_act){product_act(be, asked, here, in), product_act(be, asked, here, down)};
}

/* An ffn step's activations for a group running `act`: its input step's (x), or its down step's (the
 * intermediate, which integer activations keep in int16: backend.h). */
static moe_act_quant step_act(moe_dtype act, bool down)
{
    if (act == MOE_DTYPE_Q8_0) return down ? MOE_ACT_INT16 : MOE_ACT_INT8;
    return act == MOE_DTYPE_BF16 ? MOE_ACT_BF16X2 : MOE_ACT_FLOAT;
}

/* `in_bias` is the experts' gate and up biases side by side (gated; NULL when only measuring). */
static void layer_block_init(layer_block *b, moe_backend *be, const moe_layer_desc *dp,
                             const moe_layer_tensors *t, const float *in_bias)
{
    const moe_layer_desc d = *dp;
    const bool gated = moe_activation_is_gated(d.activation);
    const bool shared = d.d_ff_shared > 0;
    const moe_dtype wt = d.weight_dtype, st_ = d.shared_weight_dtype;
    const moe_dtype wd = d.down_weight_dtype, sd = d.shared_down_weight_dtype;
    /* A layer placed over contexts (placement.c) has a home without routed experts and parts with
     * only routed experts: what `t` leaves out (router.data, up NULL) is not uploaded. */
    const bool router_here = t->router.data != NULL, experts_here = t->up != NULL;
    memset(b, 0, sizeof *b);
    b->routed_act = group_act(be, d.activation_dtype, experts_here, wt, wd);
    b->shared_act = group_act(be, d.activation_dtype, shared, st_, sd);
    /* The tensors read with integer activations are packed for them (moe_weight_src.int_dot). */
    const moe_dtype q8 = MOE_DTYPE_Q8_0;
    b->router = (moe_weight_src){&t->router, NULL, 1, d.n_experts, d.d_model, MOE_DTYPE_F32, false};
    b->ffn_in =
        (moe_weight_src){gated ? t->gate : t->up, gated ? t->up : NULL, d.n_experts, d.d_ff, d.d_model, wt,
                         b->routed_act.in == q8};
    b->ffn_down =
        (moe_weight_src){t->down, NULL, d.n_experts, d.d_model, d.d_ff, wd, b->routed_act.down == q8};
    b->shared_in = (moe_weight_src){gated ? &t->shared_gate : &t->shared_up,
                                    gated ? &t->shared_up : NULL,
                                    1,
                                    d.d_ff_shared,
                                    d.d_model,
                                    st_,
                                    b->shared_act.in == q8};
    b->shared_down =
        (moe_weight_src){&t->shared_down, NULL, 1, d.d_model, d.d_ff_shared, sd, b->shared_act.down == q8};
    const size_t E = (size_t)d.n_experts, n_in_bias = E * (size_t)d.d_ff * (gated ? 2u : 1u);
    moe_layer_addrs *a = &b->a;
    const weight_item all[] = {
        {router_here ? &a->router : NULL, &b->router, NULL, 0},
        {router_here && (d.has_selection_bias || d.router_has_bias) ? &a->router_bias : NULL, NULL,
         t->router_bias, sizeof(float) * E},
        {experts_here && d.expert_has_bias ? &a->in_bias : NULL, NULL, gated ? in_bias : t->up_bias,
         sizeof(float) * n_in_bias},
        {experts_here && d.expert_has_bias ? &a->down_bias : NULL, NULL, t->down_bias,
         sizeof(float) * E * (size_t)d.d_model},
        {experts_here ? &a->ffn_in : NULL, &b->ffn_in, NULL, 0},
        {experts_here ? &a->ffn_down : NULL, &b->ffn_down, NULL, 0},
        {shared ? &a->shared_in : NULL, &b->shared_in, NULL, 0},
        {shared ? &a->shared_down : NULL, &b->shared_down, NULL, 0},
        {d.shared_expert_gate ? &a->shared_gate : NULL, NULL, t->shared_expert_gate,
         sizeof(float) * (size_t)d.d_model},
    };
    _Static_assert(sizeof all == sizeof b->all, "layer_block.all holds every tensor");
    memcpy(b->all, all, sizeof all);
    /* The whole block is measured first, allocated once, then each tensor uploaded in place. */
    moe_bump bump = {.alignment = be->alignment};
    for (size_t i = 0; i < sizeof b->all / sizeof b->all[0]; i++) {
        const weight_item *it = &b->all[i];
        if (it->dst)
            it->dst->offset =
                moe_bump_take(&bump, it->src ? be->ops->weight_bytes(be, it->src) : it->raw_bytes);
    }
    b->bytes = bump.offset;
    b->overflow = bump.overflow;
}

size_t moe_layer_block_bytes(moe_backend *be, const moe_layer_desc *d, const moe_layer_tensors *t)
{
    layer_block b;
    layer_block_init(&b, be, d, t, NULL);
    return b.overflow ? SIZE_MAX : b.bytes;
}

moe_status moe_layer_create_from_tensors(moe_context *ctx, const moe_layer_desc *desc,
                                         const moe_layer_tensors *t, moe_layer **out)
{
    const moe_layer_desc d = *desc;
    moe_backend *be = ctx->be;
    const bool gated = moe_activation_is_gated(d.activation);
    /* The experts' biases, gate's and up's of an expert side by side as the kernels read them. */
    const size_t E = (size_t)d.n_experts, F = (size_t)d.d_ff;
    float *in_bias = NULL;
    if (t->up && d.expert_has_bias && gated) {
        in_bias = moe_malloc(sizeof(float) * E * F * 2);
        if (!in_bias) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
        for (size_t e = 0; e < E; e++) {
            memcpy(in_bias + 2 * e * F, t->gate_bias + e * F, sizeof(float) * F);
            memcpy(in_bias + (2 * e + 1) * F, t->up_bias + e * F, sizeof(float) * F);
        }
    }
    layer_block b;
    layer_block_init(&b, be, &d, t, in_bias);
    moe_layer *layer = b.overflow ? NULL : moe_calloc(1, sizeof *layer);
    if (!layer) {
        moe_free(in_bias);
        if (b.overflow)
            return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "the layer's weights do not fit in size_t bytes");
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    layer->ctx = ctx;
    layer->desc = d;
    layer->weights_bytes = b.bytes;
    layer->routed_act = b.routed_act;
    layer->shared_act = b.shared_act;
    moe_status st = moe_arena_alloc(&ctx->arena, b.bytes, MOE_BACKEND_BUFFER_WEIGHTS, &layer->weights);
    if (st != MOE_OK) {
        moe_free(in_bias);
        moe_free(layer);
        return st;
    }
    ctx->n_layers++; /* from here moe_layer_destroy undoes it all */
    for (size_t i = 0; i < sizeof b.all / sizeof b.all[0] && st == MOE_OK; i++) {
        const weight_item *it = &b.all[i];
        if (!it->dst) continue;
        it->dst->buf = layer->weights;
        st = it->src ? be->ops->weight_upload(be, *it->dst, it->src)
                     : be->ops->buffer_write(be, *it->dst, it->raw, it->raw_bytes);
    }
    moe_free(in_bias);
    layer->w = b.a;
    if (st != MOE_OK) {
        moe_layer_destroy(layer);
        return st;
    }
    *out = layer;
    return MOE_OK;
}

/* The routed experts' two tensors of `layer` for one expert of `t`, as layer creation builds them
 * (batch 1), and the bytes of one expert in each; false when the backend's layout of the layer's
 * experts is not one expert after another (a batch of n takes n times one expert's bytes). */
static bool expert_slices(const moe_layer *layer, const moe_layer_tensors *t, int64_t e, moe_weight_src *in,
                          moe_weight_src *down, moe_matrix_src m[3], size_t *in_bytes, size_t *down_bytes)
{
    moe_backend *be = layer->ctx->be;
    const bool gated = moe_activation_is_gated(layer->desc.activation);
    moe_layer_desc one = layer->desc;
    one.n_experts = 1;
    m[0] = gated ? t->gate[e] : (moe_matrix_src){0};
    m[1] = t->up[e];
    m[2] = t->down[e];
    const moe_layer_tensors t1 = {.gate = gated ? &m[0] : NULL, .up = &m[1], .down = &m[2]};
    layer_block b;
    layer_block_init(&b, be, &one, &t1, NULL);
    *in = b.ffn_in;
    *down = b.ffn_down;
    *in_bytes = be->ops->weight_bytes(be, in);
    *down_bytes = be->ops->weight_bytes(be, down);
    moe_weight_src all_in = *in, all_down = *down;
    all_in.batch = all_down.batch = layer->desc.n_experts;
    size_t n_in, n_down;
    return b.routed_act.in == layer->routed_act.in && b.routed_act.down == layer->routed_act.down &&
           moe_mul_size(*in_bytes, (size_t)layer->desc.n_experts, &n_in) &&
           moe_mul_size(*down_bytes, (size_t)layer->desc.n_experts, &n_down) &&
           be->ops->weight_bytes(be, &all_in) == n_in && be->ops->weight_bytes(be, &all_down) == n_down;
}

moe_status moe_layer_expert_bytes(const moe_layer *layer, const moe_layer_tensors *t, size_t *bytes)
{
    moe_weight_src in, down;
    moe_matrix_src m[3];
    size_t in_bytes, down_bytes;
    if (!expert_slices(layer, t, 0, &in, &down, m, &in_bytes, &down_bytes))
        return moe_fail(
            layer->ctx, MOE_ERROR_UNSUPPORTED,
            "%s does not lay a layer's experts out one after another; it cannot hold an expert cache",
            layer->ctx->be->ops->name);
    const moe_layer_desc *d = &layer->desc;
    const size_t bias =
        d->expert_has_bias
            ? sizeof(float) *
                  (size_t)(d->d_ff * (moe_activation_is_gated(d->activation) ? 2 : 1) + d->d_model)
            : 0;
    *bytes = in_bytes + down_bytes + bias;
    return MOE_OK;
}

moe_status moe_layer_expert_dtypes(const moe_layer *layer, const moe_layer_tensors *t, moe_dtype *in,
                                   moe_dtype *down)
{
    moe_weight_src w_in, w_down;
    moe_matrix_src m[3];
    size_t in_bytes, down_bytes;
    if (!expert_slices(layer, t, 0, &w_in, &w_down, m, &in_bytes, &down_bytes))
        return moe_fail(layer->ctx, MOE_ERROR_INTERNAL,
                        "an expert cache on a layout that is not expert by expert");
    *in = w_in.dtype;
    *down = w_down.dtype;
    return MOE_OK;
}

moe_status moe_layer_upload_expert(moe_layer *layer, int64_t slot, const moe_layer_tensors *t, int64_t e)
{
    moe_backend *be = layer->ctx->be;
    const moe_layer_desc *d = &layer->desc;
    moe_weight_src in, down;
    moe_matrix_src m[3];
    size_t in_bytes, down_bytes;
    if (!expert_slices(layer, t, e, &in, &down, m, &in_bytes, &down_bytes))
        return moe_fail(layer->ctx, MOE_ERROR_INTERNAL,
                        "an expert cache on a layout that is not expert by expert");
    moe_addr at_in = layer->w.ffn_in, at_down = layer->w.ffn_down;
    at_in.offset += (size_t)slot * in_bytes;
    at_down.offset += (size_t)slot * down_bytes;
    moe_status st = be->ops->weight_upload(be, at_in, &in);
    if (st == MOE_OK) st = be->ops->weight_upload(be, at_down, &down);
    if (st != MOE_OK || !d->expert_has_bias) return st;
    /* The biases as creation lays them out: [slot][gate, up][d_ff] (or [slot][d_ff]), [slot][d_model]. */
    const size_t F = (size_t)d->d_ff, D = (size_t)d->d_model;
    const bool gated = moe_activation_is_gated(d->activation);
    moe_addr at = layer->w.in_bias;
    at.offset += sizeof(float) * (size_t)slot * F * (gated ? 2 : 1);
    if (gated) {
        st = be->ops->buffer_write(be, at, t->gate_bias + (size_t)e * F, sizeof(float) * F);
        at.offset += sizeof(float) * F;
    }
    if (st == MOE_OK) st = be->ops->buffer_write(be, at, t->up_bias + (size_t)e * F, sizeof(float) * F);
    at = layer->w.down_bias;
    at.offset += sizeof(float) * (size_t)slot * D;
    if (st == MOE_OK) st = be->ops->buffer_write(be, at, t->down_bias + (size_t)e * D, sizeof(float) * D);
    return st;
}

moe_status moe_layer_create(moe_context *ctx, const moe_layer_desc *desc, const moe_layer_weights *weights,
                            moe_layer **out)
{
    moe_clear_error(ctx);
    return moe_layer_create_on(ctx, NULL, desc, weights, out);
}

moe_status moe_layer_create_on(moe_context *ctx, const moe_placement *placement, const moe_layer_desc *desc,
                               const moe_layer_weights *weights, moe_layer **out)
{
    if (!ctx) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context is NULL");
    if (!out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "out_layer is NULL");
    if (!weights) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "weights is NULL");
    moe_status st = moe_context_check_live(ctx, "moe_layer_create");
    if (st != MOE_OK) return st;
    moe_layer_weights w = {.struct_size = sizeof w};
    st = moe_abi_in(ctx, &moe_abi_layer_weights, weights, &w);
    if (st != MOE_OK) return st;
    weights = &w;
    moe_layer_desc d;
    st = moe_validate_layer(ctx, desc, weights, &d);
    if (st != MOE_OK) return st;

    moe_layer_tensors t;
    moe_matrix_src *m = NULL;
    st = moe_layer_tensors_of(ctx, &d, weights, &t, &m);
    if (st != MOE_OK) return st;
    st = placement ? moe_placed_create(placement, &d, &t, NULL, out)
                   : moe_layer_create_from_tensors(ctx, &d, &t, out);
    moe_free(m);
    return st;
}

moe_status moe_layer_tensors_of(moe_context *ctx, const moe_layer_desc *dp, const moe_layer_weights *weights,
                                moe_layer_tensors *out, moe_matrix_src **matrices)
{
    /* The contiguous [E][rows][cols] arrays as one matrix per expert, rows of their format's
     * bytes (validation checked that every size fits). */
    const moe_layer_desc d = *dp;
    const moe_dtype dt = moe_weights_dtype(weights), sdt = moe_weights_shared_dtype(weights);
    const size_t E = (size_t)d.n_experts;
    const size_t per_in = (size_t)d.d_ff * moe_dtype_row_bytes(dt, d.d_model);
    const size_t per_down = (size_t)d.d_model * moe_dtype_row_bytes(dt, d.d_ff);
    moe_matrix_src *m = moe_calloc(3 * E, sizeof *m);
    if (!m) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    moe_matrix_src *gate = m, *up = m + E, *down = m + 2 * E;
    const unsigned char *g = weights->gate, *u = weights->up, *dn = weights->down;
    for (size_t e = 0; e < E; e++) {
        gate[e] = (moe_matrix_src){g ? g + e * per_in : NULL, dt, NULL, 0};
        up[e] = (moe_matrix_src){u + e * per_in, dt, NULL, 0};
        down[e] = (moe_matrix_src){dn + e * per_down, dt, NULL, 0};
    }
    *out = (moe_layer_tensors){
        .router = {weights->router, MOE_DTYPE_F32, NULL, 0},
        .router_bias = weights->router_bias,
        .gate = moe_activation_is_gated(d.activation) ? gate : NULL, /* a stray gate is never read */
        .up = up,
        .down = down,
        .shared_gate = {weights->shared_gate, sdt, NULL, 0},
        .shared_up = {weights->shared_up, sdt, NULL, 0},
        .shared_down = {weights->shared_down, sdt, NULL, 0},
        .shared_expert_gate = weights->shared_expert_gate,
        .gate_bias = weights->gate_bias,
        .up_bias = weights->up_bias,
        .down_bias = weights->down_bias,
    };
    *matrices = m;
    return MOE_OK;
}

static void layer_free(moe_layer *layer);

void moe_layer_destroy(moe_layer *layer)
{
    if (!layer ||
        moe_context_defer_destroy(layer->ctx, layer->pins, &layer->destroy_pending, "moe_layer_destroy"))
        return;
    layer_free(layer);
}

void moe_layer_unpin(moe_layer *layer)
{
    if (--layer->pins == 0 && layer->destroy_pending) layer_free(layer);
}

static void layer_free(moe_layer *layer)
{
    moe_context *ctx = layer->ctx;
    moe_context_child_destroying(ctx, layer->serial, "moe_layer_destroy");
    moe_arena_free(&ctx->arena, layer->weights, layer->weights_bytes, MOE_BACKEND_BUFFER_WEIGHTS);
    moe_placed_free(layer->placed);
    moe_ep_free(layer->ep);
    moe_usage_free(layer->usage);
    moe_free(layer);
    moe_context_release_child(ctx, &ctx->n_layers);
}

moe_dtype moe_layer_activation_dtype(const moe_layer *layer)
{
    if (!layer) return MOE_DTYPE_DEFAULT;
    return layer->placed ? moe_placed_routed_act(layer->placed)
           : layer->ep   ? moe_ep_routed_act(layer->ep)
                         : moe_group_act_reported(layer->routed_act);
}

/* ---- the forward ------------------------------------------------------------------------ */

void moe_layout_forward(const moe_layer *layer, int64_t T, bool host_x, bool host_y, unsigned steps,
                        size_t base, moe_forward_layout *L, bool *overflow)
{
    const moe_layer_desc *d = &layer->desc;
    const moe_backend *be = layer->ctx->be;
    const size_t f = sizeof(float), i = sizeof(int32_t);
    const size_t TD = (size_t)T * (size_t)d->d_model, TK = (size_t)T * (size_t)d->top_k;
    moe_bump b = {.offset = base, .alignment = be->alignment};
    const bool routing = steps & (MOE_STEPS_ROUTE | MOE_STEPS_COMBINE), experts = steps & MOE_STEPS_EXPERTS;
    const bool shared = (steps & MOE_STEPS_SHARED) && d->d_ff_shared > 0;
    memset(L, 0, sizeof *L);
    L->n_rows = moe_plan_rows(d, T, be->row_tile);
    const size_t R = (size_t)L->n_rows;
    /* Offsets only; the scratch allocation is attached once it is reserved (a non-NULL
     * placeholder marks the fields this forward uses). */
#define TAKE(field, bytes)                                                                                   \
    (L->field.offset = moe_bump_take(&b, (bytes)), L->field.buf = (moe_backend_buffer *)1)
    if (host_x) TAKE(x, f * TD);
    if (routing) {
        TAKE(logits, f * (size_t)T * (size_t)d->n_experts);
        /* One workspace for the steps that need one, in turn: route (T·(E + n_group) floats),
         * plan (per-block counts, at most T·E ints), stats (2·T + E floats, or E doubles). */
        const size_t ws = (size_t)T * (size_t)(d->n_experts + d->n_group);
        const size_t ws_stats = 2 * (size_t)T + 2 * (size_t)d->n_experts;
        TAKE(route_ws, f * (ws > ws_stats ? ws : ws_stats));
        TAKE(topk_weights, f * TK);
        TAKE(expert_counts, i * ((size_t)d->n_experts + 1));
        TAKE(expert_offsets, i * ((size_t)d->n_experts + 1));
        TAKE(losses, f * 2);
    }
    TAKE(topk_ids, i * TK);
    TAKE(row_token, i * R);
    TAKE(slot_row, i * TK);
    TAKE(tile_expert, i * (R / (size_t)be->row_tile));
    if (experts) TAKE(h, f * R * (size_t)d->d_ff);
    TAKE(o, f * R * (size_t)d->d_model);
    if (shared) {
        TAKE(shared_h, f * (size_t)T * (size_t)d->d_ff_shared);
        TAKE(shared_o, f * TD);
    }
    if (host_y) TAKE(y, f * TD);
    /* The opt-in steps' prepared input rows, one step at a time: x for gate/up, h for down (int8 and
     * int16, or bfloat16 pairs). */
    size_t a_q = 0;
    const moe_group_act none = {MOE_DTYPE_F32, MOE_DTYPE_F32};
    const moe_group_act racts[2] = {experts ? layer->routed_act : none, shared ? layer->shared_act : none};
    const int64_t ffs[2] = {d->d_ff, d->d_ff_shared};
    const size_t down_rows[2] = {R, (size_t)T};
    for (int g = 0; g < 2; g++) {
        /* (a step on float activations prepares no rows) */
        const moe_act_quant qi = step_act(racts[g].in, false), qd = step_act(racts[g].down, true);
        const size_t in = qi == MOE_ACT_FLOAT ? 0 : (size_t)T * moe_act_row_bytes(qi, d->d_model),
                     down = qd == MOE_ACT_FLOAT ? 0 : down_rows[g] * moe_act_row_bytes(qd, ffs[g]);
        a_q = in > a_q ? in : a_q;
        a_q = down > a_q ? down : a_q;
    }
    if (a_q) TAKE(a_q, a_q);
#undef TAKE
    L->bytes = b.offset;
    *overflow = b.overflow;
}

void moe_layout_attach(moe_forward_layout *L, moe_backend_buffer *buf)
{
    moe_addr *fields[] = {&L->x,
                          &L->logits,
                          &L->route_ws,
                          &L->topk_ids,
                          &L->topk_weights,
                          &L->expert_counts,
                          &L->expert_offsets,
                          &L->row_token,
                          &L->slot_row,
                          &L->tile_expert,
                          &L->h,
                          &L->o,
                          &L->shared_h,
                          &L->shared_o,
                          &L->y,
                          &L->losses,
                          &L->a_q};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (fields[i]->buf) fields[i]->buf = buf;
}

moe_status moe_run_steps(moe_layer *layer, int64_t T, const moe_forward_layout *L, moe_addr x, moe_addr y,
                         unsigned steps, bool want_losses, const moe_forward_io *io)
{
    /* The one place the capacity is fitted to this forward: at or above its T·k rows it is
     * unlimited (0), so every backend's kernels see a value that fits their 32-bit integers. */
    moe_layer_desc forward_desc = layer->desc;
    forward_desc.expert_capacity = moe_effective_capacity(&layer->desc, T);
    const moe_layer_desc *d = &forward_desc;
    moe_backend *be = layer->ctx->be;
    const moe_backend_ops *ops = be->ops;
    moe_status st = ops->begin(be);
    if (st != MOE_OK) return st;
    for (size_t i = 0; io && i < io->n_in && st == MOE_OK; i++)
        st = ops->stage_in(be, io->in[i].at, io->in[i].src, io->in[i].bytes);

    const moe_route_step route = {d,         T,           x,           layer->w.router, layer->w.router_bias,
                                  L->logits, L->route_ws, L->topk_ids, L->topk_weights};
    const moe_plan_step plan = {d,
                                T,
                                L->n_rows,
                                L->topk_ids,
                                L->route_ws,
                                L->expert_counts,
                                L->expert_offsets,
                                L->row_token,
                                L->slot_row,
                                L->tile_expert};
    const bool gated = moe_activation_is_gated(d->activation);
    const moe_ffn_step up = {.n_rows = L->n_rows,
                             .k_dim = d->d_model,
                             .n_out = d->d_ff,
                             .a = x,
                             .a_rows = T,
                             .gather = true,
                             .row_token = L->row_token,
                             .tile_expert = L->tile_expert,
                             .weights = layer->w.ffn_in,
                             .weight_dtype = d->weight_dtype,
                             .act_quant = step_act(layer->routed_act.in, false),
                             .a_q = L->a_q,
                             .n_experts = d->n_experts,
                             .gated = gated,
                             .activation = d->activation,
                             .apply_activation = true,
                             .swiglu_alpha = d->swiglu_alpha,
                             .swiglu_limit = d->swiglu_limit,
                             .bias = layer->w.in_bias,
                             .out = L->h,
                             .n_slots = T * d->top_k,
                             .top_k = d->top_k,
                             .slot_row = L->slot_row,
                             .slot_expert = L->topk_ids};
    const moe_ffn_step down = {.n_rows = L->n_rows,
                               .k_dim = d->d_ff,
                               .n_out = d->d_model,
                               .a = L->h,
                               .a_rows = L->n_rows,
                               .gather = false,
                               .row_token = L->row_token,
                               .tile_expert = L->tile_expert,
                               .weights = layer->w.ffn_down,
                               .weight_dtype = d->down_weight_dtype,
                               .act_quant = step_act(layer->routed_act.down, true),
                               .a_q = L->a_q,
                               .n_experts = d->n_experts,
                               .bias = layer->w.down_bias,
                               .out = L->o,
                               .n_slots = T * d->top_k,
                               .top_k = d->top_k,
                               .slot_row = L->slot_row,
                               .slot_expert = L->topk_ids};
    const moe_combine_step combine = {
        d, T, L->n_rows, x, L->o, L->slot_row, L->topk_weights, L->shared_o, layer->w.shared_gate, y};
    const moe_stats_step stats = {d, T, L->logits, L->expert_counts, L->route_ws, L->losses};

    if (st == MOE_OK && (steps & MOE_STEPS_ROUTE)) {
        st = ops->route(be, &route);
        if (st == MOE_OK) st = ops->plan(be, &plan);
    }
    if (st == MOE_OK && (steps & MOE_STEPS_EXPERTS)) {
        st = ops->ffn(be, &up);
        if (st == MOE_OK) st = ops->ffn(be, &down);
    }
    if (st == MOE_OK && (steps & MOE_STEPS_SHARED) && d->d_ff_shared > 0) {
        /* The shared expert is one dense expert over all tokens: the same GEMM step. */
        const moe_ffn_step sup = {.n_rows = T,
                                  .k_dim = d->d_model,
                                  .n_out = d->d_ff_shared,
                                  .a = x,
                                  .a_rows = T,
                                  .weights = layer->w.shared_in,
                                  .weight_dtype = d->shared_weight_dtype,
                                  .act_quant = step_act(layer->shared_act.in, false),
                                  .a_q = L->a_q,
                                  .n_experts = 1,
                                  .gated = gated,
                                  .activation = d->activation,
                                  .apply_activation = true,
                                  .swiglu_alpha = d->swiglu_alpha,
                                  .swiglu_limit = d->swiglu_limit,
                                  .out = L->shared_h,
                                  .n_slots = T,
                                  .top_k = 1};
        const moe_ffn_step sdown = {.n_rows = T,
                                    .k_dim = d->d_ff_shared,
                                    .n_out = d->d_model,
                                    .a = L->shared_h,
                                    .a_rows = T,
                                    .weights = layer->w.shared_down,
                                    .weight_dtype = d->shared_down_weight_dtype,
                                    .act_quant = step_act(layer->shared_act.down, true),
                                    .a_q = L->a_q,
                                    .n_experts = 1,
                                    .out = L->shared_o,
                                    .n_slots = T,
                                    .top_k = 1};
        st = ops->ffn(be, &sup);
        if (st == MOE_OK) st = ops->ffn(be, &sdown);
    }
    if (st == MOE_OK && (steps & MOE_STEPS_COMBINE)) {
        st = ops->combine(be, &combine);
        if (st == MOE_OK && want_losses) st = ops->stats(be, &stats);
    }
    for (size_t i = 0; io && i < io->n_out && st == MOE_OK; i++)
        st = ops->stage_out(be, io->out[i].at, io->out[i].dst, io->out[i].bytes);
    const moe_status sub = ops->submit(be);
    return st != MOE_OK ? st : sub;
}

size_t moe_forward_reads(moe_layer *layer, int64_t T, const moe_forward_layout *L, moe_addr ya, float *y,
                         const moe_forward_stats *s, float losses[2], moe_host_copy *out)
{
    const moe_layer_desc *d = &layer->desc;
    const size_t TK = (size_t)T * (size_t)d->top_k, E = (size_t)d->n_experts;
    moe_addr dropped = L->expert_counts;
    dropped.offset += sizeof(int32_t) * E;
    const struct {
        bool wanted;
        moe_addr at;
        void *dst;
        size_t bytes;
    } reads[MOE_FORWARD_READS] = {
        {y != NULL, ya, y, sizeof(float) * (size_t)T * (size_t)d->d_model},
        {layer->usage != NULL, L->expert_counts, layer->usage ? moe_usage_fetched(layer) : NULL,
         sizeof(int32_t) * (E + 1)},
        {s && s->topk_ids, L->topk_ids, s ? s->topk_ids : NULL, TK * sizeof(int32_t)},
        {s && s->topk_weights, L->topk_weights, s ? s->topk_weights : NULL, TK * sizeof(float)},
        {s && s->expert_counts, L->expert_counts, s ? s->expert_counts : NULL, E * sizeof(int32_t)},
        {s && s->dropped_count, dropped, s ? s->dropped_count : NULL, sizeof(int32_t)},
        {s && (s->aux_loss || s->z_loss), L->losses, losses, 2 * sizeof(float)},
    };
    size_t n = 0;
    for (size_t i = 0; i < MOE_FORWARD_READS; i++)
        if (reads[i].wanted)
            out[n++] = (moe_host_copy){.at = reads[i].at, .dst = reads[i].dst, .bytes = reads[i].bytes};
    return n;
}

void moe_forward_stats_done(moe_forward_stats *s, const float losses[2], double device_ms)
{
    if (!s) return;
    if (s->aux_loss) *s->aux_loss = losses[0];
    if (s->z_loss) *s->z_loss = losses[1];
    if (s->device_ms) *s->device_ms = device_ms;
}

typedef enum forward_mode {
    FORWARD_WAIT,   /* submit, then wait: moe_layer_forward, moe_layer_forward_buffers */
    FORWARD_SUBMIT, /* return once submitted: moe_layer_forward_async */
    FORWARD_RECORD  /* the backend records where it was told to; nothing submitted */
} forward_mode;

/* Every forward: x/y are host pointers, or (when NULL) the device buffers xb/yb (the only
 * choice with FORWARD_SUBMIT and FORWARD_RECORD). FORWARD_RECORD gives the forward a scratch
 * region of its own, returned in *record_scratch (*record_bytes bytes) on success. */
static moe_status forward(moe_layer *layer, int64_t T, const float *x, float *y, const moe_buffer *xb,
                          moe_buffer *yb, moe_forward_stats *stats, forward_mode mode,
                          moe_backend_buffer **record_scratch, size_t *record_bytes)
{
    moe_context *ctx = layer->ctx;
    moe_backend *be = ctx->be;
    const moe_layer_desc *d = &layer->desc;
    moe_status st = moe_context_check_live(ctx, "the forward");
    if (st != MOE_OK) return st;
    st = moe_validate_tokens(ctx, d, T, true);
    if (st != MOE_OK) return st;
    moe_forward_stats stats_in = {.struct_size = sizeof stats_in}; /* the caller's, by its struct_size */
    if (stats) {
        st = moe_abi_in(ctx, &moe_abi_forward_stats, stats, &stats_in);
        if (st != MOE_OK) return st;
        stats = &stats_in;
    }
    const int64_t TD = T * d->d_model;
    if (xb) {
        if (xb->ctx != ctx || yb->ctx != ctx)
            return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                            "x and y must be buffers of the layer's context");
        if (xb == yb) return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "x and y must be different buffers");
        if (xb->n_elements < TD || yb->n_elements < TD)
            return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                            "buffers hold %lld and %lld elements; %lld tokens of d_model %lld need %lld",
                            (long long)xb->n_elements, (long long)yb->n_elements, (long long)T,
                            (long long)d->d_model, (long long)TD);
    }

    if (layer->ep) return moe_layer_check_unplaced(layer, "this forward");
    if (layer->placed) {
        if (mode != FORWARD_WAIT)
            return moe_layer_check_unplaced(layer,
                                            mode == FORWARD_SUBMIT ? "moe_layer_forward_async" : "recording");
        return moe_placed_forward(layer, T, x, y, xb, yb, stats);
    }
    st = moe_check_row_tile(ctx);
    if (st != MOE_OK) return st;
    moe_forward_layout L;
    bool overflow;
    moe_layout_forward(layer, T, x != NULL, y != NULL, MOE_STEPS_ALL, 0, &L, &overflow);
    if (overflow)
        return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "the forward's scratch does not fit in size_t bytes");
    if (L.n_rows > MOE_MAX_INDEX)
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                        "%lld tokens give %lld padded rows with %s's row tile of %lld; the plan indexes rows "
                        "with int32 (at most %lld)",
                        (long long)T, (long long)L.n_rows, be->ops->name, (long long)be->row_tile,
                        (long long)MOE_MAX_INDEX);
    moe_backend_buffer *s = NULL;
    if (record_scratch) {
        /* A recorded forward runs whenever the application submits it: it gets a scratch region
         * of its own, which nothing else ever moves or overwrites. */
        st = moe_arena_alloc(&ctx->arena, L.bytes, MOE_BACKEND_BUFFER_SCRATCH, &s);
        if (st != MOE_OK) return st;
    } else {
        /* Growing the scratch frees the region forwards in flight still use: they finish first. */
        if (L.bytes > ctx->arena.scratch_bytes) {
            st = moe_context_wait_all(ctx);
            if (st != MOE_OK) return st;
        }
        st = moe_arena_reserve_scratch(&ctx->arena, L.bytes);
        if (st != MOE_OK) return st;
        s = ctx->arena.scratch;
    }
    moe_layout_attach(&L, s);

    const size_t bytes = (size_t)TD * sizeof(float);
    const moe_addr xa = x ? L.x : moe_buffer_addr(xb);
    const moe_addr ya = y ? L.y : moe_buffer_addr(yb);
    /* Host x, y and what is read back travel with the forward's own submission (only a
     * FORWARD_WAIT has host x and y, or reads anything back). */
    const moe_host_copy in = {.at = xa, .src = x, .bytes = bytes};
    moe_host_copy out[MOE_FORWARD_READS];
    float losses[2] = {0.0f, 0.0f};
    const size_t n_out =
        mode == FORWARD_WAIT ? moe_forward_reads(layer, T, &L, ya, y, stats, losses, out) : 0;
    const moe_forward_io io = {&in, x ? 1 : 0, out, n_out};
    const bool want_losses = stats && (stats->aux_loss || stats->z_loss);
    st = moe_run_steps(layer, T, &L, xa, ya, MOE_STEPS_ALL, want_losses, &io);
    if (record_scratch) {
        if (st == MOE_OK) {
            moe_usage_uncounted(layer); /* the application submits it, maybe many times */
            *record_scratch = s;
            *record_bytes = L.bytes;
        } else {
            moe_arena_free(&ctx->arena, s, L.bytes, MOE_BACKEND_BUFFER_SCRATCH);
        }
        return st;
    }
    if (st != MOE_OK) return st;
    /* Submitted: the device runs it after the forwards before it, on the same scratch region
     * (each backend orders its submissions). Its objects are in flight until the next wait. */
    moe_layer_submitted(layer, xb, yb);
    if (mode == FORWARD_SUBMIT) {
        moe_usage_uncounted(layer);
        return MOE_OK;
    }
    st = moe_context_wait_all(ctx); /* y and the reads are there when it succeeds */
    if (st == MOE_OK) moe_forward_stats_done(stats, losses, be->last_device_ms);
    if (st == MOE_OK && layer->usage) moe_usage_commit(layer, T);
    return st;
}

moe_status moe_check_row_tile(moe_context *ctx)
{
    /* Validation bounded the padded rows for tiles up to MOE_MAX_ROW_TILE; the backend's own
     * tile gives the same bound within one tile, checked here rather than trusted. */
    const moe_backend *be = ctx->be;
    if (be->row_tile < 1 || be->row_tile > MOE_MAX_ROW_TILE)
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED, "%s: a row tile of %lld rows; the plan allows 1..%d",
                        be->ops->name, (long long)be->row_tile, MOE_MAX_ROW_TILE);
    return MOE_OK;
}

moe_status moe_layer_check_unplaced(const moe_layer *layer, const char *what)
{
    if (layer->ep)
        return moe_fail(
            layer->ctx, MOE_ERROR_UNSUPPORTED,
            "%s: the layer is one rank of an expert-parallel layer (moe_layer_create_ep), which runs "
            "only with moe_layer_forward, a collective call of every rank",
            what);
    if (!layer->placed) return MOE_OK;
    return moe_fail(layer->ctx, MOE_ERROR_UNSUPPORTED,
                    "%s: the layer's experts are placed on several contexts; such a layer runs with "
                    "moe_layer_forward or moe_layer_forward_buffers, which complete before they return, not "
                    "asynchronously or recorded into an application's command buffer",
                    what);
}

void moe_layer_submitted(moe_layer *layer, const moe_buffer *xb, moe_buffer *yb)
{
    layer->serial = ++layer->ctx->submitted;
    if (xb) ((moe_buffer *)xb)->serial = yb->serial = layer->ctx->submitted;
}

/* The public forwards' common checks: a layer, then x and y (host pointers or buffers). */
static moe_status check_call(moe_layer *layer, const void *x, const void *y)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_clear_error(layer->ctx);
    if (!x) return moe_fail(layer->ctx, MOE_ERROR_NULL_POINTER, "x is NULL");
    if (!y) return moe_fail(layer->ctx, MOE_ERROR_NULL_POINTER, "y is NULL");
    return MOE_OK;
}

moe_status moe_layer_forward(moe_layer *layer, int64_t n_tokens, const float *x, float *y,
                             moe_forward_stats *stats)
{
    if (layer && layer->ep) { /* collective: its checks are agreed on by every rank */
        moe_clear_error(layer->ctx);
        return moe_ep_forward(layer, n_tokens, x, y, stats);
    }
    const moe_status st = check_call(layer, x, y);
    return st != MOE_OK ? st : forward(layer, n_tokens, x, y, NULL, NULL, stats, FORWARD_WAIT, NULL, NULL);
}

moe_status moe_layer_forward_buffers(moe_layer *layer, int64_t n_tokens, const moe_buffer *x, moe_buffer *y,
                                     moe_forward_stats *stats)
{
    const moe_status st = check_call(layer, x, y);
    return st != MOE_OK ? st : forward(layer, n_tokens, NULL, NULL, x, y, stats, FORWARD_WAIT, NULL, NULL);
}

moe_status moe_layer_forward_async(moe_layer *layer, int64_t n_tokens, const moe_buffer *x, moe_buffer *y)
{
    const moe_status st = check_call(layer, x, y);
    return st != MOE_OK ? st : forward(layer, n_tokens, NULL, NULL, x, y, NULL, FORWARD_SUBMIT, NULL, NULL);
}

moe_status moe_layer_forward_record(moe_layer *layer, int64_t n_tokens, const moe_buffer *x, moe_buffer *y,
                                    moe_backend_buffer **scratch, size_t *scratch_bytes)
{
    return forward(layer, n_tokens, NULL, NULL, x, y, NULL, FORWARD_RECORD, scratch, scratch_bytes);
}
