/*
 * test_forward.c — every case defined once, run on the backend named in argv[1], and held to
 * the scalar reference: output relative L2 error ≤ 1e-5, top-k ids as sets with their
 * weights, per-expert counts, dropped rows, both losses, bit-identical repeat runs, the
 * device-buffer forward equal to the host one, and intact guard zones around every output.
 *
 * Fixed cases cover each variant of design.md and the edge shapes (odd sizes, T = 1, k = E,
 * E = 256, k = 8, every token to one expert, capacity with both drop policies); random cases
 * draw fresh shapes and variants each run (the seed is printed for replay).
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define Y_TOL    1e-5
#define W_TOL    1e-5f
#define LOSS_TOL 1e-5
/* Integer activations (MOE_TEST_ACTIVATIONS=q8_0): against the reference that rounds the inputs
 * as the kernels do, and against the float-activation reference (moe.h's bound for the opt-in).
 * The first is not 1e-5: the intermediate h differs between the two in its last float bits, and
 * now and then that moves a value across a rounding boundary of its int16 quant. The float path
 * is ~5e-3 from that reference, so the bound tells the integer path from it. */
#define Y_TOL_INT8  3e-5
#define Y_TOL_FLOAT 1e-2
/* bfloat16 pairs (MOE_TEST_ACTIVATIONS=bf16): against the reference that rounds the inputs to hi + lo,
 * the suite's 1e-5; against the float-activation reference, moe.h's bound for the opt-in. */
#define Y_TOL_BF16 2e-5

typedef struct fcase {
    const char *name;
    moe_layer_desc d;
    int64_t T;
    int64_t hot;   /* >= 0: every token's first choice (h_make_hot) */
    bool inf_bias; /* one expert's selection bias is +inf, so its group scores +inf */
} fcase;

#define DESC(...)                                                                                            \
    {                                                                                                        \
        .struct_size = sizeof(moe_layer_desc), __VA_ARGS__                                                   \
    }

static const fcase fixed_cases[] = {
    {"mixtral",
     DESC(.d_model = 64, .d_ff = 96, .n_experts = 8, .top_k = 2, .max_tokens = 37, .renormalize = 1), 37, -1,
     false},
    {"odd_sizes",
     DESC(.d_model = 67, .d_ff = 45, .n_experts = 8, .top_k = 2, .max_tokens = 31, .renormalize = 1), 31, -1,
     false},
    {"one_token",
     DESC(.d_model = 67, .d_ff = 45, .n_experts = 8, .top_k = 2, .max_tokens = 1, .renormalize = 1), 1, -1,
     false},
    {"k_equals_e", DESC(.d_model = 40, .d_ff = 33, .n_experts = 6, .top_k = 6, .max_tokens = 19), 19, -1,
     false},
    {"e256_k8",
     DESC(.d_model = 32, .d_ff = 16, .n_experts = 256, .top_k = 8, .max_tokens = 20, .renormalize = 1), 20,
     -1, false},
    {"olmoe", DESC(.d_model = 40, .d_ff = 24, .n_experts = 64, .top_k = 8, .max_tokens = 9), 9, -1, false},
    {"qwen2_shared_gate",
     DESC(.d_model = 32, .d_ff = 40, .n_experts = 8, .top_k = 2, .max_tokens = 26, .d_ff_shared = 72,
          .shared_expert_gate = 1),
     26, -1, false},
    {"deepseek_v3",
     DESC(.d_model = 36, .d_ff = 20, .n_experts = 64, .top_k = 6, .max_tokens = 23,
          .score_func = MOE_SCORE_SIGMOID, .n_group = 8, .topk_group = 4, .has_selection_bias = 1,
          .renormalize = 1, .routed_scaling_factor = 2.5f, .d_ff_shared = 40),
     23, -1, false},
    /* A group whose score is +inf (a checkpoint's bias may hold one) is one of the topk_group kept,
     * not a free extra: every backend once marked the groups it kept by turning their score into
     * +inf, and so kept this one and two more. */
    {"deepseek_v3_inf_bias",
     DESC(.d_model = 32, .d_ff = 24, .n_experts = 16, .top_k = 4, .max_tokens = 16,
          .score_func = MOE_SCORE_SIGMOID, .n_group = 4, .topk_group = 2, .has_selection_bias = 1,
          .renormalize = 1),
     16, -1, true},
    {"deepseek_v2_group_max",
     DESC(.d_model = 48, .d_ff = 28, .n_experts = 64, .top_k = 6, .max_tokens = 17, .n_group = 8,
          .topk_group = 3, .group_score = MOE_GROUP_SCORE_MAX, .routed_scaling_factor = 16.0f,
          .d_ff_shared = 56),
     17, -1, false},
    {"switch_capacity_zero",
     DESC(.d_model = 32, .d_ff = 48, .n_experts = 4, .top_k = 1, .max_tokens = 40,
          .activation = MOE_ACTIVATION_RELU, .expert_capacity = 7),
     40, -1, false},
    {"switch_capacity_passthrough",
     DESC(.d_model = 32, .d_ff = 48, .n_experts = 4, .top_k = 1, .max_tokens = 40,
          .activation = MOE_ACTIVATION_RELU, .expert_capacity = 7, .drop_policy = MOE_DROP_PASSTHROUGH),
     40, -1, false},
    {"gshard_top2_capacity",
     DESC(.d_model = 24, .d_ff = 36, .n_experts = 8, .top_k = 2, .max_tokens = 50,
          .activation = MOE_ACTIVATION_GELU, .expert_capacity = 9),
     50, -1, false},
    {"geglu",
     DESC(.d_model = 45, .d_ff = 77, .n_experts = 5, .top_k = 3, .max_tokens = 29,
          .activation = MOE_ACTIVATION_GEGLU, .renormalize = 1),
     29, -1, false},
    {"gelu_shared",
     DESC(.d_model = 33, .d_ff = 17, .n_experts = 7, .top_k = 2, .max_tokens = 11,
          .activation = MOE_ACTIVATION_GELU, .d_ff_shared = 19, .shared_expert_gate = 1),
     11, -1, false},
    {"sigmoid_plain",
     DESC(.d_model = 50, .d_ff = 30, .n_experts = 12, .top_k = 3, .max_tokens = 21,
          .score_func = MOE_SCORE_SIGMOID),
     21, -1, false},
    {"all_to_one_expert", DESC(.d_model = 48, .d_ff = 64, .n_experts = 8, .top_k = 1, .max_tokens = 70), 70,
     5, false},
    {"all_to_one_capacity_passthrough",
     DESC(.d_model = 48, .d_ff = 64, .n_experts = 8, .top_k = 2, .max_tokens = 45, .expert_capacity = 10,
          .drop_policy = MOE_DROP_PASSTHROUGH, .renormalize = 1),
     45, 3, false},
    {"larger",
     DESC(.d_model = 256, .d_ff = 512, .n_experts = 16, .top_k = 4, .max_tokens = 129, .renormalize = 1), 129,
     -1, false},
    /* gpt-oss: the router's bias in the logits, biases on every expert projection, the clamped
     * SwiGLU — with a limit low enough that the clamps bite on these O(1) products (gpt_oss),
     * and with gpt-oss's own constants (the 0 defaults) at one token, the decode kernels. */
    {"gpt_oss",
     DESC(.d_model = 64, .d_ff = 96, .n_experts = 12, .top_k = 4, .max_tokens = 33, .renormalize = 1,
          .activation = MOE_ACTIVATION_SWIGLU_OAI, .router_has_bias = 1, .expert_has_bias = 1,
          .swiglu_limit = 0.75f, .swiglu_alpha = 1.5f),
     33, -1, false},
    {"gpt_oss_one_token",
     DESC(.d_model = 96, .d_ff = 64, .n_experts = 32, .top_k = 4, .max_tokens = 2, .renormalize = 1,
          .activation = MOE_ACTIVATION_SWIGLU_OAI, .router_has_bias = 1, .expert_has_bias = 1),
     1, -1, false},
    /* down_weight_dtype / shared_down_weight_dtype: gate/up in the run's format, down in another
     * (as GGUF files mix them), routed and shared. A down_weight_dtype set here only marks the
     * case: for_format picks the format (down_partner). */
    {"down_format",
     DESC(.d_model = 64, .d_ff = 40, .n_experts = 16, .top_k = 4, .max_tokens = 13, .renormalize = 1,
          .d_ff_shared = 48, .down_weight_dtype = MOE_DTYPE_F16),
     13, -1, false},
};

