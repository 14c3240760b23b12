/*
 * test_alloc_failures.c — every allocation point of the library's life cycle fails in turn,
 * and each failure is clean.
 *
 * The life cycle is the one an inference server goes through: create a context, open a
 * model directory, create a layer from it, run a forward (asking for every optional output),
 * destroy it all (the model is opened first: it needs no context). For each step the test first counts the
 * step's allocation points (host allocations, cJSON's, threads, device memory and buffers, pipelines,
 * programs, kernels: moe_test_inject_alloc_failure in moe.h), then for i = 1..N re-runs the steps before it
 * normally and the step itself with its i-th point failing, and checks:
 *   - the status is MOE_ERROR_OUT_OF_MEMORY or MOE_ERROR_OUT_OF_DEVICE_MEMORY and the
 *     message says it ran out of memory (a point the library can absorb — an optional cache
 *     that is not read — may instead give MOE_OK, with the right result);
 *   - the caller's outputs are untouched (handles stay NULL, output rows and routing
 *     outputs keep their sentinels, guard zones intact);
 *   - the same object still works: the failed step, retried, succeeds with the baseline's
 *     bit-identical result;
 *   - a new context afterwards gives the baseline result too: after every CYCLE_STRIDE-th
 *     point and the last (model open: every MODEL_OPEN_CYCLE_STRIDE-th, as it touches no
 *     context; the retried opens between run their layer and forward on one context lent for
 *     the walk). Between those, the next point's run is itself a new context's life cycle up
 *     to its failing point, and its retry is checked against the baseline.
 * Leaks on any of these paths are caught by LeakSanitizer in CI's sanitizer stage. The
 * number of points walked per step is printed (the closing note quotes them).
 *
 *   test_alloc_failures BACKEND MODEL_DIR LAYER T
 */
#include "harness.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum step { STEP_MODEL_OPEN, STEP_CONTEXT, STEP_LAYER, STEP_FORWARD, STEP_DESTROY, N_STEPS };
static const char *const step_names[N_STEPS] = {"model open", "context creation", "layer from model",
                                                "forward", "destruction"};

/* Opening a model touches no context: after each of its (over a thousand, mostly cJSON's)
 * failures the retry is checked, and a whole new life cycle every this many points. */
#define MODEL_OPEN_CYCLE_STRIDE 97
/* The other steps: a clean life cycle after every this many points and the last. Each one is a
 * second device context per point, which was half of the test's time on the GPU backends
 * (PoCL loads its kernel library into every context), while the next point's own run starts
 * from a new context anyway. */
#define CYCLE_STRIDE 4

#define SENTINEL_ID (-777)

typedef struct run {
    moe_backend_kind kind;
    const char *model_dir;
    int64_t layer_index;
    int64_t T, d_model, k, E;
    const float *x;
    /* A context the model-open walk lends to the steps after each retried open (NULL: each
     * life cycle creates its own): a model open touches no context, and creating a device
     * context per point (over a thousand) was most of the test's time on a GPU backend. */
    moe_context *lent;
    /* state of one life cycle */
    moe_context *ctx;
    moe_model *model;
    moe_layer *layer;
    h_guarded y;
    int32_t *ids, *counts;
    float *weights, losses[2];
    int32_t dropped;
} run;

/* The baseline a clean run gives. */
typedef struct baseline {
    float *y;
    int32_t *ids, *counts;
    float *weights, losses[2];
} baseline;

static void reset_outputs(run *r)
{
    h_guarded_reset(&r->y);
    for (int64_t i = 0; i < r->T * r->k; i++) r->ids[i] = SENTINEL_ID, r->weights[i] = -1.0f;
    for (int64_t i = 0; i < r->E; i++) r->counts[i] = SENTINEL_ID;
    r->losses[0] = r->losses[1] = -1.0f;
    r->dropped = -1;
}

static bool outputs_untouched(const run *r)
{
    bool ok = h_untouched(&r->y) && h_guards_ok(&r->y) && r->losses[0] == -1.0f && r->losses[1] == -1.0f &&
              r->dropped == -1;
    for (int64_t i = 0; i < r->T * r->k; i++) ok = ok && r->ids[i] == SENTINEL_ID && r->weights[i] == -1.0f;
    for (int64_t i = 0; i < r->E; i++) ok = ok && r->counts[i] == SENTINEL_ID;
    return ok;
}

static moe_status do_step(run *r, enum step s)
{
    switch (s) {
    case STEP_CONTEXT: {
        if (r->lent) {
            r->ctx = r->lent;
            return MOE_OK;
        }
        moe_context_desc d = {.struct_size = sizeof d, .backend = r->kind};
        return moe_context_create(&d, &r->ctx);
    }
    case STEP_MODEL_OPEN:
        return moe_model_open(r->model_dir, &r->model);
    case STEP_LAYER: {
        const moe_model_layer_options o = {.struct_size = sizeof o, .max_tokens = r->T};
        return moe_model_create_layer(r->ctx, r->model, r->layer_index, &o, &r->layer);
    }
    case STEP_FORWARD: {
        moe_forward_stats st = {.struct_size = sizeof st,
                                .topk_ids = r->ids,
                                .topk_weights = r->weights,
                                .expert_counts = r->counts,
                                .dropped_count = &r->dropped,
                                .aux_loss = &r->losses[0],
                                .z_loss = &r->losses[1]};
        return moe_layer_forward(r->layer, r->T, r->x, r->y.data, &st);
    }
    case STEP_DESTROY:
        moe_layer_destroy(r->layer);
        moe_model_close(r->model);
        if (r->ctx != r->lent) moe_context_destroy(r->ctx);
        r->layer = NULL, r->model = NULL, r->ctx = NULL;
        return MOE_OK;
    default:
        return MOE_ERROR_INTERNAL;
    }
}

