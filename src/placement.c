/*
 * placement.c — a layer whose routed experts are placed on several contexts
 * (moe_layer_create_placed): a GPU and the CPU, or two GPUs.
 *
 * The layer the application holds is the home: an ordinary layer on the home context with the
 * router, the shared expert and the small vectors, and no routed experts. Each context that
 * holds experts has a part: an ordinary layer on that context with only its experts
 * (desc.n_experts = how many, top_k 1), made by the same moe_layer_create_from_tensors. A
 * forward runs the same backend steps as a one-context forward (moe_run_steps), in three
 * phases:
 *   1. home: route, plan, shared expert; the plan's top-k ids and slot rows come back to the host;
 *   2. each part: the host writes the part's own plan for the slots routed to its experts (their
 *      input rows gathered in expert order, padded to its backend's row tile) and the part runs
 *      both expert products; every part is submitted before any is waited for, GPUs first, so
 *      a GPU computes while the CPU computes its share in its own submit;
 *   3. home: each slot's output row goes to row t·k + j of the expert output region and the
 *      combine gathers them in slot order, then the stats.
 * So the combine and every row's arithmetic are the one-context forward's: only the place where a
 * row is computed changes. The host moves the routed rows (T·k·d_model floats each way), never a
 * weight.
 */
#include "alloc.h"
#include "internal.h"

#include "platform/thread.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct moe_part {
    moe_context *ctx;
    moe_layer *layer;  /* its experts only; NULL when the context holds none */
    int64_t n_experts; /* how many */
} moe_part;

struct moe_placed {
    int n_contexts, home;
    /* part[c] holds the experts that live on context c; with a cache, part[n_contexts] is the
     * cache's slots (on context cache_context), its expert i the one in slot i. */
    moe_part part[MOE_MAX_PLACEMENT_CONTEXTS + 1];
    int n_parts;             /* n_contexts, + 1 with a cache */
    int32_t *expert_context; /* [E]: the index in contexts of each expert's context */
    int32_t *expert_local;   /* [E]: its index among that context's experts (ascending) */
    /* Where each expert's rows run in the current forward: the part and the expert's index in
     * it (expert_context / expert_local, or the cache's part and slot). */
    int32_t *run_part, *run_local;
    /* The expert cache (NULL: none): its bookkeeping, the experts that live off its context, the
     * rows each expert gets in a forward, one expert's bytes in a slot, and the weights uploads
     * read (the layer's sources, kept as long as the layer: `owner` holds what they point into). */
    moe_xcache *cache;
    int cache_context;
    /* Device time each context spent on the forwards that succeeded (moe_layer_get_context_ms),
     * and the current forward's. */
    double context_ms[MOE_MAX_PLACEMENT_CONTEXTS];
    bool *cacheable;
    int64_t *rows;
    size_t slot_bytes;
    moe_layer_tensors src;
    moe_matrix_src *src_matrices;
    float *src_bias;
    unsigned char *src_copy; /* the cacheable experts' matrices in the upload's formats, or NULL */
    moe_source_owner owner;
};

#define CACHE_PART(P) ((P)->n_contexts)

/* ---- the placement --------------------------------------------------------------------------- */

moe_status moe_placement_check(const moe_placement *user, moe_placement *p, moe_context **home)
{
    if (!user) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "placement is NULL");
    *p = (moe_placement){.struct_size = sizeof *p};
    moe_status st = moe_abi_in(NULL, &moe_abi_placement, user, p);
    if (st != MOE_OK) return st;
    if (!p->contexts) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "placement.contexts is NULL");
    if (p->n_contexts < 1 || p->n_contexts > MOE_MAX_PLACEMENT_CONTEXTS)
        return moe_fail(NULL, MOE_ERROR_INVALID_SIZE, "placement.n_contexts is %d; it must be 1..%d",
                        p->n_contexts, MOE_MAX_PLACEMENT_CONTEXTS);
    if (p->home < 0 || p->home >= p->n_contexts)
        return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT, "placement.home is %d; there are %d contexts",
                        p->home, p->n_contexts);
    moe_context *h = p->contexts[p->home];
    if (!h)
        return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "placement.contexts[%d] (the home) is NULL", p->home);
    moe_clear_error(h);
    for (int c = 0; c < p->n_contexts; c++) {
        if (!p->contexts[c]) return moe_fail(h, MOE_ERROR_NULL_POINTER, "placement.contexts[%d] is NULL", c);
        for (int o = 0; o < c; o++)
            if (p->contexts[o] == p->contexts[c])
                return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                                "placement.contexts[%d] and [%d] are the same context; list each once", o, c);
        st = moe_context_check_live(p->contexts[c], "moe_layer_create_placed");
        if (st != MOE_OK)
            return moe_fail(h, st, "placement.contexts[%d]: %s", c, moe_context_error(p->contexts[c]));
    }
    *home = h;
    return MOE_OK;
}

/* The desc of a part holding n experts: only routed experts, its slots its tokens (one expert
 * each, no capacity: the home's plan applied it). Measuring a part (fill_budgets) and creating
 * it (create_part) use this one desc, so the bytes measured are the bytes allocated. */
moe_layer_desc moe_part_desc(const moe_layer_desc *d, int64_t n)
{
    moe_layer_desc sub = *d;
    sub.n_experts = n;
    sub.top_k = 1;
    sub.max_tokens = d->max_tokens * d->top_k;
    sub.d_ff_shared = 0;
    sub.shared_expert_gate = 0;
    sub.has_selection_bias = sub.router_has_bias = 0;
    sub.n_group = sub.topk_group = 1; /* normalised: one group of every expert */
    sub.expert_capacity = 0;
    return sub;
}

/* Only the routed experts' tensors of t, as a part holds them. */
static moe_layer_tensors experts_only(const moe_layer_tensors *t)
{
    return (moe_layer_tensors){.gate = t->gate,
                               .up = t->up,
                               .down = t->down,
                               .gate_bias = t->gate_bias,
                               .up_bias = t->up_bias,
                               .down_bias = t->down_bias};
}

/* A failure on a part's context, recorded on the home's too (the layer's context: where the
 * application looks), naming the context. */
static moe_status part_failed(moe_context *home, int c, moe_context *ctx, moe_status st)
{
    /* moe_last_error: the failure just recorded (a part's context may hold an older message). */
    if (st != MOE_OK && ctx != home) moe_fail(home, st, "placement context %d: %s", c, moe_last_error());
    return st;
}

