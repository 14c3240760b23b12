/*
 * vk_submit.c — how a forward reaches the queue: begin records into a submission slot's
 * command buffer, submit hands it to the queue with the slot's fence, wait collects every
 * pending slot in submission order (fences, timestamps, validation messages).
 *
 * Slots form a ring of MOE_VK_MAX_IN_FLIGHT, so a chain of asynchronous forwards
 * (moe_layer_forward_async) is a queue of command buffers that the device runs back to back.
 * Every forward uses the context's one scratch region, and consecutive forwards read each
 * other's outputs: each command buffer opens with a barrier from the earlier submissions'
 * shader and transfer writes to this one's shader reads and writes — a pipeline barrier's first
 * scope takes in everything submitted before it on the queue, which is the ordering the core
 * relies on. A synchronous forward is a submit and a wait on slot 0, so an application that
 * never goes asynchronous never makes a second slot.
 */
#include "vk_internal.h"

#include "../platform/system.h"

void moe_vk_barrier(moe_vk_backend *b, VkCommandBuffer cmd, VkPipelineStageFlags src,
                    VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    const VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access, .dstAccessMask = dst_access};
    b->vk.vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* Makes whatever the slot still lacks (a failed attempt leaves the part it made, for the next
 * one or for release): command buffer, fence, descriptor pool, timestamp pool. */
static moe_status slot_make(moe_vk_backend *b, moe_vk_slot *s)
{
    if (!s->cmd) {
        const VkCommandBufferAllocateInfo ci = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                                .commandPool = b->cmd_pool,
                                                .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                                .commandBufferCount = 1};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                        b->vk.vkAllocateCommandBuffers(b->device, &ci, &s->cmd)));
    }
    if (!s->fence) {
        const VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                        b->vk.vkCreateFence(b->device, &fi, NULL, &s->fence)));
    }
    if (!s->desc_pool) {
        /* Enough sets for a forward of many dispatches (one GEMM per group of experts). */
        const VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                         MOE_VK_MAX_SETS * MOE_KMAX_BUFFERS};
        const VkDescriptorPoolCreateInfo dp = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                               .maxSets = MOE_VK_MAX_SETS,
                                               .poolSizeCount = 1,
                                               .pPoolSizes = &ps};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                        b->vk.vkCreateDescriptorPool(b->device, &dp, NULL, &s->desc_pool)));
    }
    if (!s->query_pool && b->timestamp_bits > 0) {
        const VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                          .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                          .queryCount = MOE_VK_MAX_QUERIES};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                        b->vk.vkCreateQueryPool(b->device, &qi, NULL, &s->query_pool)));
    }
    return MOE_OK;
}

moe_status moe_vk_slots_init(moe_vk_backend *b)
{
    return slot_make(b, &b->slots[0]);
}

void moe_vk_slots_release(moe_vk_backend *b)
{
    for (int i = 0; i < MOE_VK_MAX_IN_FLIGHT; i++) {
        moe_vk_slot *s = &b->slots[i];
        if (s->query_pool) b->vk.vkDestroyQueryPool(b->device, s->query_pool, NULL);
        if (s->desc_pool) b->vk.vkDestroyDescriptorPool(b->device, s->desc_pool, NULL);
        if (s->fence) b->vk.vkDestroyFence(b->device, s->fence, NULL);
        /* the command buffer goes with the pool (moe_vk_memory_release) */
    }
}

VkResult moe_vk_wait_fence(moe_vk_backend *b, VkFence fence)
{
    if (b->wait_spin_ns > 0) {
        const uint64_t t0 = moe_sys_now_ns();
        VkResult r;
        while ((r = b->vk.vkGetFenceStatus(b->device, fence)) == VK_NOT_READY &&
               moe_sys_now_ns() - t0 < b->wait_spin_ns) {
        }
        if (r != VK_NOT_READY) return r;
    }
    return b->vk.vkWaitForFences(b->device, 1, &fence, VK_TRUE, UINT64_MAX);
}

