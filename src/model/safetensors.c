/*
 * safetensors.c — the safetensors container: an 8-byte little-endian header length, a UTF-8
 * JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the tensors' bytes. A file is mapped read-only (read into memory where mapping is not
 * available) and every claim of its header is checked before a tensor is handed out: the
 * header length against the file size, offsets in range and not overlapping, byte sizes
 * against shape × dtype, names unique. Layers then read their weights in place.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif

#include "model_internal.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

bool moe_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1fu, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0fu, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (size_t j = 1; j < len; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

/* ---- the header ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    moe_st_dtype dtype;
    size_t size; /* bytes per element */
} dtypes[] = {
    {"F32", MOE_ST_F32, 4},      {"F16", MOE_ST_F16, 2},     {"BF16", MOE_ST_BF16, 2},
    {"F64", MOE_ST_OTHER, 8},    {"I64", MOE_ST_OTHER, 8},   {"U64", MOE_ST_OTHER, 8},
    {"I32", MOE_ST_OTHER, 4},    {"U32", MOE_ST_OTHER, 4},   {"I16", MOE_ST_OTHER, 2},
    {"U16", MOE_ST_OTHER, 2},    {"I8", MOE_ST_OTHER, 1},    {"U8", MOE_ST_OTHER, 1},
    {"BOOL", MOE_ST_OTHER, 1},   {"F8_E4M3", MOE_ST_OTHER, 1}, {"F8_E5M2", MOE_ST_OTHER, 1},
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

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const moe_st_tensor *)a)->name, ((const moe_st_tensor *)b)->name);
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_by_begin(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

/* Checks one tensor entry and fills *t (name and dtype_name set by the caller). */
static moe_status parse_entry(moe_context *ctx, const char *path, const cJSON *e, uint64_t data_size,
                              const uint8_t *data, moe_st_tensor *t, span *sp)
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
    t->dtype = MOE_ST_OTHER;
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
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has %d dimensions (at most %d supported)", path,
                        name, n_dims, MOE_ST_MAX_DIMS);
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
        if (v != 0 && count > UINT64_MAX / v) overflow = true;
        else count *= v;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has no \"data_offsets\" [begin, end]", path, name);
    uint64_t begin, end;
    if (!json_uint(offs->child, &begin) || !json_uint(offs->child->next, &end))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s': data_offsets are not non-negative integers", path,
                        name);
    if (begin > end || end > data_size)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] are out of range (the data section holds "
                        "%llu bytes; the file may be truncated)",
                        path, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)data_size);
    if (elem && (overflow || count > UINT64_MAX / elem || count * elem != end - begin))
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: tensor '%s': data_offsets span %llu bytes, but its shape and dtype %s need %s%llu",
                        path, name, (unsigned long long)(end - begin), t->dtype_name, overflow ? "more than " : "",
                        overflow ? (unsigned long long)UINT64_MAX : (unsigned long long)(count * elem));
    t->data = data + begin;
    t->bytes = (size_t)(end - begin);
    *sp = (span){begin, end, name};
    return MOE_OK;
}