/* A failure recorded on context c by another thread (the cache's worker): its message, moved to
 * the home's error and this thread's last error. */
static moe_status adopt_failure(moe_context *home, int c, moe_context *ctx, moe_status st)
{
    char msg[MOE_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", moe_context_error(ctx));
    return ctx == home ? moe_fail(home, st, "%s", msg)
                       : moe_fail(home, st, "placement context %d: %s", c, msg);
}

/* expert_order, when given, lists each expert once. */
static moe_status check_expert_order(moe_context *h, const moe_placement *p, int64_t E)
{
    if (!p->expert_order) return MOE_OK;
    moe_status st = MOE_OK;
    bool *seen = moe_calloc((size_t)(E ? E : 1), sizeof *seen);
    if (!seen) return moe_fail(h, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    for (int64_t i = 0; i < E && st == MOE_OK; i++) {
        const int32_t e = p->expert_order[i];
        if (e < 0 || e >= E || seen[e])
            st = moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                          "placement.expert_order[%lld] is %d: it must list each of the %lld experts once",
                          (long long)i, e, (long long)E);
        else
            seen[e] = true;
    }
    moe_free(seen);
    return st;
}

/* Each expert's context from the budgets: in expert_order, the first context (in the
 * placement's order) whose budget still holds its part with one more expert — measured as the
 * backend lays the part out (moe_layer_block_bytes), so a part never exceeds its budget. */
static moe_status fill_budgets(moe_context *h, const moe_placement *p, const moe_layer_desc *d,
                               const moe_layer_tensors *t, int32_t *expert_context)
{
    const int64_t E = d->n_experts;
    if (!p->budget_bytes)
        return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                        "placement: set expert_context (each expert's context) or budget_bytes (each "
                        "context's bytes for experts)");
    const moe_layer_tensors only = experts_only(t);
    int64_t count[MOE_MAX_PLACEMENT_CONTEXTS] = {0};
    for (int64_t i = 0; i < E; i++) {
        const int32_t e = p->expert_order ? p->expert_order[i] : (int32_t)i;
        int c = 0;
        for (; c < p->n_contexts; c++) {
            const moe_layer_desc sub = moe_part_desc(d, count[c] + 1);
            const size_t bytes = moe_layer_block_bytes(p->contexts[c]->be, &sub, &only);
            if (bytes != SIZE_MAX && (uint64_t)bytes <= p->budget_bytes[c]) break;
        }
        if (c == p->n_contexts)
            return moe_fail(h, MOE_ERROR_OUT_OF_DEVICE_MEMORY,
                            "placement: the budgets hold %lld of the %lld experts; expert %d (number %lld in "
                            "the fill order) fits no context's remaining budget",
                            (long long)i, (long long)E, e, (long long)i + 1);
        expert_context[e] = c;
        count[c]++;
    }
    return MOE_OK;
}

void moe_placed_free(struct moe_placed *P)
{
    if (!P) return;
    for (int c = 0; c < P->n_parts; c++) moe_layer_destroy(P->part[c].layer);
    moe_free(P->expert_context);
    moe_free(P->expert_local);
    moe_free(P->run_part);
    moe_free(P->run_local);
    moe_xcache_free(P->cache);
    moe_free(P->cacheable);
    moe_free(P->rows);
    moe_free(P->src_matrices);
    moe_free(P->src_bias);
    moe_free(P->src_copy);
    if (P->owner.release) P->owner.release(P->owner.owner);
    moe_free(P);
}

moe_dtype moe_placed_routed_act(const struct moe_placed *P)
{
    const moe_group_act *act = NULL;
    for (int c = 0; c < P->n_parts; c++)
        if (P->part[c].layer) {
            const moe_group_act *a = &P->part[c].layer->routed_act;
            if (act && (a->in != act->in || a->down != act->down)) return MOE_DTYPE_F32;
            act = a;
        }
    return act ? moe_group_act_reported(*act) : MOE_DTYPE_F32;
}

/* Part c: the experts experts[0..n) (its local order; n = its n_experts) gathered, their matrices
 * and biases, a desc of only routed experts. */
static moe_status create_part(struct moe_placed *P, int c, const int32_t *experts, const moe_layer_desc *d,
                              const moe_layer_tensors *t)
{
    moe_part *part = &P->part[c];
    const int64_t n = part->n_experts, F = d->d_ff, D = d->d_model;
    const bool gated = moe_activation_is_gated(d->activation), bias = d->expert_has_bias;
    moe_matrix_src *m = moe_calloc((size_t)n * 3, sizeof *m);
    float *b = bias ? moe_malloc(sizeof(float) * (size_t)n * (size_t)(2 * F + D)) : NULL;
    if (!m || (bias && !b)) {
        moe_free(m);
        moe_free(b);
        return moe_fail(part->ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    for (int64_t l = 0; l < n; l++) {
        const int64_t e = experts[l];
        if (gated) m[l] = t->gate[e];
        m[n + l] = t->up[e];
        m[2 * n + l] = t->down[e];
        if (bias) {
            if (gated) memcpy(b + l * F, t->gate_bias + e * F, sizeof(float) * (size_t)F);
            memcpy(b + (n + l) * F, t->up_bias + e * F, sizeof(float) * (size_t)F);
            memcpy(b + 2 * n * F + l * D, t->down_bias + e * D, sizeof(float) * (size_t)D);
        }
    }
    const moe_layer_tensors sub_t = {
        .gate = gated ? m : NULL,
        .up = m + n,
        .down = m + 2 * n,
        .gate_bias = b,
        .up_bias = b ? b + n * F : NULL,
        .down_bias = b ? b + 2 * n * F : NULL,
    };
    const moe_layer_desc sub = moe_part_desc(d, n);
    const moe_status st = moe_layer_create_from_tensors(part->ctx, &sub, &sub_t, &part->layer);
    moe_free(m);
    moe_free(b);
    return st;
}

/* The cache's desc read by its struct_size and checked against the placement: *c the defaults
 * where the caller's struct ends. */
static moe_status read_cache_desc(moe_context *h, const moe_placement *p, moe_expert_cache_desc *c)
{
    *c = (moe_expert_cache_desc){.struct_size = sizeof *c};
    moe_status st = moe_abi_in(h, &moe_abi_expert_cache_desc, p->cache, c);
    if (st != MOE_OK) return st;
    if (c->context < 0 || c->context >= p->n_contexts)
        return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                        "placement.cache->context is %d; there are %d contexts", c->context, p->n_contexts);
    if (c->slots < 0)
        return moe_fail(h, MOE_ERROR_INVALID_SIZE, "placement.cache->slots is %lld", (long long)c->slots);
    if (c->slots == 0 && c->budget_bytes == 0)
        return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                        "placement.cache: set slots (how many experts it holds) or budget_bytes (its bytes)");
    if (c->policy != MOE_CACHE_LRU && c->policy != MOE_CACHE_LFU)
        return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                        "placement.cache->policy is %d; it is MOE_CACHE_LRU (0) or MOE_CACHE_LFU (1)",
                        (int)c->policy);
    if (c->min_rows < 0)
        return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                        "placement.cache->min_rows is %lld; it must be 0 or more", (long long)c->min_rows);
    if (c->halving_forwards < 0)
        return moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                        "placement.cache->halving_forwards is %lld; it must be 0 or more",
                        (long long)c->halving_forwards);
    return MOE_OK;
}

