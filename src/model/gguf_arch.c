/*
 * gguf_arch.c — what a GGUF file's keys and tensor names say about its MoE blocks, read the
 * way llama.cpp reads them (src/llama-model.cpp's load_hparams, src/llama-arch.cpp's names,
 * src/llama-graph.cpp's build_moe_ffn), so a file gives here the layer llama.cpp runs:
 *
 *   arch        expert width key                      routing
 *   llama       feed_forward_length                   softmax, top-k, renormalised (Mixtral)
 *   qwen2moe    expert_feed_forward_length, else      softmax, top-k, not renormalised; shared
 *               feed_forward_length / expert_used     expert (expert_shared_feed_forward_length,
 *                                                     else feed_forward_length) gated by
 *                                                     sigmoid(ffn_gate_inp_shexp · x)
 *   qwen3moe    as qwen2moe                           softmax, top-k, renormalised (always)
 *   olmoe       feed_forward_length                   softmax, top-k, not renormalised
 *   deepseek2   expert_feed_forward_length            expert_gating_func (0 or absent: softmax,
 *                                                     1: softmax, 2: sigmoid),
 *                                                     expert_weights_norm (absent: no),
 *                                                     expert_weights_scale (0 or absent: 1),
 *                                                     group-limited when expert_group_count > 1
 *                                                     (group score = the sum of its best two;
 *                                                     expert_group_used_count groups kept),
 *                                                     selection bias blk.N.exp_probs_b.bias when
 *                                                     present; expert_shared_count shared
 *                                                     experts of the expert width, ungated
 *   gpt-oss     expert_feed_forward_length            top-k of the logits + blk.N.ffn_gate_inp.bias,
 *                                                     softmax over the k (= softmax, renormalised);
 *                                                     blk.N.ffn_{gate,up,down}_exps.bias; llama.cpp's
 *                                                     swiglu_oai with alpha 1.702, limit 7.0 (in
 *                                                     code: no key)
 *
 * Every architecture: {arch}.embedding_length, block_count, expert_count (0 or absent: a dense
 * model, refused as such), expert_used_count. A width of 0 is absent, as in llama.cpp.
 * A layer has an MoE block when it has blk.N.ffn_gate_inp.weight (so deepseek2's leading dense
 * blocks, and any other dense block, are refused as dense). Experts are the stacked tensors
 * blk.N.ffn_{gate,up,down}_exps.weight (numpy order [E, rows, cols]), the fused
 * blk.N.ffn_gate_up_exps.weight ([E, 2·d_ff, d_model], gate rows first), or the per-expert
 * tensors of older files, blk.N.ffn_{gate,up,down}.E.weight.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif

#include "model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPLIT_MAX 9999 /* llama.cpp's file names carry five digits; no real split comes close */

typedef enum width_rule {
    WIDTH_FF,      /* feed_forward_length (llama, olmoe: llama.cpp sizes the experts by it) */
    WIDTH_EFF_OR,  /* expert_feed_forward_length, else feed_forward_length / expert_used_count */
    WIDTH_EFF_ONLY /* expert_feed_forward_length, required (deepseek2) */
} width_rule;

typedef struct arch_info {
    const char *name;
    moe_hf_family family;
    bool renormalize;
    bool shared;       /* qwen2moe's gated shared expert */
    width_rule width;  /* where the experts' width comes from */
    bool routing_keys; /* deepseek2: gating function, norm, scale, groups from keys */
    bool gpt_oss;      /* router and expert biases, the clamped SwiGLU (alpha, limit in code) */
} arch_info;

static const arch_info archs[] = {
    {"llama", MOE_HF_MIXTRAL, true, false, WIDTH_FF, false, false},
    {"qwen2moe", MOE_HF_QWEN2_MOE, false, true, WIDTH_EFF_OR, false, false},
    {"qwen3moe", MOE_HF_QWEN3_MOE, true, false, WIDTH_EFF_OR, false, false},
    {"olmoe", MOE_HF_OLMOE, false, false, WIDTH_FF, false, false},
    {"deepseek2", MOE_HF_DEEPSEEK_V3, false, false, WIDTH_EFF_ONLY, true, false},
    {"gpt-oss", MOE_HF_GPT_OSS, true, false, WIDTH_EFF_ONLY, false, true},
};

/* ---- opening a file or a split -------------------------------------------------------------- */

