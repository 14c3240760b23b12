/*
 * cpu_backend.c — the CPU backend: host buffers, weight packing, and the forward steps run
 * over the thread pool with the SIMD kernels chosen at run time (isa.c, kernels.c).
 *
 * Every step writes disjoint outputs per task and sums in a fixed order, so results are
 * bit-identical run to run whatever the thread count or scheduling.
 */
#define _POSIX_C_SOURCE 200809L /* sysconf */
#define _DEFAULT_SOURCE         /* madvise's MADV_HUGEPAGE (Linux) */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT (platform/system.h) */
#endif
#include "../alloc.h"
#include "../internal.h"
#include "../platform/system.h"
#include "cpu.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define CPU_ALIGN    64
#define CPU_ROW_TILE 32
/* Weight allocations of at least this size are aligned to 2 MiB and asked for transparent
 * huge pages: a decode streams gigabytes of weights, and with 4 KiB pages the hardware
 * prefetcher stops at every page boundary (measured here: 13.7 → 16.3 GB/s on one core). */
#define CPU_HUGE_PAGE     ((size_t)2 << 20)
#define CPU_HUGE_MIN_SIZE ((size_t)8 << 20)

struct moe_backend_buffer {
    size_t bytes;
    unsigned char *data;
};

typedef struct cpu_backend {
    moe_backend base;
    const moe_cpu_kernels *k;
    bool prefetch_dense; /* moe_cpu_dense_prefetch(k) */
    moe_pool *pool;
    double begin_ms;
    float *q4_acts; /* Q4_0's / Q4_K's rearranged activation rows (q4_byte_acts), q4_acts_cap floats */
    size_t q4_acts_cap;
} cpu_backend;

static cpu_backend *cpu(moe_backend *be)
{
    return (cpu_backend *)be;
}
static void *at(moe_addr a)
{
    return a.buf ? a.buf->data + a.offset : NULL;
}

/* ---- devices ---------------------------------------------------------------------------- */

/* The cores this process may run on: the online ones, or fewer when its affinity mask says so
 * (mpirun binding each rank to a core, taskset, a container's cpuset). More threads than that
 * would time-slice the same cores. */
static int online_cores(void)
{
    const long n = moe_sys_cpu_count();
    return n < 1 ? 1 : n > MOE_MAX_THREADS ? MOE_MAX_THREADS : (int)n;
}

/* MOE_NUM_THREADS: unset or empty = 0 (not given); a plain decimal 1..MOE_MAX_THREADS = that
 * many; anything else (a sign, spaces, "8x", 0, overflow, above the bound) = -1, so a typo is
 * refused rather than read as 1 thread, the core count or 2^31 threads. */
static int env_threads(const char **value)
{
    const char *env = getenv("MOE_NUM_THREADS");
    *value = env;
    if (!env || !*env) return 0;
    if (*env < '0' || *env > '9') return -1;
    char *end;
    errno = 0;
    const long n = strtol(env, &end, 10);
    if (errno == ERANGE || *end != '\0' || n < 1 || n > MOE_MAX_THREADS) return -1;
    return (int)n;
}

/* What a context with n_threads 0 uses; device info reports the cores where the variable is
 * malformed (the context itself then refuses it). */
static int default_threads(void)
{
    const char *value;
    const int n = env_threads(&value);
    return n > 0 ? n : online_cores();
}

/* "model name" / "vendor_id" style lines of /proc/cpuinfo, where there is one. */
static void cpuinfo_field(const char *key, char *out, size_t size, const char *fallback)
{
    snprintf(out, size, "%s", fallback);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    const size_t n = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, n) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) continue;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

static moe_status cpu_device_count(int *count)
{
    *count = 1;
    return MOE_OK;
}

/* The limits moe-info reports: a CPU has no workgroups or shared memory (0 = not
 * applicable); its "subgroup" is the float lanes of one vector of the kernel set in use. */
