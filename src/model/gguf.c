/*
 * gguf.c — the GGUF container (llama.cpp's model files), versions 2 and 3, little-endian:
 *
 *   "GGUF", uint32 version, uint64 n_tensors, uint64 n_kv,
 *   n_kv × (string key, int32 type, value),
 *   n_tensors × (string name, uint32 n_dims, uint64 ne[n_dims], int32 ggml type, uint64 offset),
 *   padding to general.alignment (default 32), the data section.
 *
 * A string is a uint64 length and that many bytes (no NUL); an array an int32 element type, a
 * uint64 count and the elements. Like the safetensors reader, every claim is checked before
 * anything is sized by it: counts and lengths against the bytes left in the file (so a forged
 * count cannot make us allocate), types against the known ones, tensor offsets aligned, inside
 * the file and not overlapping, byte sizes without overflow, names and keys unique and free of
 * NUL. ggml's reader (ggml/src/gguf.cpp) makes the same checks; we accept any offsets that are
 * aligned and disjoint, where ggml also wants them packed in file order, since nothing here
 * depends on the packing.
 *
 * The ggml types the layer reads (F32, F16, BF16, Q8_0, Q4_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4) become
 * their moe_dtype; the other known types keep their name, block and size, so a file that has them still
 * parses (its other tensors are usable) and a layer that needs one says which type it met.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif

#include "model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4  /* ggml's GGML_MAX_DIMS */
#define GGUF_MAX_NAME          64 /* ggml's GGML_MAX_NAME: a name has at most 63 bytes */

/* ggml's type ids (ggml.h), with the values per block and bytes per block; ids ggml removed
 * are absent, so a file that has one is refused as it is by ggml. */
typedef struct ggml_type_info {
    int id;
    const char *name;
    int64_t block;
    size_t size;
    moe_dtype dtype; /* DEFAULT: known, not read by the layer */
} ggml_type_info;

/* clang-format off */
static const ggml_type_info ggml_types[] = {
    {0, "F32", 1, 4, MOE_DTYPE_F32},       {1, "F16", 1, 2, MOE_DTYPE_F16},
    {2, "Q4_0", 32, 18, MOE_DTYPE_Q4_0},   {3, "Q4_1", 32, 20, MOE_DTYPE_DEFAULT},
    {6, "Q5_0", 32, 22, MOE_DTYPE_DEFAULT}, {7, "Q5_1", 32, 24, MOE_DTYPE_DEFAULT},
    {8, "Q8_0", 32, 34, MOE_DTYPE_Q8_0},   {9, "Q8_1", 32, 36, MOE_DTYPE_DEFAULT},
    {10, "Q2_K", 256, 84, MOE_DTYPE_Q2_K}, {11, "Q3_K", 256, 110, MOE_DTYPE_Q3_K},
    {12, "Q4_K", 256, 144, MOE_DTYPE_Q4_K}, {13, "Q5_K", 256, 176, MOE_DTYPE_Q5_K},
    {14, "Q6_K", 256, 210, MOE_DTYPE_Q6_K}, {15, "Q8_K", 256, 292, MOE_DTYPE_DEFAULT},
    {16, "IQ2_XXS", 256, 66, MOE_DTYPE_DEFAULT}, {17, "IQ2_XS", 256, 74, MOE_DTYPE_DEFAULT},
    {18, "IQ3_XXS", 256, 98, MOE_DTYPE_DEFAULT}, {19, "IQ1_S", 256, 50, MOE_DTYPE_DEFAULT},
    {20, "IQ4_NL", 32, 18, MOE_DTYPE_DEFAULT}, {21, "IQ3_S", 256, 110, MOE_DTYPE_DEFAULT},
    {22, "IQ2_S", 256, 82, MOE_DTYPE_DEFAULT}, {23, "IQ4_XS", 256, 136, MOE_DTYPE_DEFAULT},
    {24, "I8", 1, 1, MOE_DTYPE_DEFAULT},   {25, "I16", 1, 2, MOE_DTYPE_DEFAULT},
    {26, "I32", 1, 4, MOE_DTYPE_DEFAULT},  {27, "I64", 1, 8, MOE_DTYPE_DEFAULT},
    {28, "F64", 1, 8, MOE_DTYPE_DEFAULT},  {29, "IQ1_M", 256, 56, MOE_DTYPE_DEFAULT},
    {30, "BF16", 1, 2, MOE_DTYPE_BF16},    {34, "TQ1_0", 256, 54, MOE_DTYPE_DEFAULT},
    {35, "TQ2_0", 256, 66, MOE_DTYPE_DEFAULT}, {39, "MXFP4", 32, 17, MOE_DTYPE_MXFP4},
};
/* clang-format on */

