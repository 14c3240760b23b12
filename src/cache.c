/*
 * cache.c — the on-disk cache the GPU backends share (Vulkan pipeline caches, OpenCL program
 * binaries): where it lives ($MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe, else ~/.cache/moe,
 * created on demand), and whole-file reads and writes. A write goes to a temporary file in the
 * same directory, named after the process and a counter, and is renamed into place: rename()
 * is atomic, so a reader sees the old file or the new one, never half of one, even with
 * several processes writing at once. A cache that cannot be written is only a warning; one
 * that cannot be read as a regular file of at most MOE_CACHE_MAX_BYTES is a miss.
 */
#define _POSIX_C_SOURCE 200809L
#include "alloc.h"
#include "file.h"
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
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

bool moe_cache_dir(moe_context *ctx, char *out, size_t size)
{
    const char *env = getenv("MOE_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (env && *env) n = snprintf(out, size, "%s", env);
    else if (xdg && *xdg) n = snprintf(out, size, "%s/moe", xdg);
    else if (home && *home) n = snprintf(out, size, "%s/.cache/moe", home);
    else n = -1;
    if (n < 0 || (size_t)n >= size) {
        out[0] = '\0';
        return false;
    }
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
    static atomic_uint serial;
    char tmp[1200];
    if (snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&serial, 1u)) >=
        (int)sizeof tmp)
        return false;
    /* O_EXCL: never write through a file (or a link) someone else placed at that name. */
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (fd >= 0 && !f) close(fd);
    bool ok = f && (head_size == 0 || fwrite(head, 1, head_size, f) == head_size) && fwrite(data, 1, size, f) == size;
    if (f) ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        if (f) remove(tmp);
        moe_log(ctx, MOE_LOG_WARNING, "could not write the cache file %s", path);
        return false;
    }
    return true;
}
