/*
 * test_expert_cache.c — a placed layer's expert cache (moe_expert_cache_desc) with its slots on
 * the backend under test and every expert living on a CPU context beside it (experts in host
 * RAM, a GPU's slots): scripted routing traces whose hits, misses, uploads, evictions and slot
 * contents are worked out by hand from moe.h's rule and policies (LRU, the frequency-weighted
 * LFU, min_rows), a long trace with temporal reuse against a second, test-side model of the same
 * rules, every forward's output against the reference (and bit for bit against the one-context
 * layer when the slots are a CPU context's), the byte budget, a checkpoint whose model is closed
 * while its cache still uploads from it, a lost device, and each misuse refused.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "faults.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define E     8
#define D     64
#define Y_TOL 1e-5
#define MAX_T 16

/* Routing the test decides: router row e weighs only input feature e, so a token whose feature
 * e1 is 1 and e2 is 0.6 (the rest of the first E zero) picks e1, then e2, by clear margins. */
static void steer(h_layer *hl)
{
    memset(hl->router, 0, sizeof(float) * E * D);
    for (int e = 0; e < E; e++) hl->router[e * D + e] = 8.0f;
}

/* x for T tokens, token t routed to experts[t·k .. t·k + k). */
static void tokens_to(const int *experts, int64_t T, int64_t k, float *x, h_rng *r)
{
    for (int64_t t = 0; t < T; t++) {
        float *xt = x + t * D;
        for (int f = 0; f < D; f++) xt[f] = f < E ? 0.0f : h_sym(r, 1.0f);
        xt[experts[t * k]] = 1.0f;
        if (k > 1) xt[experts[t * k + 1]] = 0.6f;
    }
}

typedef struct cache_counts {
    int64_t hits, misses, uploads, evictions;
    int32_t slots[E];
} cache_counts;

static void expect_stats(const moe_layer *layer, const char *what, int64_t forwards, const cache_counts *want,
                         int64_t n_slots)
{
    int32_t slot_expert[E];
    moe_expert_cache_stats s = {.struct_size = sizeof s, .slot_expert = slot_expert};
    CHECK_STATUS(moe_layer_get_cache_stats(layer, &s), MOE_OK);
    CHECK(
        s.forwards == forwards && s.hits == want->hits && s.misses == want->misses &&
            s.uploads == want->uploads && s.evictions == want->evictions && s.slots == n_slots,
        "[%s] forwards %lld hits %lld misses %lld uploads %lld evictions %lld slots %lld; expected %lld %lld "
        "%lld %lld %lld %lld",
        what, (long long)s.forwards, (long long)s.hits, (long long)s.misses, (long long)s.uploads,
        (long long)s.evictions, (long long)s.slots, (long long)forwards, (long long)want->hits,
        (long long)want->misses, (long long)want->uploads, (long long)want->evictions, (long long)n_slots);
    for (int64_t i = 0; i < n_slots && i < s.slots; i++)
        CHECK(slot_expert[i] == want->slots[i], "[%s] slot %lld holds expert %d, expected %d", what,
              (long long)i, slot_expert[i], want->slots[i]);
}

/* The forward of `layer` on x against the reference, and bit for bit against `one` (the same
 * layer on one CPU context) when the cache's context is a CPU one. */
static void check_forward(moe_layer *layer, moe_layer *one, const h_layer *hl, int64_t T, const float *x,
                          bool exact, const char *what)
{
    float y[MAX_T * D], y_one[MAX_T * D], y_ref[MAX_T * D];
    CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
    CHECK_STATUS(moe_reference_forward(&hl->desc, &hl->w, T, x, y_ref, NULL), MOE_OK);
    const double err = h_rel_l2(y, y_ref, (size_t)(T * D));
    CHECK(err <= Y_TOL, "[%s] relative L2 error %.3g against the reference", what, err);
    if (exact && one) {
        CHECK_STATUS(moe_layer_forward(one, T, x, y_one, NULL), MOE_OK);
        CHECK(!memcmp(y, y_one, sizeof(float) * (size_t)(T * D)),
              "[%s] differs from the one-context layer (rel %.3g)", what,
              h_rel_l2(y, y_one, (size_t)(T * D)));
    }
}

