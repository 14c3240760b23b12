/*
 * tensor_file.c — what the two containers' readers (safetensors.c, gguf.c) share: mapping a
 * file read-only, the checks every tensor table gets (data spans that do not overlap, names
 * sorted and unique), finding a tensor by name, and closing.
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif

#include "model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const moe_file_tensor *)a)->name, ((const moe_file_tensor *)b)->name);
}

static int cmp_by_begin(const void *a, const void *b)
{
    const moe_file_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

moe_status moe_check_spans(moe_context *ctx, const char *path, moe_file_span *spans, size_t n)
{
    if (n == 0) return MOE_OK;
    qsort(spans, n, sizeof *spans, cmp_by_begin);
    const moe_file_span *last = &spans[0]; /* the one reaching furthest so far */
    for (size_t j = 1; j < n; j++) {
        if (spans[j].end == spans[j].begin) continue; /* an empty tensor takes no room */
        if (spans[j].begin < last->end)
            return moe_fail(ctx, MOE_ERROR_FORMAT,
                            "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", path, last->name,
                            (unsigned long long)last->begin, (unsigned long long)last->end, spans[j].name,
                            (unsigned long long)spans[j].begin, (unsigned long long)spans[j].end);
        if (spans[j].end > last->end) last = &spans[j];
    }
    return MOE_OK;
}

moe_status moe_sort_tensors(moe_context *ctx, const char *path, moe_file_tensor *t, size_t n)
{
    qsort(t, n, sizeof *t, cmp_by_name);
    for (size_t j = 1; j < n; j++)
        if (!strcmp(t[j].name, t[j - 1].name))
            return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' appears twice in the header", path,
                            t[j].name);
    return MOE_OK;
}

const moe_file_tensor *moe_tensor_file_find(const moe_tensor_file *f, const char *name)
{
    const moe_file_tensor key = {.name = name};
    return f->n_tensors ? bsearch(&key, f->tensors, f->n_tensors, sizeof key, cmp_by_name) : NULL;
}

/* ---- mapping ------------------------------------------------------------------------------ */

/* Maps the regular file `path` read-only (reads it into memory where mapping is unavailable);
 * `what` names the kind of file for messages. *map_bytes is 0 when the bytes were read. */
static moe_status map_file(moe_context *ctx, const char *path, const char *what, uint8_t **out,
                           size_t *out_size, size_t *map_bytes)
{
    char err[MOE_ERROR_MAX];
    moe_file f;
    /* No size limit: a weight file is as large as its tensors; each header has its own. */
    moe_file_error e = moe_file_open(&f, path, UINT64_MAX, what, err, sizeof err);
    if (e != MOE_FILE_OK) return moe_fail(ctx, moe_file_status(e), "%s", err);
    if (f.size > SIZE_MAX) {
        moe_file_close(&f);
        return moe_fail(ctx, MOE_ERROR_IO, "%s: %llu bytes, too large to map on this platform", path,
                        (unsigned long long)f.size);
    }
    const size_t size = (size_t)f.size;
    void *map = moe_file_map(&f);
    uint8_t *bytes = map;
    if (!map) { /* no mmap here (or it failed): read the file instead, exactly its size */
        bytes = moe_malloc(size ? size : 1);
        if (!bytes) {
            moe_file_close(&f);
            return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory for %zu bytes", path, size);
        }
        e = moe_file_pread(&f, path, 0, bytes, size, err, sizeof err);
        if (e != MOE_FILE_OK) {
            moe_free(bytes);
            moe_file_close(&f);
            return moe_fail(ctx, moe_file_status(e), "%s", err);
        }
    }
    moe_file_close(&f);
    *out = bytes;
    *out_size = size;
    *map_bytes = map ? size : 0; /* 0: malloc'd, freed rather than unmapped */
    return MOE_OK;
}

static void unmap_file(void *bytes, size_t map_bytes)
{
    if (bytes && map_bytes)
        moe_file_unmap(bytes, map_bytes);
    else
        moe_free(bytes);
}

void moe_tensor_file_close(moe_tensor_file *f)
{
    if (!f) return;
    unmap_file(f->map, f->map_bytes);
    moe_free(f->tensors);
    moe_free(f->names);
    moe_free(f->kvs);
    moe_free(f->path);
    memset(f, 0, sizeof *f);
}

moe_status moe_tensor_file_open(moe_context *ctx, const char *path, const char *what,
                                moe_tensor_file_parser parse, moe_tensor_file *out)
{
    uint8_t *bytes;
    size_t size, map_bytes;
    moe_status st = map_file(ctx, path, what, &bytes, &size, &map_bytes);
    if (st != MOE_OK) return st;
    st = parse(ctx, path, bytes, size, out);
    if (st != MOE_OK) {
        unmap_file(bytes, map_bytes);
        return st;
    }
    out->map = bytes;
    out->map_bytes = map_bytes;
    return MOE_OK;
}
