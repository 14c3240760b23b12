/*
 * faults.h — checks every GPU backend's tests share: injected faults (each backend reads its own
 * environment variable, MOE_VK_INJECT or MOE_CL_INJECT, when a context is created) and the files
 * an on-disk cache leaves behind.
 */
#ifndef MOE_TEST_FAULTS_H
#define MOE_TEST_FAULTS_H

#include "harness.h"

/* A context on `kind` created while `var` = `value`. */
moe_context *h_context_injected(moe_backend_kind kind, const char *var, const char *value);

/* `var`=lost: the forward fails with MOE_ERROR_DEVICE_LOST naming `native` (the API's own
 * error), the output stays untouched, and the context stays lost for later calls. */
void h_check_device_lost(moe_backend_kind kind, const char *var, const char *native, const h_layer *hl,
                         const float *x, int64_t n_tokens);

/* `var`=oom: creating a layer fails with MOE_ERROR_OUT_OF_DEVICE_MEMORY naming `native`. */
void h_check_out_of_device_memory(moe_backend_kind kind, const char *var, const char *native,
                                  const h_layer *hl);

/* Files in `dir` named prefix*suffix (complete cache entries), and leftover *.tmp files. */
void h_count_cache_files(const char *dir, const char *prefix, const char *suffix, int *entries, int *temps);
/* Removes dir's files whose names start with prefix: a cache test starts empty (the build's
 * folder may hold another device's or driver's entries, from a run on another machine). */
void h_clear_cache_files(const char *dir, const char *prefix);

/* Every complete cache entry in `dir` (prefix*suffix, as a context on `kind` left them with
 * MOE_CACHE_DIR=dir) is replaced by something that is not a cache file — a FIFO in a first
 * round, a sparse file one byte over the library's 64 MiB limit in a second — and each time a
 * new context with MOE_CACHE_DIR=dir neither blocks nor fails: it logs a warning that it
 * ignored the file and gives `want` for hl on x (T tokens), bit for bit. Then MOE_CACHE_DIR
 * names a regular file: a warning says so, the file is left alone, the result is `want`. */
void h_check_hostile_cache(moe_backend_kind kind, const char *dir, const char *prefix, const char *suffix,
                           const h_layer *hl, const float *x, int64_t T, const float *want);

/* The cache's size bound: two 1 MiB entries of a day ago are planted (named prefix*suffix) and
 * the real ones removed, then a context with MOE_CACHE_SIZE_MB=1 runs hl on x (T tokens) and
 * writes its entries: the old ones are gone, moe's entries take at most 1 MiB, the newest
 * stay, and moe_get_cache_info reports the directory, the files and bytes and the bound. */
void h_check_cache_bound(moe_backend_kind kind, const char *dir, const char *prefix, const char *suffix,
                         const h_layer *hl, const float *x, int64_t T);

#endif
