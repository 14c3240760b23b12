/*
 * test_mpi.c — expert parallelism over MPI (moe_mpi.h), run under mpirun with 1..4 ranks:
 * every case's layer spread over the ranks, each rank forwarding its own tokens (some none),
 * held to one forward of the same layer over every rank's tokens concatenated in rank order on
 * one context: bit for bit (output, top-k, counts, dropped rows, both losses) where every rank
 * runs the CPU backend, within 1e-5 where the ranks mix backends. Cases: test_forward's
 * variants (routing families, activations, k = E, E = 256, capacity with both drop policies —
 * applied in global token order —, shared experts, biases, stored formats), uneven partitions (E = 7 over 3
 * ranks, fewer experts than ranks), every token routed to one rank's experts, losses asked for by one rank
 * only, no tokens anywhere; on CPU ranks also every weight format, int8 activations and random shapes
 * (generated_cases; MOE_TEST_MPI_GENERATED_ONLY=1 runs only those, as CTest does at each forced level). Then
 * the failures: a rank with bad input makes every rank's forward fail (its own status there,
 * MOE_ERROR_BACKEND naming it elsewhere) with every caller's output untouched, and the layer works
 * afterwards; ranks describing different layers fail their creation together; the calls an expert-parallel
 * layer does not take are refused; a failing transport is reported with its own words (an in-process
 * transport, one rank).
 *
 * Checkpoints: a few of the suite's fixtures (safetensors and GGUF, stacked and per-expert
 * tensors, a K-quant file) made with moe_mpi_model_create_layer, each rank reading its own
 * experts only, against the layer made whole.
 *
 * usage: test_mpi BACKENDS [DATA_DIR]   (comma-separated, rank r runs BACKENDS[r mod n]; exit 77
 * on every rank when one lacks its backend; DATA_DIR: tests/data, for the checkpoints)
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "harness.h"
#include "moe_mpi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_rank, g_size;
static bool g_exact; /* every rank on the CPU backend: bit for bit */

#define DESC(...)                                                                                            \
    {                                                                                                        \
        .struct_size = sizeof(moe_layer_desc), __VA_ARGS__                                                   \
    }

typedef struct ep_case {
    const char *name;
    moe_layer_desc d;
    int64_t max_tokens; /* per rank: each draws 0..max (rank 0 at least 1) unless `tokens` says */
    int64_t hot;        /* >= 0: every token's first choice (h_make_hot) */
    int tokens;         /* 0 random; 1: ranks alternate none / max; 2: no rank has a token */
    bool losses_on_rank0_only;
} ep_case;