static const ggml_type_info *ggml_type(int32_t id)
{
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].id == id) return &ggml_types[i];
    return NULL;
}

/* Bytes of one value of each scalar kv type (0: string / array). */
static const size_t kv_size[MOE_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *moe_gguf_type_name(moe_gguf_type t)
{
    static const char *const names[MOE_GGUF_TYPE_COUNT] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                                           "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                                           "UINT64", "INT64",   "FLOAT64"};
    return (unsigned)t < MOE_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

static bool gguf_magic(const uint8_t *bytes, size_t size)
{
    return size >= 4 && !memcmp(bytes, "GGUF", 4);
}

/* ---- a bounds-checked cursor over the header ------------------------------------------------ */

typedef struct cursor {
    moe_context *ctx;
    const char *path;
    const uint8_t *p;
    size_t size, at;
    moe_status st;
} cursor;

static uint64_t rd_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static size_t left(const cursor *c)
{
    return c->size - c->at;
}

/* n bytes at the cursor, advancing; NULL (and a message saying what was being read) past the end. */
static const uint8_t *take(cursor *c, uint64_t n, const char *what)
{
    if (c->st != MOE_OK) return NULL;
    if (n > left(c)) {
        c->st =
            moe_fail(c->ctx, MOE_ERROR_FORMAT,
                     "%s: the header ends inside %s (at byte %zu of %zu; the file is truncated or not GGUF)",
                     c->path, what, c->at, c->size);
        return NULL;
    }
    const uint8_t *p = c->p + c->at;
    c->at += (size_t)n;
    return p;
}

static uint64_t take_u(cursor *c, int n, const char *what)
{
    const uint8_t *p = take(c, (uint64_t)n, what);
    return p ? rd_le(p, n) : 0;
}

/* A string: *len bytes at the returned pointer. */
static const uint8_t *take_string(cursor *c, uint64_t *len, const char *what)
{
    *len = take_u(c, 8, what);
    return take(c, *len, what);
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const moe_gguf_kv *)a)->key, ((const moe_gguf_kv *)b)->key);
}

/* Names and keys are copied NUL-terminated into one pool. The parser walks the header twice:
 * first measuring (each string only checked, and kept in `scratch` for messages), then storing,
 * so the pool and the tables are sized by the header itself — never by the file, whose data
 * section may be far larger than memory (a 40 GB model is mapped, not read). */
typedef struct pool {
    bool measure;
    size_t need; /* bytes the strings take, measured */
    char *at;    /* where the next string goes, storing */
    char scratch[256];
} pool;

/* A header string as a C string; refuses an empty one or one with a NUL. */
static const char *pool_string(cursor *c, pool *p, const uint8_t *s, uint64_t len, const char *what,
                               size_t index)
{
    if (c->st != MOE_OK) return NULL;
    if (len == 0 || memchr(s, 0, (size_t)len)) {
        c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: %s %zu is %s", c->path, what, index,
                         len == 0 ? "empty" : "not a text string (it holds a NUL byte)");
        return NULL;
    }
    if (p->measure) {
        p->need += (size_t)len + 1;
        const size_t n = len < sizeof p->scratch ? (size_t)len : sizeof p->scratch - 1;
        memcpy(p->scratch, s, n);
        p->scratch[n] = '\0';
        return p->scratch;
    }
    char *out = p->at;
    memcpy(out, s, (size_t)len);
    out[len] = '\0';
    p->at += len + 1;
    return out;
}