/* A random shape and variant (h_random_desc). */
static fcase random_case(h_rng *r, int i)
{
    static char names[32][32];
    snprintf(names[i % 32], sizeof names[0], "random_%d", i);
    fcase c = {names[i % 32], {0}, 0, -1, false};
    c.d = h_random_desc(r, &c.T);
    return c;
}

typedef struct outputs {
    h_guarded y, w;
    int32_t *ids, *counts;
    int32_t dropped;
    float aux, z;
} outputs;

static moe_forward_stats stats_into(outputs *o)
{
    return (moe_forward_stats){.struct_size = sizeof(moe_forward_stats),
                               .topk_ids = o->ids,
                               .topk_weights = o->w.data,
                               .expert_counts = o->counts,
                               .dropped_count = &o->dropped,
                               .aux_loss = &o->aux,
                               .z_loss = &o->z};
}

static outputs outputs_alloc(const moe_layer_desc *d, int64_t T)
{
    outputs o = {h_guarded_alloc((size_t)(T * d->d_model)),
                 h_guarded_alloc((size_t)(T * d->top_k)),
                 malloc(sizeof(int32_t) * (size_t)(T * d->top_k)),
                 malloc(sizeof(int32_t) * (size_t)d->n_experts),
                 -1,
                 NAN,
                 NAN};
    return o;
}

static void outputs_free(outputs *o)
{
    h_guarded_free(&o->y);
    h_guarded_free(&o->w);
    free(o->ids);
    free(o->counts);
}

static bool close_rel(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(1.0, fabs(b));
}

/* The weight format under test (MOE_TEST_DTYPE, default f32): every case stores its experts
 * and shared expert in it. */
static moe_dtype g_dtype = MOE_DTYPE_F32;
/* MOE_TEST_ACTIVATIONS=q8_0: every case asks for int8 activations, and the backend must run
 * them (a kernel level with the int8 path, a Q8_0 / Q4_0 / K-quant format: takes). */
static moe_dtype g_act = MOE_DTYPE_F32;

static int64_t round_up(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

/* The format a down_format case keeps its down projections in: another of each kind, so a
 * float run meets a 16-bit down, a 16-bit run a block down, each block format the other, and a
 * K-quant another K-quant (Q4_K / Q5_K with Q6_K, Q3_K with Q4_K, Q2_K with Q3_K, as llama.cpp's
 * files mix them). */
static moe_dtype down_partner(moe_dtype t)
{
    switch (t) {
    case MOE_DTYPE_F32:
        return MOE_DTYPE_F16;
    case MOE_DTYPE_F16:
        return MOE_DTYPE_Q8_0;
    case MOE_DTYPE_BF16:
        return MOE_DTYPE_Q4_0;
    case MOE_DTYPE_Q8_0:
        return MOE_DTYPE_Q4_0;
    case MOE_DTYPE_Q4_K: /* llama.cpp's Q4_K_M and Q5_K_M mixes */
    case MOE_DTYPE_Q5_K:
        return MOE_DTYPE_Q6_K;
    case MOE_DTYPE_Q6_K:
    case MOE_DTYPE_Q3_K: /* llama.cpp's Q3_K_M: down Q4_K (Q5_K in its first layers) */
        return MOE_DTYPE_Q4_K;
    case MOE_DTYPE_Q2_K: /* llama.cpp's Q2_K: down Q3_K */
        return MOE_DTYPE_Q3_K;
    default:
        return MOE_DTYPE_Q8_0;
    }
}

/* The case as the format can hold it: a block format needs whole blocks along every weight
 * row, so d_model, d_ff and d_ff_shared are rounded up to whole blocks (32 values, 256 for the K-quants) (T,
 * E and k keep their odd values). */
static fcase for_format(const fcase *c)
{
    fcase f = *c;
    const bool down_other = c->d.down_weight_dtype != MOE_DTYPE_DEFAULT;
    const moe_dtype down = down_other ? down_partner(g_dtype) : g_dtype;
    const int64_t b = moe_dtype_block_size(g_dtype), bd = moe_dtype_block_size(down);
    f.d.d_model = round_up(f.d.d_model, b);
    f.d.d_ff = round_up(f.d.d_ff, bd);
    f.d.d_ff_shared = round_up(f.d.d_ff_shared, bd);
    f.d.weight_dtype = g_dtype;
    f.d.shared_weight_dtype = g_dtype;
    f.d.down_weight_dtype = down;
    f.d.shared_down_weight_dtype = down;
    f.d.activation_dtype = g_act;
    return f;
}

/* The same weights handed over already in the storage format (what a GGUF loader or an
 * application with quantised weights does): the library must store the same bytes, so the
 * layer's output is bit-identical to the one quantised at upload. */
static void check_pre_converted(moe_context *ctx, const fcase *c, const h_layer *hl, const float *x,
                                const float *want)
{
    const moe_layer_desc *d = &hl->desc;
    const int64_t T = c->T, TD = T * d->d_model, D = d->d_model, F = d->d_ff, FS = d->d_ff_shared;
    const moe_dtype dt = g_dtype;
    void *conv[6] = {0};
    const float *srcs[6] = {hl->gate, hl->up, hl->down, hl->shared_gate, hl->shared_up, hl->shared_down};
    const int64_t rows[6] = {d->n_experts * F, d->n_experts * F, d->n_experts * D, FS, FS, D};
    const int64_t cols[6] = {D, D, F, D, D, FS};
    for (int i = 0; i < 6; i++) {
        if (!srcs[i] || rows[i] == 0) continue;
        const size_t rb = moe_dtype_row_bytes(dt, cols[i]);
        conv[i] = malloc(rb * (size_t)rows[i]);
        for (int64_t row = 0; row < rows[i]; row++)
            CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, srcs[i] + row * cols[i], dt,
                                         (unsigned char *)conv[i] + (size_t)row * rb, cols[i]),
                         MOE_OK);
    }
    moe_layer_weights w = hl->w;
    w.gate = conv[0], w.up = conv[1], w.down = conv[2];
    w.shared_gate = conv[3], w.shared_up = conv[4], w.shared_down = conv[5];
    w.dtype = dt, w.shared_dtype = dt;
    moe_layer_desc as_given = *d;
    as_given.weight_dtype = MOE_DTYPE_DEFAULT; /* keep the format handed over */
    as_given.shared_weight_dtype = MOE_DTYPE_DEFAULT;
    moe_layer *layer = NULL;
    float *y = malloc(sizeof(float) * (size_t)TD);
    moe_status st = moe_layer_create(ctx, &as_given, &w, &layer);
    CHECK(st == MOE_OK, "[%s %s pre-converted] layer_create: %s: %s", c->name, moe_dtype_name(dt),
          moe_status_string(st), moe_context_error(ctx));
    if (st == MOE_OK) st = moe_layer_forward(layer, T, x, y, NULL);
    CHECK(st == MOE_OK, "[%s %s pre-converted] forward: %s", c->name, moe_dtype_name(dt),
          moe_status_string(st));
    if (st == MOE_OK)
        CHECK(!memcmp(y, want, sizeof(float) * (size_t)TD),
              "[%s %s] weights handed over in the format give another output than weights quantised at "
              "upload (rel diff %.3g)",
              c->name, moe_dtype_name(dt), h_rel_l2(y, want, (size_t)TD));
    moe_layer_destroy(layer);
    free(y);
    for (int i = 0; i < 6; i++) free(conv[i]);
}

