/*
 * test_bench_json.c — moe-bench's JSON, read back with a real parser (cJSON).
 *
 * Without arguments: builds a forward result and a serve result by hand, writes them with
 * bench_json_write and parses the file, checking every required key and a few values.
 * With `--check FILE [MIN_OBJECTS] [--dtypes F1,F2,..] [--layers N] [--layers-auto]
 * [--bandwidth] [--async] [--kernel-times] [--cpu-experts N1,N2,..] [--cache-slots S1,S2,..] [--trace]
 * [--same-cache OTHER.json] [--interleaved N] [--same-weights OTHER.json] [--ep RANKS] [--ep-reference]`:
 * parses a file moe-bench wrote (CTest runs moe-bench first) and checks that it is an array of at least
 * MIN_OBJECTS objects with the documented keys of their kind; then, when asked, that the objects'
 * weight_dtype run through the given formats in order (per target; "q4_0+q8_0": down_weight_dtype q8_0), that
 * every forward result cycled N layers (or came from --layers auto), and that the CPU results carry the
 * measured read bandwidth and their share of it, that every forward result timed its layers as an
 * asynchronous chain, that every forward result timed its kernels (a GPU's with device times named, a CPU's
 * none), that the forward results' experts on a CPU context (and their cache slots) run through the given
 * counts in order (0 without), that every forward result followed a routing trace (and every cached one
 * looked experts up), and that another file's results counted the same cache hits, misses, uploads and bytes,
 * result by result (a replayed trace against the generated one), that every forward result was timed in turn
 * with N runs (--interleave; 0, the default, for none) and held the same layers, weight bytes and bytes read
 * as another file's, result by result, that every result is an --ep one over RANKS ranks (and that one
 * compared rank 0 with the reference). An --ep result is always checked for its ranks' token split and expert
 * ranges, rows and bytes sent = received, and times that add up (check_ep). Exit 0 when all is well.
 */
#include "bench_check.h"
#include "bench_report.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int failures;

/* The keys the issue requires of every forward result, and those of the latency object. */
static const char *const forward_keys[] = {"backend",
                                           "device",
                                           "preset",
                                           "tokens",
                                           "d_model",
                                           "d_ff",
                                           "n_experts",
                                           "top_k",
                                           "iters",
                                           "latency_ms",
                                           "gflops",
                                           "tokens_per_s",
                                           "gbps",
                                           "arena_peak_bytes",
                                           "speedup_vs_reference",
                                           "first_forward_ms",
                                           "first_forward_device_ms",
                                           "create_ms",
                                           "weight_dtype",
                                           "down_weight_dtype",
                                           "activation_dtype",
                                           "layers",
                                           "layers_auto",
                                           "interleaved",
                                           "weight_bytes",
                                           "weight_read_bytes",
                                           "weight_gbs",
                                           "weight_bw_fraction",
                                           "read_bandwidth_gbs",
                                           "async_chain",
                                           "kernels",
                                           "cpu_experts",
                                           "home",
                                           "cache_slots",
                                           "cache_policy",
                                           "cache_min_rows",
                                           "cache_hits",
                                           "cache_misses",
                                           "cache_uploads",
                                           "cache_evictions",
                                           "cache_upload_bytes",
                                           "cache_upload_ms",
                                           "cache_hit_rate",
                                           "cache_bytes",
                                           "context_ms",
                                           "context_median_ms",
                                           "context_p95_ms",
                                           "trace_reuse",
                                           "trace_file",
                                           "trace_forwards",
                                           NULL};
static const char *const latency_keys[] = {"min", "median", "mean", "stddev", "p95", "p99", NULL};
static const char *const serve_keys[] = {"backend",
                                         "device",
                                         "preset",
                                         "d_model",
                                         "d_ff",
                                         "n_experts",
                                         "top_k",
                                         "streams",
                                         "rate",
                                         "duration_s",
                                         "max_batch_tokens",
                                         "request_tokens",
                                         "slo_ms",
                                         "requests",
                                         "completed",
                                         "tokens_per_s",
                                         "request_latency_ms",
                                         "slo_met_share",
                                         "weight_dtype",
                                         NULL};

static const char *const ep_keys[] = {
    "backend",        "device",       "preset",       "tokens",           "d_model", "d_ff",
    "n_experts",      "top_k",        "weight_dtype", "activation_dtype", "scaling", "ranks",
    "hosts",          "tokens_asked", "iters",        "layers",           "step_ms", "tokens_per_s",
    "exchange_share", "hide_gbs",     "per_rank",     "reference",        NULL};
static const char *const ep_rank_keys[] = {
    "rank",        "tokens",         "first_expert",     "n_experts", "wall_ms",
    "exchange_ms", "compute_ms",     "first_forward_ms", "rows_sent", "rows_received",
    "bytes_sent",  "bytes_received", "hide_gbs",         NULL};

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *g = realloc(buf, cap * 2);
            if (!g) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = g;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