static void cpu_isa_fields(const moe_cpu_kernels *k, moe_device_info *info)
{
    static const struct {
        const char *name, *isa;
        int lanes;
    } levels[] = {
        {"baseline", MOE_CPU_X86 ? "x86-64 SSE2 (SIMDe)" : "NEON/portable (SIMDe)", 4},
        {"avx2", "x86-64 AVX2+FMA+F16C", 8},
        {"avx2vnni", "x86-64 AVX2+FMA+F16C+AVX-VNNI", 8},
        {"avx512", "x86-64 AVX-512F+F16C", 16},
        {"avx512vnni", "x86-64 AVX-512F/BW/VL+VNNI+F16C", 16},
        {"neondot", "Arm NEON+DotProd (SIMDe)", 4},
        {"simde512",
         MOE_CPU_X86 ? "16-lane code emulated by SIMDe over AVX2+FMA+F16C"
                     : "16-lane code emulated by SIMDe (NEON/portable)",
         16},
        {"simdedot", "neondot's code, sdot emulated by SIMDe (SSE2)", 4},
    };
    for (size_t i = 0; k && i < sizeof levels / sizeof levels[0]; i++)
        if (!strcmp(k->name, levels[i].name)) {
            snprintf(info->api_version, sizeof info->api_version, "%s", levels[i].isa);
            info->subgroup_size = levels[i].lanes;
        }
    info->max_workgroup_size = 0;
    info->shared_memory_bytes = 0;
    /* F16 / BF16 weights stay 16-bit in memory and are widened to float32 in registers by the
     * kernels (F16C's vcvtph2ps, or shifts); no kernel does fp16 arithmetic. */
    info->fp16 = 0;
    info->features = moe_cpu_features();
    info->features_used = k ? k->features_used & info->features : 0;
}

static moe_status cpu_device_info(int index, moe_device_info *info)
{
    (void)index;
    const char *why;
    const moe_cpu_kernels *k = moe_cpu_select_kernels(&why);
    *info = (moe_device_info){
        .struct_size = sizeof *info, .backend = MOE_BACKEND_CPU, .index = 0, .type = MOE_DEVICE_TYPE_CPU};
    cpuinfo_field("model name", info->name, sizeof info->name, "CPU");
    cpuinfo_field("vendor_id", info->vendor, sizeof info->vendor, "unknown");
    snprintf(info->driver, sizeof info->driver, "moe cpu %s (%s)", k ? k->name : "unavailable", why);
    info->memory_bytes = moe_sys_memory_bytes();
    info->compute_units = default_threads();
    cpu_isa_fields(k, info);
    return MOE_OK;
}

static void cpu_destroy(moe_backend *be)
{
    if (!be) return;
    moe_pool_destroy(cpu(be)->pool);
    moe_free(cpu(be)->q4_acts);
    moe_free(be);
}

static moe_status cpu_create(moe_context *ctx, const moe_context_desc *desc, moe_backend **out)
{
    const char *why;
    const moe_cpu_kernels *k = moe_cpu_select_kernels(&why);
    if (!k)
        return moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE,
                        "cpu: MOE_CPU_ISA=%s names a kernel set this CPU cannot run (or an unknown one)",
                        getenv("MOE_CPU_ISA"));
    moe_status st = moe_validate_threads(ctx, desc->n_threads);
    if (st != MOE_OK) return st;
    const char *env;
    if (desc->n_threads == 0 && env_threads(&env) < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "cpu: MOE_NUM_THREADS='%s' is not a thread count: it must be a plain decimal number "
                        "from 1 to %d (or unset, for every online core)",
                        env, MOE_MAX_THREADS);
    const int prefetch_dense = moe_cpu_dense_prefetch(k, &env);
    if (prefetch_dense < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "cpu: MOE_CPU_PREFETCH='%s' is not one of auto, on, off (software prefetch of F32 / "
                        "F16 / BF16 weights; unset is auto)",
                        env);
    cpu_backend *c = moe_calloc(1, sizeof *c);
    if (!c) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "cpu: out of host memory");
    const int threads = desc->n_threads > 0 ? desc->n_threads : default_threads();
    c->pool = moe_pool_create(threads);
    if (!c->pool) {
        moe_free(c);
        /* moe_pool_create fails only when memory or a thread (EAGAIN: no resources) cannot be had. */
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY,
                        "cpu: could not start a pool of %d threads: out of memory or thread resources",
                        threads);
    }
    c->k = k;
    c->prefetch_dense = prefetch_dense;
    c->base = (moe_backend){.ops = &moe_cpu_backend_ops,
                            .ctx = ctx,
                            .alignment = CPU_ALIGN,
                            .row_tile = CPU_ROW_TILE,
                            .int_dot = k->int_dot,
                            .bf16_dot = k->bf16_dot == 1 ||
                                        (k->bf16_dot == 2 && (moe_cpu_features() & MOE_FEATURE_AVX512_BF16))};
    cpu_device_info(0, &c->base.info);
    c->base.info.compute_units = threads;
    snprintf(c->base.info.driver, sizeof c->base.info.driver, "moe cpu %s (%s)", k->name, why);
    *out = &c->base;
    return MOE_OK;
}

