/*
 * test_model.c — the Hugging Face checkpoint loader (moe_model_*) on the backend named by
 * argv[1]. The test writes its own model directories (tests/fixture.c): one per model_type,
 * unsharded and sharded (with misaligned data), in F32, F16 and BF16, from random weights;
 * each layer the loader builds must match the scalar reference run on the same (rounded)
 * weights with the desc the family's conventions give. Then every error a user can hit:
 * missing files, unsupported model_type, bad layer index, missing / misshapen / mistyped
 * tensors, corrupt safetensors headers (repeated keys, NUL in a string, non-string metadata),
 * broken shard indexes, files that are not regular (directories, FIFOs, links to /dev/zero)
 * or over their size limit, and bad .npy inputs — each a specific status, a message naming
 * the file and tensor, and the out-param untouched.
 */
#define _POSIX_C_SOURCE 200809L

#include "../tools/npy.h"
#include "fixture.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define Y_TOL       1e-5
#define W_TOL       1e-5f
#define MAX_TENSORS 512

/* ---- the families ----------------------------------------------------------------------------- */

typedef struct family {
    const char *name;    /* model_type */
    moe_layer_desc desc; /* what the loader must produce (max_tokens = T) */
    int64_t layer;       /* a MoE layer */
    int64_t dense_layer; /* a layer without an MoE block, -1 if every layer has one */
    int decoder;         /* Switch: use a decoder block */
    const char *config;  /* config.json, printf format taking D, F, E, k */
} family;

static family families[] = {
    {"mixtral",
     {.d_model = 24, .d_ff = 40, .n_experts = 4, .top_k = 2, .renormalize = 1},
     1,
     -1,
     0,
     "{\"model_type\": \"mixtral\", \"hidden_size\": %lld, \"intermediate_size\": %lld, "
     "\"num_local_experts\": %lld,"
     " \"num_experts_per_tok\": %lld, \"num_hidden_layers\": 2, \"hidden_act\": \"silu\"}"},
    {"olmoe",
     {.d_model = 20, .d_ff = 12, .n_experts = 8, .top_k = 3},
     0,
     -1,
     0,
     "{\"model_type\": \"olmoe\", \"hidden_size\": %lld, \"intermediate_size\": %lld, \"num_experts\": %lld,"
     " \"num_experts_per_tok\": %lld, \"norm_topk_prob\": false, \"num_hidden_layers\": 1}"},
    {"qwen2_moe",
     {.d_model = 16,
      .d_ff = 20,
      .n_experts = 6,
      .top_k = 2,
      .renormalize = 1,
      .d_ff_shared = 24,
      .shared_expert_gate = 1},
     2,
     0,
     0,
     "{\"model_type\": \"qwen2_moe\", \"hidden_size\": %lld, \"moe_intermediate_size\": %lld, "
     "\"num_experts\": %lld,"
     " \"num_experts_per_tok\": %lld, \"intermediate_size\": 999, \"shared_expert_intermediate_size\": 24,"
     " \"norm_topk_prob\": true, \"decoder_sparse_step\": 1, \"mlp_only_layers\": [0], "
     "\"num_hidden_layers\": 3}"},
    {"qwen3_moe",
     {.d_model = 16, .d_ff = 12, .n_experts = 8, .top_k = 2, .renormalize = 1},
     3,
     2,
     0,
     "{\"model_type\": \"qwen3_moe\", \"hidden_size\": %lld, \"moe_intermediate_size\": %lld, "
     "\"num_experts\": %lld,"
     " \"num_experts_per_tok\": %lld, \"norm_topk_prob\": true, \"decoder_sparse_step\": 2, "
     "\"mlp_only_layers\": [],"
     " \"num_hidden_layers\": 4}"},
    {"deepseek_v2",
     {.d_model = 16,
      .d_ff = 8,
      .n_experts = 8,
      .top_k = 2,
      .n_group = 4,
      .topk_group = 2,
      .group_score = MOE_GROUP_SCORE_MAX,
      .routed_scaling_factor = 2.0f,
      .d_ff_shared = 16},
     1,
     0,
     0,
     "{\"model_type\": \"deepseek_v2\", \"hidden_size\": %lld, \"moe_intermediate_size\": %lld, "
     "\"n_routed_experts\":"
     " %lld, \"num_experts_per_tok\": %lld, \"n_shared_experts\": 2, \"n_group\": 4, \"topk_group\": 2, "
     "\"topk_method\":"
     " \"group_limited_greedy\", \"scoring_func\": \"softmax\", \"routed_scaling_factor\": 2.0, "
     "\"norm_topk_prob\":"
     " false, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, \"num_hidden_layers\": 2, "
     "\"intermediate_size\": 64}"},
    {"deepseek_v3",
     {.d_model = 20,
      .d_ff = 12,
      .n_experts = 16,
      .top_k = 4,
      .score_func = MOE_SCORE_SIGMOID,
      .n_group = 4,
      .topk_group = 2,
      .group_score = MOE_GROUP_SCORE_TOP2_SUM,
      .renormalize = 1,
      .routed_scaling_factor = 2.5f,
      .has_selection_bias = 1,
      .d_ff_shared = 12},
     1,
     0,
     0,
     "{\"model_type\": \"deepseek_v3\", \"hidden_size\": %lld, \"moe_intermediate_size\": %lld, "
     "\"n_routed_experts\":"
     " %lld, \"num_experts_per_tok\": %lld, \"n_shared_experts\": 1, \"n_group\": 4, \"topk_group\": 2, "
     "\"topk_method\":"
     " \"noaux_tc\", \"scoring_func\": \"sigmoid\", \"routed_scaling_factor\": 2.5, \"norm_topk_prob\": true,"
     " \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, \"num_hidden_layers\": 2, \"intermediate_size\": "
     "64}"},
    {"switch_transformers",
     {.d_model = 16,
      .d_ff = 24,
      .n_experts = 4,
      .top_k = 1,
      .activation = MOE_ACTIVATION_RELU,
      .expert_capacity = 3},
     1,
     0,
     0,
     "{\"model_type\": \"switch_transformers\", \"d_model\": %lld, \"d_ff\": %lld, \"num_experts\": %lld,"
     " \"num_selected_experts\": %lld, \"expert_capacity\": 3, \"num_layers\": 2, \"num_decoder_layers\": 4,"
     " \"encoder_sparse_step\": 2, \"decoder_sparse_step\": 2, \"dense_act_fn\": \"relu\"}"},
};
enum { N_FAMILIES = sizeof families / sizeof families[0] };

