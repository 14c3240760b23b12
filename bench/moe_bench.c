/*
 * moe_bench.c — moe-bench, the throughput and latency benchmark of one MoE layer forward.
 *
 * It builds a layer of the requested shape and variant with reproducible random weights
 * (uniform in ±1/sqrt(fan_in), inputs uniform in ±1, so routing is realistic), creates one
 * context and one layer, warms up, then times each moe_layer_forward on the host clock and
 * reports min / median / mean / p95 latency, GFLOPS and tokens/s from the median, the arena's
 * peak scratch, and the speedup over the scalar reference (moe_reference_forward timed on a
 * few tokens and scaled linearly to the full token count). It uses only the public API.
 *
 * Exit status: 0 on success, 1 when the library (or host memory) fails, 2 on a usage error.
 */
#include "bench_opts.h"
#include "bench_util.h"

#include "moe.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "moe-bench"

enum {
    EXIT_LIBRARY = 1,
    EXIT_USAGE = 2,
    MAX_OPTS = 64,
    MIN_TIMED_ITERS = 5,       /* with --min-time: at least this many timed forwards */
    MAX_TIMED_ITERS = 1000000, /* with --min-time: at most this many */
    DEFAULT_REF_TOKENS = 16,
    MAX_REF_RUNS = 9
};
#define REF_MIN_TIME 0.25  /* seconds: the reference is rerun while its total is below this */
#define BIAS_BOUND   0.05f /* selection bias uniform in ±this (scores are O(1)) */

/* Everything the command line sets. Zero means "default" where the usage says so. */
typedef struct bench_config {
    int backend;
    int64_t device;
    int64_t threads;
    int64_t tokens, d_model, d_ff, experts, top_k;
    int activation, score;
    int no_renorm;
    int64_t groups, topk_group;
    double scale;
    int64_t shared_ff;
    int shared_gate;
    int64_t capacity;
    int selection_bias;
    int64_t warmup, iters;
    double min_time;
    int64_t ref_tokens;
    int no_ref;
    uint64_t seed;
} bench_config;

/* The headline shape: Mixtral-like (SwiGLU, softmax, renormalised top-2 of 8). */
static bench_config default_config(void)
{
    bench_config c = {
        .backend = MOE_BACKEND_AUTO,
        .tokens = 512,
        .d_model = 1024,
        .d_ff = 2816,
        .experts = 8,
        .top_k = 2,
        .activation = MOE_ACTIVATION_SWIGLU,
        .score = MOE_SCORE_SOFTMAX,
        .warmup = 2,
        .min_time = 1.0,
        .seed = 42,
    };
    return c;
}

static const bench_choice backend_choices[] = {{"auto", MOE_BACKEND_AUTO},
                                               {"cpu", MOE_BACKEND_CPU},
                                               {"vulkan", MOE_BACKEND_VULKAN},
                                               {"opencl", MOE_BACKEND_OPENCL},
                                               {NULL, 0}};
static const bench_choice activation_choices[] = {{"swiglu", MOE_ACTIVATION_SWIGLU},
                                                  {"geglu", MOE_ACTIVATION_GEGLU},
                                                  {"relu", MOE_ACTIVATION_RELU},
                                                  {"gelu", MOE_ACTIVATION_GELU},
                                                  {NULL, 0}};
static const bench_choice score_choices[] = {
    {"softmax", MOE_SCORE_SOFTMAX}, {"sigmoid", MOE_SCORE_SIGMOID}, {NULL, 0}};

#define SIZE_MAX_OPT (INT64_C(1) << 40)
/* clang-format off */
#define OPT_INT(name, field, meta, lo, hi, zero, help) \
    {name, BENCH_OPT_INT64, &c->field, meta, lo, hi, 0.0, NULL, zero, help}
#define OPT_NUM(name, field, meta, gt, zero, help) \
    {name, BENCH_OPT_DOUBLE, &c->field, meta, 0, 0, gt, NULL, zero, help}
