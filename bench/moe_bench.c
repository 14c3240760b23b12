/*
 * moe_bench.c — moe-bench's main: parse the command line, pick the targets (one backend, or
 * every backend with a device), plan each weight format's layers and refuse what does not fit
 * in memory, measure the machine's read bandwidth, make the float32 weights once, time the
 * scalar reference once, then measure every (target, format, token count) — each format's
 * layers made from the same host weights and destroyed before the next format's — and print
 * the table, or run the serving simulation on each (target, format); and write the JSON.
 *
 * The pieces: bench_flags.c (flags), bench_presets.c (model presets, shape arithmetic),
 * bench_plan.c (layer counts, memory guard), bench_machine.c (cache size, read bandwidth),
 * bench_runner.c (data, timing), bench_report.c (table, JSON), bench_serve.c (serving
 * simulation), bench_trace.c (routing traces), bench_argparse.c (the option parser),
 * bench_util.c (clock, statistics), bench_ep.c (--ep: expert parallelism under mpirun, built
 * with moe_mpi).
 */
#include "bench_config.h"
#include "bench_ep.h"
#include "bench_machine.h"
#include "bench_plan.h"
#include "bench_report.h"
#include "bench_runner.h"
#include "bench_serve.h"
#include "bench_util.h"

#include <cjson/cJSON.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run_state {
    const bench_config *cfg;
    bench_target targets[BENCH_MAX_TARGETS];
    moe_context *ctx[BENCH_MAX_TARGETS];
    moe_device_info info[BENCH_MAX_TARGETS];
    size_t n_targets;
    bench_plan plan;
    bench_bandwidth bw; /* gbs 0: not measured */
    bench_data data;
    bench_reference ref;
    int has_ref;
    /* The reference on each non-f32 format's weights (f32 storage: ref.y), made on first use:
     * what the format's layer should give, apart from what the format itself costs. */
    float *fmt_ref[BENCH_MAX_FORMATS];
    float *act_ref[BENCH_MAX_FORMATS]; /* int8 runs: the same weights with float32 activations */
    moe_context *cpu_ctx; /* --cpu-experts N > 0: the CPU context that holds those experts, made on
                             first use and shared by every target (each run's layers are destroyed
                             before the next run's are made) */
    bench_trace trace;    /* --trace-reuse / --trace: the routing the timed forwards follow */
    int label_width;      /* of the table's weights column */
    cJSON *json;
    bench_progress bar;
} run_state;

static moe_backend_kind target_kind(const run_state *rs, size_t i)
{
    return rs->ctx[i] ? moe_context_backend(rs->ctx[i]) : rs->targets[i].kind;
}

/* Adds a JSON object to the output array (a no-op without --json). */
static int json_add(run_state *rs, cJSON *o)
{
    if (!rs->json) {
        cJSON_Delete(o);
        return 0;
    }
    if (!o || !cJSON_AddItemToArray(rs->json, o)) {
        cJSON_Delete(o);
        fprintf(stderr, BENCH_PROG ": out of memory building the JSON\n");
        return BENCH_EXIT_LIBRARY;
    }
    return 0;
}

/* The scalar reference on format fi's weights (the float32 weights converted as the layer
 * converts them), on the reference tokens; NULL when it is the float32 run or fails. */
static const float *format_reference(run_state *rs, float **cache, const moe_layer_desc *d)
{
    if (d->weight_dtype == MOE_DTYPE_F32 && d->activation_dtype == MOE_DTYPE_F32) return rs->ref.y;
    if (*cache) return *cache;
    const size_t n = (size_t)rs->ref.tokens * (size_t)d->d_model;
    float *y = malloc(n * sizeof *y);
    const moe_layer_weights w = bench_data_weights(&rs->data);
    if (!y || moe_reference_forward(d, &w, rs->ref.tokens, rs->data.x, y, NULL) != MOE_OK) {
        free(y);
        return NULL;
    }
    return *cache = y;
}