/* The family's tensor names for layer `layer` (Switch: decoder block when `decoder`). */
static void prefix_of(const family *f, int64_t layer, int decoder, char *out, size_t n)
{
    if (!strcmp(f->name, "switch_transformers"))
        snprintf(out, n, "%s.block.%lld.layer.%d.mlp.", decoder ? "decoder" : "encoder", (long long)layer,
                 decoder ? 2 : 1);
    else if (!strcmp(f->name, "mixtral"))
        snprintf(out, n, "model.layers.%lld.block_sparse_moe.", (long long)layer);
    else
        snprintf(out, n, "model.layers.%lld.mlp.", (long long)layer);
}

static int add(fx_tensor *t, int n, const char *prefix, const char *suffix, fx_dtype dt, int64_t rows,
               int64_t cols, const float *data)
{
    snprintf(t[n].name, sizeof t[n].name, "%s%s", prefix, suffix);
    t[n].dtype = dt;
    t[n].n_dims = cols ? 2 : 1;
    t[n].shape[0] = rows;
    t[n].shape[1] = cols;
    t[n].data = data;
    return n + 1;
}

/* Every tensor of the layer's MoE block, in the family's names, all stored as `dt`. */
static int layer_tensors(const family *f, const h_layer *l, int64_t layer, int decoder, fx_dtype dt,
                         fx_tensor *t)
{
    const moe_layer_desc *d = &l->desc;
    const int64_t D = d->d_model, F = d->d_ff, E = d->n_experts, FS = d->d_ff_shared;
    char p[96], s[88];
    prefix_of(f, layer, decoder, p, sizeof p);
    const bool sw = !strcmp(f->name, "switch_transformers"), mx = !strcmp(f->name, "mixtral");
    int n = add(t, 0, p, sw ? "router.classifier.weight" : "gate.weight", dt, E, D, l->router);
    if (d->has_selection_bias) n = add(t, n, p, "gate.e_score_correction_bias", dt, E, 0, l->router_bias);
    for (int64_t e = 0; e < E; e++) {
        const size_t off = (size_t)(e * F * D);
        if (sw) {
            snprintf(s, sizeof s, "experts.expert_%lld.wi.weight", (long long)e);
            n = add(t, n, p, s, dt, F, D, l->up + off);
            snprintf(s, sizeof s, "experts.expert_%lld.wo.weight", (long long)e);
            n = add(t, n, p, s, dt, D, F, l->down + off);
            continue;
        }
        snprintf(s, sizeof s, "experts.%lld.%s.weight", (long long)e, mx ? "w1" : "gate_proj");
        n = add(t, n, p, s, dt, F, D, l->gate + off);
        snprintf(s, sizeof s, "experts.%lld.%s.weight", (long long)e, mx ? "w3" : "up_proj");
        n = add(t, n, p, s, dt, F, D, l->up + off);
        snprintf(s, sizeof s, "experts.%lld.%s.weight", (long long)e, mx ? "w2" : "down_proj");
        n = add(t, n, p, s, dt, D, F, l->down + off);
    }
    if (FS) {
        const char *sh = !strcmp(f->name, "qwen2_moe") ? "shared_expert." : "shared_experts.";
        snprintf(s, sizeof s, "%sgate_proj.weight", sh);
        n = add(t, n, p, s, dt, FS, D, l->shared_gate);
        snprintf(s, sizeof s, "%sup_proj.weight", sh);
        n = add(t, n, p, s, dt, FS, D, l->shared_up);
        snprintf(s, sizeof s, "%sdown_proj.weight", sh);
        n = add(t, n, p, s, dt, D, FS, l->shared_down);
    }
    if (d->shared_expert_gate) n = add(t, n, p, "shared_expert_gate.weight", dt, 1, D, l->shared_expert_gate);
    return n;
}

static void write_config(const family *f, const char *dir)
{
    const moe_layer_desc *d = &f->desc;
    char text[2048], path[1100];
    snprintf(text, sizeof text, f->config, (long long)d->d_model, (long long)d->d_ff, (long long)d->n_experts,
             (long long)d->top_k);
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(fx_write_text(path, text) == 0, "cannot write %s", path);
}

