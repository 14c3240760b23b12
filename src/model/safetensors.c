/*
 * safetensors.c — the safetensors container: an 8-byte little-endian header length, a UTF-8
 * JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the tensors' bytes. A file is opened through the bounded reader (../file.h: a regular
 * file, never a FIFO or device), mapped read-only (read into memory where mapping is not
 * available), and every claim of its header is checked before a tensor is handed out: the
 * header length against the file size, offsets in range and not overlapping, byte sizes
 * against shape × dtype, names unique and free of NUL, __metadata__ strings only. Layers then
 * read their weights in place. The loader's bounded whole-file read and its JSON parse (the
 * library's, plus the NUL check) live here too.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif

#include "model_internal.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the header ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    moe_dtype dtype;
    size_t size; /* bytes per element */
} dtypes[] = {
    {"F32", MOE_DTYPE_F32, 4},      {"F16", MOE_DTYPE_F16, 2},         {"BF16", MOE_DTYPE_BF16, 2},
    {"F64", MOE_DTYPE_DEFAULT, 8},  {"I64", MOE_DTYPE_DEFAULT, 8},     {"U64", MOE_DTYPE_DEFAULT, 8},
    {"I32", MOE_DTYPE_DEFAULT, 4},  {"U32", MOE_DTYPE_DEFAULT, 4},     {"I16", MOE_DTYPE_DEFAULT, 2},
    {"U16", MOE_DTYPE_DEFAULT, 2},  {"I8", MOE_DTYPE_DEFAULT, 1},      {"U8", MOE_DTYPE_DEFAULT, 1},
    {"BOOL", MOE_DTYPE_DEFAULT, 1}, {"F8_E4M3", MOE_DTYPE_DEFAULT, 1}, {"F8_E5M2", MOE_DTYPE_DEFAULT, 1},
};

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    const double d = v->valuedouble;
    if (!isfinite(d) || d < 0.0 || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

/* Checks one tensor entry and fills *t (name and dtype_name set by the caller). */
static moe_status parse_entry(moe_context *ctx, const char *path, const cJSON *e, uint64_t data_size,
                              const uint8_t *data, moe_file_tensor *t, moe_file_span *sp)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: header entry '%s' is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has no \"dtype\" string", path, name);
    size_t elem = 0;
    t->dtype = MOE_DTYPE_DEFAULT;
    t->dtype_name = NULL;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dt->valuestring, dtypes[i].name)) {
            t->dtype = dtypes[i].dtype;
            t->dtype_name = dtypes[i].name;
            elem = dtypes[i].size;
        }
    if (!cJSON_IsArray(shape))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has no \"shape\" array", path, name);
    const int n_dims = cJSON_GetArraySize(shape);
    if (n_dims > MOE_ST_MAX_DIMS)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has %d dimensions (at most %d supported)",
                        path, name, n_dims, MOE_ST_MAX_DIMS);
    t->n_dims = n_dims;
    uint64_t count = 1;
    bool overflow = false;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                            path, name, i);
        t->shape[i] = (int64_t)v;
        if (v != 0 && count > UINT64_MAX / v)
            overflow = true;
        else
            count *= v;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has no \"data_offsets\" [begin, end]", path,
                        name);
    uint64_t begin, end;
    if (!json_uint(offs->child, &begin) || !json_uint(offs->child->next, &end))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s': data_offsets are not non-negative integers",
                        path, name);
    if (begin > end || end > data_size)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] are out of range (the data section holds "
                        "%llu bytes; the file may be truncated)",
                        path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)data_size);
    if (elem && (overflow || count > UINT64_MAX / elem || count * elem != end - begin))
        return moe_fail(
            ctx, MOE_ERROR_FORMAT,
            "%s: tensor '%s': data_offsets span %llu bytes, but its shape and dtype %s need %s%llu", path,
            name, (unsigned long long)(end - begin), t->dtype_name, overflow ? "more than " : "",
            overflow ? (unsigned long long)UINT64_MAX : (unsigned long long)(count * elem));
    t->data = data + begin;
    t->bytes = (size_t)(end - begin);
    *sp = (moe_file_span){begin, end, name};
    return MOE_OK;
}

/* The format's __metadata__ is a map of strings to strings (safetensors refuses anything
 * else); a header that breaks that is not one the Python writer made. */