/* Reads one key's value (type already read), leaving kv->val/n/elem_type set. */
static void read_value(cursor *c, moe_gguf_kv *kv)
{
    char what[160];
    snprintf(what, sizeof what, "the value of key '%s'", kv->key);
    if ((unsigned)kv->type >= MOE_GGUF_TYPE_COUNT) {
        c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: key '%s' has unknown value type %d", c->path, kv->key,
                         (int)kv->type);
        return;
    }
    if (kv->type == MOE_GGUF_STRING) {
        kv->val = take_string(c, &kv->n, what);
        return;
    }
    if (kv->type != MOE_GGUF_ARRAY) {
        kv->n = 1;
        kv->val = take(c, kv_size[kv->type], what);
        return;
    }
    const uint32_t et = (uint32_t)take_u(c, 4, what);
    kv->n = take_u(c, 8, what);
    if (c->st != MOE_OK) return;
    if (et >= MOE_GGUF_TYPE_COUNT || et == MOE_GGUF_ARRAY) {
        c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: key '%s' is an array of %s (%u)", c->path, kv->key,
                         et == MOE_GGUF_ARRAY ? "arrays, which GGUF does not allow" : "an unknown type", et);
        return;
    }
    kv->elem_type = (moe_gguf_type)et;
    kv->val = c->p + c->at;
    if (et != MOE_GGUF_STRING) {
        if (kv->n > left(c) / kv_size[et]) { /* before multiplying: n may be forged */
            c->st = moe_fail(
                c->ctx, MOE_ERROR_FORMAT,
                "%s: key '%s' claims %llu elements of %s, more than the %zu bytes left in the file", c->path,
                kv->key, (unsigned long long)kv->n, moe_gguf_type_name(kv->elem_type), left(c));
            return;
        }
        (void)take(c, kv->n * kv_size[et], what);
        return;
    }
    if (kv->n > left(c) / 8) {
        c->st =
            moe_fail(c->ctx, MOE_ERROR_FORMAT,
                     "%s: key '%s' claims %llu strings, more than the %zu bytes left in the file could hold",
                     c->path, kv->key, (unsigned long long)kv->n, left(c));
        return;
    }
    for (uint64_t i = 0; i < kv->n && c->st == MOE_OK; i++) {
        uint64_t len;
        (void)take_string(c, &len, what);
    }
}

/* Reads one tensor info into *t and its byte span (relative to the data section). */
static void read_tensor(cursor *c, pool *pl, size_t index, moe_file_tensor *t, moe_file_span *sp,
                        uint64_t *offset)
{
    uint64_t len;
    const uint8_t *s = take_string(c, &len, "a tensor name");
    if (c->st != MOE_OK) return;
    if (len >= GGUF_MAX_NAME) {
        c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: tensor %zu's name is %llu bytes long (at most %d)",
                         c->path, index, (unsigned long long)len, GGUF_MAX_NAME - 1);
        return;
    }
    t->name = pool_string(c, pl, s, len, "tensor name", index);
    char what[128];
    snprintf(what, sizeof what, "tensor '%s'", t->name ? t->name : "?");
    const uint32_t n_dims = (uint32_t)take_u(c, 4, what);
    if (c->st != MOE_OK) return;
    if (n_dims > GGUF_MAX_DIMS) {
        c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has %u dimensions (at most %d)", c->path,
                         t->name, n_dims, GGUF_MAX_DIMS);
        return;
    }
    int64_t ne[GGUF_MAX_DIMS] = {1, 1, 1, 1}; /* 0 dimensions: a scalar, as ggml reads it */
    uint64_t count = 1;
    bool overflow = false;
    for (uint32_t i = 0; i < n_dims; i++) {
        const uint64_t v = take_u(c, 8, what);
        if (c->st != MOE_OK) return;
        if (v > (uint64_t)INT64_MAX) {
            c->st =
                moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s': ne[%u] = %llu is negative or too large",
                         c->path, t->name, i, (unsigned long long)v);
            return;
        }
        ne[i] = (int64_t)v;
        if (v != 0 && count > (uint64_t)INT64_MAX / v)
            overflow = true;
        else
            count *= v;
    }
    const int32_t type = (int32_t)(uint32_t)take_u(c, 4, what);
    *offset = take_u(c, 8, what);
    if (c->st != MOE_OK) return;
    const ggml_type_info *ti = ggml_type(type);
    if (!ti) {
        c->st =
            moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has ggml type %d, which ggml does not define",
                     c->path, t->name, (int)type);
        return;
    }
    if (overflow) {
        c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s': its element count overflows 64 bits",
                         c->path, t->name);
        return;
    }
    if (ne[0] % ti->block != 0) {
        c->st =
            moe_fail(c->ctx, MOE_ERROR_FORMAT,
                     "%s: tensor '%s': its rows of %lld values are not a whole number of %s blocks (%lld)",
                     c->path, t->name, (long long)ne[0], ti->name, (long long)ti->block);
        return;
    }
    const uint64_t blocks = count / (uint64_t)ti->block;
    if (blocks > (uint64_t)SIZE_MAX / ti->size) {
        c->st =
            moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s': its byte size overflows", c->path, t->name);
        return;
    }
    t->dtype = ti->dtype;
    t->dtype_name = ti->name;
    t->n_dims = (int)n_dims;
    for (uint32_t i = 0; i < n_dims; i++) t->shape[i] = ne[n_dims - 1 - i]; /* outermost first */
    t->bytes = (size_t)(blocks * ti->size);
    *sp = (moe_file_span){*offset, 0, t->name};
}

