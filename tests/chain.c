/*
 * chain.c — four layers of one d_model to chain (h_chain, chain.h): shared by the asynchronous
 * and the embedding tests.
 */
#include "chain.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Four layers of one d_model, as different as the API allows. */
static moe_layer_desc chain_desc(int i)
{
    moe_layer_desc d = {
        .struct_size = sizeof d, .d_model = H_CHAIN_D_MODEL, .max_tokens = H_CHAIN_MAX_T, .renormalize = 1};
    switch (i) {
    case 0: /* Mixtral-like */
        d.d_ff = 24, d.n_experts = 8, d.top_k = 2;
        break;
    case 1: /* Qwen2-MoE-like: a gated shared expert */
        d.d_ff = 16, d.n_experts = 6, d.top_k = 3, d.d_ff_shared = 20, d.shared_expert_gate = 1;
        d.renormalize = 0;
        break;
    case 2: /* DeepSeek-V3-like: sigmoid, groups, bias */
        d.d_ff = 12, d.n_experts = 16, d.top_k = 4, d.score_func = MOE_SCORE_SIGMOID, d.n_group = 4;
        d.topk_group = 2, d.has_selection_bias = 1, d.d_ff_shared = 12;
        break;
    default: /* Switch-like: one expert, GELU */
        d.d_ff = 36, d.n_experts = 4, d.top_k = 1, d.activation = MOE_ACTIVATION_GELU;
        break;
    }
    return d;
}

static double rms(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s / (double)n);
}

/* A chain without the residual connections and norms of a model: a layer's output is much
 * smaller than its input (SwiGLU is quadratic near 0), and a few layers on the activations
 * vanish. The output is linear in the down projections, so each layer's are scaled to give its
 * input's size back on a sample that went through the layers before it. */
void h_chain_init(h_chain *c, moe_context *ctx, h_rng *r)
{
    float x[H_CHAIN_MAX_T * H_CHAIN_D_MODEL], y[H_CHAIN_MAX_T * H_CHAIN_D_MODEL];
    for (int i = 0; i < H_CHAIN_LAYERS; i++) {
        const moe_layer_desc d = chain_desc(i);
        h_layer *l = &c->host[i];
        h_layer_init(l, &d, r, 1.0f);
        if (i == 0) h_fill_input(l, H_CHAIN_MAX_T, x, r);
        CHECK_STATUS(moe_reference_forward(&d, &l->w, H_CHAIN_MAX_T, x, y, NULL), MOE_OK);
        const float f = (float)(rms(x, sizeof x / sizeof x[0]) / rms(y, sizeof y / sizeof y[0]));
        for (int64_t j = 0; j < d.n_experts * d.d_model * d.d_ff; j++) l->down[j] *= f;
        for (int64_t j = 0; j < d.d_model * d.d_ff_shared; j++) l->shared_down[j] *= f;
        for (size_t j = 0; j < sizeof y / sizeof y[0]; j++) x[j] = y[j] * f;
        c->layer[i] = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &d, &l->w, &c->layer[i]), MOE_OK);
    }
}

void h_chain_free(h_chain *c)
{
    for (int i = 0; i < H_CHAIN_LAYERS; i++) {
        moe_layer_destroy(c->layer[i]);
        h_layer_free(&c->host[i]);
    }
}

/* Input for T tokens whose routing has no near-tie at any layer of the reference chain (the
 * later layers' inputs are the earlier ones' outputs). `ref` gets the reference outputs of the
 * n forwards that cycle through the layers. */
void h_chain_input(const h_chain *c, int64_t T, int n, float *x, float *ref, h_rng *r)
{
    const size_t TD = (size_t)T * H_CHAIN_D_MODEL;
    float *cur = malloc(TD * sizeof(float));
    for (int attempt = 0;; attempt++) {
        h_fill_input(&c->host[0], T, x, r);
        memcpy(cur, x, TD * sizeof(float));
        bool ok = true;
        for (int i = 0; i < n && ok; i++) {
            const h_layer *l = &c->host[i % H_CHAIN_LAYERS];
            for (int64_t t = 0; t < T && ok; t++) ok = h_route_margin(l, cur + t * H_CHAIN_D_MODEL) >= 1e-4;
            CHECK_STATUS(moe_reference_forward(&l->desc, &l->w, T, cur, ref + (size_t)i * TD, NULL), MOE_OK);
            memcpy(cur, ref + (size_t)i * TD, TD * sizeof(float));
        }
        if (ok) {
            if (getenv("MOE_TEST_VERBOSE")) printf("chain input: %d draws\n", attempt + 1);
            break;
        }
        if (attempt == 200) {
            fprintf(stderr, "FAIL: no chain input without a routing near-tie after 200 draws\n");
            exit(1);
        }
    }
    free(cur);
}
