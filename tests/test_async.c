/*
 * test_async.c — asynchronous forwards on the backend named in argv[1]: a chain of layers
 * through moe_buffers with one wait at the end gives, bit for bit, what the same forwards give
 * one at a time (and the reference, to its tolerance); chains longer than a backend's queue of
 * submissions; a forward whose scratch must grow while others are in flight; a synchronous
 * forward after asynchronous ones. And misuse, each a clear status and never a crash (ASan
 * checks the "never"): reading or writing a buffer in flight (MOE_ERROR_BUSY, host memory
 * untouched), destroying a layer or a buffer in flight, destroying the context before its
 * layers and buffers.
 */
#include "chain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N_LAYERS H_CHAIN_LAYERS
#define D_MODEL  H_CHAIN_D_MODEL
#define MAX_T    H_CHAIN_MAX_T
typedef h_chain chain;

/* n forwards through the layers in turn, ping-ponging between buffers a and b (x starts in
 * a), submitted asynchronously and waited for once; `got` receives the last output. While they
 * are in flight, both buffers are busy and an unrelated one is not. */
static void run_async(const chain *c, moe_context *ctx, int64_t T, int n, moe_buffer *a, moe_buffer *b,
                      moe_buffer *other, const float *x, float *got)
{
    const size_t TD = (size_t)T * D_MODEL;
    CHECK_STATUS(moe_buffer_write(a, 0, (int64_t)TD, x), MOE_OK);
    moe_buffer *in = a, *out = b;
    for (int i = 0; i < n; i++) {
        CHECK_STATUS(moe_layer_forward_async(c->layer[i % N_LAYERS], T, in, out), MOE_OK);
        moe_buffer *t = in;
        in = out;
        out = t;
    }
    /* Busy: the final output, and the first input (a later forward writes it again when n > 1). */
    h_guarded g = h_guarded_alloc(TD);
    CHECK_STATUS(moe_buffer_read(in, 0, (int64_t)TD, g.data), MOE_ERROR_BUSY);
    CHECK(strstr(moe_last_error(), "in flight") != NULL, "busy read: message '%s'", moe_last_error());
    CHECK(h_untouched(&g), "a refused read wrote the host memory");
    CHECK_STATUS(moe_buffer_write(a, 0, (int64_t)TD, x), MOE_ERROR_BUSY);
    CHECK_STATUS(moe_buffer_read(other, 0, 1, g.data), MOE_OK); /* not in this chain */
    h_guarded_free(&g);
    CHECK_STATUS(moe_context_wait(ctx), MOE_OK);
    CHECK_STATUS(moe_context_wait(ctx), MOE_OK); /* nothing left: still fine */
    CHECK_STATUS(moe_buffer_read(in, 0, (int64_t)TD, got), MOE_OK);
}

/* The same n forwards one at a time from host memory. */
static void run_sync(const chain *c, int64_t T, int n, const float *x, float *got)
{
    const size_t TD = (size_t)T * D_MODEL;
    float *cur = malloc(TD * sizeof(float));
    memcpy(cur, x, TD * sizeof(float));
    for (int i = 0; i < n; i++) {
        CHECK_STATUS(moe_layer_forward(c->layer[i % N_LAYERS], T, cur, got, NULL), MOE_OK);
        memcpy(cur, got, TD * sizeof(float));
    }
    free(cur);
}

static void chains(moe_context *ctx, const chain *c, h_rng *r)
{
    moe_buffer *a = NULL, *b = NULL, *other = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, MAX_T * D_MODEL, &a), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, MAX_T * D_MODEL, &b), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, 4, &other), MOE_OK);
    /* 4 layers; 21 forwards (past Vulkan's 8 submissions in flight, around its ring twice and
     * more); decode (1 token) and a few tokens. */
    const struct {
        int64_t T;
        int n;
    } runs[] = {{5, N_LAYERS}, {1, N_LAYERS}, {MAX_T, 21}, {1, 21}};
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        const int64_t T = runs[k].T;
        const int n = runs[k].n;
        const size_t TD = (size_t)T * D_MODEL;
        float *x = malloc(TD * sizeof(float)), *ref = malloc((size_t)N_LAYERS * TD * sizeof(float));
        float *got = malloc(TD * sizeof(float)), *want = malloc(TD * sizeof(float));
        /* The reference, and inputs without near-ties, for the 4-layer chains; the long ones are
         * held to the synchronous forwards only (21 layers of routing decisions without a
         * near-tie anywhere are rarely drawn). */
        const bool with_ref = n <= N_LAYERS;
        if (with_ref)
            h_chain_input(c, T, n, x, ref, r);
        else
            h_fill_input(&c->host[0], T, x, r);
        run_async(c, ctx, T, n, a, b, other, x, got);
        run_sync(c, T, n, x, want);
        CHECK(memcmp(got, want, TD * sizeof(float)) == 0,
              "T=%lld, %d forwards: the asynchronous chain differs from the same forwards one at a time "
              "(relative L2 %.3g)",
              (long long)T, n, h_rel_l2(got, want, TD));
        const double err = with_ref ? h_rel_l2(got, ref + (size_t)(n - 1) * TD, TD) : 0.0;
        CHECK(err <= 1e-4, "T=%lld, %d forwards: relative L2 error %.3g against the reference chain",
              (long long)T, n, err);
        free(x), free(ref), free(got), free(want);
    }
    moe_buffer_destroy(a);
    moe_buffer_destroy(b);
    moe_buffer_destroy(other);
}