static const ep_case cases[] = {
    {"mixtral", DESC(.d_model = 64, .d_ff = 96, .n_experts = 8, .top_k = 2, .renormalize = 1), 21, -1, 0,
     false},
    {"odd_e7", DESC(.d_model = 67, .d_ff = 45, .n_experts = 7, .top_k = 2, .renormalize = 1), 17, -1, 0,
     false},
    {"qwen2_shared_gate",
     DESC(.d_model = 32, .d_ff = 40, .n_experts = 8, .top_k = 2, .d_ff_shared = 72, .shared_expert_gate = 1),
     13, -1, 0, false},
    {"deepseek_v3",
     DESC(.d_model = 36, .d_ff = 20, .n_experts = 64, .top_k = 6, .score_func = MOE_SCORE_SIGMOID,
          .n_group = 8, .topk_group = 4, .has_selection_bias = 1, .renormalize = 1,
          .routed_scaling_factor = 2.5f, .d_ff_shared = 40),
     11, -1, 0, false},
    {"switch_capacity_zero",
     DESC(.d_model = 32, .d_ff = 48, .n_experts = 4, .top_k = 1, .activation = MOE_ACTIVATION_RELU,
          .expert_capacity = 7),
     19, -1, 0, false},
    {"switch_capacity_passthrough",
     DESC(.d_model = 32, .d_ff = 48, .n_experts = 4, .top_k = 1, .activation = MOE_ACTIVATION_RELU,
          .expert_capacity = 5, .drop_policy = MOE_DROP_PASSTHROUGH),
     19, -1, 0, false},
    {"gshard_top2_capacity",
     DESC(.d_model = 24, .d_ff = 36, .n_experts = 8, .top_k = 2, .activation = MOE_ACTIVATION_GELU,
          .expert_capacity = 9),
     25, -1, 0, false},
    {"all_to_last_expert", DESC(.d_model = 48, .d_ff = 64, .n_experts = 8, .top_k = 1), 23, 7, 0, false},
    {"all_to_one_capacity",
     DESC(.d_model = 48, .d_ff = 64, .n_experts = 8, .top_k = 2, .expert_capacity = 10,
          .drop_policy = MOE_DROP_PASSTHROUGH, .renormalize = 1),
     15, 0, 0, false},
    {"gpt_oss",
     DESC(.d_model = 64, .d_ff = 96, .n_experts = 12, .top_k = 4, .renormalize = 1,
          .activation = MOE_ACTIVATION_SWIGLU_OAI, .router_has_bias = 1, .expert_has_bias = 1,
          .swiglu_limit = 0.75f, .swiglu_alpha = 1.5f),
     9, -1, 0, false},
    {"q4_0_storage",
     DESC(.d_model = 64, .d_ff = 96, .n_experts = 8, .top_k = 2, .renormalize = 1,
          .weight_dtype = MOE_DTYPE_Q4_0, .d_ff_shared = 32, .shared_weight_dtype = MOE_DTYPE_Q8_0),
     14, -1, 0, false},
    {"fewer_experts_than_ranks", DESC(.d_model = 40, .d_ff = 24, .n_experts = 2, .top_k = 1), 12, -1, 0,
     false},
    {"ranks_without_tokens",
     DESC(.d_model = 40, .d_ff = 33, .n_experts = 6, .top_k = 3, .d_ff_shared = 16, .expert_capacity = 6), 16,
     -1, 1, false},
    {"k_equals_e", DESC(.d_model = 40, .d_ff = 33, .n_experts = 6, .top_k = 6), 9, -1, 0, false},
    {"e256_k8", DESC(.d_model = 32, .d_ff = 16, .n_experts = 256, .top_k = 8, .renormalize = 1), 7, -1, 0,
     false},
    {"olmoe", DESC(.d_model = 40, .d_ff = 24, .n_experts = 64, .top_k = 8), 6, -1, 0, false},
    {"deepseek_v2_group_max",
     DESC(.d_model = 48, .d_ff = 28, .n_experts = 64, .top_k = 6, .n_group = 8, .topk_group = 3,
          .group_score = MOE_GROUP_SCORE_MAX, .routed_scaling_factor = 16.0f, .d_ff_shared = 56),
     8, -1, 0, false},
    {"geglu",
     DESC(.d_model = 45, .d_ff = 77, .n_experts = 5, .top_k = 3, .activation = MOE_ACTIVATION_GEGLU,
          .renormalize = 1),
     12, -1, 0, false},
    {"gelu_shared",
     DESC(.d_model = 33, .d_ff = 17, .n_experts = 7, .top_k = 2, .activation = MOE_ACTIVATION_GELU,
          .d_ff_shared = 19, .shared_expert_gate = 1),
     11, -1, 0, false},
    {"sigmoid_plain",
     DESC(.d_model = 50, .d_ff = 30, .n_experts = 12, .top_k = 3, .score_func = MOE_SCORE_SIGMOID), 10, -1, 0,
     false},
    {"down_format",
     DESC(.d_model = 64, .d_ff = 40, .n_experts = 16, .top_k = 4, .renormalize = 1, .d_ff_shared = 48,
          .down_weight_dtype = MOE_DTYPE_F16, .shared_down_weight_dtype = MOE_DTYPE_BF16),
     9, -1, 0, false},
    {"larger", DESC(.d_model = 256, .d_ff = 512, .n_experts = 16, .top_k = 4, .renormalize = 1), 40, -1, 0,
     false},
    {"losses_on_rank0_only", DESC(.d_model = 50, .d_ff = 30, .n_experts = 12, .top_k = 3), 10, -1, 0, true},
    {"no_tokens_anywhere", DESC(.d_model = 32, .d_ff = 16, .n_experts = 8, .top_k = 2), 4, -1, 2, false},
};

/* Every weight format, the shared expert stored in it too, over an uneven partition (K-quants need
 * rows of 256), and the formats with an integer path again on int8 activations (the opt-in; a
 * level without it runs float ones in both forwards); then random shapes and variants
 * (h_random_desc, test_forward's generator). Every rank draws the same cases from the one seed. */
static void run_case(moe_context *ctx, const ep_case *c, h_rng *r);
static void generated_cases(moe_context *ctx, h_rng *r, int n_random)
{
    static const moe_dtype formats[] = {MOE_DTYPE_F16,  MOE_DTYPE_BF16, MOE_DTYPE_Q8_0, MOE_DTYPE_Q4_0,
                                        MOE_DTYPE_Q4_K, MOE_DTYPE_Q5_K, MOE_DTYPE_Q6_K, MOE_DTYPE_MXFP4,
                                        MOE_DTYPE_Q3_K, MOE_DTYPE_Q2_K};
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        const moe_dtype f = formats[i];
        const bool int8 = f == MOE_DTYPE_Q8_0 || f == MOE_DTYPE_Q4_0 || f == MOE_DTYPE_Q4_K;
        for (int a = 0; a < (int8 ? 2 : 1); a++) {
            char name[48];
            snprintf(name, sizeof name, "format_%s%s", moe_dtype_name(f), a ? "_int8" : "");
            const ep_case c = {name,
                               DESC(.d_model = 256, .d_ff = 256, .n_experts = 7, .top_k = 2, .renormalize = 1,
                                    .d_ff_shared = 256, .weight_dtype = f, .shared_weight_dtype = f,
                                    .activation_dtype = a ? MOE_DTYPE_Q8_0 : MOE_DTYPE_F32),
                               9,
                               -1,
                               0,
                               false};
            run_case(ctx, &c, r);
        }
    }
    for (int i = 0; i < n_random; i++) {
        char name[32];
        snprintf(name, sizeof name, "random_%d", i);
        ep_case c = {name, {0}, 0, -1, 0, false};
        c.d = h_random_desc(r, &c.max_tokens);
        run_case(ctx, &c, r);
    }
}

