/*
 * vk_memory.c — device memory for the Vulkan backend.
 *
 * Every arena allocation (a layer's weights, the scratch region, a moe_buffer) is a VkBuffer
 * bound into one of a few large VkDeviceMemory blocks (first fit at the buffer's alignment,
 * freed ranges coalesce; an emptied block is returned to the driver). Host data moves
 * through one persistent host-visible staging buffer, in chunks; weights are stored in their
 * format (F32, F16, BF16, Q8_0, Q4_0, the K-quants: the kernels read each as it is) and converted row by row
 * straight into it when handed over in another, so no float copy of a checkpoint is ever made.
 */
#include "../alloc.h"
#include "vk_internal.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE   ((VkDeviceSize)64 << 20)
#define STAGING_SIZE ((VkDeviceSize)16 << 20)

static int find_type(const moe_vk_backend *b, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < b->mem_props.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (b->mem_props.memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

static bool push_range(moe_vk_block *k, VkDeviceSize offset, VkDeviceSize size)
{
    if (size == 0) return true;
    if (k->n_free == k->cap_free) {
        const size_t cap = k->cap_free ? 2 * k->cap_free : 8;
        moe_vk_range *r = moe_realloc(k->free, cap * sizeof *r);
        if (!r) return false;
        k->free = r;
        k->cap_free = cap;
    }
    /* Keep the list sorted by offset and merge with the neighbours. */
    size_t i = 0;
    while (i < k->n_free && k->free[i].offset < offset) i++;
    memmove(k->free + i + 1, k->free + i, (k->n_free - i) * sizeof *k->free);
    k->free[i] = (moe_vk_range){offset, size};
    k->n_free++;
    if (i + 1 < k->n_free && k->free[i].offset + k->free[i].size == k->free[i + 1].offset) {
        k->free[i].size += k->free[i + 1].size;
        memmove(k->free + i + 1, k->free + i + 2, (k->n_free - i - 2) * sizeof *k->free);
        k->n_free--;
    }
    if (i > 0 && k->free[i - 1].offset + k->free[i - 1].size == k->free[i].offset) {
        k->free[i - 1].size += k->free[i].size;
        memmove(k->free + i, k->free + i + 1, (k->n_free - i - 1) * sizeof *k->free);
        k->n_free--;
    }
    return true;
}

/* Carves `size` bytes at `align` out of the block; false if no range fits. */
static bool carve(moe_vk_block *k, VkDeviceSize size, VkDeviceSize align, VkDeviceSize *out)
{
    for (size_t i = 0; i < k->n_free; i++) {
        const moe_vk_range r = k->free[i];
        const VkDeviceSize start = (r.offset + align - 1) / align * align;
        if (start + size > r.offset + r.size) continue;
        memmove(k->free + i, k->free + i + 1, (k->n_free - i - 1) * sizeof *k->free);
        k->n_free--;
        /* The two leftovers go back; the list only shrank, so this cannot fail. */
        push_range(k, r.offset, start - r.offset);
        push_range(k, start + size, r.offset + r.size - start - size);
        k->used += size;
        *out = start;
        return true;
    }
    return false;
}

static moe_status new_block(moe_vk_backend *b, VkDeviceSize size, uint32_t type, moe_vk_block **out)
{
    moe_vk_block *k = moe_calloc(1, sizeof *k);
    if (!k) return moe_fail(b->base.ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    if (b->max_allocation && size > b->max_allocation) {
        moe_free(k);
        return moe_fail(
            b->base.ctx, MOE_ERROR_UNSUPPORTED,
            "vulkan: an allocation of %llu bytes exceeds the device's maxMemoryAllocationSize (%llu)",
            (unsigned long long)size, (unsigned long long)b->max_allocation);
    }
    const VkMemoryAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = size, .memoryTypeIndex = type};
    const VkResult r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_DEVICE_MEMORY,
                                         b->vk.vkAllocateMemory(b->device, &ai, NULL, &k->memory));
    if (r != VK_SUCCESS || !push_range(k, 0, size)) {
        if (r == VK_SUCCESS) b->vk.vkFreeMemory(b->device, k->memory, NULL);
        moe_free(k->free);
        moe_free(k);
        return r != VK_SUCCESS ? moe_vk_fail(b, r, "vkAllocateMemory")
                               : moe_fail(b->base.ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    }
    k->size = size;
    k->type_index = type;
    k->next = b->blocks;
    b->blocks = k;
    *out = k;
    return MOE_OK;
}

static void drop_block(moe_vk_backend *b, moe_vk_block *k)
{
    for (moe_vk_block **p = &b->blocks; *p; p = &(*p)->next)
        if (*p == k) {
            *p = k->next;
            break;
        }
    b->vk.vkFreeMemory(b->device, k->memory, NULL);
    moe_free(k->free);
    moe_free(k);
}

static moe_status alloc_buffer(moe_vk_backend *b, size_t bytes, VkMemoryPropertyFlags want, bool own_block,
                               moe_backend_buffer **out)
{
    moe_backend_buffer *buf = moe_calloc(1, sizeof *buf);
    if (!buf) return moe_fail(b->base.ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
    buf->bytes = bytes;
    const VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                   .size = (bytes + 3) & ~(VkDeviceSize)3,
                                   .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                            VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                            VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                   .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_DEVICE_MEMORY,
                                   b->vk.vkCreateBuffer(b->device, &bi, NULL, &buf->buffer));
    if (r != VK_SUCCESS) {
        moe_free(buf);
        return moe_vk_fail(b, r, "vkCreateBuffer");
    }
    VkMemoryRequirements req;
    b->vk.vkGetBufferMemoryRequirements(b->device, buf->buffer, &req);
    int type = find_type(b, req.memoryTypeBits, want);
    if (type < 0 && want == VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) type = find_type(b, req.memoryTypeBits, 0);
    moe_status st = MOE_OK;
    if (type < 0)
        st = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED, "vulkan: no memory type for a buffer of %zu bytes",
                      bytes);
    moe_vk_block *k = NULL;
    VkDeviceSize off = 0;
    if (st == MOE_OK && !own_block)
        for (k = b->blocks; k; k = k->next)
            if (k->type_index == (uint32_t)type && !k->dedicated && carve(k, req.size, req.alignment, &off))
                break;
    if (st == MOE_OK && !k) {
        const VkDeviceSize size = own_block || req.size > b->block_size ? req.size : b->block_size;
        st = new_block(b, size, (uint32_t)type, &k);
        if (st == MOE_OK) k->dedicated = own_block;
        if (st == MOE_OK && !carve(k, req.size, req.alignment, &off))
            st = moe_fail(b->base.ctx, MOE_ERROR_INTERNAL, "vulkan: a new block cannot hold its buffer");
    }
    if (st == MOE_OK) {
        r = b->vk.vkBindBufferMemory(b->device, buf->buffer, k->memory, off);
        if (r != VK_SUCCESS) st = moe_vk_fail(b, r, "vkBindBufferMemory");
    }
    if (st != MOE_OK) {
        if (k) {
            push_range(k, off, req.size);
            k->used -= req.size;
        }
        b->vk.vkDestroyBuffer(b->device, buf->buffer, NULL);
        moe_free(buf);
        return st;
    }
    buf->block = k;
    buf->offset = off;
    buf->size = req.size;
    *out = buf;
    return MOE_OK;
}

moe_status moe_vk_buffer_alloc(moe_backend *be, size_t bytes, moe_backend_buffer_usage usage,
                               moe_backend_buffer **out)
{
    (void)usage;
    moe_vk_backend *b = moe_vkb(be);
    if (b->lost) return moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    if (b->inject_oom)
        return moe_vk_fail(b, VK_ERROR_OUT_OF_DEVICE_MEMORY,
                           "vkAllocateMemory (injected by MOE_VK_INJECT=oom)");
    moe_status st = alloc_buffer(b, bytes, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, false, out);
    return st == MOE_OK ? moe_vk_check_validation(b) : st;
}

void moe_vk_buffer_free(moe_backend *be, moe_backend_buffer *buf)
{
    if (!buf) return;
    moe_vk_backend *b = moe_vkb(be);
    if (!buf->borrowed) b->vk.vkDestroyBuffer(b->device, buf->buffer, NULL);
    moe_vk_block *k = buf->block;
    if (k) {
        push_range(k, buf->offset, buf->size);
        k->used -= buf->size;
        if (k->used == 0) drop_block(b, k);
    }
    moe_free(buf);
}

moe_status moe_vk_memory_init(moe_vk_backend *b)
{
    b->block_size = b->max_allocation && b->max_allocation < BLOCK_SIZE ? b->max_allocation : BLOCK_SIZE;
    moe_status st = alloc_buffer(b, STAGING_SIZE,
                                 VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                 true, &b->staging);
    if (st != MOE_OK) return st;
    MOE_VK_TRY(b, b->vk.vkMapMemory(b->device, b->staging->block->memory, b->staging->offset, STAGING_SIZE, 0,
                                    &b->staging_map));
    b->base.staging_bytes = STAGING_SIZE;
    /* MOE_VK_STAGE_LIMIT (bytes) shrinks the forwards' half, so that a test sees both of
     * stage_in / stage_out's paths in one forward: staged, and a transfer of its own. */
    const char *limit = getenv("MOE_VK_STAGE_LIMIT");
    const unsigned long long want = limit ? strtoull(limit, NULL, 10) : STAGING_SIZE / 2;
    b->stage_limit = want < STAGING_SIZE / 2 ? (size_t)want : STAGING_SIZE / 2;
    st = alloc_buffer(b, 256, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, false, &b->dummy);
    if (st != MOE_OK) return st;
    const VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                        .queueFamilyIndex = b->queue_family};
    MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                    b->vk.vkCreateCommandPool(b->device, &pi, NULL, &b->cmd_pool)));
    const VkCommandBufferAllocateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                            .commandPool = b->cmd_pool,
                                            .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                            .commandBufferCount = 1};
    MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                    b->vk.vkAllocateCommandBuffers(b->device, &ci, &b->xfer)));
    const VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                    b->vk.vkCreateFence(b->device, &fi, NULL, &b->xfer_fence)));
    return MOE_OK;
}

