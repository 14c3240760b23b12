/*
 * moe_bench.c — moe-bench's main: parse the command line, pick the targets (one backend, or
 * every backend with a device), refuse a shape that does not fit in memory, make the weights
 * once, time the scalar reference once, then measure every (target, token count) and print
 * the table — or run the serving simulation on each target — and write the JSON.
 *
 * The pieces: bench_flags.c (flags), bench_presets.c (model presets, shape arithmetic),
 * bench_runner.c (data, memory guard, timing), bench_report.c (table, JSON), bench_serve.c
 * (serving simulation), bench_argparse.c (the option parser), bench_util.c (clock, statistics).
 */
#include "bench_config.h"
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
    bench_data data;
    bench_reference ref;
    int has_ref;
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

/* Compares the layer's output on the first reference tokens with the reference's. */
static void compare_reference(const run_state *rs, int64_t d_model, bench_result *r)
{
    const size_t n = (size_t)rs->ref.tokens * (size_t)d_model;
    r->ref_max_abs_diff = 0.0;
    r->ref_max_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)rs->data.y[i] - (double)rs->ref.y[i]);
        const double mag = fabs((double)rs->ref.y[i]);
        if (!(diff <= r->ref_max_abs_diff)) r->ref_max_abs_diff = diff; /* NaN sticks */
        if (mag > r->ref_max_abs) r->ref_max_abs = mag;
    }
    r->ref_compared = 1;
}

/* Every token count on target i: one layer (recreated only when the capacity changes with
 * T), a result row per token count. */
static int run_target(run_state *rs, size_t i, const int64_t *tokens, size_t n_tokens, bench_result *results,
                      size_t *n_results)
{
    const bench_config *c = rs->cfg;
    const int64_t max_t = bench_max_tokens(c);
    const moe_layer_weights w = bench_data_weights(&rs->data);
    moe_layer *layer = NULL;
    int64_t layer_capacity = -1;
    int rc = 0;
    bench_run_progress prog = {.bar = &rs->bar, .n_points = rs->n_targets * n_tokens};
    for (size_t j = 0; j < n_tokens && !rc; j++) {
        const moe_layer_desc d = bench_make_desc(c, tokens[j], max_t);
        prog.point = i * n_tokens + j;
        snprintf(prog.label, sizeof prog.label, "%s %d, T=%" PRId64, moe_backend_name(target_kind(rs, i)),
                 rs->info[i].index, tokens[j]);
        if (!layer || d.expert_capacity != layer_capacity) {
            moe_layer_destroy(layer);
            layer = NULL;
            const moe_status st = moe_layer_create(rs->ctx[i], &d, &w, &layer);
            if (st != MOE_OK) {
                rc = bench_library_error("moe_layer_create", st, rs->ctx[i]);
                break;
            }
            layer_capacity = d.expert_capacity;
        }
        bench_result *r = &results[*n_results];
        memset(r, 0, sizeof *r);
        rc = bench_measure(c, rs->ctx[i], layer, &d, tokens[j], &rs->data, &prog, r);
        if (rc) break;
        bench_result_set_device(r, target_kind(rs, i), &rs->info[i]);
        if (rs->has_ref) {
            r->has_ref = 1;
            r->ref_tokens = rs->ref.tokens;
            r->ref_seconds = rs->ref.seconds;
            r->ref_scaled_seconds = rs->ref.seconds * (double)tokens[j] / (double)rs->ref.tokens;
            if (tokens[j] == max_t) compare_reference(rs, c->d_model, r);
        }
        bench_progress_clear(&rs->bar);
        bench_print_row(stdout, r);
        fflush(stdout);
        rc = json_add(rs, bench_result_json(r));
        ++*n_results;
    }
    moe_layer_destroy(layer);
    return rc;
}

static int run_forward(run_state *rs)
{
    const bench_config *c = rs->cfg;
    int64_t tokens[BENCH_LIST_MAX];
    const size_t n_tokens = bench_token_list(c, tokens, BENCH_LIST_MAX);
    bench_result *results = calloc(rs->n_targets * n_tokens, sizeof *results);
    if (!results) {
        fprintf(stderr, BENCH_PROG ": out of host memory\n");
        return BENCH_EXIT_LIBRARY;
    }
    size_t n_results = 0;
    int rc = 0;
    bench_print_table_header(stdout);
    fflush(stdout);
    for (size_t i = 0; i < rs->n_targets && !rc; i++)
        rc = run_target(rs, i, tokens, n_tokens, results, &n_results);
    bench_progress_clear(&rs->bar);
    for (size_t i = 0; i < n_results; i++) bench_print_first(stdout, &results[i]);
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
        bench_serve_result s;
        memset(&s, 0, sizeof s);
        rc = bench_serve_run(rs->cfg, &rs->targets[i], &rs->data, &rs->bar, &s);
        bench_progress_clear(&rs->bar);
        if (rc) break;
        bench_print_serve(stdout, &s);
        fflush(stdout);
        rc = json_add(rs, bench_serve_json(&s));
    }
    return rc;
}

static int run(run_state *rs)
{
    const bench_config *c = rs->cfg;
    char note[512];
    rs->n_targets = bench_targets(c, rs->targets, BENCH_MAX_TARGETS, note, sizeof note);
    if (rs->n_targets == 0) return BENCH_EXIT_LIBRARY;
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

    int rc = bench_memory_check(c, rs->info, rs->n_targets);
    if (rc) return rc;
    const int64_t max_t = bench_max_tokens(c);
    const moe_layer_desc d = bench_make_desc(c, max_t, max_t);
    rc = bench_data_make(c, &d, &rs->data);
    if (rc) return rc;
    bench_print_layer(stdout, c, &d, rs->data.hot_tokens);
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
    static run_state rs; /* large; zero-initialised */
    rs.cfg = &cfg;
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
    bench_data_free(&rs.data);
    free(rs.ref.y);
    return rc;
}
