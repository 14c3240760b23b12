/*
 * bench_report.c — moe-bench's output (see bench_report.h): the header and layer lines, the
 * aligned table of results with the definition of every figure, the reference and serving
 * reports, and the JSON objects built and written with cJSON.
 */
#include "bench_report.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#ifndef MOE_BENCH_GIT_COMMIT
#define MOE_BENCH_GIT_COMMIT "unknown"
#endif

const char *bench_git_commit(void)
{
    return MOE_BENCH_GIT_COMMIT;
}

void bench_result_set_device(bench_result *r, moe_backend_kind kind, const moe_device_info *info)
{
    snprintf(r->backend, sizeof r->backend, "%s", moe_backend_name(kind));
    snprintf(r->device, sizeof r->device, "%s", info->name);
    snprintf(r->driver, sizeof r->driver, "%s", info->driver);
    bench_isa_from_driver(info->driver, r->isa, sizeof r->isa);
    r->device_index = info->index;
    r->threads = info->compute_units;
}

void bench_print_header(FILE *out, moe_backend_kind kind, const moe_device_info *info)
{
    char isa[32];
    bench_isa_from_driver(info->driver, isa, sizeof isa);
    fprintf(out, "moe %s | commit %s | backend %s | device %d \"%s\" | driver \"%s\" | ISA %s | %s %d\n",
            moe_version(), bench_git_commit(), moe_backend_name(kind), info->index, info->name, info->driver,
            isa, kind == MOE_BACKEND_CPU ? "threads" : "compute units", info->compute_units);
}

void bench_print_layer(FILE *out, const bench_config *c, const moe_layer_desc *d, int64_t hot_tokens)
{
    char groups[64] = "", shared[64] = "", cap[96] = "", hot[96] = "";
    if (d->n_group > 1)
        snprintf(groups, sizeof groups, ", %" PRId64 " groups keep %" PRId64 " (%s)", d->n_group,
                 d->topk_group, bench_choice_name(bench_group_score_choices, (int)d->group_score));
    if (d->d_ff_shared > 0)
        snprintf(shared, sizeof shared, ", shared expert %" PRId64 "%s", d->d_ff_shared,
                 d->shared_expert_gate ? " sigmoid-gated" : "");
    if (c->capacity > 0)
        snprintf(cap, sizeof cap, ", capacity %" PRId64 " (%s)", c->capacity,
                 bench_choice_name(bench_drop_choices, c->drop_policy));
    else if (c->capacity_factor > 0.0)
        snprintf(cap, sizeof cap, ", capacity ceil(%g*T*k/E) (%s)", c->capacity_factor,
                 bench_choice_name(bench_drop_choices, c->drop_policy));
    if (c->hot_expert > 0.0)
        snprintf(hot, sizeof hot, ", hot expert 0 for %" PRId64 " of the first %" PRId64 " tokens",
                 hot_tokens, bench_max_tokens(c));
    const int64_t max_t = bench_max_tokens(c);
    fprintf(out,
            "layer: %s | d_model %" PRId64 ", d_ff %" PRId64 ", %" PRId64 " experts, top-%" PRId64
            ", %s, %s%s, %s, scale %g%s%s%s%s | seed %" PRIu64 " | %.3f GFLOP per forward at T=%" PRId64 "\n",
            bench_preset_name(c->preset), d->d_model, d->d_ff, d->n_experts, d->top_k,
            bench_choice_name(bench_activation_choices, (int)d->activation),
            bench_choice_name(bench_score_choices, (int)d->score_func),
            d->has_selection_bias ? " + bias" : "", d->renormalize ? "renormalised" : "not renormalised",
            d->routed_scaling_factor > 0.0f ? (double)d->routed_scaling_factor : 1.0, groups, shared, cap,
            hot, c->seed, bench_forward_flops(d, max_t) * 1e-9, max_t);
    if (c->serve) return;
    fprintf(
        out,
        "figures: latency = host wall time of one moe_layer_forward (dev_ms: the backend's device time of "
        "its\n"
        "  steps, median); GFLOPS = FLOPs / median, FLOPs = 2*T*d_model*E + 2*T*k*d_model*d_ff*%d%s;\n"
        "  tokens/s = T / median; GB/s = float32 bytes of the router, %severy expert that got >= 1 token,\n"
        "  / median; arena = peak scratch; speedup = scalar reference time (timed on a few tokens, scaled to "
        "T)\n"
        "  / median\n",
        bench_desc_gated(d) ? 3 : 2,
        d->d_ff_shared > 0 ? (d->shared_expert_gate ? " + 2*T*d_model*d_ff_shared*m + 2*T*d_model (shared)"
                                                    : " + 2*T*d_model*d_ff_shared*m (shared)")
                           : "",
        d->d_ff_shared > 0 ? "the shared experts and " : "");
}

