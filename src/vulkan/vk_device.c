/*
 * vk_device.c — the Vulkan backend's instance, devices and context: volk loading, one
 * process-wide VkInstance shared by every context and one physical-device list (each made
 * once, under a lock that also covers property queries and device creation), the features a
 * weight format's kernels could use (moe_device_info.features) and those moe uses, limits →
 * kernel sizes, the logical device and its compute queue, the optional Khronos validation
 * layer, and the backend's ops table.
 *
 * MOE_VK_VALIDATION=1 enables VK_LAYER_KHRONOS_validation with a VK_EXT_debug_utils
 * messenger; any warning or error it reports makes the next call fail with its text.
 * The validation setting is read when the process first uses Vulkan.
 * MOE_VK_INJECT=oom|lost makes device allocations fail / the next submission report a lost
 * device, so those paths can be tested.
 */
#define _POSIX_C_SOURCE 200809L
#include "../alloc.h"
#include "vk_internal.h"

#include "../platform/thread.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors -------------------------------------------------------------------------------- */

const char *moe_vk_result_name(VkResult r)
{
    switch (r) {
    case VK_SUCCESS:
        return "VK_SUCCESS";
    case VK_NOT_READY:
        return "VK_NOT_READY";
    case VK_TIMEOUT:
        return "VK_TIMEOUT";
    case VK_INCOMPLETE:
        return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
        return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
        return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
        return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
        return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
        return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
        return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
        return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
        return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED:
        return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL:
        return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
        return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default:
        return "VkResult (unnamed)";
    }
}

moe_status moe_vk_fail(moe_vk_backend *b, VkResult r, const char *call)
{
    moe_status st = MOE_ERROR_BACKEND;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY) st = MOE_ERROR_OUT_OF_DEVICE_MEMORY;
    if (r == VK_ERROR_OUT_OF_HOST_MEMORY) st = MOE_ERROR_OUT_OF_MEMORY;
    if (r == VK_ERROR_DEVICE_LOST) {
        st = MOE_ERROR_DEVICE_LOST;
        if (b) b->lost = true;
    }
    return moe_fail(b ? b->base.ctx : NULL, st, "vulkan: %s failed: %s (%d)", call, moe_vk_result_name(r),
                    (int)r);
}

/* ---- the shared instance and the device list ------------------------------------------------ */

#define MAX_DEVICES 64

/* g_lock serialises everything that may touch a driver's process-wide state: the instance
 * (created once, kept until exit), the physical-device list (listed once), every property
 * query, and device creation. Drivers build that state on first use and are not all
 * thread-safe there (PoCL is not, on the OpenCL side), so moe.h's promise that separate
 * contexts may be created concurrently holds for every driver only with the lock.
 * g_msg_lock guards the validation messages apart: the messenger's callback runs inside
 * driver calls made under g_lock. Neither lock is held while calling the log callback. */
static moe_mutex g_lock = MOE_MUTEX_INIT;
static VkInstance g_instance;
static bool g_validation;
static VkDebugUtilsMessengerEXT g_messenger;
static bool g_listed; /* g_devices holds the compute-capable physical devices */
/* Why there is no Vulkan here (no loader, no driver), once found: zero devices, kept like a
 * listing (OpenCL keeps "no platform" the same way), so that a machine without Vulkan does not
 * load the loader and ask for an instance again at every context creation. */
static char g_no_vulkan[256];
static uint32_t g_n_devices;
static VkPhysicalDevice g_devices[MAX_DEVICES];
static int g_compute_units[MAX_DEVICES]; /* asked once, when listed (it takes an allocation) */
static uint32_t g_features[MAX_DEVICES]; /* MOE_FEATURE_* bits, asked once when listed (device_features) */

/* The instance-level functions the device queries go through, and the instance's version:
 * moe's own instance's (volk's, g_own), or an application's (its get_instance_proc_addr), so a
 * borrowed device is asked through the loader it came from. */
typedef struct moe_vk_ifn {
    uint32_t api; /* what the instance was created for: the queries a device may be asked */
    PFN_vkGetPhysicalDeviceProperties props;
    PFN_vkGetPhysicalDeviceProperties2 props2;
    PFN_vkGetPhysicalDeviceFeatures2 features2;
    PFN_vkGetPhysicalDeviceMemoryProperties memory;
    PFN_vkGetPhysicalDeviceQueueFamilyProperties queues;
    PFN_vkEnumerateDeviceExtensionProperties extensions;
    PFN_vkGetDeviceProcAddr device_proc;
} moe_vk_ifn;
static moe_vk_ifn g_own;

static moe_mutex g_msg_lock = MOE_MUTEX_INIT;
static char g_validation_msg[MOE_ERROR_MAX]; /* first unreported validation message */
static int g_validation_count;

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                    VkDebugUtilsMessageTypeFlagsEXT types,
                                                    const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                    void *user)
{
    (void)types;
    (void)user;
    if (severity < VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) return VK_FALSE;
    moe_mutex_lock(&g_msg_lock);
    if (g_validation_count++ == 0)
        snprintf(g_validation_msg, sizeof g_validation_msg, "%s",
                 data && data->pMessage ? data->pMessage : "?");
    moe_mutex_unlock(&g_msg_lock);
    return VK_FALSE;
}

moe_status moe_vk_check_validation(moe_vk_backend *b)
{
    moe_mutex_lock(&g_msg_lock);
    const int n = g_validation_count;
    char msg[MOE_ERROR_MAX];
    memcpy(msg, g_validation_msg, sizeof msg);
    g_validation_count = 0;
    moe_mutex_unlock(&g_msg_lock);
    if (n == 0) return MOE_OK;
    return moe_fail(b ? b->base.ctx : NULL, MOE_ERROR_BACKEND, "vulkan validation (%d message%s): %s", n,
                    n == 1 ? "" : "s", msg);
}

