/*
 * cl_program.c — the embedded OpenCL C sources (opencl/<name>.cl, turned into arrays at build
 * time), program builds with -D specialisation, and the on-disk binary cache.
 *
 * A program is one kernel file (common.cl and its interface description inlined at build
 * time), built with options that carry its tile sizes, shapes and flags (so its loops have
 * constant bounds). Programs are built on first use and kept for the context. Each build
 * first looks in the cache directory (src/cache.c: $MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe,
 * else ~/.cache/moe — where the Vulkan pipeline cache lives too) for opencl-<hash>.bin, the
 * hash covering the program's text, the options, the device's name and version, the driver
 * version and the platform version; a hit is built from the binary (no compilation), a miss
 * or a stale/corrupt file is compiled from source and saved, written to a temporary file and
 * renamed, so no process ever reads half a file.
 */
#define _POSIX_C_SOURCE 200809L
#include "../alloc.h"
#include "cl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "combine.cl.h"
#include "gemm.cl.h"
#include "matvec.cl.h"
#include "plan_count.cl.h"
#include "plan_scan.cl.h"
#include "plan_scatter.cl.h"
#include "select.cl.h"
#include "stats.cl.h"

/* {source, file, __kernel function, interface description (kernels/<name>.h), variant options} */
const moe_cl_source moe_cl_sources[MOE_CL_K_COUNT] = {
    [MOE_CL_K_GEMM] = {(const char *)moe_cl_text_gemm, "gemm.cl", "gemm", "gemm", ""},
    [MOE_CL_K_MATVEC] = {(const char *)moe_cl_text_matvec, "matvec.cl", "matvec", "matvec",
                         "-DUSE_SUBGROUP=0"},
    [MOE_CL_K_MATVEC_SUBGROUP] = {(const char *)moe_cl_text_matvec, "matvec.cl", "matvec", "matvec",
                                  "-DUSE_SUBGROUP=1 -cl-std=CL2.0"},
    [MOE_CL_K_SELECT] = {(const char *)moe_cl_text_select, "select.cl", "select_topk", "select", ""},
    [MOE_CL_K_PLAN_COUNT] = {(const char *)moe_cl_text_plan_count, "plan_count.cl", "plan_count",
                             "plan_count", ""},
    [MOE_CL_K_PLAN_SCAN] = {(const char *)moe_cl_text_plan_scan, "plan_scan.cl", "plan_scan", "plan_scan",
                            ""},
    [MOE_CL_K_PLAN_SCATTER] = {(const char *)moe_cl_text_plan_scatter, "plan_scatter.cl", "plan_scatter",
                               "plan_scatter", ""},
    [MOE_CL_K_COMBINE] = {(const char *)moe_cl_text_combine, "combine.cl", "combine", "combine", ""},
    [MOE_CL_K_STATS] = {(const char *)moe_cl_text_stats, "stats.cl", "stats", "stats", ""},
};

#define CACHE_MAGIC "MOECLBN1"

/* ---- cache key and files (the directory and atomic writes: src/cache.c) ------------------- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return (h ^ 0xffu) * 0x100000001b3ull; /* a separator, so ("ab","c") != ("a","bc") */
}

static uint64_t program_key(const moe_cl_backend *b, moe_cl_kernel_id id, const char *options)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv1a(h, moe_cl_sources[id].text);
    h = fnv1a(h, options);
    return fnv1a(h, b->device_key);
}

static void cache_file(const moe_cl_backend *b, uint64_t key, char *out, size_t size)
{
    snprintf(out, size, "%s/opencl-%016llx.bin", b->cache_dir, (unsigned long long)key);
}

typedef struct cache_head {
    char magic[8];
    uint64_t key, size;
} cache_head;

/* The cached binary of `key`, or NULL (no file, or a file that is not a whole entry). */
static unsigned char *cache_load(const moe_cl_backend *b, uint64_t key, size_t *size)
{
    char path[1100];
    cache_file(b, key, path, sizeof path);
    size_t n = 0;
    unsigned char *file = moe_cache_read(b->base.ctx, path, &n);
    cache_head h;
    if (!file || n < sizeof h) {
        moe_free(file);
        return NULL;
    }
    memcpy(&h, file, sizeof h);
    if (memcmp(h.magic, CACHE_MAGIC, 8) != 0 || h.key != key || h.size != n - sizeof h || h.size == 0) {
        moe_free(file);
        return NULL;
    }
    memmove(file, file + sizeof h, (size_t)h.size);
    *size = (size_t)h.size;
    return file;
}

static void cache_save(moe_cl_backend *b, uint64_t key, cl_program program)
{
    size_t n = 0;
    if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) != CL_SUCCESS || n == 0)
        return;
    unsigned char *data = moe_malloc(n);
    if (data && clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof data, &data, NULL) == CL_SUCCESS) {
        char path[1100];
        cache_file(b, key, path, sizeof path);
        cache_head h = {.key = key, .size = n};
        memcpy(h.magic, CACHE_MAGIC, 8);
        moe_cache_write(b->base.ctx, path, &h, sizeof h, data, n);
    }
    moe_free(data);
}