/* Every rank's failures, summed: each rank exits with the same code. */
static int all_failures(void)
{
    int mine = h_failures, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    return sum;
}

/* The layer's weights for this rank's experts: its slices of the stacked arrays. */
static moe_layer_weights local_weights(const h_layer *l, int64_t first, int64_t n)
{
    const moe_layer_desc *d = &l->desc;
    const int64_t D = d->d_model, F = d->d_ff;
    moe_layer_weights w = l->w;
    w.gate = n && l->gate ? l->gate + first * F * D : NULL;
    w.up = n ? l->up + first * F * D : NULL;
    w.down = n ? l->down + first * D * F : NULL;
    w.gate_bias = n && l->gate_bias ? l->gate_bias + first * F : NULL;
    w.up_bias = n && l->up_bias ? l->up_bias + first * F : NULL;
    w.down_bias = n && l->down_bias ? l->down_bias + first * D : NULL;
    return w;
}

static bool same_floats(const float *a, const float *b, size_t n, double tol)
{
    if (n == 0) return true;
    if (g_exact) return memcmp(a, b, n * sizeof(float)) == 0;
    return h_rel_l2(a, b, n) <= tol;
}

static bool same_float(float a, float b)
{
    return g_exact ? memcmp(&a, &b, sizeof a) == 0
                   : fabs((double)a - (double)b) <= 1e-5 * (1.0 + fabs((double)b));
}

