/*
 * bench_ep.c — moe-bench --ep (bench_ep.h): the expert-parallel forward under mpirun, timed
 * per rank and in total.
 *
 * Every rank makes the same float32 host weights and global input pool from the seed (so the
 * ranks agree on the layer without sending it), hands moe_mpi_layer_create the router whole and
 * its own experts' slice of the stacked expert tensors, and forwards its own rows of the global
 * input. A forward is a collective call, so each timed forward starts after a barrier: its wall
 * time on a rank is then that rank's compute plus the part inside the exchange, which includes
 * waiting for slower ranks (moe_ep_stats.exchange_ms counts the transport's calls). The step time
 * of the whole layer is the slowest rank's wall time of each forward.
 */
#include "bench_ep.h"

#include "bench_machine.h"
#include "bench_plan.h"
#include "bench_report.h"
#include "bench_runner.h"
#include "bench_util.h"

#include "moe_mpi.h"

#include <cjson/cJSON.h>
#include <mpi.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one rank measured at one (format, token count); rank 0 gathers them as doubles. */
typedef struct ep_figures {
    double tokens, first_expert, n_experts;
    double wall_ms, exchange_ms, compute_ms;                     /* medians of the timed forwards */
    double rows_sent, rows_received, bytes_sent, bytes_received; /* per forward, to or from other ranks */
    double first_ms;                                             /* the first forward, apart */
} ep_figures;
enum { EP_FIGURES = sizeof(ep_figures) / sizeof(double) };

typedef struct ep_state {
    bench_config c;       /* the command line's, with the sweep in global token counts (ep_global_tokens) */
    const int64_t *asked; /* the token counts as given (per rank for weak scaling) */
    size_t n_tokens;
    int rank, ranks, local_rank, local_ranks, hosts;
    moe_context *ctx;
    moe_device_info info;
    bench_plan plan;
    bench_data data;
    int64_t first_expert, n_local;
    int64_t max_local; /* most tokens one rank brings to one forward: every layer's max_tokens */
    float *y_first;    /* rank 0: its output of layer 0's first forward at the largest count */
    cJSON *json;       /* rank 0 with --json */
} ep_state;