void moe_vk_memory_release(moe_vk_backend *b)
{
    if (b->xfer_fence) b->vk.vkDestroyFence(b->device, b->xfer_fence, NULL);
    if (b->cmd_pool) b->vk.vkDestroyCommandPool(b->device, b->cmd_pool, NULL);
    moe_staged_reads_free(&b->outs);
    if (b->staging_map) b->vk.vkUnmapMemory(b->device, b->staging->block->memory);
    moe_vk_buffer_free(&b->base, b->staging);
    moe_vk_buffer_free(&b->base, b->dummy);
    while (b->blocks) drop_block(b, b->blocks); /* anything the core still holds */
}

/* ---- transfers ----------------------------------------------------------------------------- */

moe_status moe_vk_run_transfer(moe_vk_backend *b, void (*record)(moe_vk_backend *, VkCommandBuffer, void *),
                               void *arg)
{
    if (b->lost) return moe_fail(b->base.ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    const VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    MOE_VK_TRY(b, b->vk.vkBeginCommandBuffer(b->xfer, &bi));
    record(b, b->xfer, arg);
    MOE_VK_TRY(b, b->vk.vkEndCommandBuffer(b->xfer));
    const VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &b->xfer};
    MOE_VK_TRY(b, b->vk.vkQueueSubmit(b->queue, 1, &si, b->xfer_fence));
    const VkResult r = moe_vk_wait_fence(b, b->xfer_fence);
    b->vk.vkResetFences(b->device, 1, &b->xfer_fence);
    if (r != VK_SUCCESS) return moe_vk_fail(b, r, "vkWaitForFences");
    return moe_vk_check_validation(b);
}

