/*
 * config.c — a Hugging Face config.json reduced to what one MoE block needs: the family
 * (model_type), shapes, routing (score function, top-k method, groups, renormalisation,
 * scaling), activation, capacity, and which layers are sparse. Keys that define a shape are
 * required; the rest take the transformers defaults of their family. Keys set to null count
 * as absent, as transformers reads them.
 */
#include "model_internal.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct cfg_reader {
    moe_context *ctx;
    const char *path;
    const cJSON *root;
    moe_status st; /* the first failure; later reads do nothing */
} cfg_reader;

static const cJSON *item(cfg_reader *r, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* An integer key in [lo, hi]; `def` when absent, or a FORMAT error when `required`. */
static int64_t get_int(cfg_reader *r, const char *key, bool required, int64_t def, int64_t lo, int64_t hi)
{
    if (r->st != MOE_OK) return def;
    const cJSON *v = item(r, key);
    if (!v) {
        if (required)
            r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: required key \"%s\" is missing", r->path, key);
        return def;
    }
    const double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi) || floor(d) != d) {
        r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: \"%s\" must be an integer in [%lld, %lld]", r->path,
                         key, (long long)lo, (long long)hi);
        return def;
    }
    return (int64_t)d;
}

static double get_num(cfg_reader *r, const char *key, double def)
{
    if (r->st != MOE_OK) return def;
    const cJSON *v = item(r, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: \"%s\" must be a finite number", r->path, key);
        return def;
    }
    return v->valuedouble;
}

static int get_bool(cfg_reader *r, const char *key, int def)
{
    if (r->st != MOE_OK) return def;
    const cJSON *v = item(r, key);
    if (!v) return def;
    if (!cJSON_IsBool(v)) {
        r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: \"%s\" must be true or false", r->path, key);
        return def;
    }
    return cJSON_IsTrue(v);
}

static const char *get_str(cfg_reader *r, const char *key, const char *def)
{
    if (r->st != MOE_OK) return def;
    const cJSON *v = item(r, key);
    if (!v) return def;
    if (!cJSON_IsString(v)) {
        r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: \"%s\" must be a string", r->path, key);
        return def;
    }
    return v->valuestring;
}

static void unsupported(cfg_reader *r, const char *key, const char *value, const char *supported)
{
    if (r->st == MOE_OK)
        r->st = moe_fail(r->ctx, MOE_ERROR_UNSUPPORTED, "%s: %s \"%s\" is not supported (supported: %s)",
                         r->path, key, value, supported);
}

static moe_activation activation_of(cfg_reader *r, const char *key, const char *def, bool gated)
{
    const char *a = get_str(r, key, def);
    if (!strcmp(a, "silu") || !strcmp(a, "swish")) {
        if (gated) return MOE_ACTIVATION_SWIGLU;
    } else if (!strcmp(a, "gelu")) {
        return gated ? MOE_ACTIVATION_GEGLU : MOE_ACTIVATION_GELU;
    } else if (!strcmp(a, "relu")) {
        if (!gated) return MOE_ACTIVATION_RELU;
    }
    unsupported(r, key, a, gated ? "silu, swish, gelu" : "relu, gelu");
    return gated ? MOE_ACTIVATION_SWIGLU : MOE_ACTIVATION_RELU;
}

static const struct {
    const char *name;
    moe_hf_family family;
} families[] = {
    {"mixtral", MOE_HF_MIXTRAL},
    {"olmoe", MOE_HF_OLMOE},
    {"qwen2_moe", MOE_HF_QWEN2_MOE},
    {"qwen3_moe", MOE_HF_QWEN3_MOE},
    {"deepseek_v2", MOE_HF_DEEPSEEK_V2},
    {"deepseek_v3", MOE_HF_DEEPSEEK_V3},
    {"switch_transformers", MOE_HF_SWITCH},
    {"gpt_oss", MOE_HF_GPT_OSS},
};

#define BIG        ((int64_t)1 << 40) /* a bound for shapes read from JSON, far above any real model */
#define MAX_LAYERS ((int64_t)1 << 20)