/* The formats moe.h says run on an activation opt-in (each product in its own format): integer
 * activations (Q8_0) on Q8_0, Q4_0 and the K-quants (Q3_K since 0.15.0, Q2_K 0.16.0), bfloat16 pairs (BF16)
 * on Q4_0, MXFP4 and Q4_K (main checks this against moe_dtype_takes_activations). */
static bool takes(moe_dtype t, moe_dtype act)
{
    if (act == MOE_DTYPE_BF16) return t == MOE_DTYPE_Q4_0 || t == MOE_DTYPE_MXFP4 || t == MOE_DTYPE_Q4_K;
    return t == MOE_DTYPE_Q8_0 || t == MOE_DTYPE_Q4_0 || t == MOE_DTYPE_Q2_K || t == MOE_DTYPE_Q3_K ||
           t == MOE_DTYPE_Q4_K || t == MOE_DTYPE_Q5_K || t == MOE_DTYPE_Q6_K;
}

/* An opt-in case (g_act Q8_0 or BF16): the layer must say it runs them, and its output must stay within
 * moe.h's bound of the float-activation reference. A down projection in another format that has no
 * kernel for them (down_format: Q4_K with Q6_K) runs on float ones, gate/up still on the opt-in (the
 * reference rounds each product's input as its format says, and run_case holds the layer to it). */
static void check_opt_in(const fcase *c, const h_layer *hl, const float *x, const float *y,
                         const moe_layer *layer)
{
    const int64_t TD = c->T * hl->desc.d_model;
    const moe_dtype down =
        hl->desc.down_weight_dtype == MOE_DTYPE_DEFAULT ? g_dtype : hl->desc.down_weight_dtype;
    const char *what = g_act == MOE_DTYPE_BF16 ? "bfloat16-pair" : "int8";
    if (!takes(down, g_act))
        printf("  %-34s down in %s: float32 activations there, as asked for when no %s kernel reads it\n",
               c->name, moe_dtype_name(down), what);
    CHECK(moe_layer_activation_dtype(layer) == g_act, "[%s %s] asked for %s activations, the layer runs %s",
          c->name, moe_dtype_name(g_dtype), what, moe_dtype_name(moe_layer_activation_dtype(layer)));
    moe_layer_desc fd = hl->desc;
    fd.activation_dtype = MOE_DTYPE_F32;
    float *yf = malloc(sizeof(float) * (size_t)TD);
    CHECK_STATUS(moe_reference_forward(&fd, &hl->w, c->T, x, yf, NULL), MOE_OK);
    const double err = h_rel_l2(y, yf, (size_t)TD);
    /* moe.h's bound holds for a forward's outputs; over fewer than 1024 values (one token of
     * one_token's 96) the ratio of two norms of few terms varies more: median 0.53% and at most
     * 0.78% over 80 seeds, but 1.02% at MOE_TEST_SEED=6946758342503 (the kernels within 1.3e-7
     * of the int8 reference there: the rounding itself). */
    const double tol = g_act == MOE_DTYPE_BF16 ? Y_TOL_BF16 : TD >= 1024 ? Y_TOL_FLOAT : 2 * Y_TOL_FLOAT;
    CHECK(err <= tol, "[%s %s] %s activations: relative L2 error %.3g > %g against the float ones", c->name,
          moe_dtype_name(g_dtype), what, err, tol);
    printf("  %-34s %s activations move the output by %.3g (rel L2)\n", c->name, what, err);
    free(yf);
}

/* Whether ctx runs a layer of g_dtype on bfloat16 pairs (moe_layer_activation_dtype): a CPU level with
 * the tile where the CPU has what it needs. Its own fixed generator, so a seed replays the same cases
 * with or without the probe. */
static bool runs_bf16(moe_context *ctx)
{
    const fcase c0 = {"bf16_probe",
                      DESC(.d_model = 64, .d_ff = 64, .n_experts = 2, .top_k = 1, .max_tokens = 1), 1, -1,
                      false};
    const fcase c = for_format(&c0);
    h_rng r = {12345};
    h_layer hl;
    h_layer_init(&hl, &c.d, &r, 1.0f);
    moe_layer *layer = NULL;
    const bool runs = moe_layer_create(ctx, &hl.desc, &hl.w, &layer) == MOE_OK &&
                      moe_layer_activation_dtype(layer) == MOE_DTYPE_BF16;
    moe_layer_destroy(layer);
    h_layer_free(&hl);
    return runs;
}