typedef struct copy_args {
    VkBuffer src, dst;
    VkDeviceSize src_offset, dst_offset, size;
} copy_args;

static void record_copy(moe_vk_backend *b, VkCommandBuffer cmd, void *arg)
{
    const copy_args *c = arg;
    const VkBufferCopy region = {c->src_offset, c->dst_offset, c->size};
    /* Earlier kernels' and the host's writes before the copy; the copy's result to the
     * host (staging reads) and to later kernels after it. */
    const VkMemoryBarrier before = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
    const VkMemoryBarrier after = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                                   .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                                   .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT};
    /* (The transfer stage too: a forward's own copies, stage_in / stage_out, may still read or
     * write what this copy overwrites.) */
    b->vk.vkCmdPipelineBarrier(cmd,
                               VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_HOST_BIT |
                                   VK_PIPELINE_STAGE_TRANSFER_BIT,
                               VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, NULL, 0, NULL);
    b->vk.vkCmdCopyBuffer(cmd, c->src, c->dst, 1, &region);
    b->vk.vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                               VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                               &after, 0, NULL, 0, NULL);
}

static moe_status copy(moe_vk_backend *b, VkBuffer src, VkDeviceSize so, VkBuffer dst, VkDeviceSize dof,
                       VkDeviceSize n)
{
    copy_args c = {src, dst, so, dof, n};
    return moe_vk_run_transfer(b, record_copy, &c);
}

