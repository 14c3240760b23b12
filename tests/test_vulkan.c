/*
 * test_vulkan.c — what only the Vulkan backend has: injected faults (MOE_VK_INJECT=lost makes
 * the next submission report VK_ERROR_DEVICE_LOST, =oom makes device allocations fail) give
 * their statuses, leave the caller's output untouched and, for a lost device, make every later
 * call fail the same way; the pipeline cache is written to the cache directory under a name
 * keyed by the driver, as a complete file (written whole, then renamed), and a FIFO or an
 * oversized file in its place is ignored with a warning; the device reports its limits; every
 * device's features (moe_device_info.features / features_used) agree with the driver's own
 * answer, asked here through a Vulkan instance of the test's own (storageBuffer16BitAccess,
 * storageBuffer8BitAccess, shaderFloat16, shaderIntegerDotProduct, subgroup arithmetic in
 * compute), never a CPU bit, and the kernels use SUBGROUP_REDUCE only (not at all in a context
 * made with MOE_VK_DISABLE_SUBGROUPS=1).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#define VK_NO_PROTOTYPES
#include "faults.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

static const moe_layer_desc desc = {.struct_size = sizeof(moe_layer_desc),
                                    .d_model = 40,
                                    .d_ff = 24,
                                    .n_experts = 8,
                                    .top_k = 2,
                                    .max_tokens = 16,
                                    .renormalize = 1};

static void pipeline_cache(h_layer *hl, const float *x, const char *dir)
{
    h_clear_cache_files(dir, "vulkan-"); /* the first context saves, the second loads */
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

/* ---- features ------------------------------------------------------------------------------ */

/* The driver's side, through the loader opened here and an instance of the test's own (the
 * library's Vulkan functions are private to it): the devices with a compute queue, in the
 * driver's order, as moe lists them. */
typedef struct vk_api {
    void *lib;
    VkInstance instance;
    uint32_t api; /* the test instance's version */
    PFN_vkGetInstanceProcAddr gipa;
    PFN_vkDestroyInstance destroy;
    PFN_vkGetPhysicalDeviceProperties props;
    PFN_vkGetPhysicalDeviceQueueFamilyProperties queues;
    PFN_vkGetPhysicalDeviceFeatures2 features2;
    PFN_vkGetPhysicalDeviceProperties2 props2;
    VkPhysicalDevice devices[64]; /* those with a compute queue, in the driver's order (as moe) */
    uint32_t n_devices;
} vk_api;

static bool vk_api_open(vk_api *v)
{
    memset(v, 0, sizeof *v);
    v->lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!v->lib) return false;
    *(void **)&v->gipa = dlsym(v->lib, "vkGetInstanceProcAddr");
    if (!v->gipa) return false;
    PFN_vkEnumerateInstanceVersion version =
        (PFN_vkEnumerateInstanceVersion)v->gipa(NULL, "vkEnumerateInstanceVersion");
    PFN_vkCreateInstance create = (PFN_vkCreateInstance)v->gipa(NULL, "vkCreateInstance");
    uint32_t loader = VK_API_VERSION_1_0;
    if (version && version(&loader) != VK_SUCCESS) loader = VK_API_VERSION_1_0;
    v->api = loader >= VK_API_VERSION_1_3   ? VK_API_VERSION_1_3
             : loader >= VK_API_VERSION_1_1 ? VK_API_VERSION_1_1
                                            : VK_API_VERSION_1_0;
    const VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "test_vulkan", .apiVersion = v->api};
    const VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                     .pApplicationInfo = &app};
    if (!create || create(&ci, NULL, &v->instance) != VK_SUCCESS) return false;
#define LOAD(field, name) v->field = (PFN_##name)v->gipa(v->instance, #name)
    LOAD(destroy, vkDestroyInstance);
    LOAD(props, vkGetPhysicalDeviceProperties);
    LOAD(queues, vkGetPhysicalDeviceQueueFamilyProperties);
    PFN_vkEnumeratePhysicalDevices enumerate =
        (PFN_vkEnumeratePhysicalDevices)v->gipa(v->instance, "vkEnumeratePhysicalDevices");
    if (v->api >= VK_API_VERSION_1_1) {
        LOAD(features2, vkGetPhysicalDeviceFeatures2);
        LOAD(props2, vkGetPhysicalDeviceProperties2);
    }