/* Keys of one shard as llama.cpp's loader checks them. */
static moe_status split_keys(moe_context *ctx, const moe_tensor_file *f, uint64_t *no, uint64_t *count,
                             uint64_t *tensors, bool *has_tensors)
{
    bool found;
    moe_status st = moe_gguf_get_uint(ctx, f, "split.no", no, &found);
    if (st == MOE_OK) st = moe_gguf_get_uint(ctx, f, "split.count", count, &found);
    if (st == MOE_OK) st = moe_gguf_get_uint(ctx, f, "split.tensors.count", tensors, has_tensors);
    return st;
}

moe_status moe_gguf_open_files(moe_context *ctx, moe_model *m, const char *path)
{
    m->files = moe_calloc(1, sizeof *m->files);
    m->weights_label = moe_malloc(strlen(path) + 1);
    if (!m->files || !m->weights_label)
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory", path);
    strcpy(m->weights_label, path);
    moe_status st = moe_gguf_open(ctx, path, &m->files[0]);
    if (st != MOE_OK) return st;
    m->n_files = 1;
    uint64_t no, count, total;
    bool has_total;
    st = split_keys(ctx, &m->files[0], &no, &count, &total, &has_total);
    if (st != MOE_OK || count <= 1) return st;
    /* NAME-00001-of-0000N.gguf: the other files' names come from the first's. */
    char tail[48];
    snprintf(tail, sizeof tail, "-%05d-of-%05d.gguf", 1, (int)(count > SPLIT_MAX ? SPLIT_MAX : count));
    /* (count is checked below; the name is only built from a bounded one) */
    const size_t len = strlen(path), tl = strlen(tail);
    if (count > SPLIT_MAX)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: split.count is %llu; a split has at most %d files", path,
                        (unsigned long long)count, SPLIT_MAX);
    if (no != 0 || len <= tl || strcmp(path + len - tl, tail))
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: file %llu of a GGUF split into %llu; open the first, whose name ends in %s",
                        path, (unsigned long long)no + 1, (unsigned long long)count, tail);
    moe_tensor_file *files = moe_realloc(m->files, (size_t)count * sizeof *files);
    char *name = moe_malloc(len + 1);
    if (!files || !name) {
        if (files) m->files = files;
        moe_free(name);
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory", path);
    }
    m->files = files;
    size_t n_tensors = m->files[0].n_tensors;
    for (uint64_t i = 1; i < count && st == MOE_OK; i++) {
        memcpy(name, path, len - tl);
        snprintf(name + len - tl, tl + 1, "-%05d-of-%05d.gguf", (int)i + 1, (int)count);
        memset(&m->files[i], 0, sizeof m->files[i]);
        st = moe_gguf_open(ctx, name, &m->files[i]);
        if (st != MOE_OK) { /* say which model the file was looked for */
            char why[MOE_ERROR_MAX];
            snprintf(why, sizeof why, "%s", ctx ? moe_context_error(ctx) : moe_last_error());
            st = moe_fail(ctx, st, "%s (file %llu of the %llu that %s is split into)", why,
                          (unsigned long long)i + 1, (unsigned long long)count, path);
            break;
        }
        m->n_files++;
        uint64_t no_i, count_i, total_i;
        bool has_i;
        st = split_keys(ctx, &m->files[i], &no_i, &count_i, &total_i, &has_i);
        if (st == MOE_OK && (no_i != i || count_i != count))
            st = moe_fail(ctx, MOE_ERROR_FORMAT,
                          "%s: says it is file %llu of %llu (split.no, split.count), but it is named as file "
                          "%llu of %llu",
                          name, (unsigned long long)no_i + 1, (unsigned long long)count_i,
                          (unsigned long long)i + 1, (unsigned long long)count);
        n_tensors += m->files[i].n_tensors;
    }
    if (st == MOE_OK && has_total && total != n_tensors)
        st = moe_fail(ctx, MOE_ERROR_FORMAT,
                      "%s: split.tensors.count says %llu tensors, but its %llu files hold %zu (a file of the "
                      "split is missing or from another model)",
                      path, (unsigned long long)total, (unsigned long long)count, n_tensors);
    moe_free(name);
    return st;
}

/* ---- the architecture ----------------------------------------------------------------------- */

typedef struct keys {
    moe_context *ctx;
    const moe_tensor_file *f;
    const char *arch;
    moe_status st;
} keys;

/* {arch}.name as an unsigned integer (0 and *found false when absent); `need` makes an absent
 * one an error. llama.cpp treats a 0 width as absent, and so do the callers. */