#define OPT_CHOICE(name, field, choices, help) \
    {name, BENCH_OPT_CHOICE, &c->field, NULL, 0, 0, 0.0, choices, NULL, help}
#define OPT_FLAG(name, field, help) \
    {name, BENCH_OPT_FLAG, &c->field, NULL, 0, 0, 0.0, NULL, NULL, help}
/* clang-format on */

/* The option table; its rows point into *c. Returns the number of rows. */
static size_t bench_options(bench_config *c, bench_opt opts[MAX_OPTS])
{
    const bench_opt table[] = {
        OPT_CHOICE("backend", backend, backend_choices,
                   "backend; auto tries Vulkan, OpenCL, CPU (env MOE_BACKEND overrides)"),
        OPT_INT("device", device, "N", 0, INT32_MAX, NULL, "device index within the backend"),
        OPT_INT("threads", threads, "N", 0, 65536, "all cores", "CPU backend worker threads"),
        OPT_INT("tokens", tokens, "T", 1, SIZE_MAX_OPT, NULL, "tokens per forward"),
        OPT_INT("d-model", d_model, "D", 1, SIZE_MAX_OPT, NULL, "hidden size"),
        OPT_INT("d-ff", d_ff, "F", 1, SIZE_MAX_OPT, NULL, "routed expert intermediate size"),
        OPT_INT("experts", experts, "E", 1, SIZE_MAX_OPT, NULL, "routed experts"),
        OPT_INT("top-k", top_k, "K", 1, SIZE_MAX_OPT, NULL, "experts per token"),
        OPT_CHOICE("activation", activation, activation_choices, "expert activation"),
        OPT_CHOICE("score", score, score_choices, "router score function"),
        OPT_FLAG("no-renorm", no_renorm, "do not renormalise the chosen weights to sum 1"),
        OPT_INT("groups", groups, "N", 0, SIZE_MAX_OPT, "none",
                "group-limited routing: experts split into N groups"),
        OPT_INT("topk-group", topk_group, "M", 0, SIZE_MAX_OPT, "none",
                "groups kept per token (with --groups)"),
        OPT_NUM("scale", scale, "S", 0.0, "1", "routed scaling factor, > 0"),
        OPT_INT("shared-ff", shared_ff, "F", 0, SIZE_MAX_OPT, "none", "shared expert width"),
        OPT_FLAG("shared-gate", shared_gate, "sigmoid gate on the shared expert (Qwen2-MoE)"),
        OPT_INT("capacity", capacity, "C", 0, SIZE_MAX_OPT, "unlimited",
                "expert capacity in rows; the rest are dropped"),
        OPT_FLAG("selection-bias", selection_bias,
                 "add a random selection bias to the scores for choosing (DeepSeek-V3)"),
        OPT_INT("warmup", warmup, "N", 0, 1000000, NULL, "untimed forwards first"),
        OPT_INT("iters", iters, "N", 1, 10000000, "until --min-time", "timed forwards"),
        OPT_NUM("min-time", min_time, "SEC", 0.0, NULL,
                "without --iters: time for at least this long, >= 5 forwards"),
        OPT_INT("ref-tokens", ref_tokens, "N", 1, SIZE_MAX_OPT, "min(T, 16)",
                "tokens on which the scalar reference is timed"),
        OPT_FLAG("no-ref", no_ref, "skip the scalar reference (no speedup column)"),
        {"seed", BENCH_OPT_UINT64, &c->seed, "S", 0, 0, 0.0, NULL, NULL,
         "seed of the random weights and inputs"},
        {"help", BENCH_OPT_HELP, NULL, NULL, 0, 0, 0.0, NULL, NULL, "show this help and exit"},
    };
    _Static_assert(sizeof table / sizeof table[0] <= MAX_OPTS, "raise MAX_OPTS");
    memcpy(opts, table, sizeof table);
    return sizeof table / sizeof table[0];
}

