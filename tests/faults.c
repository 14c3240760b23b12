/*
 * faults.c — the GPU backends' shared fault and cache checks (faults.h).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "faults.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The GPU backends' device tests (test_vulkan, test_opencl; POSIX only: they open the drivers
 * through dlopen) plant FIFOs and old files in their cache; the checks the CPU suites share
 * (contexts with injected switches, counting cache files) build everywhere. */

moe_context *h_context_injected(moe_backend_kind kind, const char *var, const char *value)
{
    setenv(var, value, 1);
    moe_context *ctx = h_context(kind, 0);
    unsetenv(var);
    return ctx;
}

void h_check_device_lost(moe_backend_kind kind, const char *var, const char *native, const h_layer *hl,
                         const float *x, int64_t n_tokens)
{
    moe_context *ctx = h_context_injected(kind, var, "lost");
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
    h_guarded y = h_guarded_alloc((size_t)(n_tokens * hl->desc.d_model));
    CHECK_STATUS(moe_layer_forward(layer, n_tokens, x, y.data, NULL), MOE_ERROR_DEVICE_LOST);
    CHECK(strstr(moe_context_error(ctx), native) != NULL, "message: %s", moe_context_error(ctx));
    CHECK(h_untouched(&y), "output written after a lost device");
    CHECK_STATUS(moe_layer_forward(layer, n_tokens, x, y.data, NULL), MOE_ERROR_DEVICE_LOST); /* stays lost */
    moe_buffer *b = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, 8, &b), MOE_ERROR_DEVICE_LOST);
    CHECK(h_untouched(&y), "output written after a lost device");
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    h_guarded_free(&y);
}

void h_check_out_of_device_memory(moe_backend_kind kind, const char *var, const char *native,
                                  const h_layer *hl)
{
    moe_context *ctx = h_context_injected(kind, var, "oom");
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_ERROR_OUT_OF_DEVICE_MEMORY);
    CHECK(layer == NULL, "layer written on failure");
    CHECK(strstr(moe_context_error(ctx), native) != NULL, "message: %s", moe_context_error(ctx));
    moe_context_destroy(ctx);
}

void h_count_cache_files(const char *dir, const char *prefix, const char *suffix, int *entries, int *temps)
{
    *entries = *temps = 0;
    DIR *d = opendir(dir);
    const size_t np = strlen(prefix), ns = strlen(suffix);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        const size_t n = strlen(e->d_name);
        if (n >= 4 && strcmp(e->d_name + n - 4, ".tmp") == 0)
            (*temps)++;
        else if (n >= np + ns && !strncmp(e->d_name, prefix, np) && !strcmp(e->d_name + n - ns, suffix))
            (*entries)++;
    }
    if (d) closedir(d);
}

void h_clear_cache_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    const size_t np = strlen(prefix);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, prefix, np) != 0) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remove(path);
    }
    if (d) closedir(d);
}

#if !defined(_WIN32)
static void count_ignored(moe_log_level level, const char *message, void *user)
{
    if (level == MOE_LOG_WARNING && strstr(message, "ignoring the cache file")) (*(int *)user)++;
}

/* Counts the warnings that the cache directory is a file. */
static void count_not_a_dir(moe_log_level level, const char *message, void *user)
{
    if (level == MOE_LOG_WARNING && strstr(message, "no cache directory") &&
        strstr(message, "is a regular file, not a directory"))
        (*(int *)user)++;
}

/* A context on `kind` with MOE_CACHE_DIR=cache_dir and `log` (user: `warnings`) on its
 * warnings runs hl on x (T tokens): every call succeeds and gives `want` bit for bit ("what"
 * names the setting in a failure). */
static void run_with_cache_dir(moe_backend_kind kind, const char *cache_dir, moe_log_fn log, int *warnings,
                               const h_layer *hl, const float *x, int64_t T, const float *want,
                               const char *what)
{
    setenv("MOE_CACHE_DIR", cache_dir, 1);
    const moe_context_desc cd = {.struct_size = sizeof cd,
                                 .backend = kind,
                                 .log = log,
                                 .log_user_data = warnings,
                                 .log_level = MOE_LOG_WARNING};
    moe_context *ctx = NULL;
    moe_layer *layer = NULL;
    float *y = malloc(sizeof(float) * (size_t)(T * hl->desc.d_model));
    CHECK_STATUS(moe_context_create(&cd, &ctx), MOE_OK);
    if (ctx) CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
    if (layer) {
        CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
        CHECK(memcmp(y, want, sizeof(float) * (size_t)(T * hl->desc.d_model)) == 0, "%s: the result differs",
              what);
    }
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    unsetenv("MOE_CACHE_DIR");
    free(y);
}