/* The keys and tensor infos, from the cursor on; with NULL tables (measuring) into scratch. The
 * alignment general.alignment sets, or the default. */
static uint64_t walk_header(cursor *c, pool *p, uint64_t n_kv, uint64_t n_tensors, moe_gguf_kv *kvs,
                            moe_file_tensor *tensors, moe_file_span *spans, uint64_t *offsets)
{
    uint64_t alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv && c->st == MOE_OK; i++) {
        moe_gguf_kv scratch = {0}, *kv = kvs ? &kvs[i] : &scratch;
        uint64_t len;
        const uint8_t *s = take_string(c, &len, "a key");
        kv->key = pool_string(c, p, s, len, "key", (size_t)i);
        kv->type = (moe_gguf_type)(uint32_t)take_u(c, 4, "a key's type");
        if (c->st == MOE_OK) read_value(c, kv);
        if (c->st == MOE_OK && !strcmp(kv->key, "general.alignment")) {
            if (kv->type != MOE_GGUF_UINT32)
                c->st =
                    moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: general.alignment is %s; GGUF makes it a UINT32",
                             c->path, moe_gguf_type_name(kv->type));
            else if ((alignment = rd_le(kv->val, 4)) == 0 || (alignment & (alignment - 1)))
                c->st = moe_fail(c->ctx, MOE_ERROR_FORMAT, "%s: general.alignment %llu is not a power of two",
                                 c->path, (unsigned long long)alignment);
        }
    }
    for (uint64_t i = 0; i < n_tensors && c->st == MOE_OK; i++) {
        moe_file_tensor ts = {0};
        moe_file_span ss;
        uint64_t os;
        read_tensor(c, p, (size_t)i, tensors ? &tensors[i] : &ts, spans ? &spans[i] : &ss,
                    offsets ? &offsets[i] : &os);
    }
    return alignment;
}

static moe_status fail_free(moe_tensor_file *out, moe_status st)
{
    moe_free(out->tensors);
    moe_free(out->names);
    moe_free(out->kvs);
    moe_free(out->path);
    memset(out, 0, sizeof *out);
    return st;
}

