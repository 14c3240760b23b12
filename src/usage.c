/*
 * usage.c — how often each expert of a layer is routed to (moe_layer_track_usage): in total and
 * over a window of the last forwards, read on the host, saved to and loaded from JSON, and turned
 * into an expert order for a placement's budgets (moe_usage_expert_order), so a deployment can
 * put its hot experts on the GPU at start-up from a previous run's statistics.
 *
 * Counting reads the plan's per-expert counts (E int32) back after the forward's wait: a small
 * transfer, which is why tracking is asked for per layer. A forward submitted without a wait
 * (moe_layer_forward_async, a recording) leaves its counts in the shared scratch, which the next
 * forward overwrites: it is counted as uncounted, not guessed.
 */
#include "alloc.h"
#include "file.h"
#include "internal.h"
#include "json.h"
#include "model/model_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct moe_usage moe_usage;

struct moe_usage {
    int64_t window;     /* forwards the window spans */
    int64_t forwards;   /* counted */
    int64_t tokens;     /* of the counted forwards */
    int64_t uncounted;  /* asynchronous or recorded forwards: not counted */
    int64_t next;       /* the ring slot of the next counted forward */
    int64_t *total;     /* [E] */
    int64_t *in_window; /* [E]: the sum of the ring's rows */
    int32_t *ring;      /* [window][E]: the counts of the last `window` counted forwards */
    int32_t *fetched;   /* [E + 1]: the last forward's counts (and dropped), until committed */
};

/* Layer indices in a file: 0..2^53, which a JSON number (a double) holds exactly. */
#define MOE_USAGE_MAX_INDEX (INT64_C(1) << 53)

/* Windows up to 2^16 forwards: a window is for recent behaviour (an expert cache's horizon),
 * and window·E int32 stays small (16 MiB at E = 64) */
#define MOE_USAGE_MAX_WINDOW 65536

void moe_usage_free(moe_usage *u)
{
    if (!u) return;
    moe_free(u->total);
    moe_free(u->in_window);
    moe_free(u->ring);
    moe_free(u->fetched);
    moe_free(u);
}

moe_status moe_layer_track_usage(moe_layer *layer, int64_t window)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_context *ctx = layer->ctx;
    moe_clear_error(ctx);
    if (layer->ep) return moe_layer_check_unplaced(layer, "moe_layer_track_usage"); /* refused, naming why */
    if (window < 0 || window > MOE_USAGE_MAX_WINDOW)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE,
                        "window is %" PRId64 " forwards; it must be 0 (stop tracking) to %d", window,
                        MOE_USAGE_MAX_WINDOW);
    moe_usage *u = NULL;
    if (window > 0) {
        const size_t E = (size_t)layer->desc.n_experts;
        u = moe_calloc(1, sizeof *u);
        if (u) {
            u->window = window;
            u->total = moe_calloc(E, sizeof *u->total);
            u->in_window = moe_calloc(E, sizeof *u->in_window);
            size_t cells; /* E · window: checked, size_t may be 32 bits */
            u->ring = moe_mul_size(E, (size_t)window, &cells) ? moe_calloc(cells, sizeof *u->ring) : NULL;
            u->fetched = moe_calloc(E + 1, sizeof *u->fetched);
        }
        if (!u || !u->total || !u->in_window || !u->ring || !u->fetched) {
            moe_usage_free(u);
            return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY,
                            "out of host memory for a usage window of %" PRId64 " forwards of %zu experts",
                            window, E);
        }
    }
    moe_usage_free(layer->usage); /* (re)starting drops the counts so far */
    layer->usage = u;
    return MOE_OK;
}

int32_t *moe_usage_fetched(moe_layer *layer)
{
    return layer->usage->fetched;
}

void moe_usage_commit(moe_layer *layer, int64_t T)
{
    moe_usage *u = layer->usage;
    const int64_t E = layer->desc.n_experts;
    int32_t *slot = u->ring + u->next * E; /* the oldest forward's counts leave the window */
    for (int64_t e = 0; e < E; e++) {
        u->total[e] += u->fetched[e];
        u->in_window[e] += (int64_t)u->fetched[e] - slot[e];
        slot[e] = u->fetched[e];
    }
    u->next = (u->next + 1) % u->window;
    u->forwards++;
    u->tokens += T;
}

