/*
 * test_placement.c — a layer's experts placed on several contexts (moe_layer_create_placed),
 * beyond the forward suite's runs of it (forward.placed.*): the budget policy (which experts go
 * where, each part within its budget, measured in the arena), every misuse refused with the
 * caller's data untouched, buffers of the home context, lifetimes, one context, a context that
 * holds nothing, a device lost on the part's side, and a checkpoint's layer placed. argv[1] is
 * the backend of the second context (the first is always a CPU one), argv[2] a checkpoint.
 */
#include "faults.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define Y_TOL 1e-5

/* The layer's forward against the reference (host pointers and the home's buffers). */
static void check_forward(moe_context *home, moe_layer *layer, const h_layer *hl, const float *x, int64_t T,
                          const char *what)
{
    const size_t TD = (size_t)(T * hl->desc.d_model);
    float *want = malloc(sizeof(float) * TD), *y2 = malloc(sizeof(float) * TD);
    h_guarded y = h_guarded_alloc(TD);
    int32_t ids[64 * 8], ref_ids[64 * 8], counts[64], ref_counts[64];
    float w[64 * 8], ref_w[64 * 8], aux = 0, ref_aux = 0;
    moe_forward_stats rs = {.struct_size = sizeof rs,
                            .topk_ids = ref_ids,
                            .topk_weights = ref_w,
                            .expert_counts = ref_counts,
                            .aux_loss = &ref_aux};
    moe_forward_stats gs = {.struct_size = sizeof gs,
                            .topk_ids = ids,
                            .topk_weights = w,
                            .expert_counts = counts,
                            .aux_loss = &aux};
    CHECK_STATUS(moe_reference_forward(&hl->desc, &hl->w, T, x, want, &rs), MOE_OK);
    CHECK_STATUS(moe_layer_forward(layer, T, x, y.data, &gs), MOE_OK);
    const double err = h_rel_l2(y.data, want, TD);
    CHECK(err <= Y_TOL, "[%s] T=%lld: relative L2 error %.3g", what, (long long)T, err);
    CHECK(h_guards_ok(&y), "[%s] write outside y", what);
    CHECK(h_compare_topk(ids, w, ref_ids, ref_w, T, hl->desc.top_k, 1e-5f) == 0, "[%s] top-k differs", what);
    CHECK(!memcmp(counts, ref_counts, sizeof(int32_t) * (size_t)hl->desc.n_experts), "[%s] counts differ",
          what);
    CHECK(aux > 0 && (aux - ref_aux) * (aux - ref_aux) < 1e-8 * ref_aux * ref_aux,
          "[%s] aux loss %g, reference %g", what, aux, ref_aux);
    moe_buffer *xb = NULL, *yb = NULL;
    CHECK_STATUS(moe_buffer_create(home, (int64_t)TD, &xb), MOE_OK);
    CHECK_STATUS(moe_buffer_create(home, (int64_t)TD, &yb), MOE_OK);
    if (xb && yb) {
        CHECK_STATUS(moe_buffer_write(xb, 0, (int64_t)TD, x), MOE_OK);
        CHECK_STATUS(moe_layer_forward_buffers(layer, T, xb, yb, NULL), MOE_OK);
        CHECK_STATUS(moe_buffer_read(yb, 0, (int64_t)TD, y2), MOE_OK);
        CHECK(!memcmp(y2, y.data, sizeof(float) * TD), "[%s] buffers give another result than host arrays",
              what);
        /* Not asynchronously: refused, nothing written. */
        float *poison = malloc(sizeof(float) * TD);
        for (size_t i = 0; i < TD; i++) poison[i] = -7.0f;
        CHECK_STATUS(moe_buffer_write(yb, 0, (int64_t)TD, poison), MOE_OK);
        CHECK_STATUS(moe_layer_forward_async(layer, T, xb, yb), MOE_ERROR_UNSUPPORTED);
        CHECK(strstr(moe_last_error(), "placed on several contexts") != NULL, "message: %s",
              moe_last_error());
        CHECK_STATUS(moe_buffer_read(yb, 0, (int64_t)TD, y2), MOE_OK);
        CHECK(!memcmp(y2, poison, sizeof(float) * TD), "[%s] a refused asynchronous forward wrote y", what);
        free(poison);
    }
    moe_buffer_destroy(xb);
    moe_buffer_destroy(yb);
    h_guarded_free(&y);
    free(want);
    free(y2);
}