/* ---- memory ----------------------------------------------------------------------------- */

static moe_status cpu_buffer_alloc(moe_backend *be, size_t bytes, moe_backend_buffer_usage usage,
                                   moe_backend_buffer **out)
{
    const size_t align =
        usage == MOE_BACKEND_BUFFER_WEIGHTS && bytes >= CPU_HUGE_MIN_SIZE ? CPU_HUGE_PAGE : CPU_ALIGN;
    const size_t rounded = (bytes + align - 1) & ~(align - 1);
    moe_backend_buffer *b = moe_malloc(sizeof *b);
    void *data = rounded >= bytes ? moe_aligned_alloc(align, rounded) : NULL;
    if (!b || !data) {
        moe_free(b);
        moe_aligned_free(data);
        return moe_fail(be->ctx, MOE_ERROR_OUT_OF_MEMORY, "cpu: allocation of %zu bytes failed", bytes);
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* Advice only: where THP is off or "never", the pages stay small and nothing fails. */
    if (align == CPU_HUGE_PAGE) (void)madvise(data, rounded, MADV_HUGEPAGE);
#endif
    *b = (moe_backend_buffer){bytes, data};
    *out = b;
    return MOE_OK;
}

static void cpu_buffer_free(moe_backend *be, moe_backend_buffer *b)
{
    (void)be;
    if (!b) return;
    moe_aligned_free(b->data);
    moe_free(b);
}

static moe_status cpu_buffer_write(moe_backend *be, moe_addr dst, const void *src, size_t bytes)
{
    (void)be;
    memcpy(at(dst), src, bytes);
    return MOE_OK;
}

static moe_status cpu_buffer_read(moe_backend *be, moe_addr src, void *dst, size_t bytes)
{
    (void)be;
    memcpy(dst, at(src), bytes);
    return MOE_OK;
}

/* ---- weights: pairs of 16-column panels in the storage format (cpu.h, pack.c) -------------- */

static size_t cpu_weight_bytes(moe_backend *be, const moe_weight_src *s)
{
    (void)be;
    return moe_cpu_weight_bytes(s);
}

/* Packing (quantising, when the source is float) runs over the pool: a Q4_0 model packed on one
 * core took most of a layer's set-up. Each task packs its own run of pairs with its own row
 * buffer, so the bytes do not depend on the thread count. */
typedef struct pack_job {
    unsigned char *dst, *rows;
    const moe_weight_src *s;
    bool nibble_words;
    size_t row_bytes;
    int64_t units, per_task;
} pack_job;

static void pack_task(void *arg, int64_t t)
{
    const pack_job *j = arg;
    const int64_t u0 = t * j->per_task, u1 = u0 + j->per_task < j->units ? u0 + j->per_task : j->units;
    moe_cpu_pack(j->dst, j->s, j->nibble_words, u0, u1, j->rows + (size_t)t * j->row_bytes);
}

static moe_status cpu_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *s)
{
    pack_job j = {.dst = at(dst),
                  .s = s,
                  .nibble_words = cpu(be)->k->nibble_words,
                  .row_bytes = moe_dtype_row_bytes(s->dtype, s->cols),
                  .units = moe_cpu_pack_units(s)};
    if (j.units == 0) return MOE_OK;
    int64_t tasks = 4 * (int64_t)moe_pool_threads(cpu(be)->pool); /* a few per thread: uneven rows */
    if (tasks > j.units) tasks = j.units;
    j.per_task = (j.units + tasks - 1) / tasks;
    tasks = (j.units + j.per_task - 1) / j.per_task;
    j.rows = moe_malloc((size_t)tasks * j.row_bytes);
    if (!j.rows) return moe_fail(be->ctx, MOE_ERROR_OUT_OF_MEMORY, "cpu: out of host memory");
    moe_pool_run(cpu(be)->pool, tasks, pack_task, &j);
    moe_free(j.rows);
    return MOE_OK;
}