/* ---- the table ---------------------------------------------------------------------------- */

typedef struct column {
    const char *header;
    int width; /* negative: left-aligned */
} column;

static const column cols[] = {
    {"backend", -7}, {"dev", 3},    {"T", 6},       {"iters", 6},     {"min_ms", 9},  {"median_ms", 9},
    {"mean_ms", 9},  {"stddev", 8}, {"p95_ms", 9},  {"p99_ms", 9},    {"dev_ms", 9},  {"GFLOPS", 8},
    {"tokens/s", 9}, {"GB/s", 7},   {"experts", 7}, {"arena_MiB", 9}, {"speedup", 8},
};
enum { N_COLS = sizeof cols / sizeof cols[0] };

double bench_result_gflops(const bench_result *r)
{
    return r->wall.median > 0.0 ? r->flops / r->wall.median * 1e-9 : 0.0;
}

double bench_result_tokens_per_s(const bench_result *r)
{
    return r->wall.median > 0.0 ? (double)r->tokens / r->wall.median : 0.0;
}

double bench_result_gbps(const bench_result *r)
{
    return r->wall.median > 0.0 ? r->weight_bytes / r->wall.median * 1e-9 : 0.0;
}

double bench_result_speedup(const bench_result *r)
{
    return r->has_ref && r->wall.median > 0.0 ? r->ref_scaled_seconds / r->wall.median : 0.0;
}

void bench_print_table_header(FILE *out)
{
    for (size_t i = 0; i < N_COLS; i++) fprintf(out, "%s%*s", i ? " " : "", cols[i].width, cols[i].header);
    fputc('\n', out);
}

void bench_print_row(FILE *out, const bench_result *r)
{
    char v[N_COLS][32];
    const bench_summary *s = &r->wall;
    snprintf(v[0], sizeof v[0], "%s", r->backend);
    snprintf(v[1], sizeof v[1], "%d", r->device_index);
    snprintf(v[2], sizeof v[2], "%" PRId64, r->tokens);
    snprintf(v[3], sizeof v[3], "%zu", s->n);
    snprintf(v[4], sizeof v[4], "%.3f", s->min * 1e3);
    snprintf(v[5], sizeof v[5], "%.3f", s->median * 1e3);
    snprintf(v[6], sizeof v[6], "%.3f", s->mean * 1e3);
    snprintf(v[7], sizeof v[7], "%.3f", s->stddev * 1e3);
    snprintf(v[8], sizeof v[8], "%.3f", s->p95 * 1e3);
    snprintf(v[9], sizeof v[9], "%.3f", s->p99 * 1e3);
    if (r->dev_time.n)
        snprintf(v[10], sizeof v[10], "%.3f", r->dev_time.median * 1e3);
    else
        snprintf(v[10], sizeof v[10], "-");
    snprintf(v[11], sizeof v[11], "%.2f", bench_result_gflops(r));
    snprintf(v[12], sizeof v[12], "%.0f", bench_result_tokens_per_s(r));
    snprintf(v[13], sizeof v[13], "%.2f", bench_result_gbps(r));
    snprintf(v[14], sizeof v[14], "%" PRId64 "/%" PRId64, r->experts_active, r->desc.n_experts);
    snprintf(v[15], sizeof v[15], "%.2f", (double)r->arena_peak_bytes / (1024.0 * 1024.0));
    if (r->has_ref)
        snprintf(v[16], sizeof v[16], "%.1fx", bench_result_speedup(r));
    else
        snprintf(v[16], sizeof v[16], "-");
    for (size_t i = 0; i < N_COLS; i++) fprintf(out, "%s%*s", i ? " " : "", cols[i].width, v[i]);
    fputc('\n', out);
}