/* The bytes a part with experts [0, n) takes on `where` (home: the CPU context). */
static size_t part_bytes(moe_context *cpu, moe_context *where, const h_layer *hl, int64_t n)
{
    moe_context *const contexts[2] = {cpu, where};
    int32_t place[64];
    for (int64_t e = 0; e < hl->desc.n_experts; e++) place[e] = e < n ? 1 : 0;
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = contexts, .expert_context = place};
    const size_t before = h_weights_bytes(where);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_OK);
    const size_t bytes = h_weights_bytes(where) - before;
    moe_layer_destroy(layer);
    CHECK(h_weights_bytes(where) == before, "destroying the layer left %zu bytes",
          h_weights_bytes(where) - before);
    return bytes;
}

static void budgets(moe_context *gpu, moe_context *cpu, const h_layer *hl, const float *x, int64_t T,
                    h_rng *r)
{
    const int64_t E = hl->desc.n_experts;
    const size_t five = part_bytes(cpu, gpu, hl, 5);
    CHECK(five > part_bytes(cpu, gpu, hl, 4) && five < part_bytes(cpu, gpu, hl, 6), "part sizes do not grow");
    int32_t order[64], got[64];
    for (int64_t e = 0; e < E; e++) order[e] = (int32_t)e;
    for (int64_t e = E - 1; e > 0; e--) { /* a random "most used first" order */
        const int64_t j = h_range(r, 0, e);
        const int32_t t = order[e];
        order[e] = order[j];
        order[j] = t;
    }
    moe_context *const contexts[2] = {gpu, cpu};
    for (int less = 0; less < 2; less++) {
        /* {the first context, the CPU} with {five experts' bytes (less one), no limit}: the first
         * five (four) of the order fill the first context, the rest stay on the CPU. */
        const uint64_t budget[2] = {five - (size_t)less, UINT64_MAX};
        const moe_placement p = {.struct_size = sizeof p,
                                 .n_contexts = 2,
                                 .contexts = contexts,
                                 .home = 1,
                                 .budget_bytes = budget,
                                 .expert_order = order};
        const size_t before = h_weights_bytes(gpu);
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_OK);
        if (!layer) continue;
        const size_t held = h_weights_bytes(gpu) - before;
        CHECK(held <= budget[0], "the first context holds %zu bytes of experts, over its budget %llu", held,
              (unsigned long long)budget[0]);
        CHECK_STATUS(moe_layer_get_placement(layer, got), MOE_OK);
        for (int64_t i = 0; i < E; i++)
            CHECK(got[order[i]] == (i < 5 - less ? 0 : 1),
                  "budget %llu: expert %d (place %lld of the order) on %d", (unsigned long long)budget[0],
                  order[i], (long long)i, got[order[i]]);
        check_forward(cpu, layer, hl, x, T, less ? "budget of four" : "budget of five");
        moe_layer_destroy(layer);
    }
    /* No room anywhere: refused, nothing held, the out pointer untouched. */
    const uint64_t none[2] = {five, five};
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = contexts, .home = 1, .budget_bytes = none};
    const size_t g0 = h_weights_bytes(gpu), c0 = h_weights_bytes(cpu);
    moe_layer *sentinel = (moe_layer *)&none, *layer = sentinel;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_ERROR_OUT_OF_DEVICE_MEMORY);
    CHECK(layer == sentinel, "out_layer written on failure");
    CHECK(strstr(moe_context_error(cpu), "budget") != NULL, "message: %s", moe_context_error(cpu));
    CHECK(h_weights_bytes(gpu) == g0 && h_weights_bytes(cpu) == c0,
          "a refused placement left weights behind");
}