/* Sync results of layer i for T tokens of x, on the main context. */
static void sync_one(const chain *c, int i, int64_t T, const float *x, float *y)
{
    CHECK_STATUS(moe_layer_forward(c->layer[i], T, x, y, NULL), MOE_OK);
}

static moe_buffer *buffer_with(moe_context *ctx, int64_t T, const float *x)
{
    moe_buffer *b = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, MAX_T * D_MODEL, &b), MOE_OK);
    if (x) CHECK_STATUS(moe_buffer_write(b, 0, T * D_MODEL, x), MOE_OK);
    return b;
}

static void expect_output(const moe_buffer *b, int64_t T, const float *want, const char *what)
{
    float got[MAX_T * D_MODEL];
    CHECK_STATUS(moe_buffer_read(b, 0, T * D_MODEL, got), MOE_OK);
    CHECK(memcmp(got, want, (size_t)T * D_MODEL * sizeof(float)) == 0,
          "%s: differs from the synchronous forward (relative L2 %.3g)", what,
          h_rel_l2(got, want, (size_t)T * D_MODEL));
}

/* On a fresh context (its scratch sized by its first forward): a 1-token forward in flight, then a
 * MAX_T-token one that must grow the scratch (the first completes before the region is
 * replaced), then a synchronous forward reading the second's output while it is in flight (it
 * runs after it and completes everything). */
static void grow_and_mix(moe_backend_kind kind, const chain *c, h_rng *r)
{
    moe_context *ctx = h_context(kind, 0);
    moe_layer *l0 = NULL, *l2 = NULL, *l3 = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &c->host[0].desc, &c->host[0].w, &l0), MOE_OK);
    CHECK_STATUS(moe_layer_create(ctx, &c->host[2].desc, &c->host[2].w, &l2), MOE_OK);
    CHECK_STATUS(moe_layer_create(ctx, &c->host[3].desc, &c->host[3].w, &l3), MOE_OK);
    float x1[D_MODEL], x9[MAX_T * D_MODEL], want1[D_MODEL], mid[MAX_T * D_MODEL], want9[MAX_T * D_MODEL];
    h_fill_input(&c->host[0], 1, x1, r);
    h_fill_input(&c->host[2], MAX_T, x9, r);
    sync_one(c, 0, 1, x1, want1);
    sync_one(c, 2, MAX_T, x9, mid);
    sync_one(c, 3, MAX_T, mid, want9);
    moe_buffer *b0 = buffer_with(ctx, 1, x1), *b1 = buffer_with(ctx, 0, NULL);
    moe_buffer *b2 = buffer_with(ctx, MAX_T, x9), *b3 = buffer_with(ctx, 0, NULL),
               *b4 = buffer_with(ctx, 0, NULL);
    moe_arena_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
    CHECK_STATUS(moe_layer_forward_async(l0, 1, b0, b1), MOE_OK);
    CHECK_STATUS(moe_context_get_arena_stats(ctx, &before), MOE_OK);
    CHECK_STATUS(moe_layer_forward_async(l2, MAX_T, b2, b3), MOE_OK);
    CHECK_STATUS(moe_context_get_arena_stats(ctx, &after), MOE_OK);
    CHECK(after.scratch_reservations > before.scratch_reservations,
          "the %d-token forward did not grow the scratch (%llu reservations, then %llu): the case is not "
          "tested",
          MAX_T, (unsigned long long)before.scratch_reservations,
          (unsigned long long)after.scratch_reservations);
    CHECK_STATUS(moe_layer_forward_buffers(l3, MAX_T, b3, b4, NULL), MOE_OK);
    expect_output(b1, 1, want1, "the 1-token forward in flight when the scratch grew");
    expect_output(b4, MAX_T, want9, "a synchronous forward on an asynchronous one's output");
    moe_buffer *all[] = {b0, b1, b2, b3, b4};
    for (size_t i = 0; i < 5; i++) moe_buffer_destroy(all[i]);
    moe_layer_destroy(l0);
    moe_layer_destroy(l2);
    moe_layer_destroy(l3);
    moe_context_destroy(ctx);
}