/* The largest status over the ranks: every rank goes on, or stops, together. */
static int agree(int rc)
{
    int all = rc;
    if (MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return BENCH_EXIT_LIBRARY;
    return all;
}

/* Rank r's tokens in a step of `asked` tokens (weak scaling: each rank's; strong: all ranks'),
 * and the global row of its first: the ranks' rows in rank order are the global input's. */
static int64_t rank_tokens(const ep_state *s, int64_t asked, int r, int64_t *first_row)
{
    if (s->c.ep == BENCH_EP_WEAK) {
        *first_row = asked * r;
        return asked;
    }
    const int64_t q = asked / s->ranks, m = asked % s->ranks;
    *first_row = q * r + (r < m ? r : m);
    return q + (r < m);
}

static int64_t global_tokens(const ep_state *s, int64_t asked)
{
    return s->c.ep == BENCH_EP_WEAK ? asked * s->ranks : asked;
}

/* The router and the shared expert whole, the routed experts' tensors for this rank's range. */
static moe_layer_weights local_weights(const ep_state *s, const moe_layer_desc *d)
{
    moe_layer_weights w = bench_data_weights(&s->data);
    const size_t e0 = (size_t)s->first_expert, dm = (size_t)d->d_model, ff = (size_t)d->d_ff;
    const int has = s->n_local > 0;
    w.gate = has && w.gate ? (const float *)w.gate + e0 * ff * dm : NULL;
    w.up = has ? (const float *)w.up + e0 * ff * dm : NULL;
    w.down = has ? (const float *)w.down + e0 * dm * ff : NULL;
    w.gate_bias = has && w.gate_bias ? w.gate_bias + e0 * ff : NULL;
    w.up_bias = has && w.up_bias ? w.up_bias + e0 * ff : NULL;
    w.down_bias = has && w.down_bias ? w.down_bias + e0 * dm : NULL;
    return w;
}

static int library_error(const ep_state *s, const char *what, moe_status st)
{
    fprintf(stderr, BENCH_PROG ": rank %d: ", s->rank);
    return bench_library_error(what, st, s->ctx);
}

/* The context: the backend asked for; on a GPU backend without --device, the node's ranks take
 * its devices in turn. A CPU rank without --threads gets its share of the node's cores. */
static int make_context(ep_state *s)
{
    const bench_config *c = &s->c;
    bench_target t = {.kind = (moe_backend_kind)c->backend,
                      .device = c->device < 0 ? 0 : (int)c->device,
                      .sel = c->device_sel};
    int count = 0;
    if (c->device < 0 && !c->device_sel && t.kind != MOE_BACKEND_AUTO && t.kind != MOE_BACKEND_CPU &&
        moe_device_count(t.kind, &count) == MOE_OK && count > 0)
        t.device = s->local_rank % count;
    int64_t threads = c->threads;
    moe_device_info cpu = {.struct_size = sizeof cpu};
    if (threads == 0 && moe_device_get_info(MOE_BACKEND_CPU, 0, &cpu) == MOE_OK && cpu.compute_units > 0) {
        threads = cpu.compute_units / s->local_ranks;
        if (threads < 1) threads = 1;
    }
    const int rc = bench_context_create(&t, threads, &s->ctx, &s->info);
    if (rc) fprintf(stderr, BENCH_PROG ": (rank %d)\n", s->rank);
    return rc;
}

/* The node's ranks each hold the float32 host weights and the input pool, and together (at
 * most) every layer's experts: refused with BENCH_EXIT_MEMORY when that exceeds the host's. */
static int check_node_memory(const ep_state *s, const moe_layer_desc *d)
{
    uint64_t total = 0;
    const uint64_t avail = bench_host_available(&total);
    if (avail == 0) return 0;
    moe_layer_desc f32 = *d;
    f32.weight_dtype = f32.shared_weight_dtype = MOE_DTYPE_F32;
    const double pool = (double)s->data.rows * (double)(s->plan.max_layers + 1) * (double)d->d_model * 4.0;
    double layers = 0.0;
    for (size_t i = 0; i < s->plan.n; i++)
        if ((double)s->plan.f[i].layers * s->plan.f[i].layer_bytes > layers)
            layers = (double)s->plan.f[i].layers * s->plan.f[i].layer_bytes;
    const double need = (double)s->local_ranks * (bench_all_weight_bytes(&f32) + pool) + layers;
    if (need <= 0.95 * (double)avail) return 0;
    if (s->local_rank == 0)
        fprintf(stderr,
                BENCH_PROG ": --ep: the %d ranks on this host need %.2f GiB (each the float32 host weights "
                           "and inputs, together the layers' experts), more than the %.2f GiB available\n",
                s->local_ranks, need / 1073741824.0, (double)avail / 1073741824.0);
    return BENCH_EXIT_MEMORY;
}

/* The slowest rank's time per forward, the figures of every rank, and the reference check. */
typedef struct ep_point {
    const moe_layer_desc *d;
    moe_dtype act; /* what the layers ran */
    int64_t asked, global, layers;
    bench_summary step; /* ms */
    ep_figures *per_rank;
    int64_t ref_tokens; /* 0: not compared */
    double ref_rel_l2;
} ep_point;

static double hide_gbs(const ep_figures *f)
{
    const double bytes = f->bytes_sent > f->bytes_received ? f->bytes_sent : f->bytes_received;
    return f->compute_ms > 0.0 ? bytes / (f->compute_ms * 1e-3) / 1e9 : 0.0;
}

static double max_exchange_share(const ep_point *p, int ranks)
{
    double share = 0.0;
    for (int r = 0; r < ranks; r++)
        if (p->per_rank[r].wall_ms > 0.0 && p->per_rank[r].exchange_ms / p->per_rank[r].wall_ms > share)
            share = p->per_rank[r].exchange_ms / p->per_rank[r].wall_ms;
    return share;
}

static void print_point(const ep_state *s, const ep_point *p)
{
    char label[BENCH_LABEL_BYTES];
    bench_format_label(p->d->weight_dtype, p->d->down_weight_dtype, p->act, 0, 0, label, sizeof label);
    char scale[64];
    if (s->c.ep == BENCH_EP_WEAK)
        snprintf(scale, sizeof scale, "%" PRId64 " per rank", p->asked);
    else
        snprintf(scale, sizeof scale, "split over %d rank%s", s->ranks, s->ranks == 1 ? "" : "s");
    double hide = 0.0;
    for (int r = 0; r < s->ranks; r++)
        if (hide_gbs(&p->per_rank[r]) > hide) hide = hide_gbs(&p->per_rank[r]);
    printf("%s  T=%" PRId64 " (%s): %.3f ms per forward (the slowest rank's, median of %zu), %.1f tokens/s; "
           "exchange up to %.0f%% of a rank's time; it hides behind compute on links of >= %.2f GB/s\n",
           label, p->global, scale, p->step.median, p->step.n,
           p->step.median > 0.0 ? (double)p->global / (p->step.median * 1e-3) : 0.0,
           100.0 * max_exchange_share(p, s->ranks), hide);
    printf("   rank  tokens  experts        wall ms  exchange ms  compute ms  rows out  rows in    KiB out"
           "     KiB in  hides at GB/s\n");
    for (int r = 0; r < s->ranks; r++) {
        const ep_figures *f = &p->per_rank[r];
        char experts[40];
        snprintf(experts, sizeof experts, "[%.0f,%.0f)", f->first_expert, f->first_expert + f->n_experts);
        printf("   %4d  %6.0f  %-12s %9.3f  %11.3f  %10.3f  %8.1f  %7.1f  %9.1f  %9.1f  %13.2f\n", r,
               f->tokens, experts, f->wall_ms, f->exchange_ms, f->compute_ms, f->rows_sent, f->rows_received,
               f->bytes_sent / 1024.0, f->bytes_received / 1024.0, hide_gbs(f));
    }
    if (p->ref_tokens > 0)
        printf("   check: rank 0's first %" PRId64 " tokens against the scalar reference on the format's "
               "weights: rel L2 %.2e\n",
               p->ref_tokens, p->ref_rel_l2);
    fflush(stdout);
}

static cJSON *point_json(const ep_state *s, const ep_point *p)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char isa[32];
    bench_isa_from_driver(s->info.driver, isa, sizeof isa);
    moe_layer_desc d = *p->d;
    d.activation_dtype = p->act;
    bench_json_common(o, "ep", moe_backend_name(moe_context_backend(s->ctx)), s->info.name, s->info.index,
                      s->info.driver, isa, s->info.compute_units, bench_preset_name(s->c.preset), p->global,
                      &d);
    cJSON_AddStringToObject(o, "scaling", bench_choice_name(bench_ep_choices, s->c.ep));
    cJSON_AddNumberToObject(o, "ranks", s->ranks);
    cJSON_AddNumberToObject(o, "hosts", s->hosts);
    cJSON_AddNumberToObject(o, "tokens_asked", (double)p->asked);
    cJSON_AddNumberToObject(o, "warmup", (double)s->c.warmup);
    cJSON_AddNumberToObject(o, "iters", (double)p->step.n);
    cJSON_AddNumberToObject(o, "layers", (double)p->layers);
    bench_summary sec = p->step; /* bench_json_summary_ms takes seconds */
    sec.min *= 1e-3, sec.median *= 1e-3, sec.mean *= 1e-3, sec.stddev *= 1e-3;
    sec.p95 *= 1e-3, sec.p99 *= 1e-3, sec.max *= 1e-3;
    bench_json_add_or_null(o, "step_ms", bench_json_summary_ms(&sec), 1);
    cJSON_AddNumberToObject(o, "tokens_per_s",
                            p->step.median > 0.0 ? (double)p->global / (p->step.median * 1e-3) : 0.0);
    cJSON_AddNumberToObject(o, "flops", bench_forward_flops(p->d, p->global));
    cJSON_AddNumberToObject(o, "exchange_share", max_exchange_share(p, s->ranks));
    double hide = 0.0;
    cJSON *ranks = cJSON_AddArrayToObject(o, "per_rank");
    for (int r = 0; r < s->ranks && ranks; r++) {
        const ep_figures *f = &p->per_rank[r];
        cJSON *q = cJSON_CreateObject();
        if (!q || !cJSON_AddItemToArray(ranks, q)) {
            cJSON_Delete(q);
            break;
        }
        cJSON_AddNumberToObject(q, "rank", r);
        cJSON_AddNumberToObject(q, "tokens", f->tokens);
        cJSON_AddNumberToObject(q, "first_expert", f->first_expert);
        cJSON_AddNumberToObject(q, "n_experts", f->n_experts);
        cJSON_AddNumberToObject(q, "wall_ms", f->wall_ms);
        cJSON_AddNumberToObject(q, "exchange_ms", f->exchange_ms);
        cJSON_AddNumberToObject(q, "compute_ms", f->compute_ms);
        cJSON_AddNumberToObject(q, "first_forward_ms", f->first_ms);
        cJSON_AddNumberToObject(q, "rows_sent", f->rows_sent);
        cJSON_AddNumberToObject(q, "rows_received", f->rows_received);
        cJSON_AddNumberToObject(q, "bytes_sent", f->bytes_sent);
        cJSON_AddNumberToObject(q, "bytes_received", f->bytes_received);
        cJSON_AddNumberToObject(q, "hide_gbs", hide_gbs(f));
        if (hide_gbs(f) > hide) hide = hide_gbs(f);
    }
    cJSON_AddNumberToObject(o, "hide_gbs", hide);
    cJSON *ref = p->ref_tokens > 0 ? cJSON_CreateObject() : NULL;
    if (ref) {
        cJSON_AddNumberToObject(ref, "tokens", (double)p->ref_tokens);
        cJSON_AddNumberToObject(ref, "rel_l2", p->ref_rel_l2);
    }
    bench_json_add_or_null(o, "reference", ref, ref != NULL);
    return o;
}