static int has_keys(const cJSON *o, const char *const *keys, const char *what)
{
    int ok = 1;
    for (const char *const *k = keys; *k; k++) {
        if (!cJSON_HasObjectItem(o, *k)) {
            fprintf(stderr, "%s: missing key \"%s\"\n", what, *k);
            ok = 0;
        }
    }
    return ok;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* A weight_dtype value: a format's own lower-case name. */
static int is_dtype_name(const char *s)
{
    moe_dtype dt;
    return moe_dtype_from_name(s, &dt) == MOE_OK && strcmp(moe_dtype_name(dt), s) == 0;
}

/* What --check was asked to hold the file to, beyond the keys. */
typedef struct expectations {
    const char *dtypes;       /* "f32,bf16": the objects' weight_dtype cycle through these in order */
    int layers;               /* > 0: every forward result cycled this many layers */
    int layers_auto;          /* every forward result's count came from --layers auto */
    int bandwidth;            /* CPU results carry read_bandwidth_gbs and weight_bw_fraction */
    int async;                /* every forward result has an async_chain object */
    int kernels;              /* every forward result timed its kernels: a GPU's named, a CPU's none */
    const char *cpu;          /* "0,2": the forward results' cpu_experts cycle through these in order */
    const char *slots;        /* "0,3": the forward results' cache_slots cycle through these in order */
    int trace;                /* every forward result followed a trace; the cached ones looked experts up */
    const char *same;         /* another file whose results counted the same cache events, in order */
    int interleaved;          /* every forward result was timed in turn with this many runs (0: alone) */
    const char *same_weights; /* another file whose results hold the same layers and weight bytes */
    int ep_ranks;             /* every result is an --ep one over this many ranks */
    int ep_reference;         /* ... and at least one compared rank 0's tokens with the reference */
} expectations;

/* An --ep result: the ranks' tokens make the step's in rank order (weak: each rank the count
 * asked; strong: that count split as evenly as it goes), their experts the layer's in contiguous
 * ranges as even as they go, every row and byte one rank sends another receives, a rank's time
 * inside the exchange is part of its wall time, and the step (the slowest rank per forward) is
 * no shorter than any rank's. */
static void check_ep(const cJSON *o)
{
    CHECK(has_keys(o, ep_keys, "ep result"));
    const int ranks = (int)num(o, "ranks");
    const double tokens = num(o, "tokens"), asked = num(o, "tokens_asked"), experts = num(o, "n_experts");
    const int weak = strcmp(str(o, "scaling"), "weak") == 0;
    CHECK(weak || strcmp(str(o, "scaling"), "strong") == 0);
    CHECK(ranks >= 1 && num(o, "hosts") >= 1 && num(o, "hosts") <= ranks);
    CHECK(tokens == (weak ? asked * ranks : asked));
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step_ms");
    CHECK(cJSON_IsObject(step) && has_keys(step, latency_keys, "step_ms"));
    CHECK(num(step, "min") <= num(step, "median") && num(step, "median") > 0);
    CHECK(fabs(num(o, "tokens_per_s") - tokens / (num(step, "median") * 1e-3)) <=
          1e-9 * num(o, "tokens_per_s"));
    CHECK(num(o, "exchange_share") >= 0 && num(o, "exchange_share") <= 1);
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(o, "per_rank");
    CHECK(cJSON_IsArray(per) && cJSON_GetArraySize(per) == ranks);
    double sum_tokens = 0, next_expert = 0, rows_out = 0, rows_in = 0, bytes_out = 0, bytes_in = 0, hide = 0;
    for (int r = 0; cJSON_IsArray(per) && r < cJSON_GetArraySize(per); r++) {
        const cJSON *q = cJSON_GetArrayItem(per, r);
        CHECK(has_keys(q, ep_rank_keys, "per_rank"));
        CHECK(num(q, "rank") == r);
        const double t = num(q, "tokens");
        CHECK(weak ? t == asked : (t == floor(asked / ranks) || t == floor(asked / ranks) + 1));
        sum_tokens += t;
        CHECK(num(q, "first_expert") == next_expert);
        const double n = num(q, "n_experts");
        CHECK(n == floor(experts / ranks) || n == floor(experts / ranks) + 1);
        next_expert += n;
        CHECK(num(q, "exchange_ms") >= 0 && num(q, "exchange_ms") <= num(q, "wall_ms"));
        CHECK(num(q, "compute_ms") >= 0 && num(q, "compute_ms") <= num(q, "wall_ms"));
        CHECK(num(q, "wall_ms") <= num(step, "median") * (1 + 1e-12) && num(q, "first_forward_ms") > 0);
        if (ranks == 1) CHECK(num(q, "rows_sent") == 0 && num(q, "bytes_sent") == 0);
        if (t == 0) CHECK(num(q, "rows_sent") == 0);
        CHECK(num(q, "rows_sent") <= t * num(o, "top_k"));
        rows_out += num(q, "rows_sent");
        rows_in += num(q, "rows_received");
        bytes_out += num(q, "bytes_sent");
        bytes_in += num(q, "bytes_received");
        if (num(q, "hide_gbs") > hide) hide = num(q, "hide_gbs");
    }
    CHECK(sum_tokens == tokens && next_expert == experts);
    CHECK(fabs(rows_out - rows_in) <= 1e-9 * (rows_out + 1) &&
          fabs(bytes_out - bytes_in) <= 1e-9 * (bytes_out + 1));
    CHECK(num(o, "hide_gbs") == hide);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(o, "reference");
    CHECK(cJSON_IsNull(ref) || cJSON_IsObject(ref));
    if (cJSON_IsObject(ref)) CHECK(num(ref, "tokens") >= 1 && num(ref, "rel_l2") <= 1e-4);
}

/* Checks one object of a moe-bench JSON file by its kind. */
static void check_object(const cJSON *o)
{
    CHECK(cJSON_IsObject(o));
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    CHECK(cJSON_IsString(kind));
    if (!cJSON_IsString(kind)) return;
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "backend")));
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "device")));
    if (strcmp(kind->valuestring, "forward") == 0) {
        CHECK(has_keys(o, forward_keys, "forward result"));
        const cJSON *lat = cJSON_GetObjectItemCaseSensitive(o, "latency_ms");
        CHECK(cJSON_IsObject(lat) && has_keys(lat, latency_keys, "latency_ms"));
        CHECK(num(lat, "min") <= num(lat, "median") && num(lat, "median") <= num(lat, "p95") &&
              num(lat, "p95") <= num(lat, "p99"));
        CHECK(num(o, "tokens") >= 1 && num(o, "iters") >= 1 && num(o, "gflops") > 0 &&
              num(o, "tokens_per_s") > 0);
        CHECK(num(o, "gbps") > 0 && num(o, "arena_peak_bytes") > 0);
        CHECK(num(o, "create_ms") > 0); /* (the layers' creation, timed: never free) */
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "speedup_vs_reference");
        CHECK(cJSON_IsNull(sp) || (cJSON_IsNumber(sp) && sp->valuedouble > 0));
        CHECK(is_dtype_name(str(o, "weight_dtype")) && is_dtype_name(str(o, "down_weight_dtype")));
        /* What the layer ran: an activation opt-in only where gate/up's or down's format takes it
         * (integer: Q8_0, Q4_0 and the K-quants; bfloat16 pairs: Q4_0, MXFP4, Q4_K), within moe.h's bound of
         * the float ones (1e-2, 2e-5) where the reference compared them. */
        const char *act = str(o, "activation_dtype");
        const int int8 = !strcmp(act, "q8_0"), bf16 = !strcmp(act, "bf16");
        CHECK(!strcmp(act, "f32") || int8 || bf16);
        if (int8 || bf16) {
            const char *takes = int8 ? ",q8_0,q4_0,q2_k,q3_k,q4_k,q5_k,q6_k," : ",q4_0,mxfp4,q4_k,";
            char w[16], dn[16];
            snprintf(w, sizeof w, ",%s,", str(o, "weight_dtype"));
            snprintf(dn, sizeof dn, ",%s,", str(o, "down_weight_dtype"));
            CHECK(strstr(takes, w) || strstr(takes, dn));
            const cJSON *ref = cJSON_GetObjectItemCaseSensitive(o, "reference");
            const cJSON *vs = cJSON_IsObject(ref)
                                  ? cJSON_GetObjectItemCaseSensitive(ref, "rel_l2_vs_float_activations")
                                  : NULL;
            if (vs) CHECK(cJSON_IsNumber(vs) && vs->valuedouble <= (int8 ? 1e-2 : 2e-5));
        }
        CHECK(num(o, "layers") >= 1 && cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(o, "layers_auto")));
        CHECK(num(o, "weight_bytes") > 0 && num(o, "weight_read_bytes") > 0);
        CHECK(num(o, "weight_gbs") > 0 && num(o, "weight_gbs") == num(o, "gbps"));
        const cJSON *bw = cJSON_GetObjectItemCaseSensitive(o, "read_bandwidth_gbs");
        const cJSON *frac = cJSON_GetObjectItemCaseSensitive(o, "weight_bw_fraction");
        CHECK(cJSON_IsNull(bw) || (cJSON_IsNumber(bw) && bw->valuedouble > 0));
        CHECK(cJSON_IsNull(frac) || (cJSON_IsNumber(frac) && frac->valuedouble > 0));
        if (cJSON_IsNumber(frac)) /* the share is the weight bandwidth over the measured one */
            CHECK(cJSON_IsNumber(bw) && fabs(frac->valuedouble * bw->valuedouble - num(o, "weight_gbs")) <=
                                            1e-6 * num(o, "weight_gbs"));
        /* --cache-slots: the cache's counts over the timed forwards, the contexts' device time. */
        const double slots = num(o, "cache_slots"), hits = num(o, "cache_hits"),
                     misses = num(o, "cache_misses");
        CHECK(slots >= 0 && hits >= 0 && misses >= 0 && num(o, "cache_uploads") >= 0 &&
              num(o, "cache_evictions") >= 0 && num(o, "cache_upload_bytes") >= 0 &&
              num(o, "cache_upload_ms") >= 0);
        CHECK(num(o, "cache_uploads") <= misses && num(o, "cache_evictions") <= num(o, "cache_uploads"));
        const cJSON *rate = cJSON_GetObjectItemCaseSensitive(o, "cache_hit_rate");
        if (slots > 0) {
            CHECK(num(o, "cpu_experts") >= slots);
            CHECK(!strcmp(str(o, "cache_policy"), "lru") || !strcmp(str(o, "cache_policy"), "lfu"));
            CHECK(num(o, "cache_min_rows") >= 0 && num(o, "cache_bytes") > 0);
            if (hits + misses > 0)
                CHECK(cJSON_IsNumber(rate) && fabs(rate->valuedouble - hits / (hits + misses)) <= 1e-12);
            else
                CHECK(cJSON_IsNull(rate));
        } else {
            CHECK(hits == 0 && misses == 0 && num(o, "cache_uploads") == 0 && cJSON_IsNull(rate));
            CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "cache_policy")) &&
                  cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "cache_bytes")));
        }
        CHECK(!strcmp(str(o, "home"), "target") || !strcmp(str(o, "home"), "cpu"));
        const cJSON *ctx_ms = cJSON_GetObjectItemCaseSensitive(o, "context_ms");
        CHECK(cJSON_IsNull(ctx_ms) || (cJSON_IsArray(ctx_ms) && cJSON_GetArraySize(ctx_ms) == 2));
        if (num(o, "cpu_experts") > 0) CHECK(cJSON_IsArray(ctx_ms));
        for (int k = 0; cJSON_IsArray(ctx_ms) && k < 2; k++) {
            const cJSON *v = cJSON_GetArrayItem(ctx_ms, k);
            CHECK(cJSON_IsNumber(v) && v->valuedouble >= 0);
        }
        /* A placed run's per-forward distribution on each context: median <= p95, both >= 0. */
        const cJSON *med = cJSON_GetObjectItemCaseSensitive(o, "context_median_ms");
        const cJSON *p95 = cJSON_GetObjectItemCaseSensitive(o, "context_p95_ms");
        CHECK(num(o, "cpu_experts") > 0 ? cJSON_IsArray(med) && cJSON_IsArray(p95)
                                        : cJSON_IsNull(med) && cJSON_IsNull(p95));
        for (int k = 0; cJSON_IsArray(med) && cJSON_IsArray(p95) && k < 2; k++) {
            const cJSON *m = cJSON_GetArrayItem(med, k), *p = cJSON_GetArrayItem(p95, k);
            CHECK(cJSON_IsNumber(m) && cJSON_IsNumber(p) && m->valuedouble >= 0 &&
                  p->valuedouble >= m->valuedouble);
        }
        /* A trace: generated (its reuse) or replayed (its file), never both; and its length. */
        const cJSON *reuse = cJSON_GetObjectItemCaseSensitive(o, "trace_reuse");
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(o, "trace_file");
        CHECK(cJSON_IsNull(reuse) ||
              (cJSON_IsNumber(reuse) && reuse->valuedouble >= 0 && reuse->valuedouble <= 1));
        CHECK(cJSON_IsNull(file) || cJSON_IsString(file));
        CHECK(cJSON_IsNull(reuse) || cJSON_IsNull(file));
        const cJSON *fw = cJSON_GetObjectItemCaseSensitive(o, "trace_forwards");
        CHECK(cJSON_IsNull(reuse) && cJSON_IsNull(file) ? cJSON_IsNull(fw) : num(o, "trace_forwards") >= 1);
        /* --async: both chains' summaries, of the result's own layers. */
        const cJSON *chain = cJSON_GetObjectItemCaseSensitive(o, "async_chain");
        CHECK(cJSON_IsNull(chain) || cJSON_IsObject(chain));
        if (cJSON_IsObject(chain)) {
            CHECK(num(chain, "layers") == num(o, "layers"));
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(chain, "waits_ms");
            const cJSON *one = cJSON_GetObjectItemCaseSensitive(chain, "one_wait_ms");
            CHECK(cJSON_IsObject(w) && has_keys(w, latency_keys, "async_chain.waits_ms"));
            CHECK(cJSON_IsObject(one) && has_keys(one, latency_keys, "async_chain.one_wait_ms"));
            CHECK(num(w, "median") > 0 && num(one, "median") > 0 &&
                  fabs(num(chain, "speedup") - num(w, "median") / num(one, "median")) <=
                      1e-9 * num(chain, "speedup"));
        }
        /* --kernel-times: named kernels with positive times and dispatches, adding up to no more
         * than the device time (they are the intervals between its first and last timestamps). */
        const cJSON *kernels = cJSON_GetObjectItemCaseSensitive(o, "kernels");
        CHECK(cJSON_IsNull(kernels) || cJSON_IsArray(kernels));
        double kernel_sum = 0.0;
        for (int k = 0; cJSON_IsArray(kernels) && k < cJSON_GetArraySize(kernels); k++) {
            const cJSON *one = cJSON_GetArrayItem(kernels, k);
            CHECK(cJSON_IsObject(one) && str(one, "name")[0] != '\0');
            CHECK(num(one, "ms") >= 0 && num(one, "dispatches") > 0);
            kernel_sum += num(one, "ms");
        }
        const cJSON *dev_ms = cJSON_GetObjectItemCaseSensitive(o, "device_ms");
        if (kernel_sum > 0)
            CHECK(cJSON_IsObject(dev_ms) && kernel_sum <= num(dev_ms, "mean") * (1 + 1e-6) + 1e-9);
    } else if (strcmp(kind->valuestring, "ep") == 0) {
        check_ep(o);
    } else if (strcmp(kind->valuestring, "serve") == 0) {
        CHECK(has_keys(o, serve_keys, "serve result"));
        const cJSON *lat = cJSON_GetObjectItemCaseSensitive(o, "request_latency_ms");
        CHECK(cJSON_IsObject(lat) && num(lat, "p50") <= num(lat, "p95") &&
              num(lat, "p95") <= num(lat, "p99"));
        CHECK(num(o, "completed") <= num(o, "requests"));
        CHECK(num(o, "slo_met_share") >= 0 && num(o, "slo_met_share") <= 1);
        CHECK(is_dtype_name(str(o, "weight_dtype")));
    } else {
        fprintf(stderr, "unknown kind \"%s\"\n", kind->valuestring);
        failures++;
    }
}