void moe_usage_uncounted(moe_layer *layer)
{
    if (layer->usage) layer->usage->uncounted++;
}

moe_status moe_layer_get_usage(const moe_layer *layer, moe_expert_usage *out)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_context *ctx = layer->ctx;
    moe_clear_error(ctx);
    if (!out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "usage is NULL");
    moe_expert_usage in = {.struct_size = sizeof in};
    moe_status st = moe_abi_in(ctx, &moe_abi_expert_usage, out, &in); /* the caller's arrays */
    if (st != MOE_OK) return st;
    const moe_usage *u = layer->usage;
    const int64_t E = layer->desc.n_experts;
    moe_expert_usage r = in;
    r.window = u ? u->window : 0;
    r.forwards = u ? u->forwards : 0;
    r.tokens = u ? u->tokens : 0;
    r.uncounted_forwards = u ? u->uncounted : 0;
    r.window_forwards = u ? (u->forwards < u->window ? u->forwards : u->window) : 0;
    for (int64_t e = 0; e < E; e++) {
        if (in.routed_total) in.routed_total[e] = u ? u->total[e] : 0;
        if (in.routed_window) in.routed_window[e] = u ? u->in_window[e] : 0;
    }
    return moe_abi_out(ctx, &moe_abi_expert_usage, out, &r);
}

/* ---- an order from counts ------------------------------------------------------------------- */

moe_status moe_usage_expert_order(const int64_t *routed, int64_t n_experts, int32_t *order)
{
    moe_clear_error(NULL);
    if (!routed || !order) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "routed and order are required");
    if (n_experts < 1 || n_experts > MOE_MAX_DIM)
        return moe_fail(NULL, MOE_ERROR_INVALID_SIZE, "n_experts is %" PRId64 "; it must be 1..%d", n_experts,
                        MOE_MAX_DIM);
    /* A bottom-up merge sort (stable: ties keep the lower index first), O(E log E) for any E. */
    const size_t n = (size_t)n_experts;
    int32_t *tmp = moe_malloc(sizeof *tmp * n);
    if (!tmp) return moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    int32_t *from = order, *to = tmp;
    for (size_t i = 0; i < n; i++) from[i] = (int32_t)i;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            const size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) to[k++] = routed[from[j]] > routed[from[i]] ? from[j++] : from[i++];
            while (i < mid) to[k++] = from[i++];
            while (j < hi) to[k++] = from[j++];
        }
        int32_t *swap = from;
        from = to;
        to = swap;
    }
    if (from != order) memcpy(order, from, sizeof *order * n);
    moe_free(tmp);
    return MOE_OK;
}

/* ---- saved and loaded ------------------------------------------------------------------------ */

/* A growing text buffer; `failed` sticks. */
typedef struct text {
    char *s;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *fmt, ...) MOE_PRINTF(2, 3);

static void put(text *t, const char *fmt, ...)
{
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        const size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *grown = moe_malloc(cap);
        if (!grown) {
            t->failed = true;
            return;
        }
        if (t->s) memcpy(grown, t->s, t->len);
        moe_free(t->s);
        t->s = grown;
        t->cap = cap;
    }
}

static void put_counts(text *t, int indent, const char *key, const int64_t *v, int64_t n)
{
    put(t, "%*s\"%s\": [", indent, "", key);
    for (int64_t i = 0; i < n; i++) put(t, "%s%" PRId64, i ? ", " : "", v[i]);
    put(t, "]");
}

