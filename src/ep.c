/*
 * ep.c — expert parallelism (moe_layer_create_ep): one layer over the ranks of a transport (an
 * MPI communicator through moe_mpi.h, or the application's own), each rank holding the router,
 * the shared expert and a contiguous range of the routed experts.
 *
 * The layer a rank holds is a home, as a placed layer's (placement.c): router, shared expert and
 * small vectors, no routed experts, planning without capacity; plus a part with the rank's own
 * experts (moe_part_desc), on the same context. A forward is a collective call in four rounds,
 * each closed by an allgather that carries every rank's status, so a rank that fails anywhere
 * makes every rank return instead of waiting in the next exchange:
 *   1. route the rank's tokens (home: route + plan), their top-k ids to the host; allgather
 *      [status, tokens, wants losses, routed rows per expert]. From the counts of every rank
 *      each rank works out the same global picture: the capacity in global token order (rank
 *      q's rows for expert e come after every lower rank's), which of its rows are kept, how
 *      many rows each rank sends each other;
 *   2. reserve the scratch for the home's steps and the rows this rank will receive; allgather
 *      the statuses;
 *   3. alltoallv the kept rows (packed by destination, then by expert, tokens ascending: expert
 *      order is destination order, the ranges being contiguous); the owner runs them through
 *      its part (per expert: rank order, then tokens, i.e. global token order, as a one-context
 *      forward's plan puts them) and the shared expert over its own tokens; allgather statuses;
 *   4. alltoallv the output rows back in the order they came; when any rank asked for aux_loss
 *      or z_loss, every rank's router logits to every rank (the stats step runs over the global
 *      tokens, as one forward's would); combine on the home in slot order; allgather statuses.
 * Every row's arithmetic is a one-context forward's: only where it runs changes.
 */
#include "abi.h"
#include "alloc.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

struct moe_ep {
    moe_ep_transport tr;
    int64_t *first;     /* [n_ranks + 1]: rank q owns experts [first[q], first[q + 1]) */
    moe_layer *part;    /* this rank's experts (NULL: it holds none) */
    int64_t capacity;   /* the layer's expert_capacity (the home plans without one) */
    int64_t *gather;    /* [n_ranks][3 + E]: what the first round's allgather returns */
    size_t *send_bytes; /* [n_ranks] */
    size_t *recv_bytes; /* [n_ranks] */
    int64_t *kept;      /* [n_ranks][E]: rows of rank q kept for expert e */
    int64_t *row;       /* [3 + E]: this rank's row of the first round */
    int64_t *status;    /* [n_ranks]: every rank's status in the later rounds */
    moe_ep_stats stats; /* over the forwards that succeeded (moe_layer_get_ep_stats) */
};

void moe_ep_free(struct moe_ep *ep)
{
    if (!ep) return;
    moe_layer_destroy(ep->part);
    if (ep->tr.release) ep->tr.release(ep->tr.user);
    moe_free(ep->first);
    moe_free(ep->gather);
    moe_free(ep->send_bytes);
    moe_free(ep->recv_bytes);
    moe_free(ep->kept);
    moe_free(ep->row);
    moe_free(ep->status);
    moe_free(ep);
}

moe_status moe_layer_get_ep_stats(const moe_layer *layer, moe_ep_stats *stats)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_clear_error(layer->ctx);
    if (!stats) return moe_fail(layer->ctx, MOE_ERROR_NULL_POINTER, "stats is NULL");
    if (!layer->ep)
        return moe_fail(layer->ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "the layer is not expert-parallel (moe_layer_create_ep, moe_mpi_layer_create)");
    moe_ep_stats s = layer->ep->stats;
    s.struct_size = sizeof s;
    return moe_abi_out(layer->ctx, &moe_abi_ep_stats, stats, &s);
}

moe_dtype moe_ep_routed_act(const struct moe_ep *ep)
{
    return ep->part ? moe_group_act_reported(ep->part->routed_act) : MOE_DTYPE_F32;
}

moe_status moe_ep_partition(int64_t n_experts, int n_ranks, int rank, int64_t *first_expert, int64_t *n_local)
{
    moe_clear_error(NULL);
    if (!first_expert || !n_local)
        return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "first_expert or n_local is NULL");
    if (n_experts < 1)
        return moe_fail(NULL, MOE_ERROR_INVALID_SIZE, "n_experts must be > 0 (got %lld)",
                        (long long)n_experts);
    if (n_ranks < 1 || rank < 0 || rank >= n_ranks)
        return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                        "rank %d of %d ranks: ranks are 0..n_ranks-1, n_ranks >= 1", rank, n_ranks);
    const int64_t base = n_experts / n_ranks, extra = n_experts % n_ranks;
    *first_expert = rank * base + (rank < extra ? rank : extra);
    *n_local = base + (rank < extra ? 1 : 0);
    return MOE_OK;
}

