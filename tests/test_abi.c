/*
 * test_abi.c — programs built against an older moe.h keep working with this library
 * (moe.h, "Extensible structs and the ABI").
 *
 * Callers are compiled against the frozen 0.1.0 layouts (tests/abi/moe_0_1_0.h), whose
 * struct_size is smaller wherever a struct has grown since, and run against today's library:
 *   - every input struct is accepted and the fields it lacks take their defaults: a layer made
 *     from 0.1.0 desc and weights (float32 experts, no formats) runs bit-identical to one made
 *     with today's structs, and so does the reference; a model layer made with 0.1.0 options
 *     keeps the checkpoint's dtype;
 *   - every output struct is written only up to the caller's struct_size: the bytes after a
 *     0.1.0 struct in the caller's memory keep a guard pattern, and the fields it has equal
 *     those today's struct gets;
 *   - a struct_size larger than this library's (a caller built against a newer moe.h) and one
 *     smaller than the oldest layout are refused with MOE_ERROR_INVALID_ARGUMENT, a message
 *     saying which, and the caller's output untouched.
 *
 *   test_abi BACKEND MODEL_DIR
 */
#include "abi/moe_0_1_0.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define GUARD 0xA5

/* Every 0.1.0 layout is a prefix of today's: each field at the same offset. */
#define SAME_FIELD(now, old, field)                                                                          \
    _Static_assert(offsetof(now, field) == offsetof(old, field), #now "." #field " moved");
SAME_FIELD(moe_device_info, moe_0_1_0_device_info, fp16)
SAME_FIELD(moe_context_desc, moe_0_1_0_context_desc, log_level)
SAME_FIELD(moe_arena_stats, moe_0_1_0_arena_stats, scratch_reservations)
SAME_FIELD(moe_layer_desc, moe_0_1_0_layer_desc, drop_policy)
SAME_FIELD(moe_layer_weights, moe_0_1_0_layer_weights, shared_expert_gate)
SAME_FIELD(moe_forward_stats, moe_0_1_0_forward_stats, device_ms)
SAME_FIELD(moe_model_info, moe_0_1_0_model_info, n_tensors)
SAME_FIELD(moe_model_layer_options, moe_0_1_0_model_layer_options, decoder)
SAME_FIELD(moe_cache_info, moe_0_1_0_cache_info, limit_bytes)

/* An output struct of `size` bytes at the start of a buffer of `room` guard bytes. */
typedef struct out_buf {
    unsigned char *p;
    size_t size, room;
} out_buf;

static out_buf out_new(size_t size)
{
    out_buf b = {malloc(size + 256), size, size + 256};
    memset(b.p, GUARD, b.room);
    memcpy(b.p, &size, sizeof size); /* struct_size */
    return b;
}

/* The bytes past the struct are as they were. */
static bool tail_untouched(const out_buf *b)
{
    for (size_t i = b->size; i < b->room; i++)
        if (b->p[i] != GUARD) return false;
    return true;
}

/* A refused call: the status, a message that says why, and nothing but struct_size written. */
static void expect_refused(moe_status st, const out_buf *b, const char *why, const char *what)
{
    CHECK(st == MOE_ERROR_INVALID_ARGUMENT, "%s: %s (%s)", what, moe_status_string(st), moe_last_error());
    CHECK(strstr(moe_last_error(), why) != NULL, "%s: message '%s' does not say '%s'", what, moe_last_error(),
          why);
    if (b) {
        bool untouched = true;
        for (size_t i = sizeof(size_t); i < b->room; i++) untouched = untouched && b->p[i] == GUARD;
        CHECK(untouched, "%s: the refused output struct was written", what);
    }
}

static void outputs(moe_backend_kind kind, moe_context *ctx)
{
    /* Device info, by index and from the context. */
    moe_device_info now = {.struct_size = sizeof now};
    CHECK_STATUS(moe_device_get_info(kind, 0, &now), MOE_OK);
    out_buf b = out_new(sizeof(moe_0_1_0_device_info));
    CHECK_STATUS(moe_device_get_info(kind, 0, (moe_device_info *)(void *)b.p), MOE_OK);
    const moe_0_1_0_device_info *old = (const void *)b.p;
    CHECK(old->struct_size == sizeof *old, "device info: struct_size rewritten to %zu", old->struct_size);
    CHECK(!strcmp(old->name, now.name) && old->type == now.type && old->memory_bytes == now.memory_bytes &&
              old->fp16 == now.fp16,
          "device info: a 0.1.0 field differs from today's struct ('%s' / '%s')", old->name, now.name);
    CHECK(tail_untouched(&b), "device info: written past a 0.1.0 struct_size");
    memset(b.p + sizeof(size_t), GUARD, b.room - sizeof(size_t));
    CHECK_STATUS(moe_context_get_device_info(ctx, (moe_device_info *)(void *)b.p), MOE_OK);
    CHECK(!strcmp(old->name, now.name) && tail_untouched(&b), "context device info: 0.1.0 caller");
    free(b.p);

    /* Arena stats. */
    b = out_new(sizeof(moe_0_1_0_arena_stats));
    CHECK_STATUS(moe_context_get_arena_stats(ctx, (moe_arena_stats *)(void *)b.p), MOE_OK);
    moe_arena_stats stats = {.struct_size = sizeof stats};
    CHECK_STATUS(moe_context_get_arena_stats(ctx, &stats), MOE_OK);
    CHECK(tail_untouched(&b) && !memcmp(b.p + sizeof(size_t), (const unsigned char *)&stats + sizeof(size_t),
                                        sizeof(moe_0_1_0_arena_stats) - sizeof(size_t)),
          "arena stats: 0.1.0 caller");
    free(b.p);

    /* Cache info. */
    b = out_new(sizeof(moe_0_1_0_cache_info));
    CHECK_STATUS(moe_get_cache_info((moe_cache_info *)(void *)b.p), MOE_OK);
    CHECK(tail_untouched(&b), "cache info: written past a 0.1.0 struct_size");
    free(b.p);

    /* Refusals: newer (larger) and never-existing (smaller) sizes, outputs untouched. */
    b = out_new(sizeof(moe_device_info) + 8);
    expect_refused(moe_device_get_info(kind, 0, (moe_device_info *)(void *)b.p), &b, "newer",
                   "device info from a newer moe.h");
    expect_refused(moe_context_get_device_info(ctx, (moe_device_info *)(void *)b.p), &b, "newer",
                   "context device info from a newer moe.h");
    free(b.p);
    b = out_new(sizeof(moe_arena_stats) + 8);
    expect_refused(moe_context_get_arena_stats(ctx, (moe_arena_stats *)(void *)b.p), &b, "newer",
                   "arena stats from a newer moe.h");
    free(b.p);
    b = out_new(sizeof(moe_cache_info) + 8);
    expect_refused(moe_get_cache_info((moe_cache_info *)(void *)b.p), &b, "newer",
                   "cache info from a newer moe.h");
    free(b.p);
    b = out_new(sizeof(size_t) + 4);
    expect_refused(moe_device_get_info(kind, 0, (moe_device_info *)(void *)b.p), &b, "smaller",
                   "device info smaller than any release");
    free(b.p);
}

/* A layer from 0.1.0 desc and weights against today's structs: the same output, bit for bit. */
static void layers(moe_backend_kind kind, moe_context *ctx, h_rng *rng)
{
    const moe_layer_desc desc = {.struct_size = sizeof desc,
                                 .d_model = 40,
                                 .d_ff = 24,
                                 .n_experts = 6,
                                 .top_k = 2,
                                 .activation = MOE_ACTIVATION_SWIGLU,
                                 .score_func = MOE_SCORE_SOFTMAX,
                                 .renormalize = 1,
                                 .max_tokens = 16};
    h_layer l;
    h_layer_init(&l, &desc, rng, 1.0f);
    const int64_t T = 7;
    float *x = malloc(sizeof(float) * (size_t)(T * desc.d_model));
    float *y_now = malloc(sizeof(float) * (size_t)(T * desc.d_model));
    float *y_old = malloc(sizeof(float) * (size_t)(T * desc.d_model));
    float *y_ref = malloc(sizeof(float) * (size_t)(T * desc.d_model));
    int32_t ids_now[7 * 2], ids_old[7 * 2];
    h_fill_input(&l, T, x, rng);

    moe_0_1_0_layer_desc old_desc;
    memcpy(&old_desc, &l.desc, sizeof old_desc); /* the 0.1.0 fields are today's prefix */
    old_desc.struct_size = sizeof old_desc;
    const moe_0_1_0_layer_weights old_w = {
        .struct_size = sizeof old_w, .router = l.router, .gate = l.gate, .up = l.up, .down = l.down};

    moe_layer *now = NULL, *old = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &l.desc, &l.w, &now), MOE_OK);
    CHECK_STATUS(moe_layer_create(ctx, (const moe_layer_desc *)(const void *)&old_desc,
                                  (const moe_layer_weights *)(const void *)&old_w, &old),
                 MOE_OK);
    moe_forward_stats st_now = {.struct_size = sizeof st_now, .topk_ids = ids_now};
    moe_0_1_0_forward_stats st_old = {.struct_size = sizeof st_old, .topk_ids = ids_old};
    if (now && old) {
        CHECK_STATUS(moe_layer_forward(now, T, x, y_now, &st_now), MOE_OK);
        CHECK_STATUS(moe_layer_forward(old, T, x, y_old, (moe_forward_stats *)(void *)&st_old), MOE_OK);
        CHECK(!memcmp(y_now, y_old, sizeof(float) * (size_t)(T * desc.d_model)) &&
                  !memcmp(ids_now, ids_old, sizeof ids_now),
              "%s: a layer from 0.1.0 structs differs from today's", moe_backend_name(kind));
    }
    CHECK_STATUS(moe_reference_forward((const moe_layer_desc *)(const void *)&old_desc,
                                       (const moe_layer_weights *)(const void *)&old_w, T, x, y_ref, NULL),
                 MOE_OK);
    CHECK_STATUS(moe_reference_forward(&l.desc, &l.w, T, x, y_old, NULL), MOE_OK);
    CHECK(!memcmp(y_ref, y_old, sizeof(float) * (size_t)(T * desc.d_model)),
          "the reference from 0.1.0 structs differs from today's");

    /* Refusals of input structs from a newer moe.h, and of sizes no release had. */
    moe_layer *never = NULL;
    moe_layer_desc big = l.desc;
    big.struct_size = sizeof big + 8;
    expect_refused(moe_layer_create(ctx, &big, &l.w, &never), NULL, "newer", "layer desc from a newer moe.h");
    moe_layer_weights wbig = l.w;
    wbig.struct_size = sizeof wbig + 8;
    expect_refused(moe_layer_create(ctx, &l.desc, &wbig, &never), NULL, "newer",
                   "weights from a newer moe.h");
    wbig.struct_size = sizeof(size_t) + 8;
    expect_refused(moe_layer_create(ctx, &l.desc, &wbig, &never), NULL, "smaller",
                   "weights smaller than any release");
    CHECK(never == NULL, "a refused layer was written");
    moe_forward_stats sbig = {.struct_size = sizeof sbig + 8};
    if (now)
        expect_refused(moe_layer_forward(now, T, x, y_now, &sbig), NULL, "newer", "stats from a newer moe.h");
    moe_context_desc cbig = {.struct_size = sizeof cbig + 8, .backend = kind};
    moe_context *cnever = NULL;
    expect_refused(moe_context_create(&cbig, &cnever), NULL, "newer", "context desc from a newer moe.h");
    CHECK(cnever == NULL, "a refused context was written");
    const moe_0_1_0_context_desc cold = {.struct_size = sizeof cold, .backend = kind};
    CHECK_STATUS(moe_context_create((const moe_context_desc *)(const void *)&cold, &cnever), MOE_OK);
    moe_context_destroy(cnever);
    /* A 0.3.0 caller's desc ends at device_types: whatever follows it in memory (here a pointer
     * that is not a device) is not read as external_device. */
    struct {
        moe_context_desc d;
        char after[64];
    } c030;
    memset(&c030, 0x5a, sizeof c030);
    memset(&c030.d, 0, offsetof(moe_context_desc, external_device));
    c030.d.struct_size = offsetof(moe_context_desc, external_device);
    c030.d.backend = kind;
    cnever = NULL;
    CHECK_STATUS(moe_context_create(&c030.d, &cnever), MOE_OK);
    CHECK(cnever != NULL && moe_context_backend(cnever) == kind, "a 0.3.0 context desc");
    moe_context_destroy(cnever);

    moe_layer_destroy(now);
    moe_layer_destroy(old);
    h_layer_free(&l);
    free(x);
    free(y_now);
    free(y_old);
    free(y_ref);
}