moe_status moe_gguf_parse(moe_context *ctx, const char *path, const uint8_t *bytes, size_t size,
                          moe_tensor_file *out)
{
    memset(out, 0, sizeof *out);
    if (!gguf_magic(bytes, size))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: not a GGUF file (it does not start with \"GGUF\")", path);
    cursor c = {.ctx = ctx, .path = path, .p = bytes, .size = size, .at = 4};
    const uint32_t version = (uint32_t)take_u(&c, 4, "the version");
    const uint64_t n_tensors = take_u(&c, 8, "the tensor count");
    const uint64_t n_kv = take_u(&c, 8, "the key count");
    if (c.st != MOE_OK) return c.st;
    if (version != 2 && version != 3)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: GGUF version %u%s; versions 2 and 3 are supported", path,
                        version,
                        version == 1              ? " (the 2023 format, no longer written by llama.cpp)"
                        : (version & 0xffff) == 0 ? " (a big-endian file, which this reader does not read)"
                                                  : "");
    /* Each key takes at least 13 bytes (length, one character, type) and each tensor info 29,
     * so counts beyond that are forged and refused before anything is allocated for them. */
    if (n_kv > left(&c) / 13 || n_tensors > left(&c) / 29)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: the header claims %llu keys and %llu tensors, more than its %zu bytes can hold "
                        "(the file is truncated, or the counts are wrong)",
                        path, (unsigned long long)n_kv, (unsigned long long)n_tensors, size);
    const size_t header_start = c.at;
    pool p = {.measure = true};
    uint64_t alignment = walk_header(&c, &p, n_kv, n_tensors, NULL, NULL, NULL, NULL);
    if (c.st != MOE_OK) return c.st;
    /* The walk succeeded, so the counts are bounded by the header's bytes, and so is p.need. */
    out->gguf_version = version;
    out->path = moe_malloc(strlen(path) + 1);
    out->names = moe_malloc(p.need + 1);
    out->kvs = moe_calloc(n_kv ? (size_t)n_kv : 1, sizeof *out->kvs);
    out->tensors = moe_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *out->tensors);
    moe_file_span *spans = moe_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *spans);
    uint64_t *offsets = moe_calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *offsets);
    if (!out->path || !out->names || !out->kvs || !out->tensors || !spans || !offsets) {
        moe_free(spans);
        moe_free(offsets);
        return fail_free(out, moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory", path));
    }
    strcpy(out->path, path);
    out->n_kvs = (size_t)n_kv;
    out->n_tensors = (size_t)n_tensors;
    c.at = header_start;
    p = (pool){.at = out->names};
    alignment = walk_header(&c, &p, n_kv, n_tensors, out->kvs, out->tensors, spans, offsets);
    /* The data section starts at the next multiple of the alignment. */
    const uint64_t data_start = ((uint64_t)c.at + alignment - 1) / alignment * alignment;
    if (n_tensors && data_start > size)
        c.st = moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: the data section would start at byte %llu, past the end of the file (%zu bytes; "
                        "truncated)",
                        path, (unsigned long long)data_start, size);
    const uint64_t data_size = data_start <= size ? size - data_start : 0;
    for (size_t i = 0; i < (size_t)n_tensors && c.st == MOE_OK; i++) {
        moe_file_tensor *t = &out->tensors[i];
        const uint64_t off = offsets[i];
        if (off % alignment)
            c.st = moe_fail(ctx, MOE_ERROR_FORMAT,
                            "%s: tensor '%s' starts at offset %llu, not a multiple of the "
                            "alignment %llu",
                            path, t->name, (unsigned long long)off, (unsigned long long)alignment);
        else if (off > data_size || t->bytes > data_size - off)
            c.st =
                moe_fail(ctx, MOE_ERROR_FORMAT,
                         "%s: tensor '%s' (%zu bytes at offset %llu) runs past the end of the data section "
                         "(%llu bytes; the file is truncated)",
                         path, t->name, t->bytes, (unsigned long long)off, (unsigned long long)data_size);
        else {
            t->data = bytes + data_start + off;
            spans[i].end = off + t->bytes;
        }
    }
    if (c.st == MOE_OK) c.st = moe_check_spans(ctx, path, spans, out->n_tensors);
    if (c.st == MOE_OK) {
        qsort(out->kvs, out->n_kvs, sizeof *out->kvs, cmp_kv);
        for (size_t j = 1; j < out->n_kvs && c.st == MOE_OK; j++)
            if (!strcmp(out->kvs[j].key, out->kvs[j - 1].key))
                c.st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: key '%s' appears twice", path, out->kvs[j].key);
    }
    if (c.st == MOE_OK) c.st = moe_sort_tensors(ctx, path, out->tensors, out->n_tensors);
    moe_free(spans);
    moe_free(offsets);
    return c.st == MOE_OK ? MOE_OK : fail_free(out, c.st);
}

moe_status moe_gguf_open(moe_context *ctx, const char *path, moe_tensor_file *out)
{
    return moe_tensor_file_open(ctx, path, "a GGUF file", moe_gguf_parse, out);
}

/* ---- values ----------------------------------------------------------------------------------- */

const moe_gguf_kv *moe_gguf_find(const moe_tensor_file *f, const char *key)
{
    const moe_gguf_kv k = {.key = key};
    return f->n_kvs ? bsearch(&k, f->kvs, f->n_kvs, sizeof k, cmp_kv) : NULL;
}

static moe_status wrong_type(moe_context *ctx, const moe_tensor_file *f, const moe_gguf_kv *kv,
                             const char *want)
{
    return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: key '%s' is %s%s%s; %s expected", f->path, kv->key,
                    moe_gguf_type_name(kv->type), kv->type == MOE_GGUF_ARRAY ? " of " : "",
                    kv->type == MOE_GGUF_ARRAY ? moe_gguf_type_name(kv->elem_type) : "", want);
}