/* ---- the transport -------------------------------------------------------------------------- */

static moe_status transport_failed(moe_context *ctx, const moe_ep_transport *tr, const char *call, int rc)
{
    const char *text = tr->describe ? tr->describe(tr->user, rc) : NULL;
    return moe_fail(ctx, MOE_ERROR_BACKEND,
                    "expert parallelism: the transport's %s failed on rank %d (code %d%s%s)", call, tr->rank,
                    rc, text ? ": " : "", text ? text : "");
}

/* One forward's share of moe_ep_stats, committed when the whole forward succeeded. */
typedef struct ep_tally {
    double exchange_ms, bytes_sent, bytes_received;
} ep_tally;

static moe_status ep_allgather(moe_context *ctx, const moe_ep_transport *tr, const void *send, size_t bytes,
                               void *recv, ep_tally *tally)
{
    const double t0 = moe_now_ms();
    const int rc = tr->allgather(tr->user, send, bytes, recv);
    if (tally) {
        tally->exchange_ms += moe_now_ms() - t0;
        tally->bytes_sent += (double)bytes * (tr->n_ranks - 1);
        tally->bytes_received += (double)bytes * (tr->n_ranks - 1);
    }
    return rc == 0 ? MOE_OK : transport_failed(ctx, tr, "allgather", rc);
}

static moe_status ep_alltoallv(moe_context *ctx, const moe_ep_transport *tr, const void *send,
                               const size_t *send_bytes, void *recv, const size_t *recv_bytes,
                               ep_tally *tally)
{
    const double t0 = moe_now_ms();
    const int rc = tr->alltoallv(tr->user, send, send_bytes, recv, recv_bytes);
    tally->exchange_ms += moe_now_ms() - t0;
    for (int q = 0; q < tr->n_ranks; q++)
        if (q != tr->rank) {
            tally->bytes_sent += (double)send_bytes[q];
            tally->bytes_received += (double)recv_bytes[q];
        }
    return rc == 0 ? MOE_OK : transport_failed(ctx, tr, "alltoallv", rc);
}

/* Every rank's row of n int64 into all ([n_ranks][n]), this rank's being `row` with its status
 * in row[0] (set here). Then: this rank's status if it failed, MOE_ERROR_BACKEND naming the first
 * rank that did if another failed, else MOE_OK. `what` says in which round, for the message. */
static moe_status agree(moe_context *ctx, const moe_ep_transport *tr, moe_status st, int64_t *row, size_t n,
                        int64_t *all, const char *what, ep_tally *tally)
{
    row[0] = (int64_t)st;
    const moe_status sent = ep_allgather(ctx, tr, row, sizeof(int64_t) * n, all, tally);
    if (sent != MOE_OK) return sent;
    if (st != MOE_OK) return st;
    for (int q = 0; q < tr->n_ranks; q++)
        if (all[(size_t)q * n] != MOE_OK)
            return moe_fail(ctx, MOE_ERROR_BACKEND,
                            "expert parallelism: rank %d failed %s (%s); its own call returns the cause", q,
                            what, moe_status_string((moe_status)all[(size_t)q * n]));
    return MOE_OK;
}

/* ---- creation -------------------------------------------------------------------------------- */

/* FNV-1a over the fields every rank's desc must share (max_tokens is each rank's own budget). */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static int64_t desc_hash(const moe_layer_desc *d)
{
    const int64_t ints[] = {d->d_model,
                            d->d_ff,
                            d->n_experts,
                            d->top_k,
                            d->score_func,
                            d->n_group,
                            d->topk_group,
                            d->group_score,
                            d->renormalize,
                            d->has_selection_bias,
                            d->activation,
                            d->d_ff_shared,
                            d->shared_expert_gate,
                            d->expert_capacity,
                            d->drop_policy,
                            d->weight_dtype,
                            d->shared_weight_dtype,
                            d->activation_dtype,
                            d->down_weight_dtype,
                            d->shared_down_weight_dtype,
                            d->router_has_bias,
                            d->expert_has_bias};
    const float floats[] = {d->routed_scaling_factor, d->swiglu_alpha, d->swiglu_limit};
    uint64_t h = hash_bytes(14695981039346656037ull, ints, sizeof ints);
    h = hash_bytes(h, floats, sizeof floats);
    return (int64_t)(h >> 1); /* non-negative, so no value reads as a status */
}

/* The transport read by its struct_size and checked; on failure (recorded on ctx) it is released,
 * as a creation that fails releases it. */