/* An upload streams the expert from its source into the cache layer's formats
 * (moe_layer_upload_expert). From float32 sources into a 4-bit format that is a quantisation,
 * on one thread, on the forward's critical path: ~10 ms an expert of qwen3-30b-a3b on a 2-core
 * Xeon, against ~0.6 ms for a copy (bench/results/intel-xeon-amx-2core-cache); on an H200 it
 * made a cached decode forty times slower than the uncached one (bench/results/nvidia-h200).
 * So the matrices of the experts the cache can hold whose sources are in another format are
 * converted here, once, into one host block in the upload's formats, and an upload copies
 * bytes; sources already in those formats (a GGUF file's, BF16 kept as BF16) are read where
 * they are. The block is the cacheable experts' bytes in the stored format, on the host,
 * beside the caller's weights. */
static moe_status convert_sources(struct moe_placed *P, moe_context *h, const moe_layer_desc *d)
{
    moe_dtype in_dtype, down_dtype;
    const moe_status st =
        moe_layer_expert_dtypes(P->part[CACHE_PART(P)].layer, &P->src, &in_dtype, &down_dtype);
    if (st != MOE_OK) return st;
    const int64_t E = d->n_experts;
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        for (int64_t e = 0; e < E; e++) {
            if (!P->cacheable[e]) continue;
            for (int k = 0; k < 3; k++) { /* gate, up, down: [d_ff][d_model], [d_model][d_ff] */
                moe_matrix_src *m = &P->src_matrices[k * E + e];
                const moe_dtype dtype = k == 2 ? down_dtype : in_dtype;
                if (!m->data || (m->dtype == dtype && !m->hf_scales)) continue;
                const int64_t rows = k == 2 ? d->d_model : d->d_ff, cols = k == 2 ? d->d_ff : d->d_model;
                const size_t row_bytes = moe_dtype_row_bytes(dtype, cols);
                size_t bytes;
                if (!moe_mul_size(row_bytes, (size_t)rows, &bytes) || bytes > SIZE_MAX - at)
                    return moe_fail(h, MOE_ERROR_OUT_OF_MEMORY,
                                    "the expert cache's copy of its experts does not fit size_t");
                if (pass == 1) {
                    for (int64_t r = 0; r < rows; r++)
                        moe_matrix_row_as(m, cols, r, dtype, P->src_copy + at + (size_t)r * row_bytes);
                    *m = (moe_matrix_src){.data = P->src_copy + at, .dtype = dtype};
                }
                at += bytes;
            }
        }
        total = at;
        if (pass == 0 && total == 0) return MOE_OK;
        if (pass == 0 && !(P->src_copy = moe_malloc(total)))
            return moe_fail(
                h, MOE_ERROR_OUT_OF_MEMORY,
                "out of host memory for the expert cache's copy of its experts in %s / %s (%zu bytes)",
                moe_dtype_name(in_dtype), moe_dtype_name(down_dtype), total);
    }
    return MOE_OK;
}

/* The cache: its slots (counted, or as many as its budget holds, never more than the experts
 * that live elsewhere), filled with the first of those in expert_order; the sources kept, the
 * cacheable experts' converted to the upload's formats (convert_sources). */