/* Waits for one pending slot; its timestamps become last_device_ms. */
static moe_status slot_collect(moe_vk_backend *b, moe_vk_slot *s)
{
    const double t0 = moe_now_ms();
    s->pending = false;
    const VkResult r = moe_vk_wait_fence(b, s->fence);
    b->vk.vkResetFences(b->device, 1, &s->fence);
    if (r != VK_SUCCESS) return moe_vk_fail(b, r, "vkWaitForFences");
    moe_backend *be = &b->base;
    be->last_device_ms = moe_now_ms() - t0; /* without timestamps: at least the wait */
    uint64_t ts[MOE_VK_MAX_QUERIES];
    const uint32_t nq = s->n_queries;
    if (s->query_pool && nq >= 2 &&
        b->vk.vkGetQueryPoolResults(b->device, s->query_pool, 0, nq, sizeof ts, ts, sizeof ts[0],
                                    VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
        const uint64_t mask = b->timestamp_bits >= 64 ? ~0ull : (1ull << b->timestamp_bits) - 1;
        const double ms = b->props.limits.timestampPeriod * 1e-6;
        be->last_device_ms = (double)((ts[nq - 1] - ts[0]) & mask) * ms;
        /* Per-kernel times, for whoever listens at DEBUG level. */
        for (uint32_t i = 1; i + 1 < nq; i++)
            moe_log(be->ctx, MOE_LOG_DEBUG, "vulkan: %-12s %9.3f ms", moe_vk_shaders[s->query_shader[i]].name,
                    (double)((ts[i] - ts[i - 1]) & mask) * ms);
    }
    be->device_ms_total += be->last_device_ms; /* one slot, one forward: each wait adds its own */
    return MOE_OK;
}

/* A forward's first command: earlier uploads and forwards (separate submissions, or earlier in
 * the application's command buffer; possibly still running) finish their writes before this
 * forward's kernels read or overwrite. */
static void open_barrier(moe_vk_backend *b, VkCommandBuffer cmd)
{
    /* Its second scope takes in the forward's own copies (stage_in) too: they may overwrite what
     * an earlier forward still reads. */
    moe_vk_barrier(b, cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT);
}

/* Recording into an application's command buffer (b->record_into, moe_vulkan_layer_record):
 * the same barrier first, then the steps' dispatches with the recording's own descriptor sets
 * and no timestamps; submit only closes with the barrier that makes y visible after it. */
static moe_status begin_recording(moe_vk_backend *b)
{
    moe_vk_slot *s = b->record_into;
    b->cur = s;
    b->recording = true;
    b->record_status = MOE_OK;
    s->n_queries = 0;
    open_barrier(b, s->cmd);
    return MOE_OK;
}

moe_status moe_vk_begin(moe_backend *be)
{
    moe_vk_backend *b = moe_vkb(be);
    if (b->lost) return moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    if (b->record_into) return begin_recording(b);
    moe_vk_slot *s = &b->slots[b->next];
    if (s->pending) { /* the ring is full: the oldest forward completes first */
        const moe_status st = slot_collect(b, s);
        if (st != MOE_OK) return st;
    }
    moe_status st = slot_make(b, s);
    if (st != MOE_OK) return st;
    MOE_VK_TRY(b, b->vk.vkResetDescriptorPool(b->device, s->desc_pool, 0));
    const VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    MOE_VK_TRY(b, b->vk.vkBeginCommandBuffer(s->cmd, &bi));
    b->cur = s;
    b->recording = true;
    b->record_status = MOE_OK;
    b->staged_in = b->staged_out = false;
    b->stage_mark = b->stage_used;
    b->outs_mark = b->outs.n;
    s->n_queries = 0;
    if (s->query_pool) {
        b->vk.vkCmdResetQueryPool(s->cmd, s->query_pool, 0, MOE_VK_MAX_QUERIES);
        b->vk.vkCmdWriteTimestamp(s->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, s->query_pool, 0);
        s->n_queries = 1;
    }
    open_barrier(b, s->cmd);
    return MOE_OK;
}

moe_status moe_vk_submit(moe_backend *be)
{
    moe_vk_backend *b = moe_vkb(be);
    if (!b->recording)
        return b->lost ? moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost") : MOE_OK;
    b->recording = false;
    moe_vk_slot *s = b->cur;
    if (s == b->record_into) { /* the application's command buffer: it submits it */
        moe_vk_barrier(b, s->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT);
        return b->record_status;
    }
    moe_vk_barrier(b, s->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    if (b->staged_out) /* the copies out, to the host that reads them after the fence */
        moe_vk_barrier(b, s->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    if (s->query_pool)
        b->vk.vkCmdWriteTimestamp(s->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, s->query_pool,
                                  s->n_queries++);
    const VkResult end = b->vk.vkEndCommandBuffer(s->cmd);
    if (end != VK_SUCCESS && b->record_status == MOE_OK)
        b->record_status = moe_vk_fail(b, end, "vkEndCommandBuffer");
    if (b->inject_lost) {
        b->inject_lost = 0;
        if (b->record_status == MOE_OK)
            b->record_status =
                moe_vk_fail(b, VK_ERROR_DEVICE_LOST, "vkQueueSubmit (injected by MOE_VK_INJECT=lost)");
    }
    if (b->record_status != MOE_OK) { /* recorded, never submitted: nothing of it to read back */
        moe_vk_drop_forward_outs(b);
        return b->record_status;
    }
    const VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &s->cmd};
    const VkResult r = b->vk.vkQueueSubmit(b->queue, 1, &si, s->fence);
    if (r != VK_SUCCESS) {
        moe_vk_drop_forward_outs(b);
        return moe_vk_fail(b, r, "vkQueueSubmit");
    }
    s->pending = true;
    b->next = (b->next + 1) % MOE_VK_MAX_IN_FLIGHT;
    return MOE_OK;
}

moe_status moe_vk_wait(moe_backend *be)
{
    moe_vk_backend *b = moe_vkb(be);
    moe_status first = MOE_OK;
    /* From the oldest (the slot after the newest, around the ring) to the newest. */
    for (uint32_t i = 0; i < MOE_VK_MAX_IN_FLIGHT; i++) {
        moe_vk_slot *s = &b->slots[(b->next + i) % MOE_VK_MAX_IN_FLIGHT];
        if (!s->pending) continue;
        const moe_status st = slot_collect(b, s);
        if (first == MOE_OK) first = st;
    }
    b->next = 0; /* all idle: the next forward takes slot 0 again */
    if (first == MOE_OK && b->lost)
        first = moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    if (first == MOE_OK) first = moe_vk_check_validation(b);
    const moe_status outs = moe_vk_finish_outs(b, first == MOE_OK);
    return first != MOE_OK ? first : outs;
}
