/*
 * bench_report.c — moe-bench's output (see bench_report.h): the header and layer lines, the
 * aligned table of results with the definition of every figure, the reference and serving
 * reports, and the JSON objects built and written with cJSON.
 */
#include "bench_report.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
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
    r->shares_host_memory = bench_shares_host_memory(info);
}

/* A weight format's name; DEFAULT is what the bench hands over, float32. */
static const char *dtype_name(moe_dtype dt)
{
    const char *name = moe_dtype_name(dt == MOE_DTYPE_DEFAULT ? MOE_DTYPE_F32 : dt);
    return name ? name : "?";
}

const char *bench_format_label(moe_dtype weights, moe_dtype down, moe_dtype activations, int64_t cpu_experts,
                               int64_t cache_slots, char *buf, size_t size)
{
    const bool other = down != MOE_DTYPE_DEFAULT && down != weights;
    snprintf(buf, size, "%s%s%s%s", dtype_name(weights), other ? "+" : "", other ? dtype_name(down) : "",
             activations == MOE_DTYPE_Q8_0   ? "/i8"
             : activations == MOE_DTYPE_BF16 ? "/bf16x2"
                                             : "");
    if (cpu_experts > 0) {
        const size_t len = strlen(buf);
        snprintf(buf + len, size - len, "/cpu%" PRId64, cpu_experts);
    }
    if (cache_slots > 0) {
        const size_t len = strlen(buf);
        snprintf(buf + len, size - len, "/cache%" PRId64, cache_slots);
    }
    return buf;
}

/* Bytes as "12.3 MB" style text (decimal units, as bandwidths are). */
static const char *mb_text(double bytes, char *buf, size_t size)
{
    if (bytes >= 1e9)
        snprintf(buf, size, "%.2f GB", bytes * 1e-9);
    else if (bytes >= 1e6)
        snprintf(buf, size, "%.1f MB", bytes * 1e-6);
    else
        snprintf(buf, size, "%.1f kB", bytes * 1e-3);
    return buf;
}

void bench_print_header(FILE *out, moe_backend_kind kind, const moe_device_info *info)
{
    char isa[32];
    bench_isa_from_driver(info->driver, isa, sizeof isa);
    fprintf(out, "moe %s | commit %s | backend %s | device %d \"%s\" | driver \"%s\" | ISA %s | %s %d\n",
            moe_version(), bench_git_commit(), moe_backend_name(kind), info->index, info->name, info->driver,
            isa, kind == MOE_BACKEND_CPU ? "threads" : "compute units", info->compute_units);
}

void bench_print_machine(FILE *out, const bench_plan *plan, const bench_bandwidth *bw, const char *why_not)
{
    fprintf(out, "machine: last-level cache %.1f MiB (%s)", (double)plan->llc_bytes / 1048576.0,
            plan->llc_source ? plan->llc_source : "?");
    if (bw && bw->gbs > 0.0)
        fprintf(out,
                "; read bandwidth %.1f GB/s (best of %d streaming passes over %.2f GiB with %d thread%s, "
                "the CPU backend's, %d stream%s a thread; median %.1f GB/s)\n",
                bw->gbs, bw->passes, (double)bw->bytes / 1073741824.0, bw->threads,
                bw->threads == 1 ? "" : "s", bw->streams, bw->streams == 1 ? "" : "s", bw->median_gbs);
    else
        fprintf(out, "; read bandwidth not measured (%s)\n", why_not && *why_not ? why_not : "-");
}

/* Bytes as "1.25 GiB" / "340.2 MiB" / "12.0 KiB" text (binary units, as memory is). */
static const char *mib_text(double bytes, char *buf, size_t size)
{
    if (bytes >= 1073741824.0)
        snprintf(buf, size, "%.2f GiB", bytes / 1073741824.0);
    else if (bytes >= 1048576.0)
        snprintf(buf, size, "%.1f MiB", bytes / 1048576.0);
    else
        snprintf(buf, size, "%.1f KiB", bytes / 1024.0);
    return buf;
}