static VkResult has_layer(const char *name, bool *found)
{
    uint32_t n = 0;
    *found = false;
    VkResult r = vkEnumerateInstanceLayerProperties(&n, NULL);
    if (r != VK_SUCCESS || n == 0) return r;
    VkLayerProperties *p = moe_calloc(n, sizeof *p);
    if (!p) return VK_ERROR_OUT_OF_HOST_MEMORY;
    r = vkEnumerateInstanceLayerProperties(&n, p);
    if (r == VK_INCOMPLETE) r = VK_SUCCESS; /* a layer installed meanwhile; the first n do */
    for (uint32_t i = 0; r == VK_SUCCESS && i < n; i++) *found = *found || !strcmp(p[i].layerName, name);
    moe_free(p);
    return r;
}

/* A VkResult of the process-wide setup → status. Out of memory is the host's there: no
 * device, whose memory could be short, has been chosen yet. */
static moe_status setup_status(VkResult r)
{
    return r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? MOE_ERROR_OUT_OF_MEMORY
                                                                                  : MOE_ERROR_BACKEND;
}

/* The Vulkan version the instance is created for: 1.3, 1.1 or 1.0, as far as the loader goes
 * (after volkInitialize). A physical device's own version counts only up to it. */
static uint32_t instance_api(void)
{
    const uint32_t loader = volkGetInstanceVersion();
    return loader >= VK_API_VERSION_1_3   ? VK_API_VERSION_1_3
           : loader >= VK_API_VERSION_1_1 ? VK_API_VERSION_1_1
                                          : VK_API_VERSION_1_0;
}

/* With g_lock held: the process-wide instance, created on first use and kept until the
 * process exits (tearing it down would unload the driver, which leaks inside some drivers —
 * lavapipe's LLVM, seen under LeakSanitizer — and recreating it would cost every short-lived
 * context a driver load). MOE_OK; MOE_ERROR_BACKEND_UNAVAILABLE when there is no loader or
 * no driver (zero devices, kept in g_no_vulkan); or an error status. `why` says which. A failure
 * is not kept: the next call tries again. */
static moe_status no_vulkan(char *why, size_t why_size)
{
    snprintf(why, why_size, "%s", g_no_vulkan);
    return MOE_ERROR_BACKEND_UNAVAILABLE;
}

static moe_status instance_locked(char *why, size_t why_size)
{
    if (g_instance != VK_NULL_HANDLE) return MOE_OK;
    if (g_no_vulkan[0]) return no_vulkan(why, why_size);
    VkResult r = volkInitialize();
    if (r != VK_SUCCESS) {
#if defined(_WIN32)
        snprintf(g_no_vulkan, sizeof g_no_vulkan, "no Vulkan loader (vulkan-1.dll) could be loaded");
#else
        snprintf(g_no_vulkan, sizeof g_no_vulkan, "no Vulkan loader (libvulkan) could be loaded");
#endif
        return no_vulkan(why, why_size);
    }
    const char *want = getenv("MOE_VK_VALIDATION");
    g_validation = want && *want && strcmp(want, "0") != 0;
    const char *layer = "VK_LAYER_KHRONOS_validation";
    const char *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    if (g_validation) {
        bool found = false;
        r = has_layer(layer, &found);
        if (r != VK_SUCCESS) {
            snprintf(why, why_size, "vkEnumerateInstanceLayerProperties failed: %s (%d)",
                     moe_vk_result_name(r), (int)r);
            return setup_status(r);
        }
        if (!found) {
            snprintf(why, why_size, "MOE_VK_VALIDATION is set but %s is not installed", layer);
            return MOE_ERROR_BACKEND;
        }
    }
    const uint32_t api = instance_api();
    const VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                                   .pApplicationName = "moe",
                                   .pEngineName = "moe",
                                   .engineVersion = MOE_VERSION_NUMBER,
                                   .apiVersion = api};
    const VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                     .pApplicationInfo = &app,
                                     .enabledLayerCount = g_validation ? 1 : 0,
                                     .ppEnabledLayerNames = &layer,
                                     .enabledExtensionCount = g_validation ? 1 : 0,
                                     .ppEnabledExtensionNames = &ext};
    VkInstance inst = VK_NULL_HANDLE;
    r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY, vkCreateInstance(&ci, NULL, &inst));
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED) {
        /* The loader found no driver (no ICD, or none that loads): a machine without Vulkan. */
        snprintf(g_no_vulkan, sizeof g_no_vulkan, "no Vulkan driver: vkCreateInstance failed: %s (%d)",
                 moe_vk_result_name(r), (int)r);
        return no_vulkan(why, why_size);
    }
    if (r != VK_SUCCESS) {
        snprintf(why, why_size, "vkCreateInstance failed: %s (%d)", moe_vk_result_name(r), (int)r);
        return setup_status(r);
    }
    volkLoadInstanceOnly(inst);
    g_own = (moe_vk_ifn){.api = api,
                         .props = vkGetPhysicalDeviceProperties,
                         .props2 = vkGetPhysicalDeviceProperties2,
                         .features2 = vkGetPhysicalDeviceFeatures2,
                         .memory = vkGetPhysicalDeviceMemoryProperties,
                         .queues = vkGetPhysicalDeviceQueueFamilyProperties,
                         .extensions = vkEnumerateDeviceExtensionProperties,
                         .device_proc = vkGetDeviceProcAddr};
    if (g_validation) {
        const VkDebugUtilsMessengerCreateInfoEXT mi = {
            .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
            .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
            .pfnUserCallback = on_validation};
        r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                              vkCreateDebugUtilsMessengerEXT(inst, &mi, NULL, &g_messenger));
        if (r != VK_SUCCESS) {
            g_messenger = VK_NULL_HANDLE;
            vkDestroyInstance(inst, NULL);
            snprintf(why, why_size, "vkCreateDebugUtilsMessengerEXT failed: %s (%d)", moe_vk_result_name(r),
                     (int)r);
            return setup_status(r);
        }
    }
    g_instance = inst;
    return MOE_OK;
}

