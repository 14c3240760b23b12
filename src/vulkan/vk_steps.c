/*
 * vk_steps.c — a forward on Vulkan: every step is recorded into one command buffer (a
 * dispatch per kernel, a memory barrier between dispatches) and submitted once at `finish`,
 * with GPU timestamps around it. Nothing is read back until the result: every dispatch size
 * comes from the host-known padded row bound.
 */
#include "vk_internal.h"

#include <string.h>
#include <time.h>

#define PLAN_BLOCK 32

static uint32_t ceil_div(int64_t a, int64_t b) { return (uint32_t)((a + b - 1) / b); }
static uint32_t u32_of_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void barrier(vk_backend *b, VkCommandBuffer cmd, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access)
{
    const VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = src_access,
                                .dstAccessMask = dst_access};
    b->vk.vkCmdPipelineBarrier(cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* One dispatch of `shader` with the given specialization, buffers and push constants. A
 * failure is remembered and returned by finish, so the steps need no cleanup of their own.
 * `bytes[i]`, when given and nonzero, is how much of binding i the kernel reads or writes: it
 * is bound exactly, and a tensor larger than the device's maxStorageBufferRange is refused
 * rather than silently cut short. Bindings without a size reach to the end of their buffer. */
static moe_status dispatch_sized(vk_backend *b, vk_shader_id shader, const uint32_t *spec, uint32_t n_spec,
                                 const moe_addr *bind, const VkDeviceSize *bytes, const void *push, uint32_t gx,
                                 uint32_t gy)
{
    if (b->record_status != MOE_OK) return b->record_status;
    const VkPhysicalDeviceLimits *l = &b->props.limits;
    if (gx > l->maxComputeWorkGroupCount[0] || gy > l->maxComputeWorkGroupCount[1])
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "vulkan: %s needs %u x %u workgroups; the device allows %u x %u",
                                           vk_shaders[shader].name, gx, gy, l->maxComputeWorkGroupCount[0],
                                           l->maxComputeWorkGroupCount[1]);
    if (gx == 0 || gy == 0) return MOE_OK;
    VkPipeline pipeline;
    moe_status st = vk_pipeline_get(b, shader, spec, n_spec, &pipeline);
    if (st != MOE_OK) return b->record_status = st;

    const VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                            .descriptorPool = b->desc_pool, .descriptorSetCount = 1,
                                            .pSetLayouts = &b->set_layouts[shader]};
    VkDescriptorSet set;
    VkResult r = b->vk.vkAllocateDescriptorSets(b->device, &ai, &set);
    if (r != VK_SUCCESS) return b->record_status = vk_fail(b, r, "vkAllocateDescriptorSets");
    const uint32_t n = vk_shaders[shader].n_bindings;
    VkDescriptorBufferInfo info[8];
    VkWriteDescriptorSet w[8];
    for (uint32_t i = 0; i < n; i++) {
        const moe_bbuf *buf = bind[i].buf ? bind[i].buf : b->dummy;
        const VkDeviceSize offset = bind[i].buf ? bind[i].offset : 0;
        const VkDeviceSize to_end = ((buf->bytes + 3) & ~(VkDeviceSize)3) - offset;
        VkDeviceSize size = bytes && bytes[i] && bind[i].buf ? (bytes[i] + 3) & ~(VkDeviceSize)3 : to_end;
        if (size > to_end) size = to_end;
        if (bytes && bytes[i] && bind[i].buf && size > l->maxStorageBufferRange)
            return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                               "vulkan: %s binding %u needs %llu bytes; the device's "
                                               "maxStorageBufferRange is %u (run fewer tokens per forward)",
                                               vk_shaders[shader].name, i, (unsigned long long)size,
                                               l->maxStorageBufferRange);
        info[i] = (VkDescriptorBufferInfo){buf->buffer, offset,
                                           size < l->maxStorageBufferRange ? size : l->maxStorageBufferRange};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .dstBinding = i,
                                      .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &info[i]};
    }
    b->vk.vkUpdateDescriptorSets(b->device, n, w, 0, NULL);
    b->vk.vkCmdBindPipeline(b->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    b->vk.vkCmdBindDescriptorSets(b->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, b->layouts[shader], 0, 1, &set, 0, NULL);
    if (vk_shaders[shader].push_bytes)
        b->vk.vkCmdPushConstants(b->cmd, b->layouts[shader], VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                 vk_shaders[shader].push_bytes, push);
    b->vk.vkCmdDispatch(b->cmd, gx, gy, 1);
    if (b->query_pool && b->n_queries < VK_MAX_QUERIES - 1) {
        b->query_shader[b->n_queries] = shader;
        b->vk.vkCmdWriteTimestamp(b->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, b->query_pool, b->n_queries++);
    }
    barrier(b, b->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    return MOE_OK;
}

static moe_status dispatch(vk_backend *b, vk_shader_id shader, const uint32_t *spec, uint32_t n_spec,
                           const moe_addr *bind, const void *push, uint32_t gx, uint32_t gy)
{
    return dispatch_sized(b, shader, spec, n_spec, bind, NULL, push, gx, gy);
}

static double now_ms(void)
{
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

moe_status vk_begin(moe_backend *be)
{
    vk_backend *b = vkb(be);
    if (b->lost) return moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost");
    VK_TRY(b, b->vk.vkResetDescriptorPool(b->device, b->desc_pool, 0));
    const VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                         .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VK_TRY(b, b->vk.vkBeginCommandBuffer(b->cmd, &bi));
    b->recording = true;
    b->record_status = MOE_OK;
    if (b->query_pool) {
        b->vk.vkCmdResetQueryPool(b->cmd, b->query_pool, 0, VK_MAX_QUERIES);
        b->vk.vkCmdWriteTimestamp(b->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, b->query_pool, 0);
        b->n_queries = 1;
    }
    /* Earlier uploads (a separate submission) become visible to the kernels. */
    barrier(b, b->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    return MOE_OK;
}

moe_status vk_finish(moe_backend *be)
{
    vk_backend *b = vkb(be);
    if (!b->recording) return b->lost ? moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "vulkan: the device was lost") : MOE_OK;
    b->recording = false;
    barrier(b, b->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
    if (b->query_pool) b->vk.vkCmdWriteTimestamp(b->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, b->query_pool, b->n_queries++);
    VK_TRY(b, b->vk.vkEndCommandBuffer(b->cmd));
    if (b->record_status != MOE_OK) return b->record_status; /* recorded, never submitted */
    if (b->inject_lost) {
        b->inject_lost = 0;
        return vk_fail(b, VK_ERROR_DEVICE_LOST, "vkQueueSubmit (injected by MOE_VK_INJECT=lost)");
    }
    const VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &b->cmd};
    const double t0 = now_ms();
    VK_TRY(b, b->vk.vkQueueSubmit(b->queue, 1, &si, b->fence));
    const VkResult r = b->vk.vkWaitForFences(b->device, 1, &b->fence, VK_TRUE, UINT64_MAX);
    b->vk.vkResetFences(b->device, 1, &b->fence);
    if (r != VK_SUCCESS) return vk_fail(b, r, "vkWaitForFences");
    be->last_device_ms = now_ms() - t0;
    uint64_t ts[VK_MAX_QUERIES];
    const uint32_t nq = b->n_queries;
    if (b->query_pool &&
        b->vk.vkGetQueryPoolResults(b->device, b->query_pool, 0, nq, sizeof ts, ts, sizeof ts[0],
                                    VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
        const uint64_t mask = b->timestamp_bits >= 64 ? ~0ull : (1ull << b->timestamp_bits) - 1;
        const double ms = b->props.limits.timestampPeriod * 1e-6;
        be->last_device_ms = (double)((ts[nq - 1] - ts[0]) & mask) * ms;
        /* Per-kernel times, for whoever listens at DEBUG level. */
        for (uint32_t i = 1; i + 1 < nq; i++)
            moe_log(be->ctx, MOE_LOG_DEBUG, "vulkan: %-12s %9.3f ms", vk_shaders[b->query_shader[i]].name,
                    (double)((ts[i] - ts[i - 1]) & mask) * ms);
    }
    return vk_check_validation(b);
}

/* ---- the steps ------------------------------------------------------------------------------- */

/* The grouped GEMM. W is bound one group of experts at a time, as many whole experts as fit in
 * maxStorageBufferRange (a real layer can exceed it: Mixtral-8x7B's 5.6 GB against NVIDIA's
 * 4 GB, or any large layer against lavapipe's 128 MiB); each group is one dispatch whose row
 * tiles of other experts exit at once. MOE_VK_MAX_WEIGHT_BINDING lowers the limit, so the
 * tests exercise the grouping on small layers. */
static moe_status gemm(vk_backend *b, int64_t n_rows, int64_t a_rows, int64_t k_dim, int64_t n_out, int64_t n_experts,
                       bool gated, int act, bool gather, moe_addr a, moe_addr row_token, moe_addr tile_expert,
                       moe_addr w, moe_addr out)
{
    const uint32_t spec[] = {(b->gemm_bm / b->gemm_tm) * (b->gemm_bn / b->gemm_tn),
                             b->gemm_bm, b->gemm_bn, b->gemm_bk, b->gemm_tm, b->gemm_tn,
                             (uint32_t)k_dim, (uint32_t)n_out, gated, (uint32_t)act, gather,
                             row_token.buf != NULL, tile_expert.buf != NULL, b->gemm_shared};
    const VkDeviceSize expert_bytes = sizeof(float) * (gated ? 2u : 1u) * (VkDeviceSize)n_out * (VkDeviceSize)k_dim;
    const VkDeviceSize limit = b->max_weight_binding;
    if (expert_bytes > limit)
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "vulkan: one expert's weights (%llu bytes) exceed the device's "
                                           "storage buffer range (%llu bytes)",
                                           (unsigned long long)expert_bytes, (unsigned long long)limit);
    const int64_t per_group = (int64_t)(limit / expert_bytes);
    for (int64_t e0 = 0; e0 < n_experts; e0 += per_group) {
        const int64_t e1 = e0 + per_group < n_experts ? e0 + per_group : n_experts;
        moe_addr wg = w;
        wg.offset += (size_t)(e0 * (int64_t)expert_bytes);
        const moe_addr bind[] = {a, row_token, tile_expert, wg, out};
        const VkDeviceSize bytes[] = {sizeof(float) * (VkDeviceSize)a_rows * (VkDeviceSize)k_dim,
                                      sizeof(int32_t) * (VkDeviceSize)n_rows,
                                      sizeof(int32_t) * (VkDeviceSize)((n_rows + b->gemm_bm - 1) / b->gemm_bm),
                                      (VkDeviceSize)(e1 - e0) * expert_bytes,
                                      sizeof(float) * (VkDeviceSize)n_rows * (VkDeviceSize)n_out};
        const int32_t push[] = {(int32_t)n_rows, (int32_t)e0, (int32_t)e1};
        dispatch_sized(b, VK_SHADER_GEMM, spec, 14, bind, bytes, push, ceil_div(n_out, b->gemm_bn),
                       ceil_div(n_rows, b->gemm_bm));
    }
    return b->record_status;
}

moe_status vk_route(moe_backend *be, const moe_route_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const moe_addr none = {0};
    gemm(b, s->n_tokens, s->n_tokens, d->d_model, d->n_experts, 1, false, -1, false, s->x, none, none, s->router,
         s->logits);
    const uint32_t spec[] = {b->wg_small, (uint32_t)d->n_experts, (uint32_t)d->top_k, (uint32_t)d->n_group,
                             (uint32_t)d->topk_group, d->score_func == MOE_SCORE_SIGMOID,
                             d->group_score == MOE_GROUP_SCORE_MAX, d->renormalize != 0, d->has_selection_bias != 0,
                             u32_of_float(d->routed_scaling_factor)};
    const moe_addr bind[] = {s->logits, s->router_bias, s->workspace, s->topk_ids, s->topk_weights};
    const int32_t push[] = {(int32_t)s->n_tokens};
    return dispatch(b, VK_SHADER_SELECT, spec, 10, bind, push, ceil_div(s->n_tokens, b->wg_small), 1);
}

moe_status vk_plan(moe_backend *be, const moe_plan_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const uint32_t E = (uint32_t)d->n_experts, K = (uint32_t)d->top_k, cap = (uint32_t)d->expert_capacity;
    const uint32_t blocks = ceil_div(s->n_tokens, PLAN_BLOCK);
    const int32_t push1[] = {(int32_t)s->n_tokens};
    const int32_t push2[] = {(int32_t)s->n_tokens, (int32_t)s->n_rows};

    const uint32_t spec_count[] = {b->wg_small, E, K, PLAN_BLOCK};
    const moe_addr bind_count[] = {s->topk_ids, s->workspace};
    dispatch(b, VK_SHADER_PLAN_COUNT, spec_count, 4, bind_count, push1, ceil_div(blocks, b->wg_small), 1);

    const uint32_t spec_scan[] = {b->wg_big, E, PLAN_BLOCK, (uint32_t)be->row_tile, cap};
    const moe_addr bind_scan[] = {s->workspace, s->expert_counts, s->expert_offsets, s->tile_expert, s->row_token};
    dispatch(b, VK_SHADER_PLAN_SCAN, spec_scan, 5, bind_scan, push2, 1, 1);

    const uint32_t spec_scatter[] = {b->wg_small, E, K, PLAN_BLOCK, cap};
    const moe_addr bind_scatter[] = {s->topk_ids, s->workspace, s->expert_offsets, s->slot_row, s->row_token};
    return dispatch(b, VK_SHADER_PLAN_SCATTER, spec_scatter, 5, bind_scatter, push1, ceil_div(blocks, b->wg_small), 1);
}

moe_status vk_ffn(moe_backend *be, const moe_ffn_step *s)
{
    return gemm(vkb(be), s->n_rows, s->a_rows, s->k_dim, s->n_out, s->n_experts, s->gated,
                s->apply_activation ? (int)s->activation : -1, s->gather, s->a, s->row_token, s->tile_expert,
                s->weights, s->out);
}

moe_status vk_combine(moe_backend *be, const moe_combine_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const uint32_t spec[] = {b->wg_big, (uint32_t)d->d_model, (uint32_t)d->top_k,
                             d->drop_policy == MOE_DROP_PASSTHROUGH, s->shared_out.buf != NULL,
                             s->shared_gate.buf != NULL};
    const moe_addr bind[] = {s->x, s->expert_out, s->slot_row, s->topk_weights, s->shared_out, s->shared_gate, s->y};
    const VkDeviceSize td = sizeof(float) * (VkDeviceSize)s->n_tokens * (VkDeviceSize)d->d_model;
    const VkDeviceSize bytes[] = {td, sizeof(float) * (VkDeviceSize)s->n_rows * (VkDeviceSize)d->d_model, 0, 0, td, 0, td};
    const vk_shader_id shader = b->subgroup_arithmetic ? VK_SHADER_COMBINE_SUBGROUP : VK_SHADER_COMBINE;
    return dispatch_sized(b, shader, spec, 6, bind, bytes, NULL, (uint32_t)s->n_tokens, 1);
}

moe_status vk_stats(moe_backend *be, const moe_stats_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const uint32_t spec[] = {b->wg_big, (uint32_t)d->n_experts, (uint32_t)d->top_k, d->score_func == MOE_SCORE_SIGMOID};
    const moe_addr bind[] = {s->logits, s->expert_counts, s->workspace, s->losses};
    const int32_t push[] = {(int32_t)s->n_tokens};
    return dispatch(b, VK_SHADER_STATS, spec, 4, bind, push, 1, 1);
}