/* A transfer of its own may use the whole staging buffer, or its lower half while forwards'
 * staged bytes wait in the upper one. */
static size_t own_chunk(const moe_vk_backend *b)
{
    return b->stage_used ? STAGING_SIZE / 2 : STAGING_SIZE;
}

moe_status moe_vk_buffer_write(moe_backend *be, moe_addr dst, const void *src, size_t bytes)
{
    moe_vk_backend *b = moe_vkb(be);
    const size_t chunk = own_chunk(b);
    for (size_t done = 0; done < bytes;) {
        const size_t n = bytes - done < chunk ? bytes - done : chunk;
        memcpy(b->staging_map, (const char *)src + done, n);
        moe_status st = copy(b, b->staging->buffer, 0, dst.buf->buffer, dst.offset + done, n);
        if (st != MOE_OK) return st;
        done += n;
    }
    return MOE_OK;
}

moe_status moe_vk_buffer_read(moe_backend *be, moe_addr src, void *dst, size_t bytes)
{
    moe_vk_backend *b = moe_vkb(be);
    const size_t chunk = own_chunk(b);
    for (size_t done = 0; done < bytes;) {
        const size_t n = bytes - done < chunk ? bytes - done : chunk;
        moe_status st = copy(b, src.buf->buffer, src.offset + done, b->staging->buffer, 0, n);
        if (st != MOE_OK) return st;
        memcpy((char *)dst + done, b->staging_map, n);
        done += n;
    }
    return MOE_OK;
}

/* ---- a forward's own transfers (backend.h: stage_in, stage_out) -------------------------------- */

/* Room for `bytes` in the upper half of the staging buffer, 16-byte aligned (vkCmdCopyBuffer
 * needs nothing, memcpy likes it); SIZE_MAX when it is full. */
static size_t stage_alloc(moe_vk_backend *b, size_t bytes)
{
    const size_t need = (bytes + 15) & ~(size_t)15;
    if (need > b->stage_limit - b->stage_used) return SIZE_MAX;
    const size_t at = STAGING_SIZE / 2 + b->stage_used;
    b->stage_used += need;
    return at;
}

static moe_status stage_check(moe_vk_backend *b)
{
    if (b->record_status == MOE_OK && (!b->recording || b->cur == b->record_into))
        b->record_status = moe_fail(b->base.ctx, MOE_ERROR_INTERNAL,
                                    "vulkan: a staged transfer outside a forward moe submits");
    return b->record_status;
}

/* Copied into the staging buffer now and from there to dst by the forward's command buffer,
 * ahead of its first dispatch (which waits for it: staged_in); the begin's opening barrier
 * already orders the copy after the earlier forwards' use of dst. Too large: a write of its own,
 * which the queue runs before this forward. */
