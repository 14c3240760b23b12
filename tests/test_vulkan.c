/*
 * test_vulkan.c — what only the Vulkan backend has: injected faults (MOE_VK_INJECT=lost makes
 * the next submission report VK_ERROR_DEVICE_LOST, =oom makes device allocations fail) give
 * their statuses, leave the caller's output untouched and, for a lost device, make every later
 * call fail the same way; the pipeline cache is written to the cache directory under a name
 * keyed by the driver, as a complete file (written whole, then renamed), and a FIFO or an
 * oversized file in its place is ignored with a warning; the device reports its limits.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "faults.h"

#include <stdlib.h>
#include <string.h>

static const moe_layer_desc desc = {.struct_size = sizeof(moe_layer_desc),
                                    .d_model = 40,
                                    .d_ff = 24,
                                    .n_experts = 8,
                                    .top_k = 2,
                                    .max_tokens = 16,
                                    .renormalize = 1};

static void pipeline_cache(h_layer *hl, const float *x, const char *dir)
{
    setenv("MOE_CACHE_DIR", dir, 1);
    float y[16 * 40];
    for (int round = 0; round < 2; round++) { /* the second context loads what the first saved */
        moe_context *ctx = h_context(MOE_BACKEND_VULKAN, 0);
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &hl->desc, &hl->w, &layer), MOE_OK);
        CHECK_STATUS(moe_layer_forward(layer, 16, x, y, NULL), MOE_OK);
        moe_layer_destroy(layer);
        moe_context_destroy(ctx);
    }
    unsetenv("MOE_CACHE_DIR");
    int caches, temps;
    h_count_cache_files(dir, "vulkan-", ".cache", &caches, &temps);
    CHECK(caches == 1, "%d pipeline cache files in %s", caches, dir);
    CHECK(temps == 0, "%d temporary files left in %s", temps, dir);
    h_check_hostile_cache(MOE_BACKEND_VULKAN, dir, "vulkan-", ".cache", hl, x, 16, y);
    h_check_cache_bound(MOE_BACKEND_VULKAN, dir, "vulkan-", ".cache", hl, x, 16);
}

/* A layer whose weights exceed the device's storage-buffer range (lavapipe's is 128 MiB; this
 * layer's expert weights are 276 MB) still matches the reference: the GEMM binds a group of
 * experts per dispatch. Skipped where the range is larger than the layer. */
static void weights_beyond_binding_range(h_rng *r)
{
    const moe_layer_desc big = {.struct_size = sizeof big,
                                .d_model = 1024,
                                .d_ff = 2816,
                                .n_experts = 8,
                                .top_k = 2,
                                .max_tokens = 6,
                                .renormalize = 1};
    h_layer hl;
    h_layer_init(&hl, &big, r, 1.0f);
    float *x = malloc(sizeof(float) * 6 * 1024), *y = malloc(sizeof(float) * 6 * 1024);
    float *yr = malloc(sizeof(float) * 6 * 1024);
    h_fill_input(&hl, 6, x, r);
    moe_context *ctx = h_context(MOE_BACKEND_VULKAN, 0);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &hl.desc, &hl.w, &layer), MOE_OK);
    CHECK_STATUS(moe_layer_forward(layer, 6, x, y, NULL), MOE_OK);
    CHECK_STATUS(moe_reference_forward(&hl.desc, &hl.w, 6, x, yr, NULL), MOE_OK);
    const double err = h_rel_l2(y, yr, 6 * 1024);
    CHECK(err <= 1e-5, "276 MB of expert weights: relative L2 error %.3g", err);
    printf("  weights of 276 MB (beyond a 128 MiB binding range): rel err %.2e\n", err);
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    free(x);
    free(y);
    free(yr);
    h_layer_free(&hl);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    moe_device_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_context_get_device_info(ctx, &info), MOE_OK);
    CHECK(info.max_workgroup_size >= 128, "max_workgroup_size %llu",
          (unsigned long long)info.max_workgroup_size);
    CHECK(info.shared_memory_bytes >= 16384, "shared_memory_bytes %llu",
          (unsigned long long)info.shared_memory_bytes);
    CHECK(strncmp(info.api_version, "Vulkan 1.", 9) == 0, "api_version '%s'", info.api_version);
    moe_context_destroy(ctx);

    h_rng r = h_rng_seeded("test_vulkan");
    h_layer hl;
    h_layer_init(&hl, &desc, &r, 1.0f);
    float x[16 * 40];
    h_fill_input(&hl, 16, x, &r);
    h_check_device_lost(MOE_BACKEND_VULKAN, "MOE_VK_INJECT", "VK_ERROR_DEVICE_LOST", &hl, x, 16);
    h_check_out_of_device_memory(MOE_BACKEND_VULKAN, "MOE_VK_INJECT", "VK_ERROR_OUT_OF_DEVICE_MEMORY", &hl);
    pipeline_cache(&hl, x, argc > 2 ? argv[2] : "vulkan-cache");
    weights_beyond_binding_range(&r);
    h_layer_free(&hl);
    return h_finish("test_vulkan");
}
