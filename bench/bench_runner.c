/*
 * bench_runner.c — the measuring half of moe-bench (see bench_runner.h): target selection,
 * reproducible weights scaled like a trained layer (uniform in ±1/sqrt(fan_in), inputs
 * uniform in ±1, so routing is realistic rather than degenerate) with an input per layer, the
 * --hot-expert skew, the timed forwards round a cycle of layers with wall and device time, the
 * routing of each layer, and the scalar reference. Uses only the public API.
 */
#include "bench_runner.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MIN_TIMED_ITERS = 5,  /* with --min-time: at least this many timed forwards, */
    SLOW_TIMED_ITERS = 2, /* or this many once SLOW_FACTOR x --min-time has passed */
    SLOW_FACTOR = 10,
    MAX_TIMED_ITERS = 1000000, /* with --min-time: at most this many */
    DEFAULT_REF_TOKENS = 16,
    MAX_REF_RUNS = 9
};
#define REF_MIN_TIME    0.25  /* seconds: the reference is rerun while its total is below this */
#define REF_FLOP_BUDGET 1e9   /* default reference tokens: about this many FLOPs */
#define BIAS_BOUND      0.05f /* selection bias uniform in ±this (scores are O(1)) */
#define HOT_LOGIT       3.0   /* --hot-expert: logit added to expert 0 (logits' spread is ~1/3) */

int bench_library_error(const char *what, moe_status st, const moe_context *ctx)
{
    const char *detail = ctx ? moe_context_error(ctx) : "";
    if (!detail || !*detail) detail = moe_last_error();
    fprintf(stderr, BENCH_PROG ": %s failed: %s%s%s\n", what, moe_status_string(st),
            detail && *detail ? ": " : "", detail ? detail : "");
    return BENCH_EXIT_LIBRARY;
}

/* ---- targets ---------------------------------------------------------------------------- */

static void append_note(char *note, size_t size, const char *text)
{
    const size_t len = strlen(note);
    if (len + 3 >= size) return;
    snprintf(note + len, size - len, "%s%s", len ? "; " : "", text);
}

size_t bench_targets(const bench_config *cfg, bench_target *out, size_t cap, char *note, size_t note_size)
{
    note[0] = '\0';
    if (cfg->backend != BENCH_BACKEND_ALL) {
        out[0] = (bench_target){(moe_backend_kind)cfg->backend, cfg->device < 0 ? 0 : (int)cfg->device,
                                cfg->device_sel};
        return 1;
    }
    static const moe_backend_kind kinds[] = {MOE_BACKEND_CPU, MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL};
    size_t n = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *name = moe_backend_name(kinds[i]);
        char text[96];
        int count = 0;
        const moe_status st = moe_device_count(kinds[i], &count);
        if (st != MOE_OK) {
            snprintf(text, sizeof text, "%s: %s", name,
                     st == MOE_ERROR_BACKEND_UNAVAILABLE ? "not built" : moe_status_string(st));
            append_note(note, note_size, text);
            continue;
        }
        if (count == 0) {
            snprintf(text, sizeof text, "%s: no device", name);
            append_note(note, note_size, text);
        } else if (cfg->device >= count) {
            snprintf(text, sizeof text, "%s: no device %d", name, (int)cfg->device);
            append_note(note, note_size, text);
        }
        if (cfg->device_sel) { /* every device the name or type leaves: the library matches them */
            int matched = 0;
            for (int dev = 0; dev < count && n < cap; dev++) {
                moe_context_desc cd = {.struct_size = sizeof cd, .backend = kinds[i], .device_index = dev};
                moe_context *probe = NULL;
                if (moe_context_desc_set_device(&cd, cfg->device_sel) != MOE_OK ||
                    moe_context_create(&cd, &probe) != MOE_OK)
                    break;
                moe_context_destroy(probe);
                out[n++] = (bench_target){kinds[i], dev, cfg->device_sel};
                matched++;
            }
            if (count > 0 && matched == 0) {
                snprintf(text, sizeof text, "%s: no device matches '%s'", name, cfg->device_sel);
                append_note(note, note_size, text);
            }
            continue;
        }
        for (int dev = 0; dev < count && n < cap; dev++)
            if (cfg->device < 0 || dev == cfg->device) out[n++] = (bench_target){kinds[i], dev, NULL};
    }
    if (n == 0) fprintf(stderr, BENCH_PROG ": --backend all: no backend has a device (%s)\n", note);
    return n;
}

void bench_isa_from_driver(const char *driver, char *isa, size_t size)
{
    static const char prefix[] = "moe cpu ";
    if (strncmp(driver, prefix, sizeof prefix - 1) != 0) {
        snprintf(isa, size, "-");
        return;
    }
    const char *p = driver + sizeof prefix - 1;
    const size_t len = strcspn(p, " (");
    snprintf(isa, size, "%.*s", (int)len, p);
}