/* ---- builds -------------------------------------------------------------------------------- */

static moe_status build_failure(moe_cl_backend *b, cl_program program, cl_int err, moe_cl_kernel_id id,
                                const char *options)
{
    char log[768] = "";
    size_t n = 0;
    if (clGetProgramBuildInfo(program, b->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) == CL_SUCCESS && n > 0) {
        char *full = moe_malloc(n + 1);
        if (full &&
            clGetProgramBuildInfo(program, b->device, CL_PROGRAM_BUILD_LOG, n, full, NULL) == CL_SUCCESS) {
            full[n] = '\0';
            const char *at = strstr(full, "error"); /* the first error, not the preamble */
            snprintf(log, sizeof log, "%s", at ? at : full);
        }
        moe_free(full);
    }
    return moe_fail(b->base.ctx, MOE_ERROR_BACKEND,
                    "opencl: building %s failed: %s (%d); options '%.160s'; build log: %s",
                    moe_cl_sources[id].file, moe_cl_error_name(err), (int)err, options, log);
}

/* Tries the cached binary; false (and nothing kept) when there is none or it is unusable. */
static bool build_from_cache(moe_cl_backend *b, uint64_t key, const char *options, cl_program *out)
{
    size_t size = 0;
    unsigned char *data = b->cache_dir[0] ? cache_load(b, key, &size) : NULL;
    if (!data) return false;
    cl_int bin_status = CL_SUCCESS, err = CL_SUCCESS;
    const unsigned char *bins[1] = {data};
    cl_program p = MOE_CL_ALLOC_CALL(
        &err, CL_OUT_OF_HOST_MEMORY,
        clCreateProgramWithBinary(b->context, 1, &b->device, &size, bins, &bin_status, &err));
    moe_free(data);
    if (err != CL_SUCCESS || bin_status != CL_SUCCESS) {
        if (p) clReleaseProgram(p);
        return false;
    }
    if (clBuildProgram(p, 1, &b->device, options, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(p);
        return false;
    }
    *out = p;
    return true;
}

static moe_status build(moe_cl_backend *b, moe_cl_kernel_id id, const char *options_in, cl_program *out)
{
    char options[MOE_CL_OPTIONS_MAX + 128];
    const char *variant = moe_cl_sources[id].variant;
    snprintf(options, sizeof options, "%s%s%s%s", variant, *variant ? " " : "", options_in,
             b->inject_build ? " -DMOE_INJECT_BUILD_FAILURE" : "");
    const uint64_t key = program_key(b, id, options);
    double t0 = moe_now_ms();
    if (!b->inject_build && build_from_cache(b, key, options, out)) {
        const double ms = moe_now_ms() - t0;
        b->builds_from_cache++;
        b->build_ms_cache += ms;
        moe_log(b->base.ctx, MOE_LOG_INFO, "opencl: %s built from cache in %.1f ms", moe_cl_sources[id].file,
                ms);
        return MOE_OK;
    }
    t0 = moe_now_ms();
    const char *src = moe_cl_sources[id].text;
    cl_int err = CL_SUCCESS;
    cl_program p = MOE_CL_ALLOC_CALL(&err, CL_OUT_OF_HOST_MEMORY,
                                     clCreateProgramWithSource(b->context, 1, &src, NULL, &err));
    if (err != CL_SUCCESS) return moe_cl_fail(b, err, "clCreateProgramWithSource");
    err = clBuildProgram(p, 1, &b->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        const moe_status st = build_failure(b, p, err, id, options);
        clReleaseProgram(p);
        return st;
    }
    const double ms = moe_now_ms() - t0;
    size_t log_size = 0;
    if (clGetProgramBuildInfo(p, b->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &log_size) == CL_SUCCESS &&
        log_size > 2) {
        char *log = moe_malloc(log_size + 1);
        if (log &&
            clGetProgramBuildInfo(p, b->device, CL_PROGRAM_BUILD_LOG, log_size, log, NULL) == CL_SUCCESS) {
            log[log_size] = '\0';
            moe_log(b->base.ctx, MOE_LOG_DEBUG, "opencl: %s build log: %s", moe_cl_sources[id].file, log);
        }
        moe_free(log);
    }
    b->builds_from_source++;
    b->build_ms_source += ms;
    moe_log(b->base.ctx, MOE_LOG_INFO, "opencl: %s compiled from source in %.1f ms", moe_cl_sources[id].file,
            ms);
    if (b->cache_dir[0]) cache_save(b, key, p);
    *out = p;
    return MOE_OK;
}

moe_status moe_cl_kernel_get(moe_cl_backend *b, moe_cl_kernel_id id, const char *options, cl_kernel *out)
{
    for (size_t i = 0; i < b->n_programs; i++) {
        const moe_cl_program *p = &b->programs[i];
        if (p->id == id && !strcmp(p->options, options)) {
            *out = p->kernel;
            return MOE_OK;
        }
    }
    if (strlen(options) >= MOE_CL_OPTIONS_MAX)
        return moe_fail(b->base.ctx, MOE_ERROR_INTERNAL, "opencl: build options too long: %s", options);
    if (b->n_programs == b->cap_programs) {
        const size_t cap = b->cap_programs ? 2 * b->cap_programs : 16;
        moe_cl_program *p = moe_realloc(b->programs, cap * sizeof *p);
        if (!p) return moe_fail(b->base.ctx, MOE_ERROR_OUT_OF_MEMORY, "opencl: out of host memory");
        b->programs = p;
        b->cap_programs = cap;
    }
    moe_cl_program *p = &b->programs[b->n_programs];
    memset(p, 0, sizeof *p);
    moe_status st = build(b, id, options, &p->program);
    if (st != MOE_OK) return st;
    cl_int err = CL_SUCCESS;
    p->kernel = MOE_CL_ALLOC_CALL(&err, CL_OUT_OF_HOST_MEMORY,
                                  clCreateKernel(p->program, moe_cl_sources[id].kernel, &err));
    if (err != CL_SUCCESS) {
        clReleaseProgram(p->program);
        return moe_cl_fail(b, err, "clCreateKernel");
    }
    p->id = id;
    snprintf(p->options, sizeof p->options, "%s", options);
    b->n_programs++;
    *out = p->kernel;
    return MOE_OK;
}

/* Whether moe's binary cache would only cost time here: PoCL caches every program itself
 * (POCL_KERNEL_CACHE, on unless set to 0; keyed on the source and the options, in
 * $XDG_CACHE_HOME/pocl), and asking it for a program's binary makes it generate code a second
 * time (the variant for any work-group size, next to the one for the launch's size): ~40% of a
 * build, for a file PoCL's own cache makes useless. A driver with a real GPU compiler has its
 * binary at hand after the build, so elsewhere the cache stays. MOE_CL_BINARY_CACHE=1 keeps it
 * on PoCL too (the tests of the cache itself), =0 turns it off everywhere. */
static bool driver_caches_programs(moe_cl_backend *b)
{
    const char *force = getenv("MOE_CL_BINARY_CACHE");
    if (force && !strcmp(force, "1")) return false;
    if (force && !strcmp(force, "0")) return true;
    const char *pocl_cache = getenv("POCL_KERNEL_CACHE");
    if (pocl_cache && !strcmp(pocl_cache, "0")) return false;
    cl_platform_id platform = NULL;
    char name[256] = "";
    if (clGetDeviceInfo(b->device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) != CL_SUCCESS ||
        clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof name - 1, name, NULL) != CL_SUCCESS)
        return false;
    return strstr(name, "Portable Computing Language") != NULL;
}