/* Whether the physical device offers a device extension, in *found; false when the list
 * could not be had (out of host memory). */
static bool has_device_extension(const moe_vk_ifn *I, VkPhysicalDevice pd, const char *name, bool *found)
{
    uint32_t n = 0;
    *found = false;
    if (I->extensions(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0) return true;
    VkExtensionProperties *e = moe_calloc(n, sizeof *e);
    if (!e) return false;
    if (I->extensions(pd, NULL, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !*found; i++) *found = !strcmp(e[i].extensionName, name);
    moe_free(e);
    return true;
}

/* Compute units (NVIDIA SMs, AMD CUs): core Vulkan has no such query, so only the vendor
 * extensions that report it are asked; 0 = unknown (lavapipe, Intel, Arm, ...), -1 = out of
 * host memory. */
static int compute_units(const moe_vk_ifn *I, VkPhysicalDevice pd)
{
    VkPhysicalDeviceProperties p;
    I->props(pd, &p);
    if (p.apiVersion < VK_API_VERSION_1_1 || I->api < VK_API_VERSION_1_1) return 0;
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    bool nv = false, amd = false;
    if (!has_device_extension(I, pd, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME, &nv) ||
        !has_device_extension(I, pd, VK_AMD_SHADER_CORE_PROPERTIES_EXTENSION_NAME, &amd))
        return -1;
    if (nv) {
        VkPhysicalDeviceShaderSMBuiltinsPropertiesNV sm = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV};
        p2.pNext = &sm;
        I->props2(pd, &p2);
        return (int)sm.shaderSMCount;
    }
    if (amd) {
        VkPhysicalDeviceShaderCorePropertiesAMD core = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD};
        p2.pNext = &core;
        I->props2(pd, &p2);
        return (int)(core.shaderEngineCount * core.shaderArraysPerEngineCount *
                     core.computeUnitsPerShaderArray);
    }
    return 0;
}

/* What a physical device offers that a weight format's kernels could use (moe.h's
 * MOE_FEATURE_* bits), in *features; false when out of host memory. Asked once, when the
 * devices are listed, since it may list the device's extensions (an allocation).
 *   STORAGE_16BIT  VkPhysicalDevice16BitStorageFeatures.storageBuffer16BitAccess (core 1.1)
 *   STORAGE_8BIT   VkPhysicalDevice8BitStorageFeatures.storageBuffer8BitAccess (1.2 or VK_KHR_8bit_storage)
 *   FLOAT16        VkPhysicalDeviceShaderFloat16Int8Features.shaderFloat16 (1.2 or
 *                  VK_KHR_shader_float16_int8)
 *   INT_DOT        VkPhysicalDeviceShaderIntegerDotProductFeatures.shaderIntegerDotProduct (1.3 or
 *                  VK_KHR_shader_integer_dot_product)
 *   SUBGROUP_REDUCE  subgroup arithmetic in the compute stage (VkPhysicalDeviceSubgroupProperties,
 *                  1.1): what picks the kernels' subgroup variants (open_device_locked)
 * vkGetPhysicalDeviceFeatures2 and the subgroup properties are Vulkan 1.1 queries, asked only
 * where both the device and the instance are 1.1 or later (the instance is not created with
 * VK_KHR_get_physical_device_properties2); an older device or loader reports no feature. A
 * feature struct goes into the chain only where the device knows it — its version, counted no
 * higher than the instance's, includes the struct, or it lists the extension — never assumed:
 * a struct the driver does not know is invalid usage, and a driver may then leave it unread
 * (zero) or worse. */