/* ---- grouped GEMM over row tiles ----------------------------------------------------------- */

typedef struct gemm_job {
    const moe_cpu_kernels *k;
    moe_cpu_gemm g; /* b is the first expert's tensor */
    int64_t n_rows;
    size_t expert_bytes;
    const int32_t *row_token;   /* validity (and gather) per row; NULL: all valid */
    const int32_t *tile_expert; /* NULL: expert 0 */
    int64_t pairs, pairs_per_task, tasks_per_tile;
} gemm_job;

static void gemm_task(void *arg, int64_t task)
{
    const gemm_job *j = arg;
    const int64_t tile = task / j->tasks_per_tile, chunk = task % j->tasks_per_tile;
    const int64_t e = j->tile_expert ? j->tile_expert[tile] : 0;
    if (e < 0) return;
    const int64_t r0 = tile * CPU_ROW_TILE;
    int64_t r1 = r0 + CPU_ROW_TILE < j->n_rows ? r0 + CPU_ROW_TILE : j->n_rows;
    if (j->row_token) /* an expert's valid rows come first in its tiles */
        while (r1 > r0 && j->row_token[r1 - 1] < 0) r1--;
    if (r1 == r0) return;
    const int64_t p0 = chunk * j->pairs_per_task;
    const int64_t p1 = p0 + j->pairs_per_task < j->pairs ? p0 + j->pairs_per_task : j->pairs;
    moe_cpu_gemm g = j->g;
    g.b += (size_t)e * j->expert_bytes;
    if (g.bias) g.bias += (size_t)e * (size_t)(g.gated ? 2 : 1) * (size_t)g.n_out;
    j->k->gemm(&g, r0, r1, p0, p1);
}

/* Column chunks per thread where row tiles are few (run_gemm); -D to try others. */
#ifndef CPU_CHUNKS_PER_THREAD
#define CPU_CHUNKS_PER_THREAD 16
#endif

static void run_gemm(cpu_backend *c, gemm_job *j)
{
    const int64_t tiles = (j->n_rows + CPU_ROW_TILE - 1) / CPU_ROW_TILE;
    j->k = c->k;
    j->g.prefetch_dense = c->prefetch_dense;
    j->pairs = moe_cpu_pairs(j->g.n_out, j->g.gated);
    j->expert_bytes = moe_cpu_packed_bytes(j->g.dtype, j->g.n_out, j->g.k_dim, j->g.gated);
    /* Enough column chunks that every thread has work even with few row tiles: in decode each
     * expert has one tile, and its pairs are split so that all threads stream weights, in
     * pieces small enough (~16 per thread) that a thread slowed by anything else on its core
     * leaves little for the others to wait on at the end of the step. */
    const int64_t threads = moe_pool_threads(c->pool);
    int64_t chunks = (CPU_CHUNKS_PER_THREAD * threads + tiles - 1) / tiles;
    if (chunks > j->pairs) chunks = j->pairs;
    if (chunks < 1) chunks = 1;
    j->pairs_per_task = (j->pairs + chunks - 1) / chunks;
    j->tasks_per_tile = (j->pairs + j->pairs_per_task - 1) / j->pairs_per_task;
    moe_pool_run(c->pool, tiles * j->tasks_per_tile, gemm_task, j);
}

/* Q4_0 and Q4_K at the byte-layout levels (moe_cpu_kernels.nibble_words false) read each byte as
 * its low nibble q_lo and the whole byte q_lo + 16·q_hi (kernels.c: Q4_CODES; a byte holds values
 * k and k + 16 of one block or sub-block of 32, cpu.h), so their activations are rearranged to
 * match, per 32: a'[t] = a[t] − a[t + 16]/16, a'[t + 16] = a[t + 16]/16.
 * Once per GEMM call, not in the kernels: done per tile, the rearranging cost prefill 7% (the
 * 4-row widened tiles read each row's block once per pair) and its constant's register made gcc
 * spill a sum. Plain C, compiled once: every kernel level reads the same a'. */