/* A layer with every expert on `cpu` and the cache's slots on `ctx` (the home). */
static moe_layer *cached_layer(moe_context *ctx, moe_context *cpu, const h_layer *hl,
                               const moe_expert_cache_desc *cd, const int32_t *order)
{
    moe_context *const two[2] = {ctx, cpu};
    int32_t on_cpu[E];
    for (int e = 0; e < E; e++) on_cpu[e] = 1;
    const moe_placement p = {.struct_size = sizeof p,
                             .n_contexts = 2,
                             .contexts = two,
                             .expert_context = on_cpu,
                             .expert_order = order,
                             .cache = cd};
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_OK);
    return layer;
}

/* A scripted trace of top-1 forwards (each a list of experts, one per token, -1 ends it) and the
 * counts and slots after each, worked out by hand from moe.h's rules. */
typedef struct step {
    int experts[MAX_T];
    cache_counts after;
} step;

static void scripted(moe_context *ctx, moe_context *cpu, const h_layer *hl, moe_layer *one, bool exact,
                     h_rng *r, const char *what, moe_cache_policy policy, int64_t min_rows, const step *steps,
                     int n_steps)
{
    const moe_expert_cache_desc cd = {
        .struct_size = sizeof cd, .context = 0, .slots = 2, .policy = policy, .min_rows = min_rows};
    moe_layer *layer = cached_layer(ctx, cpu, hl, &cd, NULL);
    if (!layer) return;
    const cache_counts start = {.slots = {0, 1}}; /* filled with the first experts of the order */
    expect_stats(layer, what, 0, &start, 2);
    float x[MAX_T * D];
    for (int f = 0; f < n_steps; f++) {
        int64_t T = 0;
        while (T < MAX_T && steps[f].experts[T] >= 0) T++;
        tokens_to(steps[f].experts, T, 1, x, r);
        char label[96];
        snprintf(label, sizeof label, "%s, forward %d", what, f + 1);
        check_forward(layer, one, hl, T, x, exact, label);
        expect_stats(layer, label, f + 1, &steps[f].after, 2);
    }
    moe_layer_destroy(layer);
}

static void scripted_traces(moe_context *ctx, moe_context *cpu, const h_layer *hl, moe_layer *one, bool exact,
                            h_rng *r)
{
    /* LRU, two slots holding 0 and 1, every miss uploaded. */
    const step lru[] = {
        /* 2 (2 rows) then 3 (1 row) miss; both slots unused since creation: the lower first. */
        {{2, 2, 3, -1}, {0, 2, 2, 2, {2, 3}}},
        /* 3 hits; 4 misses and takes slot 0 (2 used at forward 1; slot 1 serves 3 now). */
        {{3, 4, -1}, {1, 3, 3, 3, {4, 3}}},
        /* 3 hits again; 2 comes back into slot 0. */
        {{2, 3, 3, -1}, {2, 4, 4, 4, {2, 3}}},
        /* 2 and 3 both hit. */
        {{3, 2, -1}, {4, 4, 4, 4, {2, 3}}},
        /* 5 misses: slot 0 (2) and slot 1 (3) were both last used at forward 4, the lower goes. */
        {{5, -1}, {4, 5, 5, 5, {5, 3}}},
    };
    scripted(ctx, cpu, hl, one, exact, r, "LRU", MOE_CACHE_LRU, 0, lru, (int)(sizeof lru / sizeof lru[0]));

    /* min_rows 2: a miss with one row runs where it lives. */
    const step rows2[] = {
        /* 2 (2 rows) is uploaded into slot 0; 3 (1 row) is a miss that stays on the CPU. */
        {{2, 2, 3, -1}, {0, 2, 1, 1, {2, 1}}},
        /* 3 again with one row: a miss, not uploaded; 2 hits. */
        {{3, 2, -1}, {1, 3, 1, 1, {2, 1}}},
        /* 4 with 3 rows: uploaded; slot 1 (expert 1, never used) is the victim. */
        {{4, 4, 4, -1}, {1, 4, 2, 2, {2, 4}}},
    };
    scripted(ctx, cpu, hl, one, exact, r, "LRU, min_rows 2", MOE_CACHE_LRU, 2, rows2,
             (int)(sizeof rows2 / sizeof rows2[0]));

    /* LFU: counts of forwards that routed each expert (no halving within 64 forwards). */
    const step lfu[] = {
        /* 2 and 3 miss (count 1 each) and take the slots of 0 and 1 (count 0). */
        {{2, 2, 3, -1}, {0, 2, 2, 2, {2, 3}}},
        /* 4 (count 1) against 2 and 3 (1 each, both last used at forward 1): slot 0, admitted. */
        {{4, -1}, {0, 3, 3, 3, {4, 3}}},
        /* 3 hits (count 2). */
        {{3, 3, -1}, {1, 3, 3, 3, {4, 3}}},
        /* 2 (count 2) misses; the victim is 4 (count 1), not 3 (count 2). */
        {{2, -1}, {1, 4, 4, 4, {2, 3}}},
        /* 5 (count 1) misses; the victim would be 3 (count 2, used longer ago than 2), but 1 < 2:
         * a one-off does not push out a hot expert, it runs on the CPU. */
        {{5, -1}, {1, 5, 4, 4, {2, 3}}},
    };
    scripted(ctx, cpu, hl, one, exact, r, "LFU", MOE_CACHE_LFU, 0, lfu, (int)(sizeof lfu / sizeof lfu[0]));
}

