/*
 * validate.c — checks of layer configs, weights and token counts, shared by moe_layer_create,
 * the forwards and the scalar reference, so every entry point (and every backend) refuses
 * the same bad input with the same status and message.
 */
#include "internal.h"

#include <math.h>

bool moe_activation_is_gated(moe_activation act)
{
    return act == MOE_ACTIVATION_SWIGLU || act == MOE_ACTIVATION_GEGLU || act == MOE_ACTIVATION_SWIGLU_OAI;
}

/* Every byte size a layer implies (weights and a token's activations) must fit size_t, so
 * later arithmetic on them needs no further checks. */
static moe_status check_layer_sizes(moe_context *ctx, const moe_layer_desc *d)
{
    size_t bytes, total = 0;
    const int64_t big_ff = d->d_ff > d->d_ff_shared ? d->d_ff : d->d_ff_shared;
    const struct {
        int64_t a, b, c;
        const char *what;
    } sizes[] = {
        {d->n_experts, d->d_ff, d->d_model, "n_experts*d_ff*d_model"},
        {d->d_ff_shared, d->d_model, 1, "d_ff_shared*d_model"},
        {d->max_tokens, d->d_model, 1, "max_tokens*d_model"},
        {d->max_tokens, d->top_k, big_ff, "max_tokens*top_k*d_ff"},
        {d->max_tokens, d->top_k, d->d_model, "max_tokens*top_k*d_model"},
        {d->max_tokens, d->n_experts, 1, "max_tokens*n_experts"},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        /* 4x headroom: gate+up pairs, padding and the row bound stay inside size_t too. */
        if (!moe_bytes_of(4 * sizeof(float), sizes[i].a, sizes[i].b, sizes[i].c, &bytes) ||
            !moe_add_size(total, bytes, &total))
            return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW,
                            "layer size %s (%lld*%lld*%lld floats) overflows size_t", sizes[i].what,
                            (long long)sizes[i].a, (long long)sizes[i].b, (long long)sizes[i].c);
    }
    return MOE_OK;
}

/* The int32 indices of one forward of T tokens (see MOE_MAX_INDEX). `what` names T's origin:
 * the layer's max_tokens, or the reference's n_tokens. Checked after the size_t checks, so
 * every product below fits int64. */
static moe_status check_index_limits(moe_context *ctx, const moe_layer_desc *d, int64_t T, const char *what)
{
    const long long limit = MOE_MAX_INDEX;
    if (T > MOE_MAX_INDEX / d->top_k)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                        "%s (%lld) * top_k (%lld) (token, slot) rows exceed %lld: the plan indexes them with "
                        "int32",
                        what, (long long)T, (long long)d->top_k, limit);
    const int64_t rows = moe_plan_rows(d, T, MOE_MAX_ROW_TILE);
    if (rows > MOE_MAX_INDEX)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                        "%s (%lld) gives a padded row bound of %lld rows (%lld token rows plus up to %d rows "
                        "of tile padding for each of up to %lld experts), above %lld: the plan indexes rows "
                        "with int32",
                        what, (long long)T, (long long)rows, (long long)(T * d->top_k), MOE_MAX_ROW_TILE - 1,
                        (long long)d->n_experts, limit);
    const int64_t per_token = d->n_experts + d->n_group;
    if (T > MOE_MAX_INDEX / per_token || 2 * T + 2 * d->n_experts > MOE_MAX_INDEX)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                        "%s (%lld) * (n_experts + n_group) (%lld) logits and routing workspace entries "
                        "exceed %lld: the kernels index them with int32",
                        what, (long long)T, (long long)per_token, limit);
    return MOE_OK;
}

#define REQUIRE_PTR(p, name)                                                                                 \
    do {                                                                                                     \
        if (!(p))                                                                                            \
            return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "weights.%s is NULL but the config needs it",       \
                            name);                                                                           \
    } while (0)

static moe_status check_weights(moe_context *ctx, const moe_layer_desc *d, const moe_layer_weights *w)
{
    const bool gated = moe_activation_is_gated(d->activation);
    REQUIRE_PTR(w->router, "router");
    REQUIRE_PTR(w->up, "up");
    REQUIRE_PTR(w->down, "down");
    if (gated) REQUIRE_PTR(w->gate, "gate");
    if (d->has_selection_bias || d->router_has_bias) REQUIRE_PTR(w->router_bias, "router_bias");
    if (d->expert_has_bias) {
        if (gated) REQUIRE_PTR(w->gate_bias, "gate_bias");
        REQUIRE_PTR(w->up_bias, "up_bias");
        REQUIRE_PTR(w->down_bias, "down_bias");
    }
    if (d->d_ff_shared > 0) {
        REQUIRE_PTR(w->shared_up, "shared_up");
        REQUIRE_PTR(w->shared_down, "shared_down");
        if (gated) REQUIRE_PTR(w->shared_gate, "shared_gate");
        if (d->shared_expert_gate) REQUIRE_PTR(w->shared_expert_gate, "shared_expert_gate");
    }
    return MOE_OK;
}