/* The requests for the activation opt-ins on every backend and level (int8; bfloat16 pairs too where the
 * weights take them): a layer runs them or not (moe_layer_activation_dtype), and either way it matches
 * the reference for what it runs — float activations to the suite's 1e-5 where it does not. */
static void int8_request(moe_context *ctx, h_rng *r)
{
    const fcase c0 = {
        "int8_request",
        DESC(.d_model = 64, .d_ff = 96, .n_experts = 6, .top_k = 2, .max_tokens = 7, .d_ff_shared = 32), 7,
        -1, false};
    fcase c = for_format(&c0);
    h_layer hl;
    h_layer_init(&hl, &c.d, r, 1.0f);
    const int64_t TD = c.T * c.d.d_model;
    float *x = malloc(sizeof(float) * (size_t)TD), *y = malloc(sizeof(float) * (size_t)TD),
          *want = malloc(sizeof(float) * (size_t)TD);
    h_fill_input(&hl, c.T, x, r);
    const moe_dtype asks[2] = {MOE_DTYPE_Q8_0, MOE_DTYPE_BF16};
    for (int i = 0; i < (takes(g_dtype, MOE_DTYPE_BF16) ? 2 : 1); i++) {
        hl.desc.activation_dtype = asks[i];
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
        if (!layer) continue;
        const moe_dtype runs = moe_layer_activation_dtype(layer);
        CHECK(runs == MOE_DTYPE_F32 || (runs == asks[i] && takes(g_dtype, asks[i])),
              "[int8_request %s] asked for %s, the layer reports activations %s", moe_dtype_name(g_dtype),
              moe_dtype_name(asks[i]), moe_dtype_name(runs));
        moe_layer_desc rd = hl.desc;
        rd.activation_dtype = runs;
        CHECK_STATUS(moe_layer_forward(layer, c.T, x, y, NULL), MOE_OK);
        CHECK_STATUS(moe_reference_forward(&rd, &hl.w, c.T, x, want, NULL), MOE_OK);
        const double tol = runs == MOE_DTYPE_Q8_0 ? Y_TOL_INT8 : Y_TOL, err = h_rel_l2(y, want, (size_t)TD);
        CHECK(err <= tol, "[int8_request %s] runs %s activations: relative L2 error %.3g > %g",
              moe_dtype_name(g_dtype), moe_dtype_name(runs), err, tol);
        printf("  %-34s %s weights: asked for %s activations, runs %s (rel L2 %.2e)\n", "int8_request",
               moe_dtype_name(g_dtype), moe_dtype_name(asks[i]), moe_dtype_name(runs), err);
        moe_layer_destroy(layer);
    }
    free(x);
    free(y);
    free(want);
    h_layer_free(&hl);
}

/* Non-finite input on an activation opt-in (moe.h): a NaN or an infinity in x stays in its token —
 * through the rows' preparation (the integer groups' scales, the bfloat16 split's hi alone) and the
 * intermediate's — while the other tokens match the reference for the activations the layer runs. */
static void opt_in_nonfinite(moe_context *ctx, h_rng *r)
{
    const fcase c0 = {
        "opt_in_nonfinite",
        DESC(.d_model = 64, .d_ff = 96, .n_experts = 6, .top_k = 2, .max_tokens = 5, .d_ff_shared = 32), 5,
        -1, false};
    const fcase c = for_format(&c0);
    h_layer hl;
    h_layer_init(&hl, &c.d, r, 1.0f);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
    const int64_t T = c.T, D = c.d.d_model, bad = 2;
    float *x = malloc(sizeof(float) * (size_t)(T * D)), *y = malloc(sizeof(float) * (size_t)(T * D)),
          *want = malloc(sizeof(float) * (size_t)(T * D));
    const float poison[] = {NAN, INFINITY, -INFINITY};
    for (size_t p = 0; p < 3 && layer; p++) {
        const moe_dtype runs = moe_layer_activation_dtype(layer);
        moe_layer_desc rd = hl.desc;
        rd.activation_dtype = runs;
        h_fill_input(&hl, T, x, r);
        x[bad * D + 5] = poison[p];
        CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
        CHECK_STATUS(moe_reference_forward(&rd, &hl.w, T, x, want, NULL), MOE_OK);
        bool nonfinite = false;
        for (int64_t i = 0; i < D; i++) nonfinite |= !isfinite(y[bad * D + i]);
        CHECK(nonfinite, "[opt_in_nonfinite %s %s] poison %g: the token's output is all finite",
              moe_dtype_name(g_dtype), moe_dtype_name(runs), (double)poison[p]);
        const double tol = runs == MOE_DTYPE_Q8_0 ? Y_TOL_INT8 : Y_TOL;
        for (int64_t t = 0; t < T; t++) {
            if (t == bad) continue;
            const double err = h_rel_l2(y + t * D, want + t * D, (size_t)D);
            CHECK(err <= tol,
                  "[opt_in_nonfinite %s %s] poison %g: clean token %lld: relative L2 error %.3g > %g",
                  moe_dtype_name(g_dtype), moe_dtype_name(runs), (double)poison[p], (long long)t, err, tol);
        }
        printf("  %-34s %s activations: poison %g stays in its token\n", "opt_in_nonfinite",
               moe_dtype_name(runs), (double)poison[p]);
    }
    moe_layer_destroy(layer);
    free(x);
    free(y);
    free(want);
    h_layer_free(&hl);
}

/* Each product decides for itself (moe.h, 0.12.0): routed experts with gate/up in F16 and down in the
 * run's format, a shared expert the other way round. The layer reports the opt-in (the routed down
 * runs it), matches the reference that rounds only those products' inputs, and stays within moe.h's
 * bound of the float-activation result. */