static const char *message_of(const run *r, enum step s)
{
    return s == STEP_LAYER || s == STEP_FORWARD ? moe_context_error(r->ctx) : moe_last_error();
}

static bool says_out_of_memory(const char *msg)
{
    char low[1024];
    size_t n = 0;
    for (; msg[n] && n + 1 < sizeof low; n++) low[n] = (char)tolower((unsigned char)msg[n]);
    low[n] = '\0';
    return strstr(low, "memory") || strstr(low, "alloc");
}

/* The forward's outputs equal the baseline bit for bit. */
static bool matches(const run *r, const baseline *b)
{
    const size_t n = (size_t)(r->T * r->d_model), nk = (size_t)(r->T * r->k);
    return !memcmp(r->y.data, b->y, n * sizeof(float)) && !memcmp(r->ids, b->ids, nk * sizeof(int32_t)) &&
           !memcmp(r->weights, b->weights, nk * sizeof(float)) &&
           !memcmp(r->counts, b->counts, (size_t)(r->E) * sizeof(int32_t)) &&
           !memcmp(r->losses, b->losses, sizeof r->losses);
}

/* A whole clean life cycle; true when every step succeeded and the result is the baseline. */
static bool clean_cycle(run *r, const baseline *b)
{
    reset_outputs(r);
    bool ok = true;
    for (int s = 0; s < STEP_DESTROY && ok; s++) {
        const moe_status st = do_step(r, (enum step)s);
        ok = st == MOE_OK;
        CHECK(ok, "clean %s: %s (%s)", step_names[s], moe_status_string(st), message_of(r, (enum step)s));
    }
    ok = ok && matches(r, b);
    do_step(r, STEP_DESTROY);
    return ok;
}