/* Compares the layer's output on the first reference tokens with the reference's: the one on
 * the format's own weights (the kernels' error) and the float32 one (plus what the format
 * rounds away: the quality the format costs). */
static void compare_reference(run_state *rs, size_t fi, const moe_layer_desc *d, bench_result *r)
{
    const size_t n = (size_t)rs->ref.tokens * (size_t)d->d_model;
    r->ref_max_abs_diff = 0.0;
    r->ref_max_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)rs->data.y[i] - (double)rs->ref.y[i]);
        const double mag = fabs((double)rs->ref.y[i]);
        if (!(diff <= r->ref_max_abs_diff)) r->ref_max_abs_diff = diff; /* NaN sticks */
        if (mag > r->ref_max_abs) r->ref_max_abs = mag;
    }
    r->format_rel_l2 = bench_rel_l2(rs->data.y, rs->ref.y, n);
    /* Runs that differ only in --cpu-experts share the format's reference: made once. */
    const bench_format_plan *f = rs->plan.f;
    for (size_t j = 0; j < fi; j++)
        if (f[j].dtype == f[fi].dtype && f[j].act == f[fi].act) {
            fi = j;
            break;
        }
    const float *own = format_reference(rs, &rs->fmt_ref[fi], d);
    r->ref_rel_l2 = own ? bench_rel_l2(rs->data.y, own, n) : NAN;
    if (d->activation_dtype != MOE_DTYPE_F32) {
        moe_layer_desc fd = *d;
        fd.activation_dtype = MOE_DTYPE_F32;
        const float *fl = format_reference(rs, &rs->act_ref[fi], &fd);
        r->act_rel_l2 = fl ? bench_rel_l2(rs->data.y, fl, n) : NAN;
    }
    r->ref_compared = 1;
}

static void destroy_layers(moe_layer **layers, int64_t n)
{
    for (int64_t l = 0; l < n; l++) {
        moe_layer_destroy(layers[l]);
        layers[l] = NULL;
    }
}

/* One layer of d on target i; with f->cpu_experts > 0 placed over {the target (home), the CPU
 * context}, the last cpu_experts experts on the CPU, as `expert_context` says; with
 * f->cache_slots > 0 an expert cache of that many slots on the target for copies of them. */
static moe_status create_layer(run_state *rs, size_t i, const moe_layer_desc *d, const bench_format_plan *f,
                               const int32_t *expert_context, moe_layer **out)
{
    const bench_config *c = rs->cfg;
    const moe_layer_weights w = bench_data_weights(&rs->data);
    if (f->cpu_experts == 0) return moe_layer_create(rs->ctx[i], d, &w, out);
    moe_context *const contexts[2] = {rs->ctx[i], rs->cpu_ctx};
    const moe_expert_cache_desc cache = {.struct_size = sizeof cache,
                                         .context = 0,
                                         .slots = f->cache_slots,
                                         .policy = c->cache_policy < 0 ? MOE_CACHE_LRU
                                                                       : (moe_cache_policy)c->cache_policy,
                                         .min_rows = c->cache_min_rows < 0 ? 0 : c->cache_min_rows};
    const moe_placement p = {.struct_size = sizeof p,
                             .n_contexts = 2,
                             .contexts = contexts,
                             .home = c->home == BENCH_HOME_CPU ? 1 : 0,
                             .expert_context = expert_context,
                             .cache = f->cache_slots > 0 ? &cache : NULL};
    return moe_layer_create_placed(&p, d, &w, out);
}

/* n layers of d on target i, each uploaded from the same host weights (the library converts
 * or quantises them to d's formats); *weights_bytes: what the target's arena gained (with
 * --interleave it holds other runs' layers too); *create_seconds: the wall time of the layers'
 * creations, all of them. */
