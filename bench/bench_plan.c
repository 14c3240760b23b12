/*
 * bench_plan.c — layer counts per weight format and the memory guard of moe-bench (see
 * bench_plan.h). All sizes are doubles: a shape too large for size_t is refused by the same
 * comparison as one too large for the machine, never wrapped.
 */
#include "bench_plan.h"

#include "bench_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PACK_SLACK 1.05 /* the library's copy: padding to panels, alignment */
#define GIB        1073741824.0
#define HOST_SHARE 0.95       /* of the host's available memory a run may plan to use */
enum { REF_TOKENS_MAX = 16 }; /* the reference's output rows (bench_default_ref_tokens' bound) */

int bench_shares_host_memory(const moe_device_info *info)
{
    return info->type != MOE_DEVICE_TYPE_DISCRETE_GPU && info->type != MOE_DEVICE_TYPE_VIRTUAL_GPU;
}

int64_t bench_auto_layers(double forward_bytes, uint64_t llc_bytes)
{
    enum { HUGE_COUNT = 1000000000 }; /* past any cap: a forward that reads (next to) nothing */
    if (!(forward_bytes > 0.0)) return HUGE_COUNT;
    const double others = ceil(2.0 * (double)llc_bytes / forward_bytes);
    if (!(others < (double)HUGE_COUNT)) return HUGE_COUNT;
    return others < 1.0 ? 2 : (int64_t)others + 1;
}

/* The memory model of one format with n layers: what the host and a discrete device hold. */
typedef struct mem_model {
    double host_fixed;    /* float32 host weights, y, the reference's output, the input of 0 layers */
    double x_per_layer;   /* one layer's input rows */
    double lib_fixed;     /* the library's scratch, per stream */
    double lib_per_layer; /* one layer's copy in the format on the target, per stream */
    double cpu_per_layer; /* one layer's experts on the CPU context (--cpu-experts): host memory */
    int host_dev;         /* a target keeps its copy in host memory */
} mem_model;

/* n layers of the format, with inputs for n_x layers (the pool is sized for the format with
 * the most). */
static double host_need(const mem_model *m, double n, double n_x)
{
    return m->host_fixed + n_x * m->x_per_layer + n * m->cpu_per_layer +
           (m->host_dev ? m->lib_fixed + n * m->lib_per_layer : 0.0);
}

/* Format f's copy of one layer: on the target (with the cache's slots), and the experts the CPU
 * context holds. */
static void set_format(mem_model *m, const bench_format_plan *f, double streams)
{
    const double cpu = (double)f->cpu_experts * f->expert_bytes;
    const double slots = (double)f->cache_slots * f->expert_bytes;
    m->lib_per_layer = streams * (f->layer_bytes - cpu + slots) * PACK_SLACK;
    m->cpu_per_layer = streams * cpu * PACK_SLACK;
}

static double lib_need(const mem_model *m, double n)
{
    return m->lib_fixed + n * m->lib_per_layer;
}

/* The format and layer count as words for a message: " in q4_0 with 5 layers". */
static void what_text(const bench_config *c, moe_dtype dt, int64_t n, char *buf, size_t size)
{
    const int several = c->weights.n > 1 || dt != MOE_DTYPE_F32;
    snprintf(buf, size, "%s%s", several ? " in " : "", several ? moe_dtype_name(dt) : "");
    if (n > 1) {
        const size_t len = strlen(buf);
        snprintf(buf + len, size - len, " with %" PRId64 " layers", n);
    }
}