static void usage(FILE *out)
{
    bench_config defaults = default_config();
    bench_opt opts[MAX_OPTS];
    const size_t n = bench_options(&defaults, opts);
    fprintf(out, "usage: " PROG " [options]\n"
                 "Times one MoE layer forward (moe_layer_forward) on random weights and reports\n"
                 "latency (min/median/mean/p95), GFLOPS, tokens/s and the speedup over the scalar\n"
                 "reference. Exit status: 0 ok, 1 library error, 2 usage error.\n\noptions:\n");
    bench_opts_usage(out, opts, n);
}

/* ---- layer description, weights and inputs -------------------------------------------- */

static moe_layer_desc make_desc(const bench_config *c)
{
    moe_layer_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.d_model = c->d_model;
    d.d_ff = c->d_ff;
    d.n_experts = c->experts;
    d.top_k = c->top_k;
    d.max_tokens = c->tokens;
    d.score_func = (moe_score_func)c->score;
    d.n_group = c->groups;
    d.topk_group = c->topk_group;
    d.renormalize = !c->no_renorm;
    d.routed_scaling_factor = (float)c->scale;
    d.has_selection_bias = c->selection_bias;
    d.activation = (moe_activation)c->activation;
    d.d_ff_shared = c->shared_ff;
    d.shared_expert_gate = c->shared_gate;
    d.expert_capacity = c->capacity;
    return d;
}

static int is_gated(const moe_layer_desc *d)
{
    return d->activation == MOE_ACTIVATION_SWIGLU || d->activation == MOE_ACTIVATION_GEGLU;
}

/* Nominal FLOPs of one forward (design.md): router, routed experts, shared expert and its
 * gate. Rows dropped by capacity are still counted. */
static double forward_flops(const moe_layer_desc *d, int64_t tokens)
{
    const double t = (double)tokens, dm = (double)d->d_model, mats = is_gated(d) ? 3.0 : 2.0;
    double f = 2.0 * t * dm * (double)d->n_experts;
    f += 2.0 * t * (double)d->top_k * dm * (double)d->d_ff * mats;
    if (d->d_ff_shared > 0) {
        f += 2.0 * t * dm * (double)d->d_ff_shared * mats;
        if (d->shared_expert_gate) f += 2.0 * t * dm;
    }
    return f;
}

/* Host copies of all weights plus the input and output activations. */
typedef struct bench_data {
    float *router, *router_bias, *gate, *up, *down;
    float *shared_gate, *shared_up, *shared_down, *shared_expert_gate;
    float *x, *y;
} bench_data;