static bool device_features(const moe_vk_ifn *I, VkPhysicalDevice pd, uint32_t *features)
{
    *features = 0;
    VkPhysicalDeviceProperties p;
    I->props(pd, &p);
    const uint32_t api = p.apiVersion < I->api ? p.apiVersion : I->api;
    if (api < VK_API_VERSION_1_1) return true;
    bool has8 = api >= VK_API_VERSION_1_2, has_f16 = api >= VK_API_VERSION_1_2,
         has_dot = api >= VK_API_VERSION_1_3;
    if ((!has8 && !has_device_extension(I, pd, VK_KHR_8BIT_STORAGE_EXTENSION_NAME, &has8)) ||
        (!has_f16 && !has_device_extension(I, pd, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME, &has_f16)) ||
        (!has_dot &&
         !has_device_extension(I, pd, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME, &has_dot)))
        return false;
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType =
                                                    VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDevice8BitStorageFeatures s8 = {.sType =
                                                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
    VkPhysicalDeviceShaderIntegerDotProductFeatures dot = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
    void **tail = &s16.pNext;
    if (has8) {
        *tail = &s8;
        tail = &s8.pNext;
    }
    if (has_f16) {
        *tail = &f16;
        tail = &f16.pNext;
    }
    if (has_dot) *tail = &dot;
    I->features2(pd, &f2);
    VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
    I->props2(pd, &p2);
    if (s16.storageBuffer16BitAccess) *features |= MOE_FEATURE_STORAGE_16BIT;
    if (has8 && s8.storageBuffer8BitAccess) *features |= MOE_FEATURE_STORAGE_8BIT;
    if (has_f16 && f16.shaderFloat16) *features |= MOE_FEATURE_FLOAT16;
    if (has_dot && dot.shaderIntegerDotProduct) *features |= MOE_FEATURE_INT_DOT;
    if ((sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
        (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT))
        *features |= MOE_FEATURE_SUBGROUP_REDUCE;
    return true;
}

/* The subset of a device's features moe's kernels use: subgroup arithmetic, by the decode
 * (matvec) and combine kernels' subgroup variants (subgroupAdd), where they are picked
 * (`subgroup_variants`: the device has SUBGROUP_REDUCE and MOE_VK_DISABLE_SUBGROUPS is not set).
 * Nothing else: the kernels read every weight format as 32-bit words and compute in float32, so
 * 16/8-bit storage, float16 and integer dot products are reported but not used. The one place
 * that decides, for moe_device_get_info and a context's info alike. */
static uint32_t features_used(bool subgroup_variants)
{
    return subgroup_variants ? (uint32_t)MOE_FEATURE_SUBGROUP_REDUCE : 0u;
}

/* With g_lock held: the instance and the physical devices that have a compute queue, in the
 * driver's order (listed once). Statuses as instance_locked. */
static moe_status devices_locked(char *why, size_t why_size)
{
    moe_status st = instance_locked(why, why_size);
    if (st != MOE_OK || g_listed) return st;
    uint32_t n = MAX_DEVICES;
    VkPhysicalDevice all[MAX_DEVICES];
    VkResult r = vkEnumeratePhysicalDevices(g_instance, &n, all);
    if (r == VK_INCOMPLETE) r = VK_SUCCESS; /* more than MAX_DEVICES: the first ones */
    if (r == VK_ERROR_INITIALIZATION_FAILED) {
        snprintf(why, why_size, "no usable Vulkan driver: vkEnumeratePhysicalDevices failed: %s (%d)",
                 moe_vk_result_name(r), (int)r);
        return MOE_ERROR_BACKEND_UNAVAILABLE;
    }
    if (r != VK_SUCCESS) {
        snprintf(why, why_size, "vkEnumeratePhysicalDevices failed: %s (%d)", moe_vk_result_name(r), (int)r);
        return setup_status(r);
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n && i < MAX_DEVICES; i++) {
        uint32_t nq = 16;
        VkQueueFamilyProperties q[16];
        g_own.queues(all[i], &nq, q);
        bool compute = false;
        for (uint32_t j = 0; j < nq && j < 16; j++)
            compute = compute || (q[j].queueFlags & VK_QUEUE_COMPUTE_BIT);
        if (!compute) continue;
        g_compute_units[kept] = compute_units(&g_own, all[i]);
        if (g_compute_units[kept] < 0 || !device_features(&g_own, all[i], &g_features[kept])) {
            snprintf(why, why_size, "out of host memory listing the device extensions of a Vulkan device");
            return setup_status(VK_ERROR_OUT_OF_HOST_MEMORY);
        }
        g_devices[kept++] = all[i];
    }
    g_n_devices = kept;
    g_listed = true;
    return MOE_OK;
}

static moe_status moe_vk_device_count(int *count)
{
    char why[256] = "";
    moe_mutex_lock(&g_lock);
    const moe_status st = devices_locked(why, sizeof why);
    const int n = (int)g_n_devices;
    moe_mutex_unlock(&g_lock);
    if (st == MOE_ERROR_BACKEND_UNAVAILABLE) { /* no loader or no driver: zero devices */
        *count = 0;
        return MOE_OK;
    }
    if (st != MOE_OK) return moe_fail(NULL, st, "vulkan: %s", why); /* a driver error, not "no device" */
    *count = n;
    return MOE_OK;
}

static const char *vendor_name(uint32_t id)
{
    switch (id) {
    case 0x10de:
        return "NVIDIA";
    case 0x1002:
        return "AMD";
    case 0x8086:
        return "Intel";
    case 0x13b5:
        return "Arm";
    case 0x5143:
        return "Qualcomm";
    case 0x106b:
        return "Apple";
    case 0x10005:
        return "Mesa";
    default:
        return NULL;
    }
}

/* A device's info: `index` in the list (-1: a borrowed device not in it), its compute units
 * and features as device_features gives them. Property queries only. */
static void fill_info(const moe_vk_ifn *I, VkPhysicalDevice pd, int index, int n_units, uint32_t features,
                      moe_device_info *info)
{
    VkPhysicalDeviceProperties p;
    I->props(pd, &p);
    VkPhysicalDeviceMemoryProperties m;
    I->memory(pd, &m);
    *info = (moe_device_info){.struct_size = sizeof *info, .backend = MOE_BACKEND_VULKAN, .index = index};
    switch (p.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        info->type = MOE_DEVICE_TYPE_INTEGRATED_GPU;
        break;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        info->type = MOE_DEVICE_TYPE_DISCRETE_GPU;
        break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        info->type = MOE_DEVICE_TYPE_VIRTUAL_GPU;
        break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        info->type = MOE_DEVICE_TYPE_CPU;
        break;
    default:
        info->type = MOE_DEVICE_TYPE_OTHER;
    }
    snprintf(info->name, sizeof info->name, "%s", p.deviceName);
    const char *v = vendor_name(p.vendorID);
    if (v)
        snprintf(info->vendor, sizeof info->vendor, "%s", v);
    else
        snprintf(info->vendor, sizeof info->vendor, "0x%04x", p.vendorID);
    snprintf(info->driver, sizeof info->driver, "Vulkan %u.%u.%u, driver 0x%08x",
             VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion),
             VK_API_VERSION_PATCH(p.apiVersion), p.driverVersion);
    for (uint32_t i = 0; i < m.memoryHeapCount; i++)
        if ((m.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            m.memoryHeaps[i].size > info->memory_bytes)
            info->memory_bytes = m.memoryHeaps[i].size;
    info->compute_units = n_units;
    snprintf(info->api_version, sizeof info->api_version, "Vulkan %u.%u.%u",
             VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion),
             VK_API_VERSION_PATCH(p.apiVersion));
    info->max_workgroup_size = p.limits.maxComputeWorkGroupInvocations;
    info->shared_memory_bytes = p.limits.maxComputeSharedMemorySize;
    /* The subgroup size and the driver's name need Vulkan 1.1 / 1.2 queries; older devices
     * report 0 / the numbers above. */
    if (p.apiVersion >= VK_API_VERSION_1_1 && I->api >= VK_API_VERSION_1_1) {
        VkPhysicalDeviceSubgroupProperties sub = {.sType =
                                                      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = &sub};
        I->props2(pd, &p2);
        info->subgroup_size = (int)sub.subgroupSize;
        if (p.apiVersion >= VK_API_VERSION_1_2) {
            /* The driver's own name and version string ("llvmpipe", "Mesa 22.3.6 (LLVM 15.0.6)"). */
            VkPhysicalDeviceDriverProperties drv = {.sType =
                                                        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
            VkPhysicalDeviceProperties2 pd2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                               .pNext = &drv};
            I->props2(pd, &pd2);
            if (drv.driverName[0])
                snprintf(info->driver, sizeof info->driver, "%.40s %.60s (Vulkan %u.%u)", drv.driverName,
                         drv.driverInfo, VK_API_VERSION_MAJOR(p.apiVersion),
                         VK_API_VERSION_MINOR(p.apiVersion));
        }
    }
    /* Features as listed (device_features). features_used is what a new context would use with
     * no test switch set: the subgroup variants wherever the device has subgroup arithmetic. A
     * context's own info is refilled after MOE_VK_DISABLE_SUBGROUPS (moe_vk_create), so
     * moe_context_get_device_info says what that context really runs. */
    info->features = features;
    info->features_used = features_used((info->features & MOE_FEATURE_SUBGROUP_REDUCE) != 0);
    info->fp16 = (info->features & MOE_FEATURE_FLOAT16) != 0;
}

static moe_status moe_vk_device_info(int index, moe_device_info *info)
{
    char why[256] = "";
    moe_mutex_lock(&g_lock);
    const moe_status st = devices_locked(why, sizeof why);
    const uint32_t n = g_n_devices;
    const bool have = st == MOE_OK && index >= 0 && (uint32_t)index < n;
    if (have) fill_info(&g_own, g_devices[index], index, g_compute_units[index], g_features[index], info);
    moe_mutex_unlock(&g_lock);
    if (st != MOE_OK) return moe_fail(NULL, st, "vulkan: %s", why);
    if (!have)
        return moe_fail(NULL, MOE_ERROR_BACKEND_UNAVAILABLE, "vulkan: no device %d (%u found)", index, n);
    return MOE_OK;
}

/* ---- context ------------------------------------------------------------------------------- */

static uint32_t pow2_floor(uint32_t v)
{
    uint32_t p = 1;
    while (p * 2 <= v) p *= 2;
    return p;
}

/* Kernel sizes from the device's limits (never assumed). */
static moe_status choose_sizes(moe_vk_backend *b)
{
    const VkPhysicalDeviceLimits *l = &b->props.limits;
    const uint32_t max_wg = l->maxComputeWorkGroupInvocations < l->maxComputeWorkGroupSize[0]
                                ? l->maxComputeWorkGroupInvocations
                                : l->maxComputeWorkGroupSize[0];
    b->wg_big = pow2_floor(max_wg < 256 ? max_wg : 256);
    b->wg_small = b->wg_big < 64 ? b->wg_big : 64;
    /* GEMM tiles. GPUs: 64×64 tiles staged through shared memory, 256 invocations of 4×4
     * accumulators (64 of 8×8 where fewer invocations are allowed). CPU-type devices
     * (lavapipe, SwiftShader): 32×32 tiles read straight from memory by 64 invocations of
     * 4×4 (see gemm.comp's USE_SHARED); measured on lavapipe this is ~2x a plain per-thread
     * dot product, while the shared-memory form is slower than both there. MOE_VK_GEMM_BM,
     * MOE_VK_GEMM_TM and MOE_VK_GEMM_SHARED override, for experiments. */
    const bool cpu_device = b->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    b->gemm_bm = b->gemm_bn = cpu_device ? 32 : 64;
    b->gemm_bk = 16;
    b->gemm_tm = b->gemm_tn = cpu_device || max_wg >= 256 ? 4 : 8;
    b->gemm_shared = !cpu_device;
    const char *env;
    if ((env = getenv("MOE_VK_GEMM_BM")) != NULL) b->gemm_bm = b->gemm_bn = (uint32_t)atoi(env);
    if ((env = getenv("MOE_VK_GEMM_TM")) != NULL) b->gemm_tm = b->gemm_tn = (uint32_t)atoi(env);
    if ((env = getenv("MOE_VK_GEMM_SHARED")) != NULL) b->gemm_shared = (uint32_t)atoi(env) != 0;
    if (b->gemm_tm == 0 || b->gemm_bm % b->gemm_tm != 0 || b->gemm_bm % b->gemm_bk != 0)
        return moe_fail(b->base.ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "vulkan: bad GEMM tile override (BM %u, TM %u)", b->gemm_bm, b->gemm_tm);
    const size_t shared = sizeof(float) * b->gemm_bk * (b->gemm_bm + 2 * b->gemm_bn);
    if ((b->gemm_bm / b->gemm_tm) * (b->gemm_bn / b->gemm_tn) > max_wg ||
        (b->gemm_shared && shared > l->maxComputeSharedMemorySize))
        return moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                        "vulkan: device limits too small (%u invocations, %u bytes of shared memory)", max_wg,
                        l->maxComputeSharedMemorySize);
    /* The decode kernel (matvec.comp). GPUs: 64 invocations split K (two NVIDIA warps, one AMD
     * wave64, a few Intel/Arm subgroups), 4 columns a workgroup, so a decode step of a real layer
     * is thousands of workgroups. CPU-type devices: one workgroup is one SIMD batch of the
     * driver (its subgroup; lavapipe runs a larger workgroup as coroutines switched at every
     * barrier), with 16 columns to share each activation load — measured on lavapipe (8 lanes)
     * at the olmoe-1b-7b shape, T=1, F32: 65-90 ms of kernels against 190-240 ms for 64 × 4
     * and 100-150 ms for 16 × 16. It replaces the GEMM while experts get at most 4 rows each
     * (moe_kuse_matvec): a 64-row tile is then 1/16 full. MOE_VK_MATVEC_WG, _COLS and _ROWS
     * override (ROWS 0: never; a large value: always), for experiments and the tests. */
    const uint32_t lanes = b->subgroup_size >= 4 && b->subgroup_size <= 64 ? pow2_floor(b->subgroup_size) : 8;
    b->matvec_wg = cpu_device ? (lanes < max_wg ? lanes : pow2_floor(max_wg)) : b->wg_small;
    b->matvec_cols = cpu_device ? 16 : 4;
    b->matvec_max_rows = 4;
    /* For experiments: how long a wait polls its fence before it blocks (a blocked thread
     * wakes some tens of microseconds after the device is done, a decode forward's whole cost). */
    if ((env = getenv("MOE_VK_WAIT_SPIN_US")) != NULL) b->wait_spin_ns = 1000 * strtoull(env, NULL, 10);
    if ((env = getenv("MOE_VK_MATVEC_WG")) != NULL) b->matvec_wg = (uint32_t)atoi(env);
    if ((env = getenv("MOE_VK_MATVEC_COLS")) != NULL) b->matvec_cols = (uint32_t)atoi(env);
    if ((env = getenv("MOE_VK_MATVEC_ROWS")) != NULL) b->matvec_max_rows = strtoll(env, NULL, 10);
    const size_t matvec_shared = sizeof(float) * 2 * (size_t)b->matvec_cols * b->matvec_wg;
    if (b->matvec_wg == 0 || (b->matvec_wg & (b->matvec_wg - 1)) != 0 || b->matvec_wg > max_wg ||
        b->matvec_cols == 0 || b->matvec_max_rows < 0 || matvec_shared > l->maxComputeSharedMemorySize)
        return moe_fail(
            b->base.ctx, MOE_ERROR_INVALID_ARGUMENT,
            "vulkan: bad decode kernel shape (%u invocations, a power of two up to %u; %u columns; "
            "%lld rows; %zu bytes of shared memory of %u)",
            b->matvec_wg, max_wg, b->matvec_cols, (long long)b->matvec_max_rows, matvec_shared,
            l->maxComputeSharedMemorySize);
    return MOE_OK;
}