/* A layer's expert cache (moe_layer_get_cache_stats), as the "cache" object of its entry. */
static void put_cache(text *t, const moe_layer *layer)
{
    const int64_t E = layer->desc.n_experts;
    int32_t *slots = moe_malloc(sizeof(int32_t) * (size_t)E);
    int64_t *per = moe_malloc(sizeof(int64_t) * (size_t)(3 * E));
    if (!slots || !per) {
        t->failed = true;
        moe_free(slots);
        moe_free(per);
        return;
    }
    moe_expert_cache_stats c = {
        .slot_expert = slots, .expert_hits = per, .expert_misses = per + E, .expert_uploads = per + 2 * E};
    moe_layer_cache_stats(layer, &c);
    if (c.slots > 0) {
        put(t,
            ",\n      \"cache\": {\n        \"context\": %d, \"slots\": %" PRId64
            ", \"bytes\": %zu, \"forwards\": %" PRId64 ", \"hits\": %" PRId64 ", \"misses\": %" PRId64
            ", \"uploads\": %" PRId64 ", \"evictions\": %" PRId64 ", \"upload_bytes\": %" PRIu64
            ", \"upload_ms\": %.3f, \"rows_cached\": %" PRId64 ", \"rows_elsewhere\": %" PRId64
            ",\n      \"slot_expert\": [",
            c.context, c.slots, c.bytes, c.forwards, c.hits, c.misses, c.uploads, c.evictions, c.upload_bytes,
            c.upload_ms, c.rows_cached, c.rows_elsewhere);
        for (int64_t s = 0; s < c.slots; s++) put(t, "%s%d", s ? ", " : "", slots[s]);
        put(t, "],\n");
        put_counts(t, 8, "expert_hits", per, E);
        put(t, ",\n");
        put_counts(t, 8, "expert_misses", per + E, E);
        put(t, ",\n");
        put_counts(t, 8, "expert_uploads", per + 2 * E, E);
        put(t, "\n      }");
    }
    moe_free(slots);
    moe_free(per);
}

moe_status moe_usage_save(const char *path, const moe_layer *const *layers, const int64_t *layer_indices,
                          int64_t n_layers)
{
    moe_clear_error(NULL);
    if (!path || !layers) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "path and layers are required");
    if (n_layers < 1) return moe_fail(NULL, MOE_ERROR_INVALID_SIZE, "n_layers is %" PRId64, n_layers);
    for (int64_t i = 0; i < n_layers; i++) {
        if (!layers[i]) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layers[%" PRId64 "] is NULL", i);
        /* Indices a reader finds again: whole numbers JSON's doubles hold exactly, each once. */
        const int64_t index = layer_indices ? layer_indices[i] : i;
        if (index < 0 || index > MOE_USAGE_MAX_INDEX)
            return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                            "layer_indices[%" PRId64 "] is %" PRId64 "; it must be 0..2^53", i, index);
        for (int64_t j = 0; layer_indices && j < i; j++)
            if (layer_indices[j] == index)
                return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                                "layer_indices[%" PRId64 "] and [%" PRId64 "] are both %" PRId64, j, i,
                                index);
        if (!layers[i]->usage)
            return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                            "layers[%" PRId64 "] does not track its usage (moe_layer_track_usage)", i);
    }
    text t = {0};
    put(&t, "{\n  \"format\": \"moe-usage\",\n  \"version\": 1,\n  \"layers\": [");
    for (int64_t i = 0; i < n_layers; i++) {
        const moe_usage *u = layers[i]->usage;
        const int64_t E = layers[i]->desc.n_experts;
        put(&t,
            "%s\n    {\n      \"index\": %" PRId64 ",\n      \"n_experts\": %" PRId64
            ",\n      \"forwards\": %" PRId64 ",\n      \"tokens\": %" PRId64 ",\n      \"window\": %" PRId64
            ",\n      \"window_forwards\": %" PRId64 ",\n",
            i ? "," : "", layer_indices ? layer_indices[i] : i, E, u->forwards, u->tokens, u->window,
            u->forwards < u->window ? u->forwards : u->window);
        put_counts(&t, 6, "routed_total", u->total, E);
        put(&t, ",\n");
        put_counts(&t, 6, "routed_window", u->in_window, E);
        if (layers[i]->placed) put_cache(&t, layers[i]);
        put(&t, "\n    }");
    }
    put(&t, "\n  ]\n}\n");
    moe_status st = MOE_OK;
    char err[MOE_ERROR_MAX];
    if (t.failed)
        st = moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    else if (moe_file_write_atomic(path, NULL, 0, t.s, t.len, err, sizeof err) != MOE_FILE_OK)
        st = moe_fail(NULL, MOE_ERROR_IO, "%s", err);
    moe_free(t.s);
    return st;
}

/* An integer member of `o` that is a whole number in [0, max]. */
static moe_status json_count(const char *path, const cJSON *o, const char *key, int64_t max, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0) || v->valuedouble > (double)max ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return moe_fail(NULL, MOE_ERROR_FORMAT, "%s: \"%s\" is missing or not a whole number in 0..%" PRId64,
                        path, key, max);
    *out = (int64_t)v->valuedouble;
    return MOE_OK;
}