#undef LOAD
    uint32_t n = 64;
    VkPhysicalDevice all[64];
    if (!v->destroy || !v->props || !v->queues || !enumerate) return false;
    const VkResult r = enumerate(v->instance, &n, all);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) return false;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t nq = 16;
        VkQueueFamilyProperties q[16];
        v->queues(all[i], &nq, q);
        bool compute = false;
        for (uint32_t j = 0; j < nq; j++) compute = compute || (q[j].queueFlags & VK_QUEUE_COMPUTE_BIT);
        if (compute) v->devices[v->n_devices++] = all[i];
    }
    return true;
}

static void vk_api_close(vk_api *v)
{
    /* The library's own instance keeps the driver loaded, so this one's teardown unloads nothing. */
    if (v->instance && v->destroy) v->destroy(v->instance, NULL);
    if (v->lib) dlclose(v->lib);
}

/* The driver's answer for one device: the MOE_FEATURE_* bits the test could ask for in *asked
 * (each only where the device's version, up to the test instance's, has its struct; the
 * extension route the library also takes is not repeated here) and the answers in *got. */
static void vk_driver_features(const vk_api *v, VkPhysicalDevice pd, uint32_t *asked, uint32_t *got)
{
    *asked = *got = 0;
    VkPhysicalDeviceProperties p;
    v->props(pd, &p);
    const uint32_t api = p.apiVersion < v->api ? p.apiVersion : v->api;
    if (api < VK_API_VERSION_1_1 || !v->features2 || !v->props2) return;
    VkPhysicalDeviceShaderIntegerDotProductFeatures dot = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
        .pNext = api >= VK_API_VERSION_1_3 ? &dot : NULL};
    VkPhysicalDevice8BitStorageFeatures s8 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES, .pNext = &f16};
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType =
                                                    VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
                                                .pNext = api >= VK_API_VERSION_1_2 ? (void *)&s8 : NULL};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
    v->features2(pd, &f2);
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
    v->props2(pd, &p2);
    const bool arithmetic = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                            (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    *asked = MOE_FEATURE_STORAGE_16BIT | MOE_FEATURE_SUBGROUP_REDUCE;
    *got = (s16.storageBuffer16BitAccess ? MOE_FEATURE_STORAGE_16BIT : 0u) |
           (arithmetic ? MOE_FEATURE_SUBGROUP_REDUCE : 0u);
    if (api >= VK_API_VERSION_1_2) {
        *asked |= MOE_FEATURE_STORAGE_8BIT | MOE_FEATURE_FLOAT16;
        *got |= (s8.storageBuffer8BitAccess ? MOE_FEATURE_STORAGE_8BIT : 0u) |
                (f16.shaderFloat16 ? MOE_FEATURE_FLOAT16 : 0u);
    }
    if (api >= VK_API_VERSION_1_3) {
        *asked |= MOE_FEATURE_INT_DOT;
        *got |= dot.shaderIntegerDotProduct ? MOE_FEATURE_INT_DOT : 0u;
    }
}

static void features(void)
{
    char *saved = getenv("MOE_VK_DISABLE_SUBGROUPS") ? strdup(getenv("MOE_VK_DISABLE_SUBGROUPS")) : NULL;
    unsetenv("MOE_VK_DISABLE_SUBGROUPS");
    vk_api v;
    const bool driver = vk_api_open(&v);
    CHECK(driver, "no Vulkan instance of the test's own (libvulkan.so.1: %s)", v.lib ? "loaded" : dlerror());
    int count = 0;
    CHECK_STATUS(moe_device_count(MOE_BACKEND_VULKAN, &count), MOE_OK);
    CHECK(!driver || (int)v.n_devices == count, "moe lists %d devices, the driver %u", count, v.n_devices);
    for (int i = 0; i < count; i++) {
        moe_device_info info;
        h_check_gpu_device_features(MOE_BACKEND_VULKAN, i, 0, &info);
        const uint32_t f = info.features;
        if (!driver || i >= (int)v.n_devices) continue;
        uint32_t asked = 0, got = 0;
        vk_driver_features(&v, v.devices[i], &asked, &got);
        CHECK((f & asked) == got, "device %d: features 0x%x, the driver says 0x%x of 0x%x asked", i, f, got,
              asked);
    }
    vk_api_close(&v);

    if (saved) setenv("MOE_VK_DISABLE_SUBGROUPS", saved, 1);
    free(saved);
    h_check_context_features(MOE_BACKEND_VULKAN, "MOE_VK_DISABLE_SUBGROUPS");
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
    features();

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