moe_dtype moe_weights_dtype(const moe_layer_weights *w)
{
    return w->dtype == MOE_DTYPE_DEFAULT ? MOE_DTYPE_F32 : w->dtype;
}
moe_dtype moe_weights_shared_dtype(const moe_layer_weights *w)
{
    return w->shared_dtype == MOE_DTYPE_DEFAULT ? MOE_DTYPE_F32 : w->shared_dtype;
}

/* A format for one set of weight rows (`what`: how the caller spelled the field): a known
 * dtype, and for a block format, rows (`rows`: which they are; their length, the reduction
 * dimension, is `len_name` = len) of whole blocks. */
static moe_status check_format(moe_context *ctx, moe_dtype dt, const char *what, const char *rows,
                               const char *len_name, int64_t len)
{
    if (!moe_dtype_name(dt) || dt == MOE_DTYPE_DEFAULT)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "%s is %d, not a moe_dtype", what, (int)dt);
    const int64_t block = moe_dtype_block_size(dt);
    if (block > 1 && len % block != 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                        "%s is %s, which stores each weight row in blocks of %lld values along the reduction "
                        "dimension, but %s = %lld is not a multiple of %lld (the %s rows have %s values)",
                        what, moe_dtype_name(dt), (long long)block, len_name, (long long)len,
                        (long long)block, rows, len_name);
    return MOE_OK;
}

/* Both projections' rows in one format: gate/up's of d_model values, down's of the group's d_ff. */
static moe_status check_both(moe_context *ctx, moe_dtype dt, const char *what, int64_t d_model,
                             const char *ff_name, int64_t d_ff)
{
    const moe_status st = check_format(ctx, dt, what, "gate/up", "d_model", d_model);
    return st != MOE_OK ? st : check_format(ctx, dt, what, "down", ff_name, d_ff);
}

/* The storage formats (DEFAULT: as handed over; F32 without weights; down as gate/up) and,
 * with weights, their formats, each checked against the shapes. */
static moe_status check_formats(moe_context *ctx, moe_layer_desc *d, const moe_layer_weights *w)
{
    const bool shared = d->d_ff_shared > 0;
    if (w) {
        moe_status st = check_both(ctx, moe_weights_dtype(w), "weights.dtype", d->d_model, "d_ff", d->d_ff);
        if (st == MOE_OK && shared)
            st = check_both(ctx, moe_weights_shared_dtype(w), "weights.shared_dtype", d->d_model,
                            "d_ff_shared", d->d_ff_shared);
        if (st != MOE_OK) return st;
    }
    if (d->weight_dtype == MOE_DTYPE_DEFAULT) d->weight_dtype = w ? moe_weights_dtype(w) : MOE_DTYPE_F32;
    if (d->shared_weight_dtype == MOE_DTYPE_DEFAULT)
        d->shared_weight_dtype = w ? moe_weights_shared_dtype(w) : MOE_DTYPE_F32;
    /* A down left DEFAULT takes gate/up's format, and a refusal then names the field that set it. */
    const bool down_given = d->down_weight_dtype != MOE_DTYPE_DEFAULT,
               shared_down_given = d->shared_down_weight_dtype != MOE_DTYPE_DEFAULT;
    if (!down_given) d->down_weight_dtype = d->weight_dtype;
    if (!shared_down_given) d->shared_down_weight_dtype = d->shared_weight_dtype;
    if (d->activation_dtype == MOE_DTYPE_DEFAULT) d->activation_dtype = MOE_DTYPE_F32;
    if (d->activation_dtype != MOE_DTYPE_F32 && d->activation_dtype != MOE_DTYPE_Q8_0 &&
        d->activation_dtype != MOE_DTYPE_BF16)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "activation_dtype is %s (%d): the experts' inputs can be f32, q8_0 (int8 per group "
                        "of 16, opt-in) or bf16 (bfloat16 pairs, opt-in)",
                        moe_dtype_name(d->activation_dtype) ? moe_dtype_name(d->activation_dtype)
                                                            : "not a moe_dtype",
                        (int)d->activation_dtype);
    moe_status st = check_format(ctx, d->weight_dtype, "weight_dtype", "gate/up", "d_model", d->d_model);
    if (st == MOE_OK)
        st = check_format(ctx, d->down_weight_dtype,
                          down_given ? "down_weight_dtype"
                                     : "weight_dtype (down_weight_dtype is DEFAULT: the same)",
                          "down", "d_ff", d->d_ff);
    if (st == MOE_OK && shared)
        st = check_format(ctx, d->shared_weight_dtype, "shared_weight_dtype", "gate/up", "d_model",
                          d->d_model);
    if (st == MOE_OK && shared)
        st = check_format(ctx, d->shared_down_weight_dtype,
                          shared_down_given
                              ? "shared_down_weight_dtype"
                              : "shared_weight_dtype (shared_down_weight_dtype is DEFAULT: the same)",
                          "down", "d_ff_shared", d->d_ff_shared);
    return st;
}