static uint64_t key_uint(keys *k, const char *name, bool need, bool *found)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", k->arch, name);
    uint64_t v = 0;
    bool f = false;
    if (k->st == MOE_OK) k->st = moe_gguf_get_uint(k->ctx, k->f, key, &v, &f);
    if (k->st == MOE_OK && need && !f)
        k->st = moe_fail(k->ctx, MOE_ERROR_FORMAT, "%s: key '%s' is missing (a %s model needs it)",
                         k->f->path, key, k->arch);
    if (found) *found = f;
    return v;
}

static double key_float(keys *k, const char *name)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", k->arch, name);
    double v = 0.0;
    bool found;
    if (k->st == MOE_OK) k->st = moe_gguf_get_float(k->ctx, k->f, key, &v, &found);
    return v;
}

static bool key_bool(keys *k, const char *name)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", k->arch, name);
    bool v = false, found;
    if (k->st == MOE_OK) k->st = moe_gguf_get_bool(k->ctx, k->f, key, &v, &found);
    return v;
}

/* v in 1..max, or an error naming what it is (`name`: the key, or how it was derived). */
static int64_t in_range(keys *k, const char *name, uint64_t v, uint64_t max)
{
    if (k->st == MOE_OK && (v == 0 || v > max))
        k->st = moe_fail(k->ctx, MOE_ERROR_FORMAT, "%s: %s.%s is %llu; 1 to %llu expected", k->f->path,
                         k->arch, name, (unsigned long long)v, (unsigned long long)max);
    return (int64_t)v;
}

/* The experts' width, by the architecture's rule (arch_info.width). */
static int64_t expert_width(keys *k, const arch_info *a, int64_t top_k)
{
    bool has_eff = false, has_ff = false;
    const uint64_t eff =
        a->width == WIDTH_FF ? 0 : key_uint(k, "expert_feed_forward_length", false, &has_eff);
    if (eff) return in_range(k, "expert_feed_forward_length", eff, MOE_MAX_DIM);
    if (a->width == WIDTH_EFF_ONLY) {
        if (k->st == MOE_OK)
            k->st = moe_fail(k->ctx, MOE_ERROR_FORMAT,
                             "%s: key '%s.expert_feed_forward_length' is %s (a %s model needs it)",
                             k->f->path, k->arch, has_eff ? "0" : "missing", k->arch);
        return 0;
    }
    const uint64_t ff = key_uint(k, "feed_forward_length", true, &has_ff);
    if (a->width == WIDTH_FF) return in_range(k, "feed_forward_length", ff, MOE_MAX_DIM);
    return in_range(k, "feed_forward_length / expert_used_count (no expert_feed_forward_length)",
                    ff / (uint64_t)top_k, MOE_MAX_DIM);
}