static void opt_in_per_product(moe_context *ctx, h_rng *r)
{
    const int64_t b = moe_dtype_block_size(g_dtype), T = 9;
    const moe_layer_desc d =
        DESC(.d_model = round_up(64, b), .d_ff = round_up(96, b), .n_experts = 6, .top_k = 2, .max_tokens = T,
             .d_ff_shared = round_up(32, b), .weight_dtype = MOE_DTYPE_F16, .down_weight_dtype = g_dtype,
             .shared_weight_dtype = g_dtype, .shared_down_weight_dtype = MOE_DTYPE_F16,
             .activation_dtype = g_act);
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);
    const int64_t TD = T * d.d_model;
    float *x = malloc(sizeof(float) * (size_t)TD), *y = malloc(sizeof(float) * (size_t)TD),
          *want = malloc(sizeof(float) * (size_t)TD);
    h_fill_input(&hl, T, x, r);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
    if (layer) {
        CHECK(moe_layer_activation_dtype(layer) == g_act,
              "[opt_in_per_product %s] down in %s takes %s activations, the layer reports %s",
              moe_dtype_name(g_dtype), moe_dtype_name(g_dtype), moe_dtype_name(g_act),
              moe_dtype_name(moe_layer_activation_dtype(layer)));
        CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
        CHECK_STATUS(moe_reference_forward(&hl.desc, &hl.w, T, x, want, NULL), MOE_OK);
        const double tol = g_act == MOE_DTYPE_Q8_0 ? Y_TOL_INT8 : Y_TOL, err = h_rel_l2(y, want, (size_t)TD);
        CHECK(err <= tol, "[opt_in_per_product %s %s] relative L2 error %.3g > %g against the reference",
              moe_dtype_name(g_dtype), moe_dtype_name(g_act), err, tol);
        moe_layer_desc fd = hl.desc;
        fd.activation_dtype = MOE_DTYPE_F32;
        CHECK_STATUS(moe_reference_forward(&fd, &hl.w, T, x, want, NULL), MOE_OK);
        const double bound = g_act == MOE_DTYPE_BF16 ? Y_TOL_BF16 : 2 * Y_TOL_FLOAT,
                     moved = h_rel_l2(y, want, (size_t)TD);
        CHECK(moved <= bound, "[opt_in_per_product %s %s] %.3g > %g from the float-activation result",
              moe_dtype_name(g_dtype), moe_dtype_name(g_act), moved, bound);
        printf("  %-34s f16 gate/up with %s down, %s gate/up with f16 down: %s where the format takes it "
               "(rel L2 %.2e; %.2e from float32)\n",
               "opt_in_per_product", moe_dtype_name(g_dtype), moe_dtype_name(g_dtype), moe_dtype_name(g_act),
               err, moved);
    }
    moe_layer_destroy(layer);
    free(x);
    free(y);
    free(want);
    h_layer_free(&hl);
}

/* MOE_TEST_PLACE_WITH=<backend>: every case's layer has its experts placed alternately on the
 * run's context (the home, even experts) and a context of that backend (odd experts), as
 * moe_layer_create_placed does for a GPU and the CPU. */
static moe_context *g_other;
static moe_backend_kind g_other_kind;
/* MOE_TEST_CACHE_SLOTS=<n> with it: an expert cache of n slots on the home as well, which the
 * other context's experts are uploaded into as the forwards route to them (LRU, every miss). */
static int64_t g_cache_slots;

static moe_status make_layer(moe_context *ctx, const h_layer *hl, moe_layer **layer)
{
    if (!g_other) return moe_layer_create(ctx, &hl->desc, &hl->w, layer);
    moe_context *const contexts[2] = {ctx, g_other};
    int32_t *where = malloc(sizeof(int32_t) * (size_t)hl->desc.n_experts);
    for (int64_t e = 0; e < hl->desc.n_experts; e++) where[e] = (int32_t)(e % 2);
    const moe_expert_cache_desc cd = {.struct_size = sizeof cd, .context = 0, .slots = g_cache_slots};
    const moe_placement p = {.struct_size = sizeof p,
                             .n_contexts = 2,
                             .contexts = contexts,
                             .expert_context = where,
                             /* (a layer of one expert has none on the other context to cache) */
                             .cache = g_cache_slots > 0 && hl->desc.n_experts > 1 ? &cd : NULL};
    const moe_status st = moe_layer_create_placed(&p, &hl->desc, &hl->w, layer);
    if (st == MOE_OK) {
        int32_t *got = malloc(sizeof(int32_t) * (size_t)hl->desc.n_experts);
        CHECK_STATUS(moe_layer_get_placement(*layer, got), MOE_OK);
        CHECK(!memcmp(got, where, sizeof(int32_t) * (size_t)hl->desc.n_experts),
              "moe_layer_get_placement differs from the placement given");
        free(got);
    }
    free(where);
    return st;
}

/* A placed layer against the same layer on the home context alone: bit-identical when both
 * contexts are CPU ones (the same kernels compute every row, the combine is the same gather). */
static void check_against_one_context(moe_context *ctx, moe_backend_kind kind, const fcase *c,
                                      const h_layer *hl, const float *x, const float *want)
{
    const int64_t TD = c->T * hl->desc.d_model;
    float *y = malloc(sizeof(float) * (size_t)TD);
    moe_layer *one = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &one), MOE_OK);
    const moe_status st = one ? moe_layer_forward(one, c->T, x, y, NULL) : MOE_ERROR_INTERNAL;
    CHECK(st == MOE_OK, "[%s] one-context layer: %s", c->name, moe_status_string(st));
    const double diff = st == MOE_OK ? h_rel_l2(want, y, (size_t)TD) : 1.0;
    if (kind == MOE_BACKEND_CPU && g_other_kind == MOE_BACKEND_CPU)
        CHECK(st == MOE_OK && !memcmp(y, want, sizeof(float) * (size_t)TD),
              "[%s] placed on two CPU contexts: not bit-identical to one context (rel diff %.3g)", c->name,
              diff);
    else
        CHECK(diff <= 2 * Y_TOL, "[%s] placed: relative L2 difference %.3g from one context", c->name, diff);
    moe_layer_destroy(one);
    free(y);
}

