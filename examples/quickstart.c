/* quickstart.c — one forward of a small Mixtral-like MoE layer with moe.
 * Build: cc quickstart.c $(pkg-config --cflags --libs moe) -lm */
#include <moe.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { D_MODEL = 64, D_FF = 128, N_EXPERTS = 8, TOP_K = 2, N_TOKENS = 4 };

/* Deterministic pseudo-random values in [-scale, scale). */
static void fill(float *v, size_t n, unsigned seed, float scale)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = scale * ((float)(seed >> 8) / 8388608.0f - 1.0f);
    }
}

#define CHECK(call)                                                                                          \
    do {                                                                                                     \
        moe_status st_ = (call);                                                                             \
        if (st_ != MOE_OK) {                                                                                 \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, moe_status_string(st_), moe_last_error());        \
            goto done;                                                                                       \
        }                                                                                                    \
    } while (0)

int main(void)
{
    int rc = 1;
    moe_context *ctx = NULL;
    moe_layer *layer = NULL;
    const size_t n_expert_w = (size_t)N_EXPERTS * D_FF * D_MODEL;
    float *router = malloc(sizeof(float) * N_EXPERTS * D_MODEL);
    float *gate = malloc(sizeof(float) * n_expert_w);
    float *up = malloc(sizeof(float) * n_expert_w);
    float *down = malloc(sizeof(float) * n_expert_w);
    float x[N_TOKENS * D_MODEL], y[N_TOKENS * D_MODEL], y_ref[N_TOKENS * D_MODEL];
    int32_t ids[N_TOKENS * TOP_K];
    float weights[N_TOKENS * TOP_K];
    if (!router || !gate || !up || !down) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }

    /* 1. A context: AUTO picks Vulkan, then OpenCL, then the CPU. */
    moe_context_desc cdesc = {.struct_size = sizeof cdesc, .backend = MOE_BACKEND_AUTO};
    CHECK(moe_context_create(&cdesc, &ctx));
    printf("moe %s, backend: %s\n", moe_version(), moe_backend_name(moe_context_backend(ctx)));

    /* 2. A layer: softmax router, top-2 of 8 experts, renormalised weights, SwiGLU. */
    moe_layer_desc desc = {
        .struct_size = sizeof desc,
        .d_model = D_MODEL,
        .d_ff = D_FF,
        .n_experts = N_EXPERTS,
        .top_k = TOP_K,
        .max_tokens = N_TOKENS,
        .score_func = MOE_SCORE_SOFTMAX,
        .renormalize = 1,
        .activation = MOE_ACTIVATION_SWIGLU,
    };
    fill(router, (size_t)N_EXPERTS * D_MODEL, 1, 0.5f);
    fill(gate, n_expert_w, 2, 0.125f);
    fill(up, n_expert_w, 3, 0.125f);
    fill(down, n_expert_w, 4, 0.0884f);
    fill(x, sizeof x / sizeof x[0], 5, 1.0f);
    moe_layer_weights w = {.struct_size = sizeof w, .router = router, .gate = gate, .up = up, .down = down};
    CHECK(moe_layer_create(ctx, &desc, &w, &layer));

    /* 3. One forward of N_TOKENS tokens, asking for the routing decisions too. */
    moe_forward_stats stats = {.struct_size = sizeof stats, .topk_ids = ids, .topk_weights = weights};
    CHECK(moe_layer_forward(layer, N_TOKENS, x, y, &stats));
    for (int t = 0; t < N_TOKENS; t++)
        printf("token %d -> experts %d (%.3f), %d (%.3f)\n", t, ids[t * TOP_K], weights[t * TOP_K],
               ids[t * TOP_K + 1], weights[t * TOP_K + 1]);

    /* 4. Compare with the scalar reference (double accumulation, on the host). */
    CHECK(moe_reference_forward(&desc, &w, N_TOKENS, x, y_ref, NULL));
    double err = 0.0, norm = 0.0;
    for (int i = 0; i < N_TOKENS * D_MODEL; i++) {
        err += ((double)y[i] - y_ref[i]) * ((double)y[i] - y_ref[i]);
        norm += (double)y_ref[i] * y_ref[i];
    }
    double rel = sqrt(err / (norm > 0.0 ? norm : 1.0));
    printf("relative L2 error vs reference: %.3g\n", rel);
    if (!(rel < 1e-5)) {
        fprintf(stderr, "error too large\n");
        goto done;
    }
    rc = 0;

done:
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    free(router);
    free(gate);
    free(up);
    free(down);
    return rc;
}