moe_status moe_gguf_read_arch(moe_context *ctx, moe_model *m)
{
    const moe_tensor_file *f = &m->files[0];
    char arch[64];
    bool found;
    moe_status st = moe_gguf_get_string(ctx, f, "general.architecture", arch, sizeof arch, &found);
    if (st != MOE_OK) return st;
    if (!found) return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: key 'general.architecture' is missing", f->path);
    const arch_info *a = NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(arch, archs[i].name)) a = &archs[i];
    if (!a)
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                        "%s: architecture '%s' is not one this version runs (llama with experts, qwen2moe, "
                        "qwen3moe, olmoe, deepseek2, gpt-oss)",
                        f->path, arch);
    keys k = {.ctx = ctx, .f = f, .arch = arch};
    moe_hf_config *c = &m->cfg;
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "%s", arch);
    c->family = a->family;
    const uint64_t n_experts = key_uint(&k, "expert_count", false, NULL);
    if (k.st == MOE_OK && n_experts == 0) /* what llama.cpp writes for a dense model */
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                        "%s: a dense %s model (%s.expert_count is 0 or absent): it has no MoE block to run",
                        f->path, arch, arch);
    c->n_experts = in_range(&k, "expert_count", n_experts, MOE_MAX_DIM);
    c->hidden_size =
        in_range(&k, "embedding_length", key_uint(&k, "embedding_length", true, NULL), MOE_MAX_DIM);
    c->n_layers = in_range(&k, "block_count", key_uint(&k, "block_count", true, NULL), 1 << 20);
    c->top_k = in_range(&k, "expert_used_count", key_uint(&k, "expert_used_count", true, NULL),
                        c->n_experts > 0 ? (uint64_t)c->n_experts : 1);
    if (k.st != MOE_OK) return k.st;
    c->d_ff = expert_width(&k, a, c->top_k);

    moe_layer_desc d = {.struct_size = sizeof d};
    d.d_model = c->hidden_size;
    d.d_ff = c->d_ff;
    d.n_experts = c->n_experts;
    d.top_k = c->top_k;
    d.activation = MOE_ACTIVATION_SWIGLU;
    d.score_func = MOE_SCORE_SOFTMAX;
    d.renormalize = a->renormalize;
    d.routed_scaling_factor = 1.0f;
    if (a->gpt_oss) { /* llama.cpp: softmax over the chosen biased logits (SOFTMAX_WEIGHT), swiglu_oai
                         with alpha 1.702 and limit 7.0 fixed in code, biases on everything */
        d.activation = MOE_ACTIVATION_SWIGLU_OAI;
        d.router_has_bias = 1;
        d.expert_has_bias = 1;
    }
    if (a->shared) { /* llama.cpp: expert_shared_feed_forward_length, else feed_forward_length */
        uint64_t sff = key_uint(&k, "expert_shared_feed_forward_length", false, NULL);
        if (!sff) sff = key_uint(&k, "feed_forward_length", false, NULL);
        d.d_ff_shared = sff ? in_range(&k, "expert_shared_feed_forward_length", sff, MOE_MAX_DIM) : 0;
        d.shared_expert_gate = d.d_ff_shared > 0;
    }
    if (a->routing_keys) { /* only deepseek2 reads these in llama.cpp; the others fix them in code */
        const double scale = key_float(&k, "expert_weights_scale");
        d.routed_scaling_factor = scale != 0.0 ? (float)scale : 1.0f;
        const uint64_t gating = key_uint(&k, "expert_gating_func", false, NULL);
        if (k.st == MOE_OK && gating > 2)
            k.st = moe_fail(
                ctx, MOE_ERROR_UNSUPPORTED,
                "%s: %s.expert_gating_func is %llu; this version runs 0 or absent (softmax, llama.cpp's "
                "default), 1 (softmax) and 2 (sigmoid)",
                f->path, arch, (unsigned long long)gating);
        d.score_func = gating == 2 ? MOE_SCORE_SIGMOID : MOE_SCORE_SOFTMAX;
        d.renormalize = key_bool(&k, "expert_weights_norm");
        const uint64_t groups = key_uint(&k, "expert_group_count", false, NULL);
        const uint64_t used = key_uint(&k, "expert_group_used_count", false, NULL);
        if (groups > 1) {
            d.n_group = (int64_t)(groups < (uint64_t)1 << 20 ? groups : (uint64_t)1 << 20);
            d.topk_group = (int64_t)(used < (uint64_t)1 << 20 ? used : (uint64_t)1 << 20);
            d.group_score = MOE_GROUP_SCORE_TOP2_SUM;
        }
        const uint64_t n_shared = key_uint(&k, "expert_shared_count", false, NULL);
        if (k.st == MOE_OK && n_shared > 1024)
            k.st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: %s.expert_shared_count is %llu; 0 to 1024 expected",
                            f->path, arch, (unsigned long long)n_shared);
        d.d_ff_shared = k.st == MOE_OK ? (int64_t)n_shared * c->d_ff : 0;
    }
    if (k.st != MOE_OK) return k.st;
    /* The block the keys describe must be one the layer can be (groups that divide the experts,
     * enough experts in the kept groups, sizes in range): checked here, so a bad file fails at
     * open naming the file, as a bad config.json does. */
    moe_layer_desc check = d, norm;
    check.max_tokens = 1;
    st = moe_validate_layer(NULL, &check, NULL, &norm);
    if (st != MOE_OK) {
        char why[MOE_ERROR_MAX];
        snprintf(why, sizeof why, "%s", moe_last_error());
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the MoE block its %s.* keys describe cannot be run: %s",
                        f->path, arch, why);
    }
    c->d_ff_shared = d.d_ff_shared;
    m->arch.desc = d;
    m->arch.moe_layer = moe_calloc((size_t)c->n_layers, sizeof *m->arch.moe_layer);
    if (!m->arch.moe_layer) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory", f->path);
    for (int64_t l = 0; l < c->n_layers; l++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%lld.ffn_gate_inp.weight", (long long)l);
        m->arch.moe_layer[l] = moe_model_find_tensor(m, name) != NULL;
    }
    return MOE_OK;
}

