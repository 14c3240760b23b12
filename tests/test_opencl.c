/*
 * test_opencl.c — what only the OpenCL backend has: injected faults (MOE_CL_INJECT=lost makes
 * the next finish report CL_OUT_OF_RESOURCES, a lost device; =oom makes buffer allocations
 * fail with CL_MEM_OBJECT_ALLOCATION_FAILURE; =build makes program builds fail) give their
 * statuses, leave the caller's output untouched and, for a lost device, make every later call
 * fail the same way; an invalid device index is refused as unavailable; program binaries are
 * cached in the cache directory as complete files (written whole, then renamed) and a second
 * context builds every program from that cache instead of compiling (counted through the log
 * callback's "built from cache" / "compiled from source" lines), and a FIFO or an oversized
 * file in a binary's place is ignored with a warning (on PoCL, which caches programs itself,
 * only with MOE_CL_BINARY_CACHE=1: without it nothing is saved); the device reports its limits; every
 * device's features (moe_device_info.features / features_used) agree with the driver's own
 * answer, asked here through the ICD loader directly: FLOAT16 iff cl_khr_fp16, INT_DOT iff
 * cl_khr_integer_dot_product, SUBGROUP_REDUCE iff cl_khr_subgroups with OpenCL C 2.0+, never a
 * CPU bit or a storage bit, and the kernels use SUBGROUP_REDUCE only (not at all in a context
 * made with MOE_CL_DISABLE_SUBGROUPS=1).
 */
#define _POSIX_C_SOURCE          200809L /* setenv */
#define CL_TARGET_OPENCL_VERSION 120
#include "faults.h"

#include <CL/cl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const moe_layer_desc desc = {.struct_size = sizeof(moe_layer_desc),
                                    .d_model = 40,
                                    .d_ff = 24,
                                    .n_experts = 8,
                                    .top_k = 2,
                                    .max_tokens = 16,
                                    .renormalize = 1};

typedef struct build_counts {
    int from_cache, from_source;
} build_counts;

static void count_builds(moe_log_level level, const char *message, void *user)
{
    build_counts *c = user;
    if (getenv("MOE_TEST_VERBOSE") || level <= MOE_LOG_WARNING) printf("  log: %s\n", message);
    if (level != MOE_LOG_INFO) return;
    if (strstr(message, "built from cache")) c->from_cache++;
    if (strstr(message, "compiled from source")) c->from_source++;
}

static moe_context *context_logged(build_counts *counts)
{
    moe_context_desc cd = {.struct_size = sizeof cd,
                           .backend = MOE_BACKEND_OPENCL,
                           .log = count_builds,
                           .log_user_data = counts,
                           .log_level = MOE_LOG_INFO};
    moe_context *ctx = NULL;
    CHECK_STATUS(moe_context_create(&cd, &ctx), MOE_OK);
    return ctx;
}

static void build_failure(h_layer *hl, const float *x)
{
    moe_context *ctx = h_context_injected(MOE_BACKEND_OPENCL, "MOE_CL_INJECT", "build");
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
    h_guarded y = h_guarded_alloc(16 * 40);
    CHECK_STATUS(moe_layer_forward(layer, 16, x, y.data, NULL), MOE_ERROR_BACKEND);
    const char *msg = moe_context_error(ctx);
    CHECK(strstr(msg, "CL_BUILD_PROGRAM_FAILURE") != NULL, "message: %s", msg);
    CHECK(strstr(msg, "build log:") != NULL && strstr(msg, "injected") != NULL, "no build log in: %s", msg);
    CHECK(h_untouched(&y), "output written after a failed build");
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    h_guarded_free(&y);
}

static void invalid_device(void)
{
    int count = 0;
    CHECK_STATUS(moe_device_count(MOE_BACKEND_OPENCL, &count), MOE_OK);
    moe_context_desc cd = {.struct_size = sizeof cd, .backend = MOE_BACKEND_OPENCL, .device_index = count};
    moe_context *ctx = NULL;
    CHECK_STATUS(moe_context_create(&cd, &ctx), MOE_ERROR_BACKEND_UNAVAILABLE);
    CHECK(ctx == NULL, "context written on failure");
    cd.device_index = -1;
    CHECK_STATUS(moe_context_create(&cd, &ctx), MOE_ERROR_BACKEND_UNAVAILABLE);
    moe_device_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_device_get_info(MOE_BACKEND_OPENCL, count, &info), MOE_ERROR_BACKEND_UNAVAILABLE);
}

