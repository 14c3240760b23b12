/*
 * cache.c — the on-disk cache the GPU backends share (Vulkan pipeline caches, OpenCL program
 * binaries): where it lives ($MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe, else ~/.cache/moe; on
 * Windows %MOE_CACHE_DIR%, else %LOCALAPPDATA%\moe; created on demand), and whole-file reads
 * and writes (the file-system calls are file.h's). A write goes to a temporary file in the
 * same directory, named after the process and a counter, and is renamed into place: rename()
 * is atomic, so a reader sees the old file or the new one, never half of one, even with
 * several processes writing at once. A cache that cannot be written is only a warning; one
 * that cannot be read as a regular file of at most MOE_CACHE_MAX_BYTES is a miss.
 *
 * The whole cache is bounded too: after each write, the oldest entries (by modification time)
 * are removed until the entries of moe's own naming (vulkan-*.cache, opencl-*.bin) take at
 * most MOE_CACHE_SIZE_MB (default 256) MiB — a server that sees many shapes over months must
 * not fill its disk. Nothing else in the directory is touched.
 */
#define _POSIX_C_SOURCE 200809L
#include "alloc.h"
#include "file.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest cache file read. The entries are one Vulkan pipeline cache per device and one
 * OpenCL program binary per kernel set: tens to hundreds of KiB (PoCL's binaries here are
 * 50-80 KiB), a few MiB for a GPU driver's. 64 MiB is far above any of them and still small
 * enough to read whole at context creation. */
#define MOE_CACHE_MAX_BYTES ((uint64_t)64 << 20)

#define MOE_CACHE_DEFAULT_LIMIT_MB 256

/* The bound on the whole cache: MOE_CACHE_SIZE_MB (a positive integer of MiB), or 256 MiB. */
static uint64_t cache_limit_bytes(void)
{
    const char *s = getenv("MOE_CACHE_SIZE_MB");
    char *end = NULL;
    errno = 0;
    const unsigned long long mb = s && *s ? strtoull(s, &end, 10) : 0;
    if (!s || !*s || errno || *end || mb == 0 || mb > ((uint64_t)1 << 40))
        return (uint64_t)MOE_CACHE_DEFAULT_LIMIT_MB << 20;
    return (uint64_t)mb << 20;
}

/* A cache entry of moe's own naming: vulkan-*.cache or opencl-*.bin. */
static bool is_entry(const char *name)
{
    const size_t n = strlen(name);
    return (!strncmp(name, "vulkan-", 7) && n > 13 && !strcmp(name + n - 6, ".cache")) ||
           (!strncmp(name, "opencl-", 7) && n > 11 && !strcmp(name + n - 4, ".bin"));
}

typedef struct cache_entry {
    char name[256];
    uint64_t bytes;
    uint64_t mtime_ns;
} cache_entry;

typedef struct entry_list {
    cache_entry *e; /* moe_malloc'd */
    size_t n, cap;
    uint64_t total;
    bool full; /* out of memory: what was listed so far */
} entry_list;