static void expect_message(const char *what, const char *part)
{
    CHECK(strstr(moe_last_error(), part) != NULL, "%s: the message '%s' does not say '%s'", what,
          moe_last_error(), part);
}

/* Misuse: each gives a status and a message, never a crash or a use after free. */
static void misuse(moe_backend_kind kind, moe_context *main_ctx, const chain *c, h_rng *r)
{
    float x[3 * D_MODEL], want[3 * D_MODEL];
    h_fill_input(&c->host[0], 3, x, r);
    sync_one(c, 0, 3, x, want);
    moe_context *ctx = h_context(kind, 0);
    moe_layer *l = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &c->host[0].desc, &c->host[0].w, &l), MOE_OK);
    moe_buffer *bx = buffer_with(ctx, 3, x), *by = buffer_with(ctx, 0, NULL);

    /* Bad arguments: refused before anything is submitted (the buffers stay free to read). */
    CHECK_STATUS(moe_layer_forward_async(NULL, 3, bx, by), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward_async(l, 3, NULL, by), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, NULL), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, bx), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_layer_forward_async(l, MAX_T + 1, bx, by), MOE_ERROR_TOKEN_BUDGET);
    CHECK_STATUS(moe_layer_forward_async(l, 0, bx, by), MOE_ERROR_INVALID_SIZE);
    moe_buffer *foreign = buffer_with(main_ctx, 0, NULL);
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, foreign), MOE_ERROR_INVALID_ARGUMENT);
    moe_buffer_destroy(foreign);
    CHECK_STATUS(moe_context_wait(NULL), MOE_ERROR_NULL_POINTER);
    CHECK(strcmp(moe_status_string(MOE_ERROR_BUSY), "MOE_ERROR_BUSY") == 0, "MOE_ERROR_BUSY's name");
    float probe[D_MODEL];
    CHECK_STATUS(moe_buffer_read(by, 0, D_MODEL, probe), MOE_OK);

    /* A layer destroyed in flight: waited for, then freed; its output is complete. */
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, by), MOE_OK);
    moe_layer_destroy(l);
    expect_message("moe_layer_destroy in flight", "in flight");
    CHECK(strstr(moe_context_error(ctx), "moe_layer_destroy") != NULL, "context message '%s'",
          moe_context_error(ctx));
    expect_output(by, 3, want, "the forward of a layer destroyed in flight");

    /* A buffer destroyed in flight. */
    CHECK_STATUS(moe_layer_create(ctx, &c->host[0].desc, &c->host[0].w, &l), MOE_OK);
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, by), MOE_OK);
    moe_buffer_destroy(by);
    expect_message("moe_buffer_destroy in flight", "in flight");
    by = buffer_with(ctx, 0, NULL);

    /* The context destroyed before its layer and buffers, with a forward in flight: it waits,
     * says what is still alive, refuses new work, and goes with the last of them. */
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, by), MOE_OK);
    moe_context_destroy(ctx);
    expect_message("moe_context_destroy with live objects", "still alive");
    moe_context_destroy(ctx); /* again: nothing more happens */
    CHECK_STATUS(moe_layer_forward(l, 3, x, probe, NULL), MOE_ERROR_INVALID_ARGUMENT);
    expect_message("a forward on a destroyed context's layer", "destroyed");
    CHECK_STATUS(moe_layer_forward_async(l, 3, bx, by), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_buffer_read(by, 0, D_MODEL, probe), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_buffer_write(bx, 0, D_MODEL, x), MOE_ERROR_INVALID_ARGUMENT);
    moe_buffer *late = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, 4, &late), MOE_ERROR_INVALID_ARGUMENT);
    moe_layer *late_layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &c->host[0].desc, &c->host[0].w, &late_layer),
                 MOE_ERROR_INVALID_ARGUMENT);
    CHECK(late == NULL && late_layer == NULL, "a destroyed context made an object");
    moe_buffer_destroy(bx);
    moe_layer_destroy(l);
    moe_buffer_destroy(by); /* the last: the context is freed here (LeakSanitizer checks it is) */
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_async");
    chain c;
    h_chain_init(&c, ctx, &r);
    chains(ctx, &c, &r);
    grow_and_mix(kind, &c, &r);
    misuse(kind, ctx, &c, &r);
    h_chain_free(&c);
    moe_context_destroy(ctx);
    return h_finish("test_async");
}
