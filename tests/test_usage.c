/*
 * test_usage.c — expert usage (moe_layer_track_usage and the calls around it) on one backend:
 * the counts of synchronous forwards in total and over the window against the reference's own
 * per-forward counts, asynchronous forwards told apart, failed forwards not counted, restart and
 * stop, the order it gives a placement, and the JSON file saved and loaded, with every misuse.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "faults.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_E 64

/* The reference's counts of one forward of T tokens of x. */
static void reference_counts(const h_layer *hl, int64_t T, const float *x, int32_t *counts)
{
    float *y = malloc(sizeof(float) * (size_t)(T * hl->desc.d_model));
    moe_forward_stats s = {.struct_size = sizeof s, .expert_counts = counts};
    CHECK_STATUS(moe_reference_forward(&hl->desc, &hl->w, T, x, y, &s), MOE_OK);
    free(y);
}

static void expect_usage(const moe_layer *layer, const char *what, int64_t window, int64_t forwards,
                         int64_t tokens, int64_t uncounted, const int64_t *total, const int64_t *in_window,
                         int64_t E)
{
    int64_t got_total[MAX_E], got_window[MAX_E];
    moe_expert_usage u = {.struct_size = sizeof u, .routed_total = got_total, .routed_window = got_window};
    CHECK_STATUS(moe_layer_get_usage(layer, &u), MOE_OK);
    const int64_t in_win = forwards < window ? forwards : window;
    CHECK(u.window == window && u.forwards == forwards && u.tokens == tokens &&
              u.uncounted_forwards == uncounted && u.window_forwards == in_win,
          "[%s] window %lld forwards %lld tokens %lld uncounted %lld in window %lld; expected %lld %lld %lld "
          "%lld %lld",
          what, (long long)u.window, (long long)u.forwards, (long long)u.tokens,
          (long long)u.uncounted_forwards, (long long)u.window_forwards, (long long)window,
          (long long)forwards, (long long)tokens, (long long)uncounted, (long long)in_win);
    for (int64_t e = 0; e < E; e++) {
        CHECK(got_total[e] == total[e], "[%s] expert %lld: %lld rows in total, expected %lld", what,
              (long long)e, (long long)got_total[e], (long long)total[e]);
        CHECK(got_window[e] == in_window[e], "[%s] expert %lld: %lld rows in the window, expected %lld", what,
              (long long)e, (long long)got_window[e], (long long)in_window[e]);
    }
}

/* Forwards of 5 token counts; the window holds the last 3. */
static void counting(moe_context *ctx, moe_layer *layer, const h_layer *hl, h_rng *r, const char *what)
{
    const int64_t E = hl->desc.n_experts, D = hl->desc.d_model;
    const int64_t Ts[5] = {7, 1, 19, 3, 11};
    int32_t counts[5][MAX_E];
    int64_t total[MAX_E] = {0}, in_window[MAX_E] = {0}, tokens = 0;
    CHECK_STATUS(moe_layer_track_usage(layer, 3), MOE_OK);
    float *x = malloc(sizeof(float) * (size_t)(19 * D)), *y = malloc(sizeof(float) * (size_t)(19 * D));
    for (int f = 0; f < 5; f++) {
        h_fill_input(hl, Ts[f], x, r);
        reference_counts(hl, Ts[f], x, counts[f]);
        if (f % 2 == 0) {
            CHECK_STATUS(moe_layer_forward(layer, Ts[f], x, y, NULL), MOE_OK);
        } else { /* device buffers count the same */
            moe_buffer *xb = NULL, *yb = NULL;
            CHECK_STATUS(moe_buffer_create(ctx, Ts[f] * D, &xb), MOE_OK);
            CHECK_STATUS(moe_buffer_create(ctx, Ts[f] * D, &yb), MOE_OK);
            CHECK_STATUS(moe_buffer_write(xb, 0, Ts[f] * D, x), MOE_OK);
            CHECK_STATUS(moe_layer_forward_buffers(layer, Ts[f], xb, yb, NULL), MOE_OK);
            moe_buffer_destroy(xb);
            moe_buffer_destroy(yb);
        }
        tokens += Ts[f];
        for (int64_t e = 0; e < E; e++) total[e] += counts[f][e];
    }
    for (int f = 2; f < 5; f++)
        for (int64_t e = 0; e < E; e++) in_window[e] += counts[f][e];
    expect_usage(layer, what, 3, 5, tokens, 0, total, in_window, E);

    /* A failed forward (over max_tokens) counts nothing. */
    CHECK_STATUS(moe_layer_forward(layer, hl->desc.max_tokens + 1, x, y, NULL), MOE_ERROR_TOKEN_BUDGET);
    expect_usage(layer, "after a failed forward", 3, 5, tokens, 0, total, in_window, E);

    /* Restarting drops the counts; stopping reports nothing. */
    CHECK_STATUS(moe_layer_track_usage(layer, 2), MOE_OK);
    const int64_t zeros[MAX_E] = {0};
    expect_usage(layer, "restarted", 2, 0, 0, 0, zeros, zeros, E);
    CHECK_STATUS(moe_layer_track_usage(layer, 0), MOE_OK);
    expect_usage(layer, "stopped", 0, 0, 0, 0, zeros, zeros, E);
    CHECK_STATUS(moe_layer_forward(layer, 7, x, y, NULL), MOE_OK);
    expect_usage(layer, "stopped, then a forward", 0, 0, 0, 0, zeros, zeros, E);
    free(x);
    free(y);
}