/* ---- a long trace with reuse, against a test-side model of the rules ------------------------ */

typedef struct model {
    moe_cache_policy policy;
    int64_t slots, min_rows, halving, forwards;
    int32_t slot[E];
    uint64_t last[E];
    uint32_t freq[E];
    cache_counts c;
    int64_t rows_cached, rows_elsewhere;
} model;

static uint32_t model_freq(const model *m, int e, const int64_t *rows)
{
    return m->freq[e] + (rows[e] > 0);
}

static void model_forward(model *m, const int64_t *rows)
{
    bool used[E] = {false};
    int kind[E] = {0}; /* 1 hit, 2 miss */
    for (int e = 0; e < E; e++)
        for (int s = 0; s < m->slots; s++)
            if (rows[e] > 0 && m->slot[s] == e) {
                used[s] = true;
                kind[e] = 1;
                m->c.hits++;
                m->rows_cached += rows[e];
            }
    for (;;) {
        int e = -1;
        for (int i = 0; i < E; i++)
            if (rows[i] > 0 && kind[i] == 0 && (e < 0 || rows[i] > rows[e])) e = i;
        if (e < 0) break;
        kind[e] = 2;
        m->c.misses++;
        int v = -1;
        for (int s = 0; s < m->slots && rows[e] >= m->min_rows; s++) {
            if (used[s]) continue;
            if (m->slot[s] < 0) {
                v = s;
                break;
            }
            if (v >= 0 && m->slot[v] < 0) continue;
            const bool lfu = m->policy == MOE_CACHE_LFU;
            const uint32_t f = model_freq(m, m->slot[s], rows);
            const uint32_t fv = v >= 0 ? model_freq(m, m->slot[v], rows) : 0;
            if (v < 0 || (lfu && f < fv) || ((!lfu || f == fv) && m->last[s] < m->last[v])) v = s;
        }
        if (v < 0 ||
            (m->policy == MOE_CACHE_LFU && model_freq(m, e, rows) < model_freq(m, m->slot[v], rows))) {
            m->rows_elsewhere += rows[e];
            continue;
        }
        m->c.uploads++;
        m->c.evictions += m->slot[v] >= 0;
        m->slot[v] = e;
        used[v] = true;
        m->rows_cached += rows[e];
    }
    m->forwards++;
    for (int e = 0; e < E; e++) {
        if (rows[e] == 0) continue;
        m->freq[e]++;
        for (int s = 0; s < m->slots; s++)
            if (m->slot[s] == e) m->last[s] = (uint64_t)m->forwards;
    }
    if (m->forwards % m->halving == 0)
        for (int e = 0; e < E; e++) m->freq[e] >>= 1;
}