/* Refuses n layers of format dt (with inputs for n_x) when they do not fit; 0 when they do. */
static int check_fit(const bench_config *c, const moe_layer_desc *d32, const mem_model *m, moe_dtype dt,
                     int64_t n, int64_t n_x, const moe_device_info *infos, size_t n_infos, double avail,
                     double total)
{
    const int64_t max_t = bench_max_tokens(c);
    const double streams = c->serve ? (double)c->streams : 1.0;
    char what[96];
    what_text(c, dt, n, what, sizeof what);
    for (size_t i = 0; i < n_infos; i++) {
        if (bench_shares_host_memory(&infos[i]) || infos[i].memory_bytes == 0) continue;
        const double lib = lib_need(m, (double)n);
        if (lib > (double)infos[i].memory_bytes) {
            fprintf(stderr,
                    BENCH_PROG
                    ": refusing %s at T=%" PRId64 "%s: it needs about %.4g GiB on %s device %d \"%s\" "
                    "(%.4g GiB of weights per stream, %.0f stream(s), plus scratch), more than its "
                    "%.4g GiB\n",
                    bench_preset_name(c->preset), max_t, what, lib / GIB, moe_backend_name(infos[i].backend),
                    infos[i].index, infos[i].name, (double)n * m->lib_per_layer / GIB, streams,
                    (double)infos[i].memory_bytes / GIB);
            return BENCH_EXIT_MEMORY;
        }
    }
    const double need = host_need(m, (double)n, (double)n_x);
    if (isfinite(need) && need <= (double)SIZE_MAX / 2 && (avail <= 0.0 || need <= HOST_SHARE * avail))
        return 0;
    char lib_text[256] = "";
    if (m->host_dev)
        snprintf(lib_text, sizeof lib_text, ", %.4g GiB for the library's own copy%s%s and scratch (%.0f %s)",
                 lib_need(m, (double)n) / GIB, dt != MOE_DTYPE_F32 ? " in " : "",
                 dt != MOE_DTYPE_F32 ? moe_dtype_name(dt) : "", streams, streams > 1 ? "streams" : "stream");
    if (m->cpu_per_layer > 0.0) {
        const size_t len = strlen(lib_text);
        snprintf(lib_text + len, sizeof lib_text - len, ", %.4g GiB for the experts on the CPU context",
                 (double)n * m->cpu_per_layer / GIB);
    }
    fprintf(stderr,
            BENCH_PROG
            ": refusing %s (d_model %" PRId64 ", d_ff %" PRId64 ", %" PRId64 " experts) at T=%" PRId64
            "%s: it needs about %.4g GiB of host memory (%.4g GiB of float32 weights made on the host%s, "
            "%.4g GiB of activations), but this machine has %.4g GiB available (%.4g GiB total) and a "
            "run may use %.0f%% of it\n",
            bench_preset_name(c->preset), d32->d_model, d32->d_ff, d32->n_experts, max_t, what, need / GIB,
            bench_all_weight_bytes(d32) / GIB, lib_text,
            (m->host_fixed - bench_all_weight_bytes(d32) + (double)n_x * m->x_per_layer) / GIB, avail / GIB,
            total / GIB, HOST_SHARE * 100.0);
    return BENCH_EXIT_MEMORY;
}

/* The most layers of this format that fit everywhere (0 if not even one does). */
static int64_t layers_that_fit(const mem_model *m, const moe_device_info *infos, size_t n_infos, double avail)
{
    double n = (double)BENCH_MAX_LAYERS;
    if (avail > 0.0) {
        const double per = m->x_per_layer + m->cpu_per_layer + (m->host_dev ? m->lib_per_layer : 0.0);
        const double room = HOST_SHARE * avail - m->host_fixed - (m->host_dev ? m->lib_fixed : 0.0);
        if (per > 0.0) n = fmin(n, floor(room / per));
    }
    for (size_t i = 0; i < n_infos; i++) {
        if (bench_shares_host_memory(&infos[i]) || infos[i].memory_bytes == 0 || !(m->lib_per_layer > 0.0))
            continue;
        n = fmin(n, floor(((double)infos[i].memory_bytes - m->lib_fixed) / m->lib_per_layer));
    }
    return n >= 1.0 ? (int64_t)n : 0;
}

/* --interleave keeps every run's layers at once: refuses them when, together, they do not fit
 * (each alone was checked by check_fit). */