moe_status moe_ep_transport_read(moe_context *ctx, const moe_ep_transport *user, moe_ep_transport *tr)
{
    moe_status st = MOE_OK;
    if (!user) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "transport is NULL");
    *tr = (moe_ep_transport){.struct_size = sizeof *tr};
    st = moe_abi_in(ctx, &moe_abi_ep_transport, user, tr);
    if (st != MOE_OK) return st;
    if (!tr->allgather || !tr->alltoallv)
        st = moe_fail(ctx, MOE_ERROR_NULL_POINTER, "transport.allgather or transport.alltoallv is NULL");
    else if (tr->n_ranks < 1 || tr->rank < 0 || tr->rank >= tr->n_ranks)
        st = moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "transport: rank %d of %d ranks", tr->rank,
                      tr->n_ranks);
    /* Without a usable transport there is nobody to tell: this rank fails alone. */
    if (st != MOE_OK && tr->release) tr->release(tr->user);
    return st;
}

/* This rank's layer from its tensors (t: its experts only, n_local of them): the partition's
 * bookkeeping, the part and the home. */
static moe_status create_local(moe_context *ctx, const moe_ep_transport *tr, const moe_layer_desc *dp,
                               const moe_layer_tensors *t, struct moe_ep *ep, moe_layer **home)
{
    const moe_layer_desc d = *dp;
    const int R = tr->n_ranks;
    const int64_t E = d.n_experts;
    ep->first = moe_malloc(sizeof(int64_t) * (size_t)(R + 1));
    ep->gather = moe_malloc(sizeof(int64_t) * (size_t)R * (size_t)(3 + E));
    ep->send_bytes = moe_malloc(sizeof(size_t) * (size_t)R);
    ep->recv_bytes = moe_malloc(sizeof(size_t) * (size_t)R);
    ep->kept = moe_malloc(sizeof(int64_t) * (size_t)R * (size_t)E);
    ep->row = moe_malloc(sizeof(int64_t) * (size_t)(3 + E));
    ep->status = moe_malloc(sizeof(int64_t) * (size_t)R);
    if (!ep->first || !ep->gather || !ep->send_bytes || !ep->recv_bytes || !ep->kept || !ep->row ||
        !ep->status)
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    for (int q = 0; q <= R; q++) {
        int64_t f = E, n = 0;
        if (q < R) moe_ep_partition(E, R, q, &f, &n);
        ep->first[q] = f;
    }
    ep->capacity = d.expert_capacity;
    moe_status st = MOE_OK;
    const int64_t n_local = ep->first[tr->rank + 1] - ep->first[tr->rank];
    if (n_local > 0) {
        const moe_layer_tensors part_t = {.gate = t->gate,
                                          .up = t->up,
                                          .down = t->down,
                                          .gate_bias = t->gate_bias,
                                          .up_bias = t->up_bias,
                                          .down_bias = t->down_bias};
        const moe_layer_desc sub = moe_part_desc(&d, n_local);
        st = moe_layer_create_from_tensors(ctx, &sub, &part_t, &ep->part);
    }
    /* The home: router, shared expert, small vectors; it plans without capacity (applied by the
     * forward, in global token order). */
    if (st == MOE_OK) {
        moe_layer_tensors home_t = *t;
        home_t.gate = home_t.up = home_t.down = NULL;
        home_t.gate_bias = home_t.up_bias = home_t.down_bias = NULL;
        moe_layer_desc hd = d;
        hd.expert_capacity = 0;
        st = moe_layer_create_from_tensors(ctx, &hd, &home_t, home);
    }
    return st;
}