static void misuse(moe_context *gpu, moe_context *cpu, const h_layer *hl)
{
    const int64_t E = hl->desc.n_experts;
    moe_context *const two[2] = {gpu, cpu}, *const same[2] = {cpu, cpu}, *const with_null[2] = {cpu, NULL};
    int32_t bad[64] = {0}, dup_order[64], neg_order[64], past_order[64];
    for (int64_t e = 0; e < E; e++) {
        dup_order[e] = (int32_t)(e == 3 ? 2 : e);
        neg_order[e] = (int32_t)(e == 0 ? -1 : e);
        past_order[e] = (int32_t)(e == 5 ? E : e);
    }
    bad[7] = 2;
    const uint64_t budget[2] = {UINT64_MAX, UINT64_MAX};
    const moe_placement good = {
        .struct_size = sizeof good, .n_contexts = 2, .contexts = two, .home = 1, .budget_bytes = budget};
    struct {
        const char *what;
        moe_placement p;
        moe_status want;
    } cases[] = {
        {"no contexts", good, MOE_ERROR_NULL_POINTER},
        {"0 contexts", good, MOE_ERROR_INVALID_SIZE},
        {"17 contexts", good, MOE_ERROR_INVALID_SIZE},
        {"home -1", good, MOE_ERROR_INVALID_ARGUMENT},
        {"home 2", good, MOE_ERROR_INVALID_ARGUMENT},
        {"a context twice", good, MOE_ERROR_INVALID_ARGUMENT},
        {"a NULL context", good, MOE_ERROR_NULL_POINTER},
        {"expert on context 2", good, MOE_ERROR_INVALID_ARGUMENT},
        {"no placement, no budget", good, MOE_ERROR_INVALID_ARGUMENT},
        {"an order listing an expert twice", good, MOE_ERROR_INVALID_ARGUMENT},
        {"an order with -1", good, MOE_ERROR_INVALID_ARGUMENT},
        {"an order with n_experts", good, MOE_ERROR_INVALID_ARGUMENT},
        {"struct_size of a newer moe.h", good, MOE_ERROR_INVALID_ARGUMENT},
    };
    cases[0].p.contexts = NULL;
    cases[1].p.n_contexts = 0;
    cases[2].p.n_contexts = MOE_MAX_PLACEMENT_CONTEXTS + 1;
    cases[3].p.home = -1;
    cases[4].p.home = 2;
    cases[5].p.contexts = same;
    cases[6].p.contexts = with_null;
    cases[6].p.home = 0;
    cases[7].p.expert_context = bad;
    cases[8].p.budget_bytes = NULL;
    cases[9].p.expert_order = dup_order;
    cases[10].p.expert_order = neg_order;
    cases[11].p.expert_order = past_order;
    cases[12].p.struct_size = sizeof good + 8;
    const size_t g0 = h_weights_bytes(gpu), c0 = h_weights_bytes(cpu);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_layer *sentinel = (moe_layer *)&cases[i], *layer = sentinel;
        const moe_status st = moe_layer_create_placed(&cases[i].p, &hl->desc, &hl->w, &layer);
        CHECK(st == cases[i].want, "[%s] %s, expected %s (%s)", cases[i].what, moe_status_string(st),
              moe_status_string(cases[i].want), moe_last_error());
        CHECK(layer == sentinel, "[%s] out_layer written on failure", cases[i].what);
        CHECK(*moe_last_error() != '\0', "[%s] no message", cases[i].what);
    }
    moe_layer *sentinel = (moe_layer *)&good, *layer = sentinel;
    CHECK_STATUS(moe_layer_create_placed(NULL, &hl->desc, &hl->w, &layer), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_create_placed(&good, &hl->desc, NULL, &layer), MOE_ERROR_NULL_POINTER);
    moe_layer_desc bad_desc = hl->desc;
    bad_desc.top_k = (int)E + 1;
    CHECK_STATUS(moe_layer_create_placed(&good, &bad_desc, &hl->w, &layer), MOE_ERROR_INVALID_CONFIG);
    CHECK(layer == sentinel, "out_layer written on failure");
    layer = NULL;
    CHECK(h_weights_bytes(gpu) == g0 && h_weights_bytes(cpu) == c0,
          "a refused placement left weights behind");
    CHECK_STATUS(moe_layer_get_placement(NULL, bad), MOE_ERROR_NULL_POINTER);

    /* x and y buffers of the part's context (not the home's) are refused. */
    CHECK_STATUS(moe_layer_create_placed(&good, &hl->desc, &hl->w, &layer), MOE_OK);
    moe_buffer *xb = NULL, *yb = NULL;
    CHECK_STATUS(moe_buffer_create(gpu, hl->desc.d_model, &xb), MOE_OK);
    CHECK_STATUS(moe_buffer_create(gpu, hl->desc.d_model, &yb), MOE_OK);
    if (layer && xb && yb)
        CHECK_STATUS(moe_layer_forward_buffers(layer, 1, xb, yb, NULL), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_layer_get_placement(layer, NULL), MOE_ERROR_NULL_POINTER);
    moe_buffer_destroy(xb);
    moe_buffer_destroy(yb);
    moe_layer_destroy(layer);
}