/* moe_usage_save writes the cache's counts beside the usage, and moe_usage_load still reads it. */
static void saved_with_usage(const moe_layer *layer, const moe_expert_cache_stats *s)
{
    char dir[768], path[800], *text = NULL;
    if (!h_make_temp_dir("moe-test-expert-cache-", dir, sizeof dir)) {
        CHECK(false, "mkdtemp failed");
        return;
    }
    snprintf(path, sizeof path, "%s/usage.json", dir);
    const moe_layer *const one[1] = {layer};
    const int64_t index = 5;
    CHECK_STATUS(moe_usage_save(path, one, &index, 1), MOE_OK);
    FILE *f = fopen(path, "rb");
    if (f) {
        text = calloc(1, 1 << 16);
        const size_t n = fread(text, 1, (1 << 16) - 1, f);
        fclose(f);
        char want[160];
        snprintf(want, sizeof want,
                 "\"slots\": %lld, \"bytes\": %zu, \"forwards\": %lld, \"hits\": %lld, "
                 "\"misses\": %lld, \"uploads\": %lld, \"evictions\": %lld",
                 (long long)s->slots, s->bytes, (long long)s->forwards, (long long)s->hits,
                 (long long)s->misses, (long long)s->uploads, (long long)s->evictions);
        CHECK(n > 0 && strstr(text, "\"cache\": {") && strstr(text, want),
              "the usage file lacks the cache's '%s'", want);
    }
    CHECK(f != NULL, "no usage file at %s", path);
    int64_t routed[E];
    CHECK_STATUS(moe_usage_load(path, 5, E, routed), MOE_OK);
    free(text);
    unlink(path);
    rmdir(dir);
}

/* 40 forwards of 1..6 tokens, two experts each: with probability 3/4 from a hot set of three
 * that moves every 10 forwards, else any. */
static void long_trace(moe_context *ctx, moe_context *cpu, const h_layer *hl, moe_layer *one, bool exact,
                       h_rng *r, moe_cache_policy policy, int64_t min_rows)
{
    const moe_expert_cache_desc cd = {.struct_size = sizeof cd,
                                      .context = 0,
                                      .slots = 3,
                                      .policy = policy,
                                      .min_rows = min_rows,
                                      .halving_forwards = 8};
    const int32_t order[E] = {7, 6, 5, 4, 3, 2, 1, 0}; /* warm with 7, 6, 5 */
    moe_layer *layer = cached_layer(ctx, cpu, hl, &cd, order);
    if (!layer) return;
    CHECK_STATUS(moe_layer_track_usage(layer, 8), MOE_OK); /* for the saved file, below */
    model m = {.policy = policy, .slots = 3, .min_rows = min_rows ? min_rows : 1, .halving = 8};
    m.slot[0] = 7, m.slot[1] = 6, m.slot[2] = 5;
    float x[MAX_T * D];
    int experts[MAX_T * 2];
    int64_t total_rows = 0;
    for (int f = 0; f < 40; f++) {
        const int64_t T = h_range(r, 1, 6);
        int64_t rows[E] = {0};
        for (int64_t t = 0; t < T; t++) {
            const int hot0 = (f / 10) * 2 % E;
            int a = h_uniform(r) < 0.75 ? (hot0 + (int)h_range(r, 0, 2)) % E : (int)h_range(r, 0, E - 1);
            int b = h_uniform(r) < 0.75 ? (hot0 + (int)h_range(r, 0, 2)) % E : (int)h_range(r, 0, E - 1);
            if (b == a) b = (a + 1) % E;
            experts[2 * t] = a, experts[2 * t + 1] = b;
            rows[a]++, rows[b]++;
        }
        total_rows += 2 * T;
        tokens_to(experts, T, 2, x, r);
        char label[96];
        snprintf(label, sizeof label, "long trace, %s, %s, min_rows %lld, forward %d",
                 moe_dtype_name(hl->desc.weight_dtype), policy == MOE_CACHE_LFU ? "LFU" : "LRU",
                 (long long)min_rows, f + 1);
        check_forward(layer, one, hl, T, x, exact, label);
        model_forward(&m, rows);
        memcpy(m.c.slots, m.slot, sizeof m.slot);
        expect_stats(layer, label, f + 1, &m.c, 3);
    }
    moe_expert_cache_stats s = {.struct_size = sizeof s};
    CHECK_STATUS(moe_layer_get_cache_stats(layer, &s), MOE_OK);
    CHECK(s.rows_cached == m.rows_cached && s.rows_elsewhere == m.rows_elsewhere &&
              s.rows_cached + s.rows_elsewhere == total_rows,
          "rows: %lld cached, %lld elsewhere; expected %lld, %lld of %lld", (long long)s.rows_cached,
          (long long)s.rows_elsewhere, (long long)m.rows_cached, (long long)m.rows_elsewhere,
          (long long)total_rows);
    CHECK((s.uploads == 0) == (s.upload_bytes == 0) && s.upload_bytes <= (uint64_t)s.uploads * s.bytes / 3,
          "upload_bytes %llu for %lld uploads into 3 slots of %zu bytes", (unsigned long long)s.upload_bytes,
          (long long)s.uploads, s.bytes);
    /* Each context's device time: the home (with the slots) always runs; the CPU's experts ran
     * when some rows stayed there. */
    double ms[2] = {-1.0, -1.0};
    CHECK_STATUS(moe_layer_get_context_ms(layer, 2, ms), MOE_OK);
    CHECK(ms[0] > 0.0 && ms[1] >= 0.0 && (s.rows_elsewhere == 0 || ms[1] > 0.0),
          "device time per context: %.3f ms (slots), %.3f ms (experts' CPU) with %lld rows there", ms[0],
          ms[1], (long long)s.rows_elsewhere);
    CHECK_STATUS(moe_layer_get_context_ms(layer, 3, ms), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_layer_get_context_ms(layer, 2, NULL), MOE_ERROR_NULL_POINTER);
    saved_with_usage(layer, &s);
    printf("long trace (%s, %s, min_rows %lld): %lld hits, %lld misses, %lld uploads (%llu bytes, %.2f ms), "
           "hit rate %.0f%%\n",
           moe_dtype_name(hl->desc.weight_dtype), policy == MOE_CACHE_LFU ? "LFU" : "LRU",
           (long long)min_rows, (long long)s.hits, (long long)s.misses, (long long)s.uploads,
           (unsigned long long)s.upload_bytes, s.upload_ms,
           100.0 * (double)s.hits / (double)(s.hits + s.misses));
    moe_layer_destroy(layer);
}

