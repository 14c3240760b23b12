/*
 * cache.c — the on-disk cache the GPU backends share (Vulkan pipeline caches, OpenCL program
 * binaries): where it lives ($MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe, else ~/.cache/moe,
 * created on demand), and whole-file reads and writes. A write goes to a temporary file in the
 * same directory, named after the process and a counter, and is renamed into place: rename()
 * is atomic, so a reader sees the old file or the new one, never half of one, even with
 * several processes writing at once. A cache that cannot be written is only a warning.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

void *moe_cache_read(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *data = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        const long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n)) != NULL) {
            if (fread(data, 1, (size_t)n, f) == (size_t)n) {
                *size = (size_t)n;
            } else {
                free(data);
                data = NULL;
            }
        }
    }
    fclose(f);
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
    FILE *f = fopen(tmp, "wb");
    bool ok = f && (head_size == 0 || fwrite(head, 1, head_size, f) == head_size) && fwrite(data, 1, size, f) == size;
    if (f) ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        if (f) remove(tmp);
        moe_log(ctx, MOE_LOG_WARNING, "could not write the cache file %s", path);
        return false;
    }
    return true;
}