void bench_print_plan(FILE *out, const bench_config *c, const bench_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++) {
        const bench_format_plan *f = &plan->f[i];
        char lbl[BENCH_LABEL_BYTES];
        if (!f->auto_layers) {
            if (f->layers > 1)
                fprintf(out,
                        "weights %s: %" PRId64 " layers (--layers), cycled in order, each on its own input\n",
                        bench_format_label(f->dtype, f->down, f->act, f->cpu_experts, f->cache_slots, lbl,
                                           sizeof lbl),
                        f->layers);
            continue;
        }
        char fwd[32], expert[32], capped[160] = "";
        if (f->capped[0])
            snprintf(capped, sizeof capped, " (the rule asks for %" PRId64 ": %s)", f->wanted, f->capped);
        fprintf(
            out,
            "weights %s: %" PRId64
            " layers%s, cycled in order, each on its own input: --layers auto takes the "
            "smallest N with (N-1) x %s >= 2 x the %.1f MiB last-level cache, where %s = the weights one "
            "forward at T=%" PRId64 " is expected to read: the router%s and %.2f distinct experts of %s "
            "(E*(1-(1-k/E)^T), the mean for uniform random routing)\n",
            bench_format_label(f->dtype, f->down, f->act, f->cpu_experts, f->cache_slots, lbl, sizeof lbl),
            f->layers, capped, mb_text(f->forward_bytes, fwd, sizeof fwd),
            (double)plan->llc_bytes / 1048576.0, fwd, f->auto_tokens,
            c->shared_ff > 0 ? ", the shared expert" : "", f->expected_experts,
            mb_text(f->expert_bytes, expert, sizeof expert));
    }
    double together, largest;
    if (c->interleave && bench_plan_interleave_evicts(plan, &together, &largest)) {
        char all[32], one[32];
        fprintf(out,
                "interleave: each run's layers alone fit the %.1f MiB last-level cache (%s at most), the %zu "
                "runs' together do not (%s): timed in turn, every run reads its weights from memory, where "
                "timed alone it would read them from the cache; leave out --interleave to time each from "
                "the cache\n",
                (double)plan->llc_bytes / 1048576.0, mib_text(largest, one, sizeof one), plan->n,
                mib_text(together, all, sizeof all));
    }
}