static void moe_vk_destroy(moe_backend *be);

/* What the backend asks of its physical device (b->physical, the queue family chosen): its
 * properties and limits, the family's timestamps, the subgroup queries. */
static void query_device(moe_vk_backend *b, const moe_vk_ifn *I)
{
    I->props(b->physical, &b->props);
    I->memory(b->physical, &b->mem_props);
    uint32_t nq = 16;
    VkQueueFamilyProperties q[16];
    I->queues(b->physical, &nq, q);
    b->timestamp_bits = b->queue_family < nq ? q[b->queue_family].timestampValidBits : 0;

    /* Subgroup arithmetic in compute shaders (the device's SUBGROUP_REDUCE feature, asked when
     * the devices were listed: device_features) picks the kernels' subgroup variants. The
     * subgroup size (1.1) and the size control range (1.3) are recorded and logged for tuning:
     * no kernel depends on a subgroup width yet. */
    b->subgroup_arithmetic = (b->base.info.features & MOE_FEATURE_SUBGROUP_REDUCE) != 0;
    if (b->props.apiVersion >= VK_API_VERSION_1_1 && I->api >= VK_API_VERSION_1_1) {
        VkPhysicalDeviceSubgroupProperties sub = {.sType =
                                                      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = &sub};
        I->props2(b->physical, &p2);
        VkPhysicalDeviceMaintenance3Properties m3 = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
        p2.pNext = &m3;
        I->props2(b->physical, &p2);
        b->max_allocation = m3.maxMemoryAllocationSize;
        b->subgroup_size = sub.subgroupSize;
        if (b->props.apiVersion >= VK_API_VERSION_1_3 && I->api >= VK_API_VERSION_1_3) {
            VkPhysicalDeviceSubgroupSizeControlProperties sc = {
                .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
            p2.pNext = &sc;
            I->props2(b->physical, &p2);
            b->subgroup_min = sc.minSubgroupSize;
            b->subgroup_max = sc.maxSubgroupSize;
        }
    }
}

/* With g_lock held: everything of the context that asks the driver — properties, limits,
 * subgroup queries, the logical device and its queue (a driver may set up more of its global
 * state on its first device). Returns the VkResult and the failing call's name. */
static VkResult open_device_locked(moe_vk_backend *b, int index, const char **call)
{
    b->instance = g_instance;
    b->gipa = vkGetInstanceProcAddr;
    b->instance_api = g_own.api;
    b->physical = g_devices[index];
    fill_info(&g_own, b->physical, index, g_compute_units[index], g_features[index], &b->base.info);

    /* A compute queue; prefer one without graphics (a dedicated compute family). */
    uint32_t nq = 16;
    VkQueueFamilyProperties q[16];
    g_own.queues(b->physical, &nq, q);
    int family = -1;
    for (uint32_t i = 0; i < nq && i < 16; i++) {
        if (!(q[i].queueFlags & VK_QUEUE_COMPUTE_BIT)) continue;
        if (family < 0 || !(q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) family = (int)i;
    }
    b->queue_family = (uint32_t)family; /* >= 0: the device list holds compute devices only */
    query_device(b, &g_own);

    const float priority = 1.0f;
    const VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                        .queueFamilyIndex = b->queue_family,
                                        .queueCount = 1,
                                        .pQueuePriorities = &priority};
    const VkDeviceCreateInfo di = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qi};
    const VkResult r =
        MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY, vkCreateDevice(b->physical, &di, NULL, &b->device));
    if (r != VK_SUCCESS) {
        b->device = VK_NULL_HANDLE;
        *call = "vkCreateDevice";
        return r;
    }
    volkLoadDeviceTable(&b->vk, b->device);
    b->vk.vkGetDeviceQueue(b->device, b->queue_family, 0, &b->queue);
    return VK_SUCCESS;
}