/* One context only, and a home that holds no expert: both still the reference's forward. */
static void degenerate(moe_context *gpu, moe_context *cpu, const h_layer *hl, const float *x, int64_t T)
{
    moe_context *const one[1] = {gpu}, *const two[2] = {cpu, gpu};
    int32_t zeros[64] = {0}, ones[64];
    for (int e = 0; e < 64; e++) ones[e] = 1;
    const moe_placement alone = {
        .struct_size = sizeof alone, .n_contexts = 1, .contexts = one, .expert_context = zeros};
    const moe_placement away = {
        .struct_size = sizeof away, .n_contexts = 2, .contexts = two, .expert_context = ones};
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&alone, &hl->desc, &hl->w, &layer), MOE_OK);
    if (layer) check_forward(gpu, layer, hl, x, T, "one context");
    moe_layer_destroy(layer);
    layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&away, &hl->desc, &hl->w, &layer), MOE_OK);
    if (layer) {
        check_forward(cpu, layer, hl, x, T, "every expert away from home");
        check_forward(cpu, layer, hl, x, 1, "one token after many"); /* smaller scratch: kept */
        check_forward(cpu, layer, hl, x, T, "many tokens again");
    }
    moe_layer_destroy(layer);
}

/* A forward in which one context's experts get no row: top-1 routing with a hot expert on the
 * home, every other expert on the part (which then has nothing to run), and back. */
static void idle_part(moe_context *gpu, moe_context *cpu, h_rng *r)
{
    const moe_layer_desc d = {.struct_size = sizeof d,
                              .d_model = 32,
                              .d_ff = 24,
                              .n_experts = 6,
                              .top_k = 1,
                              .max_tokens = 9,
                              .d_ff_shared = 16};
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);
    h_make_hot(&hl, 4);
    float x[9 * 32];
    h_fill_input(&hl, 9, x, r);
    moe_context *const two[2] = {cpu, gpu};
    for (int home_holds_hot = 1; home_holds_hot >= 0; home_holds_hot--) {
        int32_t place[6];
        for (int e = 0; e < 6; e++) place[e] = (e == 4) == home_holds_hot ? 0 : 1;
        const moe_placement p = {
            .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = place};
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create_placed(&p, &hl.desc, &hl.w, &layer), MOE_OK);
        if (layer) check_forward(cpu, layer, &hl, x, 9, home_holds_hot ? "idle part" : "idle home");
        moe_layer_destroy(layer);
    }
    h_layer_free(&hl);
}