static void binary_cache(h_layer *hl, const float *x, const char *dir)
{
    /* Start from an empty cache, so the first context must compile and save. */
    h_clear_cache_files(dir, "opencl-");
    setenv("MOE_CACHE_DIR", dir, 1);
    /* PoCL caches its programs itself, and saving a binary would cost it a second code
     * generation: unless asked (MOE_CL_BINARY_CACHE=1), a context there saves none. */
    moe_device_info info = {.struct_size = sizeof info};
    if (moe_device_get_info(MOE_BACKEND_OPENCL, 0, &info) == MOE_OK &&
        strstr(info.driver, "Portable Computing Language")) {
        unsetenv("MOE_CL_BINARY_CACHE");
        build_counts pocl = {0, 0};
        moe_context *ctx = context_logged(&pocl);
        moe_layer *layer = NULL;
        float y[16 * 40];
        if (ctx && moe_layer_create(ctx, &hl->desc, &hl->w, &layer) == MOE_OK)
            CHECK_STATUS(moe_layer_forward(layer, 16, x, y, NULL), MOE_OK);
        moe_layer_destroy(layer);
        moe_context_destroy(ctx);
        int caches, temps;
        h_count_cache_files(dir, "opencl-", ".bin", &caches, &temps);
        printf("  PoCL: %d programs built, %d binaries saved (its own kernel cache keeps them)\n",
               pocl.from_source + pocl.from_cache, caches);
        CHECK(pocl.from_cache == 0 && caches == 0 && temps == 0, "PoCL: %d binaries saved, %d loaded", caches,
              pocl.from_cache);
    }
    setenv("MOE_CL_BINARY_CACHE", "1", 1); /* moe's own cache, on every driver */
    build_counts counts[2] = {{0, 0}, {0, 0}};
    float y[2][16 * 40];
    for (int round = 0; round < 2; round++) { /* the second context loads what the first saved */
        moe_context *ctx = context_logged(&counts[round]);
        moe_layer *layer = NULL;
        if (!ctx) continue;
        CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
        CHECK_STATUS(moe_layer_forward(layer, 16, x, y[round], NULL), MOE_OK);
        moe_layer_destroy(layer);
        moe_context_destroy(ctx);
    }
    unsetenv("MOE_CACHE_DIR");
    printf("  builds: first context %d compiled + %d cached, second %d compiled + %d cached\n",
           counts[0].from_source, counts[0].from_cache, counts[1].from_source, counts[1].from_cache);
    CHECK(counts[0].from_source > 0, "the first context compiled nothing");
    CHECK(counts[1].from_source == 0, "the second context compiled %d program(s)", counts[1].from_source);
    CHECK(counts[1].from_cache == counts[0].from_source + counts[0].from_cache,
          "second context: %d from cache", counts[1].from_cache);
    CHECK(memcmp(y[0], y[1], sizeof y[0]) == 0, "a cached program computed something else");
    int caches, temps;
    h_count_cache_files(dir, "opencl-", ".bin", &caches, &temps);
    CHECK(caches >= counts[0].from_source, "%d program binaries in %s", caches, dir);
    CHECK(temps == 0, "%d temporary files left in %s", temps, dir);
    h_check_hostile_cache(MOE_BACKEND_OPENCL, dir, "opencl-", ".bin", hl, x, 16, y[0]);
    h_check_cache_bound(MOE_BACKEND_OPENCL, dir, "opencl-", ".bin", hl, x, 16);
    unsetenv("MOE_CL_BINARY_CACHE");
}

/* ---- features ------------------------------------------------------------------------------ */

/* The driver's side, through the ICD loader opened here (the test does not link OpenCL): its
 * devices in moe's order (every device of every platform, platform by platform). */
typedef struct cl_api {
    void *lib;
    cl_int (*get_platforms)(cl_uint, cl_platform_id *, cl_uint *);
    cl_int (*get_devices)(cl_platform_id, cl_device_type, cl_uint, cl_device_id *, cl_uint *);
    cl_int (*get_info)(cl_device_id, cl_device_info, size_t, void *, size_t *);
    cl_device_id devices[64];
    int n_devices;
} cl_api;

static bool cl_api_open(cl_api *api)
{
    memset(api, 0, sizeof *api);
    api->lib = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) api->lib = dlopen("libOpenCL.so", RTLD_NOW | RTLD_LOCAL);
    if (!api->lib) return false;
    *(void **)&api->get_platforms = dlsym(api->lib, "clGetPlatformIDs");
    *(void **)&api->get_devices = dlsym(api->lib, "clGetDeviceIDs");
    *(void **)&api->get_info = dlsym(api->lib, "clGetDeviceInfo");
    if (!api->get_platforms || !api->get_devices || !api->get_info) return false;
    cl_platform_id plats[16];
    cl_uint np = 0;
    if (api->get_platforms(16, plats, &np) != CL_SUCCESS) return false;
    for (cl_uint p = 0; p < np && p < 16 && api->n_devices < 64; p++) {
        cl_uint nd = 0;
        if (api->get_devices(plats[p], CL_DEVICE_TYPE_ALL, (cl_uint)(64 - api->n_devices),
                             api->devices + api->n_devices, &nd) != CL_SUCCESS)
            continue;
        api->n_devices += nd < (cl_uint)(64 - api->n_devices) ? (int)nd : 64 - api->n_devices;
    }
    return true;
}