void bench_print_format_header(FILE *out, const char *backend, int device_index, const bench_format_plan *f,
                               size_t arena_weights_bytes, size_t cpu_weights_bytes, const bench_config *c,
                               size_t cache_bytes, double create_seconds)
{
    char all[32], one[32], lbl[BENCH_LABEL_BYTES];
    fprintf(out, "-- %s %d | weights %s | %" PRId64 " layer%s%s | arena weights %s", backend, device_index,
            bench_format_label(f->dtype, f->down, f->act, f->cpu_experts, f->cache_slots, lbl, sizeof lbl),
            f->layers, f->layers == 1 ? "" : "s", f->layers > 1 ? " cycled in order" : "",
            mib_text((double)arena_weights_bytes, all, sizeof all));
    if (f->layers > 1)
        fprintf(out, " (%s per layer)",
                mib_text((double)arena_weights_bytes / (double)f->layers, one, sizeof one));
    if (f->cpu_experts > 0)
        fprintf(out, " | the last %" PRId64 " experts on a CPU context: %s%s", f->cpu_experts,
                mib_text((double)cpu_weights_bytes, all, sizeof all),
                c->home == BENCH_HOME_CPU ? " | routed and combined on the CPU context (--home cpu)" : "");
    if (f->cache_slots > 0)
        fprintf(
            out, " | a cache of %" PRId64 " slots on the target (%s, min rows %" PRId64 "): %s of the arena",
            f->cache_slots,
            bench_choice_name(bench_cache_policy_choices, c->cache_policy < 0 ? 0 : c->cache_policy),
            c->cache_min_rows < 0 ? 0 : c->cache_min_rows, mib_text((double)cache_bytes, one, sizeof one));
    fprintf(out, " | created from float32 in %.1f ms", create_seconds * 1e3);
    if (f->capped[0]) fprintf(out, " | --layers auto %s", f->capped);
    if (c->interleave) fprintf(out, " | timed in turn with the other runs (--interleave)");
    fputc('\n', out);
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
            d->has_selection_bias ? " + bias"
            : d->router_has_bias  ? " of biased logits"
                                  : "",
            d->renormalize       ? d->expert_has_bias ? "renormalised, expert biases" : "renormalised"
            : d->expert_has_bias ? "not renormalised, expert biases"
                                 : "not renormalised",
            d->routed_scaling_factor > 0.0f ? (double)d->routed_scaling_factor : 1.0, groups, shared, cap,
            hot, c->seed, bench_forward_flops(d, max_t) * 1e-9, max_t);
    if (c->serve || c->ep) return; /* their reports define their own figures */
    fprintf(
        out,
        "figures: latency = host wall time of one moe_layer_forward (dev_ms: the backend's device time of "
        "its\n"
        "  steps, median); GFLOPS = FLOPs / median, FLOPs = 2*T*d_model*E + 2*T*k*d_model*d_ff*%d%s;\n"
        "  tokens/s = T / median; GB/s = bytes, in the weights' storage format, of the router, %severy "
        "expert\n"
        "  that got >= 1 token (mean over the layers), / median; BW%% = GB/s as a share of the measured "
        "read\n"
        "  bandwidth; arena = peak scratch; speedup = scalar reference time (float32 weights, timed on a "
        "few\n"
        "  tokens, scaled to T) / median\n",
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
    {"backend", -7}, {"dev", 3},       {"weights", -9},  {"T", 6},        {"iters", 6},
    {"min_ms", 9},   {"median_ms", 9}, {"mean_ms", 9},   {"stddev", 8},   {"p95_ms", 9},
    {"p99_ms", 9},   {"dev_ms", 9},    {"GFLOPS", 8},    {"tokens/s", 9}, {"GB/s", 7},
    {"BW%", 5},      {"experts", 9},   {"arena_MiB", 9}, {"speedup", 8},
};
enum { N_COLS = sizeof cols / sizeof cols[0], WEIGHTS_COL = 2 };

int bench_label_width(const bench_config *c)
{
    int width = -cols[WEIGHTS_COL].width;
    for (size_t i = 0; i < c->weights.n; i++) {
        char lbl[BENCH_LABEL_BYTES];
        const int len = (int)strlen(bench_format_label(c->weights.v[i], bench_down_dtype(c, c->weights.v[i]),
                                                       c->weights.act[i], c->weights.cpu_experts[i],
                                                       c->weights.cache_slots[i], lbl, sizeof lbl));
        if (len > width) width = len;
    }
    return width;
}

/* Column i's printf width: the weights column as wide as the run's longest label. */
static int col_width(size_t i, int label_width)
{
    return i == WEIGHTS_COL ? -label_width : cols[i].width;
}

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
    return r->wall.median > 0.0 ? r->weight_read_bytes / r->wall.median * 1e-9 : 0.0;
}

double bench_result_bw_fraction(const bench_result *r)
{
    /* A device with memory of its own reads at its own bandwidth, not the host's. */
    if (!(r->read_bw_gbs > 0.0) || !r->shares_host_memory) return -1.0;
    return bench_result_gbps(r) / r->read_bw_gbs;
}

double bench_result_speedup(const bench_result *r)
{
    return r->has_ref && r->wall.median > 0.0 ? r->ref_scaled_seconds / r->wall.median : 0.0;
}

void bench_print_table_header(FILE *out, int label_width)
{
    for (size_t i = 0; i < N_COLS; i++)
        fprintf(out, "%s%*s", i ? " " : "", col_width(i, label_width), cols[i].header);
    fputc('\n', out);
}

