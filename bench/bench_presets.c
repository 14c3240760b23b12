/*
 * bench_presets.c — the model presets of moe-bench (--preset NAME: the per-layer shape and
 * routing of real MoE models, from their Hugging Face configs) and the shape arithmetic
 * shared by the runner and the report: layer descriptor per token count, FLOPs, weight bytes
 * and the scratch estimate the memory guard uses.
 */
#include "bench_config.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* clang-format off */
const bench_preset bench_presets[] = {
    /* name, model, T, d_model, d_ff, E, k, score, renorm, groups, keep, group score, scale,
     * bias, biases (gpt-oss), activation, shared d_ff, shared gate, capacity factor, drop policy */
    {"mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", 0, 4096, 14336, 8, 2, MOE_SCORE_SOFTMAX, 1,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 0, 0, 0.0, MOE_DROP_ZERO},
    {"mixtral-8x22b", "mistralai/Mixtral-8x22B-v0.1", 0, 6144, 16384, 8, 2, MOE_SCORE_SOFTMAX, 1,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 0, 0, 0.0, MOE_DROP_ZERO},
    {"qwen1.5-moe-a2.7b", "Qwen/Qwen1.5-MoE-A2.7B", 0, 2048, 1408, 60, 4, MOE_SCORE_SOFTMAX, 0,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 5632, 1, 0.0, MOE_DROP_ZERO},
    {"qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", 0, 2048, 768, 128, 8, MOE_SCORE_SOFTMAX, 1,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 0, 0, 0.0, MOE_DROP_ZERO},
    {"olmoe-1b-7b", "allenai/OLMoE-1B-7B-0924", 0, 2048, 1024, 64, 8, MOE_SCORE_SOFTMAX, 0,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 0, 0, 0.0, MOE_DROP_ZERO},
    {"deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite", 0, 2048, 1408, 64, 6, MOE_SCORE_SOFTMAX, 0,
     0, 0, MOE_GROUP_SCORE_MAX, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 2 * 1408, 0, 0.0, MOE_DROP_ZERO},
    {"deepseek-v3", "deepseek-ai/DeepSeek-V3", 0, 7168, 2048, 256, 8, MOE_SCORE_SIGMOID, 1,
     8, 4, MOE_GROUP_SCORE_TOP2_SUM, 2.5, 1, 0, MOE_ACTIVATION_SWIGLU, 2048, 0, 0.0, MOE_DROP_ZERO},
    /* gpt-oss's top-k of the logits then softmax over the k is softmax then top-k renormalised. */
    {"gpt-oss-20b", "openai/gpt-oss-20b", 0, 2880, 2880, 32, 4, MOE_SCORE_SOFTMAX, 1,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 1, MOE_ACTIVATION_SWIGLU_OAI, 0, 0, 0.0, MOE_DROP_ZERO},
    {"dbrx", "databricks/dbrx-base", 0, 6144, 10752, 16, 4, MOE_SCORE_SOFTMAX, 1,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_SWIGLU, 0, 0, 0.0, MOE_DROP_ZERO},
    {"switch-base-8", "google/switch-base-8", 0, 768, 3072, 8, 1, MOE_SCORE_SOFTMAX, 0,
     0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_RELU, 0, 0, 1.25, MOE_DROP_PASSTHROUGH},
    {"relu-2048x8192-e8-top2", "the project's original brief: Switch-style ReLU FFN, 32 x 512 tokens", 32 * 512, 2048, 8192, 8, 2,
     MOE_SCORE_SOFTMAX, 1, 0, 0, MOE_GROUP_SCORE_TOP2_SUM, 1.0, 0, 0, MOE_ACTIVATION_RELU, 0, 0, 0.0,
     MOE_DROP_ZERO},
};
/* clang-format on */
const int bench_n_presets = (int)(sizeof bench_presets / sizeof bench_presets[0]);

const char *bench_preset_name(int i)
{
    return i >= 0 && i < bench_n_presets ? bench_presets[i].name : "custom";
}