static void free_data(bench_data *b)
{
    float *all[] = {
        b->router,      b->router_bias,        b->gate, b->up, b->down, b->shared_gate, b->shared_up,
        b->shared_down, b->shared_expert_gate, b->x,    b->y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    memset(b, 0, sizeof *b);
}

/* Allocates and fills every array the config needs, in a fixed order so that a seed always
 * gives the same data. `host_limit` (0 = unknown) is the host memory the data, plus the CPU
 * backend's own copy of the weights when `cpu` is set, must fit in: a shape past it is refused
 * up front rather than left to the kernel's out-of-memory killer. Returns 0 ok, EXIT_USAGE
 * when a size overflows, EXIT_LIBRARY when host memory runs out. */
static int make_data(const bench_config *c, const moe_layer_desc *d, int cpu, uint64_t host_limit,
                     bench_data *b)
{
    const int gated = is_gated(d), shared = d->d_ff_shared > 0;
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
        {&b->x, 1, c->tokens, d->d_model, 1, 1.0f, "x"},
        {&b->y, 1, c->tokens, d->d_model, 1, 0.0f, "y"},
    };
    const size_t n_arrays = sizeof arrays / sizeof arrays[0];
    size_t count[sizeof arrays / sizeof arrays[0]];
    double need = 0.0; /* bytes; double cannot overflow here */
    for (size_t i = 0; i < n_arrays; i++) {
        count[i] = 0;
        if (!arrays[i].needed) continue;
        if (!bench_mul_size(arrays[i].a, arrays[i].b, arrays[i].c, &count[i]) ||
            count[i] > SIZE_MAX / sizeof(float)) {
            fprintf(stderr,
                    PROG ": the shape is too large: %s (%" PRId64 " x %" PRId64 " x %" PRId64
                         " floats) does not fit in memory\n",
                    arrays[i].what, arrays[i].a, arrays[i].b, arrays[i].c);
            return EXIT_USAGE;
        }
        const int weight = arrays[i].dst != &b->x && arrays[i].dst != &b->y;
        need += (double)count[i] * sizeof(float) * (weight && cpu ? 2.0 : 1.0);
    }
    if (host_limit > 0 && need > (double)host_limit) {
        fprintf(stderr,
                PROG ": the shape needs about %.1f GiB of host memory (weights%s, plus "
                     "activations), more than the %.1f GiB this machine has\n",
                need / 1073741824.0, cpu ? " counted twice for the CPU backend's copy" : "",
                (double)host_limit / 1073741824.0);
        return EXIT_LIBRARY;
    }
    for (size_t i = 0; i < n_arrays; i++) {
        if (!arrays[i].needed) continue;
        *arrays[i].dst = malloc(count[i] * sizeof(float));
        if (!*arrays[i].dst) {
            fprintf(stderr, PROG ": out of host memory allocating %s (%zu bytes)\n", arrays[i].what,
                    count[i] * sizeof(float));
            free_data(b);
            return EXIT_LIBRARY;
        }
    }
    bench_rng rng;
    bench_rng_seed(&rng, c->seed);
    for (size_t i = 0; i < n_arrays; i++)
        if (arrays[i].needed && arrays[i].bound > 0.0f)
            bench_fill_uniform(&rng, *arrays[i].dst, count[i], arrays[i].bound);
    return 0;
}

static moe_layer_weights make_weights(const bench_data *b)
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
    return w;
}

/* ---- errors ----------------------------------------------------------------------------- */

/* Reports a failed library call with its status and detail; returns EXIT_LIBRARY. */
static int library_error(const char *what, moe_status st, const moe_context *ctx)
{
    const char *detail = ctx ? moe_context_error(ctx) : "";
    if (!detail || !*detail) detail = moe_last_error();
    fprintf(stderr, PROG ": %s failed: %s%s%s\n", what, moe_status_string(st), detail && *detail ? ": " : "",
            detail ? detail : "");
    return EXIT_LIBRARY;
}

/* ---- timing ----------------------------------------------------------------------------- */

/* Times forwards of the whole batch: exactly c->iters of them, or (iters 0) as many as fit
 * in c->min_time seconds, at least MIN_TIMED_ITERS. *out_times gets seconds per forward. */
static int time_forwards(const bench_config *c, moe_context *ctx, moe_layer *layer, const bench_data *b,
                         double **out_times, size_t *out_n)
{
    size_t cap = c->iters > 0 ? (size_t)c->iters : 64, n = 0;
    double *times = malloc(cap * sizeof *times), total = 0.0;
    if (!times) {
        fprintf(stderr, PROG ": out of host memory for %zu timings\n", cap);
        return EXIT_LIBRARY;
    }
    for (;;) {
        if (c->iters > 0) {
            if (n == (size_t)c->iters) break;
        } else if ((n >= MIN_TIMED_ITERS && total >= c->min_time) || n >= MAX_TIMED_ITERS) {
            break;
        }
        if (n == cap) {
            double *grown = realloc(times, 2 * cap * sizeof *times);
            if (!grown) break; /* enough samples already; keep what we have */
            times = grown;
            cap *= 2;
        }
        const double t0 = bench_now();
        const moe_status st = moe_layer_forward(layer, c->tokens, b->x, b->y, NULL);
        const double t1 = bench_now();
        if (st != MOE_OK) {
            free(times);
            return library_error("moe_layer_forward", st, ctx);
        }
        times[n++] = t1 - t0;
        total += t1 - t0;
    }
    *out_times = times;
    *out_n = n;
    return 0;
}

