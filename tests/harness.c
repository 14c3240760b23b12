/*
 * harness.c — shared test support (see harness.h).
 */
#define _POSIX_C_SOURCE 200809L /* setenv, strdup */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int h_failures = 0;
int h_checks = 0;

/* ---- setup -------------------------------------------------------------------------------- */

char *h_make_temp_dir(const char *prefix, char *buf, size_t size)
{
    const char *names[] = {
        "TMPDIR",
#if defined(_WIN32)
        "TEMP",
        "TMP",
#endif
        NULL
    };
    const char *tmp = "/tmp";
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && v[0]) {
            tmp = v;
            break;
        }
    }
    const int n = snprintf(buf, size, "%s/%sXXXXXX", tmp, prefix);
    return n > 0 && (size_t)n < size ? mkdtemp(buf) : NULL;
}

static void skip(const char *why)
{
    printf("SKIP: %s\n", why);
    exit(SKIP_CODE);
}

moe_context *h_context(moe_backend_kind kind, int n_threads)
{
    moe_context_desc desc = {.struct_size = sizeof desc, .backend = kind, .n_threads = n_threads};
    moe_context *ctx = NULL;
    const moe_status st = moe_context_create(&desc, &ctx);
    if (st == MOE_ERROR_BACKEND_UNAVAILABLE) skip(moe_last_error());
    if (st != MOE_OK) {
        fprintf(stderr, "FAIL: moe_context_create: %s: %s\n", moe_status_string(st), moe_last_error());
        exit(1);
    }
    return ctx;
}

void h_check_context_features(moe_backend_kind kind, const char *switch_env)
{
    char *saved = getenv(switch_env) ? strdup(getenv(switch_env)) : NULL;
    unsetenv(switch_env);
    moe_device_info dev = {.struct_size = sizeof dev}, info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_device_get_info(kind, 0, &dev), MOE_OK);
    for (int disabled = 0; disabled < 2; disabled++) {
        if (disabled) setenv(switch_env, "1", 1);
        moe_context *ctx = h_context(kind, 0);
        CHECK_STATUS(moe_context_get_device_info(ctx, &info), MOE_OK);
        moe_context_destroy(ctx);
        CHECK(info.features == dev.features, "context features 0x%x, device 0x%x", info.features,
              dev.features);
        const uint32_t want = disabled ? 0u : dev.features_used;
        CHECK(info.features_used == want, "context features_used 0x%x%s%s, expected 0x%x", info.features_used,
              disabled ? " with =1 in " : "", disabled ? switch_env : "", want);
    }
    CHECK_STATUS(moe_device_get_info(kind, 0, &info), MOE_OK);
    CHECK(info.features_used == dev.features_used, "moe_device_get_info follows %s", switch_env);
    if (saved)
        setenv(switch_env, saved, 1);
    else
        unsetenv(switch_env);
    free(saved);
}

void h_check_gpu_device_features(moe_backend_kind kind, int i, uint32_t never, moe_device_info *info)
{
    const uint32_t cpu_bits =
        MOE_FEATURE_F16C | MOE_FEATURE_AVX512_BF16 | MOE_FEATURE_AVX512_VNNI | MOE_FEATURE_AVX_VNNI;
    const char *name = moe_backend_name(kind);
    *info = (moe_device_info){.struct_size = sizeof *info};
    CHECK_STATUS(moe_device_get_info(kind, i, info), MOE_OK);
    const uint32_t f = info->features, used = info->features_used;
    CHECK((used & ~f) == 0, "%s device %d: features_used 0x%x not within features 0x%x", name, i, used, f);
    CHECK((f & cpu_bits) == 0, "%s device %d: a CPU feature on a GPU device: 0x%x", name, i, f);
    CHECK((f & never) == 0, "%s device %d: a feature this backend cannot have: 0x%x", name, i, f & never);
    CHECK(used == (f & MOE_FEATURE_SUBGROUP_REDUCE),
          "%s device %d: features_used 0x%x: the subgroup variants are used exactly where the device has "
          "subgroup reductions (features 0x%x)",
          name, i, used, f);
    CHECK(info->fp16 == ((f & MOE_FEATURE_FLOAT16) != 0), "%s device %d: fp16 %d, features 0x%x", name, i,
          info->fp16, f);
    printf("  device %d (%s): features 0x%x, used 0x%x\n", i, info->name, f, used);
}