/* A usage file is small (counts of a few hundred experts per layer); 64 MiB holds thousands of
 * layers of 256 experts. */
#define MOE_USAGE_MAX_FILE (64u << 20)

moe_status moe_usage_load(const char *path, int64_t layer_index, int64_t n_experts, int64_t *routed_total)
{
    moe_clear_error(NULL);
    if (!path || !routed_total)
        return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "path and routed_total are required");
    if (n_experts < 1 || n_experts > MOE_MAX_DIM)
        return moe_fail(NULL, MOE_ERROR_INVALID_SIZE, "n_experts is %" PRId64 "; it must be 1..%d", n_experts,
                        MOE_MAX_DIM);
    uint8_t *bytes = NULL;
    size_t size = 0;
    moe_status st = moe_read_file(NULL, path, MOE_USAGE_MAX_FILE, "a usage file", &bytes, &size);
    if (st != MOE_OK) return st;
    cJSON *root = NULL;
    st = moe_json_parse(NULL, path, (const char *)bytes, size, &root);
    moe_free(bytes);
    if (st != MOE_OK) return st;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    int64_t version = 0;
    if (!cJSON_IsObject(root) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "moe-usage") != 0 ||
        !cJSON_IsArray(layers))
        st = moe_fail(NULL, MOE_ERROR_FORMAT,
                      "%s: not a moe usage file (no \"format\": \"moe-usage\" and \"layers\")", path);
    if (st == MOE_OK) st = json_count(path, root, "version", INT32_MAX, &version);
    if (st == MOE_OK && version != 1)
        st = moe_fail(NULL, MOE_ERROR_FORMAT, "%s: usage file version %" PRId64 "; this moe reads version 1",
                      path, version);
    const cJSON *found = NULL;
    const cJSON *l;
    cJSON_ArrayForEach(l, layers)
    {
        int64_t index = -1;
        if (st == MOE_OK && !cJSON_IsObject(l))
            st = moe_fail(NULL, MOE_ERROR_FORMAT, "%s: an entry of \"layers\" is not an object", path);
        if (st == MOE_OK) st = json_count(path, l, "index", MOE_USAGE_MAX_INDEX, &index);
        if (st == MOE_OK && index == layer_index) {
            if (found)
                st = moe_fail(NULL, MOE_ERROR_FORMAT, "%s: layer %" PRId64 " is listed twice", path,
                              layer_index);
            found = l;
        }
    }
    if (st == MOE_OK && !found)
        st = moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT, "%s holds no layer with index %" PRId64, path,
                      layer_index);
    int64_t E = 0;
    if (st == MOE_OK) st = json_count(path, found, "n_experts", MOE_MAX_DIM, &E);
    if (st == MOE_OK && E != n_experts)
        st = moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                      "%s: layer %" PRId64 " has %" PRId64 " experts; the caller's has %" PRId64, path,
                      layer_index, E, n_experts);
    const cJSON *counts = st == MOE_OK ? cJSON_GetObjectItemCaseSensitive(found, "routed_total") : NULL;
    if (st == MOE_OK && (!cJSON_IsArray(counts) || cJSON_GetArraySize(counts) != E))
        st = moe_fail(NULL, MOE_ERROR_FORMAT,
                      "%s: layer %" PRId64 "'s routed_total is not an array of %" PRId64 " counts", path,
                      layer_index, E);
    /* Into a copy first: the caller's array is written only when every count is good. */
    int64_t *v = st == MOE_OK ? moe_malloc(sizeof(int64_t) * (size_t)E) : NULL;
    if (st == MOE_OK && !v) st = moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    int64_t i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, counts)
    {
        if (st != MOE_OK) break;
        if (!cJSON_IsNumber(c) || !(c->valuedouble >= 0.0) || c->valuedouble > 9.0e15 ||
            c->valuedouble != (double)(int64_t)c->valuedouble)
            st = moe_fail(NULL, MOE_ERROR_FORMAT,
                          "%s: layer %" PRId64 "'s routed_total[%" PRId64 "] is not a whole number of rows",
                          path, layer_index, i);
        else
            v[i++] = (int64_t)c->valuedouble;
    }
    if (st == MOE_OK) memcpy(routed_total, v, sizeof(int64_t) * (size_t)E);
    moe_free(v);
    cJSON_Delete(root);
    return st;
}