static int create_layers(run_state *rs, size_t i, const moe_layer_desc *d, bench_format_plan *f,
                         moe_layer **layers, bench_run_progress *prog, size_t *weights_bytes,
                         double *create_seconds)
{
    int32_t *expert_context = NULL;
    if (f->cpu_experts > 0) {
        if (!rs->cpu_ctx) {
            const bench_target cpu = {.kind = MOE_BACKEND_CPU};
            moe_device_info info;
            const int rc = bench_context_create(&cpu, rs->cfg->threads, &rs->cpu_ctx, &info);
            if (rc) return rc;
        }
        expert_context = malloc((size_t)d->n_experts * sizeof *expert_context);
        if (!expert_context) {
            fprintf(stderr, BENCH_PROG ": out of host memory\n");
            return BENCH_EXIT_LIBRARY;
        }
        for (int64_t e = 0; e < d->n_experts; e++) expert_context[e] = e >= d->n_experts - f->cpu_experts;
    }
    char label[sizeof prog->label + 64];
    int rc = 0;
    moe_arena_stats before = {.struct_size = sizeof before}, arena = {.struct_size = sizeof arena};
    moe_context_get_arena_stats(rs->ctx[i], &before);
    *create_seconds = 0.0;
    for (int64_t l = 0; l < f->layers && !rc; l++) {
        const int64_t n = f->layers;
        snprintf(label, sizeof label, "%.*s: uploading layer %" PRId64 "/%" PRId64, (int)sizeof prog->label,
                 prog->label, l + 1, n);
        bench_progress_update(&rs->bar, (double)prog->point / (double)(prog->n_points ? prog->n_points : 1),
                              label);
        const double t0 = bench_now();
        const moe_status st = create_layer(rs, i, d, f, expert_context, &layers[l]);
        *create_seconds += bench_now() - t0;
        if (st != MOE_OK) {
            destroy_layers(layers, l);
            rc = bench_library_error(f->cpu_experts ? "moe_layer_create_placed" : "moe_layer_create", st,
                                     rs->ctx[i]);
            break;
        }
        if (l == 0) { /* the plan assumed the format's bytes: check what the backend stores */
            moe_context_get_arena_stats(rs->ctx[i], &arena);
            rc = bench_plan_refit(rs->cfg, &rs->info[i], (double)(arena.weights_bytes - before.weights_bytes),
                                  f);
            if (rc) destroy_layers(layers, 1);
        }
    }
    free(expert_context);
    moe_context_get_arena_stats(rs->ctx[i], &arena);
    *weights_bytes = arena.weights_bytes - before.weights_bytes;
    return rc;
}

/* The format's line above its rows (arena_weights_bytes: its layers' bytes on the target), and
 * a note where it asked for int8 activations that the device does not run. */
static void print_header(run_state *rs, size_t i, const bench_format_plan *f, moe_layer *const *layers,
                         size_t arena_weights_bytes, double create_seconds)
{
    moe_arena_stats cpu = {.struct_size = sizeof cpu};
    if (f->cpu_experts > 0) moe_context_get_arena_stats(rs->cpu_ctx, &cpu);
    size_t cache_bytes = 0;
    for (int64_t l = 0; l < f->layers && f->cache_slots > 0; l++) {
        moe_expert_cache_stats cs = {.struct_size = sizeof cs};
        if (moe_layer_get_cache_stats(layers[l], &cs) == MOE_OK) cache_bytes += cs.bytes;
    }
    bench_progress_clear(&rs->bar);
    bench_print_format_header(stdout, moe_backend_name(target_kind(rs, i)), rs->info[i].index, f,
                              arena_weights_bytes, cpu.weights_bytes, rs->cfg, cache_bytes, create_seconds);
    /* A placed layer reports an opt-in only when every context runs it: the CPU's experts may run
     * int8 behind a GPU's float ones. */
    if (f->act != MOE_DTYPE_F32 && moe_layer_activation_dtype(layers[0]) != f->act) {
        const char *what = f->act == MOE_DTYPE_BF16 ? "bfloat16-pair" : "int8";
        if (f->cpu_experts > 0)
            printf("   (asked for %s activations: the target has no %s path, so its experts run float32 "
                   "activations while the CPU's may run %s; the rows below say f32)\n",
                   what, what, what);
        else
            printf("   (asked for %s activations: this device has no %s path%s, so the rows below run "
                   "float32 activations)\n",
                   what, what, f->act == MOE_DTYPE_BF16 ? " (the CPU's needs AVX512_BF16)" : "");
    }
}