/* Walks every allocation point of step `s`; returns the number of points. */
static int64_t walk(run *r, enum step s, const baseline *b, int64_t *absorbed)
{
    /* Count: the steps before run normally, this one with counting on. */
    reset_outputs(r);
    for (int p = 0; p < (int)s; p++) CHECK_STATUS(do_step(r, (enum step)p), MOE_OK);
    moe_test_inject_alloc_failure(-1);
    CHECK_STATUS(do_step(r, s), MOE_OK);
    const int64_t points = moe_test_inject_alloc_failure(0);
    if (s != STEP_DESTROY) do_step(r, STEP_DESTROY);

    *absorbed = 0;
    if (s == STEP_MODEL_OPEN) {
        moe_context_desc d = {.struct_size = sizeof d, .backend = r->kind};
        CHECK_STATUS(moe_context_create(&d, &r->lent), MOE_OK);
    }
    for (int64_t i = 1; i <= points; i++) {
        reset_outputs(r);
        bool ready = true;
        for (int p = 0; p < (int)s && ready; p++) ready = do_step(r, (enum step)p) == MOE_OK;
        CHECK(ready, "%s point %lld: a step before it failed without injection", step_names[s], (long long)i);
        if (!ready) {
            do_step(r, STEP_DESTROY);
            continue;
        }
        moe_test_inject_alloc_failure(i);
        const moe_status st = do_step(r, s);
        const int64_t reached = moe_test_inject_alloc_failure(0);
        if (s == STEP_DESTROY) {
            /* Nothing to report: a failure inside destruction must only not crash or leak. */
            CHECK(clean_cycle(r, b), "after a failure at destruction point %lld: a new context fails",
                  (long long)i);
            continue;
        }
        if (st == MOE_OK) {
            /* Absorbed (an optional cache not read) or the point was not reached this time. */
            (*absorbed)++;
            if (s == STEP_FORWARD)
                CHECK(matches(r, b), "%s point %lld (of %lld reached): MOE_OK but a wrong result",
                      step_names[s], (long long)i, (long long)reached);
        } else {
            const char *msg = message_of(r, s);
            CHECK(st == MOE_ERROR_OUT_OF_MEMORY || st == MOE_ERROR_OUT_OF_DEVICE_MEMORY,
                  "%s point %lld: %s (%s)", step_names[s], (long long)i, moe_status_string(st), msg);
            CHECK(says_out_of_memory(msg), "%s point %lld: message '%s'", step_names[s], (long long)i, msg);
            CHECK(reached >= i, "%s point %lld failed but only %lld points were reached", step_names[s],
                  (long long)i, (long long)reached);
            switch (s) {
            case STEP_CONTEXT:
                CHECK(r->ctx == NULL, "context point %lld: handle written", (long long)i);
                break;
            case STEP_MODEL_OPEN:
                CHECK(r->model == NULL, "model point %lld: handle written", (long long)i);
                break;
            case STEP_LAYER:
                CHECK(r->layer == NULL, "layer point %lld: handle written", (long long)i);
                break;
            default:
                CHECK(outputs_untouched(r), "forward point %lld: an output was written", (long long)i);
            }
            /* The same objects still work: the step, retried, succeeds. */
            const moe_status again = do_step(r, s);
            CHECK(again == MOE_OK, "%s point %lld: the retry fails: %s (%s)", step_names[s], (long long)i,
                  moe_status_string(again), message_of(r, s));
            if (again == MOE_OK && s < STEP_FORWARD) {
                for (int p = (int)s + 1; p < STEP_DESTROY && again == MOE_OK; p++)
                    CHECK_STATUS(do_step(r, (enum step)p), MOE_OK);
            }
            CHECK(matches(r, b), "%s point %lld: after the retry, the result differs from the baseline",
                  step_names[s], (long long)i);
        }
        do_step(r, STEP_DESTROY);
        /* A new context works afterwards. */
        if (i % (s == STEP_MODEL_OPEN ? MODEL_OPEN_CYCLE_STRIDE : CYCLE_STRIDE) == 0 || i == points) {
            moe_context *lent = r->lent;
            r->lent = NULL;
            CHECK(clean_cycle(r, b), "%s point %lld: a new context afterwards fails or differs",
                  step_names[s], (long long)i);
            r->lent = lent;
        }
    }
    moe_context_destroy(r->lent);
    r->lent = NULL;
    return points;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: test_alloc_failures BACKEND MODEL_DIR LAYER T\n");
        return 2;
    }
    moe_backend_kind kind;
    moe_context *probe = h_open(argc, argv, &kind); /* skips when the backend has no device */
    moe_context_destroy(probe);

    run r = {.kind = kind, .model_dir = argv[2], .layer_index = atoll(argv[3]), .T = atoll(argv[4])};
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(r.model_dir, &m), MOE_OK);
    moe_layer_desc desc = {.struct_size = sizeof desc};
    CHECK_STATUS(moe_model_layer_desc(m, r.layer_index, NULL, &desc), MOE_OK);
    moe_model_close(m);
    if (h_failures) return h_finish("alloc_failures");
    r.d_model = desc.d_model, r.k = desc.top_k, r.E = desc.n_experts;

    h_rng rng = h_rng_seeded("test_alloc_failures");
    float *x = malloc(sizeof(float) * (size_t)(r.T * r.d_model));
    for (int64_t i = 0; i < r.T * r.d_model; i++) x[i] = h_sym(&rng, 1.0f);
    r.x = x;
    r.y = h_guarded_alloc((size_t)(r.T * r.d_model));
    r.ids = malloc(sizeof(int32_t) * (size_t)(r.T * r.k));
    r.weights = malloc(sizeof(float) * (size_t)(r.T * r.k));
    r.counts = malloc(sizeof(int32_t) * (size_t)(r.E + 1));

    /* The baseline, from a clean cycle (which also warms the on-disk caches, so the counted
     * points are those of the walked runs). */
    baseline b = {.y = malloc(sizeof(float) * (size_t)(r.T * r.d_model)),
                  .ids = malloc(sizeof(int32_t) * (size_t)(r.T * r.k)),
                  .weights = malloc(sizeof(float) * (size_t)(r.T * r.k)),
                  .counts = malloc(sizeof(int32_t) * (size_t)(r.E + 1))};
    reset_outputs(&r);
    for (int s = 0; s < STEP_DESTROY; s++) CHECK_STATUS(do_step(&r, (enum step)s), MOE_OK);
    memcpy(b.y, r.y.data, sizeof(float) * (size_t)(r.T * r.d_model));
    memcpy(b.ids, r.ids, sizeof(int32_t) * (size_t)(r.T * r.k));
    memcpy(b.weights, r.weights, sizeof(float) * (size_t)(r.T * r.k));
    memcpy(b.counts, r.counts, sizeof(int32_t) * (size_t)(r.E + 1));
    memcpy(b.losses, r.losses, sizeof r.losses);
    do_step(&r, STEP_DESTROY);
    CHECK(clean_cycle(&r, &b), "two clean runs differ");

    int64_t total = 0;
    if (h_failures == 0) {
        for (int s = 0; s < N_STEPS; s++) {
            int64_t absorbed = 0;
            const int64_t n = walk(&r, (enum step)s, &b, &absorbed);
            printf("%-18s %4lld allocation points walked, %lld absorbed\n", step_names[s], (long long)n,
                   (long long)absorbed);
            total += n;
        }
    }
    printf("%s: %lld allocation points walked in all\n", moe_backend_name(kind), (long long)total);
    CHECK(total > 0, "no allocation point was counted: the injection hook is not wired");

    h_guarded_free(&r.y);
    free(x);
    free(r.ids);
    free(r.weights);
    free(r.counts);
    free(b.y);
    free(b.ids);
    free(b.weights);
    free(b.counts);
    return h_finish("alloc_failures");
}