static void run_case(moe_context *ctx, const ep_case *c, h_rng *r)
{
    h_layer l;
    h_layer_init(&l, &c->d, r, 1.0f);
    if (c->hot >= 0) h_make_hot(&l, c->hot);
    const moe_layer_desc *d = &l.desc;
    const int64_t D = d->d_model, K = d->top_k, E = d->n_experts;
    /* Every rank draws the same counts and inputs (one seed), and takes its own. */
    int64_t tokens[64] = {0}, Tg = 0, offset = 0;
    for (int q = 0; q < g_size; q++) {
        tokens[q] = c->tokens == 2   ? 0
                    : c->tokens == 1 ? (q % 2 ? c->max_tokens : 0)
                                     : h_range(r, q == 0 ? 1 : 0, c->max_tokens);
        if (q < g_rank) offset += tokens[q];
        Tg += tokens[q];
    }
    const int64_t T = tokens[g_rank];
    l.desc.max_tokens = Tg > 0 ? Tg : 1;
    float *x = malloc(sizeof(float) * (size_t)(Tg > 0 ? Tg * D : 1));
    float *y_one = calloc((size_t)(Tg > 0 ? Tg * D : 1), sizeof(float));
    int32_t *ids_one = calloc((size_t)(Tg > 0 ? Tg * K : 1), sizeof(int32_t));
    float *w_one = calloc((size_t)(Tg > 0 ? Tg * K : 1), sizeof(float));
    int32_t *counts_one = calloc((size_t)E, sizeof(int32_t)), dropped_one = 0;
    float aux_one = 0.0f, z_one = 0.0f;
    if (Tg > 0) h_fill_input(&l, Tg, x, r);

    /* One forward over every rank's tokens, on this rank's context. */
    moe_dtype act_one = MOE_DTYPE_F32;
    if (Tg > 0) {
        moe_layer *one = NULL;
        moe_forward_stats s = {.struct_size = sizeof s,
                               .topk_ids = ids_one,
                               .topk_weights = w_one,
                               .expert_counts = counts_one,
                               .dropped_count = &dropped_one,
                               .aux_loss = &aux_one,
                               .z_loss = &z_one};
        CHECK_STATUS(moe_layer_create(ctx, &l.desc, &l.w, &one), MOE_OK);
        if (one) CHECK_STATUS(moe_layer_forward(one, Tg, x, y_one, &s), MOE_OK);
        if (one) act_one = moe_layer_activation_dtype(one);
        moe_layer_destroy(one);
    }

    /* The same layer over the ranks. */
    int64_t first = 0, n_local = 0;
    CHECK_STATUS(moe_mpi_partition(MPI_COMM_WORLD, E, &first, &n_local), MOE_OK);
    moe_layer_desc ld = l.desc;
    ld.max_tokens = T > 0 ? T : 1;
    const moe_layer_weights lw = local_weights(&l, first, n_local);
    moe_layer *ep = NULL;
    CHECK_STATUS(moe_mpi_layer_create(ctx, MPI_COMM_WORLD, &ld, &lw, &ep), MOE_OK);
    h_guarded y = h_guarded_alloc((size_t)(T > 0 ? T * D : 1));
    int32_t *ids = calloc((size_t)(T > 0 ? T * K : 1), sizeof(int32_t));
    float *w = calloc((size_t)(T > 0 ? T * K : 1), sizeof(float));
    int32_t *counts = calloc((size_t)E, sizeof(int32_t)), dropped = -1;
    float aux = -1.0f, z = -1.0f;
    const bool losses = !c->losses_on_rank0_only || g_rank == 0;
    moe_forward_stats s = {.struct_size = sizeof s,
                           .topk_ids = ids,
                           .topk_weights = w,
                           .expert_counts = counts,
                           .dropped_count = &dropped,
                           .aux_loss = losses ? &aux : NULL,
                           .z_loss = losses ? &z : NULL};
    if (ep)
        CHECK_STATUS(moe_layer_forward(ep, T, T > 0 ? x + offset * D : NULL, T > 0 ? y.data : NULL, &s),
                     MOE_OK);
    CHECK(h_guards_ok(&y), "%s: guard zones overwritten", c->name);
    /* Int8 activations where this rank's level has the path: as the one-process layer decides. */
    CHECK(!ep || Tg == 0 || moe_layer_activation_dtype(ep) == act_one,
          "%s: the layer over the ranks runs %s activations, one forward %s", c->name,
          ep ? moe_dtype_name(moe_layer_activation_dtype(ep)) : "-", moe_dtype_name(act_one));
    if (Tg > 0) {
        CHECK(same_floats(y.data, y_one + offset * D, (size_t)(T * D), 1e-5),
              "%s: rank %d's output differs from one forward's (rel L2 %.3g)", c->name, g_rank,
              T > 0 ? h_rel_l2(y.data, y_one + offset * D, (size_t)(T * D)) : 0.0);
        CHECK(T == 0 || memcmp(ids, ids_one + offset * K, sizeof(int32_t) * (size_t)(T * K)) == 0,
              "%s: rank %d's top-k ids differ", c->name, g_rank);
        CHECK(same_floats(w, w_one + offset * K, (size_t)(T * K), 1e-6), "%s: rank %d's top-k weights differ",
              c->name, g_rank);
        CHECK(memcmp(counts, counts_one, sizeof(int32_t) * (size_t)E) == 0, "%s: expert counts differ",
              c->name);
        CHECK(dropped == dropped_one, "%s: %d dropped rows, one forward drops %d", c->name, dropped,
              dropped_one);
        if (losses)
            CHECK(same_float(aux, aux_one) && same_float(z, z_one),
                  "%s: losses %.9g %.9g, one forward's %.9g %.9g", c->name, (double)aux, (double)z,
                  (double)aux_one, (double)z_one);
    } else {
        int64_t sum = 0;
        for (int64_t e = 0; e < E; e++) sum += counts[e];
        CHECK(sum == 0 && dropped == 0, "%s: no tokens anywhere, yet %lld rows counted, %d dropped", c->name,
              (long long)sum, dropped);
        CHECK(aux == 0.0f && z == 0.0f, "%s: no tokens anywhere, yet losses %g %g", c->name, (double)aux,
              (double)z);
    } /* What the exchange moved: every row sent is received, every byte too; nothing with one rank. */
    moe_ep_stats es = {.struct_size = sizeof es};
    if (ep) CHECK_STATUS(moe_layer_get_ep_stats(ep, &es), MOE_OK);
    CHECK(es.forwards == 1 && es.tokens == T, "%s: ep stats count %lld forwards, %lld tokens", c->name,
          (long long)es.forwards, (long long)es.tokens);
    CHECK(es.exchange_ms >= 0.0 && es.exchange_ms <= es.forward_ms,
          "%s: exchange %.3f ms of a %.3f ms forward", c->name, es.exchange_ms, es.forward_ms);
    /* Bytes out: its rows to the owners, and the output rows of those it received, going back. */
    CHECK(es.bytes_sent >= (double)(es.rows_sent + es.rows_received) * (double)D * sizeof(float),
          "%s: %lld rows sent and %lld received in %.0f bytes sent", c->name, (long long)es.rows_sent,
          (long long)es.rows_received, es.bytes_sent);
    int64_t moved[4] = {es.rows_sent, es.rows_received, (int64_t)es.bytes_sent, (int64_t)es.bytes_received},
            sum[4];
    MPI_Allreduce(moved, sum, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    CHECK(sum[0] == sum[1] && sum[2] == sum[3],
          "%s: %lld rows sent, %lld received; %lld bytes sent, %lld received", c->name, (long long)sum[0],
          (long long)sum[1], (long long)sum[2], (long long)sum[3]);
    CHECK(g_size > 1 || (sum[0] == 0 && sum[2] == 0), "%s: one rank moved %lld rows, %lld bytes", c->name,
          (long long)sum[0], (long long)sum[2]);
    if (g_rank == 0) {
        printf("  %-28s E=%-3lld k=%lld tokens", c->name, (long long)E, (long long)K);
        for (int q = 0; q < g_size; q++) printf(" %lld", (long long)tokens[q]);
        printf("  dropped %d\n", dropped);
    }
    moe_layer_destroy(ep);
    h_guarded_free(&y);
    free(ids);
    free(w);
    free(counts);
    free(x);
    free(y_one);
    free(ids_one);
    free(w_one);
    free(counts_one);
    h_layer_free(&l);
}

/* ---- checkpoints: each rank reads its own experts --------------------------------------------- */

/* A checkpoint's first MoE layer over the ranks (moe_mpi_model_create_layer) against the same
 * layer made whole (moe_model_create_layer) and run over every rank's tokens. */
static void checkpoint(moe_context *ctx, const char *path, h_rng *r)
{
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(path, &m), MOE_OK);
    if (!m) return;
    moe_model_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_model_get_info(m, &info), MOE_OK);
    int64_t layer = 0;
    while (layer < info.n_layers && !moe_model_layer_is_moe(m, layer, 0)) layer++;
    moe_layer_desc d = {.struct_size = sizeof d};
    CHECK_STATUS(moe_model_layer_desc(m, layer, NULL, &d), MOE_OK);
    const int64_t D = d.d_model, K = d.top_k;
    int64_t tokens[64] = {0}, Tg = 0, offset = 0;
    for (int q = 0; q < g_size; q++) {
        tokens[q] = h_range(r, q == 0 ? 1 : 0, 6);
        if (q < g_rank) offset += tokens[q];
        Tg += tokens[q];
    }
    const int64_t T = tokens[g_rank];
    float *x = malloc(sizeof(float) * (size_t)(Tg * D)), *y_one = calloc((size_t)(Tg * D), sizeof(float));
    float *y = calloc((size_t)(T > 0 ? T * D : 1), sizeof(float));
    int32_t *ids_one = calloc((size_t)(Tg * K), sizeof(int32_t)),
            *ids = calloc((size_t)(T > 0 ? T * K : 1), sizeof(int32_t));
    for (int64_t i = 0; i < Tg * D; i++) x[i] = h_sym(r, 1.0f);
    moe_layer *one = NULL, *ep = NULL;
    moe_forward_stats s1 = {.struct_size = sizeof s1, .topk_ids = ids_one},
                      s = {.struct_size = sizeof s, .topk_ids = ids};
    CHECK_STATUS(moe_model_create_layer(ctx, m, layer, NULL, &one), MOE_OK);
    if (one) CHECK_STATUS(moe_layer_forward(one, Tg, x, y_one, &s1), MOE_OK);
    moe_layer_destroy(one);
    CHECK_STATUS(moe_mpi_model_create_layer(ctx, MPI_COMM_WORLD, m, layer, NULL, &ep), MOE_OK);
    if (ep)
        CHECK_STATUS(moe_layer_forward(ep, T, T > 0 ? x + offset * D : NULL, T > 0 ? y : NULL, &s), MOE_OK);
    CHECK(T == 0 || memcmp(y, y_one + offset * D, sizeof(float) * (size_t)(T * D)) == 0,
          "%s: rank %d's output differs from one forward's (rel L2 %.3g)", path, g_rank,
          T > 0 ? h_rel_l2(y, y_one + offset * D, (size_t)(T * D)) : 0.0);
    CHECK(T == 0 || memcmp(ids, ids_one + offset * K, sizeof(int32_t) * (size_t)(T * K)) == 0,
          "%s: rank %d's top-k ids differ", path, g_rank);
    if (g_rank == 0) {
        const char *name = strrchr(path, '/');
        printf("  checkpoint %-40s layer %lld E=%lld k=%lld tokens", name ? name + 1 : path, (long long)layer,
               (long long)d.n_experts, (long long)K);
        for (int q = 0; q < g_size; q++) printf(" %lld", (long long)tokens[q]);
        printf("\n");
    }
    moe_layer_destroy(ep);
    moe_model_close(m);
    free(x);
    free(y_one);
    free(y);
    free(ids_one);
    free(ids);
}