void bench_print_row(FILE *out, const bench_result *r, int label_width)
{
    char v[N_COLS][BENCH_LABEL_BYTES];
    const bench_summary *s = &r->wall;
    size_t c = 0;
    snprintf(v[c++], sizeof v[0], "%s", r->backend);
    snprintf(v[c++], sizeof v[0], "%d", r->device_index);
    bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                       r->cpu_experts, r->cache_slots, v[c++], sizeof v[0]);
    snprintf(v[c++], sizeof v[0], "%" PRId64, r->tokens);
    snprintf(v[c++], sizeof v[0], "%zu", s->n);
    snprintf(v[c++], sizeof v[0], "%.3f", s->min * 1e3);
    snprintf(v[c++], sizeof v[0], "%.3f", s->median * 1e3);
    snprintf(v[c++], sizeof v[0], "%.3f", s->mean * 1e3);
    snprintf(v[c++], sizeof v[0], "%.3f", s->stddev * 1e3);
    snprintf(v[c++], sizeof v[0], "%.3f", s->p95 * 1e3);
    snprintf(v[c++], sizeof v[0], "%.3f", s->p99 * 1e3);
    if (r->dev_time.n)
        snprintf(v[c++], sizeof v[0], "%.3f", r->dev_time.median * 1e3);
    else
        snprintf(v[c++], sizeof v[0], "-");
    snprintf(v[c++], sizeof v[0], "%.2f", bench_result_gflops(r));
    snprintf(v[c++], sizeof v[0], "%.0f", bench_result_tokens_per_s(r));
    snprintf(v[c++], sizeof v[0], "%.2f", bench_result_gbps(r));
    const double frac = bench_result_bw_fraction(r);
    if (frac >= 0.0)
        snprintf(v[c++], sizeof v[0], "%.0f%%", frac * 100.0);
    else
        snprintf(v[c++], sizeof v[0], "-");
    /* Whole with one layer; a mean over the layers may not be. */
    if (r->experts_active == floor(r->experts_active))
        snprintf(v[c++], sizeof v[0], "%.0f/%" PRId64, r->experts_active, r->desc.n_experts);
    else
        snprintf(v[c++], sizeof v[0], "%.1f/%" PRId64, r->experts_active, r->desc.n_experts);
    snprintf(v[c++], sizeof v[0], "%.2f", (double)r->arena_peak_bytes / (1024.0 * 1024.0));
    if (r->has_ref)
        snprintf(v[c++], sizeof v[0], "%.1fx", bench_result_speedup(r));
    else
        snprintf(v[c++], sizeof v[0], "-");
    for (size_t i = 0; i < N_COLS; i++) fprintf(out, "%s%*s", i ? " " : "", col_width(i, label_width), v[i]);
    fputc('\n', out);
}

void bench_print_first(FILE *out, const bench_result *r)
{
    char lbl[BENCH_LABEL_BYTES];
    fprintf(out, "first forward: %s %d %s at T=%" PRId64 ": %.3f ms", r->backend, r->device_index,
            bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                               r->cpu_experts, r->cache_slots, lbl, sizeof lbl),
            r->tokens, r->first_wall * 1e3);
    if (r->first_device > 0.0)
        fprintf(
            out,
            " (device %.3f ms; %.3f ms on the host: kernel compilation on a cold cache, first allocations%s)",
            r->first_device * 1e3, (r->first_wall - r->first_device) * 1e3,
            r->cache_slots > 0 ? ", the cache's uploads of its misses" : "");
    fputc('\n', out);
}

void bench_print_kernels(FILE *out, const bench_result *r)
{
    if (!r->has_kernels) return;
    char lbl[BENCH_LABEL_BYTES];
    fprintf(out, "kernels: %s %d %s at T=%" PRId64 ":", r->backend, r->device_index,
            bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                               r->cpu_experts, r->cache_slots, lbl, sizeof lbl),
            r->tokens);
    const bench_kernel_times *k = &r->kernels;
    if (k->n == 0) {
        fprintf(out, " none timed (the backend logs no per-kernel device times)\n");
        return;
    }
    double sum = 0.0;
    for (int i = 0; i < k->n; i++) {
        fprintf(out, "%s %s %.4f ms", i ? "," : "", k->name[i], k->ms[i]);
        if (k->calls[i] < 0.999 || k->calls[i] > 1.001) fprintf(out, " (%.2f dispatches)", k->calls[i]);
        sum += k->ms[i];
    }
    fprintf(out, "; sum %.4f ms of %.4f device ms per forward (mean)\n", sum, r->dev_time.mean * 1e3);
}