static void run_case(moe_context *ctx, moe_backend_kind kind, const fcase *c_in, h_rng *r)
{
    const fcase fc = for_format(c_in), *c = &fc;
    const moe_layer_desc *d = &c->d;
    const int64_t T = c->T, TD = T * d->d_model;
    h_layer hl;
    h_layer_init(&hl, d, r, 1.0f);
    if (c->hot >= 0) h_make_hot(&hl, c->hot);
    if (c->inf_bias) hl.router_bias[d->n_experts / 2 + 1] = INFINITY;
    float *x = malloc(sizeof(float) * (size_t)TD);
    h_fill_input(&hl, T, x, r);

    outputs ref = outputs_alloc(d, T), got = outputs_alloc(d, T);
    moe_forward_stats rs = stats_into(&ref), gs = stats_into(&got);
    CHECK_STATUS(moe_reference_forward(&hl.desc, &hl.w, T, x, ref.y.data, &rs), MOE_OK);

    moe_layer *layer = NULL;
    moe_status st = make_layer(ctx, &hl, &layer);
    CHECK(st == MOE_OK, "[%s] layer_create: %s: %s", c->name, moe_status_string(st), moe_context_error(ctx));
    if (st != MOE_OK) goto done;
    st = moe_layer_forward(layer, T, x, got.y.data, &gs);
    CHECK(st == MOE_OK, "[%s] forward: %s: %s", c->name, moe_status_string(st), moe_context_error(ctx));
    if (st != MOE_OK) goto done;

    const double tol = g_act == MOE_DTYPE_Q8_0 ? Y_TOL_INT8 : Y_TOL;
    const double err = h_rel_l2(got.y.data, ref.y.data, (size_t)TD);
    CHECK(err <= tol, "[%s %s] T=%lld d=%lld f=%lld E=%lld k=%lld: relative L2 error %.3g > %g", c->name,
          moe_dtype_name(g_dtype), (long long)T, (long long)d->d_model, (long long)d->d_ff,
          (long long)d->n_experts, (long long)d->top_k, err, tol);
    if (g_act != MOE_DTYPE_F32) check_opt_in(c, &hl, x, got.y.data, layer);
    CHECK(h_guards_ok(&got.y) && h_guards_ok(&got.w), "[%s] write outside the output", c->name);
    CHECK(h_compare_topk(got.ids, got.w.data, ref.ids, ref.w.data, T, d->top_k, W_TOL) == 0,
          "[%s] top-k ids/weights differ from the reference", c->name);
    CHECK(!memcmp(got.counts, ref.counts, sizeof(int32_t) * (size_t)d->n_experts),
          "[%s] expert counts differ", c->name);
    CHECK(got.dropped == ref.dropped, "[%s] dropped %d, reference %d", c->name, got.dropped, ref.dropped);
    CHECK(close_rel(got.aux, ref.aux, LOSS_TOL), "[%s] aux loss %.8g, reference %.8g", c->name, got.aux,
          ref.aux);
    CHECK(close_rel(got.z, ref.z, LOSS_TOL), "[%s] z-loss %.8g, reference %.8g", c->name, got.z, ref.z);
    if (c->hot >= 0)
        for (int64_t t = 0; t < T; t++)
            CHECK(got.ids[t * d->top_k] == c->hot, "[%s] token %lld: first choice %d", c->name, (long long)t,
                  got.ids[t * d->top_k]);

    /* Determinism: the same forward again is bit-identical (no stats requested this time). */
    h_guarded y2 = h_guarded_alloc((size_t)TD);
    CHECK_STATUS(moe_layer_forward(layer, T, x, y2.data, NULL), MOE_OK);
    /* With a cache on a GPU home, an expert the first forward ran on the CPU may run in a slot now:
     * the same rows, another device's rounding. */
    const bool exact_again = !g_cache_slots || (kind == MOE_BACKEND_CPU && g_other_kind == MOE_BACKEND_CPU);
    if (exact_again)
        CHECK(!memcmp(y2.data, got.y.data, sizeof(float) * (size_t)TD), "[%s] two runs differ", c->name);
    else
        CHECK(h_rel_l2(y2.data, got.y.data, (size_t)TD) <= 2 * Y_TOL, "[%s] two runs differ by %.3g", c->name,
              h_rel_l2(y2.data, got.y.data, (size_t)TD));

    /* Device buffers: the same result without host pointers. */
    moe_buffer *xb = NULL, *yb = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, TD, &xb), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, TD + 5, &yb), MOE_OK);
    if (xb && yb) {
        CHECK_STATUS(moe_buffer_write(xb, 0, TD, x), MOE_OK);
        CHECK_STATUS(moe_layer_forward_buffers(layer, T, xb, yb, NULL), MOE_OK);
        memset(y2.data, 0, sizeof(float) * (size_t)TD);
        CHECK_STATUS(moe_buffer_read(yb, 0, TD, y2.data), MOE_OK);
        if (exact_again)
            CHECK(!memcmp(y2.data, got.y.data, sizeof(float) * (size_t)TD),
                  "[%s] buffer forward differs from host forward", c->name);
        else
            CHECK(h_rel_l2(y2.data, got.y.data, (size_t)TD) <= 2 * Y_TOL,
                  "[%s] buffer forward differs from host forward by %.3g", c->name,
                  h_rel_l2(y2.data, got.y.data, (size_t)TD));
    }
    moe_buffer_destroy(xb);
    moe_buffer_destroy(yb);

    if (g_other) check_against_one_context(ctx, kind, c, &hl, x, got.y.data);
    /* The CPU backend's result does not depend on its thread count. */
    if (kind == MOE_BACKEND_CPU && !g_other) {
        moe_context *one = h_context(kind, 1);
        moe_layer *l1 = NULL;
        CHECK_STATUS(moe_layer_create(one, &hl.desc, &hl.w, &l1), MOE_OK);
        CHECK_STATUS(moe_layer_forward(l1, T, x, y2.data, NULL), MOE_OK);
        CHECK(!memcmp(y2.data, got.y.data, sizeof(float) * (size_t)TD), "[%s] 1 thread differs from many",
              c->name);
        moe_layer_destroy(l1);
        moe_context_destroy(one);
    }
    /* (a down in another format is converted from the run's, not from float: not the same bytes) */
    if (g_dtype != MOE_DTYPE_F32 && hl.desc.down_weight_dtype == g_dtype && !g_other)
        check_pre_converted(ctx, c, &hl, x, got.y.data);
    h_guarded_free(&y2);
    printf("  %-34s T=%-4lld d=%-4lld f=%-4lld E=%-4lld k=%lld  rel err %.2e\n", c->name, (long long)T,
           (long long)d->d_model, (long long)d->d_ff, (long long)d->n_experts, (long long)d->top_k, err);
done:
    moe_layer_destroy(layer);
    outputs_free(&ref);
    outputs_free(&got);
    free(x);
    h_layer_free(&hl);
}

static bool same_bits(const void *a, const void *b, size_t bytes)
{
    return memcmp(a, b, bytes) == 0;
}

/* Capacity at or above the rows a forward can have is "unlimited", whatever its size: the
 * kernels take 32-bit integers, and a capacity of 2^32 + 1 once reached a GPU as 1 (every row
 * but one per expert dropped) and broke the OpenCL build from 2^31 on. Each such capacity
 * must give, on the same backend, bit for bit what capacity 0 gives; a capacity just below an
 * expert's row count must still drop (held to the reference). */