moe_status moe_st_parse(moe_context *ctx, const char *path, const uint8_t *bytes, size_t size, moe_st_file *out)
{
    memset(out, 0, sizeof *out);
    if (size < 8)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: %zu bytes, shorter than the 8-byte header length (truncated?)",
                        path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | bytes[i];
    if (n > size - 8)
        return moe_fail(ctx, MOE_ERROR_FORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes; truncated or not a "
                        "safetensors file)",
                        path, (unsigned long long)n, size);
    if (n > MOE_ST_MAX_HEADER)
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: header length %llu is over the format's limit of %llu bytes",
                        path, (unsigned long long)n, (unsigned long long)MOE_ST_MAX_HEADER);
    const char *hdr = (const char *)bytes + 8;
    if (!moe_utf8_valid((const uint8_t *)hdr, (size_t)n))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the JSON header is not valid UTF-8", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (!root) {
        const size_t at = end && end >= hdr && end <= hdr + n ? (size_t)(end - hdr) : 0;
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the header is not valid JSON (near byte %zu of %llu)", path,
                        at, (unsigned long long)n);
    }
    moe_status st = MOE_OK;
    for (const char *p = end; p < hdr + n && st == MOE_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the header has bytes after its JSON object (at byte %zu)",
                          path, (size_t)(p - hdr));
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
    moe_st_tensor *t = calloc(count ? count : 1, sizeof *t);
    span *spans = calloc(count ? count : 1, sizeof *spans);
    char *names = malloc(pool ? pool : 1);
    out->path = malloc(strlen(path) + 1);
    if (!t || !spans || !names || !out->path) {
        st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory for %zu tensors", path, count);
    } else {
        strcpy(out->path, path);
    }
    size_t i = 0, at = 0;
    for (const cJSON *e = root->child; e && st == MOE_OK; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e))
                st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: \"__metadata__\" is not an object", path);
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
    if (st == MOE_OK) {
        qsort(spans, count, sizeof *spans, cmp_by_begin);
        for (size_t j = 1; j < count && st == MOE_OK; j++)
            if (spans[j].begin < spans[j - 1].end)
                st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                              path, spans[j - 1].name, (unsigned long long)spans[j - 1].begin,
                              (unsigned long long)spans[j - 1].end, spans[j].name,
                              (unsigned long long)spans[j].begin, (unsigned long long)spans[j].end);
    }
    if (st == MOE_OK) {
        qsort(t, count, sizeof *t, cmp_by_name);
        for (size_t j = 1; j < count && st == MOE_OK; j++)
            if (!strcmp(t[j].name, t[j - 1].name))
                st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' appears twice in the header", path, t[j].name);
    }
    free(spans);
    if (st != MOE_OK) {
        free(t);
        free(names);
        free(out->path);
        memset(out, 0, sizeof *out);
        return st;
    }
    out->tensors = t;
    out->n_tensors = count;
    out->names = names;
    return MOE_OK;
}

const moe_st_tensor *moe_st_find(const moe_st_file *f, const char *name)
{
    const moe_st_tensor key = {.name = name};
    return f->n_tensors ? bsearch(&key, f->tensors, f->n_tensors, sizeof key, cmp_by_name) : NULL;
}

/* ---- files ------------------------------------------------------------------------------------ */

/* Reads the whole file into malloc'd memory: config files, and safetensors files where
 * mapping is unavailable. */
moe_status moe_read_file(moe_context *ctx, const char *path, uint8_t **out, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return moe_fail(ctx, MOE_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        uint8_t *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    const bool bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return moe_fail(ctx, buf ? MOE_ERROR_IO : MOE_ERROR_OUT_OF_MEMORY, "%s: cannot read the file", path);
    }
    *out = buf;
    *size = n;
    return MOE_OK;
}

moe_status moe_st_open(moe_context *ctx, const char *path, moe_st_file *out)
{
    uint8_t *bytes = NULL;
    size_t size = 0;
    void *map = NULL;
#if !defined(_WIN32)
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return moe_fail(ctx, MOE_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return moe_fail(ctx, MOE_ERROR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return moe_fail(ctx, MOE_ERROR_IO, "%s: too large to map on this platform", path);
    }
    size = (size_t)sb.st_size;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) map = NULL;
    }
    close(fd);
    bytes = map;
#endif
    if (!map) { /* no mmap here (or it failed): read the file instead */
        moe_status st = moe_read_file(ctx, path, &bytes, &size);
        if (st != MOE_OK) return st;
    }
    moe_status st = moe_st_parse(ctx, path, bytes, size, out);
    if (st != MOE_OK) {
#if !defined(_WIN32)
        if (map) munmap(map, size);
        else
#endif
            free(bytes);
        return st;
    }
    out->map = map ? map : (void *)bytes;
    out->map_bytes = map ? size : 0; /* 0: malloc'd, freed rather than unmapped */
    return MOE_OK;
}

void moe_st_close(moe_st_file *f)
{
    if (!f) return;
#if !defined(_WIN32)
    if (f->map && f->map_bytes) munmap(f->map, f->map_bytes);
    else
#endif
        free(f->map);
    free(f->tensors);
    free(f->names);
    free(f->path);
    memset(f, 0, sizeof *f);
}