/* A result of format f, before it is measured: what the run places and caches. */
static void new_result(const bench_config *c, const bench_format_plan *f, bench_result *r)
{
    memset(r, 0, sizeof *r);
    r->cpu_experts = f->cpu_experts;
    r->cache_slots = f->cache_slots;
    r->cache_policy = c->cache_policy < 0 ? MOE_CACHE_LRU : c->cache_policy;
    r->home = c->home;
    r->cache_min_rows = c->cache_min_rows < 0 ? 0 : c->cache_min_rows;
}

/* A measured result of format fi on target i (rs->data.y: its layer 0's output): the device,
 * the layers, the bandwidth and the reference's figures, then its row and its JSON. */
static int report_result(run_state *rs, size_t i, size_t fi, const moe_layer_desc *d, bench_result *r)
{
    const bench_format_plan *f = &rs->plan.f[fi];
    bench_result_set_device(r, target_kind(rs, i), &rs->info[i]);
    r->layers = f->layers;
    r->layers_auto = f->auto_layers;
    r->cpu_experts = f->cpu_experts;
    r->read_bw_gbs = rs->bw.gbs;
    if (rs->has_ref) {
        r->has_ref = 1;
        r->ref_tokens = rs->ref.tokens;
        r->ref_seconds = rs->ref.seconds;
        r->ref_scaled_seconds = rs->ref.seconds * (double)r->tokens / (double)rs->ref.tokens;
        if (r->tokens == bench_max_tokens(rs->cfg)) compare_reference(rs, fi, d, r);
    }
    bench_progress_clear(&rs->bar);
    bench_print_row(stdout, r, rs->label_width);
    fflush(stdout);
    return json_add(rs, bench_result_json(r));
}

/* Every token count of one format on target i: the format's layers (recreated only when the
 * capacity changes with T), a result row per token count; the layers are destroyed at the
 * end, so the next format starts from an empty arena. */
static int run_format(run_state *rs, size_t i, size_t fi, const int64_t *tokens, size_t n_tokens,
                      bench_result *results, size_t *n_results)
{
    const bench_config *c = rs->cfg;
    bench_format_plan *f = &rs->plan.f[fi]; /* its layer count may shrink to what the backend fits */
    const int64_t max_t = bench_max_tokens(c);
    moe_layer **layers = calloc((size_t)f->layers, sizeof *layers);
    if (!layers) {
        fprintf(stderr, BENCH_PROG ": out of host memory\n");
        return BENCH_EXIT_LIBRARY;
    }
    int have = 0, rc = 0;
    int64_t layer_capacity = -1;
    double create_seconds = 0.0; /* the layers' last creation */
    bench_run_progress prog = {.bar = &rs->bar, .n_points = rs->n_targets * rs->plan.n * n_tokens};
    for (size_t j = 0; j < n_tokens && !rc; j++) {
        moe_layer_desc d = bench_make_desc(c, tokens[j], max_t, f->dtype);
        d.activation_dtype = f->act;
        prog.point = (i * rs->plan.n + fi) * n_tokens + j;
        char lbl[BENCH_LABEL_BYTES];
        snprintf(
            prog.label, sizeof prog.label, "%s %d %s, T=%" PRId64, moe_backend_name(target_kind(rs, i)),
            rs->info[i].index,
            bench_format_label(f->dtype, f->down, f->act, f->cpu_experts, f->cache_slots, lbl, sizeof lbl),
            tokens[j]);
        if (!have || d.expert_capacity != layer_capacity) {
            destroy_layers(layers, f->layers);
            have = 0;
            size_t weights_bytes = 0;
            rc = create_layers(rs, i, &d, f, layers, &prog, &weights_bytes, &create_seconds);
            if (rc) break;
            have = 1;
            if (layer_capacity < 0) /* the first time: the format's line above its rows */
                print_header(rs, i, f, layers, weights_bytes, create_seconds);
            layer_capacity = d.expert_capacity;
        }
        /* What the layers run (a backend without int8 dot products runs float32 activations):
         * the rows and the reference comparison say that, not what was asked. */
        d.activation_dtype = moe_layer_activation_dtype(layers[0]);
        bench_result *r = &results[*n_results];
        new_result(c, f, r);
        r->create_seconds = create_seconds;
        rc = bench_measure(c, rs->ctx[i], layers, f->layers, &d, tokens[j], &rs->data, &prog, r);
        if (rc) break;
        rc = report_result(rs, i, fi, &d, r);
        ++*n_results;
    }
    destroy_layers(layers, f->layers);
    free(layers);
    return rc;
}

