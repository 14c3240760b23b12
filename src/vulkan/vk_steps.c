/*
 * vk_steps.c — a forward on Vulkan: every step is recorded into one command buffer (a
 * dispatch per kernel, a memory barrier between dispatches) that vk_submit.c begins, submits
 * and waits for, with GPU timestamps around it. Nothing is read back until the result: every dispatch size
 * comes from the host-known padded row bound.
 */
#include "vk_internal.h"

#include "../kernel_args.h"

#include <string.h>

/* One dispatch of `shader`: a launch built by src/kernel_args.c, the arguments of its kernel
 * description (kernels/<kernel>.h) and its workgroup counts. The parameters become the
 * pipeline's specialization constants, each buffer its binding, the fields the push
 * constants. A failure is remembered and returned by submit, so the steps
 * need no cleanup of their own.
 *
 * Every integer a shader receives is a 32-bit int. The core validates shapes and token counts
 * so that they fit (validate.c); this is the last check on the way: a value that does not fit
 * fails the forward with its name and value instead of being truncated (a capacity of
 * 2^32 + 1 once arrived as 1). Each buffer is bound exactly as far as its element count
 * reaches, and a tensor larger than the device's maxStorageBufferRange is refused rather than
 * silently cut short (every index a shader computes in 32 bits then stays inside its binding);
 * an absent one (the dummy buffer) is bound whole. The workgroup counts are checked against
 * the device's limits before they are narrowed to the 32 bits of vkCmdDispatch. */
static moe_status dispatch(moe_vk_backend *b, moe_vk_shader_id shader, const moe_klaunch *launch)
{
    const moe_kargs *args = &launch->args;
    const int64_t gx = launch->groups_x, gy = launch->groups_y;
    if (b->record_status != MOE_OK) return b->record_status;
    const moe_vk_shader_info *info = &moe_vk_shaders[shader];
    if (strcmp(args->kernel, info->kernel) != 0 || args->n_buffers != info->n_bindings ||
        4 * args->n_fields != info->push_bytes)
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_INTERNAL,
                            "vulkan: arguments of kernel %s given to shader %s", args->kernel, info->name);
    int64_t value = 0;
    const char *too_large = moe_kargs_overflow(args, &value);
    if (too_large)
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "vulkan: %s = %lld does not fit the kernels' 32-bit integers",
                                           too_large, (long long)value);
    const VkPhysicalDeviceLimits *l = &b->props.limits;
    if (gx < 0 || gy < 0 || gx > (int64_t)l->maxComputeWorkGroupCount[0] ||
        gy > (int64_t)l->maxComputeWorkGroupCount[1])
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                            "vulkan: %s needs %lld x %lld workgroups; the device allows %u x %u", info->name,
                            (long long)gx, (long long)gy, l->maxComputeWorkGroupCount[0],
                            l->maxComputeWorkGroupCount[1]);
    if (gx == 0 || gy == 0) return MOE_OK;
    VkPipeline pipeline;
    moe_status st = moe_vk_pipeline_get(b, shader, args, &pipeline);
    if (st != MOE_OK) return b->record_status = st;

    moe_vk_slot *slot = b->cur;
    if (b->staged_in) { /* the forward's copies in (stage_in) land before its first kernel reads */
        moe_vk_barrier(b, slot->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                       VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        b->staged_in = false;
    }
    const VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                            .descriptorPool = slot->desc_pool,
                                            .descriptorSetCount = 1,
                                            .pSetLayouts = &b->set_layouts[shader]};
    VkDescriptorSet set;
    VkResult r =
        MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY, b->vk.vkAllocateDescriptorSets(b->device, &ai, &set));
    if (r != VK_SUCCESS) return b->record_status = moe_vk_fail(b, r, "vkAllocateDescriptorSets");
    const uint32_t n = args->n_buffers;
    VkDescriptorBufferInfo bi[MOE_KMAX_BUFFERS];
    VkWriteDescriptorSet w[MOE_KMAX_BUFFERS];
    for (uint32_t i = 0; i < n; i++) {
        const moe_kbinding *k = &args->buffers[i];
        const bool present = k->buf.at.buf != NULL;
        const moe_backend_buffer *buf = present ? k->buf.at.buf : b->dummy;
        const VkDeviceSize offset = present ? k->buf.at.offset : 0;
        const VkDeviceSize to_end = ((buf->bytes + 3) & ~(VkDeviceSize)3) - offset;
        const VkDeviceSize bytes = present && k->buf.n > 0 ? (VkDeviceSize)k->buf.n * k->elem_bytes : 0;
        VkDeviceSize size = bytes ? (bytes + 3) & ~(VkDeviceSize)3 : to_end;
        if (size > to_end) size = to_end;
        if (bytes && size > l->maxStorageBufferRange)
            return b->record_status =
                       moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                "vulkan: %s binding %u (%s) needs %llu bytes; the device's "
                                "maxStorageBufferRange is %u (run fewer tokens per forward)",
                                info->name, i, k->name, (unsigned long long)size, l->maxStorageBufferRange);
        bi[i] = (VkDescriptorBufferInfo){buf->buffer, offset,
                                         size < l->maxStorageBufferRange ? size : l->maxStorageBufferRange};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                      .dstSet = set,
                                      .dstBinding = i,
                                      .descriptorCount = 1,
                                      .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    }
    /* The push-constant block: the fields as int32, in order (std430: 4 bytes apart). */
    int32_t push[MOE_KMAX_FIELDS];
    for (uint32_t i = 0; i < args->n_fields; i++) push[i] = (int32_t)args->fields[i].value;
    b->vk.vkUpdateDescriptorSets(b->device, n, w, 0, NULL);
    const VkCommandBuffer cmd = slot->cmd;
    b->vk.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    b->vk.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, b->layouts[shader], 0, 1, &set, 0,
                                  NULL);
    b->vk.vkCmdPushConstants(cmd, b->layouts[shader], VK_SHADER_STAGE_COMPUTE_BIT, 0, info->push_bytes, push);
    b->vk.vkCmdDispatch(cmd, (uint32_t)gx, (uint32_t)gy, 1);
    if (slot->query_pool && slot->n_queries < MOE_VK_MAX_QUERIES - 1) {
        slot->query_shader[slot->n_queries] = shader;
        b->vk.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, slot->query_pool,
                                  slot->n_queries++);
    }
    moe_vk_barrier(b, cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                   VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                   VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    return MOE_OK;
}