/* --kernel-times' sums, by name, while `on` (the timed forwards of one result). moe-bench times on
 * one thread, and the flag is refused where a library thread of its own would log (an expert
 * cache's uploads and parts run on one). */
static struct {
    int enabled, on;
    bench_kernel_times sums; /* ms and calls summed, not yet per forward */
} kernel_log_state;

void bench_kernel_times_enable(void)
{
    kernel_log_state.enabled = 1;
}

/* A context's log: "BACKEND: NAME  X ms", nothing after, is one dispatch's device time; every
 * other message (pipeline caches, build logs, warnings) is not moe-bench's to show. */
static void kernel_log(moe_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (!kernel_log_state.on || level != MOE_LOG_DEBUG) return;
    char backend[16], name[BENCH_KERNEL_NAME];
    double ms;
    int end = -1;
    if (sscanf(message, "%15[a-z]: %23s %lf ms%n", backend, name, &ms, &end) != 3 || end < 0 ||
        message[end] != '\0')
        return;
    bench_kernel_times *k = &kernel_log_state.sums;
    int i = 0;
    while (i < k->n && strcmp(k->name[i], name) != 0) i++;
    if (i == k->n) {
        if (k->n == BENCH_MAX_KERNELS) return;
        snprintf(k->name[k->n++], BENCH_KERNEL_NAME, "%s", name);
    }
    k->ms[i] += ms;
    k->calls[i] += 1.0;
}