moe_status moe_vk_stage_in(moe_backend *be, moe_addr dst, const void *src, size_t bytes)
{
    moe_vk_backend *b = moe_vkb(be);
    if (stage_check(b) != MOE_OK || bytes == 0) return b->record_status;
    const size_t at = stage_alloc(b, bytes);
    if (at == SIZE_MAX) {
        const moe_status st = moe_vk_buffer_write(be, dst, src, bytes);
        if (st != MOE_OK) b->record_status = st;
        return st;
    }
    memcpy((char *)b->staging_map + at, src, bytes);
    const VkBufferCopy region = {at, dst.offset, bytes};
    b->vk.vkCmdCopyBuffer(b->cur->cmd, b->staging->buffer, dst.buf->buffer, 1, &region);
    b->staged_in = true;
    return MOE_OK;
}

/* Copied by the forward's command buffer into the staging buffer after its last dispatch, and by
 * the wait to dst (moe_vk_finish_outs). Too large: read from src by the wait. */
moe_status moe_vk_stage_out(moe_backend *be, moe_addr src, void *dst, size_t bytes)
{
    moe_vk_backend *b = moe_vkb(be);
    if (stage_check(b) != MOE_OK || bytes == 0) return b->record_status;
    const size_t at = stage_alloc(b, bytes);
    if (at != SIZE_MAX) {
        if (!b->staged_out) /* once, before the forward's first copy out */
            moe_vk_barrier(b, b->cur->cmd,
                           VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                           VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                           VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
        const VkBufferCopy region = {src.offset, at, bytes};
        b->vk.vkCmdCopyBuffer(b->cur->cmd, src.buf->buffer, b->staging->buffer, 1, &region);
        b->staged_out = true;
    }
    const moe_status st = moe_staged_reads_add(be, &b->outs, (moe_staged_read){src, at, dst, bytes});
    if (st != MOE_OK) b->record_status = st;
    return st;
}

void moe_vk_drop_forward_outs(moe_vk_backend *b)
{
    b->outs.n = b->outs_mark;
    b->stage_used = b->stage_mark;
}

moe_status moe_vk_finish_outs(moe_vk_backend *b, bool ok)
{
    moe_status st = MOE_OK;
    /* The reads of their own first, through the lower half of the staging buffer (stage_used is
     * still set, so own_chunk leaves the staged bytes alone): one that fails (the device lost
     * while reading) leaves every staged result's destination untouched. Only a read of its own
     * that fails part way has written some of its own destination (backend.h). */
    for (size_t i = 0; ok && i < b->outs.n && st == MOE_OK; i++) {
        const moe_staged_read *r = &b->outs.v[i];
        if (r->staged_at == SIZE_MAX) st = moe_vk_buffer_read(&b->base, r->src, r->dst, r->bytes);
    }
    for (size_t i = 0; ok && st == MOE_OK && i < b->outs.n; i++) {
        const moe_staged_read *r = &b->outs.v[i];
        if (r->staged_at != SIZE_MAX) memcpy(r->dst, (const char *)b->staging_map + r->staged_at, r->bytes);
    }
    b->stage_used = 0;
    b->outs.n = 0;
    return st;
}

/* ---- weights: Hugging Face layout, gated pairs as [E][gate, up][N][K] ------------------------- */

/* Each row in the bytes of the tensor's format (kernels/weight_format.h), rows back to back:
 * the device holds exactly the format's size, and the kernels read the format themselves. */
size_t moe_vk_weight_bytes(moe_backend *be, const moe_weight_src *s)
{
    (void)be;
    return moe_weight_rows_bytes(s);
}

/* Every row converted (or copied, when the source has the format already) into the staging
 * buffer by moe_weight_rows_stream (backend.h); a full staging buffer is one copy. */
typedef struct vk_upload {
    moe_vk_backend *b;
    moe_addr dst;
} vk_upload;

static moe_status vk_upload_flush(void *user, size_t offset, size_t bytes)
{
    const vk_upload *u = user;
    return copy(u->b, u->b->staging->buffer, 0, u->dst.buf->buffer, u->dst.offset + offset, bytes);
}

moe_status moe_vk_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *s)
{
    moe_vk_backend *b = moe_vkb(be);
    vk_upload u = {b, dst};
    return moe_weight_rows_stream(be->ctx, "vulkan", s, b->staging_map, own_chunk(b), vk_upload_flush, &u);
}