static void parse_deepseek(cfg_reader *r, moe_hf_config *c, bool v3)
{
    c->n_experts = get_int(r, "n_routed_experts", true, 0, 1, INT32_MAX / 2);
    c->d_ff = get_int(r, "moe_intermediate_size", true, 0, 1, BIG);
    const int64_t n_shared = get_int(r, "n_shared_experts", false, v3 ? 1 : 0, 0, BIG);
    c->d_ff_shared = n_shared * c->d_ff;
    c->n_group = get_int(r, "n_group", false, v3 ? 8 : 1, 1, INT32_MAX / 2);
    c->topk_group = get_int(r, "topk_group", false, v3 ? 4 : 1, 1, INT32_MAX / 2);
    c->routed_scaling_factor = get_num(r, "routed_scaling_factor", v3 ? 2.5 : 1.0);
    c->norm_topk_prob = get_bool(r, "norm_topk_prob", v3 ? 1 : 0);
    c->first_k_dense_replace = get_int(r, "first_k_dense_replace", false, v3 ? 3 : 0, 0, BIG);
    c->moe_layer_freq = get_int(r, "moe_layer_freq", false, 1, 1, BIG);
    const char *score = get_str(r, "scoring_func", v3 ? "sigmoid" : "softmax");
    if (!strcmp(score, "softmax"))
        c->score_func = MOE_SCORE_SOFTMAX;
    else if (!strcmp(score, "sigmoid"))
        c->score_func = MOE_SCORE_SIGMOID;
    else
        unsupported(r, "scoring_func", score, "softmax, sigmoid");
    const char *method = get_str(r, "topk_method", v3 ? "noaux_tc" : "greedy");
    if (!strcmp(method, "greedy"))
        c->topk_method = MOE_HF_TOPK_GREEDY;
    else if (!strcmp(method, "group_limited_greedy"))
        c->topk_method = MOE_HF_TOPK_GROUP_LIMITED;
    else if (!strcmp(method, "noaux_tc"))
        c->topk_method = MOE_HF_TOPK_NOAUX_TC;
    else
        unsupported(r, "topk_method", method, "greedy, group_limited_greedy, noaux_tc");
}

static void parse_qwen_layers(cfg_reader *r, moe_hf_config *c)
{
    c->decoder_sparse_step = get_int(r, "decoder_sparse_step", false, 1, 0, BIG);
    const cJSON *only = r->st == MOE_OK ? item(r, "mlp_only_layers") : NULL;
    if (!only) return;
    if (!cJSON_IsArray(only)) {
        r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: \"mlp_only_layers\" must be an array", r->path);
        return;
    }
    for (const cJSON *v = only->child; v && r->st == MOE_OK; v = v->next) {
        if (c->n_mlp_only_layers == MOE_HF_MAX_MLP_ONLY) {
            r->st =
                moe_fail(r->ctx, MOE_ERROR_UNSUPPORTED, "%s: \"mlp_only_layers\" lists more than %d layers",
                         r->path, MOE_HF_MAX_MLP_ONLY);
            return;
        }
        const double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        if (!(d >= 0.0 && d <= (double)BIG) || floor(d) != d) {
            r->st = moe_fail(r->ctx, MOE_ERROR_FORMAT, "%s: \"mlp_only_layers\" must list layer indices",
                             r->path);
            return;
        }
        c->mlp_only_layers[c->n_mlp_only_layers++] = (int64_t)d;
    }
}