/* ---- budget, misuse, a checkpoint, a lost device -------------------------------------------- */

/* A byte budget: as many slots as fit, measured as the context lays them out; never more. */
static void budget(moe_context *ctx, moe_context *cpu, const h_layer *hl)
{
    /* Three slots' bytes, measured by a cache of three. */
    const moe_expert_cache_desc three = {.struct_size = sizeof three, .context = 0, .slots = 3};
    moe_layer *layer = cached_layer(ctx, cpu, hl, &three, NULL);
    if (!layer) return;
    moe_expert_cache_stats s = {.struct_size = sizeof s};
    CHECK_STATUS(moe_layer_get_cache_stats(layer, &s), MOE_OK);
    const size_t bytes3 = s.bytes;
    moe_layer_destroy(layer);
    for (int extra = 0; extra < 2; extra++) {
        const uint64_t b = bytes3 + (extra ? bytes3 / 4 : 0);
        const moe_expert_cache_desc cd = {.struct_size = sizeof cd, .context = 0, .budget_bytes = b};
        const size_t before = h_weights_bytes(ctx);
        layer = cached_layer(ctx, cpu, hl, &cd, NULL);
        if (!layer) return;
        const size_t grew = h_weights_bytes(ctx) - before;
        CHECK_STATUS(moe_layer_get_cache_stats(layer, &s), MOE_OK);
        CHECK(s.slots == 3 && s.bytes == bytes3 && s.bytes <= b,
              "a budget of %llu bytes: %lld slots of %zu bytes; expected 3 of %zu", (unsigned long long)b,
              (long long)s.slots, s.bytes, bytes3);
        /* The home's router and vectors are on this context too: the slots are the rest. */
        CHECK(grew >= s.bytes, "the context grew by %zu bytes, less than the slots' %zu", grew, s.bytes);
        moe_layer_destroy(layer);
    }
    /* A budget below one expert holds nothing: refused, naming the bytes one takes. */
    const moe_expert_cache_desc tiny = {.struct_size = sizeof tiny, .context = 0, .budget_bytes = 16};
    moe_context *const two[2] = {ctx, cpu};
    int32_t on_cpu[E];
    for (int e = 0; e < E; e++) on_cpu[e] = 1;
    moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = on_cpu, .cache = &tiny};
    moe_layer *sentinel = (moe_layer *)&p, *out = sentinel;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &out), MOE_ERROR_OUT_OF_DEVICE_MEMORY);
    CHECK(out == sentinel, "out_layer written on failure");
    /* More slots than experts living elsewhere are cut to them. */
    const moe_expert_cache_desc many = {.struct_size = sizeof many, .context = 0, .slots = 100};
    layer = cached_layer(ctx, cpu, hl, &many, NULL);
    if (layer) {
        CHECK_STATUS(moe_layer_get_cache_stats(layer, &s), MOE_OK);
        CHECK(s.slots == E, "100 slots for %d experts: %lld", E, (long long)s.slots);
        moe_layer_destroy(layer);
    }
}