/* A scalar integer value as int64 (signed types sign-extended); false for other types. */
static bool int_value(const moe_gguf_kv *kv, int64_t *v)
{
    switch (kv->type) {
    case MOE_GGUF_UINT8:
    case MOE_GGUF_UINT16:
    case MOE_GGUF_UINT32:
        *v = (int64_t)rd_le(kv->val, (int)kv_size[kv->type]);
        return true;
    case MOE_GGUF_UINT64: {
        const uint64_t u = rd_le(kv->val, 8);
        *v = u > (uint64_t)INT64_MAX ? -1 : (int64_t)u;
        return true;
    }
    case MOE_GGUF_INT8:
        *v = (int8_t)kv->val[0];
        return true;
    case MOE_GGUF_INT16:
        *v = (int16_t)rd_le(kv->val, 2);
        return true;
    case MOE_GGUF_INT32:
        *v = (int32_t)rd_le(kv->val, 4);
        return true;
    case MOE_GGUF_INT64:
        *v = (int64_t)rd_le(kv->val, 8);
        return true;
    default:
        return false;
    }
}

moe_status moe_gguf_get_uint(moe_context *ctx, const moe_tensor_file *f, const char *key, uint64_t *out,
                             bool *found)
{
    const moe_gguf_kv *kv = moe_gguf_find(f, key);
    *out = 0;
    *found = kv != NULL;
    if (!kv) return MOE_OK;
    if (kv->type == MOE_GGUF_UINT64) { /* all of it: int_value would take the top half as negative */
        *out = rd_le(kv->val, 8);
        return MOE_OK;
    }
    int64_t v;
    if (!int_value(kv, &v)) return wrong_type(ctx, f, kv, "an integer");
    if (v < 0)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: key '%s' is %lld; a non-negative integer expected",
                        f->path, key, (long long)v);
    *out = (uint64_t)v;
    return MOE_OK;
}

moe_status moe_gguf_get_float(moe_context *ctx, const moe_tensor_file *f, const char *key, double *out,
                              bool *found)
{
    const moe_gguf_kv *kv = moe_gguf_find(f, key);
    *out = 0;
    *found = kv != NULL;
    if (!kv) return MOE_OK;
    int64_t v;
    if (kv->type == MOE_GGUF_FLOAT32) {
        float x;
        const uint32_t bits = (uint32_t)rd_le(kv->val, 4);
        memcpy(&x, &bits, sizeof x);
        *out = x;
    } else if (kv->type == MOE_GGUF_FLOAT64) {
        const uint64_t bits = rd_le(kv->val, 8);
        memcpy(out, &bits, sizeof *out);
    } else if (int_value(kv, &v)) {
        *out = (double)v;
    } else {
        return wrong_type(ctx, f, kv, "a number");
    }
    return MOE_OK;
}

moe_status moe_gguf_get_bool(moe_context *ctx, const moe_tensor_file *f, const char *key, bool *out,
                             bool *found)
{
    const moe_gguf_kv *kv = moe_gguf_find(f, key);
    *out = false;
    *found = kv != NULL;
    if (!kv) return MOE_OK;
    int64_t v;
    if (kv->type == MOE_GGUF_BOOL)
        *out = kv->val[0] != 0;
    else if (int_value(kv, &v))
        *out = v != 0;
    else
        return wrong_type(ctx, f, kv, "a BOOL");
    return MOE_OK;
}

moe_status moe_gguf_get_string(moe_context *ctx, const moe_tensor_file *f, const char *key, char *out,
                               size_t n, bool *found)
{
    const moe_gguf_kv *kv = moe_gguf_find(f, key);
    if (n) out[0] = '\0';
    *found = kv != NULL;
    if (!kv) return MOE_OK;
    if (kv->type != MOE_GGUF_STRING) return wrong_type(ctx, f, kv, "a STRING");
    const size_t len = kv->n < n ? (size_t)kv->n : n - 1;
    memcpy(out, kv->val, len);
    out[len] = '\0';
    if (memchr(out, 0, len))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: key '%s' holds a NUL byte", f->path, key);
    return MOE_OK;
}