/* Asynchronous forwards are told apart, not counted; a later synchronous one is. */
static void asynchronous(moe_context *ctx, moe_layer *layer, const h_layer *hl, h_rng *r)
{
    const int64_t E = hl->desc.n_experts, D = hl->desc.d_model, T = 5;
    float x[5 * 48];
    int32_t counts[MAX_E];
    int64_t total[MAX_E] = {0};
    h_fill_input(hl, T, x, r);
    reference_counts(hl, T, x, counts);
    CHECK_STATUS(moe_layer_track_usage(layer, 4), MOE_OK);
    moe_buffer *xb = NULL, *yb = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, T * D, &xb), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, T * D, &yb), MOE_OK);
    CHECK_STATUS(moe_buffer_write(xb, 0, T * D, x), MOE_OK);
    CHECK_STATUS(moe_layer_forward_async(layer, T, xb, yb), MOE_OK);
    CHECK_STATUS(moe_layer_forward_async(layer, T, xb, yb), MOE_OK);
    CHECK_STATUS(moe_context_wait(ctx), MOE_OK);
    expect_usage(layer, "asynchronous", 4, 0, 0, 2, total, total, E);
    CHECK_STATUS(moe_layer_forward_buffers(layer, T, xb, yb, NULL), MOE_OK);
    for (int64_t e = 0; e < E; e++) total[e] = counts[e];
    expect_usage(layer, "asynchronous, then a synchronous forward", 4, 1, T, 2, total, total, E);
    moe_buffer_destroy(xb);
    moe_buffer_destroy(yb);
}

/* A forward that fails on the device (a lost device, injected) counts nothing. */
static void lost_device(moe_backend_kind kind, const h_layer *hl, h_rng *r)
{
    const char *var = kind == MOE_BACKEND_VULKAN ? "MOE_VK_INJECT" : "MOE_CL_INJECT";
    moe_context *lost = h_context_injected(kind, var, "lost");
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(lost, &hl->desc, &hl->w, &layer), MOE_OK);
    if (layer) {
        float x[5 * 48], y[5 * 48];
        h_fill_input(hl, 5, x, r);
        CHECK_STATUS(moe_layer_track_usage(layer, 4), MOE_OK);
        CHECK_STATUS(moe_layer_forward(layer, 5, x, y, NULL), MOE_ERROR_DEVICE_LOST);
        const int64_t zeros[MAX_E] = {0};
        expect_usage(layer, "a lost device", 4, 0, 0, 0, zeros, zeros, hl->desc.n_experts);
    }
    moe_layer_destroy(layer);
    moe_context_destroy(lost);
}

