/*
 * test_arena.c — the shared buffer arena on the backend named in argv[1]: repeated forwards
 * at the same or a smaller token count allocate nothing; a larger one grows scratch once;
 * two layers on one context share one scratch region (sized for the larger, not the sum);
 * weights and buffers are accounted and released.
 */
#include "harness.h"

#include <stdlib.h>

static moe_arena_stats stats_of(moe_context *ctx)
{
    moe_arena_stats s = {.struct_size = sizeof s};
    CHECK_STATUS(moe_context_get_arena_stats(ctx, &s), MOE_OK);
    return s;
}

static void forward(moe_layer *layer, int64_t T, int64_t D, h_rng *r)
{
    float *x = malloc(sizeof(float) * (size_t)(T * D)), *y = malloc(sizeof(float) * (size_t)(T * D));
    for (int64_t i = 0; i < T * D; i++) x[i] = h_sym(r, 1.0f);
    CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
    free(x);
    free(y);
}

static const moe_layer_desc desc_a = {.struct_size = sizeof(moe_layer_desc),
                                      .d_model = 64,
                                      .d_ff = 96,
                                      .n_experts = 8,
                                      .top_k = 2,
                                      .max_tokens = 128,
                                      .renormalize = 1};
static const moe_layer_desc desc_b = {.struct_size = sizeof(moe_layer_desc),
                                      .d_model = 48,
                                      .d_ff = 200,
                                      .n_experts = 16,
                                      .top_k = 4,
                                      .max_tokens = 96,
                                      .d_ff_shared = 64};

/* Scratch bytes one layer alone needs for T tokens, on a fresh context. */
static size_t scratch_alone(moe_backend_kind kind, const h_layer *hl, int64_t T, h_rng *r)
{
    moe_context *ctx = h_context(kind, 0);
    moe_layer *l = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &l), MOE_OK);
    if (l) forward(l, T, hl->desc.d_model, r);
    const size_t bytes = stats_of(ctx).scratch_bytes;
    moe_layer_destroy(l);
    moe_context_destroy(ctx);
    return bytes;
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_arena");
    h_layer a, b;
    h_layer_init(&a, &desc_a, &r, 1.0f);
    h_layer_init(&b, &desc_b, &r, 1.0f);

    moe_arena_stats s0 = stats_of(ctx);
    CHECK(s0.weights_bytes == 0 && s0.scratch_bytes == 0, "a new context holds nothing");
    moe_layer *la = NULL, *lb = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &a.desc, &a.w, &la), MOE_OK);
    CHECK_STATUS(moe_layer_create(ctx, &b.desc, &b.w, &lb), MOE_OK);
    if (!la || !lb) return h_finish("test_arena");
    const moe_arena_stats s1 = stats_of(ctx);
    CHECK(s1.weights_bytes >= sizeof(float) * (size_t)(8 * 96 * 64 * 3 + 16 * 200 * 48 * 3),
          "weights_bytes %zu is less than the weights", s1.weights_bytes);
    CHECK(s1.scratch_bytes == 0, "layer creation reserved scratch");

    /* First forward reserves; the same and smaller token counts then allocate nothing. */
    forward(la, 100, 64, &r);
    const moe_arena_stats s2 = stats_of(ctx);
    CHECK(s2.scratch_reservations == 1, "first forward: %llu reservations",
          (unsigned long long)s2.scratch_reservations);
    for (int64_t T = 100; T >= 1; T -= 33) forward(la, T, 64, &r);
    forward(la, 100, 64, &r);
    const moe_arena_stats s3 = stats_of(ctx);
    CHECK(s3.allocation_count == s2.allocation_count, "repeated forwards allocated (%llu -> %llu)",
          (unsigned long long)s2.allocation_count, (unsigned long long)s3.allocation_count);
    CHECK(s3.scratch_bytes == s2.scratch_bytes, "scratch changed size");
    CHECK(s3.scratch_peak_bytes <= s3.scratch_bytes, "peak %zu above reserved %zu", s3.scratch_peak_bytes,
          s3.scratch_bytes);

    /* A larger forward grows scratch once; then nothing again. */
    forward(la, 128, 64, &r);
    forward(lb, 96, 48, &r);
    forward(la, 128, 64, &r);
    forward(lb, 96, 48, &r);
    const moe_arena_stats s4 = stats_of(ctx);
    forward(la, 128, 64, &r);
    forward(lb, 50, 48, &r);
    forward(la, 7, 64, &r);
    const moe_arena_stats s5 = stats_of(ctx);
    CHECK(s5.allocation_count == s4.allocation_count, "steady state allocated (%llu -> %llu)",
          (unsigned long long)s4.allocation_count, (unsigned long long)s5.allocation_count);

    /* Two layers share one scratch region: its size is the larger need, not the sum. */
    const size_t need_a = scratch_alone(kind, &a, 128, &r), need_b = scratch_alone(kind, &b, 96, &r);
    const size_t larger = need_a > need_b ? need_a : need_b;
    CHECK(s5.scratch_bytes == larger, "shared scratch %zu; layers alone need %zu and %zu", s5.scratch_bytes,
          need_a, need_b);
    CHECK(s5.scratch_bytes < need_a + need_b, "scratch is not shared");

    /* Buffers are accounted apart; destroying releases. */
    moe_buffer *buf = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, 1000, &buf), MOE_OK);
    CHECK(stats_of(ctx).buffer_bytes == 4000, "buffer_bytes %zu", stats_of(ctx).buffer_bytes);
    moe_buffer_destroy(buf);
    CHECK(stats_of(ctx).buffer_bytes == 0, "buffer not released");
    moe_layer_destroy(la);
    moe_layer_destroy(lb);
    CHECK(stats_of(ctx).weights_bytes == 0, "weights not released: %zu", stats_of(ctx).weights_bytes);
    CHECK_STATUS(moe_context_get_arena_stats(NULL, &s0), MOE_ERROR_NULL_POINTER);

    h_layer_free(&a);
    h_layer_free(&b);
    moe_context_destroy(ctx);
    return h_finish("test_arena");
}
