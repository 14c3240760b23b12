/*
 * chain.h — four layers of one d_model, as different as the API allows (Mixtral-, Qwen2-MoE-,
 * DeepSeek-V3- and Switch-like), whose outputs can feed each other: the tests of chains of
 * forwards (test_async.c, test_embed_*.c).
 */
#ifndef MOE_TEST_CHAIN_H
#define MOE_TEST_CHAIN_H

#include "harness.h"

#define H_CHAIN_LAYERS  4
#define H_CHAIN_D_MODEL 40
#define H_CHAIN_MAX_T   9

typedef struct h_chain {
    h_layer host[H_CHAIN_LAYERS];
    moe_layer *layer[H_CHAIN_LAYERS]; /* on the context given to h_chain_init */
} h_chain;

/* Random layers (their down projections scaled so each gives back its input's size), created
 * on ctx. */
void h_chain_init(h_chain *c, moe_context *ctx, h_rng *r);
void h_chain_free(h_chain *c);
/* Input x for T tokens whose routing has no near-tie at any of the first n (<= H_CHAIN_LAYERS)
 * layers of the reference chain; ref[i] gets the reference output of layer i, [n][T][d]. */
void h_chain_input(const h_chain *c, int64_t T, int n, float *x, float *ref, h_rng *r);

#endif