static void q4_byte_acts(const float *a, int64_t k, float *out)
{
    for (int64_t b = 0; b < k; b += 32)
        for (int t = 0; t < 16; t++) {
            const float hi = a[b + 16 + t] * 0.0625f; /* exact */
            out[b + t] = a[b + t] - hi;
            out[b + 16 + t] = hi;
        }
}

/* The step's input rows prepared for the kernels, rows in parallel: quantised into a_q (integer
 * activations), or rearranged into a4 (q4_byte_acts). Padding rows of h (row_token -1) hold
 * nothing and are skipped; x's rows are all tokens. */
typedef struct prepare_job {
    moe_act_quant quant;
    moe_dtype weights; /* the step's format (bfloat16 pairs follow its word layout) */
    const moe_cpu_kernels *k;
    const float *a;
    unsigned char *a_q;
    float *a4;                /* non-NULL: q4_byte_acts into a4 instead */
    const int32_t *row_token; /* NULL: every row */
    int64_t k_dim, rows, per_task;
    size_t stride;
} prepare_job;

static void prepare_task(void *arg, int64_t t)
{
    const prepare_job *j = arg;
    const int64_t r1 = (t + 1) * j->per_task < j->rows ? (t + 1) * j->per_task : j->rows;
    for (int64_t r = t * j->per_task; r < r1; r++) {
        if (j->row_token && j->row_token[r] < 0) continue;
        if (j->a4)
            q4_byte_acts(j->a + r * j->k_dim, j->k_dim, j->a4 + r * j->k_dim);
        else if (j->quant == MOE_ACT_BF16X2)
            j->k->bf16x2_row(j->a + r * j->k_dim, j->k_dim, j->weights,
                             (uint32_t *)(void *)(j->a_q + (size_t)r * j->stride));
        else
            moe_cpu_quantize_row(j->quant, j->a + r * j->k_dim, j->k_dim, j->a_q + (size_t)r * j->stride);
    }
}

static void prepare_rows(cpu_backend *c, const moe_ffn_step *s, const int32_t *rt, float *a4)
{
    prepare_job j = {.quant = s->act_quant,
                     .weights = s->weight_dtype,
                     .k = c->k,
                     .a = at(s->a),
                     .a_q = a4 ? NULL : at(s->a_q),
                     .a4 = a4,
                     .row_token = s->gather ? NULL : rt,
                     .k_dim = s->k_dim,
                     .rows = s->a_rows,
                     .stride = moe_act_row_bytes(s->act_quant, s->k_dim)};
    const int64_t tasks = 4 * (int64_t)moe_pool_threads(c->pool);
    j.per_task = (j.rows + tasks - 1) / tasks;
    moe_pool_run(c->pool, (j.rows + j.per_task - 1) / j.per_task, prepare_task, &j);
}

static moe_status cpu_ffn(moe_backend *be, const moe_ffn_step *s)
{
    cpu_backend *c = cpu(be);
    const int32_t *rt = at(s->row_token);
    const float *a = at(s->a);
    if (s->act_quant != MOE_ACT_FLOAT) {
        prepare_rows(c, s, rt, NULL);
    } else if ((s->weight_dtype == MOE_DTYPE_Q4_0 || s->weight_dtype == MOE_DTYPE_Q4_K) &&
               !c->k->nibble_words) {
        const size_t need = (size_t)s->a_rows * (size_t)s->k_dim;
        if (need > c->q4_acts_cap) {
            moe_free(c->q4_acts);
            c->q4_acts_cap = 0;
            c->q4_acts = moe_malloc(need * sizeof(float));
            if (!c->q4_acts)
                return moe_fail(
                    be->ctx, MOE_ERROR_OUT_OF_MEMORY,
                    "cpu: out of host memory for %s's rearranged activations (%llu bytes: %lld rows "
                    "of %lld floats)",
                    moe_dtype_name(s->weight_dtype), (unsigned long long)(need * sizeof(float)),
                    (long long)s->a_rows, (long long)s->k_dim);
            c->q4_acts_cap = need;
        }
        prepare_rows(c, s, rt, c->q4_acts);
        a = c->q4_acts;
    }
    gemm_job j = {.g = {.k_dim = s->k_dim,
                        .n_out = s->n_out,
                        .a = a,
                        .row_token = s->gather ? rt : NULL,
                        .b = at(s->weights),
                        .dtype = s->weight_dtype,
                        .gated = s->gated,
                        .activation = s->apply_activation ? (int)s->activation : -1,
                        .swiglu_alpha = s->swiglu_alpha,
                        .swiglu_limit = s->swiglu_limit,
                        .bias = at(s->bias),
                        .out = at(s->out),
                        .a_q = s->act_quant != MOE_ACT_FLOAT ? at(s->a_q) : NULL,
                        .a_q_stride = moe_act_row_bytes(s->act_quant, s->k_dim),
                        .act_quant = s->act_quant},
                  .n_rows = s->n_rows,
                  .row_token = rt,
                  .tile_expert = at(s->tile_expert)};
    run_gemm(cpu(be), &j);
    return MOE_OK;
}