/* The application's objects (moe_vulkan.h): its functions loaded, its device checked (a
 * compute queue family; Vulkan 1.0 is all moe asks), described, and its device functions
 * loaded into b->vk through volk. Nothing is created, and nothing borrowed is ever destroyed
 * (b->borrowed). No lock: moe's own instance and list are not touched. */
static moe_status borrow_device(moe_vk_backend *b, const moe_vulkan_device *d)
{
    moe_context *ctx = b->base.ctx;
    size_t bytes; /* one version so far: the whole struct */
    const moe_status sst = moe_abi_check(ctx, &moe_abi_vulkan_device, d, &bytes);
    if (sst != MOE_OK) return sst;
    if (!d->get_instance_proc_addr || !d->instance || !d->physical_device || !d->device || !d->queue)
        return moe_fail(
            ctx, MOE_ERROR_NULL_POINTER,
            "moe_vulkan_device: get_instance_proc_addr, instance, physical_device, device and queue "
            "are required");
    const PFN_vkGetInstanceProcAddr gipa = d->get_instance_proc_addr;
    const uint32_t api = d->instance_api_version >= VK_API_VERSION_1_3   ? VK_API_VERSION_1_3
                         : d->instance_api_version >= VK_API_VERSION_1_1 ? VK_API_VERSION_1_1
                                                                         : VK_API_VERSION_1_0;
#define LOAD(name) (PFN_##name) gipa(d->instance, #name)
    moe_vk_ifn I = {.api = api,
                    .props = LOAD(vkGetPhysicalDeviceProperties),
                    .props2 = api >= VK_API_VERSION_1_1 ? LOAD(vkGetPhysicalDeviceProperties2) : NULL,
                    .features2 = api >= VK_API_VERSION_1_1 ? LOAD(vkGetPhysicalDeviceFeatures2) : NULL,
                    .memory = LOAD(vkGetPhysicalDeviceMemoryProperties),
                    .queues = LOAD(vkGetPhysicalDeviceQueueFamilyProperties),
                    .extensions = LOAD(vkEnumerateDeviceExtensionProperties),
                    .device_proc = LOAD(vkGetDeviceProcAddr)};
#undef LOAD
    if (!I.props || !I.memory || !I.queues || !I.extensions || !I.device_proc ||
        (api >= VK_API_VERSION_1_1 && (!I.props2 || !I.features2)))
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "moe_vulkan_device: get_instance_proc_addr gives no physical-device queries for the "
                        "instance (is instance_api_version above the version it was created with?)");
    uint32_t nq = 0;
    I.queues(d->physical_device, &nq, NULL);
    VkQueueFamilyProperties *q = nq ? moe_calloc(nq, sizeof *q) : NULL;
    if (nq && !q) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    I.queues(d->physical_device, &nq, q);
    const bool compute = d->queue_family < nq && (q[d->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT);
    moe_free(q);
    if (!compute)
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                        "moe_vulkan_device.queue_family %u %s: moe runs compute shaders", d->queue_family,
                        d->queue_family < nq ? "has no VK_QUEUE_COMPUTE_BIT"
                                             : "is not a family of the device");
    uint32_t features = 0;
    const int units = compute_units(&I, d->physical_device);
    if (units < 0 || !device_features(&I, d->physical_device, &features))
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory listing device extensions");
    b->instance = d->instance;
    b->gipa = gipa;
    b->instance_api = d->instance_api_version;
    b->physical = d->physical_device;
    b->queue_family = d->queue_family;
    b->borrowed = true;
    fill_info(&I, b->physical, -1, units, features, &b->base.info);
    query_device(b, &I);
    moe_vk_load_device_table(&b->vk, d->device, I.device_proc);
    if (!b->vk.vkCreateBuffer || !b->vk.vkCmdDispatch || !b->vk.vkQueueSubmit)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "moe_vulkan_device: the device's vkGetDeviceProcAddr gives no core functions");
    b->device = d->device;
    b->queue = d->queue;
    return MOE_OK;
}