/* The usage's order fills a budget: a budget of three experts' bytes on this context (measured:
 * the same three placed explicitly) takes the three most used, the rest stay on the CPU. */
static void order_fills_budget(moe_context *ctx, const h_layer *hl, h_rng *r)
{
    const int64_t E = hl->desc.n_experts;
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
    if (!layer) return;
    CHECK_STATUS(moe_layer_track_usage(layer, 16), MOE_OK);
    float x[9 * 48], y[9 * 48];
    for (int f = 0; f < 3; f++) {
        h_fill_input(hl, 9, x, r);
        CHECK_STATUS(moe_layer_forward(layer, 9, x, y, NULL), MOE_OK);
    }
    int64_t routed[MAX_E];
    int32_t hot[MAX_E], want[MAX_E], got[MAX_E];
    moe_expert_usage u = {.struct_size = sizeof u, .routed_total = routed};
    CHECK_STATUS(moe_layer_get_usage(layer, &u), MOE_OK);
    moe_layer_destroy(layer);
    layer = NULL;
    CHECK_STATUS(moe_usage_expert_order(routed, E, hot), MOE_OK);
    for (int64_t e = 0; e < E; e++) want[e] = 1;
    for (int i = 0; i < 3; i++) want[hot[i]] = 0;
    moe_context *cpu = h_context(MOE_BACKEND_CPU, 0);
    moe_context *const two[2] = {ctx, cpu};
    const size_t before = h_weights_bytes(ctx);
    const moe_placement three = {
        .struct_size = sizeof three, .n_contexts = 2, .contexts = two, .home = 1, .expert_context = want};
    CHECK_STATUS(moe_layer_create_placed(&three, &hl->desc, &hl->w, &layer), MOE_OK);
    const size_t budget = h_weights_bytes(ctx) - before;
    moe_layer_destroy(layer);
    layer = NULL;
    const uint64_t budgets[2] = {budget, UINT64_MAX};
    const moe_placement by_usage = {.struct_size = sizeof by_usage,
                                    .n_contexts = 2,
                                    .contexts = two,
                                    .home = 1,
                                    .budget_bytes = budgets,
                                    .expert_order = hot};
    CHECK_STATUS(moe_layer_create_placed(&by_usage, &hl->desc, &hl->w, &layer), MOE_OK);
    if (layer) {
        CHECK_STATUS(moe_layer_get_placement(layer, got), MOE_OK);
        CHECK(!memcmp(got, want, sizeof(int32_t) * (size_t)E),
              "a budget of three experts does not hold the three most used (%d, %d, %d)", hot[0], hot[1],
              hot[2]);
    }
    moe_layer_destroy(layer);
    moe_context_destroy(cpu);
}

static void misuse(moe_layer *layer)
{
    CHECK_STATUS(moe_layer_track_usage(NULL, 4), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_track_usage(layer, -1), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_layer_track_usage(layer, 65537), MOE_ERROR_INVALID_SIZE);
    moe_expert_usage u = {.struct_size = sizeof u};
    CHECK_STATUS(moe_layer_get_usage(NULL, &u), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_get_usage(layer, NULL), MOE_ERROR_NULL_POINTER);
    u.struct_size = sizeof u + 8;
    CHECK_STATUS(moe_layer_get_usage(layer, &u), MOE_ERROR_INVALID_ARGUMENT);
    /* Nothing but the counts' pointers read: a struct without arrays gets the figures. */
    CHECK_STATUS(moe_layer_track_usage(layer, 4), MOE_OK);
    u = (moe_expert_usage){.struct_size = sizeof u, .window = 99};
    CHECK_STATUS(moe_layer_get_usage(layer, &u), MOE_OK);
    CHECK(u.window == 4 && u.forwards == 0, "window %lld forwards %lld", (long long)u.window,
          (long long)u.forwards);
}