/* A device string of any length (malloc'd; "" when the query fails). */
static char *cl_string(const cl_api *api, cl_device_id d, cl_device_info what)
{
    size_t n = 0;
    if (api->get_info(d, what, 0, NULL, &n) != CL_SUCCESS || n == 0) return calloc(1, 1);
    char *s = calloc(1, n + 1);
    if (s && api->get_info(d, what, n, s, NULL) != CL_SUCCESS) s[0] = '\0';
    return s;
}

/* Whether a space-separated list has the word. */
static bool has_word(const char *list, const char *word)
{
    char *copy = strdup(list), *save = NULL;
    bool found = false;
    for (char *t = strtok_r(copy, " ", &save); t && !found; t = strtok_r(NULL, " ", &save))
        found = strcmp(t, word) == 0;
    free(copy);
    return found;
}

static void features(void)
{
    /* 16/8-bit storage is core OpenCL: not a feature there. */
    const uint32_t storage_bits = MOE_FEATURE_STORAGE_16BIT | MOE_FEATURE_STORAGE_8BIT;
    char *saved = getenv("MOE_CL_DISABLE_SUBGROUPS") ? strdup(getenv("MOE_CL_DISABLE_SUBGROUPS")) : NULL;
    unsetenv("MOE_CL_DISABLE_SUBGROUPS");
    cl_api api;
    const bool driver = cl_api_open(&api);
    CHECK(driver, "the OpenCL ICD loader could not be opened here: %s", dlerror());
    int count = 0;
    CHECK_STATUS(moe_device_count(MOE_BACKEND_OPENCL, &count), MOE_OK);
    CHECK(!driver || api.n_devices == count, "moe lists %d devices, the loader %d", count, api.n_devices);
    for (int i = 0; i < count; i++) {
        moe_device_info info;
        h_check_gpu_device_features(MOE_BACKEND_OPENCL, i, storage_bits, &info);
        const uint32_t f = info.features;
        if (!driver || i >= api.n_devices) continue;
        char *ext = cl_string(&api, api.devices[i], CL_DEVICE_EXTENSIONS);
        char *cver = cl_string(&api, api.devices[i], CL_DEVICE_OPENCL_C_VERSION);
        int major = 0, minor = 0;
        if (!cver || sscanf(cver, "OpenCL C %d.%d", &major, &minor) != 2) major = 0;
        const bool fp16 = ext && has_word(ext, "cl_khr_fp16");
        const bool dot = ext && has_word(ext, "cl_khr_integer_dot_product");
        const bool sub = ext && has_word(ext, "cl_khr_subgroups") && major >= 2;
        CHECK(((f & MOE_FEATURE_FLOAT16) != 0) == fp16, "device %d: FLOAT16 %d, cl_khr_fp16 %d", i,
              (f & MOE_FEATURE_FLOAT16) != 0, fp16);
        CHECK(((f & MOE_FEATURE_INT_DOT) != 0) == dot, "device %d: INT_DOT %d, cl_khr_integer_dot_product %d",
              i, (f & MOE_FEATURE_INT_DOT) != 0, dot);
        CHECK(((f & MOE_FEATURE_SUBGROUP_REDUCE) != 0) == sub,
              "device %d: SUBGROUP_REDUCE %d, cl_khr_subgroups with OpenCL C 2.0+ %d ('%s')", i,
              (f & MOE_FEATURE_SUBGROUP_REDUCE) != 0, sub, cver ? cver : "");
        free(ext);
        free(cver);
    }
    if (api.lib) dlclose(api.lib);

    if (saved) setenv("MOE_CL_DISABLE_SUBGROUPS", saved, 1);
    free(saved);
    h_check_context_features(MOE_BACKEND_OPENCL, "MOE_CL_DISABLE_SUBGROUPS");
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    moe_device_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_context_get_device_info(ctx, &info), MOE_OK);
    CHECK(info.max_workgroup_size >= 64, "max_workgroup_size %llu",
          (unsigned long long)info.max_workgroup_size);
    CHECK(info.shared_memory_bytes >= 16384, "shared_memory_bytes %llu",
          (unsigned long long)info.shared_memory_bytes);
    CHECK(strncmp(info.api_version, "OpenCL ", 7) == 0, "api_version '%s'", info.api_version);
    CHECK(info.name[0] && info.vendor[0] && info.driver[0] && info.memory_bytes > 0,
          "incomplete device info");
    moe_context_destroy(ctx);

    h_rng r = h_rng_seeded("test_opencl");
    h_layer hl;
    h_layer_init(&hl, &desc, &r, 1.0f);
    float x[16 * 40];
    h_fill_input(&hl, 16, x, &r);
    features();
    invalid_device();
    h_check_device_lost(MOE_BACKEND_OPENCL, "MOE_CL_INJECT", "CL_OUT_OF_RESOURCES", &hl, x, 16);
    h_check_out_of_device_memory(MOE_BACKEND_OPENCL, "MOE_CL_INJECT", "CL_MEM_OBJECT_ALLOCATION_FAILURE",
                                 &hl);
    build_failure(&hl, x);
    binary_cache(&hl, x, argc > 2 ? argv[2] : "opencl-cache");
    h_layer_free(&hl);
    return h_finish("test_opencl");
}