/* The expectations beyond the keys (see the file's comment). */
static void check_expectations(const cJSON *root, const expectations *x)
{
    char want[8][16];
    size_t n_want = 0;
    for (const char *p = x->dtypes; p && *p && n_want < 8;) {
        const size_t len = strcspn(p, ",");
        snprintf(want[n_want++], sizeof want[0], "%.*s", (int)len, p);
        p += len + (p[len] == ',');
    }
    long cpu[8], slots[8];
    size_t n_cpu = 0, n_slots = 0, n_slotted = 0;
    for (const char *p = x->cpu; p && *p && n_cpu < 8;) {
        cpu[n_cpu++] = strtol(p, NULL, 10);
        p += strcspn(p, ",");
        p += *p == ',';
    }
    for (const char *p = x->slots; p && *p && n_slots < 8;) {
        slots[n_slots++] = strtol(p, NULL, 10);
        p += strcspn(p, ",");
        p += *p == ',';
    }
    size_t i = 0, n_forward = 0, n_ep_ref = 0;
    double f32_weight_bytes = -1.0, plain_weight_bytes = -1.0;
    const cJSON *o;
    cJSON_ArrayForEach(o, root)
    {
        const int forward = strcmp(str(o, "kind"), "forward") == 0;
        if (n_want) {
            /* In the order given, per target: f32, bf16, f32, bf16, ...; "q4_k+q6_k" is weight_dtype
             * q4_k with down_weight_dtype q6_k (--down-weights), a name alone both. */
            const char *w = want[i % n_want], *plus = strchr(w, '+');
            const char *got = str(o, "weight_dtype"), *down = str(o, "down_weight_dtype");
            const size_t len = plus ? (size_t)(plus - w) : strlen(w);
            if (strlen(got) != len || strncmp(got, w, len) != 0 || strcmp(down, plus ? plus + 1 : w) != 0) {
                fprintf(stderr,
                        "object %zu: weight_dtype \"%s\", down_weight_dtype \"%s\", expected \"%s\"\n", i,
                        got, down, w);
                failures++;
            }
            /* Each format's layers are destroyed before the next format's are made: its arena
             * never holds more than the float32 layers did (all experts on the target: with
             * --cpu-experts the runs that moved some hold less, checked below). */
            const int plain = num(o, "cpu_experts") == 0;
            if (forward && plain && strcmp(got, "f32") == 0) f32_weight_bytes = num(o, "weight_bytes");
            if (forward && plain && f32_weight_bytes > 0 && strcmp(got, "f32") != 0)
                CHECK(num(o, "weight_bytes") <= f32_weight_bytes);
        }
        if (forward && n_cpu) {
            /* In the order given; experts on the CPU leave the target's arena. */
            const double got = num(o, "cpu_experts"), expected = (double)cpu[n_forward % n_cpu];
            if (got != expected) {
                fprintf(stderr, "object %zu: cpu_experts %g, expected %g\n", i, got, expected);
                failures++;
            }
            if (expected == 0) plain_weight_bytes = num(o, "weight_bytes");
            if (expected > 0 && plain_weight_bytes > 0) CHECK(num(o, "weight_bytes") < plain_weight_bytes);
            n_forward++;
        } else if (forward) {
            CHECK(num(o, "cpu_experts") == 0);
        }
        if (forward && n_slots) {
            const double got = num(o, "cache_slots"), expected = (double)slots[n_slotted++ % n_slots];
            if (got != expected) {
                fprintf(stderr, "object %zu: cache_slots %g, expected %g\n", i, got, expected);
                failures++;
            }
        }
        if (forward && x->trace) {
            CHECK(!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "trace_reuse")) ||
                  !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, "trace_file")));
            if (num(o, "cache_slots") > 0) CHECK(num(o, "cache_hits") + num(o, "cache_misses") > 0);
        }
        if (forward && x->layers > 0) CHECK(num(o, "layers") == x->layers);
        if (forward) CHECK(num(o, "interleaved") == x->interleaved);
        if (forward && x->async) CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "async_chain")));
        if (forward && x->kernels) {
            const cJSON *kernels = cJSON_GetObjectItemCaseSensitive(o, "kernels");
            const int timed = strcmp(str(o, "backend"), "cpu") != 0 &&
                              cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "device_ms"));
            CHECK(cJSON_IsArray(kernels) && (cJSON_GetArraySize(kernels) > 0) == timed);
        }
        if (forward && x->layers_auto)
            CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "layers_auto")));
        if (x->ep_ranks) CHECK(strcmp(str(o, "kind"), "ep") == 0 && num(o, "ranks") == x->ep_ranks);
        if (x->ep_ranks && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(o, "reference"))) n_ep_ref++;
        if (forward && x->bandwidth && strcmp(str(o, "backend"), "cpu") == 0)
            CHECK(num(o, "read_bandwidth_gbs") > 0 && num(o, "weight_bw_fraction") > 0);
        i++;
    }
    if (n_want) CHECK(i % n_want == 0);
    if (x->ep_reference) CHECK(n_ep_ref > 0);
}