static void add_entry(void *user, const char *name, uint64_t bytes, uint64_t mtime_ns)
{
    entry_list *l = user;
    if (l->full || !is_entry(name) || strlen(name) >= sizeof l->e->name) return;
    if (l->n == l->cap) {
        cache_entry *bigger = moe_realloc(l->e, (l->cap ? 2 * l->cap : 16) * sizeof *bigger);
        if (!bigger) {
            l->full = true;
            return;
        }
        l->e = bigger;
        l->cap = l->cap ? 2 * l->cap : 16;
    }
    cache_entry *c = &l->e[l->n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->bytes = bytes;
    c->mtime_ns = mtime_ns;
    l->total += bytes;
}

/* The entries of `dir` (regular files only, links not followed); *out is moe_malloc'd. */
static size_t list_entries(const char *dir, cache_entry **out, uint64_t *total)
{
    entry_list l = {0};
    (void)moe_file_list_dir(dir, add_entry, &l);
    *out = l.e;
    *total = l.total;
    return l.n;
}

static int older_first(const void *a, const void *b)
{
    const uint64_t x = ((const cache_entry *)a)->mtime_ns, y = ((const cache_entry *)b)->mtime_ns;
    return x < y ? -1 : x > y;
}

/* Removes the oldest entries of `dir` until the rest fit the bound. */
static void prune(moe_context *ctx, const char *dir)
{
    const uint64_t limit = cache_limit_bytes();
    cache_entry *e;
    uint64_t total;
    const size_t n = list_entries(dir, &e, &total);
    if (total > limit) {
        qsort(e, n, sizeof *e, older_first);
        for (size_t i = 0; i < n && total > limit; i++) {
            char path[1400];
            /* a name that does not fit is skipped: removing its truncated path could hit another file */
            const int len = snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
            if (len > 0 && (size_t)len < sizeof path && moe_file_remove(path)) {
                total -= e[i].bytes;
                moe_log(ctx, MOE_LOG_INFO, "cache over %llu bytes: removed %s", (unsigned long long)limit,
                        path);
            }
        }
    }
    moe_free(e);
}

/* Where the cache lives (not created here); false (and "") when there is nowhere. */
static bool cache_location(char *out, size_t size)
{
    const char *env = getenv("MOE_CACHE_DIR");
#if defined(_WIN32)
    /* Windows' place for a user's machine-local caches (not roamed between machines) */
    const char *xdg = NULL, *home = NULL, *local = getenv("LOCALAPPDATA");
#else
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME"), *local = NULL;
#endif
    int n;
    if (env && *env)
        n = snprintf(out, size, "%s", env);
    else if (local && *local)
        n = snprintf(out, size, "%s\\moe", local);
    else if (xdg && *xdg)
        n = snprintf(out, size, "%s/moe", xdg);
    else if (home && *home)
        n = snprintf(out, size, "%s/.cache/moe", home);
    else
        n = -1;
    if (n < 0 || (size_t)n >= size) {
        out[0] = '\0';
        return false;
    }
    return true;
}

bool moe_cache_dir(moe_context *ctx, char *out, size_t size)
{
    if (!cache_location(out, size)) return false;
    char why[MOE_ERROR_MAX];
    if (!moe_file_make_dirs(out, why, sizeof why)) {
        moe_log(ctx, MOE_LOG_WARNING, "no cache directory (%s); nothing is cached", why);
        out[0] = '\0';
        return false;
    }
    return true;
}

/* Reads a cache file through the bounded reader. Nothing here is required: a missing file is
 * a miss, and one that is not a regular file, too large or unreadable is ignored with a warning
 * on ctx's log, so a FIFO or a link to /dev/zero planted in the cache can neither block nor
 * exhaust memory. */
void *moe_cache_read(moe_context *ctx, const char *path, size_t *size)
{
    char err[MOE_ERROR_MAX];
    uint8_t *data = NULL;
    size_t n = 0;
    const moe_file_error e = moe_file_read_all(path, MOE_CACHE_MAX_BYTES, "a cache file", moe_malloc,
                                               moe_free, &data, &n, err, sizeof err);
    if (e != MOE_FILE_OK) {
        if (e != MOE_FILE_CANNOT_OPEN) moe_log(ctx, MOE_LOG_WARNING, "ignoring the cache file: %s", err);
        return NULL;
    }
    if (n == 0) {
        moe_free(data);
        return NULL;
    }
    *size = n;
    return data;
}

bool moe_cache_write(moe_context *ctx, const char *path, const void *head, size_t head_size, const void *data,
                     size_t size)
{
    char err[MOE_ERROR_MAX];
    if (moe_file_write_atomic(path, head, head_size, data, size, err, sizeof err) != MOE_FILE_OK) {
        moe_log(ctx, MOE_LOG_WARNING, "could not write the cache file: %s", err);
        return false;
    }
    /* The directory of `path`, to keep the whole cache within its bound. */
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        prune(ctx, dir);
    }
    return true;
}

moe_status moe_get_cache_info(moe_cache_info *info)
{
    moe_clear_error(NULL);
    if (!info) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "info is NULL");
    size_t bytes;
    const moe_status st = moe_abi_check(NULL, &moe_abi_cache_info, info, &bytes);
    if (st != MOE_OK) return st;
    moe_cache_info full = {.struct_size = sizeof full, .limit_bytes = cache_limit_bytes()};
    if (cache_location(full.path, sizeof full.path)) { /* else nowhere: nothing is cached */
        cache_entry *e;
        uint64_t total;
        full.files = (uint64_t)list_entries(full.path, &e, &total);
        full.bytes = total;
        moe_free(e);
    }
    return moe_abi_out(NULL, &moe_abi_cache_info, info, &full);
}