/* ---- failures ----------------------------------------------------------------------------------- */

static void failures(moe_context *ctx, h_rng *r)
{
    const moe_layer_desc base = DESC(.d_model = 32, .d_ff = 40, .n_experts = 6, .top_k = 2, .max_tokens = 8);
    h_layer l;
    h_layer_init(&l, &base, r, 1.0f);
    int64_t first = 0, n_local = 0;
    CHECK_STATUS(moe_mpi_partition(MPI_COMM_WORLD, 6, &first, &n_local), MOE_OK);
    const moe_layer_weights lw = local_weights(&l, first, n_local);
    moe_layer *ep = NULL;
    CHECK_STATUS(moe_mpi_layer_create(ctx, MPI_COMM_WORLD, &l.desc, &lw, &ep), MOE_OK);
    float x[8 * 32];
    h_fill_input(&l, 8, x, r);
    h_guarded y = h_guarded_alloc(8 * 32);
    int32_t counts[6] = {-7, -7, -7, -7, -7, -7};
    moe_forward_stats s = {.struct_size = sizeof s, .expert_counts = counts};
    /* The last rank asks for -3 tokens: every rank's forward fails, nothing is written. */
    const int bad = g_size - 1;
    const moe_status st =
        ep ? moe_layer_forward(ep, g_rank == bad ? -3 : 8, x, y.data, &s) : MOE_ERROR_INTERNAL;
    if (g_rank == bad) {
        CHECK(st == MOE_ERROR_INVALID_SIZE, "the bad rank's forward returned %s", moe_status_string(st));
    } else {
        char want[64];
        snprintf(want, sizeof want, "rank %d failed", bad);
        CHECK(st == MOE_ERROR_BACKEND && strstr(moe_last_error(), want),
              "rank %d's forward returned %s (%s); expected MOE_ERROR_BACKEND naming rank %d", g_rank,
              moe_status_string(st), moe_last_error(), bad);
    }
    CHECK(h_untouched(&y) && h_guards_ok(&y), "a failed forward wrote y on rank %d", g_rank);
    CHECK(counts[0] == -7 && counts[5] == -7, "a failed forward wrote the counts on rank %d", g_rank);
    /* x NULL with tokens on rank 0: the same. */
    const moe_status st2 =
        ep ? moe_layer_forward(ep, 8, g_rank == 0 ? NULL : x, y.data, NULL) : MOE_ERROR_INTERNAL;
    CHECK(st2 == (g_rank == 0 ? MOE_ERROR_NULL_POINTER : MOE_ERROR_BACKEND),
          "x NULL on rank 0: rank %d got %s", g_rank, moe_status_string(st2));
    /* And the layer still works. */
    if (ep) CHECK_STATUS(moe_layer_forward(ep, 8, x, y.data, NULL), MOE_OK);
    CHECK(!h_untouched(&y), "the forward after the failures wrote nothing");

    /* Every allocation of one rank's forward failing in turn: that rank's call returns the
     * failure and every other rank's MOE_ERROR_BACKEND naming it — or, where the allocation was
     * optional, every rank succeeds — and nobody waits forever. */
    int64_t points = 0;
    if (ep && g_rank == bad) moe_test_inject_alloc_failure(-1);
    if (ep) CHECK_STATUS(moe_layer_forward(ep, 8, x, y.data, NULL), MOE_OK);
    if (g_rank == bad) points = moe_test_inject_alloc_failure(0);
    MPI_Bcast(&points, 1, MPI_INT64_T, bad, MPI_COMM_WORLD);
    int failed_points = 0;
    for (int64_t n = 1; ep && n <= points; n++) {
        h_guarded_reset(&y);
        if (g_rank == bad) moe_test_inject_alloc_failure(n);
        const moe_status fst = moe_layer_forward(ep, 8, x, y.data, NULL);
        if (g_rank == bad) moe_test_inject_alloc_failure(0);
        int bad_failed = g_rank == bad && fst != MOE_OK;
        MPI_Bcast(&bad_failed, 1, MPI_INT, bad, MPI_COMM_WORLD);
        failed_points += bad_failed;
        if (g_rank == bad)
            CHECK(fst == MOE_OK || fst == MOE_ERROR_OUT_OF_MEMORY || fst == MOE_ERROR_OUT_OF_DEVICE_MEMORY,
                  "allocation %lld failing: %s", (long long)n, moe_status_string(fst));
        else
            CHECK(fst == (bad_failed ? MOE_ERROR_BACKEND : MOE_OK),
                  "allocation %lld of rank %d failing: rank %d got %s", (long long)n, bad, g_rank,
                  moe_status_string(fst));
        CHECK(!bad_failed || (h_untouched(&y) && h_guards_ok(&y)),
              "allocation %lld failing: y written on rank %d", (long long)n, g_rank);
    }
    if (g_rank == 0)
        printf("  one rank's forward allocations failing in turn: %lld points, %d failed every rank's call\n",
               (long long)points, failed_points);
    CHECK(points == 0 || failed_points > 0,
          "no allocation failure reached the forward's result"); /* Only the forwards that succeeded count:
                                                                  * the one after the bad arguments, the
                                                                  * counted one, and those the injected
                                                                  * failures left standing. */
    moe_ep_stats es = {.struct_size = sizeof es};
    if (ep) CHECK_STATUS(moe_layer_get_ep_stats(ep, &es), MOE_OK);
    CHECK(es.forwards == 2 + (points - failed_points), "%lld forwards counted", (long long)es.forwards);
    moe_layer *plain = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &l.desc, &l.w, &plain), MOE_OK);
    CHECK_STATUS(moe_layer_get_ep_stats(plain, &es), MOE_ERROR_INVALID_ARGUMENT);
    moe_layer_destroy(plain);

    /* What an expert-parallel layer does not take. */
    if (ep) {
        moe_buffer *xb = NULL, *yb = NULL;
        CHECK_STATUS(moe_buffer_create(ctx, 8 * 32, &xb), MOE_OK);
        CHECK_STATUS(moe_buffer_create(ctx, 8 * 32, &yb), MOE_OK);
        CHECK_STATUS(moe_layer_forward_buffers(ep, 8, xb, yb, NULL), MOE_ERROR_UNSUPPORTED);
        CHECK(strstr(moe_last_error(), "expert-parallel") != NULL, "refusal says: %s", moe_last_error());
        CHECK_STATUS(moe_layer_forward_async(ep, 8, xb, yb), MOE_ERROR_UNSUPPORTED);
        CHECK_STATUS(moe_layer_track_usage(ep, 4), MOE_ERROR_UNSUPPORTED);
        moe_buffer_destroy(xb);
        moe_buffer_destroy(yb);
    }
    moe_layer_destroy(ep);

    /* Ranks describing different layers: every rank's creation fails. */
    if (g_size > 1) {
        moe_layer_desc other = l.desc;
        if (g_rank == bad) other.d_ff_shared = 0, other.renormalize = 1;
        ep = NULL;
        CHECK_STATUS(moe_mpi_layer_create(ctx, MPI_COMM_WORLD, &other, &lw, &ep), MOE_ERROR_INVALID_ARGUMENT);
        CHECK(ep == NULL && strstr(moe_last_error(), "differs"), "mismatch: %s", moe_last_error());
        /* A rank whose own checks fail (no weights): the others' creation fails naming it. */
        const moe_status cst =
            moe_mpi_layer_create(ctx, MPI_COMM_WORLD, &l.desc, g_rank == bad ? NULL : &lw, &ep);
        CHECK(cst == (g_rank == bad ? MOE_ERROR_NULL_POINTER : MOE_ERROR_BACKEND) && ep == NULL,
              "weights NULL on rank %d: rank %d got %s", bad, g_rank, moe_status_string(cst));
    }
    h_guarded_free(&y);
    h_layer_free(&l);
}