/* ---- one layer ------------------------------------------------------------------------------ */

/* Gate and up are one tensor to the backend (fused), so one format: when a file's differ (not
 * seen in practice), F32, the one both convert to without loss. */
static moe_dtype common_format(moe_dtype a, moe_dtype b)
{
    return a == b ? a : MOE_DTYPE_F32;
}

moe_status moe_gguf_layer_lookup(moe_context *ctx, const moe_model *m, int64_t layer, moe_layer_desc *out,
                                 moe_layer_refs *refs)
{
    moe_layer_desc d = m->arch.desc;
    const int64_t D = d.d_model, F = d.d_ff, E = d.n_experts, FS = d.d_ff_shared;
    moe_lookup lk = {.ctx = ctx, .m = m};
    snprintf(lk.prefix, sizeof lk.prefix, "blk.%lld.", (long long)layer);
    char why[128];
    snprintf(why, sizeof why, "router: ne [hidden=%lld, n_experts=%lld]", (long long)D, (long long)E);
    const moe_file_tensor *router = moe_lookup_need(&lk, "ffn_gate_inp.weight", 0, E, D, why, false);
    const moe_file_tensor *bias =
        m->cfg.family == MOE_HF_DEEPSEEK_V3
            ? moe_lookup_need(&lk, "exp_probs_b.bias", 0, 0, E, "selection bias: ne [n_experts]", true)
        : d.router_has_bias
            ? moe_lookup_need(&lk, "ffn_gate_inp.bias", 0, 0, E, "router bias: ne [n_experts]", false)
            : NULL;
    d.has_selection_bias = m->cfg.family == MOE_HF_DEEPSEEK_V3 && bias != NULL;
    if (refs) refs->router = moe_view_of(router), refs->bias = moe_view_of(bias);

    snprintf(why, sizeof why,
             "experts: ne [hidden=%lld, d_ff=%lld, n_experts=%lld] (down: [d_ff, hidden, E])", (long long)D,
             (long long)F, (long long)E);
    const moe_file_tensor *fused = moe_lookup_need(&lk, "ffn_gate_up_exps.weight", E, 2 * F, D, why, true);
    const moe_file_tensor *up = fused ? NULL : moe_lookup_need(&lk, "ffn_up_exps.weight", E, F, D, why, true);
    if (lk.st != MOE_OK) return lk.st;
    if (fused || up) { /* stacked */
        const moe_file_tensor *gate =
            fused ? NULL : moe_lookup_need(&lk, "ffn_gate_exps.weight", E, F, D, why, false);
        const moe_file_tensor *down = moe_lookup_need(&lk, "ffn_down_exps.weight", E, D, F, why, false);
        if (lk.st != MOE_OK) return lk.st;
        d.weight_dtype = fused ? fused->dtype : common_format(gate->dtype, up->dtype);
        d.down_weight_dtype = down->dtype;
        if (d.expert_has_bias && !fused) { /* gpt-oss: ne [d_ff, E] and [hidden, E] */
            snprintf(why, sizeof why, "expert biases: ne [d_ff=%lld, n_experts=%lld] (down: [hidden, E])",
                     (long long)F, (long long)E);
            const moe_file_tensor *gb = moe_lookup_need(&lk, "ffn_gate_exps.bias", 0, E, F, why, false);
            const moe_file_tensor *ub = moe_lookup_need(&lk, "ffn_up_exps.bias", 0, E, F, why, false);
            const moe_file_tensor *db = moe_lookup_need(&lk, "ffn_down_exps.bias", 0, E, D, why, false);
            if (lk.st != MOE_OK) return lk.st;
            const moe_file_tensor *all[] = {bias, gb, ub, db};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                if (all[i] && moe_dtype_block_size(all[i]->dtype) != 1)
                    return moe_fail(
                        ctx, MOE_ERROR_FORMAT,
                        "%s: layer %lld's %s bias has type %s; biases are read as F32, F16 or BF16",
                        m->weights_label, (long long)layer, i == 0 ? "router" : "an expert",
                        all[i]->dtype_name);
            if (refs)
                refs->gate_bias = moe_view_of(gb), refs->up_bias = moe_view_of(ub),
                refs->down_bias = moe_view_of(db);
        } else if (d.expert_has_bias) {
            return moe_fail(ctx, MOE_ERROR_FORMAT,
                            "%s: layer %lld of this %s file has a fused ffn_gate_up_exps.weight; its expert "
                            "biases are read from ffn_{gate,up}_exps.bias, so gate and up must be apart",
                            m->weights_label, (long long)layer, m->cfg.model_type);
        }
        for (int64_t e = 0; refs && e < E; e++) {
            if (fused) {
                const moe_tensor_view v = moe_view_expert(fused, e, E);
                refs->gate[e] = (moe_tensor_view){v.data, v.bytes / 2, v.dtype, NULL, 0};
                refs->up[e] = (moe_tensor_view){v.data + v.bytes / 2, v.bytes / 2, v.dtype, NULL, 0};
            } else {
                refs->gate[e] = moe_view_expert(gate, e, E);
                refs->up[e] = moe_view_expert(up, e, E);
            }
            refs->down[e] = moe_view_expert(down, e, E);
        }
    } else { /* the per-expert tensors of older files */
        if (d.expert_has_bias)
            return moe_fail(ctx, MOE_ERROR_FORMAT,
                            "%s: layer %lld has no stacked experts (%sffn_up_exps.weight); a %s file keeps "
                            "them stacked, with their biases",
                            m->weights_label, (long long)layer, lk.prefix, m->cfg.model_type);
        char first[MOE_NAME_MAX_LEN + 32];
        snprintf(first, sizeof first, "%sffn_up.0.weight", lk.prefix);
        if (!moe_model_find_tensor(m, first))
            return moe_fail(
                ctx, MOE_ERROR_FORMAT,
                "%s: layer %lld has a router but no experts: neither %sffn_up_exps.weight (stacked) "
                "nor %s (one tensor per expert) is there",
                m->weights_label, (long long)layer, lk.prefix, first);
        for (int64_t e = 0; e < E && lk.st == MOE_OK; e++) {
            char name[96];
            snprintf(why, sizeof why, "expert %lld of %lld: ne [hidden=%lld, d_ff=%lld]", (long long)e,
                     (long long)E, (long long)D, (long long)F);
            snprintf(name, sizeof name, "ffn_gate.%lld.weight", (long long)e);
            const moe_file_tensor *tg = moe_lookup_need(&lk, name, 0, F, D, why, false);
            snprintf(name, sizeof name, "ffn_up.%lld.weight", (long long)e);
            const moe_file_tensor *tu = moe_lookup_need(&lk, name, 0, F, D, why, false);
            snprintf(name, sizeof name, "ffn_down.%lld.weight", (long long)e);
            const moe_file_tensor *td = moe_lookup_need(&lk, name, 0, D, F, why, false);
            if (lk.st != MOE_OK) break;
            const moe_dtype w = common_format(tg->dtype, tu->dtype);
            d.weight_dtype = e == 0 ? w : common_format(d.weight_dtype, w);
            d.down_weight_dtype = e == 0 ? td->dtype : common_format(d.down_weight_dtype, td->dtype);
            if (refs)
                refs->gate[e] = moe_view_of(tg), refs->up[e] = moe_view_of(tu),
                refs->down[e] = moe_view_of(td);
        }
    }
    if (FS > 0) {
        snprintf(why, sizeof why, "shared expert: ne [hidden=%lld, d_ff_shared=%lld]", (long long)D,
                 (long long)FS);
        const moe_file_tensor *sg = moe_lookup_need(&lk, "ffn_gate_shexp.weight", 0, FS, D, why, false);
        const moe_file_tensor *su = moe_lookup_need(&lk, "ffn_up_shexp.weight", 0, FS, D, why, false);
        const moe_file_tensor *sd = moe_lookup_need(&lk, "ffn_down_shexp.weight", 0, D, FS, why, false);
        const moe_file_tensor *seg = d.shared_expert_gate
                                         ? moe_lookup_need(&lk, "ffn_gate_inp_shexp.weight", 0, -1, D,
                                                           "shared expert gate: ne [hidden]", false)
                                         : NULL;
        if (lk.st != MOE_OK) return lk.st;
        d.shared_weight_dtype = common_format(sg->dtype, su->dtype);
        d.shared_down_weight_dtype = sd->dtype;
        if (refs)
            refs->shared_gate = moe_view_of(sg), refs->shared_up = moe_view_of(su),
            refs->shared_down = moe_view_of(sd), refs->seg = moe_view_of(seg);
    }
    *out = d;
    return lk.st;
}