typedef struct ref_result {
    int64_t tokens; /* tokens the reference ran on */
    int runs;
    double seconds;      /* median seconds per run */
    double scaled_ms;    /* scaled linearly to the full token count */
    double max_abs_diff; /* max |y - y_ref| over those tokens */
    double max_abs_ref;
} ref_result;

/* Times moe_reference_forward on the first r->tokens tokens, once, or a few times if it is
 * fast, and compares its output with the layer's last forward on those tokens. */
static int time_reference(const bench_config *c, const moe_layer_desc *d, const moe_layer_weights *w,
                          const bench_data *b, ref_result *r)
{
    const size_t n_out = (size_t)r->tokens * (size_t)d->d_model;
    float *y_ref = malloc(n_out * sizeof *y_ref);
    if (!y_ref) {
        fprintf(stderr, PROG ": out of host memory for the reference output\n");
        return EXIT_LIBRARY;
    }
    double times[MAX_REF_RUNS], total = 0.0;
    int n = 0;
    while (n < MAX_REF_RUNS && (n == 0 || total < REF_MIN_TIME)) {
        const double t0 = bench_now();
        const moe_status st = moe_reference_forward(d, w, r->tokens, b->x, y_ref, NULL);
        const double t1 = bench_now();
        if (st != MOE_OK) {
            free(y_ref);
            return library_error("moe_reference_forward", st, NULL);
        }
        times[n++] = t1 - t0;
        total += t1 - t0;
    }
    const bench_summary s = bench_summarize(times, (size_t)n);
    r->runs = n;
    r->seconds = s.median;
    r->scaled_ms = s.median * 1e3 * (double)c->tokens / (double)r->tokens;
    r->max_abs_diff = 0.0;
    r->max_abs_ref = 0.0;
    for (size_t i = 0; i < n_out; i++) {
        const double diff = fabs((double)b->y[i] - (double)y_ref[i]);
        const double mag = fabs((double)y_ref[i]);
        if (!(diff <= r->max_abs_diff)) r->max_abs_diff = diff; /* NaN sticks */
        if (mag > r->max_abs_ref) r->max_abs_ref = mag;
    }
    free(y_ref);
    return 0;
}

/* ---- report ----------------------------------------------------------------------------- */

typedef struct column {
    const char *header;
    int width; /* negative: left-aligned */
} column;

static void print_header(const moe_context *ctx, const moe_device_info *info)
{
    const moe_backend_kind kind = moe_context_backend(ctx);
    printf("moe %s | backend %s | device %d \"%s\" | driver \"%s\" | %s %d\n", moe_version(),
           moe_backend_name(kind), info->index, info->name, info->driver,
           kind == MOE_BACKEND_CPU ? "threads" : "compute units", info->compute_units);
}

static void print_layer(const bench_config *c, const moe_layer_desc *d, double flops)
{
    char groups[64] = "no groups", shared[64] = "no shared expert", cap[64] = "no capacity limit";
    if (d->n_group > 1)
        snprintf(groups, sizeof groups, "groups %" PRId64 " keep %" PRId64, d->n_group, d->topk_group);
    if (d->d_ff_shared > 0)
        snprintf(shared, sizeof shared, "shared expert %" PRId64 "%s", d->d_ff_shared,
                 d->shared_expert_gate ? " gated" : "");
    if (d->expert_capacity > 0) snprintf(cap, sizeof cap, "capacity %" PRId64, d->expert_capacity);
    printf("layer: %s, %s, top-%" PRId64 " of %" PRId64 ", %s, scale %g, %s%s, %s, %s, seed %" PRIu64
           "; %.3f GFLOP per forward\n",
           bench_choice_name(activation_choices, c->activation), bench_choice_name(score_choices, c->score),
           d->top_k, d->n_experts, d->renormalize ? "renormalised" : "not renormalised",
           d->routed_scaling_factor > 0.0f ? (double)d->routed_scaling_factor : 1.0, groups,
           d->has_selection_bias ? ", selection bias" : "", shared, cap, c->seed, flops * 1e-9);
}