/* Writes the tensors unsharded (model.safetensors) or over n_shards files with an index. */
static void write_weights(const char *dir, const fx_tensor *t, int n, int n_shards, bool misalign)
{
    char path[1100];
    if (n_shards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        CHECK(fx_write_safetensors(path, t, (size_t)n, misalign) == 0, "cannot write %s", path);
        return;
    }
    static fx_tensor part[MAX_TENSORS];
    size_t cap = 256 + (size_t)n * 300, at = 0;
    char *index = malloc(cap);
    at += (size_t)snprintf(index, cap, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int s = 0; s < n_shards; s++) {
        int m = 0;
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        for (int i = s; i < n; i += n_shards) {
            part[m++] = t[i];
            at += (size_t)snprintf(index + at, cap - at, "%s\"%s\": \"%s\"", at > 60 ? ", " : "", t[i].name,
                                   file);
        }
        snprintf(path, sizeof path, "%s/%s", dir, file);
        CHECK(fx_write_safetensors(path, part, (size_t)m, misalign) == 0, "cannot write %s", path);
    }
    snprintf(index + at, cap - at, "}}");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    CHECK(fx_write_text(path, index) == 0, "cannot write %s", path);
    free(index);
}

/* Random weights for the family, rounded through dt so the reference sees what the file holds. */
static void make_layer(const family *f, fx_dtype dt, int64_t T, h_rng *r, h_layer *l)
{
    moe_layer_desc d = f->desc;
    d.struct_size = sizeof d;
    d.max_tokens = T;
    h_layer_init(l, &d, r, 2.0f);
    const moe_layer_desc *x = &l->desc;
    const size_t D = (size_t)x->d_model, F = (size_t)x->d_ff, E = (size_t)x->n_experts,
                 FS = (size_t)x->d_ff_shared;
    fx_round_array(dt, l->router, E * D);
    fx_round_array(dt, l->router_bias, x->has_selection_bias ? E : 0);
    fx_round_array(dt, l->gate, E * F * D);
    fx_round_array(dt, l->up, E * F * D);
    fx_round_array(dt, l->down, E * F * D);
    fx_round_array(dt, l->shared_gate, FS * D);
    fx_round_array(dt, l->shared_up, FS * D);
    fx_round_array(dt, l->shared_down, FS * D);
    fx_round_array(dt, l->shared_expert_gate, x->shared_expert_gate ? D : 0);
}

/* ---- every family × dtype × layout against the reference ------------------------------------ */

static void check_desc(const char *what, const moe_layer_desc *got, const moe_layer_desc *want)
{
    const float want_scale = want->routed_scaling_factor ? want->routed_scaling_factor : 1.0f;
    CHECK(got->d_model == want->d_model && got->d_ff == want->d_ff && got->n_experts == want->n_experts &&
              got->top_k == want->top_k && got->max_tokens == want->max_tokens,
          "[%s] shape d=%lld f=%lld E=%lld k=%lld T=%lld", what, (long long)got->d_model,
          (long long)got->d_ff, (long long)got->n_experts, (long long)got->top_k, (long long)got->max_tokens);
    CHECK(got->score_func == want->score_func && got->renormalize == want->renormalize &&
              got->routed_scaling_factor == want_scale && got->has_selection_bias == want->has_selection_bias,
          "[%s] routing: score %d renorm %d scale %g bias %d", what, got->score_func, got->renormalize,
          (double)got->routed_scaling_factor, got->has_selection_bias);
    const bool grouped = want->n_group > 1;
    CHECK((got->n_group > 1) == grouped &&
              (!grouped || (got->n_group == want->n_group && got->topk_group == want->topk_group &&
                            got->group_score == want->group_score)),
          "[%s] groups %lld/%lld score %d", what, (long long)got->n_group, (long long)got->topk_group,
          got->group_score);
    CHECK(got->activation == want->activation && got->d_ff_shared == want->d_ff_shared &&
              got->shared_expert_gate == want->shared_expert_gate &&
              got->expert_capacity == want->expert_capacity && got->drop_policy == want->drop_policy,
          "[%s] act %d shared %lld gate %d capacity %lld drop %d", what, got->activation,
          (long long)got->d_ff_shared, got->shared_expert_gate, (long long)got->expert_capacity,
          got->drop_policy);
}