moe_status moe_validate_layer(moe_context *ctx, const moe_layer_desc *desc, const moe_layer_weights *weights,
                              moe_layer_desc *out)
{
    if (!desc) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "layer desc is NULL");
    moe_layer_desc d = {.struct_size = sizeof d};
    const moe_status ast = moe_abi_in(ctx, &moe_abi_layer_desc, desc, &d);
    if (ast != MOE_OK) return ast;
    const struct {
        int64_t v;
        const char *name;
    } positive[] = {{d.d_model, "d_model"},
                    {d.d_ff, "d_ff"},
                    {d.n_experts, "n_experts"},
                    {d.top_k, "top_k"},
                    {d.max_tokens, "max_tokens"}};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (positive[i].v <= 0)
            return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "%s must be > 0 (got %lld)", positive[i].name,
                            (long long)positive[i].v);
    if (d.d_ff_shared < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "d_ff_shared must be >= 0 (got %lld)",
                        (long long)d.d_ff_shared);
    if (d.expert_capacity < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "expert_capacity must be >= 0 (got %lld)",
                        (long long)d.expert_capacity);
    /* Shapes reach the kernels as 32-bit ints (MOE_MAX_DIM): refused here, never truncated. */
    const struct {
        int64_t v;
        const char *name;
    } dims[] = {
        {d.d_model, "d_model"}, {d.d_ff, "d_ff"}, {d.d_ff_shared, "d_ff_shared"}, {d.n_experts, "n_experts"}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v > MOE_MAX_DIM)
            return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                            "%s (%lld) exceeds %lld, the largest size the kernels' 32-bit integers allow",
                            dims[i].name, (long long)dims[i].v, (long long)MOE_MAX_DIM);
    if (d.top_k > d.n_experts)
        return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "top_k (%lld) is larger than n_experts (%lld)",
                        (long long)d.top_k, (long long)d.n_experts);
    if ((uint32_t)d.score_func > MOE_SCORE_SIGMOID)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "unknown score_func %d", (int)d.score_func);
    if ((uint32_t)d.group_score > MOE_GROUP_SCORE_MAX)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "unknown group_score %d", (int)d.group_score);
    if ((uint32_t)d.activation > MOE_ACTIVATION_SWIGLU_OAI)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "unknown activation %d", (int)d.activation);
    if ((uint32_t)d.drop_policy > MOE_DROP_PASSTHROUGH)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "unknown drop_policy %d", (int)d.drop_policy);

    if (d.n_group < 0 || d.topk_group < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "n_group and topk_group must be >= 0");
    if (d.n_group <= 1) {
        d.n_group = 1;
        if (d.topk_group > 1)
            return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "topk_group (%lld) is larger than n_group (%lld)",
                            (long long)d.topk_group, (long long)desc->n_group);
        d.topk_group = 1;
    } else {
        if (d.n_experts % d.n_group != 0)
            return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "n_group (%lld) does not divide n_experts (%lld)",
                            (long long)d.n_group, (long long)d.n_experts);
        if (d.topk_group == 0)
            return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "topk_group must be set when n_group > 1");
        if (d.topk_group > d.n_group)
            return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "topk_group (%lld) is larger than n_group (%lld)",
                            (long long)d.topk_group, (long long)d.n_group);
        if (d.topk_group * (d.n_experts / d.n_group) < d.top_k)
            return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG,
                            "topk_group (%lld) groups of %lld experts hold fewer than top_k (%lld)",
                            (long long)d.topk_group, (long long)(d.n_experts / d.n_group),
                            (long long)d.top_k);
    }
    if (!(d.routed_scaling_factor == d.routed_scaling_factor) || isinf(d.routed_scaling_factor))
        return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "routed_scaling_factor is not finite");
    if (d.routed_scaling_factor == 0.0f) d.routed_scaling_factor = 1.0f;
    if (d.shared_expert_gate && d.d_ff_shared == 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG, "shared_expert_gate set without a shared expert");
    d.renormalize = d.renormalize != 0;
    d.has_selection_bias = d.has_selection_bias != 0;
    d.router_has_bias = d.router_has_bias != 0;
    d.expert_has_bias = d.expert_has_bias != 0;
    if (d.router_has_bias && d.has_selection_bias)
        return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG,
                        "router_has_bias and has_selection_bias both set: weights.router_bias is either the "
                        "router's bias (added to the logits) or a selection bias, not both");
    /* SWIGLU_OAI's constants (set for every activation, so the kernels see one value). */
    if (!isfinite(d.swiglu_alpha) || !isfinite(d.swiglu_limit) || d.swiglu_limit < 0.0f)
        return moe_fail(ctx, MOE_ERROR_INVALID_CONFIG,
                        "swiglu_alpha (%g) must be finite and swiglu_limit (%g) finite and >= 0 (0: "
                        "gpt-oss's 1.702 and 7.0)",
                        (double)d.swiglu_alpha, (double)d.swiglu_limit);
    if (d.swiglu_alpha == 0.0f) d.swiglu_alpha = 1.702f;
    if (d.swiglu_limit == 0.0f) d.swiglu_limit = 7.0f;
    d.shared_expert_gate = d.shared_expert_gate != 0;

    moe_status st = check_layer_sizes(ctx, &d);
    if (st == MOE_OK) st = check_index_limits(ctx, &d, d.max_tokens, "max_tokens");
    if (st != MOE_OK) return st;
    if (weights) {
        st = check_weights(ctx, &d, weights);
        if (st != MOE_OK) return st;
    }
    st = check_formats(ctx, &d, weights);
    if (st != MOE_OK) return st;
    if (out) *out = d;
    return MOE_OK;
}