void h_check_hostile_cache(moe_backend_kind kind, const char *dir, const char *prefix, const char *suffix,
                           const h_layer *hl, const float *x, int64_t T, const float *want)
{
    const size_t np = strlen(prefix), ns = strlen(suffix);
    for (int round = 0; round < 2; round++) {
        int planted = 0;
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
            const size_t n = strlen(e->d_name);
            if (n < np + ns || strncmp(e->d_name, prefix, np) || strcmp(e->d_name + n - ns, suffix)) continue;
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            remove(path);
            if (round == 0) {
                planted += mkfifo(path, 0644) == 0;
            } else {
                const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                planted += fd >= 0 && ftruncate(fd, (off_t)64 * 1024 * 1024 + 1) == 0;
                if (fd >= 0) close(fd);
            }
        }
        if (d) closedir(d);
        CHECK(planted > 0, "no %s*%s cache entry in %s to replace", prefix, suffix, dir);
        const char *what = round == 0 ? "FIFOs" : "oversized files";
        int ignored = 0;
        run_with_cache_dir(kind, dir, count_ignored, &ignored, hl, x, T, want, what);
        CHECK(ignored >= 1, "%s: %d warning(s) about an ignored cache file, %d planted", what, ignored,
              planted);
    }
    /* MOE_CACHE_DIR naming a file: a warning that names it, nothing cached, the same result
     * (the directory's "already exists" once counted as made, and each write failed instead). */
    char file[2048];
    snprintf(file, sizeof file, "%s/%snot-a-directory", dir, prefix);
    const int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "cannot make %s", file);
    if (fd >= 0) close(fd);
    int warned = 0;
    run_with_cache_dir(kind, file, count_not_a_dir, &warned, hl, x, T, want, "a file as the cache directory");
    CHECK(warned >= 1, "no warning that the cache directory %s is a file", file);
    struct stat st;
    CHECK(stat(file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0, "%s was changed", file);
    remove(file);
}

/* Files in `dir` named prefix*suffix: how many, and their bytes. */
static int cache_usage(const char *dir, const char *prefix, const char *suffix, uint64_t *bytes)
{
    const size_t np = strlen(prefix), ns = strlen(suffix);
    int n = 0;
    *bytes = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        const size_t len = strlen(e->d_name);
        if (len < np + ns || strncmp(e->d_name, prefix, np) || strcmp(e->d_name + len - ns, suffix)) continue;
        char path[2048];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) n++, *bytes += (uint64_t)st.st_size;
    }
    if (d) closedir(d);
    return n;
}

void h_check_cache_bound(moe_backend_kind kind, const char *dir, const char *prefix, const char *suffix,
                         const h_layer *hl, const float *x, int64_t T)
{
    uint64_t bytes;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) { /* the real entries: the context rewrites them */
        const size_t len = strlen(e->d_name), np = strlen(prefix), ns = strlen(suffix);
        if (len < np + ns || strncmp(e->d_name, prefix, np) || strcmp(e->d_name + len - ns, suffix)) continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remove(path);
    }
    if (d) closedir(d);
    char old[2][2048];
    for (int i = 0; i < 2; i++) {
        snprintf(old[i], sizeof old[i], "%s/%s0000-old-%d%s", dir, prefix, i, suffix);
        const int fd = open(old[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0, "cannot plant %s", old[i]);
        if (fd >= 0) close(fd);
        const struct timespec day_ago[2] = {{time(NULL) - 86400 - i, 0}, {time(NULL) - 86400 - i, 0}};
        utimensat(AT_FDCWD, old[i], day_ago, 0);
    }
    setenv("MOE_CACHE_DIR", dir, 1);
    setenv("MOE_CACHE_SIZE_MB", "1", 1);
    moe_context *ctx = h_context(kind, 0);
    moe_layer *layer = NULL;
    float *y = malloc(sizeof(float) * (size_t)(T * hl->desc.d_model));
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
    CHECK_STATUS(moe_layer_forward(layer, T, x, y, NULL), MOE_OK);
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    free(y);
    const int files = cache_usage(dir, prefix, suffix, &bytes);
    CHECK(access(old[0], F_OK) != 0 && access(old[1], F_OK) != 0, "the old entries were kept past the bound");
    CHECK(files >= 1 && bytes <= (1u << 20), "%d entries of %llu bytes after pruning to 1 MiB", files,
          (unsigned long long)bytes);
    moe_cache_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_get_cache_info(&info), MOE_OK);
    uint64_t all_bytes;
    const int all = cache_usage(dir, "", "", &all_bytes); /* moe's entries are the only files there */
    CHECK(!strcmp(info.path, dir) && info.limit_bytes == (1u << 20) && info.files == (uint64_t)all &&
              info.bytes == all_bytes,
          "moe_get_cache_info: '%s', %llu files, %llu bytes, limit %llu (want '%s', %d, %llu, 1 MiB)",
          info.path, (unsigned long long)info.files, (unsigned long long)info.bytes,
          (unsigned long long)info.limit_bytes, dir, all, (unsigned long long)all_bytes);
    unsetenv("MOE_CACHE_SIZE_MB");
    unsetenv("MOE_CACHE_DIR");
}
#endif