static moe_status moe_vk_create(moe_context *ctx, const moe_context_desc *desc, moe_backend **out)
{
    moe_vk_backend *b = moe_calloc(1, sizeof *b);
    if (!b) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    b->base = (moe_backend){.ops = &moe_vulkan_backend_ops, .ctx = ctx};
    const char *inject = MOE_TEST_HOOKS ? getenv("MOE_VK_INJECT") : NULL; /* test hooks only */
    const bool inject_oom = inject && !strcmp(inject, "oom"); /* after the context's own buffers */
    b->inject_lost = inject && !strcmp(inject, "lost");

    /* Statuses and messages (and so the log callback) only after the lock is released. */
    char why[256] = "";
    const char *call = NULL;
    VkResult r = VK_SUCCESS;
    const moe_vulkan_device *borrowed = desc->external_device;
    moe_status st = MOE_OK;
    uint32_t n = 0;
    bool validation = false, have = borrowed != NULL;
    if (borrowed) {
        st = borrow_device(b, borrowed);
        if (st != MOE_OK) {
            moe_vk_destroy(&b->base);
            return st;
        }
    } else {
        moe_mutex_lock(&g_lock);
        st = devices_locked(why, sizeof why);
        n = g_n_devices;
        validation = g_validation;
        have = st == MOE_OK && desc->device_index >= 0 && (uint32_t)desc->device_index < n;
        if (have) r = open_device_locked(b, desc->device_index, &call);
        moe_mutex_unlock(&g_lock);
    }

    if (st != MOE_OK)
        st = moe_fail(ctx, st, "vulkan: %s", why);
    else if (!have)
        st = moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE, "vulkan: no device %d (%u found)",
                      desc->device_index, n);
    else if (r != VK_SUCCESS)
        st = moe_vk_fail(b, r, call);
    if (st != MOE_OK) {
        moe_vk_destroy(&b->base);
        return st;
    }

    const VkDeviceSize align = b->props.limits.minStorageBufferOffsetAlignment;
    b->base.alignment = align > 16 ? (size_t)align : 16;
    if ((b->base.alignment & (b->base.alignment - 1)) != 0)
        st = moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                      "vulkan: storage buffer alignment %zu is not a power of two", b->base.alignment);
    if (st == MOE_OK) st = choose_sizes(b);
    b->base.row_tile = b->gemm_bm;
    b->max_weight_binding = b->props.limits.maxStorageBufferRange;
    const char *wb = getenv("MOE_VK_MAX_WEIGHT_BINDING");
    if (wb && strtoull(wb, NULL, 0) > 0 && strtoull(wb, NULL, 0) < b->max_weight_binding)
        b->max_weight_binding = strtoull(wb, NULL, 0);
    moe_log(ctx, MOE_LOG_INFO, "vulkan: %s: subgroup size %u (size control %u..%u), subgroup arithmetic %s",
            b->props.deviceName, b->subgroup_size, b->subgroup_min, b->subgroup_max,
            b->subgroup_arithmetic ? "yes" : "no");
    /* MOE_VK_DISABLE_SUBGROUPS=1 forces the plain path so both are tested on one machine. */
    const char *no_sub = getenv("MOE_VK_DISABLE_SUBGROUPS");
    if (no_sub && *no_sub && strcmp(no_sub, "0") != 0) b->subgroup_arithmetic = false;
    b->base.info.features_used = features_used(b->subgroup_arithmetic); /* this context's own view */
    if (st == MOE_OK) st = moe_vk_memory_init(b);
    b->inject_oom = inject_oom;
    if (st == MOE_OK) st = moe_vk_pipelines_init(b);
    if (st == MOE_OK) st = moe_vk_slots_init(b);
    if (st == MOE_OK) st = moe_vk_check_validation(b);
    if (st != MOE_OK) {
        moe_vk_destroy(&b->base);
        return st;
    }
    snprintf(b->base.info.driver + strlen(b->base.info.driver),
             sizeof b->base.info.driver - strlen(b->base.info.driver), "%s",
             validation ? ", validation on" : "");
    *out = &b->base;
    return MOE_OK;
}