void bench_print_first(FILE *out, const bench_result *r)
{
    fprintf(out, "first forward: %s %d at T=%" PRId64 ": %.3f ms", r->backend, r->device_index, r->tokens,
            r->first_wall * 1e3);
    if (r->first_device > 0.0)
        fprintf(
            out,
            " (device %.3f ms; %.3f ms on the host: kernel compilation on a cold cache, first allocations)",
            r->first_device * 1e3, (r->first_wall - r->first_device) * 1e3);
    fputc('\n', out);
}

void bench_print_reference(FILE *out, const bench_result *r)
{
    if (!r->has_ref || !r->ref_compared) return;
    fprintf(out,
            "check: %s %d vs the scalar reference on the first %" PRId64 " tokens at T=%" PRId64
            ": max |y - y_ref| %.3g (max |y_ref| %.3g)\n",
            r->backend, r->device_index, r->ref_tokens, r->tokens, r->ref_max_abs_diff, r->ref_max_abs);
}

static const char *dist_text(const bench_serve_result *s, char *buf, size_t size)
{
    switch (s->req_dist) {
    case BENCH_REQ_UNIFORM:
        snprintf(buf, size, "uniform on 1..%" PRId64, 2 * s->req_tokens_mean - 1);
        break;
    case BENCH_REQ_FIXED:
        snprintf(buf, size, "fixed %" PRId64, s->req_tokens_mean);
        break;
    default:
        snprintf(buf, size, "geometric, mean %" PRId64, s->req_tokens_mean);
        break;
    }
    return buf;
}

void bench_print_serve(FILE *out, const bench_serve_result *s)
{
    char dist[64];
    fprintf(out,
            "serve %s %d: %" PRId64
            " stream(s) x %d thread(s); Poisson arrivals at %g req/s for %g s (seed %" PRIu64
            "); request tokens %s, capped at %" PRId64 "; batches up to %" PRId64 " tokens\n",
            s->backend, s->device_index, s->streams, s->threads, s->rate, s->duration, s->seed,
            dist_text(s, dist, sizeof dist), s->max_batch_tokens, s->max_batch_tokens);
    fprintf(out,
            "  requests %" PRId64 ": %" PRId64 " completed, %" PRId64 " unfinished; %" PRId64
            " batches, mean %.1f tokens, forward median %.3f ms (p99 %.3f ms); streams busy %.0f%%\n",
            s->requests, s->completed, s->unfinished, s->batches, s->mean_batch_tokens,
            s->forward.median * 1e3, s->forward.p99 * 1e3, s->busy_share * 100.0);
    fprintf(out,
            "  throughput: offered %.0f tokens/s, achieved %.0f tokens/s (%" PRId64 " tokens in %.3f s)\n",
            s->offered_tokens_per_s, s->throughput_tokens_per_s, s->tokens_completed, s->wall_s);
    fprintf(out,
            "  request latency, arrival to result (ms): p50 %.3f  p95 %.3f  p99 %.3f  mean %.3f  max %.3f\n"
            "  SLO %g ms: met by %.1f%% of all requests (an unfinished request misses it)\n",
            s->latency.median * 1e3, s->latency.p95 * 1e3, s->latency.p99 * 1e3, s->latency.mean * 1e3,
            s->latency.max * 1e3, s->slo_ms, s->slo_met_share * 100.0);
}

/* ---- JSON --------------------------------------------------------------------------------- */