static void misuse(moe_context *ctx, moe_context *cpu, const h_layer *hl)
{
    moe_context *const two[2] = {ctx, cpu};
    int32_t on_cpu[E], on_ctx[E];
    for (int e = 0; e < E; e++) on_cpu[e] = 1, on_ctx[e] = 0;
    const moe_expert_cache_desc ok = {.struct_size = sizeof ok, .context = 0, .slots = 2};
    struct {
        moe_expert_cache_desc cd;
        const int32_t *where;
        moe_status want;
        const char *what;
    } cases[] = {
        {ok, on_cpu, MOE_OK, "a valid cache"},
        {{.struct_size = sizeof ok, .context = 2, .slots = 2},
         on_cpu,
         MOE_ERROR_INVALID_ARGUMENT,
         "context 2"},
        {{.struct_size = sizeof ok, .context = -1, .slots = 2},
         on_cpu,
         MOE_ERROR_INVALID_ARGUMENT,
         "context -1"},
        {{.struct_size = sizeof ok, .slots = -1}, on_cpu, MOE_ERROR_INVALID_SIZE, "slots -1"},
        {{.struct_size = sizeof ok}, on_cpu, MOE_ERROR_INVALID_ARGUMENT, "neither slots nor budget"},
        {{.struct_size = sizeof ok, .slots = 2, .policy = (moe_cache_policy)7},
         on_cpu,
         MOE_ERROR_INVALID_ARGUMENT,
         "policy 7"},
        {{.struct_size = sizeof ok, .slots = 2, .min_rows = -1},
         on_cpu,
         MOE_ERROR_INVALID_ARGUMENT,
         "min_rows -1"},
        {{.struct_size = sizeof ok, .slots = 2, .halving_forwards = -1},
         on_cpu,
         MOE_ERROR_INVALID_ARGUMENT,
         "halving_forwards -1"},
        {ok, on_ctx, MOE_ERROR_INVALID_ARGUMENT, "every expert on the cache's context"},
        {{.struct_size = sizeof ok + 8, .slots = 2},
         on_cpu,
         MOE_ERROR_INVALID_ARGUMENT,
         "struct_size too large"},
        {{.struct_size = 4, .slots = 2}, on_cpu, MOE_ERROR_INVALID_ARGUMENT, "struct_size too small"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const moe_placement p = {.struct_size = sizeof p,
                                 .n_contexts = 2,
                                 .contexts = two,
                                 .expert_context = cases[i].where,
                                 .cache = &cases[i].cd};
        moe_layer *sentinel = (moe_layer *)&p, *out = sentinel;
        const moe_status st = moe_layer_create_placed(&p, &hl->desc, &hl->w, &out);
        CHECK(st == cases[i].want, "%s: %s, expected %s (%s)", cases[i].what, moe_status_string(st),
              moe_status_string(cases[i].want), moe_last_error());
        if (st == MOE_OK)
            moe_layer_destroy(out);
        else
            CHECK(out == sentinel, "%s: out_layer written on failure", cases[i].what);
    }
    /* A cached placement's order must be a permutation, even when the experts are placed explicitly. */
    const int32_t twice[E] = {0, 0, 1, 2, 3, 4, 5, 6};
    const moe_placement bad_order = {.struct_size = sizeof bad_order,
                                     .n_contexts = 2,
                                     .contexts = two,
                                     .expert_context = on_cpu,
                                     .expert_order = twice,
                                     .cache = &ok};
    moe_layer *out = NULL;
    CHECK_STATUS(moe_layer_create_placed(&bad_order, &hl->desc, &hl->w, &out), MOE_ERROR_INVALID_ARGUMENT);
    /* Stats: NULLs refused; a layer without a cache reports none. */
    moe_layer *plain = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &plain), MOE_OK);
    moe_expert_cache_stats s = {.struct_size = sizeof s, .slots = 99, .hits = 5};
    CHECK_STATUS(moe_layer_get_cache_stats(plain, NULL), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_get_cache_stats(NULL, &s), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_get_cache_stats(plain, &s), MOE_OK);
    CHECK(s.slots == 0 && s.hits == 0 && s.forwards == 0, "a layer without a cache: %lld slots, %lld hits",
          (long long)s.slots, (long long)s.hits);
    double ms[1];
    CHECK_STATUS(moe_layer_get_context_ms(plain, 1, ms), MOE_ERROR_INVALID_ARGUMENT);
    moe_layer_destroy(plain);
}