moe_status moe_ep_create(moe_context *ctx, const moe_ep_transport *tr, moe_status st, const moe_layer_desc *d,
                         const moe_layer_tensors *t, moe_layer **out)
{
    struct moe_ep *ep = NULL;
    moe_layer *home = NULL;
    if (st == MOE_OK) {
        ep = moe_calloc(1, sizeof *ep);
        st = ep ? create_local(ctx, tr, d, t, ep, &home)
                : moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    if (ep) ep->tr = *tr; /* released with ep from here; without one, after the round below */
    /* Every rank's status and its desc's hash: all succeed with one layer config, or none does. */
    int64_t row[2] = {0, st == MOE_OK ? desc_hash(d) : 0};
    int64_t small[2 * 64];
    int64_t *all = tr->n_ranks <= 64 ? small : moe_malloc(sizeof(int64_t) * 2 * (size_t)tr->n_ranks);
    if (!all) {
        /* Nowhere to receive the answer: the round cannot run (the others wait for this rank). */
        st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    } else {
        st = agree(ctx, tr, st, row, 2, all, "to create its layer", NULL);
        for (int q = 0; q < tr->n_ranks && st == MOE_OK; q++)
            if (all[2 * q + 1] != row[1])
                st = moe_fail(
                    ctx, MOE_ERROR_INVALID_ARGUMENT,
                    "expert parallelism: rank %d's layer desc differs from rank %d's (every rank must "
                    "describe the same layer; only max_tokens may differ)",
                    q, tr->rank);
        if (all != small) moe_free(all);
    }
    if (!ep && tr->release) tr->release(tr->user);
    if (st != MOE_OK) {
        moe_layer_destroy(home);
        moe_ep_free(ep);
        return st;
    }
    home->ep = ep;
    *out = home;
    return MOE_OK;
}

/* This rank's checks of the application's arguments, and its tensors: moe_layer_tensors_of's
 * matrices, of which the first n_local are its experts (its arrays hold only those). */
static moe_status check_weights(moe_context *ctx, const moe_ep_transport *tr, const moe_layer_desc *desc,
                                const moe_layer_weights *weights, moe_layer_desc *d, moe_layer_tensors *t,
                                moe_matrix_src **m)
{
    if (!ctx) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context is NULL");
    if (!weights) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "weights is NULL");
    if (!desc) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "desc is NULL");
    moe_status st = moe_context_check_live(ctx, "moe_layer_create_ep");
    if (st != MOE_OK) return st;
    moe_layer_weights w = {.struct_size = sizeof w};
    st = moe_abi_in(ctx, &moe_abi_layer_weights, weights, &w);
    if (st != MOE_OK) return st;
    int64_t first = 0, n_local = 0;
    st = moe_ep_partition(desc->n_experts, tr->n_ranks, tr->rank, &first, &n_local);
    if (st != MOE_OK) return moe_fail(ctx, st, "%s", moe_last_error());
    /* A rank holding no expert has no expert tensors: validation sees a stand-in it never reads. */
    static const float none_held[1];
    if (n_local == 0) {
        w.gate = w.gate ? w.gate : none_held;
        w.up = w.up ? w.up : none_held;
        w.down = w.down ? w.down : none_held;
        w.gate_bias = w.gate_bias ? w.gate_bias : none_held;
        w.up_bias = w.up_bias ? w.up_bias : none_held;
        w.down_bias = w.down_bias ? w.down_bias : none_held;
    }
    st = moe_validate_layer(ctx, desc, &w, d);
    if (st == MOE_OK) st = moe_layer_tensors_of(ctx, d, &w, t, m);
    return st;
}

moe_status moe_layer_create_ep(moe_context *ctx, const moe_ep_transport *transport,
                               const moe_layer_desc *desc, const moe_layer_weights *weights, moe_layer **out)
{
    moe_clear_error(ctx);
    moe_ep_transport tr = {.struct_size = sizeof tr};
    moe_status st = moe_ep_transport_read(ctx, transport, &tr);
    if (st != MOE_OK) return st;
    moe_layer_desc d;
    memset(&d, 0, sizeof d);
    moe_layer_tensors t;
    memset(&t, 0, sizeof t);
    moe_matrix_src *m = NULL;
    st = out ? check_weights(ctx, &tr, desc, weights, &d, &t, &m)
             : moe_fail(ctx, MOE_ERROR_NULL_POINTER, "out_layer is NULL");
    st = moe_ep_create(ctx, &tr, st, &d, &t, out);
    moe_free(m);
    return st;
}

/* ---- the forward ------------------------------------------------------------------------------ */

/* The host memory of one forward (freed together). */
typedef struct ep_host {
    int32_t *ids;               /* [T·k] top-k ids */
    float *weights;             /* [T·k] combine weights */
    float *logits;              /* [T·E] when any rank wants the losses */
    int32_t *srow;              /* [T·k] each slot's row in the returned output rows, -1 dropped */
    int64_t *seen;              /* [E] */
    float *send, *back;         /* [T·k][D]: rows out, output rows in (send order) */
    float *recv, *a;            /* [n_recv][D]: rows in (rank order), the part's rows (expert order) */
    int32_t *first, *row_start; /* the part's run: [n_local + 1], [n_local] */
    float *all_logits;          /* [T_global·E] */
    size_t *logit_bytes;
} ep_host;

static void host_free(ep_host *h)
{
    moe_free(h->ids);
    moe_free(h->weights);
    moe_free(h->logits);
    moe_free(h->srow);
    moe_free(h->seen);
    moe_free(h->send);
    moe_free(h->back);
    moe_free(h->recv);
    moe_free(h->a);
    moe_free(h->first);
    moe_free(h->row_start);
    moe_free(h->all_logits);
    moe_free(h->logit_bytes);
}

/* The context's scratch grown to `bytes`, after whatever it has in flight (the application's
 * asynchronous forwards of other layers use the region growing frees) has finished. */
static moe_status reserve_scratch(moe_context *ctx, size_t bytes)
{
    const moe_status st = moe_context_wait_all(ctx);
    return st != MOE_OK ? st : moe_arena_reserve_scratch(&ctx->arena, bytes);
}