/* Adds the fields every object shares: who ran it, and the layer. */
static void add_common(cJSON *o, const char *kind, const char *backend, const char *device, int device_index,
                       const char *driver, const char *isa, int threads, const char *preset, int64_t tokens,
                       const moe_layer_desc *d)
{
    cJSON_AddStringToObject(o, "kind", kind);
    cJSON_AddStringToObject(o, "backend", backend);
    cJSON_AddStringToObject(o, "device", device);
    cJSON_AddNumberToObject(o, "device_index", device_index);
    cJSON_AddStringToObject(o, "driver", driver);
    cJSON_AddStringToObject(o, "isa", isa);
    cJSON_AddNumberToObject(o, "threads", threads);
    cJSON_AddStringToObject(o, "version", moe_version());
    cJSON_AddStringToObject(o, "commit", bench_git_commit());
    cJSON_AddStringToObject(o, "preset", preset);
    cJSON_AddNumberToObject(o, "tokens", (double)tokens);
    cJSON_AddNumberToObject(o, "d_model", (double)d->d_model);
    cJSON_AddNumberToObject(o, "d_ff", (double)d->d_ff);
    cJSON_AddNumberToObject(o, "n_experts", (double)d->n_experts);
    cJSON_AddNumberToObject(o, "top_k", (double)d->top_k);
    cJSON *v = cJSON_AddObjectToObject(o, "variant");
    if (!v) return;
    cJSON_AddStringToObject(v, "activation", bench_choice_name(bench_activation_choices, (int)d->activation));
    cJSON_AddStringToObject(v, "score", bench_choice_name(bench_score_choices, (int)d->score_func));
    cJSON_AddBoolToObject(v, "renormalize", d->renormalize != 0);
    cJSON_AddNumberToObject(v, "n_group", (double)d->n_group);
    cJSON_AddNumberToObject(v, "topk_group", (double)d->topk_group);
    cJSON_AddStringToObject(v, "group_score",
                            bench_choice_name(bench_group_score_choices, (int)d->group_score));
    cJSON_AddNumberToObject(v, "routed_scaling_factor",
                            d->routed_scaling_factor > 0.0f ? (double)d->routed_scaling_factor : 1.0);
    cJSON_AddBoolToObject(v, "selection_bias", d->has_selection_bias != 0);
    cJSON_AddNumberToObject(v, "d_ff_shared", (double)d->d_ff_shared);
    cJSON_AddBoolToObject(v, "shared_expert_gate", d->shared_expert_gate != 0);
    cJSON_AddNumberToObject(v, "expert_capacity", (double)d->expert_capacity);
    cJSON_AddStringToObject(v, "drop_policy", bench_choice_name(bench_drop_choices, (int)d->drop_policy));
}

/* {"min":..,"median":..,"mean":..,"stddev":..,"p95":..,"p99":..,"max":..} in ms. */
static cJSON *summary_ms(const bench_summary *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "min", s->min * 1e3);
    cJSON_AddNumberToObject(o, "median", s->median * 1e3);
    cJSON_AddNumberToObject(o, "mean", s->mean * 1e3);
    cJSON_AddNumberToObject(o, "stddev", s->stddev * 1e3);
    cJSON_AddNumberToObject(o, "p95", s->p95 * 1e3);
    cJSON_AddNumberToObject(o, "p99", s->p99 * 1e3);
    cJSON_AddNumberToObject(o, "max", s->max * 1e3);
    return o;
}

static void add_or_null(cJSON *o, const char *key, cJSON *value, int present)
{
    if (present && value)
        cJSON_AddItemToObject(o, key, value);
    else {
        cJSON_Delete(value);
        cJSON_AddNullToObject(o, key);
    }
}

cJSON *bench_result_json(const bench_result *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    add_common(o, "forward", r->backend, r->device, r->device_index, r->driver, r->isa, r->threads, r->preset,
               r->tokens, &r->desc);
    cJSON_AddNumberToObject(o, "hot_expert", r->hot_expert);
    cJSON_AddNumberToObject(o, "warmup", (double)r->warmup);
    cJSON_AddNumberToObject(o, "iters", (double)r->wall.n);
    add_or_null(o, "latency_ms", summary_ms(&r->wall), 1);
    add_or_null(o, "device_ms", summary_ms(&r->dev_time), r->dev_time.n > 0);
    cJSON_AddNumberToObject(o, "first_forward_ms", r->first_wall * 1e3);
    add_or_null(o, "first_forward_device_ms", cJSON_CreateNumber(r->first_device * 1e3),
                r->first_device > 0.0);
    cJSON_AddNumberToObject(o, "flops", r->flops);
    cJSON_AddNumberToObject(o, "gflops", bench_result_gflops(r));
    cJSON_AddNumberToObject(o, "tokens_per_s", bench_result_tokens_per_s(r));
    cJSON_AddNumberToObject(o, "weight_bytes", r->weight_bytes);
    cJSON_AddNumberToObject(o, "gbps", bench_result_gbps(r));
    cJSON_AddNumberToObject(o, "experts_active", (double)r->experts_active);
    cJSON_AddNumberToObject(o, "max_expert_rows", (double)r->max_expert_rows);
    cJSON_AddNumberToObject(o, "dropped_rows", (double)r->dropped_rows);
    cJSON_AddNumberToObject(o, "arena_peak_bytes", (double)r->arena_peak_bytes);
    cJSON_AddNumberToObject(o, "arena_scratch_bytes", (double)r->arena_scratch_bytes);
    cJSON_AddNumberToObject(o, "arena_weights_bytes", (double)r->arena_weights_bytes);
    cJSON *ref = r->has_ref ? cJSON_CreateObject() : NULL;
    if (ref) {
        cJSON_AddNumberToObject(ref, "tokens", (double)r->ref_tokens);
        cJSON_AddNumberToObject(ref, "ms", r->ref_seconds * 1e3);
        cJSON_AddNumberToObject(ref, "ms_scaled", r->ref_scaled_seconds * 1e3);
        if (r->ref_compared) {
            cJSON_AddNumberToObject(ref, "max_abs_diff", r->ref_max_abs_diff);
            cJSON_AddNumberToObject(ref, "max_abs", r->ref_max_abs);
        }
    }
    add_or_null(o, "reference", ref, r->has_ref);
    if (r->has_ref)
        cJSON_AddNumberToObject(o, "speedup_vs_reference", bench_result_speedup(r));
    else
        cJSON_AddNullToObject(o, "speedup_vs_reference");
    return o;
}