/* A checkpoint's layer with a cache of 2 slots: the model closed right after, the forwards still
 * upload from its files (kept open by the layer), each equal to the one-context layer's. */
static void checkpoint(moe_context *ctx, moe_context *cpu, bool exact, const char *dir, h_rng *r)
{
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(dir, &m), MOE_OK);
    if (!m) return;
    moe_layer_desc d = {.struct_size = sizeof d};
    CHECK_STATUS(moe_model_layer_desc(m, 0, NULL, &d), MOE_OK);
    int32_t on_cpu[256];
    for (int e = 0; e < 256; e++) on_cpu[e] = 1;
    moe_context *const two[2] = {ctx, cpu};
    const moe_expert_cache_desc cd = {.struct_size = sizeof cd, .context = 0, .slots = 2};
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = on_cpu, .cache = &cd};
    moe_layer *cached = NULL, *one = NULL;
    CHECK(d.n_experts <= 256 && d.n_experts > 2, "the checkpoint has %lld experts", (long long)d.n_experts);
    CHECK_STATUS(moe_model_create_layer_placed(&p, m, 0, NULL, &cached), MOE_OK);
    CHECK_STATUS(moe_model_create_layer(cpu, m, 0, NULL, &one), MOE_OK);
    moe_model_close(m);
    const int64_t T = d.max_tokens < 4 ? d.max_tokens : 4, TD = T * d.d_model;
    float *x = malloc(sizeof(float) * (size_t)TD), *y1 = malloc(sizeof(float) * (size_t)TD),
          *y2 = malloc(sizeof(float) * (size_t)TD);
    /* Every other forward is one token: a forward whose routing uses both resident experts has
     * no slot to give (T tokens do that often enough that six such forwards sometimes uploaded
     * nothing), one token only when it routes exactly those two. */
    for (int f = 0; f < 8 && cached && one; f++) {
        const int64_t Tf = f % 2 ? 1 : T, TDf = Tf * d.d_model;
        for (int64_t i = 0; i < TDf; i++) x[i] = h_sym(r, 1.0f);
        CHECK_STATUS(moe_layer_forward(cached, Tf, x, y1, NULL), MOE_OK);
        CHECK_STATUS(moe_layer_forward(one, Tf, x, y2, NULL), MOE_OK);
        const double diff = h_rel_l2(y1, y2, (size_t)TDf);
        if (exact)
            CHECK(!memcmp(y1, y2, sizeof(float) * (size_t)TDf), "checkpoint, forward %d: rel diff %.3g", f,
                  diff);
        else
            CHECK(diff <= 2 * Y_TOL, "checkpoint, forward %d: relative L2 difference %.3g", f, diff);
    }
    moe_expert_cache_stats s = {.struct_size = sizeof s};
    if (cached) CHECK_STATUS(moe_layer_get_cache_stats(cached, &s), MOE_OK);
    CHECK(s.uploads > 0, "eight forwards of random routing over 2 slots uploaded nothing");
    moe_layer_destroy(cached);
    moe_layer_destroy(one);
    free(x);
    free(y1);
    free(y2);
}