/* ---- route ---------------------------------------------------------------------------------- */

static bool ranks_above(float a, float b)
{
    return !isnan(a) && (isnan(b) || a > b);
}

typedef struct route_job {
    const moe_layer_desc *d;
    const float *logits, *bias;
    float *ws;
    int32_t *ids;
    float *weights;
} route_job;

/* Score of expert e from the token's logits; softmax uses the token's max and sum. */
static float score_of(const moe_layer_desc *d, const float *l, int64_t e, float m, float sum)
{
    return d->score_func == MOE_SCORE_SOFTMAX ? expf(l[e] - m) / sum : 1.0f / (1.0f + expf(-l[e]));
}

static bool already_chosen(const int32_t *ids, int64_t n, int64_t e)
{
    for (int64_t j = 0; j < n; j++)
        if (ids[j] == e) return true;
    return false;
}

static void route_token(void *arg, int64_t t)
{
    const route_job *r = arg;
    const moe_layer_desc *d = r->d;
    const int64_t E = d->n_experts, G = d->n_group, per = E / G, K = d->top_k;
    const float *l = r->logits + t * E;
    float *keys = r->ws + t * (E + G), *gscore = keys + E;
    int32_t *ids = r->ids + t * K;
    float *w = r->weights + t * K;

    float m = -INFINITY, sum = 0.0f;
    if (d->score_func == MOE_SCORE_SOFTMAX) {
        for (int64_t e = 0; e < E; e++)
            if (l[e] > m) m = l[e];
        for (int64_t e = 0; e < E; e++) sum += expf(l[e] - m);
    }
    for (int64_t e = 0; e < E; e++) keys[e] = score_of(d, l, e, m, sum) + (r->bias ? r->bias[e] : 0.0f);

    if (G > 1) {
        /* Group score: the best one or two keys of the group; keep topk_group groups. */
        for (int64_t g = 0; g < G; g++) {
            const float *k = keys + g * per;
            int64_t b1 = 0;
            for (int64_t i = 1; i < per; i++)
                if (ranks_above(k[i], k[b1])) b1 = i;
            float s = k[b1];
            if (d->group_score == MOE_GROUP_SCORE_TOP2_SUM && per > 1) {
                int64_t b2 = b1 == 0 ? 1 : 0;
                for (int64_t i = 0; i < per; i++)
                    if (i != b1 && ranks_above(k[i], k[b2])) b2 = i;
                s += k[b2];
            }
            gscore[g] = s;
        }
        /* Group g is kept when fewer than topk_group groups beat it (a score that ranks above
         * its own, or an equal one at a lower index): exactly the groups the reference takes one
         * by one, best first. No marks in the scores, which may be anything (+inf, NaN). */
        for (int64_t g = 0; g < G; g++) {
            int64_t above = 0;
            for (int64_t h = 0; h < G; h++)
                above += ranks_above(gscore[h], gscore[g]) || (h < g && !ranks_above(gscore[g], gscore[h]));
            if (above >= d->topk_group)
                for (int64_t i = 0; i < per; i++) keys[g * per + i] = -INFINITY;
        }
    }

    float wsum = 0.0f;
    for (int64_t j = 0; j < K; j++) {
        int64_t best = -1;
        for (int64_t e = 0; e < E; e++) {
            if (already_chosen(ids, j, e)) continue;
            if (best < 0 || ranks_above(keys[e], keys[best])) best = e;
        }
        ids[j] = (int32_t)best;
        w[j] = score_of(d, l, best, m, sum);
        wsum += w[j];
    }
    for (int64_t j = 0; j < K; j++) {
        if (d->renormalize) w[j] /= wsum + 1e-20f;
        w[j] *= d->routed_scaling_factor;
    }
}