static void print_table(const bench_config *c, const char *backend, const bench_summary *s, double flops,
                        const ref_result *r)
{
    static const column cols[] = {
        {"backend", -8}, {"T", 6},      {"d_model", 7},   {"d_ff", 6},           {"E", 5},
        {"k", 3},        {"iters", 7},  {"min_ms", 10},   {"median_ms", 10},     {"mean_ms", 10},
        {"p95_ms", 10},  {"GFLOPS", 9}, {"tokens/s", 11}, {"ref_ms_scaled", 14}, {"speedup", 9},
    };
    enum { N_COLS = sizeof cols / sizeof cols[0] };
    char v[N_COLS][32];
    const double med = s->median;
    snprintf(v[0], sizeof v[0], "%s", backend);
    snprintf(v[1], sizeof v[1], "%" PRId64, c->tokens);
    snprintf(v[2], sizeof v[2], "%" PRId64, c->d_model);
    snprintf(v[3], sizeof v[3], "%" PRId64, c->d_ff);
    snprintf(v[4], sizeof v[4], "%" PRId64, c->experts);
    snprintf(v[5], sizeof v[5], "%" PRId64, c->top_k);
    snprintf(v[6], sizeof v[6], "%zu", s->n);
    snprintf(v[7], sizeof v[7], "%.3f", s->min * 1e3);
    snprintf(v[8], sizeof v[8], "%.3f", med * 1e3);
    snprintf(v[9], sizeof v[9], "%.3f", s->mean * 1e3);
    snprintf(v[10], sizeof v[10], "%.3f", s->p95 * 1e3);
    snprintf(v[11], sizeof v[11], "%.2f", med > 0.0 ? flops / med * 1e-9 : 0.0);
    snprintf(v[12], sizeof v[12], "%.0f", med > 0.0 ? (double)c->tokens / med : 0.0);
    if (r) {
        snprintf(v[13], sizeof v[13], "%.3f", r->scaled_ms);
        snprintf(v[14], sizeof v[14], "%.1fx", med > 0.0 ? r->scaled_ms * 1e-3 / med : 0.0);
    } else {
        snprintf(v[13], sizeof v[13], "-");
        snprintf(v[14], sizeof v[14], "-");
    }
    for (int row = 0; row < 2; row++) {
        for (size_t i = 0; i < N_COLS; i++)
            printf("%s%*s", i ? " " : "", cols[i].width, row ? v[i] : cols[i].header);
        putchar('\n');
    }
}

static void print_arena(const moe_arena_stats *a)
{
    printf("arena: scratch peak %zu bytes (%.2f MiB), scratch reserved %zu bytes, weights %zu "
           "bytes, staging %zu bytes, allocations %" PRIu64 ", scratch reservations %" PRIu64 "\n",
           a->scratch_peak_bytes, (double)a->scratch_peak_bytes / (1024.0 * 1024.0), a->scratch_bytes,
           a->weights_bytes, a->staging_bytes, a->allocation_count, a->scratch_reservations);
}

/* ---- main -------------------------------------------------------------------------------- */