static cJSON *parse_file(const char *path)
{
    char *text = read_all(path);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!root) fprintf(stderr, "cannot read %s as JSON\n", path);
    return root;
}

/* The same values of `keys`, result by result, as in another file's results. */
static void check_same(const cJSON *root, const char *other_path, const char *const *keys, size_t n_keys)
{
    cJSON *other = parse_file(other_path);
    CHECK(other && cJSON_GetArraySize(other) == cJSON_GetArraySize(root));
    for (int i = 0; other && i < cJSON_GetArraySize(root); i++) {
        const cJSON *a = cJSON_GetArrayItem(root, i), *b = cJSON_GetArrayItem(other, i);
        for (size_t k = 0; b && k < n_keys; k++)
            if (num(a, keys[k]) != num(b, keys[k])) {
                fprintf(stderr, "object %d: %s %g here, %g in %s\n", i, keys[k], num(a, keys[k]),
                        num(b, keys[k]), other_path);
                failures++;
            }
    }
    cJSON_Delete(other);
}

/* The same cache events: what a deterministic policy does on the same trace. */
static void check_same_cache(const cJSON *root, const char *other_path)
{
    static const char *const keys[] = {"cache_slots",   "cache_hits",      "cache_misses",
                                       "cache_uploads", "cache_evictions", "cache_upload_bytes"};
    check_same(root, other_path, keys, sizeof keys / sizeof keys[0]);
}