static moe_status cpu_route(moe_backend *be, const moe_route_step *s)
{
    cpu_backend *c = cpu(be);
    const moe_layer_desc *d = s->desc;
    gemm_job j = {.g = {.k_dim = d->d_model,
                        .n_out = d->n_experts,
                        .a = at(s->x),
                        .b = at(s->router),
                        .dtype = MOE_DTYPE_F32,
                        .activation = -1,
                        .bias = d->router_has_bias ? at(s->router_bias) : NULL,
                        .out = at(s->logits)},
                  .n_rows = s->n_tokens};
    run_gemm(c, &j);
    route_job r = {d,
                   at(s->logits),
                   d->has_selection_bias ? at(s->router_bias) : NULL,
                   at(s->workspace),
                   at(s->topk_ids),
                   at(s->topk_weights)};
    moe_pool_run(c->pool, s->n_tokens, route_token, &r);
    return MOE_OK;
}

/* ---- plan: histogram, capacity, padded offsets, expert-sorted rows ----------------------------- */

static moe_status cpu_plan(moe_backend *be, const moe_plan_step *s)
{
    const moe_layer_desc *d = s->desc;
    const int64_t E = d->n_experts, TK = s->n_tokens * d->top_k, cap = d->expert_capacity;
    const int64_t tile = be->row_tile;
    const int32_t *ids = at(s->topk_ids);
    int32_t *counts = at(s->expert_counts), *offsets = at(s->expert_offsets);
    int32_t *row_token = at(s->row_token), *slot_row = at(s->slot_row), *tile_expert = at(s->tile_expert);

    memset(counts, 0, sizeof(int32_t) * (size_t)(E + 1));
    for (int64_t i = 0; i < TK; i++) counts[ids[i]]++;
    offsets[0] = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t kept = cap > 0 && counts[e] > cap ? cap : counts[e];
        offsets[e + 1] = offsets[e] + (int32_t)((kept + tile - 1) / tile * tile);
    }
    for (int64_t r = 0; r < s->n_rows; r++) row_token[r] = -1;
    for (int64_t t = 0; t < s->n_rows / tile; t++) tile_expert[t] = -1;
    for (int64_t e = 0; e < E; e++)
        for (int64_t t = offsets[e] / tile; t < offsets[e + 1] / tile; t++) tile_expert[t] = (int32_t)e;

    /* Second pass in (token, slot) order: counts serve as each expert's cursor again. */
    memset(counts, 0, sizeof(int32_t) * (size_t)E);
    int32_t dropped = 0;
    for (int64_t i = 0; i < TK; i++) {
        const int32_t e = ids[i], pos = counts[e]++;
        if (cap > 0 && pos >= cap) {
            slot_row[i] = -1;
            dropped++;
            continue;
        }
        slot_row[i] = offsets[e] + pos;
        row_token[offsets[e] + pos] = (int32_t)(i / d->top_k);
    }
    counts[E] = dropped;
    return MOE_OK;
}

/* ---- combine ------------------------------------------------------------------------------- */

typedef struct combine_job {
    const moe_cpu_kernels *k;
    const moe_combine_step *s;
} combine_job;

