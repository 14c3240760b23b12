/*
 * test_embed_vulkan.c — moe on the application's own Vulkan objects (moe_vulkan.h), as an
 * application uses it: this program makes its instance, device, queue, buffer and command
 * buffer with the Vulkan loader (not through moe), writes its input through its own mapping,
 * records a 4-layer chain into its own command buffer with moe_vulkan_layer_record, submits it
 * itself (twice, on two inputs), and compares what it reads back with the reference chain and
 * with the same forwards run synchronously. Also: a layer destroyed while a recording holds it
 * stays until the recording goes, the scratch keeps its size while recordings exist, wrong
 * objects are refused, and after moe_context_destroy the application's device is still its own
 * (and, with MOE_VK_VALIDATION=1, the Khronos validation layer — which this program enables on
 * its own instance — reports nothing from start to end, including objects left behind).
 * Skips (77) where Vulkan has no device with a compute queue.
 */
#if defined(__linux__)
#define _GNU_SOURCE /* dl_iterate_phdr, RTLD_NODELETE */
#include <dlfcn.h>
#include <link.h>
#else
#define _POSIX_C_SOURCE 200809L
#endif
#include "chain.h"
#include "moe_vulkan.h"

#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
/* Keeps every library loaded now loaded until exit (RTLD_NODELETE on each). The loader unloads
 * the ICDs at vkDestroyInstance; a driver whose globals still point at blocks it allocated takes
 * those pointers with it, and LeakSanitizer then reports the blocks, from an "<unknown module>",
 * as this program's leak (seen with lavapipe on an AMD EPYC host: 128 bytes, reachable from
 * libvulkan_lvp.so's globals while it is loaded). Pinned, the driver's globals stay visible, and
 * a leak of moe's or of this program's is still reported. */
static int pin_library(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size, (void)data;
    if (info->dlpi_name && info->dlpi_name[0]) {
        void *h = dlopen(info->dlpi_name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
        (void)h; /* one more reference, never released: the library stays mapped */
    }
    return 0;
}
static void pin_loaded_libraries(void)
{
    dl_iterate_phdr(pin_library, NULL);
}
#else
static void pin_loaded_libraries(void) {}
#endif

#define T 5
#define D H_CHAIN_D_MODEL

static int g_messages;

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT types,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    (void)severity, (void)types, (void)user;
    fprintf(stderr, "validation: %s\n", data->pMessage);
    g_messages++;
    return VK_FALSE;
}

typedef struct app {
    VkInstance instance;
    uint32_t api;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice physical;
    uint32_t family;
    VkDevice device;
    VkQueue queue;
    VkDeviceSize stride; /* bytes between the regions of the buffer */
    VkBuffer buffer;
    VkDeviceMemory memory;
    float *mapped;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
} app;