moe_context *h_open(int argc, char **argv, moe_backend_kind *kind)
{
    const char *name = argc > 1 ? argv[1] : "cpu";
    static const moe_backend_kind kinds[] = {MOE_BACKEND_CPU, MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL};
    *kind = MOE_BACKEND_AUTO;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(name, moe_backend_name(kinds[i]))) *kind = kinds[i];
    if (*kind == MOE_BACKEND_AUTO) {
        fprintf(stderr, "unknown backend '%s'\n", name);
        exit(2);
    }
    int count = 0;
    const moe_status cst = moe_device_count(*kind, &count);
    if (cst == MOE_ERROR_BACKEND_UNAVAILABLE) skip("backend not built into this library");
    if (cst != MOE_OK) { /* a driver that fails to enumerate is a failure, not a skip */
        fprintf(stderr, "FAIL: moe_device_count(%s): %s (%s)\n", name, moe_status_string(cst),
                moe_last_error());
        exit(1);
    }
    if (count == 0) skip("backend has no device on this machine");
    moe_context *ctx = h_context(*kind, 0);
    moe_device_info info = {.struct_size = sizeof info};
    moe_context_get_device_info(ctx, &info);
    printf("backend %s, device %s, driver %s\n", name, info.name, info.driver);
    return ctx;
}

int h_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, h_checks, h_failures);
    return h_failures == 0 ? 0 : 1;
}

/* ---- random data ---------------------------------------------------------------------------- */

h_rng h_rng_seeded(const char *what)
{
    const char *env = getenv("MOE_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    printf("%s: seed %llu (replay with MOE_TEST_SEED=%llu)\n", what, (unsigned long long)seed,
           (unsigned long long)seed);
    return (h_rng){seed ? seed : 1};
}

uint64_t h_next(h_rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double h_uniform(h_rng *r)
{
    return (double)(h_next(r) >> 11) * 0x1.0p-53;
}
float h_sym(h_rng *r, float scale)
{
    return (float)((2.0 * h_uniform(r) - 1.0) * scale);
}
int64_t h_range(h_rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(h_next(r) % (uint64_t)(hi - lo + 1));
}

moe_layer_desc h_random_desc(h_rng *r, int64_t *tokens)
{
    moe_layer_desc dd = {.struct_size = sizeof dd, .d_model = h_range(r, 1, 160)};
    moe_layer_desc *d = &dd;
    const int64_t T = h_range(r, 1, 150);
    *tokens = T;
    d->d_ff = h_range(r, 1, 200);
    d->n_experts = h_range(r, 1, 64);
    d->top_k = h_range(r, 1, d->n_experts < 8 ? d->n_experts : 8);
    d->max_tokens = T + h_range(r, 0, 20);
    d->score_func = (moe_score_func)h_range(r, 0, 1);
    d->activation = (moe_activation)h_range(r, 0, 3);
    d->renormalize = (int)h_range(r, 0, 1);
    d->routed_scaling_factor = h_range(r, 0, 1) ? 0.0f : (float)(0.5 + 2.0 * h_uniform(r));
    d->has_selection_bias = d->score_func == MOE_SCORE_SIGMOID && h_range(r, 0, 1);
    /* Groups, when E has a divisor that leaves enough experts for top_k. */
    const int64_t g = h_range(r, 2, 8);
    if (h_range(r, 0, 1) && d->n_experts % g == 0) {
        d->n_group = g;
        d->topk_group = h_range(r, 1, g);
        while (d->topk_group * (d->n_experts / g) < d->top_k) d->topk_group++;
        d->group_score = (moe_group_score)h_range(r, 0, 1);
    }
    if (h_range(r, 0, 2) == 0) {
        d->d_ff_shared = h_range(r, 1, 100);
        d->shared_expert_gate = (int)h_range(r, 0, 1);
    }
    if (h_range(r, 0, 2) == 0) {
        d->expert_capacity = h_range(r, 1, T);
        d->drop_policy = (moe_drop_policy)h_range(r, 0, 1);
    }
    if (h_range(r, 0, 3) == 0) { /* gpt-oss's pieces, each on its own */
        if (h_range(r, 0, 1)) {
            d->activation = MOE_ACTIVATION_SWIGLU_OAI;
            d->swiglu_limit = (float)(0.25 + 3.0 * h_uniform(r));
        }
        d->router_has_bias = !d->has_selection_bias && h_range(r, 0, 1);
        d->expert_has_bias = (int)h_range(r, 0, 1);
    }
    return dd;
}

static float *rand_array(size_t n, h_rng *r, float scale)
{
    float *a = malloc(sizeof(float) * (n ? n : 1));
    if (!a) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) a[i] = h_sym(r, scale);
    return a;
}