/* --interleave: what bench_measure_interleaved's callback needs to report a run. */
typedef struct interleave_report {
    run_state *rs;
    size_t i;
    const moe_layer_desc *d; /* per run */
    const size_t *weights;   /* per run: its layers' bytes in the arena */
    size_t *n_results;
} interleave_report;

static int report_interleaved(void *user, size_t fi, bench_result *r)
{
    interleave_report *ir = user;
    r->arena_weights_bytes = ir->weights[fi];
    const int rc = report_result(ir->rs, ir->i, fi, &ir->d[fi], r);
    ++*ir->n_results;
    return rc;
}

/* --interleave: every run of target i at each token count, timed forward by forward in turn
 * (bench_measure_interleaved). Every run's layers are made first and kept (remade where the
 * capacity changes with T), each run's weights being what the arena gained while they were
 * made; their lines above the rows, then the rows in run order. */
static int run_interleaved(run_state *rs, size_t i, const int64_t *tokens, size_t n_tokens,
                           bench_result *results, size_t *n_results)
{
    const bench_config *c = rs->cfg;
    const size_t n = rs->plan.n;
    const int64_t max_t = bench_max_tokens(c);
    moe_layer **layers[BENCH_MAX_FORMATS] = {NULL};
    moe_layer_desc d[BENCH_MAX_FORMATS];
    int64_t n_layers[BENCH_MAX_FORMATS], capacity[BENCH_MAX_FORMATS];
    size_t weights[BENCH_MAX_FORMATS] = {0};
    double create_seconds[BENCH_MAX_FORMATS] = {0};
    int rc = 0;
    for (size_t fi = 0; fi < n && !rc; fi++) {
        capacity[fi] = -1;
        layers[fi] = calloc((size_t)rs->plan.f[fi].layers, sizeof *layers[fi]);
        if (!layers[fi]) {
            fprintf(stderr, BENCH_PROG ": out of host memory\n");
            rc = BENCH_EXIT_LIBRARY;
        }
    }
    bench_run_progress prog = {.bar = &rs->bar, .n_points = rs->n_targets * n_tokens};
    for (size_t j = 0; j < n_tokens && !rc; j++) {
        prog.point = i * n_tokens + j;
        snprintf(prog.label, sizeof prog.label, "%s %d, %zu runs in turn, T=%" PRId64,
                 moe_backend_name(target_kind(rs, i)), rs->info[i].index, n, tokens[j]);
        for (size_t fi = 0; fi < n && !rc; fi++) {
            bench_format_plan *f = &rs->plan.f[fi];
            d[fi] = bench_make_desc(c, tokens[j], max_t, f->dtype);
            d[fi].activation_dtype = f->act;
            if (capacity[fi] < 0 || d[fi].expert_capacity != capacity[fi]) {
                destroy_layers(layers[fi], f->layers);
                rc = create_layers(rs, i, &d[fi], f, layers[fi], &prog, &weights[fi], &create_seconds[fi]);
                if (rc) break;
                if (capacity[fi] < 0) print_header(rs, i, f, layers[fi], weights[fi], create_seconds[fi]);
                capacity[fi] = d[fi].expert_capacity;
            }
            d[fi].activation_dtype = moe_layer_activation_dtype(layers[fi][0]);
            n_layers[fi] = f->layers;
            new_result(c, f, &results[*n_results + fi]);
            results[*n_results + fi].create_seconds = create_seconds[fi];
        }
        if (rc) break;
        interleave_report ir = {rs, i, d, weights, n_results};
        rc = bench_measure_interleaved(c, rs->ctx[i], layers, n_layers, d, n, tokens[j], &rs->data, &prog,
                                       &results[*n_results], report_interleaved, &ir);
    }
    for (size_t fi = 0; fi < n; fi++) {
        if (layers[fi]) destroy_layers(layers[fi], rs->plan.f[fi].layers);
        free(layers[fi]);
    }
    return rc;
}