/* Submits `steps` of the home over T tokens and waits. */
static moe_status home_steps(moe_layer *layer, int64_t T, const moe_forward_layout *L, unsigned steps)
{
    moe_status st = moe_run_steps(layer, T, L, L->x, L->y, steps, false, NULL);
    if (st != MOE_OK) return st;
    moe_layer_submitted(layer, NULL, NULL);
    return moe_context_wait_all(layer->ctx);
}

/* The stats step over every rank's tokens: the global logits and counts in the home's scratch
 * (from byte 0: the forward's own data is on the host by now), aux loss and z-loss back. */
static moe_status global_losses(moe_layer *layer, int64_t Tg, const float *logits, const int32_t *counts,
                                float losses[2])
{
    moe_context *ctx = layer->ctx;
    moe_backend *be = ctx->be;
    const moe_layer_desc *d = &layer->desc;
    const size_t E = (size_t)d->n_experts;
    moe_bump b = {.alignment = be->alignment};
    const size_t at_logits = moe_bump_take(&b, sizeof(float) * (size_t)Tg * E);
    const size_t at_ws = moe_bump_take(&b, sizeof(float) * (2 * (size_t)Tg + 2 * E));
    const size_t at_counts = moe_bump_take(&b, sizeof(int32_t) * (E + 1));
    const size_t at_losses = moe_bump_take(&b, sizeof(float) * 2);
    if (b.overflow)
        return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "the losses' scratch does not fit in size_t bytes");
    moe_status st = reserve_scratch(ctx, b.offset);
    if (st != MOE_OK) return st;
    moe_backend_buffer *s = ctx->arena.scratch;
    const moe_addr a_logits = {s, at_logits}, a_ws = {s, at_ws}, a_counts = {s, at_counts},
                   a_losses = {s, at_losses};
    st = be->ops->buffer_write(be, a_logits, logits, sizeof(float) * (size_t)Tg * E);
    if (st == MOE_OK) st = be->ops->buffer_write(be, a_counts, counts, sizeof(int32_t) * (E + 1));
    if (st != MOE_OK) return st;
    const moe_stats_step step = {d, Tg, a_logits, a_counts, a_ws, a_losses};
    st = be->ops->begin(be);
    if (st == MOE_OK) st = be->ops->stats(be, &step);
    const moe_status sub = be->ops->submit(be);
    if (st == MOE_OK) st = sub;
    if (st != MOE_OK) return st;
    moe_layer_submitted(layer, NULL, NULL);
    st = moe_context_wait_all(ctx);
    if (st == MOE_OK) st = be->ops->buffer_read(be, a_losses, losses, sizeof(float) * 2);
    return st;
}

/* The rows this rank received, as they arrive (per source rank, expert by expert: `arrived`)
 * and as its part runs them (expert by expert, source ranks in order within each: `by_expert`,
 * expert l's rows from first[l]): to_experts copies the first into the second, else back. */
static void reorder(const struct moe_ep *ep, int me, const int32_t *first, int64_t D, float *arrived,
                    float *by_expert, bool to_experts)
{
    const int R = ep->tr.n_ranks;
    const int64_t E = ep->first[R], first_me = ep->first[me], n_local = ep->first[me + 1] - first_me;
    const int64_t *kept = ep->kept;
    int64_t at = 0;
    for (int q = 0; q < R; q++)
        for (int64_t l = 0; l < n_local; l++) {
            const int64_t n = kept[q * E + first_me + l];
            int64_t row = first[l];
            for (int p = 0; p < q; p++) row += kept[p * E + first_me + l];
            float *a = arrived + at * D, *b = by_expert + row * D;
            memcpy(to_experts ? b : a, to_experts ? a : b, sizeof(float) * (size_t)(n * D));
            at += n;
        }
}

