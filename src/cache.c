/*
 * cache.c — the on-disk cache the GPU backends share (Vulkan pipeline caches, OpenCL program
 * binaries): where it lives ($MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe, else ~/.cache/moe,
 * created on demand), and whole-file reads and writes. A write goes to a temporary file in the
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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    struct timespec mtime;
} cache_entry;

/* The entries of `dir` (regular files only, links not followed); *out is moe_malloc'd. */
static size_t list_entries(const char *dir, cache_entry **out, uint64_t *total)
{
    *out = NULL;
    *total = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!is_entry(e->d_name) || strlen(e->d_name) >= sizeof((cache_entry *)0)->name) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cache_entry *bigger = moe_realloc(*out, (cap ? 2 * cap : 16) * sizeof *bigger);
            if (!bigger) break; /* what was listed so far */
            *out = bigger;
            cap = cap ? 2 * cap : 16;
        }
        cache_entry *c = &(*out)[n++];
        snprintf(c->name, sizeof c->name, "%s", e->d_name);
        c->bytes = (uint64_t)st.st_size;
        c->mtime = st.st_mtim;
        *total += c->bytes;
    }
    closedir(d);
    return n;
}

static int older_first(const void *a, const void *b)
{
    const struct timespec *x = &((const cache_entry *)a)->mtime, *y = &((const cache_entry *)b)->mtime;
    if (x->tv_sec != y->tv_sec) return x->tv_sec < y->tv_sec ? -1 : 1;
    return x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
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
            if (len > 0 && (size_t)len < sizeof path && remove(path) == 0) {
                total -= e[i].bytes;
                moe_log(ctx, MOE_LOG_INFO, "cache over %llu bytes: removed %s", (unsigned long long)limit,
                        path);
            }
        }
    }
    moe_free(e);
}

static bool make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        const int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST) return false;
    }
    return mkdir(path, 0755) == 0 || errno == EEXIST;
}

/* Where the cache lives (not created here); false (and "") when there is nowhere. */
static bool cache_location(char *out, size_t size)
{
    const char *env = getenv("MOE_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (env && *env)
        n = snprintf(out, size, "%s", env);
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
    if (!make_dirs(out)) {
        moe_log(ctx, MOE_LOG_WARNING, "cannot create the cache directory %s; nothing is cached", out);
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