static void run_family(moe_context *ctx, const char *root, const family *f, fx_dtype dt, int n_shards,
                       moe_drop_policy drop, int decoder, h_rng *r)
{
    char what[160];
    snprintf(what, sizeof what, "%s %s %s%s%s", f->name, fx_dtype_name(dt),
             n_shards > 1 ? "sharded" : "single", drop == MOE_DROP_PASSTHROUGH ? " passthrough" : "",
             decoder ? " decoder" : "");
    char sub[64];
    static int counter;
    snprintf(sub, sizeof sub, "m%d", counter++);
    char *dir = fx_mkdir(root, sub);
    CHECK(dir != NULL, "[%s] cannot create a directory", what);
    if (!dir) return;
    const int64_t T = !strcmp(f->name, "switch_transformers") ? 12 : 7;
    const int64_t layer = decoder ? 3 : f->layer;
    h_layer l;
    make_layer(f, dt, T, r, &l);
    l.desc.drop_policy = drop;
    static fx_tensor t[MAX_TENSORS];
    const int n = layer_tensors(f, &l, layer, decoder, dt, t);
    write_config(f, dir);
    write_weights(dir, t, n, n_shards, n_shards > 1);

    moe_model *model = NULL;
    moe_layer *layer_obj = NULL;
    float *x = malloc(sizeof(float) * (size_t)(T * l.desc.d_model));
    h_guarded y = h_guarded_alloc((size_t)(T * l.desc.d_model)),
              y_ref = h_guarded_alloc((size_t)(T * l.desc.d_model));
    const size_t TK = (size_t)(T * l.desc.top_k);
    int32_t *ids = calloc(TK, sizeof *ids), *ref_ids = calloc(TK, sizeof *ref_ids);
    float *w = calloc(TK, sizeof *w), *ref_w = calloc(TK, sizeof *ref_w);
    int32_t counts[64] = {0}, ref_counts[64] = {0}, dropped = -1, ref_dropped = -2;
    moe_status st = moe_model_open(dir, &model);
    CHECK(st == MOE_OK, "[%s] moe_model_open: %s: %s", what, moe_status_string(st), moe_last_error());
    if (st != MOE_OK) goto done;

    moe_model_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_model_get_info(model, &info), MOE_OK);
    CHECK(!strcmp(info.model_type, f->name) && info.hidden_size == l.desc.d_model &&
              info.n_experts == l.desc.n_experts && info.top_k == l.desc.top_k && info.n_files == n_shards &&
              info.n_tensors == n,
          "[%s] info: %s d=%lld E=%lld k=%lld files=%d tensors=%lld", what, info.model_type,
          (long long)info.hidden_size, (long long)info.n_experts, (long long)info.top_k, info.n_files,
          (long long)info.n_tensors);
    CHECK(moe_model_layer_is_moe(model, layer, decoder) == 1, "[%s] layer %lld is not reported as MoE", what,
          (long long)layer);
    if (f->dense_layer >= 0 && !decoder)
        CHECK(moe_model_layer_is_moe(model, f->dense_layer, 0) == 0, "[%s] layer %lld is reported as MoE",
              what, (long long)f->dense_layer);

    const moe_model_layer_options opts = {
        .struct_size = sizeof opts, .max_tokens = T, .drop_policy = drop, .decoder = decoder};
    moe_layer_desc d = {.struct_size = sizeof d};
    st = moe_model_layer_desc(model, layer, &opts, &d);
    CHECK(st == MOE_OK, "[%s] moe_model_layer_desc: %s: %s", what, moe_status_string(st), moe_last_error());
    if (st == MOE_OK) check_desc(what, &d, &l.desc);
    /* The experts stay in the checkpoint's own format unless the options ask for another. */
    const moe_dtype own = dt == FX_BF16 ? MOE_DTYPE_BF16 : dt == FX_F16 ? MOE_DTYPE_F16 : MOE_DTYPE_F32;
    CHECK(st != MOE_OK || (d.weight_dtype == own && (d.d_ff_shared == 0 || d.shared_weight_dtype == own)),
          "[%s] stored as %s / %s by default, not the checkpoint's %s", what, moe_dtype_name(d.weight_dtype),
          moe_dtype_name(d.shared_weight_dtype), moe_dtype_name(own));
    moe_model_layer_options as_f32 = opts;
    as_f32.weight_dtype = MOE_DTYPE_F32;
    as_f32.shared_weight_dtype = MOE_DTYPE_F16;
    moe_layer_desc d32 = {.struct_size = sizeof d32};
    CHECK_STATUS(moe_model_layer_desc(model, layer, &as_f32, &d32), MOE_OK);
    CHECK(d32.weight_dtype == MOE_DTYPE_F32 && d32.shared_weight_dtype == MOE_DTYPE_F16,
          "[%s] options.weight_dtype not applied: %s / %s", what, moe_dtype_name(d32.weight_dtype),
          moe_dtype_name(d32.shared_weight_dtype));
    st = moe_model_create_layer(ctx, model, layer, &opts, &layer_obj);
    CHECK(st == MOE_OK, "[%s] moe_model_create_layer: %s: %s", what, moe_status_string(st),
          moe_context_error(ctx));
    if (st != MOE_OK) goto done;
    /* The layer owns its weights: the model may go before it is used. */
    moe_model_close(model);
    model = NULL;

    h_fill_input(&l, T, x, r);
    moe_forward_stats rs = {.struct_size = sizeof rs,
                            .topk_ids = ref_ids,
                            .topk_weights = ref_w,
                            .expert_counts = ref_counts,
                            .dropped_count = &ref_dropped};
    moe_forward_stats gs = {.struct_size = sizeof gs,
                            .topk_ids = ids,
                            .topk_weights = w,
                            .expert_counts = counts,
                            .dropped_count = &dropped};
    CHECK_STATUS(moe_reference_forward(&l.desc, &l.w, T, x, y_ref.data, &rs), MOE_OK);
    st = moe_layer_forward(layer_obj, T, x, y.data, &gs);
    CHECK(st == MOE_OK, "[%s] forward: %s: %s", what, moe_status_string(st), moe_context_error(ctx));
    if (st != MOE_OK) goto done;
    const double err = h_rel_l2(y.data, y_ref.data, (size_t)(T * l.desc.d_model));
    printf("  %-48s relative L2 error vs reference %.3g\n", what, err);
    CHECK(err <= Y_TOL, "[%s] relative L2 error %.3g > %g", what, err, Y_TOL);
    CHECK(h_compare_topk(ids, w, ref_ids, ref_w, T, l.desc.top_k, W_TOL) == 0, "[%s] top-k differs", what);
    CHECK(!memcmp(counts, ref_counts, sizeof counts) && dropped == ref_dropped,
          "[%s] counts / dropped (%d vs %d)", what, dropped, ref_dropped);
    CHECK(h_guards_ok(&y), "[%s] write outside the output", what);
done:
    moe_layer_destroy(layer_obj);
    moe_model_close(model);
    h_layer_free(&l);
    h_guarded_free(&y);
    h_guarded_free(&y_ref);
    free(x);
    free(ids);
    free(ref_ids);
    free(w);
    free(ref_w);
    free(dir);
}

/* ---- errors ----------------------------------------------------------------------------------- */

static bool has(const char *s, const char *part)
{
    return part == NULL || strstr(s, part) != NULL;
}

/* Opens dir (and, if it opens, asks for layer) expecting `want`; the message must name both
 * parts. Checks that the out-params are untouched on failure. */