static void capacity_limits(moe_context *ctx, h_rng *r)
{
    const fcase base = {"capacity_limits",
                        DESC(.d_model = 24, .d_ff = 20, .n_experts = 4, .top_k = 2, .max_tokens = 21,
                             .renormalize = 1, .drop_policy = MOE_DROP_PASSTHROUGH),
                        21, 1, false};
    const int64_t T = base.T, K = base.d.top_k, TD = T * base.d.d_model;
    h_layer hl;
    h_layer_init(&hl, &base.d, r, 1.0f);
    h_make_hot(&hl, base.hot); /* expert 1 gets all T tokens: the largest count is T */
    float *x = malloc(sizeof(float) * (size_t)TD);
    h_fill_input(&hl, T, x, r);

    outputs unl = outputs_alloc(&hl.desc, T);
    moe_forward_stats us = stats_into(&unl);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
    CHECK_STATUS(moe_layer_forward(layer, T, x, unl.y.data, &us), MOE_OK);
    moe_layer_destroy(layer);
    CHECK(unl.dropped == 0, "[capacity 0] dropped %d", unl.dropped);

    const int64_t unlimited[] = {T,
                                 T * K - 1,
                                 T * K,
                                 T * K + 1,
                                 INT32_MAX,
                                 (int64_t)1 << 31,
                                 ((int64_t)1 << 32) - 1,
                                 (int64_t)1 << 32,
                                 ((int64_t)1 << 32) + 1,
                                 (int64_t)1 << 40,
                                 INT64_MAX};
    for (size_t i = 0; i < sizeof unlimited / sizeof unlimited[0]; i++) {
        const long long cap = (long long)unlimited[i];
        moe_layer_desc d = hl.desc;
        d.expert_capacity = unlimited[i];
        outputs got = outputs_alloc(&d, T);
        moe_forward_stats gs = stats_into(&got);
        layer = NULL;
        moe_status st = moe_layer_create(ctx, &d, &hl.w, &layer);
        CHECK(st == MOE_OK, "[capacity %lld] layer_create: %s: %s", cap, moe_status_string(st),
              moe_context_error(ctx));
        if (st == MOE_OK) st = moe_layer_forward(layer, T, x, got.y.data, &gs);
        CHECK(st == MOE_OK, "[capacity %lld] forward: %s: %s", cap, moe_status_string(st),
              moe_context_error(ctx));
        if (st == MOE_OK) {
            CHECK(got.dropped == 0, "[capacity %lld] dropped %d rows; no expert has more than %lld", cap,
                  got.dropped, (long long)T);
            CHECK(same_bits(got.y.data, unl.y.data, sizeof(float) * (size_t)TD),
                  "[capacity %lld] output differs from capacity 0 (rel diff %.3g)", cap,
                  h_rel_l2(got.y.data, unl.y.data, (size_t)TD));
            CHECK(same_bits(got.ids, unl.ids, sizeof(int32_t) * (size_t)(T * K)) &&
                      same_bits(got.w.data, unl.w.data, sizeof(float) * (size_t)(T * K)),
                  "[capacity %lld] top-k differs from capacity 0", cap);
            CHECK(same_bits(got.counts, unl.counts, sizeof(int32_t) * (size_t)d.n_experts),
                  "[capacity %lld] expert counts differ from capacity 0", cap);
            CHECK(same_bits(&got.aux, &unl.aux, sizeof(float)) && same_bits(&got.z, &unl.z, sizeof(float)),
                  "[capacity %lld] losses %.9g %.9g, capacity 0 gives %.9g %.9g", cap, got.aux, got.z,
                  unl.aux, unl.z);
            CHECK(h_guards_ok(&got.y) && h_guards_ok(&got.w), "[capacity %lld] write outside the output",
                  cap);
        }
        moe_layer_destroy(layer);
        outputs_free(&got);
    }

    /* Just below the hot expert's T rows, and 1: exactly the overflow is dropped, as in the
     * reference. */
    const int64_t dropping[] = {T - 1, 1};
    for (size_t i = 0; i < sizeof dropping / sizeof dropping[0]; i++) {
        moe_layer_desc d = hl.desc;
        d.expert_capacity = dropping[i];
        outputs got = outputs_alloc(&d, T), ref = outputs_alloc(&d, T);
        moe_forward_stats gs = stats_into(&got), rs = stats_into(&ref);
        CHECK_STATUS(moe_reference_forward(&d, &hl.w, T, x, ref.y.data, &rs), MOE_OK);
        layer = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &d, &hl.w, &layer), MOE_OK);
        if (layer) CHECK_STATUS(moe_layer_forward(layer, T, x, got.y.data, &gs), MOE_OK);
        int32_t want = 0; /* each expert's rows past the capacity */
        for (int64_t e = 0; e < d.n_experts; e++)
            if (unl.counts[e] > dropping[i]) want += (int32_t)(unl.counts[e] - dropping[i]);
        CHECK(want > 0 && ref.dropped == want && got.dropped == want,
              "[capacity %lld] dropped %d (reference %d), expected %d", (long long)dropping[i], got.dropped,
              ref.dropped, want);
        const double err = h_rel_l2(got.y.data, ref.y.data, (size_t)TD);
        CHECK(err <= Y_TOL, "[capacity %lld] relative L2 error %.3g against the reference",
              (long long)dropping[i], err);
        CHECK(!same_bits(got.y.data, unl.y.data, sizeof(float) * (size_t)TD),
              "[capacity %lld] dropping rows did not change the output", (long long)dropping[i]);
        moe_layer_destroy(layer);
        outputs_free(&got);
        outputs_free(&ref);
    }
    printf("  %-34s T=%-4lld capacities up to INT64_MAX equal unlimited\n", base.name, (long long)T);
    outputs_free(&unl);
    free(x);
    h_layer_free(&hl);
}

/* Whether `name` is in the comma-separated list in environment variable `var`. */
static bool listed(const char *var, const char *name)
{
    const char *list = getenv(var);
    if (!list) return false;
    const size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return true;
        p += len + (end ? 1 : 0);
    }
    return false;
}

/* The CPU backend computes a row the same way however many rows share its expert (kernels.c: a
 * few rows read the packed weights, many share one widening of each pair into floats; the same
 * FMAs in the same order either way): each token's output in a batch where one expert takes every
 * token is bit for bit its output alone. 45 rows make a widened group of 32 and one of 13; K spans
 * several widened chunks and a partial one. */
static void batch_invariance(moe_context *ctx, h_rng *r)
{
    const fcase base = {"batch_invariance",
                        DESC(.d_model = 544, .d_ff = 288, .n_experts = 4, .top_k = 2, .max_tokens = 45,
                             .renormalize = 1, .d_ff_shared = 64),
                        45, 1, false};
    const fcase c = for_format(&base);
    const int64_t T = c.T, D = c.d.d_model;
    h_layer hl;
    h_layer_init(&hl, &c.d, r, 1.0f);
    h_make_hot(&hl, c.hot);
    float *x = malloc(sizeof(float) * (size_t)(T * D)), *y = malloc(sizeof(float) * (size_t)(T * D));
    float *one = malloc(sizeof(float) * (size_t)D);
    h_fill_input(&hl, T, x, r);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
    CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
    int64_t differ = 0;
    for (int64_t t = 0; t < T && layer; t++) {
        CHECK_STATUS(moe_layer_forward(layer, 1, x + t * D, one, NULL), MOE_OK);
        differ += memcmp(one, y + t * D, sizeof(float) * (size_t)D) != 0;
    }
    CHECK(differ == 0, "[batch_invariance] %lld of %lld tokens differ alone from in the batch",
          (long long)differ, (long long)T);
    if (!differ)
        printf("  %-34s %lld tokens, one expert taking all: each alone bit for bit as in the batch\n",
               "batch_invariance", (long long)T);
    moe_layer_destroy(layer);
    free(x);
    free(y);
    free(one);
    h_layer_free(&hl);
}