static int check_together(const bench_plan *plan, mem_model *m, double streams, const moe_device_info *infos,
                          size_t n_infos, double avail)
{
    double lib = 0.0, cpu = 0.0;
    for (size_t i = 0; i < plan->n; i++) {
        set_format(m, &plan->f[i], streams);
        lib += (double)plan->f[i].layers * m->lib_per_layer;
        cpu += (double)plan->f[i].layers * m->cpu_per_layer;
    }
    for (size_t i = 0; i < n_infos; i++) {
        if (bench_shares_host_memory(&infos[i]) || infos[i].memory_bytes == 0) continue;
        if (m->lib_fixed + lib > (double)infos[i].memory_bytes) {
            fprintf(stderr,
                    BENCH_PROG
                    ": refusing --interleave: the %zu runs' layers, kept at once, need about %.4g GiB "
                    "on %s device %d \"%s\", more than its %.4g GiB; give fewer --weights or --layers N\n",
                    plan->n, (m->lib_fixed + lib) / GIB, moe_backend_name(infos[i].backend), infos[i].index,
                    infos[i].name, (double)infos[i].memory_bytes / GIB);
            return BENCH_EXIT_MEMORY;
        }
    }
    const double need = m->host_fixed + (double)plan->max_layers * m->x_per_layer + cpu +
                        (m->host_dev ? m->lib_fixed + lib : 0.0);
    if (avail > 0.0 && need > HOST_SHARE * avail) {
        fprintf(stderr,
                BENCH_PROG
                ": refusing --interleave: the %zu runs' layers, kept at once, need about %.4g GiB of "
                "host memory, but this machine has %.4g GiB available and a run may use %.0f%% of it; "
                "give fewer --weights or --layers N\n",
                plan->n, need / GIB, avail / GIB, HOST_SHARE * 100.0);
        return BENCH_EXIT_MEMORY;
    }
    return 0;
}

int bench_plan_make(const bench_config *c, const moe_device_info *infos, size_t n_infos, uint64_t llc_bytes,
                    const char *llc_source, bench_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    plan->llc_bytes = llc_bytes;
    plan->llc_source = llc_source;
    const int64_t max_t = bench_max_tokens(c), min_t = bench_min_tokens(c);
    const moe_layer_desc d32 = bench_make_desc(c, max_t, max_t, MOE_DTYPE_F32);
    const double streams = c->serve ? (double)c->streams : 1.0, dm = (double)d32.d_model;
    uint64_t total = 0;
    const double avail = (double)bench_host_available(&total);
    /* A trace's steered inputs (bench_trace.h): every forward's, made once. */
    const double trace_bytes =
        bench_trace_active(c)
            ? (double)(c->trace_forwards > 0 ? c->trace_forwards : BENCH_TRACE_DEFAULT_FORWARDS) * max_t *
                  dm * sizeof(float)
            : 0.0;
    mem_model m = {
        .host_fixed = bench_all_weight_bytes(&d32) + (double)max_t * dm * sizeof(float) +
                      (double)REF_TOKENS_MAX * dm * sizeof(float) + trace_bytes,
        .x_per_layer = (double)max_t * dm * sizeof(float),
        .lib_fixed = streams * bench_scratch_bytes(&d32, max_t),
    };
    for (size_t i = 0; i < n_infos; i++) m.host_dev |= bench_shares_host_memory(&infos[i]);

    for (size_t i = 0; i < c->weights.n; i++) {
        bench_format_plan *f = &plan->f[i];
        const moe_dtype dt = c->weights.v[i];
        const moe_layer_desc d = bench_make_desc(c, max_t, max_t, dt);
        f->dtype = dt;
        f->down = bench_down_dtype(c, dt);
        f->act = c->weights.act[i];
        f->cpu_experts = c->weights.cpu_experts[i];
        f->cache_slots = c->weights.cache_slots[i];
        f->layer_bytes = bench_all_weight_bytes(&d);
        f->expert_bytes = bench_expert_bytes(&d);
        set_format(&m, f, streams);
        f->layers = c->layers;
        if (c->layers == BENCH_LAYERS_AUTO) {
            f->auto_layers = 1;
            f->auto_tokens = min_t;
            f->expected_experts = bench_expected_experts(&d, min_t);
            f->forward_bytes = bench_fixed_weight_bytes(&d) + f->expected_experts * bench_expert_bytes(&d);
            f->wanted = bench_auto_layers(f->forward_bytes, llc_bytes);
            f->layers = f->wanted;
            if (f->layers > BENCH_MAX_LAYERS) {
                f->layers = BENCH_MAX_LAYERS;
                snprintf(f->capped, sizeof f->capped, "capped at %d, the most moe-bench makes",
                         BENCH_MAX_LAYERS);
            }
            const int64_t fit = layers_that_fit(&m, infos, n_infos, avail);
            if (fit >= 1 && fit < f->layers) {
                f->layers = fit;
                snprintf(f->capped, sizeof f->capped, "capped at %" PRId64 ", the most that fit in memory",
                         fit);
            }
            if (fit < 1) f->layers = 1; /* refused just below, with the numbers */
        }
        const int rc = check_fit(c, &d32, &m, dt, f->layers, f->layers, infos, n_infos, avail, (double)total);
        if (rc) return rc;
        if (f->layers > plan->max_layers) plan->max_layers = f->layers;
    }
    plan->n = c->weights.n;
    /* The input pool holds the most layers of any format while each format's copy exists. */
    for (size_t i = 0; i < plan->n; i++) {
        set_format(&m, &plan->f[i], streams);
        const int rc = check_fit(c, &d32, &m, plan->f[i].dtype, plan->f[i].layers, plan->max_layers, infos,
                                 n_infos, avail, (double)total);
        if (rc) return rc;
    }
    return c->interleave ? check_together(plan, &m, streams, infos, n_infos, avail) : 0;
}