moe_status moe_hf_config_parse(moe_context *ctx, const char *path, const char *text, size_t len,
                               moe_hf_config *out)
{
    cJSON *root = NULL;
    moe_status st = moe_json_parse(ctx, path, text, len, &root);
    if (st != MOE_OK) return st;
    cfg_reader r = {ctx, path, root, MOE_OK};
    if (r.st == MOE_OK && !cJSON_IsObject(root))
        r.st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: not a JSON object", path);

    moe_hf_config c;
    memset(&c, 0, sizeof c);
    const char *type = get_str(&r, "model_type", NULL);
    if (r.st == MOE_OK && !type)
        r.st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: required key \"model_type\" is missing", path);
    if (r.st == MOE_OK) {
        size_t i = 0;
        while (i < sizeof families / sizeof families[0] && strcmp(type, families[i].name)) i++;
        if (i == sizeof families / sizeof families[0])
            unsupported(&r, "model_type", type,
                        "mixtral, olmoe, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3, "
                        "switch_transformers, gpt_oss");
        else
            c.family = families[i].family;
        snprintf(c.model_type, sizeof c.model_type, "%s", type);
    }
    c.routed_scaling_factor = 1.0;
    c.score_func = MOE_SCORE_SOFTMAX;
    c.topk_method = MOE_HF_TOPK_GREEDY;
    if (r.st == MOE_OK && c.family == MOE_HF_SWITCH) {
        c.hidden_size = get_int(&r, "d_model", true, 0, 1, BIG);
        c.d_ff = get_int(&r, "d_ff", true, 0, 1, BIG);
        c.n_experts = get_int(&r, "num_experts", true, 0, 1, INT32_MAX / 2);
        c.top_k = 1;
        c.expert_capacity = get_int(&r, "expert_capacity", true, 0, 0, INT32_MAX);
        c.n_layers = get_int(&r, "num_layers", true, 0, 0, MAX_LAYERS);
        c.n_decoder_layers = get_int(&r, "num_decoder_layers", false, c.n_layers, 0, MAX_LAYERS);
        c.encoder_sparse_step = get_int(&r, "encoder_sparse_step", false, 1, 0, BIG);
        c.decoder_sparse_step = get_int(&r, "decoder_sparse_step", false, 1, 0, BIG);
        c.activation = activation_of(&r, "dense_act_fn", "relu", false);
    } else if (r.st == MOE_OK) {
        c.hidden_size = get_int(&r, "hidden_size", true, 0, 1, BIG);
        c.n_layers = get_int(&r, "num_hidden_layers", true, 0, 0, MAX_LAYERS);
        /* gpt-oss's config.json has both names; OpenAI's own ModelConfig only experts_per_token */
        const bool per_tok = c.family != MOE_HF_GPT_OSS || item(&r, "num_experts_per_tok");
        c.top_k =
            get_int(&r, per_tok ? "num_experts_per_tok" : "experts_per_token", true, 0, 1, INT32_MAX / 2);
        c.activation = activation_of(&r, "hidden_act", "silu", true);
        switch (c.family) {
        case MOE_HF_MIXTRAL:
            c.n_experts = get_int(&r, "num_local_experts", true, 0, 1, INT32_MAX / 2);
            c.d_ff = get_int(&r, "intermediate_size", true, 0, 1, BIG);
            c.norm_topk_prob = 1; /* Mixtral always renormalises its top-k */
            break;
        case MOE_HF_OLMOE:
            c.n_experts = get_int(&r, "num_experts", true, 0, 1, INT32_MAX / 2);
            c.d_ff = get_int(&r, "intermediate_size", true, 0, 1, BIG);
            c.norm_topk_prob = get_bool(&r, "norm_topk_prob", 0);
            break;
        case MOE_HF_QWEN2_MOE:
        case MOE_HF_QWEN3_MOE:
            c.n_experts = get_int(&r, "num_experts", true, 0, 1, INT32_MAX / 2);
            c.d_ff = get_int(&r, "moe_intermediate_size", false, 0, 1, BIG);
            if (!c.d_ff) c.d_ff = get_int(&r, "intermediate_size", true, 0, 1, BIG);
            c.norm_topk_prob = get_bool(&r, "norm_topk_prob", 0);
            if (c.family == MOE_HF_QWEN2_MOE)
                c.d_ff_shared = get_int(&r, "shared_expert_intermediate_size", true, 0, 0, BIG);
            parse_qwen_layers(&r, &c);
            break;
        case MOE_HF_DEEPSEEK_V2:
        case MOE_HF_DEEPSEEK_V3:
            parse_deepseek(&r, &c, c.family == MOE_HF_DEEPSEEK_V3);
            break;
        case MOE_HF_GPT_OSS: /* transformers' GptOssExperts: alpha and limit (the config's
                                swiglu_limit; newer configs swiglu_alpha) */
            c.n_experts = get_int(&r, "num_local_experts", true, 0, 1, INT32_MAX / 2);
            c.d_ff = get_int(&r, "intermediate_size", true, 0, 1, BIG);
            c.norm_topk_prob = 1; /* softmax over the chosen logits = renormalised softmax */
            c.activation = MOE_ACTIVATION_SWIGLU_OAI;
            c.swiglu_alpha = get_num(&r, "swiglu_alpha", 1.702);
            c.swiglu_limit = get_num(&r, "swiglu_limit", 7.0);
            break;
        case MOE_HF_SWITCH:
            break;
        }
    }
    if (r.st == MOE_OK && c.top_k > c.n_experts)
        r.st =
            moe_fail(ctx, MOE_ERROR_FORMAT, "%s: num_experts_per_tok (%lld) is larger than the %lld experts",
                     path, (long long)c.top_k, (long long)c.n_experts);
    const bool grouped = c.topk_method != MOE_HF_TOPK_GREEDY && c.n_group > 1;
    if (r.st == MOE_OK && grouped && (c.n_experts % c.n_group != 0 || c.topk_group > c.n_group))
        r.st = moe_fail(
            ctx, MOE_ERROR_FORMAT,
            "%s: n_group (%lld) must divide n_routed_experts (%lld) and topk_group (%lld) be at most "
            "n_group",
            path, (long long)c.n_group, (long long)c.n_experts, (long long)c.topk_group);
    if (r.st == MOE_OK && c.d_ff_shared > BIG)
        r.st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the shared experts' width is out of range", path);
    cJSON_Delete(root);
    if (r.st != MOE_OK) return r.st;
    *out = c;
    return MOE_OK;
}