/* A 0.3.0/0.4.0 caller (struct_size ends at activation_dtype): a down_weight_dtype past its size
 * is not read, so the down projection takes weight_dtype's format — bit-identical to today's
 * desc leaving it DEFAULT — while today's desc naming Q8_0 gets another result. */
static void desc_0_3_0(moe_backend_kind kind, moe_context *ctx, h_rng *rng)
{
    const moe_layer_desc desc = {.struct_size = sizeof desc,
                                 .d_model = 64,
                                 .d_ff = 64,
                                 .n_experts = 4,
                                 .top_k = 2,
                                 .max_tokens = 8,
                                 .weight_dtype = MOE_DTYPE_Q4_0};
    h_layer l;
    h_layer_init(&l, &desc, rng, 1.0f);
    const int64_t T = 5, TD = T * desc.d_model;
    float *x = malloc(sizeof(float) * (size_t)TD), *y[3];
    for (int i = 0; i < 3; i++) y[i] = malloc(sizeof(float) * (size_t)TD);
    h_fill_input(&l, T, x, rng);
    moe_layer_desc d[3] = {l.desc, l.desc, l.desc}; /* 0.3.0-sized, today's DEFAULT, today's Q8_0 */
    d[0].struct_size = offsetof(moe_layer_desc, activation_dtype) + sizeof(moe_dtype);
    d[0].down_weight_dtype = MOE_DTYPE_Q8_0;
    d[1].down_weight_dtype = MOE_DTYPE_DEFAULT;
    d[2].down_weight_dtype = MOE_DTYPE_Q8_0;
    for (int i = 0; i < 3; i++) {
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &d[i], &l.w, &layer), MOE_OK);
        if (layer) CHECK_STATUS(moe_layer_forward(layer, T, x, y[i], NULL), MOE_OK);
        moe_layer_destroy(layer);
    }
    CHECK(!memcmp(y[0], y[1], sizeof(float) * (size_t)TD),
          "%s: a 0.3.0 desc's down_weight_dtype, past its size, was read", moe_backend_name(kind));
    CHECK(memcmp(y[1], y[2], sizeof(float) * (size_t)TD) != 0, "%s: down_weight_dtype Q8_0 changed nothing",
          moe_backend_name(kind));
    for (int i = 0; i < 3; i++) free(y[i]);
    free(x);
    h_layer_free(&l);
}

