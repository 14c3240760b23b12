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

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Every integer a shader receives is a 32-bit int (specialisation and push constants). The
 * core validates shapes and token counts so that they fit (validate.c); this is the last
 * check on the way: a value that does not fit fails the forward with its name and value
 * instead of being truncated (a capacity of 2^32 + 1 once arrived as 1). */
static uint32_t i32(vk_backend *b, int64_t v, const char *what)
{
    if (v >= INT32_MIN && v <= INT32_MAX) return (uint32_t)(int32_t)v;
    if (b->record_status == MOE_OK)
        b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                    "vulkan: %s = %lld does not fit the kernels' 32-bit integers", what,
                                    (long long)v);
    return 0;
}
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
 * `bytes[i]` is how much of binding i the kernel reads or writes: it is bound exactly, and a
 * tensor larger than the device's maxStorageBufferRange is refused rather than silently cut
 * short (every index a shader computes in 32 bits then stays inside its binding). Every step
 * gives the size of every binding; only an absent one (the dummy buffer) has none. The
 * workgroup counts are checked against the device's limits before they are narrowed to the
 * 32 bits of vkCmdDispatch. */
static moe_status dispatch_sized(vk_backend *b, vk_shader_id shader, const uint32_t *spec, uint32_t n_spec,
                                 const moe_addr *bind, const VkDeviceSize *bytes, const void *push,
                                 int64_t gx, int64_t gy)
{
    if (b->record_status != MOE_OK) return b->record_status;
    const VkPhysicalDeviceLimits *l = &b->props.limits;
    if (gx < 0 || gy < 0 || gx > (int64_t)l->maxComputeWorkGroupCount[0] ||
        gy > (int64_t)l->maxComputeWorkGroupCount[1])
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                            "vulkan: %s needs %lld x %lld workgroups; the device allows %u x %u",
                            vk_shaders[shader].name, (long long)gx, (long long)gy,
                            l->maxComputeWorkGroupCount[0], l->maxComputeWorkGroupCount[1]);
    if (gx == 0 || gy == 0) return MOE_OK;
    VkPipeline pipeline;
    moe_status st = vk_pipeline_get(b, shader, spec, n_spec, &pipeline);
    if (st != MOE_OK) return b->record_status = st;

    const VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                            .descriptorPool = b->desc_pool, .descriptorSetCount = 1,
                                            .pSetLayouts = &b->set_layouts[shader]};
    VkDescriptorSet set;
    VkResult r = VK_INJECT(VK_ERROR_OUT_OF_HOST_MEMORY, b->vk.vkAllocateDescriptorSets(b->device, &ai, &set));
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
    b->vk.vkCmdDispatch(b->cmd, (uint32_t)gx, (uint32_t)gy, 1);
    if (b->query_pool && b->n_queries < VK_MAX_QUERIES - 1) {
        b->query_shader[b->n_queries] = shader;
        b->vk.vkCmdWriteTimestamp(b->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, b->query_pool, b->n_queries++);
    }
    barrier(b, b->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    return MOE_OK;
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

/* Bytes of n 32-bit elements (floats or ints) of one binding. */
static VkDeviceSize n4(int64_t n) { return 4 * (VkDeviceSize)n; }

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
                             i32(b, k_dim, "K_DIM"), i32(b, n_out, "N_OUT"), gated, i32(b, act, "ACT"),
                             gather, row_token.buf != NULL, tile_expert.buf != NULL, b->gemm_shared};
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
        wg.offset += (size_t)e0 * (size_t)expert_bytes;
        const moe_addr bind[] = {a, row_token, tile_expert, wg, out};
        const VkDeviceSize bytes[] = {n4(a_rows) * (VkDeviceSize)k_dim, n4(n_rows),
                                      n4(ceil_div(n_rows, b->gemm_bm)),
                                      (VkDeviceSize)(e1 - e0) * expert_bytes, n4(n_rows) * (VkDeviceSize)n_out};
        const uint32_t push[] = {i32(b, n_rows, "n_rows"), i32(b, e0, "expert_begin"),
                                 i32(b, e1, "expert_end")};
        dispatch_sized(b, VK_SHADER_GEMM, spec, 14, bind, bytes, push, ceil_div(n_out, b->gemm_bn),
                       ceil_div(n_rows, b->gemm_bm));
    }
    return b->record_status;
}

moe_status vk_route(moe_backend *be, const moe_route_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens;
    const moe_addr none = {0};
    gemm(b, T, T, d->d_model, d->n_experts, 1, false, -1, false, s->x, none, none, s->router, s->logits);
    const uint32_t spec[] = {b->wg_small, i32(b, d->n_experts, "E"), i32(b, d->top_k, "TOP_K"),
                             i32(b, d->n_group, "N_GROUP"), i32(b, d->topk_group, "TOPK_GROUP"),
                             d->score_func == MOE_SCORE_SIGMOID, d->group_score == MOE_GROUP_SCORE_MAX,
                             d->renormalize != 0, d->has_selection_bias != 0,
                             u32_of_float(d->routed_scaling_factor)};
    const moe_addr bind[] = {s->logits, s->router_bias, s->workspace, s->topk_ids, s->topk_weights};
    const VkDeviceSize bytes[] = {n4(T) * (VkDeviceSize)d->n_experts, n4(d->n_experts),
                                  n4(T) * (VkDeviceSize)(d->n_experts + d->n_group),
                                  n4(T) * (VkDeviceSize)d->top_k, n4(T) * (VkDeviceSize)d->top_k};
    const uint32_t push[] = {i32(b, T, "n_tokens")};
    return dispatch_sized(b, VK_SHADER_SELECT, spec, 10, bind, bytes, push, ceil_div(T, b->wg_small), 1);
}