/* ---- the steps ------------------------------------------------------------------------------- */

/* What this device chose, for the launches src/kernel_args.c builds. */
static moe_kconfig kconfig(const moe_vk_backend *b)
{
    return (moe_kconfig){.wg_small = b->wg_small,
                         .wg_big = b->wg_big,
                         .gemm_bm = b->gemm_bm,
                         .gemm_bn = b->gemm_bn,
                         .gemm_bk = b->gemm_bk,
                         .gemm_tm = b->gemm_tm,
                         .gemm_tn = b->gemm_tn,
                         .gemm_shared = b->gemm_shared != 0,
                         .row_tile = b->base.row_tile,
                         .matvec_wg = b->matvec_wg,
                         .matvec_cols = b->matvec_cols,
                         .matvec_max_rows = b->matvec_max_rows};
}

/* An ffn step: the grouped GEMM, or at small T the decode kernel (moe_kuse_matvec: the same
 * arguments, its rows taken as (token, slot) pairs). W is bound one group of experts at a time,
 * as many whole experts as fit in maxStorageBufferRange (a real layer can exceed it:
 * Mixtral-8x7B's 5.6 GB against NVIDIA's 4 GB, or any large layer against lavapipe's 128 MiB);
 * each group is one dispatch whose row tiles (slots) of other experts exit at once. Sizes are
 * the weight format's bytes. A group's first matrix need not start at a multiple of
 * minStorageBufferOffsetAlignment, so the binding starts at the aligned offset below it and the
 * shader skips w_start bytes (any number: MXFP4's blocks are 17 bytes). MOE_VK_MAX_WEIGHT_BINDING lowers
 * the limit, so the tests exercise the grouping on small layers. The split is Vulkan's alone;
 * the arguments of each group's dispatch are the ones every backend fills (moe_klaunch_gemm,
 * moe_klaunch_matvec). */