/* A 0.2.0 caller: its sizeof ends in 4 bytes of tail padding after shared_weight_dtype, where
 * 0.3.0 has reserved_0_3_0. Garbage there, and a Q8_0 activation_dtype past its size, are not
 * read: the layer runs float activations, bit-identical to today's desc saying F32 — while
 * today's desc saying Q8_0 gets integer activations where the backend has them. */
static void desc_0_2_0(moe_backend_kind kind, moe_context *ctx, h_rng *rng)
{
    const moe_layer_desc desc = {.struct_size = sizeof desc,
                                 .d_model = 64,
                                 .d_ff = 32,
                                 .n_experts = 4,
                                 .top_k = 2,
                                 .max_tokens = 8,
                                 .weight_dtype = MOE_DTYPE_Q4_0};
    h_layer l;
    h_layer_init(&l, &desc, rng, 1.0f);
    const int64_t T = 5, TD = T * desc.d_model;
    float *x = malloc(sizeof(float) * (size_t)TD), *y_now = malloc(sizeof(float) * (size_t)TD),
          *y_old = malloc(sizeof(float) * (size_t)TD);
    h_fill_input(&l, T, x, rng);
    const size_t end_020 = offsetof(moe_layer_desc, shared_weight_dtype) + sizeof(moe_dtype);
    const size_t align = _Alignof(moe_layer_desc), size_020 = (end_020 + align - 1) / align * align;
    moe_layer_desc old = l.desc;
    old.struct_size = size_020;
    memset((char *)&old + end_020, 0xa5, size_020 - end_020);
    old.activation_dtype = MOE_DTYPE_Q8_0;
    moe_layer_desc now = l.desc, asked = l.desc;
    now.activation_dtype = MOE_DTYPE_F32;
    asked.activation_dtype = MOE_DTYPE_Q8_0;
    moe_layer *lo = NULL, *ln = NULL, *la = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &old, &l.w, &lo), MOE_OK);
    CHECK_STATUS(moe_layer_create(ctx, &now, &l.w, &ln), MOE_OK);
    CHECK_STATUS(moe_layer_create(ctx, &asked, &l.w, &la), MOE_OK);
    if (lo && ln && la) {
        CHECK(moe_layer_activation_dtype(lo) == MOE_DTYPE_F32,
              "%s: a 0.2.0 desc's padding or the field past "
              "its size was read",
              moe_backend_name(kind));
        CHECK_STATUS(moe_layer_forward(lo, T, x, y_old, NULL), MOE_OK);
        CHECK_STATUS(moe_layer_forward(ln, T, x, y_now, NULL), MOE_OK);
        CHECK(!memcmp(y_now, y_old, sizeof(float) * (size_t)TD),
              "%s: a layer from a 0.2.0 desc differs from "
              "today's",
              moe_backend_name(kind));
        printf("  0.2.0 desc: float activations; today's asking q8_0 runs %s\n",
               moe_dtype_name(moe_layer_activation_dtype(la)));
    }
    moe_layer_destroy(lo);
    moe_layer_destroy(ln);
    moe_layer_destroy(la);
    h_layer_free(&l);
    free(x);
    free(y_now);
    free(y_old);
}

