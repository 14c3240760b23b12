/*
 * vk_embed.c — moe_vulkan.h: a Vulkan context's objects for the application, the
 * application's VkBuffer as a moe_buffer, and a forward recorded into the application's command
 * buffer. (Borrowing the application's instance, device and queue is context creation's:
 * vk_device.c.)
 */
#include "vk_internal.h"

#include <string.h>

struct moe_vulkan_recording {
    moe_layer *layer;
    moe_buffer *x, *y;
    VkDescriptorPool pool;       /* the recorded dispatches' descriptor sets */
    moe_backend_buffer *scratch; /* its own scratch region */
    size_t scratch_bytes;
};

const moe_abi_struct moe_abi_vulkan_device = {
    "moe_vulkan_device", sizeof(moe_vulkan_device), {MOE_ABI_END(moe_vulkan_device, queue)}, "0.4.0"};

/* The Vulkan backend of a context into *out, or the failure (recorded). */
static moe_status vulkan_of(const moe_context *ctx, const char *what, moe_vk_backend **out)
{
    const moe_status st = moe_context_expect_backend(ctx, &moe_vulkan_backend_ops, what);
    if (st == MOE_OK) *out = moe_vkb(ctx->be);
    return st;
}

moe_status moe_vulkan_context_get_device(const moe_context *ctx, moe_vulkan_device *out)
{
    moe_vk_backend *b = NULL;
    moe_status st = vulkan_of(ctx, "moe_vulkan_context_get_device", &b);
    if (st != MOE_OK) return st;
    if (!out) return moe_fail((moe_context *)ctx, MOE_ERROR_NULL_POINTER, "out is NULL");
    const moe_vulkan_device full = {.struct_size = sizeof full,
                                    .backend = MOE_BACKEND_VULKAN,
                                    .get_instance_proc_addr = b->gipa,
                                    .instance = b->instance,
                                    .instance_api_version = b->instance_api,
                                    .physical_device = b->physical,
                                    .device = b->device,
                                    .queue_family = b->queue_family,
                                    .queue = b->queue};
    return moe_abi_out((moe_context *)ctx, &moe_abi_vulkan_device, out, &full);
}

moe_status moe_vulkan_buffer_wrap(moe_context *ctx, VkBuffer buffer, VkDeviceSize offset, int64_t n_elements,
                                  moe_buffer **out)
{
    moe_vk_backend *b = NULL;
    moe_status st = vulkan_of(ctx, "moe_vulkan_buffer_wrap", &b);
    if (st != MOE_OK) return st;
    if (!out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "out_buffer is NULL");
    if (buffer == VK_NULL_HANDLE) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "buffer is VK_NULL_HANDLE");
    st = moe_context_check_live(ctx, "moe_vulkan_buffer_wrap");
    if (st != MOE_OK) return st;
    if (n_elements <= 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "n_elements must be > 0 (got %lld)",
                        (long long)n_elements);
    const VkDeviceSize align = b->props.limits.minStorageBufferOffsetAlignment;
    if (offset % sizeof(float) != 0 || (align > 1 && offset % align != 0))
        return moe_fail(
            ctx, MOE_ERROR_INVALID_ARGUMENT,
            "offset %llu is not a multiple of the device's minStorageBufferOffsetAlignment (%llu) "
            "and of 4",
            (unsigned long long)offset, (unsigned long long)align);
    size_t bytes;
    if (!moe_bytes_of(sizeof(float), n_elements, 1, 1, &bytes) || offset > SIZE_MAX - bytes)
        return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "%lld floats from byte %llu overflow size_t",
                        (long long)n_elements, (unsigned long long)offset);
    moe_backend_buffer *buf = moe_calloc(1, sizeof *buf);
    if (!buf) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    /* Bound as far as the caller vouches for: offset + its elements. */
    *buf = (moe_backend_buffer){.buffer = buffer, .bytes = (size_t)offset + bytes, .borrowed = true};
    return moe_buffer_wrap(ctx, buf, (size_t)offset, n_elements, out);
}

moe_status moe_vulkan_layer_record(moe_layer *layer, int64_t n_tokens, const moe_buffer *x, moe_buffer *y,
                                   VkCommandBuffer cmd, moe_vulkan_recording **out)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_context *ctx = layer->ctx;
    moe_vk_backend *b = NULL;
    moe_status st = vulkan_of(ctx, "moe_vulkan_layer_record", &b);
    if (st == MOE_OK) st = moe_layer_check_unplaced(layer, "moe_vulkan_layer_record");
    if (st != MOE_OK) return st;
    if (!x || !y || !out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "x, y and out_recording are required");
    if (cmd == VK_NULL_HANDLE)
        return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "command_buffer is VK_NULL_HANDLE");
    moe_vulkan_recording *rec = moe_calloc(1, sizeof *rec);
    if (!rec) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    /* The recording's own descriptor sets: they must outlive every submission of cmd. */
    const VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, MOE_VK_MAX_SETS * MOE_KMAX_BUFFERS};
    const VkDescriptorPoolCreateInfo dp = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                           .maxSets = MOE_VK_MAX_SETS,
                                           .poolSizeCount = 1,
                                           .pPoolSizes = &ps};
    const VkResult r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                         b->vk.vkCreateDescriptorPool(b->device, &dp, NULL, &rec->pool));
    if (r != VK_SUCCESS) {
        moe_free(rec);
        return moe_vk_fail(b, r, "vkCreateDescriptorPool");
    }
    moe_vk_slot into = {.cmd = cmd, .desc_pool = rec->pool};
    b->record_into = &into;
    moe_backend_buffer *scratch = NULL;
    size_t scratch_bytes = 0;
    st = moe_layer_forward_record(layer, n_tokens, x, y, &scratch, &scratch_bytes);
    b->record_into = NULL;
    b->cur = NULL; /* it pointed at `into` */
    if (st != MOE_OK) {
        /* Whatever was recorded before the failure stays in cmd: the application resets it. */
        b->vk.vkDestroyDescriptorPool(b->device, rec->pool, NULL);
        moe_free(rec);
        return st;
    }
    *rec = (moe_vulkan_recording){.layer = layer,
                                  .x = (moe_buffer *)x,
                                  .y = y,
                                  .pool = rec->pool,
                                  .scratch = scratch,
                                  .scratch_bytes = scratch_bytes};
    layer->pins++;
    rec->x->pins++;
    y->pins++;
    *out = rec;
    return MOE_OK;
}

void moe_vulkan_recording_destroy(moe_vulkan_recording *rec)
{
    if (!rec) return;
    moe_context *ctx = rec->layer->ctx;
    moe_vk_backend *b = moe_vkb(ctx->be);
    b->vk.vkDestroyDescriptorPool(b->device, rec->pool, NULL);
    moe_arena_free(&ctx->arena, rec->scratch, rec->scratch_bytes, MOE_BACKEND_BUFFER_SCRATCH);
    /* The last of these may free the context (destroyed while they lived): nothing after. */
    moe_buffer_unpin(rec->x);
    moe_buffer_unpin(rec->y);
    moe_layer_unpin(rec->layer);
    moe_free(rec);
}