static moe_status gemm(moe_vk_backend *b, const moe_ffn_step *s)
{
    const moe_kconfig c = kconfig(b);
    /* Small T: the decode kernel instead, over the same groups of experts (moe_kuse_matvec). */
    const bool matvec = moe_kuse_matvec(&c, s);
    const moe_vk_shader_id shader = !matvec                  ? MOE_VK_SHADER_GEMM
                                    : b->subgroup_arithmetic ? MOE_VK_SHADER_MATVEC_SUBGROUP
                                                             : MOE_VK_SHADER_MATVEC;
    const int64_t n_experts = s->n_experts;
    const moe_addr w = s->weights;
    const VkDeviceSize expert_bytes = (VkDeviceSize)moe_kgemm_expert_bytes(s);
    /* A multiple of 4: the binding's size is rounded up to whole words (the shader reads words),
     * and must stay within the limit (maxStorageBufferRange may be 2^32 - 1). */
    const VkDeviceSize limit = b->max_weight_binding & ~(VkDeviceSize)3;
    const VkDeviceSize align = b->props.limits.minStorageBufferOffsetAlignment;
    if (expert_bytes > limit)
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "vulkan: one expert's weights (%llu bytes) exceed the device's "
                                           "storage buffer range (%llu bytes)",
                                           (unsigned long long)expert_bytes, (unsigned long long)limit);
    const int64_t per_group = (int64_t)(limit / expert_bytes);
    for (int64_t e0 = 0, e1; e0 < n_experts; e0 = e1) {
        e1 = e0 + per_group < n_experts ? e0 + per_group : n_experts;
        const VkDeviceSize start = (VkDeviceSize)w.offset + (VkDeviceSize)e0 * expert_bytes;
        const VkDeviceSize lead = align > 1 ? start % align : 0; /* bytes below the group's first matrix */
        /* The lead can push a full group past the limit: it then takes one expert fewer. */
        while (e1 - e0 > 1 && lead + (VkDeviceSize)(e1 - e0) * expert_bytes > limit) e1--;
        if (lead + (VkDeviceSize)(e1 - e0) * expert_bytes > limit)
            return b->record_status = moe_fail(
                       b->base.ctx, MOE_ERROR_UNSUPPORTED,
                       "vulkan: one expert's weights (%llu bytes) at an offset aligned down by %llu "
                       "bytes exceed the device's storage buffer range (%llu bytes)",
                       (unsigned long long)expert_bytes, (unsigned long long)lead, (unsigned long long)limit);
        const moe_addr group = {w.buf, (size_t)(start - lead)};
        const moe_klaunch launch = matvec ? moe_klaunch_matvec(&c, s, e0, e1, group, (int64_t)lead)
                                          : moe_klaunch_gemm(&c, s, e0, e1, group, (int64_t)lead);
        dispatch(b, shader, &launch);
    }
    return b->record_status;
}

moe_status moe_vk_route(moe_backend *be, const moe_route_step *s)
{
    moe_vk_backend *b = moe_vkb(be);
    const moe_kconfig c = kconfig(b);
    moe_ffn_step router;
    moe_klaunch select;
    moe_klaunch_route(&c, s, &router, &select);
    const int64_t shared = moe_kselect_shared_bytes(s->desc->n_experts, c.wg_small);
    if (shared > (int64_t)b->props.limits.maxComputeSharedMemorySize)
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "vulkan: routing over %lld experts needs %lld bytes of shared "
                                           "memory; the device has %u",
                                           (long long)s->desc->n_experts, (long long)shared,
                                           b->props.limits.maxComputeSharedMemorySize);
    gemm(b, &router);
    return dispatch(b, MOE_VK_SHADER_SELECT, &select);
}

moe_status moe_vk_plan(moe_backend *be, const moe_plan_step *s)
{
    moe_vk_backend *b = moe_vkb(be);
    const moe_kconfig c = kconfig(b);
    const moe_kplan plan = moe_klaunch_plan(&c, s);
    dispatch(b, MOE_VK_SHADER_PLAN_COUNT, &plan.count);
    dispatch(b, MOE_VK_SHADER_PLAN_SCAN, &plan.scan);
    return dispatch(b, MOE_VK_SHADER_PLAN_SCATTER, &plan.scatter);
}

moe_status moe_vk_ffn(moe_backend *be, const moe_ffn_step *s)
{
    return gemm(moe_vkb(be), s);
}

moe_status moe_vk_combine(moe_backend *be, const moe_combine_step *s)
{
    moe_vk_backend *b = moe_vkb(be);
    const moe_kconfig c = kconfig(b);
    const moe_klaunch launch = moe_klaunch_combine(&c, s);
    /* Same arguments either way; the subgroup variant is a Vulkan build of the same kernel. */
    const moe_vk_shader_id shader =
        b->subgroup_arithmetic ? MOE_VK_SHADER_COMBINE_SUBGROUP : MOE_VK_SHADER_COMBINE;
    return dispatch(b, shader, &launch);
}

moe_status moe_vk_stats(moe_backend *be, const moe_stats_step *s)
{
    moe_vk_backend *b = moe_vkb(be);
    const moe_kconfig c = kconfig(b);
    const moe_klaunch launch = moe_klaunch_stats(&c, s);
    return dispatch(b, MOE_VK_SHADER_STATS, &launch);
}