int moe_hf_layer_is_moe(const moe_hf_config *c, int64_t layer, bool decoder)
{
    const int64_t n = decoder ? c->n_decoder_layers : c->n_layers;
    if (layer < 0 || layer >= n || (decoder && c->family != MOE_HF_SWITCH)) return -1;
    switch (c->family) {
    case MOE_HF_MIXTRAL:
    case MOE_HF_OLMOE:
    case MOE_HF_GPT_OSS:
        return 1;
    case MOE_HF_QWEN2_MOE:
    case MOE_HF_QWEN3_MOE:
        for (int i = 0; i < c->n_mlp_only_layers; i++)
            if (c->mlp_only_layers[i] == layer) return 0;
        return c->decoder_sparse_step > 0 && (layer + 1) % c->decoder_sparse_step == 0;
    case MOE_HF_DEEPSEEK_V2:
    case MOE_HF_DEEPSEEK_V3:
        return layer >= c->first_k_dense_replace && layer % c->moe_layer_freq == 0;
    case MOE_HF_SWITCH: {
        /* transformers' SwitchTransformersStack: block i is sparse if i % step == 1 (or step == 1) */
        const int64_t step = decoder ? c->decoder_sparse_step : c->encoder_sparse_step;
        return step > 0 && (step == 1 || layer % step == 1);
    }
    }
    return 0;
}

void moe_hf_config_desc(const moe_hf_config *c, moe_layer_desc *out)
{
    moe_layer_desc d = {.struct_size = sizeof d};
    d.d_model = c->hidden_size;
    d.d_ff = c->d_ff;
    d.n_experts = c->n_experts;
    d.top_k = c->top_k;
    d.score_func = c->score_func;
    d.activation = c->activation;
    d.d_ff_shared = c->d_ff_shared;
    d.renormalize = c->norm_topk_prob;
    switch (c->family) {
    case MOE_HF_QWEN2_MOE:
        d.shared_expert_gate = c->d_ff_shared > 0;
        break;
    case MOE_HF_DEEPSEEK_V2:
    case MOE_HF_DEEPSEEK_V3:
        if (c->topk_method != MOE_HF_TOPK_GREEDY && c->n_group > 1) {
            d.n_group = c->n_group;
            d.topk_group = c->topk_group;
            d.group_score =
                c->topk_method == MOE_HF_TOPK_NOAUX_TC ? MOE_GROUP_SCORE_TOP2_SUM : MOE_GROUP_SCORE_MAX;
        }
        d.has_selection_bias = c->topk_method == MOE_HF_TOPK_NOAUX_TC;
        if (c->family == MOE_HF_DEEPSEEK_V2) {
            /* DeepSeek-V2's code renormalises (top_k > 1 and norm_topk_prob) or scales, not both. */
            d.renormalize = c->top_k > 1 && c->norm_topk_prob;
            d.routed_scaling_factor = d.renormalize ? 1.0f : (float)c->routed_scaling_factor;
        } else {
            d.routed_scaling_factor = (float)c->routed_scaling_factor;
        }
        break;
    case MOE_HF_SWITCH:
        d.expert_capacity = c->expert_capacity;
        break;
    case MOE_HF_GPT_OSS:
        d.router_has_bias = 1;
        d.expert_has_bias = 1;
        d.swiglu_alpha = (float)c->swiglu_alpha;
        d.swiglu_limit = (float)c->swiglu_limit;
        break;
    default:
        break;
    }
    *out = d;
}