void bench_preset_apply(bench_config *c, int i)
{
    if (i < 0 || i >= bench_n_presets) return;
    const bench_preset *p = &bench_presets[i];
    c->preset = i;
    if (p->tokens > 0) c->tokens = p->tokens;
    c->d_model = p->d_model;
    c->d_ff = p->d_ff;
    c->experts = p->n_experts;
    c->top_k = p->top_k;
    c->score = (int)p->score;
    c->no_renorm = !p->renormalize;
    c->groups = p->n_group;
    c->topk_group = p->topk_group;
    c->group_score = (int)p->group_score;
    c->scale = p->scale;
    c->selection_bias = p->selection_bias;
    c->biases = p->biases;
    c->activation = (int)p->activation;
    c->shared_ff = p->d_ff_shared;
    c->shared_gate = p->shared_gate;
    c->capacity = 0;
    c->capacity_factor = p->capacity_factor;
    c->drop_policy = (int)p->drop_policy;
}

void bench_presets_list(FILE *out)
{
    fprintf(out, "%-18s %6s %7s %6s %4s %3s  %-s\n", "preset", "T", "d_model", "d_ff", "E", "k",
            "routing / experts (model)");
    for (int i = 0; i < bench_n_presets; i++) {
        const bench_preset *p = &bench_presets[i];
        char extra[160];
        size_t n = (size_t)snprintf(extra, sizeof extra, "%s%s",
                                    p->score == MOE_SCORE_SIGMOID ? "sigmoid" : "softmax",
                                    p->renormalize ? ", renormalised" : ", not renormalised");
        if (p->selection_bias && n < sizeof extra)
            n += (size_t)snprintf(extra + n, sizeof extra - n, " + bias");
        if (p->biases && n < sizeof extra)
            n += (size_t)snprintf(extra + n, sizeof extra - n, ", router and expert biases");
        if (p->n_group > 1 && n < sizeof extra)
            n += (size_t)snprintf(extra + n, sizeof extra - n, ", %" PRId64 " groups keep %" PRId64,
                                  p->n_group, p->topk_group);
        if (p->scale != 1.0 && n < sizeof extra)
            n += (size_t)snprintf(extra + n, sizeof extra - n, ", x%g", p->scale);
        if (n < sizeof extra)
            n += (size_t)snprintf(extra + n, sizeof extra - n, ", %s",
                                  bench_choice_name(bench_activation_choices, (int)p->activation));
        if (p->d_ff_shared > 0 && n < sizeof extra)
            n += (size_t)snprintf(extra + n, sizeof extra - n, ", shared %" PRId64 "%s", p->d_ff_shared,
                                  p->shared_gate ? " sigmoid-gated" : "");
        if (p->capacity_factor > 0.0 && n < sizeof extra)
            n +=
                (size_t)snprintf(extra + n, sizeof extra - n, ", capacity factor %g (%s)", p->capacity_factor,
                                 bench_choice_name(bench_drop_choices, (int)p->drop_policy));
        char t[24];
        if (p->tokens > 0)
            snprintf(t, sizeof t, "%" PRId64, p->tokens);
        else
            snprintf(t, sizeof t, "-");
        const moe_layer_desc d = {.d_model = p->d_model,
                                  .d_ff = p->d_ff,
                                  .n_experts = p->n_experts,
                                  .top_k = p->top_k,
                                  .activation = p->activation,
                                  .d_ff_shared = p->d_ff_shared,
                                  .shared_expert_gate = p->shared_gate,
                                  .has_selection_bias = p->selection_bias};
        fprintf(out,
                "%-18s %6s %7" PRId64 " %6" PRId64 " %4" PRId64 " %3" PRId64 "  %s (%s); weights %.2f GiB\n",
                p->name, t, p->d_model, p->d_ff, p->n_experts, p->top_k, extra, p->model,
                bench_all_weight_bytes(&d) / 1073741824.0);
    }
    fprintf(out, "(T '-' = the --tokens default; weights are float32, one copy; --weights stores them in "
                 "another format)\n");
}