int bench_context_create(const bench_target *t, int64_t threads, moe_context **out, moe_device_info *info)
{
    moe_context_desc cd;
    memset(&cd, 0, sizeof cd);
    cd.struct_size = sizeof cd;
    cd.backend = t->kind;
    cd.device_index = t->device;
    cd.n_threads = (int)threads;
    if (kernel_log_state.enabled) {
        cd.log = kernel_log;
        cd.log_level = MOE_LOG_DEBUG;
    }
    moe_status st = t->sel ? moe_context_desc_set_device(&cd, t->sel) : MOE_OK;
    if (st == MOE_OK) st = moe_context_create(&cd, out);
    if (st != MOE_OK) return bench_library_error("moe_context_create", st, NULL);
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    st = moe_context_get_device_info(*out, info);
    if (st != MOE_OK) {
        const int rc = bench_library_error("moe_context_get_device_info", st, *out);
        moe_context_destroy(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

/* ---- data ------------------------------------------------------------------------------- */

void bench_data_free(bench_data *b)
{
    float *all[] = {
        b->router,      b->router_bias,        b->gate, b->up, b->down,      b->shared_gate, b->shared_up,
        b->shared_down, b->shared_expert_gate, b->x,    b->y,  b->gate_bias, b->up_bias,     b->down_bias,
        b->trace_x};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    memset(b, 0, sizeof *b);
}

/* --hot-expert: push a seeded share of the input rows (of every layer's input) toward
 * expert 0 by adding (HOT_LOGIT / |r0|²)·r0, which raises that row's expert-0 logit by
 * HOT_LOGIT and moves the others only by the (small) overlap of router rows. Returns the rows
 * pushed in layer 0's input. */
static int64_t skew_inputs(const bench_config *c, const moe_layer_desc *d, bench_data *b)
{
    const float *r0 = b->router;
    double norm2 = 0.0;
    for (int64_t i = 0; i < d->d_model; i++) norm2 += (double)r0[i] * r0[i];
    if (!(norm2 > 0.0)) return 0;
    const float coef = (float)(HOT_LOGIT / norm2);
    bench_rng rng;
    bench_rng_seed(&rng, c->seed ^ 0x486f74457870ull); /* its own stream: the base data stays */
    int64_t hot = 0;
    for (int64_t t = 0; t < b->rows * b->layers; t++) {
        if (!(bench_rng_uniform(&rng) < c->hot_expert)) continue;
        float *x = b->x + (size_t)t * (size_t)d->d_model;
        for (int64_t i = 0; i < d->d_model; i++) x[i] += coef * r0[i];
        hot += t < b->rows;
    }
    return hot;
}

const float *bench_data_x(const bench_data *b, int64_t layer, int64_t d_model)
{
    return b->x + (size_t)layer * (size_t)b->rows * (size_t)d_model;
}

int bench_data_make(const bench_config *c, const moe_layer_desc *d, int64_t layers, bench_data *b)
{
    memset(b, 0, sizeof *b);
    const int gated = bench_desc_gated(d), shared = d->d_ff_shared > 0;
    const int64_t rows = bench_max_tokens(c);
    const float in_bound = (float)(1.0 / sqrt((double)d->d_model));
    const float ff_bound = (float)(1.0 / sqrt((double)d->d_ff));
    const float sh_bound = shared ? (float)(1.0 / sqrt((double)d->d_ff_shared)) : 0.0f;
    const struct {
        float **dst;
        int needed;
        int64_t a, b, c;
        float bound;
        const char *what;
    } arrays[] = {
        {&b->router, 1, d->n_experts, d->d_model, 1, in_bound, "router"},
        {&b->router_bias, d->has_selection_bias, d->n_experts, 1, 1, BIAS_BOUND, "router_bias"},
        {&b->gate, gated, d->n_experts, d->d_ff, d->d_model, in_bound, "gate"},
        {&b->up, 1, d->n_experts, d->d_ff, d->d_model, in_bound, "up"},
        {&b->down, 1, d->n_experts, d->d_model, d->d_ff, ff_bound, "down"},
        {&b->shared_gate, shared && gated, d->d_ff_shared, d->d_model, 1, in_bound, "shared_gate"},
        {&b->shared_up, shared, d->d_ff_shared, d->d_model, 1, in_bound, "shared_up"},
        {&b->shared_down, shared, d->d_model, d->d_ff_shared, 1, sh_bound, "shared_down"},
        {&b->shared_expert_gate, shared && d->shared_expert_gate, d->d_model, 1, 1, in_bound,
         "shared_expert_gate"},
        /* Filled in order from one stream, so layer 0's input is the same whatever the count. */
        {&b->x, 1, rows, layers, d->d_model, 1.0f, "x"},
        {&b->y, 1, rows, d->d_model, 1, 0.0f, "y"},
        /* After x: the weights and inputs stay those of a run without them. The router's own bias
         * (gpt-oss) about as large as its logits. */
        {&b->router_bias, d->router_has_bias, d->n_experts, 1, 1, 1.0f, "router_bias"},
        {&b->gate_bias, d->expert_has_bias && gated, d->n_experts, d->d_ff, 1, 1.0f, "gate_bias"},
        {&b->up_bias, d->expert_has_bias, d->n_experts, d->d_ff, 1, 1.0f, "up_bias"},
        {&b->down_bias, d->expert_has_bias, d->n_experts, d->d_model, 1, 1.0f, "down_bias"},
    };
    enum { N_ARRAYS = sizeof arrays / sizeof arrays[0] };
    size_t count[N_ARRAYS];
    for (size_t i = 0; i < N_ARRAYS; i++) {
        count[i] = 0;
        if (!arrays[i].needed) continue;
        if (!bench_mul_size(arrays[i].a, arrays[i].b, arrays[i].c, &count[i]) ||
            count[i] > SIZE_MAX / sizeof(float)) {
            fprintf(stderr,
                    BENCH_PROG ": the shape is too large: %s (%" PRId64 " x %" PRId64 " x %" PRId64
                               " floats) does not fit in memory\n",
                    arrays[i].what, arrays[i].a, arrays[i].b, arrays[i].c);
            return BENCH_EXIT_MEMORY;
        }
    }
    for (size_t i = 0; i < N_ARRAYS; i++) {
        if (!arrays[i].needed) continue;
        *arrays[i].dst = malloc(count[i] * sizeof(float));
        if (!*arrays[i].dst) {
            fprintf(stderr, BENCH_PROG ": out of host memory allocating %s (%zu bytes)\n", arrays[i].what,
                    count[i] * sizeof(float));
            bench_data_free(b);
            return BENCH_EXIT_MEMORY;
        }
    }
    b->rows = rows;
    b->layers = layers;
    bench_rng rng;
    bench_rng_seed(&rng, c->seed);
    for (size_t i = 0; i < N_ARRAYS; i++)
        if (arrays[i].needed && arrays[i].bound > 0.0f)
            bench_fill_uniform(&rng, *arrays[i].dst, count[i], arrays[i].bound);
    if (c->hot_expert > 0.0) b->hot_tokens = skew_inputs(c, d, b);
    return 0;
}

moe_layer_weights bench_data_weights(const bench_data *b)
{
    moe_layer_weights w;
    memset(&w, 0, sizeof w);
    w.struct_size = sizeof w;
    w.router = b->router;
    w.router_bias = b->router_bias;
    w.gate = b->gate;
    w.up = b->up;
    w.down = b->down;
    w.shared_gate = b->shared_gate;
    w.shared_up = b->shared_up;
    w.shared_down = b->shared_down;
    w.shared_expert_gate = b->shared_expert_gate;
    w.gate_bias = b->gate_bias;
    w.up_bias = b->up_bias;
    w.down_bias = b->down_bias;
    return w;
}

/* ---- the reference ---------------------------------------------------------------------- */

int64_t bench_default_ref_tokens(const moe_layer_desc *d, int64_t max_tokens)
{
    const double per_token = bench_forward_flops(d, 1);
    int64_t n = per_token > 0.0 ? (int64_t)(REF_FLOP_BUDGET / per_token) : DEFAULT_REF_TOKENS;
    if (n > DEFAULT_REF_TOKENS) n = DEFAULT_REF_TOKENS;
    if (n > max_tokens) n = max_tokens;
    return n < 1 ? 1 : n;
}

int bench_reference_run(const bench_config *c, const moe_layer_desc *d, const bench_data *b,
                        bench_reference *r)
{
    (void)c;
    const size_t n_out = (size_t)r->tokens * (size_t)d->d_model;
    r->y = malloc(n_out * sizeof *r->y);
    if (!r->y) {
        fprintf(stderr, BENCH_PROG ": out of host memory for the reference output\n");
        return BENCH_EXIT_LIBRARY;
    }
    const moe_layer_weights w = bench_data_weights(b);
    double times[MAX_REF_RUNS], total = 0.0;
    int n = 0;
    while (n < MAX_REF_RUNS && (n == 0 || total < REF_MIN_TIME)) {
        const double t0 = bench_now();
        const moe_status st = moe_reference_forward(d, &w, r->tokens, b->x, r->y, NULL);
        const double t1 = bench_now();
        if (st != MOE_OK) {
            free(r->y);
            r->y = NULL;
            return bench_library_error("moe_reference_forward", st, NULL);
        }
        times[n++] = t1 - t0;
        total += t1 - t0;
    }
    const bench_summary s = bench_summarize(times, (size_t)n);
    r->runs = n;
    r->seconds = s.median;
    return 0;
}

/* ---- measuring -------------------------------------------------------------------------- */

double bench_forward_weight_bytes(const moe_layer_desc *d, const int32_t *expert_counts)
{
    double b = bench_fixed_weight_bytes(d);
    for (int64_t e = 0; e < d->n_experts; e++)
        if (expert_counts[e] > 0) b += bench_expert_bytes(d);
    return b;
}

static void progress(bench_run_progress *p, double within)
{
    if (!p || !p->bar) return;
    if (within > 1.0) within = 1.0;
    bench_progress_update(p->bar, ((double)p->point + within) / (double)(p->n_points ? p->n_points : 1),
                          p->label);
}

/* The layers of a measurement, cycled in order: `next` is the layer the next forward runs, and
 * with a trace `pos` the trace forward it runs. */
typedef struct layer_cycle {
    moe_layer *const *layers;
    int64_t n, next, d_model, pos;
    const bench_data *b;
} layer_cycle;

/* One forward of the cycle's next layer on its own input; then the next layer is the one after.
 * With a trace every layer runs trace forward `pos` in turn, as a model's layers all see one
 * decode step, and the step moves on when the cycle returns to layer 0. */
static moe_status cycle_forward(layer_cycle *cy, int64_t tokens, float *y, moe_forward_stats *stats)
{
    const int64_t i = cy->next;
    const bench_data *b = cy->b;
    const float *x =
        b->trace_x ? b->trace_x + cy->pos * tokens * cy->d_model : bench_data_x(b, i, cy->d_model);
    cy->next = (i + 1) % cy->n;
    if (b->trace_x && cy->next == 0) cy->pos = (cy->pos + 1) % b->trace->forwards;
    return moe_layer_forward(cy->layers[i], tokens, x, y, stats);
}

/* What the layers' caches and contexts have done so far (cumulative since their creation): the
 * timed forwards' share is the difference of two of these. */
typedef struct placement_counts {
    int64_t hits, misses, uploads, evictions;
    double upload_bytes, upload_ms, context_ms[2];
    size_t bytes;
} placement_counts;

static int read_placement(moe_context *ctx, const layer_cycle *cy, int cached, placement_counts *out)
{
    memset(out, 0, sizeof *out);
    for (int64_t l = 0; l < cy->n; l++) {
        double ms[2] = {0.0, 0.0};
        moe_status st = moe_layer_get_context_ms(cy->layers[l], 2, ms);
        if (st != MOE_OK) return bench_library_error("moe_layer_get_context_ms", st, ctx);
        out->context_ms[0] += ms[0];
        out->context_ms[1] += ms[1];
        if (!cached) continue;
        moe_expert_cache_stats cs;
        memset(&cs, 0, sizeof cs);
        cs.struct_size = sizeof cs;
        st = moe_layer_get_cache_stats(cy->layers[l], &cs);
        if (st != MOE_OK) return bench_library_error("moe_layer_get_cache_stats", st, ctx);
        out->hits += cs.hits;
        out->misses += cs.misses;
        out->uploads += cs.uploads;
        out->evictions += cs.evictions;
        out->upload_bytes += (double)cs.upload_bytes;
        out->upload_ms += cs.upload_ms;
        out->bytes += cs.bytes;
    }
    return 0;
}

/* The per-forward series time_forwards keeps: wall and device seconds, and with a placed layer
 * each context's device ms (NULL otherwise). */
enum { N_SERIES = 4 };
typedef struct forward_series {
    double *v[N_SERIES]; /* wall, dev, context 0, context 1 */
    int n_series;
} forward_series;

static void series_free(forward_series *s)
{
    for (int i = 0; i < N_SERIES; i++) {
        free(s->v[i]);
        s->v[i] = NULL;
    }
}

/* Each series to cap entries; false (the series as they were) when out of memory. */
static bool series_grow(forward_series *s, size_t cap)
{
    for (int i = 0; i < s->n_series; i++) {
        double *g = realloc(s->v[i], cap * sizeof *g);
        if (!g) return false;
        s->v[i] = g;
    }
    return true;
}

/* Whether a series of n timed forwards taking `total` seconds is long enough: exactly
 * cfg->iters of them, or (iters 0) as many as fit in min_time seconds, at least MIN_TIMED_ITERS. */
static bool series_done(const bench_config *c, size_t n, double total)
{
    if (c->iters > 0) return n == (size_t)c->iters;
    return (n >= MIN_TIMED_ITERS && total >= c->min_time) || n >= MAX_TIMED_ITERS ||
           (n >= SLOW_TIMED_ITERS && total >= SLOW_FACTOR * c->min_time);
}

/* Timed forwards of n_runs cycles, one forward of each in turn (n_runs 1: one run's, back to
 * back; --interleave: every run of a target), until each run's series is done (series_done);
 * their series in out[k], their common count in *out_n. */
static int time_forwards(const bench_config *c, moe_context *ctx, layer_cycle *cy, size_t n_runs,
                         int64_t tokens, bench_data *b, bench_run_progress *prog, int placed,
                         forward_series *out, size_t *out_n)
{
    size_t cap = c->iters > 0 ? (size_t)c->iters : 64, n = 0;
    double total[BENCH_MAX_FORMATS] = {0.0};
    bool grown = true;
    for (size_t k = 0; k < n_runs; k++) {
        out[k] = (forward_series){{NULL}, placed ? 4 : 2};
        grown = grown && series_grow(&out[k], cap);
    }
    if (!grown) {
        for (size_t k = 0; k < n_runs; k++) series_free(&out[k]);
        fprintf(stderr, BENCH_PROG ": out of host memory for %zu timings\n", cap);
        return BENCH_EXIT_LIBRARY;
    }
    for (;;) {
        bool done = true;
        for (size_t k = 0; k < n_runs; k++) done = done && series_done(c, n, total[k]);
        if (done) break;
        if (n == cap) {
            bool ok = true;
            for (size_t k = 0; k < n_runs; k++) ok = ok && series_grow(&out[k], 2 * cap);
            if (!ok) break; /* enough samples already; keep what we have */
            cap *= 2;
        }
        for (size_t k = 0; k < n_runs; k++) {
            forward_series *s = &out[k];
            double device_ms = 0.0, ctx_before[2] = {0.0, 0.0}, ctx_after[2] = {0.0, 0.0};
            moe_forward_stats stats;
            memset(&stats, 0, sizeof stats);
            stats.struct_size = sizeof stats;
            stats.device_ms = &device_ms;
            moe_layer *layer = cy[k].layers[cy[k].next];
            moe_status st = placed ? moe_layer_get_context_ms(layer, 2, ctx_before) : MOE_OK;
            const double t0 = bench_now();
            if (st == MOE_OK) st = cycle_forward(&cy[k], tokens, b->y, &stats);
            const double t1 = bench_now();
            if (st == MOE_OK && placed) st = moe_layer_get_context_ms(layer, 2, ctx_after);
            if (st != MOE_OK) {
                for (size_t j = 0; j < n_runs; j++) series_free(&out[j]);
                return bench_library_error("moe_layer_forward", st, ctx);
            }
            s->v[0][n] = t1 - t0;
            s->v[1][n] = device_ms * 1e-3;
            for (int i = 0; placed && i < 2; i++) s->v[2 + i][n] = ctx_after[i] - ctx_before[i];
            total[k] += t1 - t0;
        }
        n++;
        double least = 1.0; /* the run furthest from done */
        for (size_t k = 0; k < n_runs; k++) {
            const double by = c->iters > 0 ? (double)n / (double)c->iters : total[k] / c->min_time;
            if (by < least) least = by;
        }
        progress(prog, least);
    }
    *out_n = n;
    return 0;
}

/* One untimed forward of every layer with per-expert counts: the weight bytes each reads and
 * its routing, averaged (maxed) over the layers into *r. Layer 0 runs last, so b->y ends as its
 * output on its input (what the reference is compared with). */
static int count_routing(moe_context *ctx, const layer_cycle *cy, const moe_layer_desc *d, int64_t tokens,
                         bench_data *b, bench_result *r)
{
    int32_t *counts = calloc((size_t)d->n_experts, sizeof *counts);
    if (!counts) {
        fprintf(stderr, BENCH_PROG ": out of host memory for %" PRId64 " expert counts\n", d->n_experts);
        return BENCH_EXIT_LIBRARY;
    }
    double bytes = 0.0, active = 0.0, dropped_sum = 0.0;
    int64_t max_rows = 0;
    for (int64_t l = cy->n - 1; l >= 0; l--) {
        int32_t dropped = 0;
        moe_forward_stats stats;
        memset(&stats, 0, sizeof stats);
        stats.struct_size = sizeof stats;
        stats.expert_counts = counts;
        stats.dropped_count = &dropped;
        const moe_status st =
            moe_layer_forward(cy->layers[l], tokens, bench_data_x(b, l, d->d_model), b->y, &stats);
        if (st != MOE_OK) {
            free(counts);
            return bench_library_error("moe_layer_forward (routing counts)", st, ctx);
        }
        bytes += bench_forward_weight_bytes(d, counts);
        for (int64_t e = 0; e < d->n_experts; e++) {
            active += counts[e] > 0;
            if (counts[e] > max_rows) max_rows = counts[e];
        }
        dropped_sum += dropped;
    }
    free(counts);
    r->weight_read_bytes = bytes / (double)cy->n;
    r->experts_active = active / (double)cy->n;
    r->max_expert_rows = max_rows;
    r->dropped_rows = dropped_sum / (double)cy->n;
    return 0;
}

/* One chain of the cycle's layers in order, each on its own input buffer, all into `y`: a wait
 * after each layer, or (async) one at the end. */
static moe_status run_chain(const layer_cycle *cy, moe_context *ctx, moe_buffer *const *x, moe_buffer *y,
                            int64_t tokens, int async)
{
    moe_status st = MOE_OK;
    for (int64_t i = 0; i < cy->n && st == MOE_OK; i++)
        st = async ? moe_layer_forward_async(cy->layers[i], tokens, x[i], y)
                   : moe_layer_forward_buffers(cy->layers[i], tokens, x[i], y, NULL);
    const moe_status w = moe_context_wait(ctx);
    return st != MOE_OK ? st : w;
}

/* --async: chains with a wait per layer and with one wait, alternately (so drift on a shared
 * machine touches both alike), until --min-time has passed for both (at least MIN_TIMED_ITERS
 * each) or --iters each. Each layer reads its own input — a real chain feeds one layer's output
 * to the next, but these random layers would shrink the activations to denormals within a few
 * layers (no residuals, no norms) and time the CPU's denormal arithmetic; the device orders
 * the forwards the same either way (each writes y, which the next also writes). */
static int time_chains(const bench_config *c, moe_context *ctx, const layer_cycle *cy, int64_t tokens,
                       bench_result *r)
{
    const int64_t d_model = cy->d_model;
    moe_buffer **x = calloc((size_t)cy->n, sizeof *x), *y = NULL;
    size_t cap = c->iters > 0 ? (size_t)c->iters : 1024, n = 0;
    double *t_waits = malloc(cap * sizeof(double)), *t_one = malloc(cap * sizeof(double)), total = 0.0;
    int rc = 0;
    moe_status st = MOE_OK;
    const char *call = "moe_buffer_create";
    if (!x || !t_waits || !t_one) {
        fprintf(stderr, BENCH_PROG ": out of host memory for the --async chains\n");
        rc = BENCH_EXIT_LIBRARY;
    }
    for (int64_t i = 0; rc == 0 && st == MOE_OK && i < cy->n; i++) {
        st = moe_buffer_create(ctx, tokens * d_model, &x[i]);
        if (st == MOE_OK) st = moe_buffer_write(x[i], 0, tokens * d_model, bench_data_x(cy->b, i, d_model));
    }
    if (rc == 0 && st == MOE_OK) st = moe_buffer_create(ctx, tokens * d_model, &y);
    if (rc == 0 && st == MOE_OK) {
        call = "a chain of forwards";
        st = run_chain(cy, ctx, x, y, tokens, 1); /* untimed: the first use of the buffers */
    }
    while (rc == 0 && st == MOE_OK && n < cap) {
        if (c->iters == 0 && n >= MIN_TIMED_ITERS && total >= c->min_time) break;
        double t0 = bench_now();
        st = run_chain(cy, ctx, x, y, tokens, 0);
        double t1 = bench_now();
        if (st != MOE_OK) break;
        t_waits[n] = t1 - t0;
        t0 = bench_now();
        st = run_chain(cy, ctx, x, y, tokens, 1);
        t1 = bench_now();
        t_one[n] = t1 - t0;
        total += t_one[n] + t_waits[n];
        n += st == MOE_OK;
    }
    if (rc == 0 && st != MOE_OK) rc = bench_library_error(call, st, ctx);
    if (rc == 0) {
        r->chain_waits = bench_summarize(t_waits, n);
        r->chain_one_wait = bench_summarize(t_one, n);
    }
    for (int64_t i = 0; x && i < cy->n; i++) moe_buffer_destroy(x[i]);
    moe_buffer_destroy(y);
    free(x);
    free(t_waits);
    free(t_one);
    return rc;
}

/* The first forward (layer 0), always run and reported on its own (first_wall / first_device),
 * so kernel compilation on a cold cache is never folded into the statistics; then --warmup
 * forwards (the first one counts), cut short once they have taken --min-time, continuing the
 * cycle. */
static int warm_up(const bench_config *c, moe_context *ctx, layer_cycle *cy, int64_t tokens, bench_data *b,
                   bench_result *r)
{
    double first_device_ms = 0.0;
    moe_forward_stats first;
    memset(&first, 0, sizeof first);
    first.struct_size = sizeof first;
    first.device_ms = &first_device_ms;
    const double warm_start = bench_now();
    moe_status st = cycle_forward(cy, tokens, b->y, &first);
    if (st != MOE_OK) return bench_library_error("moe_layer_forward (first)", st, ctx);
    r->first_wall = bench_now() - warm_start;
    r->first_device = first_device_ms * 1e-3;
    for (int64_t i = 1; i < c->warmup; i++) {
        st = cycle_forward(cy, tokens, b->y, NULL);
        if (st != MOE_OK) return bench_library_error("moe_layer_forward (warm-up)", st, ctx);
        if (c->iters == 0 && bench_now() - warm_start >= c->min_time) break;
    }
    return 0;
}

/* r's latency figures from a run's n timed forwards; with one context (not placed) also its
 * device ms per forward. */
static void summarize_series(const forward_series *s, size_t n, int placed, bench_result *r)
{
    double dev_sum = 0.0;
    for (size_t i = 0; i < n; i++) dev_sum += s->v[1][i];
    r->wall = bench_summarize(s->v[0], n);
    if (dev_sum > 0.0) r->dev_time = bench_summarize(s->v[1], n);
    if (placed && n > 0) {
        r->has_context_dist = 1;
        for (int k = 0; k < 2; k++) {
            const bench_summary per = bench_summarize(s->v[2 + k], n);
            r->context_median_ms[k] = per.median;
            r->context_p95_ms[k] = per.p95;
        }
    }
    if (!placed && dev_sum > 0.0) { /* one context: the forwards' own device time */
        r->has_context_ms = 1;
        r->context_ms[0] = dev_sum * 1e3 / (double)n;
    }
}

/* After the timed forwards: the chains (--async), one forward of each layer with per-expert
 * counts (b->y ends as layer 0's output), the trace's routing figures, the arena and the
 * description. */
static int measure_finish(const bench_config *c, moe_context *ctx, layer_cycle *cy, const moe_layer_desc *d,
                          int64_t tokens, bench_data *b, const bench_trace_routing *routing, bench_result *r)
{
    int rc = 0;
    if (c->async) {
        rc = time_chains(c, ctx, cy, tokens, r);
        if (rc) return rc;
    }
    rc = count_routing(ctx, cy, d, tokens, b, r);
    if (rc) return rc;
    if (b->trace_x) { /* what the timed forwards routed: the trace's, not the layers' own inputs' */
        r->weight_read_bytes = routing->weight_read_bytes;
        r->experts_active = routing->experts_active;
        r->max_expert_rows = routing->max_expert_rows;
        r->dropped_rows = routing->dropped_rows;
        r->trace_forwards = b->trace->forwards;
    }

    moe_arena_stats arena;
    memset(&arena, 0, sizeof arena);
    arena.struct_size = sizeof arena;
    const moe_status st = moe_context_get_arena_stats(ctx, &arena);
    if (st != MOE_OK) return bench_library_error("moe_context_get_arena_stats", st, ctx);
    r->arena_peak_bytes = arena.scratch_peak_bytes;
    r->arena_weights_bytes = arena.weights_bytes;
    r->arena_scratch_bytes = arena.scratch_bytes;

    r->desc = *d;
    r->hot_expert = c->hot_expert;
    r->tokens = tokens;
    r->warmup = c->warmup;
    r->preset = bench_preset_name(c->preset);
    r->flops = bench_forward_flops(d, tokens);
    r->trace_reuse = b->trace_x ? c->trace_reuse : -1.0;
    r->trace_file = b->trace_x ? c->trace_path : NULL;
    return 0;
}

int bench_measure(const bench_config *c, moe_context *ctx, moe_layer *const *layers, int64_t n_layers,
                  const moe_layer_desc *d, int64_t tokens, bench_data *b, bench_run_progress *prog,
                  bench_result *r)
{
    layer_cycle cy = {layers, n_layers, 0, d->d_model, 0, b};
    progress(prog, 0.0);
    int rc = warm_up(c, ctx, &cy, tokens, b, r);
    if (rc) return rc;
    bench_trace_routing routing = {0};
    if (b->trace_x) {
        rc = bench_trace_verify(layers[0], ctx, d, b->trace, b->trace_x, &routing);
        if (rc) return rc;
    }
    const int placed = r->cpu_experts > 0, cached = r->cache_slots > 0;
    placement_counts before = {0}, after = {0};
    if (placed && (rc = read_placement(ctx, &cy, cached, &before))) return rc;
    forward_series series = {{NULL}, 0};
    size_t n = 0;
    memset(&kernel_log_state.sums, 0, sizeof kernel_log_state.sums);
    kernel_log_state.on = kernel_log_state.enabled;
    rc = time_forwards(c, ctx, &cy, 1, tokens, b, prog, placed, &series, &n);
    kernel_log_state.on = 0;
    if (rc) return rc;
    if (kernel_log_state.enabled && n > 0) {
        r->has_kernels = 1;
        r->kernels = kernel_log_state.sums;
        for (int i = 0; i < r->kernels.n; i++) {
            r->kernels.ms[i] /= (double)n;
            r->kernels.calls[i] /= (double)n;
        }
    }
    if (placed && (rc = read_placement(ctx, &cy, cached, &after))) {
        series_free(&series);
        return rc;
    }
    summarize_series(&series, n, placed, r);
    series_free(&series);
    if (placed) {
        r->has_context_ms = 1;
        for (int k = 0; k < 2; k++)
            r->context_ms[k] = (after.context_ms[k] - before.context_ms[k]) / (double)n;
        r->cache_hits = after.hits - before.hits;
        r->cache_misses = after.misses - before.misses;
        r->cache_uploads = after.uploads - before.uploads;
        r->cache_evictions = after.evictions - before.evictions;
        r->cache_upload_bytes = after.upload_bytes - before.upload_bytes;
        r->cache_upload_ms = after.upload_ms - before.upload_ms;
        r->cache_bytes = after.bytes;
    }
    return measure_finish(c, ctx, &cy, d, tokens, b, &routing, r);
}

int bench_measure_interleaved(const bench_config *c, moe_context *ctx, moe_layer **const *layers,
                              const int64_t *n_layers, const moe_layer_desc *d, size_t n_runs, int64_t tokens,
                              bench_data *b, bench_run_progress *prog, bench_result *r,
                              bench_result_fn finished, void *user)
{
    if (n_runs < 1 || n_runs > BENCH_MAX_FORMATS) {
        fprintf(stderr, BENCH_PROG ": %zu runs to interleave (1..%d)\n", n_runs, (int)BENCH_MAX_FORMATS);
        return BENCH_EXIT_LIBRARY;
    }
    layer_cycle cy[BENCH_MAX_FORMATS];
    progress(prog, 0.0);
    int rc = 0;
    for (size_t k = 0; k < n_runs && !rc; k++) {
        cy[k] = (layer_cycle){layers[k], n_layers[k], 0, d[k].d_model, 0, b};
        rc = warm_up(c, ctx, &cy[k], tokens, b, &r[k]);
    }
    if (rc) return rc;
    forward_series series[BENCH_MAX_FORMATS];
    size_t n = 0;
    rc = time_forwards(c, ctx, cy, n_runs, tokens, b, prog, 0, series, &n);
    if (rc) return rc;
    const bench_trace_routing none = {0};
    for (size_t k = 0; k < n_runs; k++) {
        summarize_series(&series[k], n, 0, &r[k]);
        series_free(&series[k]);
        r[k].interleaved = (int)n_runs;
        if (!rc) rc = measure_finish(c, ctx, &cy[k], &d[k], tokens, b, &none, &r[k]);
        if (!rc && finished) rc = finished(user, k, &r[k]);
    }
    return rc;
}