moe_status moe_validate_tokens(moe_context *ctx, const moe_layer_desc *desc, int64_t n_tokens,
                               bool check_budget)
{
    if (n_tokens <= 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "n_tokens must be > 0 (got %lld)", (long long)n_tokens);
    if (check_budget && n_tokens > desc->max_tokens)
        return moe_fail(ctx, MOE_ERROR_TOKEN_BUDGET, "n_tokens (%lld) exceeds the layer's max_tokens (%lld)",
                        (long long)n_tokens, (long long)desc->max_tokens);
    size_t bytes;
    if (!moe_bytes_of(4 * sizeof(float), n_tokens, desc->d_model, desc->top_k, &bytes) ||
        !moe_bytes_of(4 * sizeof(float), n_tokens, desc->top_k,
                      desc->d_ff > desc->d_ff_shared ? desc->d_ff : desc->d_ff_shared, &bytes) ||
        !moe_bytes_of(4 * sizeof(float), n_tokens, desc->n_experts, 1, &bytes))
        return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "n_tokens (%lld) * d_model (%lld) overflows size_t",
                        (long long)n_tokens, (long long)desc->d_model);
    /* Within a layer's budget this holds already (max_tokens passed it); the reference has
     * no budget. */
    return check_index_limits(ctx, desc, n_tokens, "n_tokens");
}

int64_t moe_effective_capacity(const moe_layer_desc *desc, int64_t n_tokens)
{
    /* A forward has T·k (token, slot) rows in all, so no expert can receive more: a capacity
     * at or above that drops nothing, and passing it on as 0 (unlimited) gives bit for bit the
     * same result while every backend sees a capacity that fits its 32-bit integers. */
    const int64_t rows = n_tokens * desc->top_k;
    return desc->expert_capacity >= rows ? 0 : desc->expert_capacity;
}

moe_status moe_validate_threads(moe_context *ctx, int n_threads)
{
    if (n_threads < 0 || n_threads > MOE_MAX_THREADS)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "n_threads must be 0 (default) or 1..%d (got %d)",
                        MOE_MAX_THREADS, n_threads);
    return MOE_OK;
}

int64_t moe_plan_rows(const moe_layer_desc *desc, int64_t n_tokens, int64_t row_tile)
{
    const int64_t assignments = n_tokens * desc->top_k;
    const int64_t experts_used = assignments < desc->n_experts ? assignments : desc->n_experts;
    const int64_t rows = assignments + experts_used * (row_tile - 1);
    return (rows + row_tile - 1) / row_tile * row_tile;
}