/* ---- shape arithmetic ------------------------------------------------------------------- */

int bench_desc_gated(const moe_layer_desc *d)
{
    return d->activation == MOE_ACTIVATION_SWIGLU || d->activation == MOE_ACTIVATION_GEGLU ||
           d->activation == MOE_ACTIVATION_SWIGLU_OAI;
}

moe_layer_desc bench_make_desc(const bench_config *c, int64_t tokens, int64_t max_tokens, moe_dtype dtype)
{
    moe_layer_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.d_model = c->d_model;
    d.d_ff = c->d_ff;
    d.n_experts = c->experts;
    d.top_k = c->top_k;
    d.max_tokens = max_tokens;
    d.score_func = (moe_score_func)c->score;
    d.n_group = c->groups;
    d.topk_group = c->topk_group;
    d.group_score = (moe_group_score)c->group_score;
    d.renormalize = !c->no_renorm;
    d.routed_scaling_factor = (float)c->scale;
    d.has_selection_bias = c->selection_bias;
    d.router_has_bias = c->biases; /* never with selection_bias (bench_flags.c refuses both) */
    d.expert_has_bias = c->biases;
    d.activation = (moe_activation)c->activation;
    d.d_ff_shared = c->shared_ff;
    d.shared_expert_gate = c->shared_ff > 0 && c->shared_gate;
    d.expert_capacity = c->capacity;
    if (c->capacity_factor > 0.0 && c->capacity == 0) {
        const double cap = ceil(c->capacity_factor * (double)tokens * (double)c->top_k / (double)c->experts);
        d.expert_capacity = cap < 1.0 ? 1 : (int64_t)cap;
    }
    d.drop_policy = (moe_drop_policy)c->drop_policy;
    /* The shared expert is stored in the same format: a format comparison is about every
     * expert matrix a forward reads, and a model quantised for decode quantises them all. */
    d.weight_dtype = dtype;
    d.shared_weight_dtype = dtype;
    d.down_weight_dtype = d.shared_down_weight_dtype = bench_down_dtype(c, dtype);
    return d;
}

moe_dtype bench_down_dtype(const bench_config *c, moe_dtype dtype)
{
    return c->down_weights != MOE_DTYPE_DEFAULT && dtype != MOE_DTYPE_F32 ? c->down_weights : dtype;
}

double bench_forward_flops(const moe_layer_desc *d, int64_t tokens)
{
    const double t = (double)tokens, dm = (double)d->d_model, mats = bench_desc_gated(d) ? 3.0 : 2.0;
    double f = 2.0 * t * dm * (double)d->n_experts;
    f += 2.0 * t * (double)d->top_k * dm * (double)d->d_ff * mats;
    if (d->d_ff_shared > 0) {
        f += 2.0 * t * dm * (double)d->d_ff_shared * mats;
        if (d->shared_expert_gate) f += 2.0 * t * dm;
    }
    return f;
}

double bench_matrix_bytes(moe_dtype dtype, int64_t rows, int64_t cols)
{
    if (dtype == MOE_DTYPE_DEFAULT) dtype = MOE_DTYPE_F32;
    const size_t row = moe_dtype_row_bytes(dtype, cols);
    if (row > 0) return (double)rows * (double)row;
    /* A row that is not whole blocks (refused before any layer is made) or a size that
     * overflows: the value width alone, so an estimate is still an estimate. */
    const int64_t block = moe_dtype_block_size(dtype);
    const double per_value = block > 0 ? (double)moe_dtype_row_bytes(dtype, block) / (double)block : 4.0;
    return (double)rows * (double)cols * per_value;
}

double bench_expert_bytes(const moe_layer_desc *d)
{
    const double in_mats = bench_desc_gated(d) ? 2.0 : 1.0; /* gate and up, or up alone */
    const moe_dtype down = d->down_weight_dtype == MOE_DTYPE_DEFAULT ? d->weight_dtype : d->down_weight_dtype;
    return in_mats * bench_matrix_bytes(d->weight_dtype, d->d_ff, d->d_model) +
           bench_matrix_bytes(down, d->d_model, d->d_ff);
}