static moe_status create_cache(struct moe_placed *P, const moe_placement *p, const moe_expert_cache_desc *cd,
                               const moe_layer_desc *d, const moe_layer_tensors *t)
{
    moe_context *h = p->contexts[p->home], *cctx = p->contexts[cd->context];
    const int64_t E = d->n_experts;
    P->cache_context = cd->context;
    P->cacheable = moe_calloc((size_t)E, sizeof *P->cacheable);
    P->rows = moe_calloc((size_t)E, sizeof *P->rows);
    int32_t *fill = moe_malloc(sizeof(int32_t) * (size_t)E);
    if (!P->cacheable || !P->rows || !fill) {
        moe_free(fill);
        return moe_fail(h, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    int64_t n = 0;
    for (int64_t i = 0; i < E; i++) {
        const int32_t e = p->expert_order ? p->expert_order[i] : (int32_t)i;
        P->cacheable[e] = P->expert_context[e] != cd->context;
        if (P->cacheable[e]) fill[n++] = e;
    }
    moe_status st = MOE_OK;
    int64_t slots = cd->slots < n ? cd->slots : n;
    if (n == 0)
        st = moe_fail(
            h, MOE_ERROR_INVALID_ARGUMENT,
            "placement.cache: every expert lives on the cache's context (%d); there is nothing to cache",
            cd->context);
    if (st == MOE_OK && cd->slots == 0) { /* as many as the budget holds, measured as created */
        const moe_layer_tensors only = experts_only(t);
        while (slots < n) {
            const moe_layer_desc sub = moe_part_desc(d, slots + 1);
            const size_t bytes = moe_layer_block_bytes(cctx->be, &sub, &only);
            if (bytes == SIZE_MAX || (uint64_t)bytes > cd->budget_bytes) break;
            slots++;
        }
        if (slots == 0) {
            const moe_layer_desc sub = moe_part_desc(d, 1);
            st = moe_fail(
                h, MOE_ERROR_OUT_OF_DEVICE_MEMORY,
                "placement.cache->budget_bytes (%llu) holds no expert; one takes %zu bytes on context %d",
                (unsigned long long)cd->budget_bytes, moe_layer_block_bytes(cctx->be, &sub, &only),
                cd->context);
        }
    }
    moe_part *part = &P->part[CACHE_PART(P)];
    part->ctx = cctx;
    part->n_experts = slots;
    if (st == MOE_OK) st = part_failed(h, cd->context, cctx, create_part(P, CACHE_PART(P), fill, d, t));
    if (st == MOE_OK) {
        P->n_parts = P->n_contexts + 1;
        st = part_failed(h, cd->context, cctx, moe_layer_expert_bytes(part->layer, t, &P->slot_bytes));
    }
    if (st == MOE_OK) {
        P->cache = moe_xcache_new(E, slots, cd->policy, cd->min_rows, cd->halving_forwards);
        if (!P->cache) st = moe_fail(h, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    for (int64_t s = 0; s < slots && st == MOE_OK; s++) moe_xcache_fill(P->cache, s, fill[s]);
    moe_free(fill);
    if (st != MOE_OK) return st;

    /* The sources: the matrices (pointing into the caller's weights or the model's files) and the
     * small bias vectors, copied. */
    const bool gated = moe_activation_is_gated(d->activation), bias = d->expert_has_bias;
    const int64_t F = d->d_ff, D = d->d_model;
    P->src_matrices = moe_calloc((size_t)E * 3, sizeof *P->src_matrices);
    P->src_bias = bias ? moe_malloc(sizeof(float) * (size_t)E * (size_t)(2 * F + D)) : NULL;
    if (!P->src_matrices || (bias && !P->src_bias))
        return moe_fail(h, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    moe_matrix_src *m = P->src_matrices;
    if (gated) memcpy(m, t->gate, sizeof *m * (size_t)E);
    memcpy(m + E, t->up, sizeof *m * (size_t)E);
    memcpy(m + 2 * E, t->down, sizeof *m * (size_t)E);
    float *b = P->src_bias;
    if (bias) {
        if (gated) memcpy(b, t->gate_bias, sizeof(float) * (size_t)(E * F));
        memcpy(b + E * F, t->up_bias, sizeof(float) * (size_t)(E * F));
        memcpy(b + 2 * E * F, t->down_bias, sizeof(float) * (size_t)(E * D));
    }
    P->src = (moe_layer_tensors){.gate = gated ? m : NULL,
                                 .up = m + E,
                                 .down = m + 2 * E,
                                 .gate_bias = bias && gated ? b : NULL,
                                 .up_bias = bias ? b + E * F : NULL,
                                 .down_bias = bias ? b + 2 * E * F : NULL};
    return convert_sources(P, h, d);
}

moe_status moe_placed_create(const moe_placement *p, const moe_layer_desc *d, const moe_layer_tensors *t,
                             const moe_source_owner *owner, moe_layer **out)
{
    moe_context *h = p->contexts[p->home];
    const int64_t E = d->n_experts;
    struct moe_placed *P = moe_calloc(1, sizeof *P);
    if (P) {
        if (owner) P->owner = *owner; /* released with P, whatever happens below */
        P->expert_context = moe_calloc((size_t)E, sizeof(int32_t));
        P->expert_local = moe_calloc((size_t)E, sizeof(int32_t));
        P->run_part = moe_calloc((size_t)E, sizeof(int32_t));
        P->run_local = moe_calloc((size_t)E, sizeof(int32_t));
    }
    if (!P || !P->expert_context || !P->expert_local || !P->run_part || !P->run_local) {
        if (!P && owner && owner->release) owner->release(owner->owner);
        moe_placed_free(P);
        return moe_fail(h, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    P->n_contexts = P->n_parts = p->n_contexts;
    P->home = p->home;
    P->cache_context = -1;
    for (int c = 0; c < p->n_contexts; c++) P->part[c].ctx = p->contexts[c];
    moe_expert_cache_desc cd;
    moe_status st = p->cache ? read_cache_desc(h, p, &cd) : MOE_OK;
    if (st == MOE_OK) st = check_expert_order(h, p, E);
    if (st == MOE_OK && p->expert_context) {
        for (int64_t e = 0; e < E && st == MOE_OK; e++) {
            if (p->expert_context[e] < 0 || p->expert_context[e] >= p->n_contexts)
                st = moe_fail(h, MOE_ERROR_INVALID_ARGUMENT,
                              "placement.expert_context[%lld] is %d; there are %d contexts", (long long)e,
                              p->expert_context[e], p->n_contexts);
            else
                P->expert_context[e] = p->expert_context[e];
        }
    } else if (st == MOE_OK) {
        st = fill_budgets(h, p, d, t, P->expert_context);
    }
    for (int64_t e = 0; e < E && st == MOE_OK; e++)
        P->expert_local[e] = (int32_t)P->part[P->expert_context[e]].n_experts++;
    int32_t *experts = st == MOE_OK ? moe_malloc(sizeof(int32_t) * (size_t)(E ? E : 1)) : NULL;
    if (st == MOE_OK && !experts) st = moe_fail(h, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    for (int c = 0; c < p->n_contexts && st == MOE_OK; c++) {
        if (P->part[c].n_experts == 0) continue;
        for (int64_t e = 0; e < E; e++)
            if (P->expert_context[e] == c) experts[P->expert_local[e]] = (int32_t)e;
        st = part_failed(h, c, P->part[c].ctx, create_part(P, c, experts, d, t));
    }
    moe_free(experts);
    if (st == MOE_OK && p->cache) st = create_cache(P, p, &cd, d, t);
    /* The home: router, shared expert and small vectors, no routed experts. */
    moe_layer *layer = NULL;
    if (st == MOE_OK) {
        moe_layer_tensors home_t = *t;
        home_t.gate = home_t.up = home_t.down = NULL;
        st = moe_layer_create_from_tensors(h, d, &home_t, &layer);
    }
    if (st != MOE_OK) {
        moe_placed_free(P);
        return st;
    }
    if (!P->cache && P->owner.release) { /* no cache: the sources are not read again */
        P->owner.release(P->owner.owner);
        P->owner.release = NULL;
    }
    layer->placed = P;
    *out = layer;
    return MOE_OK;
}

moe_status moe_layer_create_placed(const moe_placement *placement, const moe_layer_desc *desc,
                                   const moe_layer_weights *weights, moe_layer **out)
{
    moe_clear_error(NULL);
    moe_placement p;
    moe_context *home = NULL;
    const moe_status st = moe_placement_check(placement, &p, &home);
    return st != MOE_OK ? st : moe_layer_create_on(home, &p, desc, weights, out);
}

moe_status moe_layer_get_placement(const moe_layer *layer, int32_t *expert_context)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_clear_error(layer->ctx);
    if (!expert_context) return moe_fail(layer->ctx, MOE_ERROR_NULL_POINTER, "expert_context is NULL");
    for (int64_t e = 0; e < layer->desc.n_experts; e++)
        expert_context[e] = layer->placed ? layer->placed->expert_context[e] : 0;
    return MOE_OK;
}

void moe_layer_cache_stats(const moe_layer *layer, moe_expert_cache_stats *s)
{
    const struct moe_placed *P = layer->placed;
    const moe_xcache *c = P ? P->cache : NULL;
    int32_t *slot_expert = s->slot_expert;
    int64_t *per[3] = {s->expert_hits, s->expert_misses, s->expert_uploads};
    *s = (moe_expert_cache_stats){.struct_size = sizeof *s, .slot_expert = slot_expert};
    s->expert_hits = per[0], s->expert_misses = per[1], s->expert_uploads = per[2];
    if (c) {
        s->context = P->cache_context;
        s->slots = c->slots;
        s->bytes = P->part[CACHE_PART(P)].layer->weights_bytes;
        s->forwards = c->forwards;
        s->hits = c->hits;
        s->misses = c->misses;
        s->uploads = c->uploads_done;
        s->evictions = c->evictions;
        s->upload_bytes = c->upload_bytes;
        s->upload_ms = c->upload_ms;
        s->rows_cached = c->rows_cached;
        s->rows_elsewhere = c->rows_elsewhere;
        if (slot_expert) memcpy(slot_expert, c->slot_expert, sizeof(int32_t) * (size_t)c->slots);
    }
    const int64_t *from[3] = {c ? c->expert_hits : NULL, c ? c->expert_misses : NULL,
                              c ? c->expert_uploads : NULL};
    for (int k = 0; k < 3; k++)
        for (int64_t e = 0; per[k] && e < layer->desc.n_experts; e++) per[k][e] = from[k] ? from[k][e] : 0;
}

moe_status moe_layer_get_cache_stats(const moe_layer *layer, moe_expert_cache_stats *user)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_clear_error(layer->ctx);
    if (!user) return moe_fail(layer->ctx, MOE_ERROR_NULL_POINTER, "stats is NULL");
    moe_expert_cache_stats s = {.struct_size = sizeof s};
    const moe_status st =
        moe_abi_in(layer->ctx, &moe_abi_expert_cache_stats, user, &s); /* the arrays asked for */
    if (st != MOE_OK) return st;
    moe_layer_cache_stats(layer, &s);
    return moe_abi_out(layer->ctx, &moe_abi_expert_cache_stats, user, &s);
}

moe_status moe_layer_get_context_ms(const moe_layer *layer, int n_contexts, double *ms)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_clear_error(layer->ctx);
    if (!ms) return moe_fail(layer->ctx, MOE_ERROR_NULL_POINTER, "ms is NULL");
    const struct moe_placed *P = layer->placed;
    if (!P)
        return moe_fail(layer->ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "the layer is not placed (moe_layer_create_placed); a forward's device time is "
                        "moe_forward_stats.device_ms");
    if (n_contexts != P->n_contexts)
        return moe_fail(layer->ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "n_contexts is %d; the layer's placement has %d", n_contexts, P->n_contexts);
    memcpy(ms, P->context_ms, sizeof(double) * (size_t)n_contexts);
    return MOE_OK;
}

/* ---- the forward ------------------------------------------------------------------------------- */

/* Part c's slots (those routed to its experts this forward, P->run_part), grouped by expert with
 * tokens ascending, and its layout from byte `base` of its context's scratch. */
static moe_status plan_part(struct moe_placed *P, int c, moe_part_run *r, const int32_t *ids,
                            const int32_t *srow, int64_t TK, size_t base)
{
    moe_part *part = &P->part[c];
    const int64_t n_exp = part->n_experts;
    /* Count, then place each slot after its expert's earlier ones (tokens stay ascending). */
    for (int64_t i = 0; i < TK; i++)
        if (srow[i] >= 0 && P->run_part[ids[i]] == c) r->first[P->run_local[ids[i]] + 1]++;
    for (int64_t e = 0; e < n_exp; e++) r->first[e + 1] += r->first[e];
    r->n = r->first[n_exp];
    if (r->n == 0) return MOE_OK;
    int32_t *fill = r->row_start; /* borrowed as each expert's fill position, then set by submit_part */
    for (int64_t e = 0; e < n_exp; e++) fill[e] = r->first[e];
    for (int64_t i = 0; i < TK; i++)
        if (srow[i] >= 0 && P->run_part[ids[i]] == c) r->slot[fill[P->run_local[ids[i]]]++] = (int32_t)i;
    bool overflow;
    moe_layout_forward(part->layer, r->n, true, false, MOE_STEPS_EXPERTS, base, &r->L, &overflow);
    if (overflow)
        return moe_fail(part->ctx, MOE_ERROR_SIZE_OVERFLOW,
                        "the forward's scratch does not fit in size_t bytes");
    return MOE_OK;
}

/* Part c's input rows gathered from x in its slot order, then its plan and products
 * (moe_part_submit); its output rows reach rows r->out.. of `o` (the host's [T·k][D]) at the
 * context's wait. */
static moe_status submit_part(struct moe_placed *P, int c, moe_part_run *r, const float *x, int64_t K,
                              int64_t D, float *o)
{
    moe_part *part = &P->part[c];
    float *a = moe_malloc(sizeof(float) * (size_t)(r->n * D));
    if (!a) return moe_fail(part->ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    for (int64_t q = 0; q < r->n; q++)
        memcpy(a + q * D, x + (int64_t)(r->slot[q] / K) * D, sizeof(float) * (size_t)D);
    const moe_status st = moe_part_submit(part->layer, r, a, o + r->out * D);
    moe_free(a);
    return st;
}

moe_status moe_part_submit(moe_layer *layer, moe_part_run *r, const float *a, float *o)
{
    moe_context *ctx = layer->ctx;
    moe_backend *be = ctx->be;
    const int64_t n_exp = layer->desc.n_experts, D = layer->desc.d_model;
    if (r->L.bytes > ctx->arena.scratch_bytes)
        return moe_fail(ctx, MOE_ERROR_INTERNAL,
                        "a placement part's scratch (%zu bytes) exceeds the %zu reserved", r->L.bytes,
                        ctx->arena.scratch_bytes);
    moe_layout_attach(&r->L, ctx->arena.scratch);
    const int64_t R = r->L.n_rows, tile = be->row_tile, n = r->n;
    int32_t *ints = moe_malloc(sizeof(int32_t) * (size_t)(R + R / tile + 2 * n));
    moe_host_copy *reads = moe_malloc(sizeof(moe_host_copy) * (size_t)n_exp);
    moe_status st = MOE_OK;
    if (!ints || !reads) st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    size_t n_reads = 0;
    if (st == MOE_OK) {
        int32_t *row_token = ints, *tile_expert = ints + R, *slot_row = tile_expert + R / tile,
                *slot_expert = slot_row + n;
        for (int64_t i = 0; i < R; i++) row_token[i] = -1;
        for (int64_t i = 0; i < R / tile; i++) tile_expert[i] = -1;
        /* Part slot q (input row q) is row `row` of its expert's padded tiles. */
        int64_t row = 0;
        for (int64_t e = 0; e < n_exp; e++) {
            r->row_start[e] = (int32_t)row;
            for (int64_t q = r->first[e]; q < r->first[e + 1]; q++, row++) {
                row_token[row] = (int32_t)q;
                slot_row[q] = (int32_t)row;
                slot_expert[q] = (int32_t)e;
            }
            /* Padded to whole tiles, as the plan step pads each expert's rows. */
            const int64_t end = (row + tile - 1) / tile * tile;
            for (int64_t tl = r->row_start[e] / tile; tl < end / tile; tl++) tile_expert[tl] = (int32_t)e;
            row = end;
        }
        const moe_host_copy writes[] = {
            {.at = r->L.x, .src = a, .bytes = sizeof(float) * (size_t)(n * D)},
            {.at = r->L.row_token, .src = row_token, .bytes = sizeof(int32_t) * (size_t)R},
            {.at = r->L.tile_expert, .src = tile_expert, .bytes = sizeof(int32_t) * (size_t)(R / tile)},
            {.at = r->L.slot_row, .src = slot_row, .bytes = sizeof(int32_t) * (size_t)n},
            {.at = r->L.topk_ids, .src = slot_expert, .bytes = sizeof(int32_t) * (size_t)n},
        };
        /* The output rows back: an expert's rows are consecutive on both sides, so one read per
         * expert, straight into o in r's row order. */
        for (int64_t e = 0; e < n_exp; e++) {
            const int64_t q0 = r->first[e], cnt = r->first[e + 1] - q0;
            if (cnt == 0) continue;
            moe_addr at = r->L.o;
            at.offset += sizeof(float) * (size_t)(r->row_start[e] * D);
            reads[n_reads++] =
                (moe_host_copy){.at = at, .dst = o + q0 * D, .bytes = sizeof(float) * (size_t)(cnt * D)};
        }
        const moe_forward_io io = {writes, sizeof writes / sizeof writes[0], reads, n_reads};
        /* The writes are taken at the call: the host arrays may go when it returns. */
        st = moe_run_steps(layer, n, &r->L, r->L.x, (moe_addr){0}, MOE_STEPS_EXPERTS, false, &io);
    }
    moe_free(ints);
    moe_free(reads);
    if (st != MOE_OK) return st;
    layer->serial = ++ctx->submitted;
    r->submitted = true;
    return MOE_OK;
}

/* Where each expert's rows run this forward (run_part, run_local): where it lives, or with a
 * cache the slot moe_xcache_decide gives it (uploaded later, by upload_misses). */
static void route_to_parts(struct moe_placed *P, const int32_t *ids, const int32_t *srow, int64_t TK,
                           int64_t E)
{
    memcpy(P->run_part, P->expert_context, sizeof(int32_t) * (size_t)E);
    memcpy(P->run_local, P->expert_local, sizeof(int32_t) * (size_t)E);
    moe_xcache *c = P->cache;
    if (!c) return;
    memset(P->rows, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t i = 0; i < TK; i++)
        if (srow[i] >= 0) P->rows[ids[i]]++;
    moe_xcache_decide(c, P->rows, P->cacheable);
    for (int64_t e = 0; e < E; e++)
        if (c->fwd_slot[e] >= 0) {
            P->run_part[e] = CACHE_PART(P);
            P->run_local[e] = c->fwd_slot[e];
        }
}

/* The context index of part c (the cache's part is on the cache's context). */
static int part_context(const struct moe_placed *P, int c)
{
    return c == CACHE_PART(P) && P->cache ? P->cache_context : c;
}

/* The work on the cache's context: the misses the cache decided to upload, each into its slot (a
 * slot is empty until its expert is all there), then that context's parts submitted (its own
 * experts', the slots'). Run on a worker thread while the CPU computes its share (cache_thread),
 * so it touches nothing but that context, the cache and those parts' runs; a failure is recorded
 * on that context only (placement_forward moves it to the home's). */
typedef struct cache_work {
    struct moe_placed *P;
    moe_part_run *run;
    const float *x;
    int64_t K, D;
    float *o;
    moe_status st;
} cache_work;

static moe_status cache_context_work(struct moe_placed *P, moe_part_run *run, const float *x, int64_t K,
                                     int64_t D, float *o)
{
    moe_xcache *c = P->cache;
    moe_part *part = &P->part[CACHE_PART(P)];
    for (int64_t u = 0; u < c->n_uploads; u++) {
        const int32_t e = c->uploads[u];
        moe_xcache_begin_upload(c, e);
        const double t0 = moe_now_ms();
        const moe_status st = moe_layer_upload_expert(part->layer, c->fwd_slot[e], &P->src, e);
        if (st != MOE_OK) return st;
        moe_xcache_end_upload(c, e, P->slot_bytes, moe_now_ms() - t0);
    }
    for (int q = 0; q < P->n_parts; q++) {
        if (!P->part[q].layer || run[q].n == 0 || part_context(P, q) != P->cache_context) continue;
        const moe_status st = submit_part(P, q, &run[q], x, K, D, o);
        if (st != MOE_OK) return st;
    }
    return MOE_OK;
}

static void *cache_thread(void *arg)
{
    cache_work *w = arg;
    w->st = cache_context_work(w->P, w->run, w->x, w->K, w->D, w->o);
    return NULL;
}

/* Submits the home context's steps of one phase, with their host transfers, and waits for them. */
static moe_status home_phase(moe_layer *layer, int64_t T, const moe_forward_layout *L, moe_addr x, moe_addr y,
                             unsigned steps, bool want_losses, const moe_forward_io *io, const moe_buffer *xb,
                             moe_buffer *yb, double *ms)
{
    moe_context *ctx = layer->ctx;
    moe_status st = moe_run_steps(layer, T, L, x, y, steps, want_losses, io);
    if (st != MOE_OK) return st;
    moe_layer_submitted(layer, xb, yb);
    st = moe_context_wait_all(ctx);
    *ms += ctx->be->last_device_ms;
    return st;
}

moe_status moe_placed_forward(moe_layer *layer, int64_t T, const float *x, float *y, const moe_buffer *xb,
                              moe_buffer *yb, moe_forward_stats *stats)
{
    struct moe_placed *P = layer->placed;
    moe_context *hctx = layer->ctx;
    const moe_layer_desc *d = &layer->desc;
    const int64_t K = d->top_k, D = d->d_model, TK = T * K, E = d->n_experts;
    moe_status st = MOE_OK;
    /* This forward completes before it returns; what each context has in flight finishes first,
     * so its scratch may grow. */
    for (int c = 0; c < P->n_contexts && st == MOE_OK; c++) {
        moe_context *ctx = P->part[c].ctx;
        st = part_failed(hctx, c, ctx, moe_context_check_live(ctx, "the forward"));
        if (st == MOE_OK) st = part_failed(hctx, c, ctx, moe_check_row_tile(ctx));
        if (st == MOE_OK) st = part_failed(hctx, c, ctx, moe_context_wait_all(ctx));
    }
    if (st != MOE_OK) return st;

    /* The home's scratch: its own layout, then room for its parts (the experts living there, and
     * the cache's slots when they are there) at the most slots a part can get (T·k), so phase 2
     * never moves the home's region. */
    moe_forward_layout L;
    bool overflow, part_overflow = false;
    moe_layout_forward(layer, T, x != NULL, y != NULL, MOE_STEPS_ROUTE | MOE_STEPS_SHARED | MOE_STEPS_COMBINE,
                       0, &L, &overflow);
    size_t home_bytes = L.bytes;
    for (int c = 0; c < P->n_parts && !overflow && !part_overflow; c++) {
        if (!P->part[c].layer || part_context(P, c) != P->home) continue;
        moe_forward_layout bound;
        moe_layout_forward(P->part[c].layer, TK, true, false, MOE_STEPS_EXPERTS, home_bytes, &bound,
                           &part_overflow);
        home_bytes = bound.bytes;
    }
    if (overflow || part_overflow)
        return moe_fail(hctx, MOE_ERROR_SIZE_OVERFLOW, "the forward's scratch does not fit in size_t bytes");
    st = moe_arena_reserve_scratch(&hctx->arena, home_bytes);
    if (st != MOE_OK) return st;
    moe_layout_attach(&L, hctx->arena.scratch);

    /* Host memory of this forward: the plan's ids and slot rows, x (when it is a buffer), the
     * routed slots' output rows, and the slot lists of each part. (Sizes of T·k·D floats:
     * validation bounded T·k and the scratch layout these products.) */
    size_t ints = 2 * (size_t)TK;
    for (int c = 0; c < P->n_parts; c++)
        if (P->part[c].layer) ints += (size_t)TK + 2 * (size_t)P->part[c].n_experts + 1;
    int32_t *ibuf = moe_calloc(ints, sizeof(int32_t));
    float *xs = xb ? moe_malloc(sizeof(float) * (size_t)(T * D)) : NULL;
    float *o = moe_malloc(sizeof(float) * (size_t)(TK * D));
    moe_part_run run[MOE_MAX_PLACEMENT_CONTEXTS + 1];
    memset(run, 0, sizeof run);
    if (!ibuf || (xb && !xs) || !o) {
        st = moe_fail(hctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
        goto done;
    }
    int32_t *ids = ibuf, *srow = ibuf + TK, *next = ibuf + 2 * TK;
    for (int c = 0; c < P->n_parts; c++) {
        if (!P->part[c].layer) continue;
        run[c].slot = next;
        run[c].first = next + TK;
        run[c].row_start = run[c].first + P->part[c].n_experts + 1;
        next = run[c].row_start + P->part[c].n_experts;
    }

    /* 1. Route, plan and the shared expert on the home context. */
    const moe_addr xa = x ? L.x : moe_buffer_addr(xb), ya = y ? L.y : moe_buffer_addr(yb);
    /* Each context's device time over this forward: the difference of its backend's running total
     * (a context holding two parts completes both in one wait, where last_device_ms sees one). */
    double device_ms = 0.0, parts_ms = 0.0, start_ms[MOE_MAX_PLACEMENT_CONTEXTS];
    for (int c = 0; c < P->n_contexts; c++) start_ms[c] = P->part[c].ctx->be->device_ms_total;
    /* x in, the plan's ids and slot rows (and x, when it is a buffer) out, with the phase. */
    const moe_host_copy in1 = {.at = xa, .src = x, .bytes = sizeof(float) * (size_t)(T * D)};
    const moe_host_copy out1[] = {
        {.at = L.topk_ids, .dst = ids, .bytes = sizeof(int32_t) * (size_t)TK},
        {.at = L.slot_row, .dst = srow, .bytes = sizeof(int32_t) * (size_t)TK},
        {.at = xa, .dst = xs, .bytes = sizeof(float) * (size_t)(T * D)},
    };
    const moe_forward_io io1 = {&in1, x ? 1 : 0, out1, xb ? 3 : 2};
    st =
        home_phase(layer, T, &L, xa, ya, MOE_STEPS_ROUTE | MOE_STEPS_SHARED, false, &io1, xb, yb, &device_ms);
    const float *xh = x ? x : xs;

    /* 2. Where each expert's rows run (the cache's uploads first), each part's slots and its
     * layout — chained on a context holding two parts (its experts and the cache's slots), the
     * home's after its own layout, and reserved before anything is submitted there — then every
     * part's products: the GPUs' submitted first, so they run while the CPU computes its part
     * (the CPU backend runs each step as it is called). Their output rows go to the host back
     * to back, part after part, in each part's slot order. */
    if (st == MOE_OK) route_to_parts(P, ids, srow, TK, E);
    for (int c = 0; c < P->n_contexts && st == MOE_OK; c++) {
        size_t base = c == P->home ? L.bytes : 0;
        for (int q = 0; q < P->n_parts && st == MOE_OK; q++) {
            if (!P->part[q].layer || part_context(P, q) != c) continue;
            st = part_failed(hctx, c, P->part[c].ctx, plan_part(P, q, &run[q], ids, srow, TK, base));
            if (run[q].n > 0) base = run[q].L.bytes;
        }
        /* The home's region was reserved for its parts' bound before phase 1. */
        if (st == MOE_OK && c != P->home && base > 0)
            st =
                part_failed(hctx, c, P->part[c].ctx, moe_arena_reserve_scratch(&P->part[c].ctx->arena, base));
    }
    /* Each part's output rows in the host's rows: parts back to back, in part order. */
    int64_t out_rows = 0;
    for (int c = 0; c < P->n_parts; c++) {
        run[c].out = out_rows;
        out_rows += run[c].n;
    }
    /* With uploads to do, the cache's context goes its own way: the uploads, then its parts; on a
     * worker thread when a CPU context elsewhere has rows to compute meanwhile. */
    const bool uploads = st == MOE_OK && P->cache && P->cache->n_uploads > 0;
    bool cpu_elsewhere = false;
    for (int c = 0; c < P->n_parts; c++)
        cpu_elsewhere =
            cpu_elsewhere || (P->part[c].layer && run[c].n > 0 && part_context(P, c) != P->cache_context &&
                              P->part[c].ctx->be->ops->kind == MOE_BACKEND_CPU);
    cache_work work = {P, run, xh, K, D, o, MOE_OK};
    moe_thread worker;
    bool threaded = false;
    int failed = -1;
    for (int pass = 0; pass < 2 && st == MOE_OK; pass++) {
        if (pass == 1 && uploads) { /* before the CPU parts: they are what the uploads overlap */
            /* (Slots on a CPU context would compete for the same cores: no thread then.) */
            threaded = cpu_elsewhere && P->part[CACHE_PART(P)].ctx->be->ops->kind != MOE_BACKEND_CPU &&
                       moe_thread_create(&worker, cache_thread, &work) == 0;
            if (!threaded) cache_thread(&work);
        }
        for (int c = 0; c < P->n_parts && st == MOE_OK; c++) {
            const bool cpu = P->part[c].ctx->be->ops->kind == MOE_BACKEND_CPU;
            if (!P->part[c].layer || run[c].n == 0 || cpu != (pass == 1)) continue;
            if (uploads && part_context(P, c) == P->cache_context) continue; /* the cache's work */
            st = submit_part(P, c, &run[c], xh, K, D, o);
            if (st != MOE_OK) failed = c;
        }
    }
    if (threaded) moe_thread_join(worker);
    /* Recorded on the home only now: the worker may be recording on it (the slots on the home). */
    if (failed >= 0) part_failed(hctx, part_context(P, failed), P->part[failed].ctx, st);
    if (work.st != MOE_OK && st == MOE_OK)
        st = adopt_failure(hctx, P->cache_context, P->part[CACHE_PART(P)].ctx, work.st);
    for (int c = 0; c < P->n_parts; c++) {
        if (!run[c].submitted) continue;
        moe_context *ctx = P->part[c].ctx;
        const moe_status w = moe_context_wait_all(ctx); /* its rows are in o when it succeeds */
        if (st == MOE_OK) st = part_failed(hctx, part_context(P, c), ctx, w);
    }
    /* The slowest context's parts (the home's less its first phase) count in the forward's time. */
    for (int c = 0; c < P->n_contexts; c++) {
        const double ms =
            P->part[c].ctx->be->device_ms_total - start_ms[c] - (c == P->home ? device_ms : 0.0);
        if (ms > parts_ms) parts_ms = ms;
    }
    device_ms += parts_ms;

    /* 3. Each routed slot's row in the expert-output region (dropped slots stay -1); the combine
     * gathers them in slot order, then the stats. */
    if (st == MOE_OK)
        for (int c = 0; c < P->n_parts; c++)
            for (int64_t q = 0; q < run[c].n; q++) srow[run[c].slot[q]] = (int32_t)(run[c].out + q);
    const moe_host_copy in3[] = {
        {.at = L.o, .src = o, .bytes = sizeof(float) * (size_t)(out_rows * D)},
        {.at = L.slot_row, .src = srow, .bytes = sizeof(int32_t) * (size_t)TK},
    };
    /* y, the usage's counts and the stats come back with the combine (all or, failed, none). */
    moe_host_copy out3[MOE_FORWARD_READS];
    float losses[2] = {0.0f, 0.0f};
    const moe_forward_io io3 = {in3, 2, out3, moe_forward_reads(layer, T, &L, ya, y, stats, losses, out3)};
    const bool want_losses = stats && (stats->aux_loss || stats->z_loss);
    if (st == MOE_OK)
        st = home_phase(layer, T, &L, xa, ya, MOE_STEPS_COMBINE, want_losses, &io3, xb, yb, &device_ms);
    if (st == MOE_OK) moe_forward_stats_done(stats, losses, device_ms);
    if (st == MOE_OK && layer->usage) moe_usage_commit(layer, T);
    if (st == MOE_OK && P->cache) moe_xcache_commit(P->cache);
    if (st == MOE_OK)
        for (int c = 0; c < P->n_contexts; c++)
            P->context_ms[c] += P->part[c].ctx->be->device_ms_total - start_ms[c];
done:
    /* Nothing of this forward stays in flight, failed or not. */
    for (int c = 0; c < P->n_contexts; c++) (void)moe_context_wait_all(P->part[c].ctx);
    moe_free(ibuf);
    moe_free(xs);
    moe_free(o);
    return st;
}