void bench_print_bandwidth(FILE *out, const bench_result *r)
{
    char bytes[32], lbl[BENCH_LABEL_BYTES];
    fprintf(out, "bandwidth: %s %d %s at T=%" PRId64 ": %s of weights read per forward (%s), %.2f GB/s",
            r->backend, r->device_index,
            bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                               r->cpu_experts, r->cache_slots, lbl, sizeof lbl),
            r->tokens, mb_text(r->weight_read_bytes, bytes, sizeof bytes),
            r->trace_forwards > 0 ? "the mean over the trace's forwards"
            : r->layers > 1       ? "the mean of one forward of each layer's routing"
                                  : "from one forward's routing",
            bench_result_gbps(r));
    const double frac = bench_result_bw_fraction(r);
    if (frac >= 0.0)
        fprintf(out, " = %.0f%% of the %.1f GB/s read bandwidth", frac * 100.0, r->read_bw_gbs);
    else if (!r->shares_host_memory)
        fprintf(out, " (the device's own memory: no host bandwidth to compare with)");
    if (r->tokens <= BENCH_DECODE_TOKENS)
        fprintf(out, "; decode: %.1f tokens/s", bench_result_tokens_per_s(r));
    fputc('\n', out);
}

void bench_print_placement(FILE *out, const bench_result *r)
{
    if (r->cpu_experts == 0) return;
    char lbl[BENCH_LABEL_BYTES], rate[32] = "-";
    fprintf(out,
            "placement: %s %d %s at T=%" PRId64
            ": %.1f tokens/s; device ms per forward: target %.3f, cpu %.3f",
            r->backend, r->device_index,
            bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                               r->cpu_experts, r->cache_slots, lbl, sizeof lbl),
            r->tokens, bench_result_tokens_per_s(r), r->context_ms[0], r->context_ms[1]);
    if (r->has_context_dist)
        fprintf(out, " (forward by forward: median %.3f and %.3f, p95 %.3f and %.3f)",
                r->context_median_ms[0], r->context_median_ms[1], r->context_p95_ms[0], r->context_p95_ms[1]);
    if (r->cache_slots > 0) {
        const double hit_rate = bench_result_cache_hit_rate(r);
        if (hit_rate >= 0.0) snprintf(rate, sizeof rate, "%.1f%%", hit_rate * 100.0);
        fprintf(out,
                "; cache: hit rate %s (%" PRId64 " hits, %" PRId64 " misses), %" PRId64 " uploads (%" PRId64
                " evictions), %.2f MiB uploaded in %.3f ms (%.3f ms per forward)",
                rate, r->cache_hits, r->cache_misses, r->cache_uploads, r->cache_evictions,
                r->cache_upload_bytes / 1048576.0, r->cache_upload_ms,
                r->cache_upload_ms / (double)(r->wall.n ? r->wall.n : 1));
    }
    fputc('\n', out);
}

void bench_print_trace(FILE *out, const bench_config *c, const bench_trace *t, int exact)
{
    const bench_trace_summary s = bench_trace_summarize(t);
    char from[512];
    if (c->trace_path)
        snprintf(from, sizeof from, "%s (replayed)", c->trace_path);
    else
        snprintf(from, sizeof from, "generated with reuse %g (seed %" PRIu64 ")%s%s", c->trace_reuse, c->seed,
                 c->trace_out ? ", written to " : "", c->trace_out ? c->trace_out : "");
    fprintf(
        out,
        "trace: %s: %" PRId64 " forwards of %" PRId64 " tokens, top-%" PRId64 " of %" PRId64
        " experts; %.2f distinct experts per forward, %.1f%% of them used by the forward before, %" PRId64
        " over the trace\n"
        "  every layer runs trace forward f in turn, then f+1, cycling; the inputs are steered to route as "
        "it says (%s), checked on layer 0 before timing\n",
        from, t->forwards, t->tokens, t->top_k, t->n_experts, s.distinct_per_forward, s.reused_share * 100.0,
        s.distinct_total,
        exact ? "the router's dual basis: only the chosen logits move"
              : "more experts than d_model: each chosen expert's own row, repaired by projections");
}