int bench_plan_interleave_evicts(const bench_plan *plan, double *together, double *largest)
{
    double sum = 0.0, most = 0.0;
    for (size_t i = 0; i < plan->n; i++) {
        const double bytes = (double)plan->f[i].layers * plan->f[i].layer_bytes;
        sum += bytes;
        most = bytes > most ? bytes : most;
    }
    *together = sum;
    *largest = most;
    return plan->n > 1 && plan->llc_bytes > 0 && most <= (double)plan->llc_bytes &&
           sum > (double)plan->llc_bytes;
}

int bench_plan_refit(const bench_config *c, const moe_device_info *info, double stored, bench_format_plan *f)
{
    const double planned =
        f->layer_bytes + (double)(f->cache_slots - f->cpu_experts) * f->expert_bytes; /* on the target */
    if (f->layers <= 1 || !(stored > planned * PACK_SLACK)) return 0;
    uint64_t total = 0;
    double room; /* bytes the other layers may take */
    if (bench_shares_host_memory(info)) {
        const uint64_t avail = bench_host_available(&total);
        if (avail == 0) return 0; /* unknown: the plan stands */
        room = HOST_SHARE * (double)avail;
    } else {
        if (info->memory_bytes == 0) return 0;
        room = HOST_SHARE * (double)info->memory_bytes - stored;
    }
    const double fit = 1.0 + floor(room / stored);
    if (fit >= (double)f->layers) return 0;
    char stored_text[48];
    snprintf(stored_text, sizeof stored_text, "%.4g GiB", stored / GIB);
    if (f->auto_layers && fit >= 1.0) {
        f->layers = (int64_t)fit;
        snprintf(f->capped, sizeof f->capped,
                 "capped at %" PRId64 ": the backend stores a layer in %s, not %.4g", f->layers, stored_text,
                 planned / GIB);
        return 0;
    }
    fprintf(
        stderr,
        BENCH_PROG ": refusing %s in %s with %" PRId64 " layers: %s %d stores one layer in %s (the format "
                   "itself needs %.4g GiB), and only %.0f such layers fit in %s memory\n",
        bench_preset_name(c->preset), moe_dtype_name(f->dtype), f->layers, moe_backend_name(info->backend),
        info->index, stored_text, planned / GIB, fit, bench_shares_host_memory(info) ? "host" : "device");
    return BENCH_EXIT_MEMORY;
}