moe_status vk_plan(moe_backend *be, const moe_plan_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens, blocks = ceil_div(T, PLAN_BLOCK);
    /* The core passes this forward's capacity (moe_effective_capacity): 0 or below T·k. */
    const uint32_t E = i32(b, d->n_experts, "E"), K = i32(b, d->top_k, "TOP_K");
    const uint32_t cap = i32(b, d->expert_capacity, "CAPACITY");
    const uint32_t push1[] = {i32(b, T, "n_tokens")};
    const uint32_t push2[] = {i32(b, T, "n_tokens"), i32(b, s->n_rows, "n_rows")};
    const VkDeviceSize ids = n4(T) * (VkDeviceSize)d->top_k, ws = n4(blocks) * (VkDeviceSize)d->n_experts;
    const VkDeviceSize per_expert = n4(d->n_experts + 1), rows = n4(s->n_rows);

    const uint32_t spec_count[] = {b->wg_small, E, K, PLAN_BLOCK};
    const moe_addr bind_count[] = {s->topk_ids, s->workspace};
    const VkDeviceSize bytes_count[] = {ids, ws};
    dispatch_sized(b, VK_SHADER_PLAN_COUNT, spec_count, 4, bind_count, bytes_count, push1,
                   ceil_div(blocks, b->wg_small), 1);

    const uint32_t spec_scan[] = {b->wg_big, E, PLAN_BLOCK, i32(b, be->row_tile, "ROW_TILE"), cap};
    const moe_addr bind_scan[] = {s->workspace, s->expert_counts, s->expert_offsets, s->tile_expert, s->row_token};
    const VkDeviceSize bytes_scan[] = {ws, per_expert, per_expert, n4(s->n_rows / be->row_tile), rows};
    dispatch_sized(b, VK_SHADER_PLAN_SCAN, spec_scan, 5, bind_scan, bytes_scan, push2, 1, 1);

    const uint32_t spec_scatter[] = {b->wg_small, E, K, PLAN_BLOCK, cap};
    const moe_addr bind_scatter[] = {s->topk_ids, s->workspace, s->expert_offsets, s->slot_row, s->row_token};
    const VkDeviceSize bytes_scatter[] = {ids, ws, per_expert, ids, rows};
    return dispatch_sized(b, VK_SHADER_PLAN_SCATTER, spec_scatter, 5, bind_scatter, bytes_scatter, push1,
                          ceil_div(blocks, b->wg_small), 1);
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
    const int64_t T = s->n_tokens;
    const uint32_t spec[] = {b->wg_big, i32(b, d->d_model, "D"), i32(b, d->top_k, "TOP_K"),
                             d->drop_policy == MOE_DROP_PASSTHROUGH, s->shared_out.buf != NULL,
                             s->shared_gate.buf != NULL};
    const moe_addr bind[] = {s->x, s->expert_out, s->slot_row, s->topk_weights, s->shared_out, s->shared_gate, s->y};
    const VkDeviceSize td = n4(T) * (VkDeviceSize)d->d_model, tk = n4(T) * (VkDeviceSize)d->top_k;
    const VkDeviceSize bytes[] = {td, n4(s->n_rows) * (VkDeviceSize)d->d_model, tk, tk, td, n4(d->d_model),
                                  td};
    const vk_shader_id shader = b->subgroup_arithmetic ? VK_SHADER_COMBINE_SUBGROUP : VK_SHADER_COMBINE;
    return dispatch_sized(b, shader, spec, 6, bind, bytes, NULL, T, 1);
}

moe_status vk_stats(moe_backend *be, const moe_stats_step *s)
{
    vk_backend *b = vkb(be);
    const moe_layer_desc *d = s->desc;
    const int64_t T = s->n_tokens;
    const uint32_t spec[] = {b->wg_big, i32(b, d->n_experts, "E"), i32(b, d->top_k, "TOP_K"),
                             d->score_func == MOE_SCORE_SIGMOID};
    const moe_addr bind[] = {s->logits, s->expert_counts, s->workspace, s->losses};
    const VkDeviceSize bytes[] = {n4(T) * (VkDeviceSize)d->n_experts, n4(d->n_experts + 1),
                                  n4(2 * T + d->n_experts), n4(2)};
    const uint32_t push[] = {i32(b, T, "n_tokens")};
    return dispatch_sized(b, VK_SHADER_STATS, spec, 4, bind, bytes, push, 1, 1);
}