void h_layer_init(h_layer *l, const moe_layer_desc *desc, h_rng *r, float router_scale)
{
    memset(l, 0, sizeof *l);
    l->desc = *desc;
    l->hot_expert = -1;
    l->desc.struct_size = sizeof l->desc;
    const moe_layer_desc *d = &l->desc;
    const size_t D = (size_t)d->d_model, F = (size_t)d->d_ff, E = (size_t)d->n_experts;
    const size_t FS = (size_t)d->d_ff_shared;
    const float in_scale = 1.0f / sqrtf((float)D), ff_scale = 1.0f / sqrtf((float)F);
    const bool gated = d->activation == MOE_ACTIVATION_SWIGLU || d->activation == MOE_ACTIVATION_GEGLU ||
                       d->activation == MOE_ACTIVATION_SWIGLU_OAI;
    l->router = rand_array(E * D, r, router_scale * in_scale);
    if (d->has_selection_bias) l->router_bias = rand_array(E, r, 0.1f);
    if (d->router_has_bias) l->router_bias = rand_array(E, r, router_scale); /* as large as the logits */
    if (gated) l->gate = rand_array(E * F * D, r, in_scale);
    l->up = rand_array(E * F * D, r, in_scale);
    l->down = rand_array(E * D * F, r, ff_scale);
    if (FS) {
        if (gated) l->shared_gate = rand_array(FS * D, r, in_scale);
        l->shared_up = rand_array(FS * D, r, in_scale);
        l->shared_down = rand_array(D * FS, r, 1.0f / sqrtf((float)FS));
        if (d->shared_expert_gate) l->shared_expert_gate = rand_array(D, r, in_scale);
    }
    l->w = (moe_layer_weights){.struct_size = sizeof l->w,
                               .router = l->router,
                               .router_bias = l->router_bias,
                               .gate = l->gate,
                               .up = l->up,
                               .down = l->down,
                               .shared_gate = l->shared_gate,
                               .shared_up = l->shared_up,
                               .shared_down = l->shared_down,
                               .shared_expert_gate = l->shared_expert_gate};
    if (d->expert_has_bias) { /* biases about as large as the products they are added to */
        if (gated) l->gate_bias = rand_array(E * F, r, 1.0f);
        l->up_bias = rand_array(E * F, r, 1.0f);
        l->down_bias = rand_array(E * D, r, 1.0f);
        l->w.gate_bias = l->gate_bias;
        l->w.up_bias = l->up_bias;
        l->w.down_bias = l->down_bias;
    }
}

void h_make_hot(h_layer *l, int64_t hot)
{
    const int64_t D = l->desc.d_model;
    for (int64_t e = 0; e < l->desc.n_experts; e++) l->router[e * D] = e == hot ? 50.0f : 0.0f;
    l->hot_expert = hot;
}

void h_layer_free(h_layer *l)
{
    free(l->router);
    free(l->router_bias);
    free(l->gate);
    free(l->up);
    free(l->down);
    free(l->shared_gate);
    free(l->shared_up);
    free(l->shared_down);
    free(l->shared_expert_gate);
    free(l->gate_bias);
    free(l->up_bias);
    free(l->down_bias);
    memset(l, 0, sizeof *l);
}

static double rel_gap(double a, double b, double unit)
{
    const double m = fmax(fmax(fabs(a), fabs(b)), unit);
    return fabs(a - b) / m;
}

static int cmp_desc(const void *pa, const void *pb)
{
    const double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? 1 : a > b ? -1 : 0;
}

double h_route_margin(const h_layer *l, const float *x)
{
    const moe_layer_desc *d = &l->desc;
    const int64_t E = d->n_experts, D = d->d_model;
    const int64_t G = d->n_group > 1 ? d->n_group : 1, per = E / G;
    const int64_t keep = G > 1 ? d->topk_group : 1;
    double *key = malloc(sizeof(double) * (size_t)E), *tmp = malloc(sizeof(double) * (size_t)E);
    double *gs = malloc(sizeof(double) * (size_t)G);
    double m = -INFINITY, sum = 0.0, margin = INFINITY;
    for (int64_t e = 0; e < E; e++) {
        double s = 0.0;
        for (int64_t i = 0; i < D; i++) s += (double)l->router[e * D + i] * x[i];
        if (d->router_has_bias) s += l->router_bias[e]; /* the router's own bias: part of the logit */
        key[e] = s;
        if (s > m) m = s;
    }
    /* Decisions are judged where float32 resolves them: on the logits when the order of the
     * scores is the order of the logits (softmax, no bias, no sums of scores), else on the
     * scores (plus bias), whose scale is about 1. */
    const bool logit_space = d->score_func == MOE_SCORE_SOFTMAX && !d->has_selection_bias &&
                             (G == 1 || d->group_score == MOE_GROUP_SCORE_MAX);
    const double unit = logit_space ? 1.0 : 1e-2;
    for (int64_t e = 0; e < E; e++) sum += exp(key[e] - m);
    for (int64_t e = 0; e < E && !logit_space; e++) {
        key[e] = d->score_func == MOE_SCORE_SOFTMAX ? exp(key[e] - m) / sum : 1.0 / (1.0 + exp(-key[e]));
        if (d->has_selection_bias) key[e] += l->router_bias[e];
    }
    bool *allowed = malloc(sizeof(bool) * (size_t)G);
    for (int64_t g = 0; g < G; g++) allowed[g] = true;
    if (G > 1) {
        for (int64_t g = 0; g < G; g++) {
            memcpy(tmp, key + g * per, sizeof(double) * (size_t)per);
            qsort(tmp, (size_t)per, sizeof(double), cmp_desc);
            gs[g] = d->group_score == MOE_GROUP_SCORE_MAX || per < 2 ? tmp[0] : tmp[0] + tmp[1];
        }
        memcpy(tmp, gs, sizeof(double) * (size_t)G);
        qsort(tmp, (size_t)G, sizeof(double), cmp_desc);
        if (keep < G) margin = fmin(margin, rel_gap(tmp[keep - 1], tmp[keep], unit));
        const double cut = tmp[keep - 1];
        for (int64_t g = 0; g < G; g++) allowed[g] = gs[g] >= cut;
    }
    int64_t n = 0;
    for (int64_t e = 0; e < E; e++)
        if (allowed[e / per]) tmp[n++] = key[e];
    qsort(tmp, (size_t)n, sizeof(double), cmp_desc);
    if (d->top_k < n) margin = fmin(margin, rel_gap(tmp[d->top_k - 1], tmp[d->top_k], unit));
    free(key);
    free(tmp);
    free(gs);
    free(allowed);
    return margin;
}