/* The part's context destroyed before the layer: it stays until the layer goes, forwards are
 * refused meanwhile (y untouched), and the layer's destroy releases it. */
static void lifetimes(moe_backend_kind kind, moe_context *cpu, const h_layer *hl, const float *x)
{
    moe_context *part = h_context(kind, 0);
    moe_context *const two[2] = {cpu, part};
    const uint64_t budget[2] = {0, UINT64_MAX}; /* every expert on the part */
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .budget_bytes = budget};
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_OK);
    moe_context_destroy(part);
    CHECK(strstr(moe_context_error(part), "still alive") != NULL, "message: %s", moe_context_error(part));
    h_guarded y = h_guarded_alloc((size_t)hl->desc.d_model);
    if (layer) {
        CHECK_STATUS(moe_layer_forward(layer, 1, x, y.data, NULL), MOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(moe_context_error(cpu), "placement context 1") != NULL, "message: %s",
              moe_context_error(cpu));
    }
    CHECK(h_untouched(&y), "y written by a refused forward");
    moe_layer_destroy(layer); /* frees the part's context too (ASan would see a leak) */
    h_guarded_free(&y);
}

/* The part's device lost mid-forward: the error, and no output. */
static void lost_part(moe_backend_kind kind, moe_context *cpu, const h_layer *hl, const float *x, int64_t T)
{
    const char *var = kind == MOE_BACKEND_VULKAN ? "MOE_VK_INJECT" : "MOE_CL_INJECT";
    moe_context *part = h_context_injected(kind, var, "lost");
    moe_context *const two[2] = {cpu, part};
    int32_t alt[64];
    for (int e = 0; e < 64; e++) alt[e] = e % 2;
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = alt};
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create_placed(&p, &hl->desc, &hl->w, &layer), MOE_OK);
    h_guarded y = h_guarded_alloc((size_t)(T * hl->desc.d_model));
    if (layer) {
        CHECK_STATUS(moe_layer_forward(layer, T, x, y.data, NULL), MOE_ERROR_DEVICE_LOST);
        CHECK(strstr(moe_context_error(cpu), "placement context 1") != NULL, "message: %s",
              moe_context_error(cpu));
        CHECK(h_untouched(&y), "y written after the part's device was lost");
    }
    moe_layer_destroy(layer);
    moe_context_destroy(part);
    h_guarded_free(&y);
}

/* A checkpoint's layer placed (moe_model_create_layer_placed) against the same layer on one
 * context: the home's context alone when the part is a CPU one too (bit-identical), else within
 * the suite's tolerance. */
