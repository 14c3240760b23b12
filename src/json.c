/*
 * json.c — every JSON text the library reads (config.json, model.safetensors.index.json,
 * safetensors headers) is parsed here, with cJSON allocating through moe_malloc / moe_free.
 *
 * Why the hooks: cJSON reports any failure, a syntax error or a failed allocation, as NULL.
 * Allocating through moe_malloc lets the parse tell the two apart (alloc.h's per-thread
 * flag), so running out of memory is MOE_ERROR_OUT_OF_MEMORY and not "not valid JSON", and
 * lets the allocation-failure tests reach cJSON's allocations too. The hooks are set once per
 * process; they call the C library's malloc and free, cJSON's own defaults, so memory cJSON
 * allocated before or after them is freed the same way.
 *
 * Strings holding a NUL (escaped \u0000, or raw) or a raw control byte are refused: cJSON keeps
 * strings as C strings, so "a\u0000b" would silently become "a" (a tensor name, a dtype).
 *
 * Duplicate keys are refused: the JSON texts we read are written by programs (transformers,
 * safetensors) that never repeat a key, and a repeated one would otherwise mean whichever
 * copy cJSON happens to return first — different from Python's json, which keeps the last.
 */
#define _POSIX_C_SOURCE 200809L
#include "json.h"

#include "alloc.h"

#include "platform/thread.h"
#include <stdlib.h>
#include <string.h>

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

static moe_once g_hooks_once = MOE_ONCE_INIT;

static void set_hooks(void)
{
    cJSON_Hooks hooks = {.malloc_fn = moe_malloc, .free_fn = moe_free};
    cJSON_InitHooks(&hooks);
}

void moe_json_init(void)
{
    moe_call_once(&g_hooks_once, set_hooks);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first key that appears twice in one object of the tree, or NULL; *oom when the
 * check itself ran out of memory. */
static const char *duplicate_key(const cJSON *node, bool *oom)
{
    for (; node; node = node->next) {
        if (cJSON_IsObject(node)) {
            size_t n = 0;
            for (const cJSON *c = node->child; c; c = c->next) n++;
            if (n > 1) {
                const char **keys = moe_malloc(n * sizeof *keys);
                if (!keys) {
                    *oom = true;
                    return NULL;
                }
                size_t i = 0;
                for (const cJSON *c = node->child; c; c = c->next) keys[i++] = c->string ? c->string : "";
                qsort(keys, n, sizeof *keys, cmp_key);
                const char *dup = NULL;
                for (i = 1; i < n && !dup; i++)
                    if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
                moe_free(keys);
                if (dup) return dup;
            }
        }
        if (node->child) {
            const char *dup = duplicate_key(node->child, oom);
            if (dup || *oom) return dup;
        }
    }
    return NULL;
}

/* Where a JSON string of `text` holds a NUL, escaped (\u0000) or raw, or a raw control
 * byte (which JSON does not allow in a string); NULL if none. cJSON keeps strings as C
 * strings, so "a\u0000b" would silently become "a". Run on text cJSON has accepted. */
static const char *bad_string_byte(const char *text, size_t len, const char **string_start)
{
    bool in = false;
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)text[i];
        if (c == '"') {
            in = !in;
            if (in) *string_start = text + i;
        } else if (in && c < 0x20) {
            return text + i;
        } else if (in && c == '\\') {
            if (len - i >= 6 && text[i + 1] == 'u' && !memcmp(text + i + 2, "0000", 4)) return text + i;
            i++; /* the escaped character, which may be a quote */
        }
    }
    return NULL;
}

moe_status moe_json_parse(moe_context *ctx, const char *what, const char *text, size_t len, cJSON **out)
{
    *out = NULL;
    moe_json_init();
    if (!moe_utf8_valid((const uint8_t *)text, len))
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: not valid UTF-8", what);
    moe_alloc_reset_failed();
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        if (moe_alloc_failed())
            return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY,
                            "%s: out of host memory while parsing %zu bytes of JSON", what, len);
        const size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        return moe_fail(ctx, MOE_ERROR_FORMAT, "%s: not valid JSON (near byte %zu of %zu)", what, at, len);
    }
    moe_status st = MOE_OK;
    const char *start = text;
    const char *bad = bad_string_byte(text, len, &start);
    if (bad && *bad != '\\')
        st = moe_fail(ctx, MOE_ERROR_FORMAT,
                      "%s: the raw control byte 0x%02x at byte %zu is inside a string (not valid JSON)", what,
                      (unsigned)(unsigned char)*bad, (size_t)(bad - text));
    else if (bad) /* show the string up to the NUL when it is short: it is usually a tensor name */
        st = moe_fail(ctx, MOE_ERROR_FORMAT,
                      "%s: the string %.*s... at byte %zu holds a NUL character, which no name or value may "
                      "contain",
                      what, bad + 6 - start <= 80 ? (int)(bad + 6 - start) : 0, start, (size_t)(bad - text));
    for (const char *p = end; p < text + len && st == MOE_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: text after the JSON value (at byte %zu)", what,
                          (size_t)(p - text));
    if (st == MOE_OK) {
        bool oom = false;
        const char *dup = duplicate_key(root, &oom);
        if (oom)
            st = moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "%s: out of host memory while checking JSON keys",
                          what);
        else if (dup)
            st = moe_fail(ctx, MOE_ERROR_FORMAT, "%s: the key \"%s\" appears twice in one JSON object", what,
                          dup);
    }
    if (st != MOE_OK) {
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return MOE_OK;
}