/* ---- the core API, without MPI: the partition, a transport that fails --------------------------- */

static int fake_code = 0;
static int fake_allgather(void *user, const void *send, size_t bytes, void *recv)
{
    (void)user;
    if (fake_code) return fake_code;
    memcpy(recv, send, bytes);
    return 0;
}
static int fake_alltoallv(void *user, const void *send, const size_t *send_bytes, void *recv,
                          const size_t *recv_bytes)
{
    (void)user;
    if (fake_code) return fake_code;
    memcpy(recv, send, recv_bytes[0] < send_bytes[0] ? recv_bytes[0] : send_bytes[0]);
    return 0;
}
static const char *fake_describe(void *user, int code)
{
    (void)user;
    return code == 42 ? "the fake network is down" : NULL;
}
static int released = 0;
static void fake_release(void *user)
{
    (void)user;
    released++;
}

static void core_api(moe_context *ctx, h_rng *r)
{
    int64_t f = -1, n = -1;
    const int64_t want7[3][2] = {{0, 3}, {3, 2}, {5, 2}};
    for (int q = 0; q < 3; q++) {
        CHECK_STATUS(moe_ep_partition(7, 3, q, &f, &n), MOE_OK);
        CHECK(f == want7[q][0] && n == want7[q][1], "E=7 over 3: rank %d holds [%lld, +%lld)", q,
              (long long)f, (long long)n);
    }
    CHECK_STATUS(moe_ep_partition(2, 4, 3, &f, &n), MOE_OK);
    CHECK(f == 2 && n == 0, "E=2 over 4: rank 3 holds [%lld, +%lld)", (long long)f, (long long)n);
    CHECK_STATUS(moe_ep_partition(8, 2, 2, &f, &n), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_ep_partition(0, 2, 0, &f, &n), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_ep_partition(8, 2, 0, NULL, &n), MOE_ERROR_NULL_POINTER);

    const moe_layer_desc base = DESC(.d_model = 32, .d_ff = 24, .n_experts = 4, .top_k = 2, .max_tokens = 4);
    h_layer l;
    h_layer_init(&l, &base, r, 1.0f);
    moe_ep_transport tr = {.struct_size = sizeof tr,
                           .rank = 0,
                           .n_ranks = 1,
                           .allgather = fake_allgather,
                           .alltoallv = fake_alltoallv,
                           .release = fake_release,
                           .describe = fake_describe};
    moe_layer *ep = NULL;
    fake_code = 0;
    released = 0;
    CHECK_STATUS(moe_layer_create_ep(ctx, &tr, &l.desc, &l.w, &ep), MOE_OK);
    float x[4 * 32], y[4 * 32], y1[4 * 32];
    h_fill_input(&l, 4, x, r);
    if (ep) CHECK_STATUS(moe_layer_forward(ep, 4, x, y, NULL), MOE_OK);
    moe_layer *one = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &l.desc, &l.w, &one), MOE_OK);
    if (one) CHECK_STATUS(moe_layer_forward(one, 4, x, y1, NULL), MOE_OK);
    CHECK(same_floats(y, y1, 4 * 32, 1e-5), "one rank of an in-process transport differs from one forward");
    moe_layer_destroy(one);
    fake_code = 42;
    if (ep) CHECK_STATUS(moe_layer_forward(ep, 4, x, y, NULL), MOE_ERROR_BACKEND);
    CHECK(strstr(moe_last_error(), "allgather") && strstr(moe_last_error(), "the fake network is down"),
          "a failing transport: %s", moe_last_error());
    moe_layer_destroy(ep);
    CHECK(released == 1, "the transport was released %d times", released);
    /* Refused transports: released at once. */
    tr.alltoallv = NULL;
    CHECK_STATUS(moe_layer_create_ep(ctx, &tr, &l.desc, &l.w, &ep), MOE_ERROR_NULL_POINTER);
    tr.alltoallv = fake_alltoallv;
    tr.rank = 1;
    CHECK_STATUS(moe_layer_create_ep(ctx, &tr, &l.desc, &l.w, &ep), MOE_ERROR_INVALID_ARGUMENT);
    CHECK(released == 3, "refused transports released %d times in all", released);
    CHECK_STATUS(moe_layer_create_ep(ctx, NULL, &l.desc, &l.w, &ep), MOE_ERROR_NULL_POINTER);
    h_layer_free(&l);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (argc < 2 || g_size > 64) {
        if (g_rank == 0) fprintf(stderr, "usage: mpirun -np N (N <= 64) test_mpi cpu[,vulkan,...]\n");
        MPI_Finalize();
        return 2;
    }
    /* This rank's backend, and whether every rank has its own. */
    char list[256];
    snprintf(list, sizeof list, "%s", argv[1]);
    char *names[8];
    int n_names = 0;
    for (char *tok = strtok(list, ","); tok && n_names < 8; tok = strtok(NULL, ",")) names[n_names++] = tok;
    const char *mine = names[g_rank % n_names];
    g_exact = true;
    for (int i = 0; i < n_names && i < g_size; i++) g_exact = g_exact && strcmp(names[i], "cpu") == 0;
    moe_backend_kind kind = !strcmp(mine, "vulkan")   ? MOE_BACKEND_VULKAN
                            : !strcmp(mine, "opencl") ? MOE_BACKEND_OPENCL
                                                      : MOE_BACKEND_CPU;
    int count = 0, have = moe_backend_is_built(kind) && moe_device_count(kind, &count) == MOE_OK && count > 0,
        all = 0;
    if (have && kind == MOE_BACKEND_CPU) { /* MOE_CPU_ISA may force a level this CPU lacks */
        moe_context_desc cd = {.struct_size = sizeof cd, .backend = MOE_BACKEND_CPU, .n_threads = 1};
        moe_context *probe = NULL;
        have = moe_context_create(&cd, &probe) == MOE_OK;
        moe_context_destroy(probe);
    }
    MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (!all) {
        if (g_rank == 0)
            printf("test_mpi: a rank's backend (%s) has no device (or the forced CPU level cannot run): "
                   "skipped\n",
                   argv[1]);
        MPI_Finalize();
        return SKIP_CODE;
    }
    /* One seed for every rank. */
    unsigned long long seed = 0;
    if (g_rank == 0) {
        const char *env = getenv("MOE_TEST_SEED");
        h_rng pick = h_rng_seeded("test_mpi");
        seed = env ? strtoull(env, NULL, 0) : pick.s;
    }
    MPI_Bcast(&seed, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    h_rng r = {seed ? seed : 1};
    char *one_argv[] = {argv[0], (char *)mine, NULL};
    moe_context *ctx = h_open(2, one_argv, &kind);
    if (g_rank == 0)
        printf("test_mpi: %d rank(s), backends %s (%s)\n", g_size, argv[1],
               g_exact ? "bit for bit" : "within 1e-5");
    /* MOE_TEST_MPI_GENERATED_ONLY=1 (the runs at each forced ISA level): the formats and random
     * shapes alone; the exchange, the checkpoints and the failures are the default level's. The
     * mixes with a GPU rank run the fixed cases only: a PoCL rank compiles every new shape. */
    const bool generated_only = getenv("MOE_TEST_MPI_GENERATED_ONLY") != NULL;
    int n_random = getenv("MOE_TEST_RANDOM_CASES") ? atoi(getenv("MOE_TEST_RANDOM_CASES")) : 8;
#if MOE_TEST_SANITIZED
    n_random = (n_random + 1) / 2; /* as test_forward: the sanitizers look for memory errors */
#endif
    for (size_t i = 0; !generated_only && i < sizeof cases / sizeof cases[0]; i++)
        run_case(ctx, &cases[i], &r);
    if (g_exact) generated_cases(ctx, &r, n_random);

    /* Checkpoints (argv[2], the test data): bit for bit, so on the CPU only (a GPU rank's
     * routing of these unscreened inputs may resolve a near-tie the other way). */
    static const char *models[] = {
        "hf-moe/gpt_oss_T7_d64_f64_E8_k4", "hf-moe/deepseek_v3_T8_d36_f20_E16_k4_g4",
        "gguf-moe/qwen2moe.gguf",          "gguf-moe/mixtral-per-expert.gguf",
        "gguf-moe/synthetic-q4_k_m.gguf",  "gguf-moe/synthetic-q3_k_m.gguf",
        "gguf-moe/synthetic-q2_k.gguf"};
    for (size_t i = 0; !generated_only && argc > 2 && g_exact && i < sizeof models / sizeof models[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", argv[2], models[i]);
        checkpoint(ctx, path, &r);
    }
    if (!generated_only) {
        failures(ctx, &r);
        core_api(ctx, &r);
    }
    moe_context_destroy(ctx);
    const int failed = all_failures();
    h_failures = failed;
    const int rc = g_rank == 0 ? h_finish("test_mpi") : (failed ? 1 : 0);
    MPI_Finalize();
    return rc;
}