static void expect_error(moe_context *ctx, const char *what, const char *dir, int64_t layer, moe_status want,
                         const char *part1, const char *part2)
{
    moe_model *sentinel = (moe_model *)&sentinel, *model = sentinel;
    moe_status st = moe_model_open(dir, &model);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moe_last_error());
    if (st == MOE_OK) {
        moe_layer_desc d, before;
        memset(&d, 0x5a, sizeof d);
        d.struct_size = sizeof d;
        before = d;
        st = moe_model_layer_desc(model, layer, NULL, &d);
        snprintf(msg, sizeof msg, "%s", moe_last_error());
        CHECK(st != MOE_OK ? !memcmp(&d, &before, sizeof d) : 1,
              "[%s] layer_desc wrote its output on failure", what);
        moe_layer *ls = (moe_layer *)&sentinel, *l = ls;
        const moe_status st2 = moe_model_create_layer(ctx, model, layer, NULL, &l);
        CHECK(st2 == st && l == ls, "[%s] create_layer: %s (expected %s), out %s", what,
              moe_status_string(st2), moe_status_string(st), l == ls ? "untouched" : "written");
        CHECK(has(moe_context_error(ctx), part1) && has(moe_context_error(ctx), part2),
              "[%s] context error '%s' lacks '%s' / '%s'", what, moe_context_error(ctx), part1,
              part2 ? part2 : "");
        moe_model_close(model);
    } else {
        CHECK(model == sentinel, "[%s] moe_model_open wrote its out-param on failure", what);
    }
    CHECK(st == want, "[%s] got %s, expected %s (%s)", what, moe_status_string(st), moe_status_string(want),
          msg);
    CHECK(has(msg, part1) && has(msg, part2), "[%s] message '%s' lacks '%s' / '%s'", what, msg, part1,
          part2 ? part2 : "");
    printf("  %-34s %-28s %s\n", what, moe_status_string(st), msg);
}

/* A mixtral model directory, F32, whose tensor list the caller may damage first. */
static char *mixtral_dir(const char *root, const char *name, h_layer *l, fx_tensor *t, int *n, h_rng *r)
{
    char *dir = fx_mkdir(root, name);
    make_layer(&families[0], FX_F32, 4, r, l);
    *n = layer_tensors(&families[0], l, families[0].layer, 0, FX_F32, t);
    write_config(&families[0], dir);
    return dir;
}