static int run_forward(run_state *rs)
{
    const bench_config *c = rs->cfg;
    int64_t tokens[BENCH_LIST_MAX];
    const size_t n_tokens = bench_token_list(c, tokens, BENCH_LIST_MAX);
    bench_result *results = calloc(rs->n_targets * rs->plan.n * n_tokens, sizeof *results);
    if (!results) {
        fprintf(stderr, BENCH_PROG ": out of host memory\n");
        return BENCH_EXIT_LIBRARY;
    }
    size_t n_results = 0;
    int rc = 0;
    rs->label_width = bench_label_width(c);
    bench_print_table_header(stdout, rs->label_width);
    fflush(stdout);
    for (size_t i = 0; i < rs->n_targets && !rc; i++) {
        if (c->interleave) {
            rc = run_interleaved(rs, i, tokens, n_tokens, results, &n_results);
            continue;
        }
        for (size_t fi = 0; fi < rs->plan.n && !rc; fi++)
            rc = run_format(rs, i, fi, tokens, n_tokens, results, &n_results);
    }
    bench_progress_clear(&rs->bar);
    for (size_t i = 0; i < n_results; i++) bench_print_bandwidth(stdout, &results[i]);
    for (size_t i = 0; i < n_results; i++) bench_print_placement(stdout, &results[i]);
    for (size_t i = 0; i < n_results; i++) bench_print_first(stdout, &results[i]);
    for (size_t i = 0; i < n_results; i++) bench_print_kernels(stdout, &results[i]);
    for (size_t i = 0; i < n_results; i++) bench_print_async(stdout, &results[i]);
    for (size_t i = 0; i < n_results; i++)
        if (results[i].ref_compared) bench_print_reference(stdout, &results[i]);
    if (rs->has_ref)
        printf("reference: moe_reference_forward on %" PRId64
               " tokens, %.3f ms per run (median of %d), scaled "
               "linearly to each T for the speedup\n",
               rs->ref.tokens, rs->ref.seconds * 1e3, rs->ref.runs);
    free(results);
    return rc;
}

static int run_serve(run_state *rs)
{
    int rc = 0;
    for (size_t i = 0; i < rs->n_targets && !rc; i++) {
        for (size_t fi = 0; fi < rs->plan.n && !rc; fi++) {
            bench_serve_result s;
            memset(&s, 0, sizeof s);
            rc = bench_serve_run(rs->cfg, &rs->targets[i], rs->plan.f[fi].dtype, &rs->data, &rs->bar, &s);
            bench_progress_clear(&rs->bar);
            if (rc) break;
            bench_print_serve(stdout, &s);
            fflush(stdout);
            rc = json_add(rs, bench_serve_json(&s));
        }
    }
    return rc;
}

/* The machine's read bandwidth, once per run with a CPU backend target (the figure its
 * forwards are compared with), on a buffer of max(8 x LLC, 1 GiB) — at most a quarter of the
 * available memory — with the CPU backend's threads. Returns why not, or "" when measured. */