double bench_fixed_weight_bytes(const moe_layer_desc *d)
{
    const double dm = (double)d->d_model;
    double b = (double)d->n_experts * dm * sizeof(float);
    if (d->has_selection_bias || d->router_has_bias) b += (double)d->n_experts * sizeof(float);
    if (d->expert_has_bias) /* gate's and up's [E][d_ff] (up's alone ungated), down's [E][d_model] */
        b +=
            (double)d->n_experts * ((bench_desc_gated(d) ? 2.0 : 1.0) * (double)d->d_ff + dm) * sizeof(float);
    if (d->d_ff_shared > 0) {
        const double in_mats = bench_desc_gated(d) ? 2.0 : 1.0;
        const moe_dtype down = d->shared_down_weight_dtype == MOE_DTYPE_DEFAULT ? d->shared_weight_dtype
                                                                                : d->shared_down_weight_dtype;
        b += in_mats * bench_matrix_bytes(d->shared_weight_dtype, d->d_ff_shared, d->d_model) +
             bench_matrix_bytes(down, d->d_model, d->d_ff_shared);
        if (d->shared_expert_gate) b += dm * sizeof(float);
    }
    return b;
}

double bench_all_weight_bytes(const moe_layer_desc *d)
{
    return (double)d->n_experts * bench_expert_bytes(d) + bench_fixed_weight_bytes(d);
}

double bench_expected_experts(const moe_layer_desc *d, int64_t tokens)
{
    const double e = (double)d->n_experts, k = (double)d->top_k, t = (double)tokens;
    double x = e * -expm1(t * log1p(-k / e)); /* E·(1 − (1 − k/E)^T), exact for k = E too */
    if (!(x <= e)) x = e;
    if (x > t * k) x = t * k;
    return x;
}

double bench_scratch_bytes(const moe_layer_desc *d, int64_t tokens)
{
    /* The library's layout (src/layer.c): x, logits, routing workspace, ids and weights, the
     * padded expert rows (h: d_ff wide, o: d_model wide), shared expert, y. The row bound is
     * T·k + E·(tile-1); 64 is a tile at least as tall as any backend's. */
    const double t = (double)tokens, rows = t * (double)d->top_k + (double)d->n_experts * 63.0;
    double floats = rows * ((double)d->d_ff + (double)d->d_model + 1.0);
    floats += t * (2.0 * (double)d->d_model + 2.0 * (double)d->n_experts + (double)d->n_group +
                   4.0 * (double)d->top_k);
    if (d->d_ff_shared > 0) floats += t * ((double)d->d_ff_shared + (double)d->d_model);
    return floats * sizeof(float) + 1024.0 * 1024.0;
}

size_t bench_token_list(const bench_config *c, int64_t *out, size_t cap)
{
    if (c->sweep_tokens.n == 0) {
        if (cap > 0) out[0] = c->tokens;
        return 1;
    }
    size_t n = c->sweep_tokens.n < cap ? c->sweep_tokens.n : cap;
    for (size_t i = 0; i < n; i++) out[i] = c->sweep_tokens.v[i];
    return n;
}

int64_t bench_min_tokens(const bench_config *c)
{
    if (c->serve) return c->max_batch_tokens;
    int64_t list[BENCH_LIST_MAX], m = INT64_MAX;
    const size_t n = bench_token_list(c, list, BENCH_LIST_MAX);
    for (size_t i = 0; i < n; i++)
        if (list[i] < m) m = list[i];
    return n ? m : 1;
}

int64_t bench_max_tokens(const bench_config *c)
{
    if (c->serve) return c->max_batch_tokens;
    int64_t list[BENCH_LIST_MAX], m = 0;
    const size_t n = bench_token_list(c, list, BENCH_LIST_MAX);
    for (size_t i = 0; i < n; i++)
        if (list[i] > m) m = list[i];
    return m;
}