void h_fill_input(const h_layer *l, int64_t T, float *x, h_rng *r)
{
    const int64_t D = l->desc.d_model;
    for (int64_t t = 0; t < T; t++) {
        float *xt = x + t * D;
        for (int attempt = 0;; attempt++) {
            for (int64_t i = 0; i < D; i++) xt[i] = h_sym(r, 1.0f);
            if (l->hot_expert >= 0) xt[0] = 1.0f;
            if (h_route_margin(l, xt) >= 1e-4) break;
            if (attempt == 1000) {
                fprintf(stderr, "FAIL: no input without a routing near-tie after 1000 draws\n");
                exit(1);
            }
        }
    }
}

/* ---- guarded outputs ------------------------------------------------------------------------ */

#define GUARD 64
static const uint32_t SENTINEL = 0x7fa5a5a5u; /* a NaN payload no kernel produces */

static void fill_sentinel(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) memcpy(p + i, &SENTINEL, sizeof SENTINEL);
}

static bool is_sentinel(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(p + i, &SENTINEL, sizeof SENTINEL) != 0) return false;
    return true;
}

h_guarded h_guarded_alloc(size_t n)
{
    h_guarded g = {malloc(sizeof(float) * (n + 2 * GUARD)), NULL, n};
    if (!g.base) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    g.data = g.base + GUARD;
    fill_sentinel(g.base, n + 2 * GUARD);
    return g;
}

void h_guarded_reset(h_guarded *g)
{
    fill_sentinel(g->base, g->n + 2 * GUARD);
}

void h_guarded_free(h_guarded *g)
{
    free(g->base);
    g->base = g->data = NULL;
}

size_t h_weights_bytes(const moe_context *ctx)
{
    moe_arena_stats s = {.struct_size = sizeof s};
    CHECK_STATUS(moe_context_get_arena_stats(ctx, &s), MOE_OK);
    return s.weights_bytes;
}

bool h_guards_ok(const h_guarded *g)
{
    return is_sentinel(g->base, GUARD) && is_sentinel(g->data + g->n, GUARD);
}
bool h_untouched(const h_guarded *g)
{
    return is_sentinel(g->base, g->n + 2 * GUARD);
}

/* ---- comparisons ------------------------------------------------------------------------------ */

double h_rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double diff = (double)a[i] - (double)ref[i];
        num += diff * diff;
        den += (double)ref[i] * (double)ref[i];
    }
    if (isnan(num)) return INFINITY;
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

int h_compare_topk(const int32_t *ids, const float *w, const int32_t *ref_ids, const float *ref_w, int64_t T,
                   int64_t k, float tol)
{
    int bad = 0;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t j = 0; j < k; j++) {
            const int32_t want = ref_ids[t * k + j];
            int64_t found = -1;
            for (int64_t i = 0; i < k; i++)
                if (ids[t * k + i] == want) found = i;
            if (found < 0 ||
                fabsf(w[t * k + found] - ref_w[t * k + j]) > tol * fmaxf(1.0f, fabsf(ref_w[t * k + j]))) {
                if (bad < 5)
                    fprintf(stderr, "  token %lld: expert %d (ref weight %g) %s\n", (long long)t, want,
                            (double)ref_w[t * k + j], found < 0 ? "not chosen" : "weight differs");
                bad++;
            }
        }
    }
    return bad;
}