static void raw_file(const char *dir, uint64_t hlen, const char *header, size_t data_bytes)
{
    char path[1100];
    static const uint8_t zeros[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(fx_write_raw(path, hlen, header, strlen(header), zeros, data_bytes) == 0, "cannot write %s", path);
}

static void test_errors(moe_context *ctx, const char *root, h_rng *r)
{
    static fx_tensor t[MAX_TENSORS];
    char path[1100], text[512];
    h_layer l;
    int n;

    char *none = fx_mkdir(root, "does-not-exist");
    snprintf(path, sizeof path, "%s/nothing-here", none);
    expect_error(ctx, "missing directory", path, 0, MOE_ERROR_IO, "nothing-here", NULL);
    expect_error(ctx, "directory without config.json", none, 0, MOE_ERROR_IO, "config.json", NULL);
    snprintf(path, sizeof path, "%s/config.json", none);
    fx_write_text(path, "{\"model_type\": \"mixtral\", ");
    expect_error(ctx, "config.json not JSON", none, 0, MOE_ERROR_FORMAT, "config.json", "JSON");
    fx_write_text(path, "{\"model_type\": \"llama\", \"hidden_size\": 8}");
    expect_error(ctx, "unsupported model_type", none, 0, MOE_ERROR_UNSUPPORTED, "config.json", "llama");
    fx_write_text(path, "{\"model_type\": \"mixtral\", \"hidden_size\": 8}");
    expect_error(ctx, "config key missing", none, 0, MOE_ERROR_FORMAT, "config.json", "num_hidden_layers");
    fx_write_text(path, "{\"model_type\": \"mixtral\", \"hidden_size\": 8, \"hidden_size\": 16}");
    expect_error(ctx, "config key repeated", none, 0, MOE_ERROR_FORMAT, "config.json",
                 "key \"hidden_size\" appears twice");
    fx_write_text(path, "{\"model_type\": \"mixtral\\u0000x\", \"hidden_size\": 8}");
    expect_error(ctx, "config string with a NUL", none, 0, MOE_ERROR_FORMAT, "config.json",
                 "string \"mixtral\\u0000... at byte 23 holds a NUL character");
    free(none);

    char *dir = mixtral_dir(root, "noweights", &l, t, &n, r);
    expect_error(ctx, "no safetensors", dir, 1, MOE_ERROR_IO, "model.safetensors", NULL);
    write_weights(dir, t, n, 1, false);
    expect_error(ctx, "layer out of range", dir, 2, MOE_ERROR_INVALID_ARGUMENT, "layer 2", "2 layers");
    expect_error(ctx, "layer without the tensors", dir, 0, MOE_ERROR_FORMAT,
                 "model.layers.0.block_sparse_moe.gate", "missing");
    h_layer_free(&l);
    free(dir);

    dir = mixtral_dir(root, "missing", &l, t, &n, r);
    t[5] = t[--n]; /* drop experts.1.w3 */
    write_weights(dir, t, n, 1, false);
    expect_error(ctx, "missing tensor", dir, 1, MOE_ERROR_FORMAT,
                 "model.layers.1.block_sparse_moe.experts.1.w3.weight", "missing");
    h_layer_free(&l);
    free(dir);

    dir = mixtral_dir(root, "shape", &l, t, &n, r);
    t[4].shape[0] = t[4].shape[1], t[4].shape[1] = l.desc.d_ff; /* w1 of expert 1 stored transposed */
    write_weights(dir, t, n, 1, false);
    expect_error(ctx, "tensor of the wrong shape", dir, 1, MOE_ERROR_FORMAT,
                 "model.layers.1.block_sparse_moe.experts.1.w1.weight", "shape [24, 40]");
    h_layer_free(&l);
    free(dir);

    dir = mixtral_dir(root, "dtype", &l, t, &n, r);
    t[0].dtype = FX_I32;
    write_weights(dir, t, n, 1, false);
    expect_error(ctx, "tensor of the wrong dtype", dir, 1, MOE_ERROR_FORMAT, "block_sparse_moe.gate.weight",
                 "I32");
    h_layer_free(&l);
    free(dir);

    /* A DeepSeek-V3 model asked for its dense layer. */
    dir = fx_mkdir(root, "dense");
    make_layer(&families[5], FX_F32, 4, r, &l);
    n = layer_tensors(&families[5], &l, 1, 0, FX_F32, t);
    write_config(&families[5], dir);
    write_weights(dir, t, n, 1, false);
    expect_error(ctx, "dense layer", dir, 0, MOE_ERROR_INVALID_ARGUMENT, "layer 0", "no MoE block");
    h_layer_free(&l);
    free(dir);

    /* Broken safetensors containers. */
    const struct {
        const char *what, *header, *part;
        int64_t hlen_delta;
        size_t data;
    } bad[] = {
        {"header length past the end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "header length", 1000, 8},
        {"offsets out of range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
         "out of range", 0, 8},
        {"offsets overlapping",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":"
         "[2],"
         "\"data_offsets\":[4,12]}}",
         "overlap", 0, 12},
        {"offsets not matching the shape", "{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,8]}}",
         "need 6", 0, 8},
        {"header not JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}",
         "not valid JSON", 0, 8},
        {"header not UTF-8", "{\"a\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "UTF-8", 0, 8},
        {"header not an object", "[1, 2, 3]", "not a JSON object", 0, 0},
        {"duplicate tensor",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":"
         "[1],"
         "\"data_offsets\":[4,8]}}",
         "key \"a\" appears twice", 0, 8},
        {"key repeated in a tensor entry",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"dtype\":\"F16\",\"data_offsets\":[0,8]}}",
         "key \"dtype\" appears twice", 0, 8},
        {"tensor name with a NUL", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "string \"a\\u0000... at byte 3 holds a NUL character", 0, 8},
        {"dtype with a NUL", "{\"a\":{\"dtype\":\"F32\\u0000\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "string \"F32\\u0000... at byte 18 holds a NUL character", 0, 8},
        {"raw control byte in a name",
         "{\"a\x01"
         "b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "raw control byte 0x01 at byte 3", 0, 8},
        {"__metadata__ value not a string",
         "{\"__metadata__\":{\"format\":\"pt\",\"step\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[0,8]}}",
         "\"__metadata__\" value of 'step' is not a string", 0, 8},
        {"__metadata__ not an object",
         "{\"__metadata__\":[\"pt\"],\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         "\"__metadata__\" is not an object", 0, 8},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "corrupt%zu", i);
        dir = mixtral_dir(root, text, &l, t, &n, r);
        raw_file(dir, (uint64_t)((int64_t)strlen(bad[i].header) + bad[i].hlen_delta), bad[i].header,
                 bad[i].data);
        expect_error(ctx, bad[i].what, dir, 1, MOE_ERROR_FORMAT, "model.safetensors", bad[i].part);
        h_layer_free(&l);
        free(dir);
    }
    /* A real file cut short: the last tensor's offsets run past the end. */
    dir = mixtral_dir(root, "truncated", &l, t, &n, r);
    write_weights(dir, t, n, 1, false);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    static uint8_t bytes[1 << 20];
    const size_t size = f ? fread(bytes, 1, sizeof bytes, f) : 0;
    if (f) fclose(f);
    f = fopen(path, "wb");
    if (f) {
        fwrite(bytes, 1, size - 100, f);
        fclose(f);
    }
    expect_error(ctx, "truncated file", dir, 1, MOE_ERROR_FORMAT, "model.safetensors", "truncated");
    h_layer_free(&l);
    free(dir);
    dir = mixtral_dir(root, "tiny", &l, t, &n, r);
    raw_file(dir, 0, "", 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fx_write_text(path, "abc");
    expect_error(ctx, "file shorter than 8 bytes", dir, 1, MOE_ERROR_FORMAT, "model.safetensors", "8-byte");
    h_layer_free(&l);
    free(dir);

    /* Sharded: a shard the index names is missing; the index maps a tensor to the wrong shard. */
    dir = mixtral_dir(root, "shards", &l, t, &n, r);
    write_weights(dir, t, n, 3, false);
    snprintf(path, sizeof path, "%s/model-00002-of-00003.safetensors", dir);
    remove(path);
    expect_error(ctx, "missing shard", dir, 1, MOE_ERROR_IO, "model-00002-of-00003.safetensors", NULL);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text,
             "{\"weight_map\": {\"%s\": \"model-00001-of-00003.safetensors\", \"%s\": "
             "\"model-00003-of-00003.safetensors\"}}",
             t[0].name, t[1].name);
    fx_write_text(path, text);
    expect_error(ctx, "index maps to the wrong shard", dir, 1, MOE_ERROR_FORMAT, "model-00003-of-00003",
                 t[1].name);
    fx_write_text(path, "{\"weight_map\": {\"x\": \"../etc/passwd\"}}");
    expect_error(ctx, "index names a path", dir, 1, MOE_ERROR_FORMAT, "index.json",
                 "entry 'x' does not name a file");
    snprintf(text, sizeof text,
             "{\"weight_map\": {\"%s\": \"model-00001-of-00003.safetensors\", \"%s\": "
             "\"model-00001-of-00003.safetensors\"}}",
             t[0].name, t[0].name);
    fx_write_text(path, text);
    snprintf(text, sizeof text, "key \"%s\" appears twice", t[0].name);
    expect_error(ctx, "index key repeated", dir, 1, MOE_ERROR_FORMAT, "index.json", text);
    snprintf(text, sizeof text, "{\"weight_map\": {\"%s\": \"model-00001-of-00003.safetensors\\u0000/x\"}}",
             t[0].name);
    fx_write_text(path, text);
    expect_error(ctx, "index shard name with a NUL", dir, 1, MOE_ERROR_FORMAT, "index.json", "NUL character");
    h_layer_free(&l);
    free(dir);

    /* The API's own argument checks. */
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(NULL, &m), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_model_open(root, NULL), MOE_ERROR_NULL_POINTER);
    moe_layer_desc d = {.struct_size = sizeof d};
    CHECK_STATUS(moe_model_layer_desc(NULL, 0, NULL, &d), MOE_ERROR_NULL_POINTER);
    CHECK(moe_model_layer_is_moe(NULL, 0, 0) == 0, "layer_is_moe(NULL)");
    moe_model_close(NULL);
}

/* ---- files that are not regular, or too large ------------------------------------------------ */

/* Every file the loader reads goes through the bounded reader: a FIFO must not block, a link
 * to /dev/zero must not be read, a huge file must be refused before it is read, and an entry
 * that exists but is not a regular file is reported as what it is, not as missing. */
static void test_files(moe_context *ctx, const char *root, h_rng *r)
{
    static fx_tensor t[MAX_TENSORS];
    char path[1100];
    h_layer l;
    int n;
    const struct {
        const char *what, *sub, *file;
        int kind; /* 0 directory, 1 FIFO, 2 link to /dev/zero, 3 sparse file over the limit, 4 dangling */
        moe_status want;
        const char *part;
    } cases[] = {
        {"config.json a directory", "c-dir", "config.json", 0, MOE_ERROR_IO,
         "is a directory, not a regular file"},
        {"config.json a FIFO", "c-fifo", "config.json", 1, MOE_ERROR_IO, "is a FIFO, not a regular file"},
        {"config.json a link to /dev/zero", "c-zero", "config.json", 2, MOE_ERROR_IO,
         "is a character device, not a regular file"},
        {"config.json too large", "c-big", "config.json", 3, MOE_ERROR_FORMAT,
         "8388609 bytes, more than the 8388608 bytes allowed for a config.json"},
        {"model.safetensors a directory", "w-dir", "model.safetensors", 0, MOE_ERROR_IO,
         "model.safetensors: is a directory, not a regular file"},
        {"model.safetensors a FIFO", "w-fifo", "model.safetensors", 1, MOE_ERROR_IO,
         "model.safetensors: is a FIFO, not a regular file"},
        {"model.safetensors a link to /dev/zero", "w-zero", "model.safetensors", 2, MOE_ERROR_IO,
         "model.safetensors: is a character device"},
        {"model.safetensors a dangling link", "w-dangling", "model.safetensors", 4, MOE_ERROR_IO,
         "model.safetensors: cannot open: No such file"},
        {"index.json a FIFO", "i-fifo", "model.safetensors.index.json", 1, MOE_ERROR_IO,
         "index.json: is a FIFO, not a regular file"},
        {"index.json too large", "i-big", "model.safetensors.index.json", 3, MOE_ERROR_FORMAT,
         "67108865 bytes, more than the 67108864 bytes allowed for a model.safetensors.index.json"},
        {"shard a FIFO", "s-fifo", "model-00002-of-00003.safetensors", 1, MOE_ERROR_IO,
         "model-00002-of-00003.safetensors: is a FIFO, not a regular file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = mixtral_dir(root, cases[i].sub, &l, t, &n, r);
        if (!strcmp(cases[i].file, "model-00002-of-00003.safetensors")) write_weights(dir, t, n, 3, false);
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].file);
        remove(path);
        int rc = -1;
        switch (cases[i].kind) {
        case 0: {
            char *sub = fx_mkdir(dir, cases[i].file);
            rc = sub ? 0 : -1;
            free(sub);
            break;
        }
        case 1:
            rc = fx_mkfifo(path);
            break;
        case 2:
            rc = fx_symlink("/dev/zero", path);
            break;
        case 3:
            rc = fx_write_sparse(path,
                                 !strcmp(cases[i].file, "config.json") ? (8u << 20) + 1 : (64u << 20) + 1);
            break;
        case 4:
            rc = fx_symlink("nowhere.safetensors", path);
            break;
        }
        if (rc == FX_UNSUPPORTED) {
            printf("  [%s] not on this platform\n", cases[i].what);
            h_layer_free(&l);
            free(dir);
            continue;
        }
        CHECK(rc == 0, "[%s] cannot make %s", cases[i].what, path);
        expect_error(ctx, cases[i].what, dir, 1, cases[i].want, cases[i].part, NULL);
        h_layer_free(&l);
        free(dir);
    }
}

/* ---- .npy inputs -------------------------------------------------------------------------------- */

static void write_npy(const char *path, const char *header, size_t data_bytes)
{
    char buf[256];
    const size_t hl = strlen(header);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hl & 0xff), buf[9] = (char)(hl >> 8);
    static const float zeros[64];
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(buf, 1, 10, f);
    fwrite(header, 1, hl, f);
    fwrite(zeros, 1, data_bytes, f);
    fclose(f);
}