moe_status moe_ep_forward(moe_layer *layer, int64_t T, const float *x, float *y,
                          moe_forward_stats *user_stats)
{
    struct moe_ep *ep = layer->ep;
    const moe_ep_transport *tr = &ep->tr;
    moe_context *ctx = layer->ctx;
    moe_backend *be = ctx->be;
    const moe_layer_desc *d = &layer->desc;
    const int R = tr->n_ranks, me = tr->rank;
    const int64_t K = d->top_k, D = d->d_model, E = d->n_experts, TK = T * K;
    const int64_t first_me = ep->first[me], n_local = ep->first[me + 1] - first_me;
    const size_t row_bytes = sizeof(float) * (size_t)D;
    const double start_ms = be->device_ms_total, wall0 = moe_now_ms();
    ep_tally tally = {0.0, 0.0, 0.0};
    ep_host h;
    memset(&h, 0, sizeof h);
    moe_forward_layout L;
    memset(&L, 0, sizeof L);
    int64_t *all = ep->gather; /* the first round's rows, read until the end */
    const size_t stride = 3 + (size_t)E;
    int64_t status_row[1];

    /* 1. This rank's checks and routing; every rank's tokens and routed rows per expert. */
    moe_status st = moe_context_check_live(ctx, "the forward");
    if (st == MOE_OK && T != 0) st = moe_validate_tokens(ctx, d, T, true);
    if (st == MOE_OK && T > 0 && (!x || !y)) st = moe_fail(ctx, MOE_ERROR_NULL_POINTER, "x or y is NULL");
    moe_forward_stats stats_in = {.struct_size = sizeof stats_in}, *stats = NULL;
    if (st == MOE_OK && user_stats) {
        st = moe_abi_in(ctx, &moe_abi_forward_stats, user_stats, &stats_in);
        stats = &stats_in;
    }
    if (st == MOE_OK) st = moe_check_row_tile(ctx);
    const bool want_losses = stats && (stats->aux_loss || stats->z_loss);
    if (st == MOE_OK && T > 0) {
        h.ids = moe_malloc(sizeof(int32_t) * (size_t)TK);
        h.weights = moe_malloc(sizeof(float) * (size_t)TK);
        h.srow = moe_malloc(sizeof(int32_t) * (size_t)TK);
        h.send = moe_malloc(row_bytes * (size_t)TK);
        h.back = moe_malloc(row_bytes * (size_t)TK);
        if (!h.ids || !h.weights || !h.srow || !h.send || !h.back)
            st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    h.seen = moe_calloc((size_t)E, sizeof(int64_t));
    if (st == MOE_OK && !h.seen) st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    if (st == MOE_OK && T > 0) {
        bool overflow;
        moe_layout_forward(layer, T, true, true, MOE_STEPS_ROUTE | MOE_STEPS_SHARED | MOE_STEPS_COMBINE, 0,
                           &L, &overflow);
        if (overflow)
            st = moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "the forward's scratch does not fit in size_t bytes");
        if (st == MOE_OK) st = reserve_scratch(ctx, L.bytes);
        if (st == MOE_OK) {
            moe_layout_attach(&L, ctx->arena.scratch);
            st = be->ops->buffer_write(be, L.x, x, row_bytes * (size_t)T);
        }
        if (st == MOE_OK) st = home_steps(layer, T, &L, MOE_STEPS_ROUTE);
        if (st == MOE_OK) st = be->ops->buffer_read(be, L.topk_ids, h.ids, sizeof(int32_t) * (size_t)TK);
        if (st == MOE_OK)
            st = be->ops->buffer_read(be, L.topk_weights, h.weights, sizeof(float) * (size_t)TK);
    }
    int64_t *row = ep->row;
    memset(row, 0, sizeof(int64_t) * stride);
    row[1] = T > 0 ? T : 0;
    row[2] = want_losses;
    if (st == MOE_OK)
        for (int64_t i = 0; i < TK; i++) row[3 + h.ids[i]]++;
    st = agree(ctx, tr, st, row, stride, all, "to route its tokens", &tally);
    if (st != MOE_OK) goto done;

    /* Every rank's share: tokens, kept rows per expert (capacity in global token order), what
     * goes where. The same arithmetic on every rank, from the same counts. */
    int64_t Tg = 0, any_losses = 0;
    for (int q = 0; q < R; q++) {
        Tg += all[q * stride + 1];
        any_losses |= all[q * stride + 2];
    }
    /* Every rank's logits go to every rank when any wants the losses: this rank's are read now,
     * before its scratch may move (a failure is told in the next round). */
    if (any_losses && T > 0) {
        h.logits = moe_malloc(sizeof(float) * (size_t)(T * E));
        st = h.logits ? be->ops->buffer_read(be, L.logits, h.logits, sizeof(float) * (size_t)(T * E))
                      : moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    moe_layer_desc global = *d;
    global.expert_capacity = ep->capacity;
    const int64_t cap = moe_effective_capacity(&global, Tg);
    int64_t *kept = ep->kept;
    int64_t dropped = 0;
    for (int64_t e = 0; e < E; e++) {
        int64_t before = 0;
        for (int q = 0; q < R; q++) {
            const int64_t c = all[q * stride + 3 + e];
            int64_t k = c;
            if (cap > 0) k = cap - before < 0 ? 0 : (cap - before < c ? cap - before : c);
            kept[q * E + e] = k;
            dropped += c - k;
            before += c;
        }
    }
    int64_t n_recv = 0, n_send = 0, kept_self = 0;
    for (int64_t e = first_me; e < first_me + n_local; e++) kept_self += kept[me * E + e];
    for (int q = 0; q < R; q++) {
        int64_t to_q = 0, from_q = 0;
        for (int64_t e = ep->first[q]; e < ep->first[q + 1]; e++) to_q += kept[me * E + e];
        for (int64_t e = first_me; e < first_me + n_local; e++) from_q += kept[q * E + e];
        ep->send_bytes[q] = row_bytes * (size_t)to_q;
        ep->recv_bytes[q] = row_bytes * (size_t)from_q;
        n_send += to_q;
        n_recv += from_q;
    }
    /* The most rows any rank's part gets must fit its plan's int32 rows: every rank checks every
     * rank, so all fail together. */
    for (int q = 0; q < R && st == MOE_OK; q++) {
        int64_t rows = 0;
        for (int64_t e = ep->first[q]; e < ep->first[q + 1]; e++)
            for (int p = 0; p < R; p++) rows += kept[p * E + e];
        /* Padded per expert to the row tile, as its part's plan pads them (this rank's tile). */
        if (rows + (ep->first[q + 1] - ep->first[q]) * be->row_tile > MOE_MAX_INDEX)
            st = moe_fail(
                ctx, MOE_ERROR_UNSUPPORTED,
                "expert parallelism: rank %d would receive %lld rows; a plan indexes rows with int32", q,
                (long long)rows);
    }

    /* 2. The scratch for the home's steps and the part's rows, then the host's buffers. */
    moe_part_run run;
    memset(&run, 0, sizeof run);
    if (n_recv > 0) {
        h.first = moe_calloc((size_t)n_local + 1, sizeof(int32_t));
        h.row_start = moe_calloc((size_t)n_local, sizeof(int32_t));
        h.recv = moe_malloc(row_bytes * (size_t)n_recv);
        h.a = moe_malloc(row_bytes * (size_t)n_recv);
        if (!h.first || !h.row_start || !h.recv || !h.a)
            st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
        if (st == MOE_OK) {
            bool overflow;
            run.n = n_recv;
            run.first = h.first;
            run.row_start = h.row_start;
            for (int64_t l = 0; l < n_local; l++) {
                int64_t rows = 0;
                for (int q = 0; q < R; q++) rows += kept[q * E + first_me + l];
                h.first[l + 1] = (int32_t)(h.first[l] + rows);
            }
            moe_layout_forward(ep->part, n_recv, true, false, MOE_STEPS_EXPERTS, L.bytes, &run.L, &overflow);
            if (overflow)
                st = moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW,
                              "the forward's scratch does not fit in size_t bytes");
        }
    }
    if (st == MOE_OK) {
        const size_t need = run.n > 0 ? run.L.bytes : L.bytes;
        if (need > 0) st = reserve_scratch(ctx, need);
        if (st == MOE_OK && T > 0) moe_layout_attach(&L, ctx->arena.scratch);
    }
    /* This rank's kept rows in send order (experts ascending, which is destination order, tokens
     * ascending within each), each slot's row in that order, -1 for a dropped one. */
    if (st == MOE_OK && T > 0) {
        int64_t *cursor = h.seen; /* each expert's next send position */
        int64_t at = 0;
        for (int64_t e = 0; e < E; e++) {
            cursor[e] = at;
            at += kept[me * E + e];
        }
        int64_t *taken = moe_calloc((size_t)E, sizeof(int64_t));
        if (!taken) st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
        for (int64_t i = 0; i < TK && st == MOE_OK; i++) {
            const int32_t e = h.ids[i];
            if (taken[e]++ < kept[me * E + e]) {
                const int64_t pos = cursor[e]++;
                h.srow[i] = (int32_t)pos;
                memcpy(h.send + pos * D, x + (i / K) * D, row_bytes);
            } else {
                h.srow[i] = -1;
            }
        }
        moe_free(taken);
    }
    st = agree(ctx, tr, st, status_row, 1, ep->status, "to prepare its exchange", &tally);
    if (st != MOE_OK) goto done;

    /* 3. The rows to their experts' ranks; the part runs them in global token order per expert. */
    st = ep_alltoallv(ctx, tr, h.send, ep->send_bytes, h.recv, ep->recv_bytes, &tally);
    if (st == MOE_OK && n_recv > 0) {
        reorder(ep, me, h.first, D, h.recv, h.a, true);
        st = moe_part_submit(ep->part, &run, h.a, h.a); /* its output rows back into h.a at the wait */
    }
    if (st == MOE_OK && T > 0) {
        st = be->ops->buffer_write(be, L.x, x, row_bytes * (size_t)T);
        if (st == MOE_OK && d->d_ff_shared > 0) {
            st = moe_run_steps(layer, T, &L, L.x, L.y, MOE_STEPS_SHARED, false, NULL);
            if (st == MOE_OK) moe_layer_submitted(layer, NULL, NULL);
        }
    }
    if (st == MOE_OK) st = moe_context_wait_all(ctx);
    if (st == MOE_OK && n_recv > 0) reorder(ep, me, h.first, D, h.recv, h.a, false); /* back as they came */
    st = agree(ctx, tr, st, status_row, 1, ep->status, "running its experts", &tally);
    if (st != MOE_OK) goto done;

    /* 4. The output rows back; the logits everywhere when losses are wanted; the combine. */
    st = ep_alltoallv(ctx, tr, h.recv, ep->recv_bytes, h.back, ep->send_bytes, &tally);
    if (st == MOE_OK && any_losses) {
        h.logit_bytes = moe_malloc(sizeof(size_t) * 2 * (size_t)R);
        h.all_logits = moe_malloc(sizeof(float) * (size_t)(Tg * E > 0 ? Tg * E : 1));
        float *mine = NULL;
        if (h.logit_bytes && T > 0) mine = moe_malloc(sizeof(float) * (size_t)(R * T * E));
        if (!h.logit_bytes || !h.all_logits || (T > 0 && !mine)) {
            /* The exchange cannot be skipped by this rank alone: the round below says it failed. */
            st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
        } else {
            size_t *send_b = h.logit_bytes, *recv_b = h.logit_bytes + R;
            for (int q = 0; q < R; q++) {
                send_b[q] = sizeof(float) * (size_t)(T * E);
                recv_b[q] = sizeof(float) * (size_t)(all[q * stride + 1] * E);
                if (T > 0) memcpy(mine + (size_t)q * (size_t)(T * E), h.logits, send_b[q]);
            }
            st = ep_alltoallv(ctx, tr, mine, send_b, h.all_logits, recv_b, &tally);
        }
        moe_free(mine);
    }
    /* The combine; y, like every statistic, reaches the caller only once every rank succeeded. */
    float *y_host = h.back; /* the output rows are in the device's scratch by then */
    int32_t *counts = moe_malloc(sizeof(int32_t) * (size_t)(E + 1));
    float losses[2] = {0.0f, 0.0f};
    if (st == MOE_OK && !counts) st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    if (st == MOE_OK && T > 0) {
        st = be->ops->buffer_write(be, L.o, h.back, row_bytes * (size_t)n_send);
        if (st == MOE_OK) st = be->ops->buffer_write(be, L.slot_row, h.srow, sizeof(int32_t) * (size_t)TK);
        if (st == MOE_OK)
            st = be->ops->buffer_write(be, L.topk_weights, h.weights, sizeof(float) * (size_t)TK);
        if (st == MOE_OK) st = home_steps(layer, T, &L, MOE_STEPS_COMBINE);
        if (st == MOE_OK) st = be->ops->buffer_read(be, L.y, y_host, row_bytes * (size_t)T);
    }
    for (int64_t e = 0; e < E && st == MOE_OK; e++) {
        int64_t c = 0;
        for (int q = 0; q < R; q++) c += all[q * stride + 3 + e];
        counts[e] = (int32_t)c;
    }
    if (st == MOE_OK) counts[E] = (int32_t)dropped;
    /* No token anywhere: no loss to speak of (0), where one forward of no tokens is refused. */
    if (st == MOE_OK && want_losses && Tg > 0) st = global_losses(layer, Tg, h.all_logits, counts, losses);
    const double device_ms = be->device_ms_total - start_ms;
    st = agree(ctx, tr, st, status_row, 1, ep->status, "combining its tokens", &tally);
    if (st == MOE_OK) {
        moe_ep_stats *es = &ep->stats;
        es->forwards++;
        es->tokens += T;
        es->forward_ms += moe_now_ms() - wall0;
        es->exchange_ms += tally.exchange_ms;
        es->rows_sent += n_send - kept_self;
        es->rows_received += n_recv - kept_self;
        es->bytes_sent += tally.bytes_sent;
        es->bytes_received += tally.bytes_received;
    }
    if (st == MOE_OK && T > 0) memcpy(y, y_host, row_bytes * (size_t)T);
    if (st == MOE_OK && stats) {
        if (stats->topk_ids && T > 0) memcpy(stats->topk_ids, h.ids, sizeof(int32_t) * (size_t)TK);
        if (stats->topk_weights && T > 0) memcpy(stats->topk_weights, h.weights, sizeof(float) * (size_t)TK);
        if (stats->expert_counts) memcpy(stats->expert_counts, counts, sizeof(int32_t) * (size_t)E);
        if (stats->dropped_count) *stats->dropped_count = counts[E];
        if (stats->aux_loss) *stats->aux_loss = losses[0];
        if (stats->z_loss) *stats->z_loss = losses[1];
        if (stats->device_ms) *stats->device_ms = device_ms;
    }
    moe_free(counts);
done:
    (void)moe_context_wait_all(ctx);
    host_free(&h);
    return st;
}