/* 0 and the objects, or 77 when there is no Vulkan device with a compute queue. */
static int app_open(app *a, bool validation)
{
    memset(a, 0, sizeof *a);
    uint32_t loader = VK_API_VERSION_1_0;
    vkEnumerateInstanceVersion(&loader);
    a->api = loader >= VK_API_VERSION_1_1 ? VK_API_VERSION_1_1 : VK_API_VERSION_1_0;
    const char *layer = "VK_LAYER_KHRONOS_validation", *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    const VkApplicationInfo ai = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                                  .pApplicationName = "test_embed_vulkan",
                                  .apiVersion = a->api};
    const VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                     .pApplicationInfo = &ai,
                                     .enabledLayerCount = validation ? 1 : 0,
                                     .ppEnabledLayerNames = &layer,
                                     .enabledExtensionCount = validation ? 1 : 0,
                                     .ppEnabledExtensionNames = &ext};
    if (vkCreateInstance(&ci, NULL, &a->instance) != VK_SUCCESS) return 77;
    if (validation) {
        const VkDebugUtilsMessengerCreateInfoEXT mi = {
            .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
            .messageType =
                VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT,
            .pfnUserCallback = on_message};
        PFN_vkCreateDebugUtilsMessengerEXT create = (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            a->instance, "vkCreateDebugUtilsMessengerEXT");
        CHECK(create && create(a->instance, &mi, NULL, &a->messenger) == VK_SUCCESS, "debug messenger");
    }
    uint32_t n = 8;
    VkPhysicalDevice pds[8];
    vkEnumeratePhysicalDevices(a->instance, &n, pds);
    for (uint32_t i = 0; i < n && !a->physical; i++) {
        uint32_t nq = 16;
        VkQueueFamilyProperties q[16];
        vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, q);
        for (uint32_t f = 0; f < nq && !a->physical; f++)
            if (q[f].queueFlags & VK_QUEUE_COMPUTE_BIT) a->physical = pds[i], a->family = f;
    }
    if (!a->physical) return 77;
    const float prio = 1.0f;
    const VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                        .queueFamilyIndex = a->family,
                                        .queueCount = 1,
                                        .pQueuePriorities = &prio};
    const VkDeviceCreateInfo di = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qi};
    if (vkCreateDevice(a->physical, &di, NULL, &a->device) != VK_SUCCESS) return 77;
    vkGetDeviceQueue(a->device, a->family, 0, &a->queue);
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(a->physical, &p);
    const VkDeviceSize align =
        p.limits.minStorageBufferOffsetAlignment < 64 ? 64 : p.limits.minStorageBufferOffsetAlignment;
    a->stride = (sizeof(float) * T * D + align - 1) / align * align; /* one region, aligned */
    printf("application device: %s\n", p.deviceName);

    /* One host-visible buffer holds every activation: 4 regions, each aligned. */
    const VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                   .size = 4 * a->stride,
                                   .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                            VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                            VK_BUFFER_USAGE_TRANSFER_DST_BIT};
    CHECK(vkCreateBuffer(a->device, &bi, NULL, &a->buffer) == VK_SUCCESS, "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(a->device, a->buffer, &req);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(a->physical, &mp);
    const VkMemoryPropertyFlags want =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < mp.memoryTypeCount && type == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) type = i;
    const VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size, .memoryTypeIndex = type};
    CHECK(type != UINT32_MAX && vkAllocateMemory(a->device, &mai, NULL, &a->memory) == VK_SUCCESS,
          "host-visible memory");
    vkBindBufferMemory(a->device, a->buffer, a->memory, 0);
    void *map = NULL;
    vkMapMemory(a->device, a->memory, 0, VK_WHOLE_SIZE, 0, &map);
    a->mapped = map;
    const VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                        .queueFamilyIndex = a->family};
    vkCreateCommandPool(a->device, &pi, NULL, &a->pool);
    const VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                             .commandPool = a->pool,
                                             .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                             .commandBufferCount = 1};
    vkAllocateCommandBuffers(a->device, &cai, &a->cmd);
    const VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vkCreateFence(a->device, &fi, NULL, &a->fence);
    return 0;
}

static void app_close(app *a)
{
    vkDestroyFence(a->device, a->fence, NULL);
    vkDestroyCommandPool(a->device, a->pool, NULL);
    vkUnmapMemory(a->device, a->memory);
    vkDestroyBuffer(a->device, a->buffer, NULL);
    vkFreeMemory(a->device, a->memory, NULL);
    vkDestroyDevice(a->device, NULL); /* the validation layer reports any object moe left on it */
    if (a->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(a->instance,
                                                                       "vkDestroyDebugUtilsMessengerEXT");
        destroy(a->instance, a->messenger, NULL);
    }
    pin_loaded_libraries();
    vkDestroyInstance(a->instance, NULL);
}

/* Region i of the application's buffer (floats), and its byte offset. */
static float *region(const app *a, int i)
{
    return a->mapped + (size_t)i * (size_t)a->stride / sizeof(float);
}

static void submit_and_wait(app *a)
{
    const VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &a->cmd};
    CHECK(vkQueueSubmit(a->queue, 1, &si, a->fence) == VK_SUCCESS, "vkQueueSubmit");
    CHECK(vkWaitForFences(a->device, 1, &a->fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS, "vkWaitForFences");
    vkResetFences(a->device, 1, &a->fence);
}