/* The same layers, each run's own weight bytes and the bytes its forwards read (the same seed
 * routes alike): a run timed in turn with others is measured on its own layers. */
static void check_same_weights(const cJSON *root, const char *other_path)
{
    static const char *const keys[] = {"layers", "weight_bytes", "weight_read_bytes", "tokens"};
    check_same(root, other_path, keys, sizeof keys / sizeof keys[0]);
}

static int check_file(const char *path, int min_objects, const expectations *x)
{
    char *text = read_all(path);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    if (!root) {
        fprintf(stderr, "%s is not valid JSON\n", path);
        return 1;
    }
    CHECK(cJSON_IsArray(root));
    CHECK(cJSON_GetArraySize(root) >= min_objects);
    const cJSON *o;
    cJSON_ArrayForEach(o, root) check_object(o);
    if (x) check_expectations(root, x);
    if (x && x->same) check_same_cache(root, x->same);
    if (x && x->same_weights) check_same_weights(root, x->same_weights);
    cJSON_Delete(root);
    return failures ? 1 : 0;
}

static void self_test(const char *path)
{
    bench_result r;
    memset(&r, 0, sizeof r);
    snprintf(r.backend, sizeof r.backend, "cpu");
    /* Characters JSON must escape, in a device name. */
    snprintf(r.device, sizeof r.device, "CPU \"quoted\" \\ back\tslash");
    snprintf(r.driver, sizeof r.driver, "moe cpu avx2 (auto)");
    snprintf(r.isa, sizeof r.isa, "avx2");
    r.preset = "olmoe-1b-7b";
    r.desc = (moe_layer_desc){.struct_size = sizeof r.desc,
                              .d_model = 2048,
                              .d_ff = 1024,
                              .n_experts = 64,
                              .top_k = 8,
                              .max_tokens = 512,
                              .activation = MOE_ACTIVATION_SWIGLU};
    r.tokens = 512;
    double times[] = {0.004, 0.002, 0.003, 0.005, 0.0025};
    r.wall = bench_summarize(times, 5);
    r.desc.weight_dtype = MOE_DTYPE_Q4_0;
    r.flops = bench_forward_flops(&r.desc, r.tokens);
    r.weight_read_bytes = 1e9;
    r.layers = 3;
    r.cpu_experts = 16;
    r.cache_slots = 4;
    r.cache_policy = MOE_CACHE_LFU;
    r.cache_min_rows = 2;
    r.cache_hits = 30;
    r.cache_misses = 10;
    r.cache_uploads = 6;
    r.cache_evictions = 2;
    r.cache_upload_bytes = 6e6;
    r.cache_upload_ms = 1.5;
    r.cache_bytes = 4000000;
    r.has_context_ms = 1;
    r.context_ms[0] = 0.75;
    r.context_ms[1] = 2.5;
    r.has_context_dist = 1;
    r.context_median_ms[0] = 0.5;
    r.context_median_ms[1] = 2.0;
    r.context_p95_ms[0] = 1.25;
    r.context_p95_ms[1] = 4.5;
    r.trace_reuse = 0.8;
    r.trace_forwards = 64;
    r.arena_weights_bytes = (size_t)5000000;
    r.create_seconds = 0.125;
    r.read_bw_gbs = 20.0;
    r.shares_host_memory = 1;
    r.experts_active = 64;
    r.arena_peak_bytes = (size_t)123456789;
    r.has_ref = 1;
    r.ref_tokens = 16;
    r.ref_seconds = 0.5;
    r.ref_scaled_seconds = 16.0;
    r.ref_compared = 1;
    r.ref_max_abs_diff = 0.25;
    r.ref_max_abs = 2.0;
    r.ref_rel_l2 = 2.5e-7;    /* the kernels' error */
    r.format_rel_l2 = 0.0625; /* plus q4_0's rounding */

    bench_result r2 = r; /* no reference: speedup null; memory of its own: no share of the host's */
    r2.has_ref = 0;
    r2.shares_host_memory = 0;
    r2.cpu_experts = 0; /* a plain layer without device time, on a recorded trace */
    r2.cache_slots = 0;
    r2.cache_hits = r2.cache_misses = r2.cache_uploads = r2.cache_evictions = 0;
    r2.cache_upload_bytes = r2.cache_upload_ms = 0.0;
    r2.has_context_ms = 0;
    r2.has_context_dist = 0;
    r2.trace_reuse = -1.0;
    r2.trace_file = "recorded.trace";
    r2.desc.weight_dtype = MOE_DTYPE_DEFAULT; /* what the bench hands over: float32 */
    snprintf(r2.device, sizeof r2.device, "plain");

    bench_serve_result s;
    memset(&s, 0, sizeof s);
    snprintf(s.backend, sizeof s.backend, "cpu");
    snprintf(s.device, sizeof s.device, "cpu0");
    s.preset = "custom";
    s.desc = r.desc;
    s.desc.weight_dtype = MOE_DTYPE_BF16;
    s.streams = 2;
    s.rate = 10;
    s.duration = 1;
    s.max_batch_tokens = 256;
    s.req_tokens_mean = 16;
    s.slo_ms = 50;
    s.requests = 10;
    s.completed = 9;
    double lat[] = {0.01, 0.02, 0.03};
    s.latency = bench_summarize(lat, 3);
    s.slo_met_share = 0.9;

    cJSON *arr = cJSON_CreateArray();
    CHECK(arr != NULL);
    cJSON_AddItemToArray(arr, bench_result_json(&r));
    cJSON_AddItemToArray(arr, bench_result_json(&r2));
    cJSON_AddItemToArray(arr, bench_serve_json(&s));
    CHECK(bench_json_write(path, arr) == 0);
    fprintf(stderr, "(an expected error follows)\n");
    CHECK(bench_json_write("/nonexistent-dir/moe-bench.json", arr) == BENCH_EXIT_LIBRARY);
    cJSON_Delete(arr);

    CHECK(check_file(path, 3, NULL) == 0);
    char *text = read_all(path);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(root && cJSON_GetArraySize(root) == 3);
    if (root) {
        const cJSON *a = cJSON_GetArrayItem(root, 0), *b = cJSON_GetArrayItem(root, 1);
        const cJSON *dev = cJSON_GetObjectItemCaseSensitive(a, "device");
        CHECK(cJSON_IsString(dev) && strcmp(dev->valuestring, r.device) == 0);
        const cJSON *lat_ms = cJSON_GetObjectItemCaseSensitive(a, "latency_ms");
        CHECK(fabs(num(lat_ms, "median") - 3.0) < 1e-9 && fabs(num(lat_ms, "min") - 2.0) < 1e-9);
        CHECK(fabs(num(lat_ms, "p99") - 5.0) < 1e-9);
        CHECK(fabs(num(a, "gflops") - r.flops / 0.003 * 1e-9) < 1e-6);
        CHECK(fabs(num(a, "tokens_per_s") - 512 / 0.003) < 1e-6);
        CHECK(fabs(num(a, "speedup_vs_reference") - 16.0 / 0.003) < 1e-6);
        CHECK(num(a, "arena_peak_bytes") == 123456789.0);
        CHECK(num(a, "d_model") == 2048 && num(a, "n_experts") == 64 && num(a, "top_k") == 8);
        const cJSON *preset = cJSON_GetObjectItemCaseSensitive(a, "preset");
        CHECK(cJSON_IsString(preset) && strcmp(preset->valuestring, "olmoe-1b-7b") == 0);
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(a, "reference");
        CHECK(num(ref, "rel_l2") == 2.5e-7 && num(ref, "rel_l2_vs_f32") == 0.0625 &&
              num(ref, "max_abs_diff") == 0.25 && num(ref, "max_abs") == 2.0);
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "speedup_vs_reference")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "device_ms")));
        /* The format, the layers, the arena's weight bytes and the bandwidth figures. */
        CHECK(strcmp(str(a, "weight_dtype"), "q4_0") == 0 && strcmp(str(b, "weight_dtype"), "f32") == 0);
        CHECK(num(a, "layers") == 3 && num(a, "weight_bytes") == 5e6 && num(a, "weight_read_bytes") == 1e9);
        CHECK(num(a, "create_ms") == 125.0);
        CHECK(num(a, "cpu_experts") == 16);
        CHECK(num(a, "cache_slots") == 4 && !strcmp(str(a, "cache_policy"), "lfu") &&
              num(a, "cache_min_rows") == 2);
        CHECK(num(a, "cache_hits") == 30 && num(a, "cache_misses") == 10 && num(a, "cache_uploads") == 6 &&
              num(a, "cache_evictions") == 2 && num(a, "cache_upload_bytes") == 6e6 &&
              num(a, "cache_upload_ms") == 1.5 && num(a, "cache_hit_rate") == 0.75 &&
              num(a, "cache_bytes") == 4e6);
        const cJSON *cms = cJSON_GetObjectItemCaseSensitive(a, "context_ms");
        CHECK(cJSON_GetArraySize(cms) == 2 && cJSON_GetArrayItem(cms, 0)->valuedouble == 0.75 &&
              cJSON_GetArrayItem(cms, 1)->valuedouble == 2.5);
        const cJSON *cmed = cJSON_GetObjectItemCaseSensitive(a, "context_median_ms");
        const cJSON *cp95 = cJSON_GetObjectItemCaseSensitive(a, "context_p95_ms");
        CHECK(cJSON_GetArraySize(cmed) == 2 && cJSON_GetArrayItem(cmed, 0)->valuedouble == 0.5 &&
              cJSON_GetArrayItem(cmed, 1)->valuedouble == 2.0 && cJSON_GetArraySize(cp95) == 2 &&
              cJSON_GetArrayItem(cp95, 0)->valuedouble == 1.25 &&
              cJSON_GetArrayItem(cp95, 1)->valuedouble == 4.5);
        CHECK(num(a, "trace_reuse") == 0.8 &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(a, "trace_file")) &&
              num(a, "trace_forwards") == 64);
        CHECK(num(b, "cache_slots") == 0 &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "cache_policy")) &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "cache_hit_rate")) &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "context_ms")) &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "context_median_ms")) &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "context_p95_ms")));
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "trace_reuse")) &&
              !strcmp(str(b, "trace_file"), "recorded.trace"));
        CHECK(fabs(num(a, "weight_gbs") - 1e9 / 0.003 * 1e-9) < 1e-6 && num(a, "read_bandwidth_gbs") == 20.0);
        CHECK(fabs(num(a, "weight_bw_fraction") - 1e9 / 0.003 * 1e-9 / 20.0) < 1e-9);
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(b, "weight_bw_fraction")));
        const cJSON *sv = cJSON_GetArrayItem(root, 2);
        CHECK(strcmp(str(sv, "weight_dtype"), "bf16") == 0);
    }
    cJSON_Delete(root);
    remove(path);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--check") == 0) {
        expectations x = {0};
        int min_objects = 1;
        for (int i = 3; i < argc; i++) {
            if (!strcmp(argv[i], "--dtypes") && i + 1 < argc)
                x.dtypes = argv[++i];
            else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
                x.layers = atoi(argv[++i]);
            else if (!strcmp(argv[i], "--layers-auto"))
                x.layers_auto = 1;
            else if (!strcmp(argv[i], "--bandwidth"))
                x.bandwidth = 1;
            else if (!strcmp(argv[i], "--async"))
                x.async = 1;
            else if (!strcmp(argv[i], "--kernel-times"))
                x.kernels = 1;
            else if (!strcmp(argv[i], "--cpu-experts") && i + 1 < argc)
                x.cpu = argv[++i];
            else if (!strcmp(argv[i], "--cache-slots") && i + 1 < argc)
                x.slots = argv[++i];
            else if (!strcmp(argv[i], "--trace"))
                x.trace = 1;
            else if (!strcmp(argv[i], "--ep") && i + 1 < argc)
                x.ep_ranks = atoi(argv[++i]);
            else if (!strcmp(argv[i], "--ep-reference"))
                x.ep_reference = 1;
            else if (!strcmp(argv[i], "--same-cache") && i + 1 < argc)
                x.same = argv[++i];
            else if (!strcmp(argv[i], "--interleaved") && i + 1 < argc)
                x.interleaved = atoi(argv[++i]);
            else if (!strcmp(argv[i], "--same-weights") && i + 1 < argc)
                x.same_weights = argv[++i];
            else if (i == 3 && argv[i][0] != '-')
                min_objects = atoi(argv[i]);
            else {
                fprintf(stderr, "test_bench_json: unknown argument '%s'\n", argv[i]);
                return 2;
            }
        }
        const int rc = check_file(argv[2], min_objects, &x);
        if (rc == 0) printf("test_bench_json: %s is valid\n", argv[2]);
        return rc;
    }
    self_test(argc >= 2 ? argv[1] : "test_bench_json.out.json");
    if (failures) {
        fprintf(stderr, "test_bench_json: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_bench_json: all checks passed\n");
    return 0;
}