static int run(const bench_config *c)
{
    const moe_layer_desc desc = make_desc(c);
    const double flops = forward_flops(&desc, c->tokens);
    bench_data data;
    memset(&data, 0, sizeof data);
    moe_context *ctx = NULL;
    moe_layer *layer = NULL;
    double *times = NULL;
    size_t n_times = 0;
    bench_summary s = {0};
    ref_result ref = {0};
    moe_arena_stats arena;
    moe_status st;

    moe_layer_weights weights;
    int rc = 0;

    moe_context_desc cd;
    memset(&cd, 0, sizeof cd);
    cd.struct_size = sizeof cd;
    cd.backend = (moe_backend_kind)c->backend;
    cd.device_index = (int)c->device;
    cd.n_threads = (int)c->threads;
    st = moe_context_create(&cd, &ctx);
    if (st != MOE_OK) {
        rc = library_error("moe_context_create", st, NULL);
        goto done;
    }
    moe_device_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    st = moe_context_get_device_info(ctx, &info);
    if (st != MOE_OK) {
        rc = library_error("moe_context_get_device_info", st, ctx);
        goto done;
    }
    print_header(ctx, &info);
    print_layer(c, &desc, flops);
    fflush(stdout);

    const int cpu = moe_context_backend(ctx) == MOE_BACKEND_CPU;
    rc = make_data(c, &desc, cpu, cpu ? info.memory_bytes : 0, &data);
    if (rc) goto done;
    weights = make_weights(&data);

    st = moe_layer_create(ctx, &desc, &weights, &layer);
    if (st != MOE_OK) {
        rc = library_error("moe_layer_create", st, ctx);
        goto done;
    }
    for (int64_t i = 0; i < c->warmup; i++) {
        st = moe_layer_forward(layer, c->tokens, data.x, data.y, NULL);
        if (st != MOE_OK) {
            rc = library_error("moe_layer_forward (warmup)", st, ctx);
            goto done;
        }
    }
    rc = time_forwards(c, ctx, layer, &data, &times, &n_times);
    if (rc) goto done;
    s = bench_summarize(times, n_times);

    memset(&arena, 0, sizeof arena);
    arena.struct_size = sizeof arena;
    st = moe_context_get_arena_stats(ctx, &arena);
    if (st != MOE_OK) {
        rc = library_error("moe_context_get_arena_stats", st, ctx);
        goto done;
    }

    if (!c->no_ref) {
        ref.tokens = c->ref_tokens;
        rc = time_reference(c, &desc, &weights, &data, &ref);
        if (rc) goto done;
    }

    print_table(c, moe_backend_name(moe_context_backend(ctx)), &s, flops, c->no_ref ? NULL : &ref);
    print_arena(&arena);
    printf("timing: %" PRId64 " warmup, %zu timed forwards, %.3f s timed\n", c->warmup, s.n,
           s.mean * (double)s.n);
    if (!c->no_ref)
        printf("reference: %" PRId64 " tokens, %.3f ms per run (median of %d), scaled to %" PRId64
               " tokens %.3f ms; max |y - y_ref| %.3g (max |y_ref| %.3g)\n",
               ref.tokens, ref.seconds * 1e3, ref.runs, c->tokens, ref.scaled_ms, ref.max_abs_diff,
               ref.max_abs_ref);

done:
    free(times);
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    free_data(&data);
    return rc;
}

int main(int argc, char **argv)
{
    bench_config cfg = default_config();
    bench_opt opts[MAX_OPTS];
    const size_t n_opts = bench_options(&cfg, opts);
    switch (bench_opts_parse(opts, n_opts, argc, argv, PROG)) {
    case BENCH_PARSE_OK:
        break;
    case BENCH_PARSE_HELP:
        usage(stdout);
        return 0;
    case BENCH_PARSE_ERROR:
        fprintf(stderr, "run '" PROG " --help' for the options\n");
        return EXIT_USAGE;
    }
    if (cfg.ref_tokens == 0)
        cfg.ref_tokens = cfg.tokens < DEFAULT_REF_TOKENS ? cfg.tokens : DEFAULT_REF_TOKENS;
    if (cfg.ref_tokens > cfg.tokens) {
        fprintf(stderr,
                PROG ": --ref-tokens (%" PRId64 ") must not exceed --tokens (%" PRId64 ")\n"
                     "run '" PROG " --help' for the options\n",
                cfg.ref_tokens, cfg.tokens);
        return EXIT_USAGE;
    }
    return run(&cfg);
}