/* The forwards of one (format, token count) on this rank: the first, the warm-up, then the
 * timed ones, each after a barrier, cycling through the layers; fills *f. Rank 0 keeps its output
 * of the first forward (layer 0) in s->y_first when `keep` rows are asked for. The per-forward wall
 * times go to wall[iters] for the slowest-rank reduction. */
static int run_forwards(ep_state *s, moe_layer *const *layers, int64_t n_layers, int64_t asked, int64_t keep,
                        ep_figures *f, double *wall, double *exchange)
{
    const bench_config *c = &s->c;
    int64_t first_row = 0;
    const int64_t t = rank_tokens(s, asked, s->rank, &first_row);
    const int64_t dm = c->d_model, iters = c->iters, n = 1 + c->warmup + iters;
    double sent = 0.0, received = 0.0, rows_out = 0.0, rows_in = 0.0;
    for (int64_t it = 0; it < n; it++) {
        const int64_t l = it % n_layers;
        const float *x = bench_data_x(&s->data, l, dm) + (size_t)first_row * (size_t)dm;
        moe_ep_stats a = {.struct_size = sizeof a}, b = {.struct_size = sizeof b};
        MPI_Barrier(MPI_COMM_WORLD);
        moe_layer_get_ep_stats(layers[l], &a);
        const double t0 = bench_now();
        /* A collective call: a failure on any rank fails it on every rank. */
        const moe_status st = moe_layer_forward(layers[l], t, x, s->data.y, NULL);
        const double t1 = bench_now();
        if (st != MOE_OK) return library_error(s, "moe_layer_forward", st);
        moe_layer_get_ep_stats(layers[l], &b);
        if (it == 0) {
            f->first_ms = (t1 - t0) * 1e3;
            if (keep > 0) memcpy(s->y_first, s->data.y, (size_t)keep * (size_t)dm * sizeof(float));
        }
        if (it <= c->warmup) continue;
        const int64_t k = it - 1 - c->warmup;
        wall[k] = (t1 - t0) * 1e3;
        exchange[k] = b.exchange_ms - a.exchange_ms;
        sent += b.bytes_sent - a.bytes_sent;
        received += b.bytes_received - a.bytes_received;
        rows_out += (double)(b.rows_sent - a.rows_sent);
        rows_in += (double)(b.rows_received - a.rows_received);
    }
    double *compute = malloc((size_t)iters * sizeof *compute), *tmp = malloc((size_t)iters * sizeof *tmp);
    if (!compute || !tmp) {
        free(compute);
        free(tmp);
        fprintf(stderr, BENCH_PROG ": rank %d: out of host memory\n", s->rank);
        return BENCH_EXIT_LIBRARY;
    }
    for (int64_t k = 0; k < iters; k++) compute[k] = wall[k] - exchange[k];
    f->tokens = (double)t;
    f->first_expert = (double)s->first_expert;
    f->n_experts = (double)s->n_local;
    memcpy(tmp, wall, (size_t)iters * sizeof *tmp);
    f->wall_ms = bench_summarize(tmp, (size_t)iters).median;
    memcpy(tmp, exchange, (size_t)iters * sizeof *tmp);
    f->exchange_ms = bench_summarize(tmp, (size_t)iters).median;
    f->compute_ms = bench_summarize(compute, (size_t)iters).median;
    f->rows_sent = rows_out / (double)iters;
    f->rows_received = rows_in / (double)iters;
    f->bytes_sent = sent / (double)iters;
    f->bytes_received = received / (double)iters;
    free(compute);
    free(tmp);
    return 0;
}