/* The cache's device lost: the forward fails with DEVICE_LOST, y untouched, nothing counted. */
static void lost_device(moe_backend_kind kind, moe_context *cpu, const h_layer *hl, h_rng *r)
{
    const char *var = kind == MOE_BACKEND_VULKAN ? "MOE_VK_INJECT" : "MOE_CL_INJECT";
    moe_context *lost = h_context_injected(kind, var, "lost");
    /* The CPU is the home here, so the routing completes and the lost device is met by the slots. */
    moe_context *const two[2] = {cpu, lost};
    int32_t on_cpu[E];
    for (int e = 0; e < E; e++) on_cpu[e] = 0;
    const moe_expert_cache_desc cd = {.struct_size = sizeof cd, .context = 1, .slots = 2};
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = on_cpu, .cache = &cd};
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_OK);
    if (layer) {
        const int experts[3] = {0, 4, 5};
        float x[3 * D];
        tokens_to(experts, 3, 1, x, r);
        h_guarded y = h_guarded_alloc(3 * D);
        CHECK_STATUS(moe_layer_forward(layer, 3, x, y.data, NULL), MOE_ERROR_DEVICE_LOST);
        CHECK(h_untouched(&y) && h_guards_ok(&y), "a failed forward wrote y");
        /* 0 hit; 4 took slot 1 (its upload completed), 5 found no slot free: slots 0 and 4. */
        const cache_counts none = {.slots = {0, 4}};
        expect_stats(layer, "a lost device", 0, &none, 2);
        h_guarded_free(&y);
    }
    moe_layer_destroy(layer);
    moe_context_destroy(lost);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_expert_cache");
    moe_context *cpu = h_context(MOE_BACKEND_CPU, 0);
    const bool exact = kind == MOE_BACKEND_CPU;
    /* Top-1 for the scripted traces, then top-2 for the long ones, in float32 and then stored in
     * BF16, Q8_0 and Q4_0 (an upload converts or quantises the expert as creation does). */
    const moe_dtype formats[] = {MOE_DTYPE_F32, MOE_DTYPE_F32, MOE_DTYPE_BF16, MOE_DTYPE_Q8_0,
                                 MOE_DTYPE_Q4_0};
    for (int run = 0; run < (int)(sizeof formats / sizeof formats[0]); run++) {
        const int k = run == 0 ? 1 : 2;
        const moe_layer_desc d = {.struct_size = sizeof d,
                                  .d_model = D,
                                  .d_ff = 32,
                                  .n_experts = E,
                                  .top_k = k,
                                  .max_tokens = MAX_T,
                                  .renormalize = 1,
                                  .weight_dtype = formats[run]};
        h_layer hl;
        h_layer_init(&hl, &d, &r, 1.0f);
        steer(&hl);
        moe_layer *one = NULL;
        CHECK_STATUS(moe_layer_create(cpu, &hl.desc, &hl.w, &one), MOE_OK);
        if (k == 1) {
            scripted_traces(ctx, cpu, &hl, one, exact, &r);
            budget(ctx, cpu, &hl);
            misuse(ctx, cpu, &hl);
            if (kind != MOE_BACKEND_CPU) lost_device(kind, cpu, &hl, &r);
        } else if (run == 1) {
            for (int policy = 0; policy < 2; policy++)
                for (int64_t min_rows = 0; min_rows <= 2; min_rows += 2)
                    long_trace(ctx, cpu, &hl, one, exact, &r, (moe_cache_policy)policy, min_rows);
        } else {
            long_trace(ctx, cpu, &hl, one, exact, &r, MOE_CACHE_LRU, 0);
        }
        moe_layer_destroy(one);
        h_layer_free(&hl);
    }
    if (argc > 2) checkpoint(ctx, cpu, exact, argv[2], &r);
    moe_context_destroy(cpu);
    moe_context_destroy(ctx);
    return h_finish("test_expert_cache");
}