cJSON *bench_serve_json(const bench_serve_result *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    add_common(o, "serve", s->backend, s->device, s->device_index, s->driver, s->isa, s->threads, s->preset,
               s->max_batch_tokens, &s->desc);
    char dist[64];
    cJSON_AddNumberToObject(o, "streams", (double)s->streams);
    cJSON_AddNumberToObject(o, "rate", s->rate);
    cJSON_AddNumberToObject(o, "duration_s", s->duration);
    cJSON_AddNumberToObject(o, "seed", (double)s->seed);
    cJSON_AddNumberToObject(o, "max_batch_tokens", (double)s->max_batch_tokens);
    cJSON *rt = cJSON_AddObjectToObject(o, "request_tokens");
    if (rt) {
        cJSON_AddStringToObject(rt, "distribution", bench_choice_name(bench_req_dist_choices, s->req_dist));
        cJSON_AddNumberToObject(rt, "mean", (double)s->req_tokens_mean);
        cJSON_AddStringToObject(rt, "description", dist_text(s, dist, sizeof dist));
    }
    cJSON_AddNumberToObject(o, "slo_ms", s->slo_ms);
    cJSON_AddNumberToObject(o, "requests", (double)s->requests);
    cJSON_AddNumberToObject(o, "completed", (double)s->completed);
    cJSON_AddNumberToObject(o, "unfinished", (double)s->unfinished);
    cJSON_AddNumberToObject(o, "batches", (double)s->batches);
    cJSON_AddNumberToObject(o, "mean_batch_tokens", s->mean_batch_tokens);
    cJSON_AddNumberToObject(o, "wall_s", s->wall_s);
    cJSON_AddNumberToObject(o, "offered_tokens_per_s", s->offered_tokens_per_s);
    cJSON_AddNumberToObject(o, "tokens_per_s", s->throughput_tokens_per_s);
    cJSON_AddNumberToObject(o, "busy_share", s->busy_share);
    cJSON *lat = cJSON_AddObjectToObject(o, "request_latency_ms");
    if (lat) {
        cJSON_AddNumberToObject(lat, "p50", s->latency.median * 1e3);
        cJSON_AddNumberToObject(lat, "p95", s->latency.p95 * 1e3);
        cJSON_AddNumberToObject(lat, "p99", s->latency.p99 * 1e3);
        cJSON_AddNumberToObject(lat, "mean", s->latency.mean * 1e3);
        cJSON_AddNumberToObject(lat, "max", s->latency.max * 1e3);
    }
    cJSON_AddNumberToObject(o, "slo_met_share", s->slo_met_share);
    add_or_null(o, "forward_ms", summary_ms(&s->forward), s->forward.n > 0);
    return o;
}

int bench_json_write(const char *path, const cJSON *array)
{
    char *text = cJSON_Print(array);
    if (!text) {
        fprintf(stderr, BENCH_PROG ": out of memory formatting the JSON\n");
        return BENCH_EXIT_LIBRARY;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, BENCH_PROG ": cannot write %s: %s\n", path, strerror(errno));
        cJSON_free(text);
        return BENCH_EXIT_LIBRARY;
    }
    const int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    const int bad_close = fclose(f) != 0;
    cJSON_free(text);
    if (bad || bad_close) {
        fprintf(stderr, BENCH_PROG ": writing %s failed\n", path);
        return BENCH_EXIT_LIBRARY;
    }
    return 0;
}