static void destroy_layers(moe_layer **layers, int64_t n)
{
    for (int64_t l = 0; l < n; l++) {
        moe_layer_destroy(layers[l]);
        layers[l] = NULL;
    }
}

/* Every token count of format fi: its layers (made again only when the capacity changes with
 * the token count), the forwards, and on rank 0 the report. */
static int run_format(ep_state *s, size_t fi)
{
    const bench_config *c = &s->c;
    const bench_format_plan *fp = &s->plan.f[fi];
    moe_layer **layers = calloc((size_t)fp->layers, sizeof *layers);
    double *wall = malloc((size_t)c->iters * sizeof *wall),
           *exchange = malloc((size_t)c->iters * sizeof *exchange);
    double *step = malloc((size_t)c->iters * sizeof *step);
    ep_figures *all = calloc((size_t)s->ranks, sizeof *all);
    int rc = layers && wall && exchange && step && all ? 0 : BENCH_EXIT_LIBRARY;
    if (rc) fprintf(stderr, BENCH_PROG ": rank %d: out of host memory\n", s->rank);
    rc = agree(rc);
    int64_t capacity = -1;
    int have = 0;
    const int64_t largest = bench_max_tokens(c);
    for (size_t j = 0; j < s->n_tokens && !rc; j++) {
        const int64_t global = global_tokens(s, s->asked[j]);
        moe_layer_desc d = bench_make_desc(c, global, s->max_local, fp->dtype);
        d.activation_dtype = fp->act;
        if (!have || d.expert_capacity != capacity) {
            destroy_layers(layers, fp->layers);
            have = 0;
            const moe_layer_weights w = local_weights(s, &d);
            for (int64_t l = 0; l < fp->layers && !rc; l++) {
                const moe_status st = moe_mpi_layer_create(s->ctx, MPI_COMM_WORLD, &d, &w, &layers[l]);
                if (st != MOE_OK) rc = library_error(s, "moe_mpi_layer_create", st);
            }
            rc = agree(rc); /* creation is collective: it failed everywhere or nowhere */
            if (rc) break;
            have = 1;
            capacity = d.expert_capacity;
        }
        /* Rank 0 checks its first tokens of the largest count against the reference (without a
         * capacity: with one, which rows a token keeps depends on the other ranks' tokens too). */
        int64_t first_row = 0;
        const int64_t mine = rank_tokens(s, s->asked[j], 0, &first_row);
        int64_t keep = 0;
        if (s->rank == 0 && !c->no_ref && global == largest && d.expert_capacity == 0 && mine > 0) {
            keep = c->ref_tokens > 0 ? c->ref_tokens : bench_default_ref_tokens(&d, mine);
            if (keep > mine) keep = mine;
        }
        ep_figures mine_fig = {0};
        rc = agree(run_forwards(s, layers, fp->layers, s->asked[j], keep, &mine_fig, wall, exchange));
        if (rc) break;
        if (MPI_Gather(&mine_fig, EP_FIGURES, MPI_DOUBLE, all, EP_FIGURES, MPI_DOUBLE, 0, MPI_COMM_WORLD) !=
                MPI_SUCCESS ||
            MPI_Reduce(wall, step, (int)c->iters, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
            rc = BENCH_EXIT_LIBRARY;
            break;
        }
        if (s->rank == 0) {
            ep_point p = {.d = &d,
                          .act = moe_layer_activation_dtype(layers[0]),
                          .asked = s->asked[j],
                          .global = global,
                          .layers = fp->layers,
                          .step = bench_summarize(step, (size_t)c->iters),
                          .per_rank = all};
            if (keep > 0) {
                /* The reference on the format's weights, as the layer stores them. */
                moe_layer_desc rd = d;
                rd.max_tokens = keep;
                rd.activation_dtype = p.act;
                const moe_layer_weights w = bench_data_weights(&s->data);
                float *y = malloc((size_t)keep * (size_t)d.d_model * sizeof *y);
                if (y && moe_reference_forward(&rd, &w, keep, bench_data_x(&s->data, 0, d.d_model), y,
                                               NULL) == MOE_OK) {
                    p.ref_tokens = keep;
                    p.ref_rel_l2 = bench_rel_l2(s->y_first, y, (size_t)keep * (size_t)d.d_model);
                }
                free(y);
            }
            print_point(s, &p);
            cJSON *o = s->json ? point_json(s, &p) : NULL;
            if (s->json && (!o || !cJSON_AddItemToArray(s->json, o))) {
                cJSON_Delete(o);
                fprintf(stderr, BENCH_PROG ": out of memory building the JSON\n");
                rc = BENCH_EXIT_LIBRARY;
            }
        }
        rc = agree(rc);
    }
    if (layers) destroy_layers(layers, fp->layers);
    free(layers);
    free(wall);
    free(exchange);
    free(step);
    free(all);
    return rc;
}

/* The partition, the hosts, the context, the plan and the data; rank 0 prints the header. */
static int prepare(ep_state *s, int64_t *global_list, size_t n)
{
    bench_config *c = &s->c;
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return BENCH_EXIT_LIBRARY;
    MPI_Comm_rank(node, &s->local_rank);
    MPI_Comm_size(node, &s->local_ranks);
    MPI_Comm_free(&node);
    int leaders = 0, leader = s->local_rank == 0;
    MPI_Allreduce(&leader, &leaders, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    s->hosts = leaders;
    moe_ep_partition(c->experts, s->ranks, s->rank, &s->first_expert, &s->n_local);

    /* The sweep in global token counts: the plan, the input pool and the capacities see those. */
    s->max_local = 1;
    for (size_t j = 0; j < n; j++) {
        int64_t first_row = 0;
        const int64_t t0 = rank_tokens(s, s->asked[j], 0, &first_row); /* rank 0 brings the most */
        if (t0 > s->max_local) s->max_local = t0;
        global_list[j] = global_tokens(s, s->asked[j]);
    }
    c->sweep_tokens.n = n;
    memcpy(c->sweep_tokens.v, global_list, n * sizeof *global_list);
    c->tokens = global_list[0];

    int rc = agree(make_context(s));
    if (rc) return rc;
    const char *llc_source = NULL;
    const uint64_t llc = bench_llc_bytes(&llc_source);
    rc = agree(bench_plan_make(c, &s->info, 1, llc, llc_source, &s->plan));
    if (rc) return rc;
    const int64_t largest = bench_max_tokens(c);
    const moe_layer_desc d = bench_make_desc(c, largest, largest, MOE_DTYPE_F32);
    rc = agree(bench_data_make(c, &d, s->plan.max_layers, &s->data));
    if (!rc) rc = agree(check_node_memory(s, &d));
    if (!rc && s->rank == 0) {
        s->y_first = malloc((size_t)s->max_local * (size_t)d.d_model * sizeof *s->y_first);
        if (!s->y_first) {
            fprintf(stderr, BENCH_PROG ": out of host memory\n");
            rc = BENCH_EXIT_LIBRARY;
        }
    }
    rc = agree(rc);
    if (rc) return rc;

    int64_t *ranges = s->rank == 0 ? malloc((size_t)s->ranks * 2 * sizeof *ranges) : NULL;
    rc = agree(s->rank == 0 && !ranges ? BENCH_EXIT_LIBRARY : 0);
    if (rc) return rc;
    const int64_t mine[2] = {s->first_expert, s->n_local};
    MPI_Gather(mine, 2, MPI_INT64_T, ranges, 2, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (s->rank == 0) {
        char version[MPI_MAX_LIBRARY_VERSION_STRING];
        int len = 0;
        MPI_Get_library_version(version, &len);
        version[strcspn(version, ",\n")] = '\0';
        bench_print_header(stdout, moe_context_backend(s->ctx), &s->info);
        printf("expert parallelism (--ep %s): %d rank%s on %d host%s, %s; each rank its own context, "
               "%d %s; the ranks' tokens in rank order are the layer's input\n",
               bench_choice_name(bench_ep_choices, c->ep), s->ranks, s->ranks == 1 ? "" : "s", s->hosts,
               s->hosts == 1 ? "" : "s", version, s->info.compute_units,
               moe_context_backend(s->ctx) != MOE_BACKEND_CPU ? "compute units"
               : s->info.compute_units == 1                   ? "thread"
                                                              : "threads");
        printf("experts:");
        for (int r = 0; r < s->ranks; r++)
            printf(" rank %d [%" PRId64 ",%" PRId64 ")%s", r, ranges[2 * r],
                   ranges[2 * r] + ranges[2 * r + 1], r + 1 < s->ranks ? "," : "\n");
        bench_print_layer(stdout, c, &d, s->data.hot_tokens);
        bench_print_plan(stdout, c, &s->plan);
        printf(
            "each timed forward starts after a barrier; a rank's wall time = its compute + its time inside "
            "the "
            "exchange (which includes waiting for slower ranks); bytes are what crosses to or from other "
            "ranks per forward; 'hides at' = the link bandwidth (per direction) at which a rank's exchange "
            "takes no longer than its compute\n");
        fflush(stdout);
    }
    free(ranges);
    return 0;
}

int bench_ep_run(const bench_config *cfg)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        fprintf(stderr, BENCH_PROG ": --ep: MPI_Init failed\n");
        return BENCH_EXIT_LIBRARY;
    }
    static ep_state s; /* large; zero-initialised */
    s.c = *cfg;
    MPI_Comm_rank(MPI_COMM_WORLD, &s.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &s.ranks);
    if (s.c.iters == 0) s.c.iters = 10; /* a fixed count: every rank runs the same forwards */
    int64_t asked[BENCH_LIST_MAX], global[BENCH_LIST_MAX];
    s.n_tokens = bench_token_list(cfg, asked, BENCH_LIST_MAX);
    s.asked = asked;
    int rc = 0;
    if (s.rank == 0 && cfg->json_path) {
        FILE *f = fopen(cfg->json_path, "a"); /* fail now, not after a long run */
        if (!f) {
            fprintf(stderr, BENCH_PROG ": cannot write --json %s\n", cfg->json_path);
            rc = BENCH_EXIT_USAGE;
        } else {
            fclose(f);
            s.json = cJSON_CreateArray();
            if (!s.json) rc = BENCH_EXIT_LIBRARY;
        }
    }
    rc = agree(rc);
    if (!rc) rc = prepare(&s, global, s.n_tokens);
    for (size_t fi = 0; fi < s.plan.n && !rc; fi++) rc = run_format(&s, fi);
    if (!rc && s.json) {
        rc = bench_json_write(cfg->json_path, s.json);
        if (!rc) printf("json: %s\n", cfg->json_path);
    }
    rc = agree(rc);
    cJSON_Delete(s.json);
    moe_context_destroy(s.ctx);
    bench_data_free(&s.data);
    free(s.y_first);
    MPI_Finalize();
    return rc;
}