static void combine_token(void *arg, int64_t t)
{
    const combine_job *cj = arg;
    const moe_combine_step *s = cj->s;
    const moe_layer_desc *d = s->desc;
    const int64_t D = d->d_model, K = d->top_k;
    const float *x = (const float *)at(s->x) + t * D;
    const float *o = at(s->expert_out);
    const int32_t *slot_row = (const int32_t *)at(s->slot_row) + t * K;
    const float *w = (const float *)at(s->topk_weights) + t * K;
    float *y = (float *)at(s->y) + t * D;

    memset(y, 0, sizeof(float) * (size_t)D);
    for (int64_t j = 0; j < K; j++) {
        if (slot_row[j] >= 0)
            cj->k->axpy(D, w[j], o + slot_row[j] * D, y);
        else if (d->drop_policy == MOE_DROP_PASSTHROUGH)
            cj->k->axpy(D, w[j], x, y);
    }
    if (s->shared_out.buf) {
        float g = 1.0f;
        if (s->shared_gate.buf) {
            const float *wg = at(s->shared_gate);
            double dot = 0.0;
            for (int64_t i = 0; i < D; i++) dot += (double)wg[i] * x[i];
            g = (float)(1.0 / (1.0 + exp(-dot)));
        }
        cj->k->axpy(D, g, (const float *)at(s->shared_out) + t * D, y);
    }
}

static moe_status cpu_combine(moe_backend *be, const moe_combine_step *s)
{
    combine_job j = {cpu(be)->k, s};
    moe_pool_run(cpu(be)->pool, s->n_tokens, combine_token, &j);
    return MOE_OK;
}

/* ---- stats --------------------------------------------------------------------------------- */

static moe_status cpu_stats(moe_backend *be, const moe_stats_step *s)
{
    (void)be;
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens, E = d->n_experts;
    const float *logits = at(s->logits);
    const int32_t *counts = at(s->expert_counts);
    double aux = 0.0, z = 0.0;
    /* P_e accumulates per expert over tokens, then aux sums the shares in expert order. */
    double *p = at(s->workspace);
    for (int64_t e = 0; e < E; e++) p[e] = 0.0;
    for (int64_t t = 0; t < T; t++) {
        const float *l = logits + t * E;
        double m = -INFINITY, sum = 0.0, norm = 0.0;
        for (int64_t e = 0; e < E; e++)
            if (l[e] > m) m = l[e];
        for (int64_t e = 0; e < E; e++) sum += exp(l[e] - m);
        const double lse = m + log(sum);
        z += lse * lse;
        for (int64_t e = 0; e < E; e++)
            norm += d->score_func == MOE_SCORE_SOFTMAX ? exp(l[e] - lse) : 1.0 / (1.0 + exp(-(double)l[e]));
        for (int64_t e = 0; e < E; e++) {
            const double sc =
                d->score_func == MOE_SCORE_SOFTMAX ? exp(l[e] - lse) : 1.0 / (1.0 + exp(-(double)l[e]));
            p[e] += sc / norm;
        }
    }
    for (int64_t e = 0; e < E; e++) aux += (double)counts[e] / (double)(T * d->top_k) * (p[e] / (double)T);
    float *losses = at(s->losses);
    losses[0] = (float)(aux * (double)E);
    losses[1] = (float)(z / (double)T);
    return MOE_OK;
}

/* The CPU runs each step as it is called: the device time is the wall time in between. */
static moe_status cpu_begin(moe_backend *be)
{
    cpu(be)->begin_ms = moe_now_ms();
    return MOE_OK;
}

/* The steps have run by the time the forward is submitted: the CPU is the device, and the
 * caller's thread drives the workers through each step. Nothing is left for the wait. */
static moe_status cpu_submit(moe_backend *be)
{
    be->last_device_ms = moe_now_ms() - cpu(be)->begin_ms;
    be->device_ms_total += be->last_device_ms;
    return MOE_OK;
}

static moe_status cpu_wait(moe_backend *be)
{
    (void)be;
    return MOE_OK;
}

const moe_backend_ops moe_cpu_backend_ops = {
    .kind = MOE_BACKEND_CPU,
    .name = "cpu",
    .device_count = cpu_device_count,
    .device_info = cpu_device_info,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    /* The steps have run when stage_out is called (each as it is called): plain copies. */
    .stage_in = cpu_buffer_write,
    .stage_out = cpu_buffer_read,
    .weight_bytes = cpu_weight_bytes,
    .weight_upload = cpu_weight_upload,
    .begin = cpu_begin,
    .route = cpu_route,
    .plan = cpu_plan,
    .ffn = cpu_ffn,
    .combine = cpu_combine,
    .stats = cpu_stats,
    .submit = cpu_submit,
    .wait = cpu_wait,
};