/* MOE_TEST_CASES=name,name,...: only these fixed cases (and no capacity sweep), for a CTest
 * variant whose setting only small layers can take; unset or empty: every case.
 * MOE_TEST_SKIP_CASES=name,...: less these (the sanitized build's emulated level, CMakeLists). */
static bool selected(const char *name)
{
    const char *only = getenv("MOE_TEST_CASES");
    return (!only || !*only || listed("MOE_TEST_CASES", name)) && !listed("MOE_TEST_SKIP_CASES", name);
}

/* A GPU context converts weights at upload on n_threads host threads, each row alone: the
 * layer's bytes, so its outputs, are the same with one thread and with three (the rows of one
 * staging buffer split into three runs). */
static void upload_threads(moe_backend_kind kind, h_rng *r)
{
    const moe_layer_desc d = DESC(.d_model = 512, .d_ff = 512, .n_experts = 8, .top_k = 2, .max_tokens = 4,
                                  .weight_dtype = MOE_DTYPE_Q4_0);
    enum { T = 4 };
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);
    static float x[T * 512], y[2][T * 512];
    h_fill_input(&hl, T, x, r);
    const int threads[2] = {1, 3};
    for (int i = 0; i < 2; i++) {
        moe_context *ctx = h_context(kind, threads[i]);
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
        CHECK_STATUS(moe_layer_forward(layer, T, x, y[i], NULL), MOE_OK);
        moe_layer_destroy(layer);
        moe_context_destroy(ctx);
    }
    CHECK(!memcmp(y[0], y[1], sizeof y[0]),
          "[upload_threads] a layer uploaded on 1 and on 3 threads computes "
          "something else");
    printf("  %-34s Q4_0 from float32 on 1 and 3 host threads: the same outputs\n", "upload_threads");
    h_layer_free(&hl);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    const char *dtype = getenv("MOE_TEST_DTYPE");
    if (dtype && *dtype && moe_dtype_from_name(dtype, &g_dtype) != MOE_OK) {
        fprintf(stderr, "MOE_TEST_DTYPE=%s: %s\n", dtype, moe_last_error());
        return 2;
    }
    const char *act = getenv("MOE_TEST_ACTIVATIONS");
    if (act && *act && moe_dtype_from_name(act, &g_act) != MOE_OK) {
        fprintf(stderr, "MOE_TEST_ACTIVATIONS=%s: %s\n", act, moe_last_error());
        return 2;
    }
    const char *with = getenv("MOE_TEST_PLACE_WITH");
    if (with && *with) {
        const moe_backend_kind kinds[] = {MOE_BACKEND_CPU, MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL};
        size_t i = 0;
        while (i < 3 && strcmp(with, moe_backend_name(kinds[i]))) i++;
        if (i == 3) {
            fprintf(stderr, "MOE_TEST_PLACE_WITH=%s: not a backend (cpu, vulkan, opencl)\n", with);
            return 2;
        }
        g_other_kind = kinds[i];
        g_other = h_context(g_other_kind, 0); /* exits 77 (skip) when that backend has no device */
        printf("experts placed alternately on %s (home) and %s\n", argv[1], with);
        const char *slots = getenv("MOE_TEST_CACHE_SLOTS");
        g_cache_slots = slots && *slots ? atoll(slots) : 0;
        if (g_cache_slots > 0)
            printf("an expert cache of %lld slots on %s\n", (long long)g_cache_slots, argv[1]);
    }
    printf("weight format: %s, activations: %s\n", moe_dtype_name(g_dtype), moe_dtype_name(g_act));
    /* The suite's table (what check_opt_in and int8_request expect) is the library's. */
    for (int a = 0; a < 2; a++) {
        const moe_dtype opt_in = a ? MOE_DTYPE_BF16 : MOE_DTYPE_Q8_0;
        CHECK(takes(g_dtype, opt_in) == (moe_dtype_takes_activations(g_dtype, opt_in) == 1),
              "%s weights on %s activations: the suite says %d, moe_dtype_takes_activations %d",
              moe_dtype_name(g_dtype), moe_dtype_name(opt_in), (int)takes(g_dtype, opt_in),
              moe_dtype_takes_activations(g_dtype, opt_in));
    }
    if (g_act == MOE_DTYPE_BF16 && takes(g_dtype, g_act) && !runs_bf16(ctx)) {
        printf("SKIP: this context does not run bfloat16-pair activations (the CPU's avx512vnni level runs "
               "them where the CPU has AVX512_BF16, simde512 anywhere)\n");
        moe_context_destroy(ctx);
        moe_context_destroy(g_other);
        return 77;
    }
    h_rng r = h_rng_seeded("test_forward");
    for (size_t i = 0; i < sizeof fixed_cases / sizeof fixed_cases[0]; i++)
        if (selected(fixed_cases[i].name)) run_case(ctx, kind, &fixed_cases[i], &r);
    /* The capacity sweep is about integer limits, not weights: the float32 run covers it. */
    /* (Both make their own one-context layers: a placed run would repeat them unchanged.) */
    if (selected("capacity_limits") && g_dtype == MOE_DTYPE_F32 && !g_other) capacity_limits(ctx, &r);
    if (selected("int8_request") && g_act == MOE_DTYPE_F32 && !g_other) int8_request(ctx, &r);
    if (selected("batch_invariance") && kind == MOE_BACKEND_CPU && !g_other) batch_invariance(ctx, &r);
    if (selected("opt_in_nonfinite") && g_act != MOE_DTYPE_F32 && !g_other) opt_in_nonfinite(ctx, &r);
    if (selected("opt_in_per_product") && g_act != MOE_DTYPE_F32 && !g_other) opt_in_per_product(ctx, &r);
    if (selected("upload_threads") && g_dtype == MOE_DTYPE_F32 && g_act == MOE_DTYPE_F32 && !g_other &&
        kind != MOE_BACKEND_CPU)
        upload_threads(kind, &r);
    int n_random = getenv("MOE_TEST_RANDOM_CASES") ? atoi(getenv("MOE_TEST_RANDOM_CASES")) : 24;
#if MOE_TEST_SANITIZED
    /* Under the sanitizers (CI's asan stage) half the random shapes, rounded up: they look for
     * memory errors, ~5x slower, while the plain build runs them all against the reference. */
    if (n_random > 1) {
        printf("sanitized build: %d random cases of %d\n", (n_random + 1) / 2, n_random);
        n_random = (n_random + 1) / 2;
    }
#endif
    for (int i = 0; i < n_random; i++) {
        const fcase c = random_case(&r, i);
        run_case(ctx, kind, &c, &r);
    }
    moe_context_destroy(ctx);
    moe_context_destroy(g_other);
    return h_finish("test_forward");
}