static void order(void)
{
    const int64_t routed[7] = {5, 9, 0, 9, 1, 5, 12};
    const int32_t want[7] = {6, 1, 3, 0, 5, 4, 2}; /* most first, ties to the lower index */
    int32_t got[7];
    CHECK_STATUS(moe_usage_expert_order(routed, 7, got), MOE_OK);
    CHECK(!memcmp(got, want, sizeof want), "order %d %d %d %d %d %d %d", got[0], got[1], got[2], got[3],
          got[4], got[5], got[6]);
    CHECK_STATUS(moe_usage_expert_order(NULL, 7, got), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_usage_expert_order(routed, 0, got), MOE_ERROR_INVALID_SIZE);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Two tracking layers saved as layers 3 and 7 of a model, loaded back, and every bad file. */
static void files(moe_context *ctx, const h_layer *hl, h_rng *r)
{
    const int64_t E = hl->desc.n_experts;
    moe_layer *layers[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layers[i]), MOE_OK);
    if (!layers[0] || !layers[1]) return;
    float x[9 * 48], y[9 * 48];
    for (int i = 0; i < 2; i++) {
        CHECK_STATUS(moe_layer_track_usage(layers[i], 8), MOE_OK);
        for (int f = 0; f <= i; f++) {
            h_fill_input(hl, 9, x, r);
            CHECK_STATUS(moe_layer_forward(layers[i], 9, x, y, NULL), MOE_OK);
        }
    }
    char dir[768];
    CHECK(h_make_temp_dir("moe-usage-", dir, sizeof dir) != NULL, "mkdtemp");
    char path[832], bad[832];
    snprintf(path, sizeof path, "%s/usage.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    const int64_t indices[2] = {3, 7};
    const moe_layer *const saved[2] = {layers[0], layers[1]};
    CHECK_STATUS(moe_usage_save(path, saved, indices, 2), MOE_OK);
    int64_t want[MAX_E], got[MAX_E];
    moe_expert_usage u = {.struct_size = sizeof u, .routed_total = want};
    CHECK_STATUS(moe_layer_get_usage(layers[1], &u), MOE_OK);
    CHECK_STATUS(moe_usage_load(path, 7, E, got), MOE_OK);
    CHECK(!memcmp(got, want, sizeof(int64_t) * (size_t)E), "layer 7's counts differ after a save and a load");
    int64_t sum = 0;
    for (int64_t e = 0; e < E; e++) sum += got[e];
    CHECK(sum == 2 * 9 * hl->desc.top_k, "layer 7 holds %lld rows, expected %lld", (long long)sum,
          (long long)(2 * 9 * hl->desc.top_k));

    /* Every refusal leaves the caller's array untouched. */
    for (int64_t e = 0; e < E; e++) got[e] = -5;
    CHECK_STATUS(moe_usage_load(path, 5, E, got), MOE_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(moe_last_error(), "no layer with index 5") != NULL, "message: %s", moe_last_error());
    CHECK_STATUS(moe_usage_load(path, 3, E + 1, got), MOE_ERROR_INVALID_ARGUMENT);
    snprintf(bad, sizeof bad, "%s/missing.json", dir);
    CHECK_STATUS(moe_usage_load(bad, 3, E, got), MOE_ERROR_IO);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    const char *malformed[] = {
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [",
        "{\"format\": \"other\", \"version\": 1, \"layers\": []}",
        "{\"format\": \"moe-usage\", \"version\": 2, \"layers\": []}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": [1, 2]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, -12]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1.5]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}, {\"index\": 3, \"n_experts\": 12, \"routed_total\": "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}]}",
        "[{\"format\": \"moe-usage\"}]",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": {\"index\": 3}}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [3]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"n_experts\": 12}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": -3}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 2.5}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"routed_total\": []}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1e300]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1e400]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 9000000000000001]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 12, "
        "\"routed_total\": "
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, \"12\"]}]}",
        "{\"format\": \"moe-usage\", \"version\": 1, \"layers\": [{\"index\": 3, \"n_experts\": 1e400, "
        "\"routed_total\": []}]}",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        write_text(bad, malformed[i]);
        const moe_status st = moe_usage_load(bad, 3, E, got);
        CHECK(st == MOE_ERROR_FORMAT, "malformed file %zu: %s (%s)", i, moe_status_string(st),
              moe_last_error());
    }
    for (int64_t e = 0; e < E; e++)
        CHECK(got[e] == -5, "a refused load wrote routed_total[%lld]", (long long)e);

    /* Saving: a layer that does not track, NULLs, an unwritable path; the old file stays whole. */
    CHECK_STATUS(moe_layer_track_usage(layers[0], 0), MOE_OK);
    CHECK_STATUS(moe_usage_save(path, saved, indices, 2), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_usage_save(NULL, saved, indices, 2), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_usage_save(path, saved, indices, 0), MOE_ERROR_INVALID_SIZE);
    const int64_t negative[2] = {3, -1}, twice[2] = {7, 7};
    CHECK_STATUS(moe_usage_save(path, saved, negative, 2), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_usage_save(path, saved, twice, 2), MOE_ERROR_INVALID_ARGUMENT);
    snprintf(bad, sizeof bad, "%s/no/such/dir/usage.json", dir);
    CHECK_STATUS(moe_usage_save(bad, saved + 1, indices + 1, 1), MOE_ERROR_IO);
    /* A directory where the file should go: the rename fails, and no temporary file stays. */
    snprintf(bad, sizeof bad, "%s/usage-dir.json", dir);
    CHECK(h_mkdir(bad) == 0, "mkdir %s", bad);
    CHECK_STATUS(moe_usage_save(bad, saved + 1, indices + 1, 1), MOE_ERROR_IO);
    int entries = 0, temps = 0;
    h_count_cache_files(dir, "usage", ".json", &entries, &temps);
    CHECK(temps == 0, "a failed save left %d temporary file(s) in %s", temps, dir);
    rmdir(bad);
    CHECK_STATUS(moe_usage_load(path, 7, E, got), MOE_OK);
    CHECK(!memcmp(got, want, sizeof(int64_t) * (size_t)E), "a refused save changed the file");

    /* The counts as a placement's order: the most used expert first. */
    int32_t ord[MAX_E];
    CHECK_STATUS(moe_usage_expert_order(got, E, ord), MOE_OK);
    for (int64_t i = 1; i < E; i++)
        CHECK(got[ord[i - 1]] >= got[ord[i]], "order: expert %d (%lld rows) before %d (%lld)", ord[i - 1],
              (long long)got[ord[i - 1]], ord[i], (long long)got[ord[i]]);
    unlink(path);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    unlink(bad);
    CHECK(rmdir(dir) == 0, "%s is not empty after the test", dir);
    moe_layer_destroy(layers[0]);
    moe_layer_destroy(layers[1]);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_usage");
    const moe_layer_desc d = {.struct_size = sizeof d,
                              .d_model = 48,
                              .d_ff = 40,
                              .n_experts = 12,
                              .top_k = 3,
                              .max_tokens = 20,
                              .renormalize = 1,
                              .expert_capacity = 4}; /* capacity drops rows: counts are before it */
    h_layer hl;
    h_layer_init(&hl, &d, &r, 1.0f);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
    if (layer) {
        counting(ctx, layer, &hl, &r, "one context");
        asynchronous(ctx, layer, &hl, &r);
        misuse(layer);
    }
    moe_layer_destroy(layer);
    if (kind != MOE_BACKEND_CPU) lost_device(kind, &hl, &r);
    order_fills_budget(ctx, &hl, &r);
    /* A layer placed on a CPU context and this one counts the same. */
    moe_context *cpu = h_context(MOE_BACKEND_CPU, 0);
    moe_context *const two[2] = {cpu, ctx};
    const int32_t alternate[12] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = alternate};
    layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl.desc, &hl.w, &layer), MOE_OK);
    if (layer) counting(cpu, layer, &hl, &r, "placed");
    moe_layer_destroy(layer);
    moe_context_destroy(cpu);
    order();
    files(ctx, &hl, &r);
    h_layer_free(&hl);
    moe_context_destroy(ctx);
    return h_finish("test_usage");
}