double bench_result_cache_hit_rate(const bench_result *r)
{
    const int64_t lookups = r->cache_hits + r->cache_misses;
    return lookups > 0 ? (double)r->cache_hits / (double)lookups : -1.0;
}

void bench_print_async(FILE *out, const bench_result *r)
{
    if (r->chain_one_wait.n == 0) return;
    char lbl[BENCH_LABEL_BYTES];
    const double waits = r->chain_waits.median, one = r->chain_one_wait.median;
    fprintf(out,
            "async: %s %d %s at T=%" PRId64 ": a chain of %" PRId64
            " layers, a wait after each %.3f ms, one wait "
            "at the end %.3f ms (%.2fx; medians of %zu)\n",
            r->backend, r->device_index,
            bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                               r->cpu_experts, r->cache_slots, lbl, sizeof lbl),
            r->tokens, r->layers, waits * 1e3, one * 1e3, one > 0.0 ? waits / one : 0.0, r->chain_one_wait.n);
}

void bench_print_reference(FILE *out, const bench_result *r)
{
    if (!r->has_ref || !r->ref_compared) return;
    char lbl[BENCH_LABEL_BYTES];
    fprintf(out,
            "check: %s %d %s vs the scalar reference on the first %" PRId64 " tokens at T=%" PRId64
            ": rel L2 %.3g on the format's weights%s; %.3g vs the float32 layer (max |y - y_f32| %.3g, max "
            "|y_f32| %.3g)",
            r->backend, r->device_index,
            bench_format_label(r->desc.weight_dtype, r->desc.down_weight_dtype, r->desc.activation_dtype,
                               r->cpu_experts, r->cache_slots, lbl, sizeof lbl),
            r->ref_tokens, r->tokens, r->ref_rel_l2,
            r->desc.activation_dtype == MOE_DTYPE_Q8_0   ? " and int8 activations"
            : r->desc.activation_dtype == MOE_DTYPE_BF16 ? " and bfloat16-pair activations"
                                                         : "",
            r->format_rel_l2, r->ref_max_abs_diff, r->ref_max_abs);
    if (r->desc.activation_dtype != MOE_DTYPE_F32)
        fprintf(out, "; %.3g vs the format's weights with float32 activations (the %s cost)", r->act_rel_l2,
                r->desc.activation_dtype == MOE_DTYPE_BF16 ? "bfloat16-pair" : "int8");
    fputc('\n', out);
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
    char dist[64], lbl[BENCH_LABEL_BYTES];
    fprintf(out,
            "serve %s %d, weights %s: %" PRId64
            " stream(s) x %d thread(s); Poisson arrivals at %g req/s for %g s (seed %" PRIu64
            "); request tokens %s, capped at %" PRId64 "; batches up to %" PRId64 " tokens\n",
            s->backend, s->device_index,
            bench_format_label(s->desc.weight_dtype, s->desc.down_weight_dtype, MOE_DTYPE_F32, 0, 0, lbl,
                               sizeof lbl),
            s->streams, s->threads, s->rate, s->duration, s->seed, dist_text(s, dist, sizeof dist),
            s->max_batch_tokens, s->max_batch_tokens);
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
void bench_json_common(cJSON *o, const char *kind, const char *backend, const char *device, int device_index,
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
    cJSON_AddStringToObject(o, "weight_dtype", dtype_name(d->weight_dtype));
    cJSON_AddStringToObject(
        o, "down_weight_dtype",
        dtype_name(d->down_weight_dtype == MOE_DTYPE_DEFAULT ? d->weight_dtype : d->down_weight_dtype));
    cJSON_AddStringToObject(o, "activation_dtype", dtype_name(d->activation_dtype));
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
    cJSON_AddBoolToObject(v, "router_bias", d->router_has_bias != 0);
    cJSON_AddBoolToObject(v, "expert_bias", d->expert_has_bias != 0);
    cJSON_AddNumberToObject(v, "d_ff_shared", (double)d->d_ff_shared);
    cJSON_AddBoolToObject(v, "shared_expert_gate", d->shared_expert_gate != 0);
    cJSON_AddNumberToObject(v, "expert_capacity", (double)d->expert_capacity);
    cJSON_AddStringToObject(v, "drop_policy", bench_choice_name(bench_drop_choices, (int)d->drop_policy));
}

/* {"min":..,"median":..,"mean":..,"stddev":..,"p95":..,"p99":..,"max":..} in ms. */
cJSON *bench_json_summary_ms(const bench_summary *s)
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

void bench_json_add_or_null(cJSON *o, const char *key, cJSON *value, int present)
{
    if (present && value)
        cJSON_AddItemToObject(o, key, value);
    else {
        cJSON_Delete(value);
        cJSON_AddNullToObject(o, key);
    }
}

/* The expert cache's and the contexts' figures over the timed forwards, and the trace. */
static void add_placement(cJSON *o, const bench_result *r)
{
    const int cached = r->cache_slots > 0;
    cJSON_AddStringToObject(o, "home", bench_choice_name(bench_home_choices, r->home));
    cJSON_AddNumberToObject(o, "cache_slots", (double)r->cache_slots);
    bench_json_add_or_null(o, "cache_policy",
                           cJSON_CreateString(bench_choice_name(bench_cache_policy_choices, r->cache_policy)),
                           cached);
    bench_json_add_or_null(o, "cache_min_rows", cJSON_CreateNumber((double)r->cache_min_rows), cached);
    cJSON_AddNumberToObject(o, "cache_hits", (double)r->cache_hits);
    cJSON_AddNumberToObject(o, "cache_misses", (double)r->cache_misses);
    cJSON_AddNumberToObject(o, "cache_uploads", (double)r->cache_uploads);
    cJSON_AddNumberToObject(o, "cache_evictions", (double)r->cache_evictions);
    cJSON_AddNumberToObject(o, "cache_upload_bytes", r->cache_upload_bytes);
    cJSON_AddNumberToObject(o, "cache_upload_ms", r->cache_upload_ms);
    const double rate = bench_result_cache_hit_rate(r);
    bench_json_add_or_null(o, "cache_hit_rate", cJSON_CreateNumber(rate), cached && rate >= 0.0);
    bench_json_add_or_null(o, "cache_bytes", cJSON_CreateNumber((double)r->cache_bytes), cached);
    bench_json_add_or_null(o, "context_ms", cJSON_CreateDoubleArray(r->context_ms, 2), r->has_context_ms);
    bench_json_add_or_null(o, "context_median_ms", cJSON_CreateDoubleArray(r->context_median_ms, 2),
                           r->has_context_dist);
    bench_json_add_or_null(o, "context_p95_ms", cJSON_CreateDoubleArray(r->context_p95_ms, 2),
                           r->has_context_dist);
    bench_json_add_or_null(o, "trace_reuse", cJSON_CreateNumber(r->trace_reuse), r->trace_reuse >= 0.0);
    bench_json_add_or_null(o, "trace_file", cJSON_CreateString(r->trace_file ? r->trace_file : ""),
                           r->trace_file != NULL);
    bench_json_add_or_null(o, "trace_forwards", cJSON_CreateNumber((double)r->trace_forwards),
                           r->trace_forwards > 0);
}

cJSON *bench_result_json(const bench_result *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bench_json_common(o, "forward", r->backend, r->device, r->device_index, r->driver, r->isa, r->threads,
                      r->preset, r->tokens, &r->desc);
    cJSON_AddNumberToObject(o, "hot_expert", r->hot_expert);
    cJSON_AddNumberToObject(o, "warmup", (double)r->warmup);
    cJSON_AddNumberToObject(o, "iters", (double)r->wall.n);
    bench_json_add_or_null(o, "latency_ms", bench_json_summary_ms(&r->wall), 1);
    bench_json_add_or_null(o, "device_ms", bench_json_summary_ms(&r->dev_time), r->dev_time.n > 0);
    cJSON_AddNumberToObject(o, "first_forward_ms", r->first_wall * 1e3);
    bench_json_add_or_null(o, "first_forward_device_ms", cJSON_CreateNumber(r->first_device * 1e3),
                           r->first_device > 0.0);
    cJSON_AddNumberToObject(o, "create_ms", r->create_seconds * 1e3);
    cJSON_AddNumberToObject(o, "flops", r->flops);
    cJSON_AddNumberToObject(o, "gflops", bench_result_gflops(r));
    cJSON_AddNumberToObject(o, "tokens_per_s", bench_result_tokens_per_s(r));
    cJSON_AddNumberToObject(o, "layers", (double)r->layers);
    cJSON_AddBoolToObject(o, "layers_auto", r->layers_auto != 0);
    cJSON_AddNumberToObject(o, "interleaved", (double)r->interleaved);
    cJSON_AddNumberToObject(o, "cpu_experts", (double)r->cpu_experts);
    add_placement(o, r);
    cJSON_AddNumberToObject(o, "weight_bytes", (double)r->arena_weights_bytes);
    cJSON_AddNumberToObject(o, "weight_read_bytes", r->weight_read_bytes);
    cJSON_AddNumberToObject(o, "weight_gbs", bench_result_gbps(r));
    cJSON_AddNumberToObject(o, "gbps", bench_result_gbps(r));
    bench_json_add_or_null(o, "read_bandwidth_gbs", cJSON_CreateNumber(r->read_bw_gbs), r->read_bw_gbs > 0.0);
    const double frac = bench_result_bw_fraction(r);
    bench_json_add_or_null(o, "weight_bw_fraction", cJSON_CreateNumber(frac), frac >= 0.0);
    cJSON_AddNumberToObject(o, "experts_active", r->experts_active);
    cJSON_AddNumberToObject(o, "max_expert_rows", (double)r->max_expert_rows);
    cJSON_AddNumberToObject(o, "dropped_rows", r->dropped_rows);
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
            bench_json_add_or_null(ref, "rel_l2", cJSON_CreateNumber(r->ref_rel_l2), isfinite(r->ref_rel_l2));
            cJSON_AddNumberToObject(ref, "rel_l2_vs_f32", r->format_rel_l2);
            if (r->desc.activation_dtype != MOE_DTYPE_F32)
                bench_json_add_or_null(ref, "rel_l2_vs_float_activations", cJSON_CreateNumber(r->act_rel_l2),
                                       isfinite(r->act_rel_l2));
        }
    }
    cJSON *chain = r->chain_one_wait.n > 0 ? cJSON_CreateObject() : NULL;
    if (chain) {
        cJSON_AddNumberToObject(chain, "layers", (double)r->layers);
        bench_json_add_or_null(chain, "waits_ms", bench_json_summary_ms(&r->chain_waits), 1);
        bench_json_add_or_null(chain, "one_wait_ms", bench_json_summary_ms(&r->chain_one_wait), 1);
        cJSON_AddNumberToObject(
            chain, "speedup",
            r->chain_one_wait.median > 0.0 ? r->chain_waits.median / r->chain_one_wait.median : 0.0);
    }
    bench_json_add_or_null(o, "async_chain", chain, chain != NULL);
    cJSON *kernels = r->has_kernels ? cJSON_CreateArray() : NULL;
    for (int i = 0; kernels && i < r->kernels.n; i++) {
        cJSON *k = cJSON_CreateObject();
        if (!k) break;
        cJSON_AddStringToObject(k, "name", r->kernels.name[i]);
        cJSON_AddNumberToObject(k, "ms", r->kernels.ms[i]);
        cJSON_AddNumberToObject(k, "dispatches", r->kernels.calls[i]);
        cJSON_AddItemToArray(kernels, k);
    }
    bench_json_add_or_null(o, "kernels", kernels, kernels != NULL);
    bench_json_add_or_null(o, "reference", ref, r->has_ref);
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
    bench_json_common(o, "serve", s->backend, s->device, s->device_index, s->driver, s->isa, s->threads,
                      s->preset, s->max_batch_tokens, &s->desc);
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
    bench_json_add_or_null(o, "forward_ms", bench_json_summary_ms(&s->forward), s->forward.n > 0);
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