static const char *measure_bandwidth(run_state *rs)
{
    enum { PASSES = 6 }; /* twice each stream count (bench_machine.c) */
    const bench_config *c = rs->cfg;
    int threads = 0;
    for (size_t i = 0; i < rs->n_targets; i++)
        if (target_kind(rs, i) == MOE_BACKEND_CPU && rs->info[i].compute_units > threads)
            threads = rs->info[i].compute_units;
    if (c->no_bandwidth) return "--no-bandwidth";
    if (c->serve) return "--serve reports no bandwidth";
    if (threads == 0) return "no CPU backend target";
    uint64_t bytes = 8 * rs->plan.llc_bytes, total = 0;
    if (bytes < (1ull << 30)) bytes = 1ull << 30;
    const uint64_t avail = bench_host_available(&total);
    if (avail > 0 && bytes > avail / 4) bytes = avail / 4;
    bench_progress_update(&rs->bar, 0.0, "measuring the read bandwidth");
    if (bench_measure_read_bandwidth(bytes, threads, PASSES, &rs->bw) != 0) return rs->bw.note;
    return "";
}

static int run(run_state *rs)
{
    const bench_config *c = rs->cfg;
    char note[512];
    rs->n_targets = bench_targets(c, rs->targets, BENCH_MAX_TARGETS, note, sizeof note);
    if (rs->n_targets == 0) return BENCH_EXIT_LIBRARY;
    if (c->kernel_times) bench_kernel_times_enable();
    for (size_t i = 0; i < rs->n_targets; i++) {
        /* Serve makes its own contexts (one per stream); this one only names the device. */
        const int rc = bench_context_create(&rs->targets[i], c->threads, &rs->ctx[i], &rs->info[i]);
        if (rc) return rc;
        bench_print_header(stdout, target_kind(rs, i), &rs->info[i]);
    }
    if (note[0]) printf("backends skipped: %s\n", note);
    if (c->serve)
        for (size_t i = 0; i < rs->n_targets; i++) {
            moe_context_destroy(rs->ctx[i]);
            rs->ctx[i] = NULL;
        }
    fflush(stdout);

    const char *llc_source = NULL;
    const uint64_t llc = bench_llc_bytes(&llc_source);
    int rc = bench_plan_make(c, rs->info, rs->n_targets, llc, llc_source, &rs->plan);
    if (rc) return rc;
    const char *why_not = measure_bandwidth(rs);
    bench_progress_clear(&rs->bar);
    bench_print_machine(stdout, &rs->plan, &rs->bw, why_not);
    const int64_t max_t = bench_max_tokens(c);
    const moe_layer_desc d = bench_make_desc(c, max_t, max_t, MOE_DTYPE_F32);
    rc = bench_data_make(c, &d, rs->plan.max_layers, &rs->data);
    if (rc) return rc;
    bench_print_layer(stdout, c, &d, rs->data.hot_tokens);
    if (rs->trace.ids) {
        bench_progress_update(&rs->bar, 0.0, "steering the inputs by the trace");
        rc = bench_trace_inputs(c, &d, rs->data.router, &rs->trace, &rs->data.trace_x, &rs->data.trace_exact);
        bench_progress_clear(&rs->bar);
        if (rc) return rc;
        rs->data.trace = &rs->trace;
        bench_print_trace(stdout, c, &rs->trace, rs->data.trace_exact);
    }
    bench_print_plan(stdout, c, &rs->plan);
    fflush(stdout);

    if (!c->no_ref && !c->serve) {
        rs->ref.tokens = c->ref_tokens > 0 ? c->ref_tokens : bench_default_ref_tokens(&d, max_t);
        bench_progress_update(&rs->bar, 0.0, "scalar reference");
        rc = bench_reference_run(c, &d, &rs->data, &rs->ref);
        if (rc) return rc;
        rs->has_ref = 1;
    }
    return c->serve ? run_serve(rs) : run_forward(rs);
}

/* The trace of --trace-reuse (generated, and written to --trace-out) or --trace (read and checked
 * against the run's shape), before anything is allocated: a bad file is a usage error. A file's
 * length becomes cfg->trace_forwards, which the memory plan counts. */