static void sync_chain(const h_chain *c, const float *x, float *y)
{
    float cur[T * D];
    memcpy(cur, x, sizeof cur);
    for (int i = 0; i < H_CHAIN_LAYERS; i++) {
        CHECK_STATUS(moe_layer_forward(c->layer[i], T, cur, y, NULL), MOE_OK);
        memcpy(cur, y, sizeof cur);
    }
}

static void expect_refused(const moe_vulkan_device *d, moe_status want, const char *part, const char *what)
{
    moe_context_desc cd = {.struct_size = sizeof cd, .external_device = d};
    moe_context *ctx = NULL;
    const moe_status st = moe_context_create(&cd, &ctx);
    CHECK(st == want, "%s: %s, expected %s (%s)", what, moe_status_string(st), moe_status_string(want),
          moe_last_error());
    CHECK(strstr(moe_last_error(), part) != NULL, "%s: message '%s' does not say '%s'", what,
          moe_last_error(), part);
    CHECK(ctx == NULL, "%s: out_context written", what);
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    const char *v = getenv("MOE_VK_VALIDATION");
    const bool validation = v && *v && strcmp(v, "0") != 0;
    app a;
    const int open = app_open(&a, validation);
    if (open == 77) {
        printf("no Vulkan device with a compute queue: skipped\n");
        return 77;
    }
    const moe_vulkan_device lent = {.struct_size = sizeof lent,
                                    .backend = MOE_BACKEND_VULKAN,
                                    .get_instance_proc_addr = vkGetInstanceProcAddr,
                                    .instance = a.instance,
                                    .instance_api_version = a.api,
                                    .physical_device = a.physical,
                                    .device = a.device,
                                    .queue_family = a.family,
                                    .queue = a.queue};
    /* Wrong objects, refused before anything is made. */
    moe_vulkan_device bad = lent;
    bad.device = VK_NULL_HANDLE;
    expect_refused(&bad, MOE_ERROR_NULL_POINTER, "required", "no device");
    bad = lent;
    bad.queue_family = 1000;
    expect_refused(&bad, MOE_ERROR_UNSUPPORTED, "queue_family", "a family the device does not have");
    bad = lent;
    bad.struct_size = 8;
    expect_refused(&bad, MOE_ERROR_INVALID_ARGUMENT, "struct_size", "a struct of another size");

    moe_context_desc cd = {.struct_size = sizeof cd, .external_device = &lent};
    moe_context *ctx = NULL;
    CHECK_STATUS(moe_context_create(&cd, &ctx), MOE_OK);
    if (!ctx) return h_finish("test_embed_vulkan");
    CHECK(moe_context_backend(ctx) == MOE_BACKEND_VULKAN, "backend %d", (int)moe_context_backend(ctx));
    moe_vulkan_device back = {.struct_size = sizeof back};
    CHECK_STATUS(moe_vulkan_context_get_device(ctx, &back), MOE_OK);
    CHECK(back.device == a.device && back.queue == a.queue && back.physical_device == a.physical &&
              back.instance == a.instance && back.queue_family == a.family,
          "moe_vulkan_context_get_device gives other objects");

    h_rng rng = h_rng_seeded("test_embed_vulkan");
    h_chain c;
    h_chain_init(&c, ctx, &rng);
    float x[T * D], ref[H_CHAIN_LAYERS * T * D], want[T * D];
    h_chain_input(&c, T, H_CHAIN_LAYERS, x, ref, &rng);

    /* The application's buffer as four moe_buffers: x, two in between, y. */
    moe_buffer *b[4] = {NULL};
    for (int i = 0; i < 4; i++)
        CHECK_STATUS(moe_vulkan_buffer_wrap(ctx, a.buffer, (VkDeviceSize)i * a.stride, T * D, &b[i]), MOE_OK);
    moe_buffer *refused = NULL;
    CHECK_STATUS(moe_vulkan_buffer_wrap(ctx, a.buffer, 2, T * D, &refused), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_vulkan_buffer_wrap(ctx, VK_NULL_HANDLE, 0, T * D, &refused), MOE_ERROR_NULL_POINTER);
    CHECK(refused == NULL, "a refused wrap wrote out_buffer");

    /* The chain recorded into the application's command buffer: x → b1 → b2 → b1 → y, then the
     * application's own barrier for its host read. */
    const VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkBeginCommandBuffer(a.cmd, &begin);
    const int in[H_CHAIN_LAYERS] = {0, 1, 2, 1}, out[H_CHAIN_LAYERS] = {1, 2, 1, 3};
    moe_vulkan_recording *rec[H_CHAIN_LAYERS] = {NULL};
    for (int i = 0; i < H_CHAIN_LAYERS; i++)
        CHECK_STATUS(moe_vulkan_layer_record(c.layer[i], T, b[in[i]], b[out[i]], a.cmd, &rec[i]), MOE_OK);
    const VkMemoryBarrier to_host = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                                     .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                                     .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(a.cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                         &to_host, 0, NULL, 0, NULL);
    CHECK(vkEndCommandBuffer(a.cmd) == VK_SUCCESS, "vkEndCommandBuffer");

    memcpy(region(&a, 0), x, sizeof x);
    submit_and_wait(&a);
    const double e = h_rel_l2(region(&a, 3), ref + (H_CHAIN_LAYERS - 1) * T * D, (size_t)T * D);
    CHECK(e <= 1e-4, "the recorded chain: relative L2 error %.3g against the reference", e);
    sync_chain(&c, x, want);
    CHECK(memcmp(region(&a, 3), want, sizeof want) == 0,
          "the recorded chain differs from the synchronous forwards");

    /* The same command buffer again, on a new input. */
    h_fill_input(&c.host[0], T, x, &rng);
    memcpy(region(&a, 0), x, sizeof x);
    submit_and_wait(&a);
    sync_chain(&c, x, want);
    CHECK(memcmp(region(&a, 3), want, sizeof want) == 0, "the command buffer submitted again differs");

    /* While recordings exist: moe's own forwards (any size) leave their scratch alone, and a
     * layer destroyed stays for them. */
    float big_x[H_CHAIN_MAX_T * D], big_y[H_CHAIN_MAX_T * D];
    h_fill_input(&c.host[0], H_CHAIN_MAX_T, big_x, &rng);
    CHECK_STATUS(moe_layer_forward(c.layer[0], H_CHAIN_MAX_T, big_x, big_y, NULL), MOE_OK);
    moe_layer_destroy(c.layer[3]);
    CHECK(strstr(moe_last_error(), "recorded") != NULL, "destroying a recorded layer: '%s'",
          moe_last_error());
    memcpy(region(&a, 0), x, sizeof x);
    submit_and_wait(&a); /* the destroyed layer's weights are still there */
    CHECK(memcmp(region(&a, 3), want, sizeof want) == 0,
          "the recording of a destroyed layer ran differently");
    for (int i = 0; i < H_CHAIN_LAYERS; i++) moe_vulkan_recording_destroy(rec[i]);
    c.layer[3] = NULL; /* freed with its recording */

    /* The library's own submissions on the application's queue work too. */
    CHECK_STATUS(moe_layer_forward_async(c.layer[0], T, b[0], b[1]), MOE_OK);
    CHECK_STATUS(moe_context_wait(ctx), MOE_OK);

    for (int i = 0; i < 4; i++) moe_buffer_destroy(b[i]);
    h_chain_free(&c);
    moe_context_destroy(ctx);
    /* The device is still the application's: a submission of its own runs. */
    vkResetCommandBuffer(a.cmd, 0);
    vkBeginCommandBuffer(a.cmd, &begin);
    vkCmdFillBuffer(a.cmd, a.buffer, 0, 64, 0);
    const VkMemoryBarrier fill_to_host = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                                          .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                                          .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(a.cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                         &fill_to_host, 0, NULL, 0, NULL);
    vkEndCommandBuffer(a.cmd);
    submit_and_wait(&a);
    CHECK(region(&a, 0)[0] == 0.0f, "the application's own submission did not run after moe_context_destroy");
    app_close(&a);
    CHECK(g_messages == 0, "%d validation message(s) (above)", g_messages);
    return h_finish("test_embed_vulkan");
}