/* A checkpoint through 0.1.0 options and outputs: its own dtype, the 0.1.0 fields filled. */
static void model(moe_context *ctx, const char *dir)
{
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(dir, &m), MOE_OK);
    if (!m) return;
    out_buf b = out_new(sizeof(moe_0_1_0_model_info));
    CHECK_STATUS(moe_model_get_info(m, (moe_model_info *)(void *)b.p), MOE_OK);
    const moe_0_1_0_model_info *info = (const void *)b.p;
    CHECK(tail_untouched(&b) && info->n_moe_layers > 0, "model info: 0.1.0 caller");
    const int64_t layer = info->first_moe_layer;
    free(b.p);

    moe_layer_desc now = {.struct_size = sizeof now};
    CHECK_STATUS(moe_model_layer_desc(m, layer, NULL, &now), MOE_OK);
    const moe_0_1_0_model_layer_options o = {.struct_size = sizeof o, .max_tokens = 8};
    b = out_new(sizeof(moe_0_1_0_layer_desc));
    CHECK_STATUS(moe_model_layer_desc(m, layer, (const moe_model_layer_options *)(const void *)&o,
                                      (moe_layer_desc *)(void *)b.p),
                 MOE_OK);
    const moe_0_1_0_layer_desc *old = (const void *)b.p;
    CHECK(tail_untouched(&b) && old->struct_size == sizeof *old && old->d_model == now.d_model &&
              old->n_experts == now.n_experts && old->max_tokens == 8,
          "model layer desc: 0.1.0 caller");
    free(b.p);

    /* A layer from 0.1.0 options stores what today's default options store (the checkpoint's
     * own dtype): the same weight bytes and the same output. */
    const moe_model_layer_options today = {.struct_size = sizeof today, .max_tokens = 8};
    const moe_model_layer_options *opts[2] = {&today, (const moe_model_layer_options *)(const void *)&o};
    const int64_t T = 5;
    float *x = calloc((size_t)(T * now.d_model), sizeof(float)), *y[2];
    for (int64_t i = 0; i < T * now.d_model; i++) x[i] = (float)((i * 7919) % 97) / 97.0f - 0.5f;
    size_t bytes[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        y[i] = calloc((size_t)(T * now.d_model), sizeof(float));
        moe_arena_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
        CHECK_STATUS(moe_context_get_arena_stats(ctx, &before), MOE_OK);
        moe_layer *l = NULL;
        CHECK_STATUS(moe_model_create_layer(ctx, m, layer, opts[i], &l), MOE_OK);
        CHECK_STATUS(moe_context_get_arena_stats(ctx, &after), MOE_OK);
        bytes[i] = after.weights_bytes - before.weights_bytes;
        if (l) CHECK_STATUS(moe_layer_forward(l, T, x, y[i], NULL), MOE_OK);
        moe_layer_destroy(l);
    }
    CHECK(bytes[0] == bytes[1] && bytes[0] > 0 &&
              !memcmp(y[0], y[1], sizeof(float) * (size_t)(T * now.d_model)),
          "a model layer from 0.1.0 options differs from today's defaults (%zu / %zu weight bytes)", bytes[1],
          bytes[0]);
    free(x);
    free(y[0]);
    free(y[1]);
    moe_layer *l = NULL;
    moe_model_layer_options big = {.struct_size = sizeof big + 8};
    expect_refused(moe_model_create_layer(ctx, m, layer, &big, &l), NULL, "newer",
                   "options from a newer moe.h");
    moe_model_close(m);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_abi BACKEND MODEL_DIR\n");
        return 2;
    }
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc - 1, argv, &kind);
    h_rng rng = h_rng_seeded("test_abi");
    outputs(kind, ctx);
    layers(kind, ctx, &rng);
    desc_0_2_0(kind, ctx, &rng);
    desc_0_3_0(kind, ctx, &rng);
    model(ctx, argv[2]);
    moe_context_destroy(ctx);
    return h_finish("abi");
}