static moe_status check_metadata(moe_context *ctx, const char *path, const cJSON *meta)
{
    if (!cJSON_IsObject(meta))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: \"__metadata__\" is not an object of strings", path);
    for (const cJSON *v = meta->child; v; v = v->next)
        if (!cJSON_IsString(v))
            return moe_fail(
                ctx, MOE_ERROR_FORMAT,
                "%s: \"__metadata__\" value of '%s' is not a string (the format allows only strings)", path,
                v->string);
    return MOE_OK;
}

moe_status moe_st_parse(moe_context *ctx, const char *path, const uint8_t *bytes, size_t size,
                        moe_tensor_file *out)
{
    memset(out, 0, sizeof *out);
    if (size < 8)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: %zu bytes, shorter than the 8-byte header length (truncated?)", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    if (n > size - 8)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes; truncated or not a "
                        "safetensors file)",
                        path, (unsigned long long)n, size);
    if (n > MOE_ST_MAX_HEADER)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: header length %llu is over the format's limit of %llu bytes", path,
                        (unsigned long long)n, (unsigned long long)MOE_ST_MAX_HEADER);
    const char *hdr = (const char *)bytes + 8;
    char what[1100];
    snprintf(what, sizeof what, "%s: the JSON header", path);
    cJSON *root = NULL;
    moe_status st = moe_json_parse(ctx, what, hdr, (size_t)n, &root);
    if (st != MOE_OK) return st;
    if (st == MOE_OK && !cJSON_IsObject(root))
        st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the header is not a JSON object", path);
    if (st != MOE_OK) {
        cJSON_Delete(root);
        return st;
    }

    const uint64_t data_size = (uint64_t)size - 8 - n;
    const uint8_t *data = bytes + 8 + n;
    size_t count = 0, pool = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        count++;
        pool += strlen(e->string) + 1;
    }
    moe_file_tensor *t = moe_calloc(count ? count : 1, sizeof *t);
    moe_file_span *spans = moe_calloc(count ? count : 1, sizeof *spans);
    char *names = moe_malloc(pool ? pool : 1);
    out->path = moe_malloc(strlen(path) + 1);
    if (!t || !spans || !names || !out->path) {
        st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory for %zu tensors", path, count);
    } else {
        strcpy(out->path, path);
    }
    size_t i = 0, at = 0;
    for (const cJSON *e = root->child; e && st == MOE_OK; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            st = check_metadata(ctx, path, e);
            continue;
        }
        st = parse_entry(ctx, path, e, data_size, data, &t[i], &spans[i]);
        const size_t len = strlen(e->string) + 1;
        memcpy(names + at, e->string, len);
        t[i].name = names + at;
        spans[i].name = t[i].name;
        if (!t[i].dtype_name) { /* an unknown dtype: keep its spelling for messages */
            t[i].dtype_name = "unknown";
        }
        at += len;
        i++;
    }
    cJSON_Delete(root);
    if (st == MOE_OK) st = moe_check_spans(ctx, path, spans, count);
    if (st == MOE_OK) st = moe_sort_tensors(ctx, path, t, count);
    moe_free(spans);
    if (st != MOE_OK) {
        moe_free(t);
        moe_free(names);
        moe_free(out->path);
        memset(out, 0, sizeof *out);
        return st;
    }
    out->tensors = t;
    out->n_tensors = count;
    out->names = names;
    return MOE_OK;
}

/* ---- files and JSON ---------------------------------------------------------------------- */

moe_status moe_read_file(moe_context *ctx, const char *path, uint64_t limit, const char *what, uint8_t **out,
                         size_t *size)
{
    char err[MOE_ERROR_MAX];
    const moe_file_error e =
        moe_file_read_all(path, limit, what, moe_malloc, moe_free, out, size, err, sizeof err);
    return e == MOE_FILE_OK ? MOE_OK : moe_fail(ctx, moe_file_status(e), "%s", err);
}

moe_status moe_file_status(moe_file_error e)
{
    switch (e) {
    case MOE_FILE_OK:
        return MOE_OK;
    case MOE_FILE_TOO_LARGE:
        return MOE_ERROR_FORMAT;
    case MOE_FILE_NO_MEMORY:
        return MOE_ERROR_OUT_OF_MEMORY;
    default:
        return MOE_ERROR_IO;
    }
}

moe_status moe_st_open(moe_context *ctx, const char *path, moe_tensor_file *out)
{
    return moe_tensor_file_open(ctx, path, "a safetensors file", moe_st_parse, out);
}