static void test_npy(const char *root)
{
    char *dir = fx_mkdir(root, "npy");
    char path[1100];
    snprintf(path, sizeof path, "%s/x.npy", dir);
    fx_write_text(path, ""); /* registered for cleanup */
    const float v[6] = {1, -2, 3.5f, 4, 5, -6e-3f};
    char err[512];
    CHECK(npy_write_f32_matrix(path, v, 2, 3, err, sizeof err) == 0, "npy write: %s", err);
    float *got = NULL;
    int64_t rows = 0, cols = 0;
    CHECK(npy_read_f32_matrix(path, 3, &got, &rows, &cols, err, sizeof err) == 0 && rows == 2 && cols == 3 &&
              !memcmp(got, v, sizeof v),
          "npy round trip: %s", err);
    free(got);
    const struct {
        const char *what, *header, *part;
        size_t data;
    } bad[] = {
        {"dtype float64", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", "'<f8'", 48},
        {"big-endian", "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", "'>f4'", 24},
        {"rank 1", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", "rank 1", 24},
        {"rank 3", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", "rank 3", 24},
        {"Fortran order", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", "Fortran", 24},
        {"width", "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", "width 2", 24},
        {"truncated data", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "truncated", 20},
        {"not a dict", "['descr', '<f4']", "dict", 24},
        {"missing key", "{'descr': '<f4', 'shape': (2, 3), }", "fortran_order", 24},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_npy(path, bad[i].header, bad[i].data);
        got = NULL;
        const int rc = npy_read_f32_matrix(path, 3, &got, &rows, &cols, err, sizeof err);
        CHECK(rc != 0 && got == NULL && has(err, "x.npy") && has(err, bad[i].part),
              "[npy %s] rc %d, message '%s'", bad[i].what, rc, err);
        printf("  npy %-30s %s\n", bad[i].what, err);
    }
    /* More data than the shape says is not a matrix of that shape either. */
    write_npy(path, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28);
    got = NULL;
    int rc = npy_read_f32_matrix(path, 3, &got, &rows, &cols, err, sizeof err);
    CHECK(rc != 0 && got == NULL && has(err, "x.npy: 28 bytes of data; shape (2, 3) of float32 needs 24"),
          "[npy trailing data] rc %d, message '%s'", rc, err);
    /* A version 2.0 header over the 64 KiB accepted, refused before it is read. */
    FILE *f = fopen(path, "wb");
    if (f) {
        const uint8_t pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0x70, 0x11, 0x01, 0}; /* 70000 */
        fwrite(pre, 1, sizeof pre, f);
        fclose(f);
    }
    rc = npy_read_f32_matrix(path, 3, &got, &rows, &cols, err, sizeof err);
    CHECK(rc != 0 && got == NULL &&
              has(err, "x.npy: the .npy header is 70000 bytes, more than the 65535 accepted"),
          "[npy huge header] rc %d, message '%s'", rc, err);
    /* Not regular files: each refused at once, without blocking or reading. */
    const struct {
        const char *what, *name, *part;
        int kind; /* 0 directory, 1 FIFO, 2 link to /dev/zero */
    } special[] = {
        {"a directory", "d.npy", "d.npy: is a directory, not a regular file", 0},
        {"a FIFO", "fifo.npy", "fifo.npy: is a FIFO, not a regular file", 1},
        {"a link to /dev/zero", "zero.npy", "zero.npy: is a character device, not a regular file", 2},
    };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        char sp[1100];
        snprintf(sp, sizeof sp, "%s/%s", dir, special[i].name);
        char *sub = special[i].kind == 0 ? fx_mkdir(dir, special[i].name) : NULL;
        const int made = special[i].kind == 0   ? (sub ? 0 : -1)
                         : special[i].kind == 1 ? fx_mkfifo(sp)
                                                : fx_symlink("/dev/zero", sp);
        free(sub);
        if (made == FX_UNSUPPORTED) {
            printf("  npy %-30s not on this platform\n", special[i].what);
            continue;
        }
        CHECK(made == 0, "[npy %s] cannot make %s", special[i].what, sp);
        got = NULL;
        rc = npy_read_f32_matrix(sp, 3, &got, &rows, &cols, err, sizeof err);
        CHECK(rc != 0 && got == NULL && has(err, special[i].part), "[npy %s] rc %d, message '%s'",
              special[i].what, rc, err);
        printf("  npy %-30s %s\n", special[i].what, err);
    }
    free(dir);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_model");
    char *root = fx_mkdir(NULL, "model");
    CHECK(root != NULL, "cannot create a temporary directory");
    if (!root) return h_finish("model");

    const fx_dtype dts[] = {FX_F32, FX_F16, FX_BF16};
    for (int fi = 0; fi < N_FAMILIES; fi++)
        for (int di = 0; di < 3; di++)
            for (int shards = 1; shards <= 3; shards += 2)
                run_family(ctx, root, &families[fi], dts[di], shards, MOE_DROP_ZERO, 0, &r);
    const family *sw = &families[N_FAMILIES - 1];
    run_family(ctx, root, sw, FX_F32, 1, MOE_DROP_PASSTHROUGH, 0, &r);
    run_family(ctx, root, sw, FX_BF16, 1, MOE_DROP_ZERO, 1, &r);

    test_errors(ctx, root, &r);
    test_files(ctx, root, &r);
    test_npy(root);
    fx_cleanup();
    free(root);
    moe_context_destroy(ctx);
    return h_finish("model");
}