moe_status moe_cl_programs_init(moe_cl_backend *b)
{
    cl_bool compiler = CL_TRUE;
    clGetDeviceInfo(b->device, CL_DEVICE_COMPILER_AVAILABLE, sizeof compiler, &compiler, NULL);
    if (!compiler)
        moe_log(b->base.ctx, MOE_LOG_WARNING,
                "opencl: device '%s' has no compiler; only cached binaries can run", b->base.info.name);
    if (!moe_cache_dir(b->base.ctx, b->cache_dir, sizeof b->cache_dir)) b->cache_dir[0] = '\0';
    if (b->cache_dir[0] && driver_caches_programs(b)) {
        moe_log(b->base.ctx, MOE_LOG_DEBUG,
                "opencl: PoCL keeps its own kernel cache; no program binaries are saved "
                "(MOE_CL_BINARY_CACHE=1 saves them anyway)");
        b->cache_dir[0] = '\0';
    }
    moe_log(b->base.ctx, MOE_LOG_DEBUG, "opencl: program cache in '%s'", b->cache_dir);
    return MOE_OK;
}

void moe_cl_programs_release(moe_cl_backend *b)
{
    if (b->builds_from_source || b->builds_from_cache)
        moe_log(b->base.ctx, MOE_LOG_INFO,
                "opencl: programs: %llu compiled (%.0f ms), %llu loaded from the binary cache (%.0f ms)",
                (unsigned long long)b->builds_from_source, b->build_ms_source,
                (unsigned long long)b->builds_from_cache, b->build_ms_cache);
    for (size_t i = 0; i < b->n_programs; i++) {
        clReleaseKernel(b->programs[i].kernel);
        clReleaseProgram(b->programs[i].program);
    }
    moe_free(b->programs);
}