static void moe_vk_destroy(moe_backend *be)
{
    if (!be) return;
    moe_vk_backend *b = moe_vkb(be);
    if (b->device) {
        b->vk.vkDeviceWaitIdle(b->device);
        moe_vk_slots_release(b);
        moe_vk_pipelines_release(b);
        moe_vk_memory_release(b);
        if (!b->borrowed) b->vk.vkDestroyDevice(b->device, NULL);
    }
    moe_free(b);
}

const moe_backend_ops moe_vulkan_backend_ops = {
    .kind = MOE_BACKEND_VULKAN,
    .name = "vulkan",
    .device_count = moe_vk_device_count,
    .device_info = moe_vk_device_info,
    .create = moe_vk_create,
    .destroy = moe_vk_destroy,
    .buffer_alloc = moe_vk_buffer_alloc,
    .buffer_free = moe_vk_buffer_free,
    .buffer_write = moe_vk_buffer_write,
    .buffer_read = moe_vk_buffer_read,
    .stage_in = moe_vk_stage_in,
    .stage_out = moe_vk_stage_out,
    .weight_bytes = moe_vk_weight_bytes,
    .weight_upload = moe_vk_weight_upload,
    .begin = moe_vk_begin,
    .route = moe_vk_route,
    .plan = moe_vk_plan,
    .ffn = moe_vk_ffn,
    .combine = moe_vk_combine,
    .stats = moe_vk_stats,
    .submit = moe_vk_submit,
    .wait = moe_vk_wait,
};