static int prepare_trace(bench_config *cfg, bench_trace *t)
{
    char err[512];
    if (cfg->trace_path) {
        if (bench_trace_load(cfg->trace_path, t, err, sizeof err) ||
            bench_trace_check_shape(t, cfg->experts, cfg->top_k, cfg->tokens, err, sizeof err)) {
            fprintf(stderr, BENCH_PROG ": --trace: %s\n", err);
            return BENCH_EXIT_USAGE;
        }
        if (bench_trace_check_size(cfg, t->forwards)) return BENCH_EXIT_USAGE;
        cfg->trace_forwards = t->forwards;
        return 0;
    }
    const int64_t forwards = cfg->trace_forwards > 0 ? cfg->trace_forwards : BENCH_TRACE_DEFAULT_FORWARDS;
    if (bench_trace_generate(cfg->experts, cfg->top_k, cfg->tokens, forwards, cfg->trace_reuse, cfg->seed,
                             t)) {
        fprintf(stderr, BENCH_PROG ": out of host memory for a trace of %" PRId64 " forwards\n", forwards);
        return BENCH_EXIT_LIBRARY;
    }
    if (cfg->trace_out && bench_trace_write(cfg->trace_out, t, err, sizeof err)) {
        fprintf(stderr, BENCH_PROG ": --trace-out: %s\n", err);
        return BENCH_EXIT_LIBRARY;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_config cfg;
    switch (bench_config_parse(&cfg, argc, argv)) {
    case BENCH_PARSE_OK:
        break;
    case BENCH_PARSE_HELP:
        return BENCH_EXIT_OK;
    case BENCH_PARSE_ERROR:
        fprintf(stderr, "run '" BENCH_PROG " --help' for the options\n");
        return BENCH_EXIT_USAGE;
    }
    if (cfg.list_presets) {
        bench_presets_list(stdout);
        return BENCH_EXIT_OK;
    }
    if (cfg.ep) {
#ifdef MOE_BENCH_EP
        return bench_ep_run(&cfg);
#else
        fprintf(stderr, BENCH_PROG ": --ep needs moe-bench built with MPI (CMake found none, or MOE_MPI=OFF; "
                                   "Debian: libopenmpi-dev)\n");
        return BENCH_EXIT_USAGE;
#endif
    }
    static run_state rs; /* large; zero-initialised */
    rs.cfg = &cfg;
    if (bench_trace_active(&cfg)) {
        const int rc = prepare_trace(&cfg, &rs.trace);
        if (rc) return rc;
    }
    if (cfg.json_path) {
        /* Fail now, not after a long run, when the file cannot be written. */
        FILE *f = fopen(cfg.json_path, "a");
        if (!f) {
            fprintf(stderr, BENCH_PROG ": cannot write --json %s\n", cfg.json_path);
            return BENCH_EXIT_USAGE;
        }
        fclose(f);
        rs.json = cJSON_CreateArray();
        if (!rs.json) {
            fprintf(stderr, BENCH_PROG ": out of memory\n");
            return BENCH_EXIT_LIBRARY;
        }
    }
    bench_progress_init(&rs.bar);
    int rc = run(&rs);
    bench_progress_clear(&rs.bar);
    if (!rc && rs.json) {
        rc = bench_json_write(cfg.json_path, rs.json);
        if (!rc) printf("json: %s\n", cfg.json_path);
    }
    cJSON_Delete(rs.json);
    for (size_t i = 0; i < rs.n_targets; i++) moe_context_destroy(rs.ctx[i]);
    moe_context_destroy(rs.cpu_ctx);
    bench_data_free(&rs.data);
    free(rs.ref.y);
    bench_trace_free(&rs.trace);
    for (size_t i = 0; i < BENCH_MAX_FORMATS; i++) {
        free(rs.fmt_ref[i]);
        free(rs.act_ref[i]);
    }
    return rc;
}