static void from_checkpoint(moe_backend_kind kind, moe_context *gpu, moe_context *cpu, const char *dir,
                            h_rng *r)
{
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(dir, &m), MOE_OK);
    if (!m) return;
    moe_layer_desc d = {.struct_size = sizeof d};
    CHECK_STATUS(moe_model_layer_desc(m, 0, NULL, &d), MOE_OK);
    CHECK(d.n_experts <= 256, "the checkpoint has %lld experts; the test places at most 256",
          (long long)d.n_experts);
    moe_context *const two[2] = {cpu, gpu};
    int32_t alt[256];
    for (int e = 0; e < 256; e++) alt[e] = e % 2;
    const moe_placement p = {
        .struct_size = sizeof p, .n_contexts = 2, .contexts = two, .expert_context = alt};
    moe_layer *placed = NULL, *one = NULL;
    CHECK_STATUS(moe_model_create_layer_placed(&p, m, 0, NULL, &placed), MOE_OK);
    CHECK_STATUS(moe_model_create_layer(cpu, m, 0, NULL, &one), MOE_OK);
    moe_layer *sentinel = (moe_layer *)&p, *refused = sentinel;
    CHECK_STATUS(moe_model_create_layer_placed(NULL, m, 0, NULL, &refused), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_model_create_layer_placed(&p, m, 99, NULL, &refused), MOE_ERROR_INVALID_ARGUMENT);
    CHECK(refused == sentinel, "out_layer written on failure");
    const int64_t T = d.max_tokens < 5 ? d.max_tokens : 5, TD = T * d.d_model;
    float *x = malloc(sizeof(float) * (size_t)TD), *y1 = malloc(sizeof(float) * (size_t)TD),
          *y2 = malloc(sizeof(float) * (size_t)TD);
    for (int64_t i = 0; i < TD; i++) x[i] = h_sym(r, 1.0f);
    if (placed && one) {
        CHECK_STATUS(moe_layer_forward(placed, T, x, y1, NULL), MOE_OK);
        CHECK_STATUS(moe_layer_forward(one, T, x, y2, NULL), MOE_OK);
        const double diff = h_rel_l2(y1, y2, (size_t)TD);
        if (kind == MOE_BACKEND_CPU)
            CHECK(!memcmp(y1, y2, sizeof(float) * (size_t)TD),
                  "checkpoint placed on two CPU contexts: rel diff %.3g", diff);
        else
            CHECK(diff <= 2 * Y_TOL, "checkpoint placed: relative L2 difference %.3g", diff);
    }
    /* By budget: nothing fits the CPU home (0 bytes), everything goes to the other context. */
    const uint64_t budget[2] = {0, UINT64_MAX};
    const moe_placement pb = {
        .struct_size = sizeof pb, .n_contexts = 2, .contexts = two, .budget_bytes = budget};
    moe_layer *by_budget = NULL;
    CHECK_STATUS(moe_model_create_layer_placed(&pb, m, 0, NULL, &by_budget), MOE_OK);
    int32_t where[256];
    if (by_budget && placed && one) {
        CHECK_STATUS(moe_layer_get_placement(by_budget, where), MOE_OK);
        for (int64_t e = 0; e < d.n_experts && e < 256; e++)
            CHECK(where[e] == 1, "checkpoint by budget: expert %lld on context %d", (long long)e, where[e]);
        CHECK_STATUS(moe_layer_forward(by_budget, T, x, y1, NULL), MOE_OK);
        CHECK(h_rel_l2(y1, y2, (size_t)TD) <= 2 * Y_TOL, "checkpoint by budget: rel diff %.3g",
              h_rel_l2(y1, y2, (size_t)TD));
    }
    moe_layer_destroy(by_budget);
    moe_layer_destroy(placed);
    moe_layer_destroy(one);
    moe_model_close(m);
    free(x);
    free(y1);
    free(y2);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *gpu = h_open(argc, argv, &kind); /* "gpu": the part's side, any backend */
    moe_context *cpu = h_context(MOE_BACKEND_CPU, 0);
    h_rng r = h_rng_seeded("test_placement");
    const moe_layer_desc d = {.struct_size = sizeof d,
                              .d_model = 48,
                              .d_ff = 40,
                              .n_experts = 12,
                              .top_k = 3,
                              .max_tokens = 40,
                              .renormalize = 1,
                              .d_ff_shared = 24,
                              .shared_expert_gate = 1};
    h_layer hl;
    h_layer_init(&hl, &d, &r, 1.0f);
    const int64_t T = 37;
    float *x = malloc(sizeof(float) * (size_t)(T * d.d_model));
    h_fill_input(&hl, T, x, &r);

    budgets(gpu, cpu, &hl, x, T, &r);
    misuse(gpu, cpu, &hl);
    degenerate(gpu, cpu, &hl, x, T);
    idle_part(gpu, cpu, &r);
    lifetimes(kind, cpu, &hl, x);
    if (kind != MOE_BACKEND_CPU) lost_part(kind, cpu, &hl, x, T);
    if (argc > 2) from_checkpoint(kind, gpu, cpu, argv[2], &r);

    free(x);
    h_layer_free(&hl);
    moe_context_destroy(cpu);
    moe_context_destroy(gpu);
    return h_finish("test_placement");
}
