/*
 * vk_pipeline.c — shader modules, descriptor/pipeline layouts, and compute pipelines
 * specialised per shape (tile sizes, d_model, d_ff, k, activation… are specialization
 * constants, rendered from a dispatch's moe_kargs by the ids its kernel description gives, so
 * the kernels' loops have constant bounds). Pipelines are created on first use and kept for
 * the context; a VkPipelineCache is loaded from and saved to the cache directory
 * ($MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe, else ~/.cache/moe), in a file named after the
 * device's vendor, device id, driver version and pipeline-cache UUID, so a different driver
 * never reuses a stale cache (src/cache.c writes it atomically).
 */
#include "../alloc.h"
#include "vk_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- cache file ---------------------------------------------------------------------------- */

static void cache_path(moe_vk_backend *b)
{
    char dir[768];
    if (!moe_cache_dir(b->base.ctx, dir, sizeof dir)) return;
    char uuid[2 * VK_UUID_SIZE + 1];
    for (unsigned i = 0; i < VK_UUID_SIZE; i++)
        snprintf(uuid + 2 * i, 3, "%02x", b->props.pipelineCacheUUID[i]);
    snprintf(b->cache_path, sizeof b->cache_path, "%s/vulkan-%04x-%04x-%08x-%s.cache", dir, b->props.vendorID,
             b->props.deviceID, b->props.driverVersion, uuid);
}

static void save_cache(moe_vk_backend *b)
{
    if (!b->cache_path[0] || !b->pipeline_cache) return;
    size_t n = 0;
    if (b->vk.vkGetPipelineCacheData(b->device, b->pipeline_cache, &n, NULL) != VK_SUCCESS || n == 0) return;
    void *data = moe_malloc(n);
    if (data && b->vk.vkGetPipelineCacheData(b->device, b->pipeline_cache, &n, data) == VK_SUCCESS)
        moe_cache_write(b->base.ctx, b->cache_path, NULL, 0, data, n);
    moe_free(data);
}

/* ---- layouts and modules --------------------------------------------------------------------- */

moe_status moe_vk_pipelines_init(moe_vk_backend *b)
{
    for (int s = 0; s < MOE_VK_SHADER_COUNT; s++) {
        const moe_vk_shader_info *info = &moe_vk_shaders[s];
        if (info->subgroup_arithmetic && !b->subgroup_arithmetic) continue; /* SPIR-V 1.3 */
        const VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                             .codeSize = info->size,
                                             .pCode = info->code};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                        b->vk.vkCreateShaderModule(b->device, &mi, NULL, &b->modules[s])));
        VkDescriptorSetLayoutBinding bind[MOE_KMAX_BUFFERS];
        for (uint32_t i = 0; i < info->n_bindings; i++)
            bind[i] = (VkDescriptorSetLayoutBinding){.binding = i,
                                                     .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                     .descriptorCount = 1,
                                                     .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
        const VkDescriptorSetLayoutCreateInfo li = {.sType =
                                                        VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                                    .bindingCount = info->n_bindings,
                                                    .pBindings = bind};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(
                          VK_ERROR_OUT_OF_HOST_MEMORY,
                          b->vk.vkCreateDescriptorSetLayout(b->device, &li, NULL, &b->set_layouts[s])));
        const VkPushConstantRange pr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, info->push_bytes};
        const VkPipelineLayoutCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                               .setLayoutCount = 1,
                                               .pSetLayouts = &b->set_layouts[s],
                                               .pushConstantRangeCount = info->push_bytes ? 1 : 0,
                                               .pPushConstantRanges = &pr};
        MOE_VK_TRY(b, MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                        b->vk.vkCreatePipelineLayout(b->device, &pi, NULL, &b->layouts[s])));
    }
    cache_path(b);
    size_t size = 0;
    void *data = b->cache_path[0] ? moe_cache_read(b->base.ctx, b->cache_path, &size) : NULL;
    VkPipelineCacheCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO, .initialDataSize = size, .pInitialData = data};
    VkResult r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                                   b->vk.vkCreatePipelineCache(b->device, &ci, NULL, &b->pipeline_cache));
    if (r != VK_SUCCESS && data) { /* a corrupt file: start empty */
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = MOE_VK_ALLOC_CALL(VK_ERROR_OUT_OF_HOST_MEMORY,
                              b->vk.vkCreatePipelineCache(b->device, &ci, NULL, &b->pipeline_cache));
    }
    moe_free(data);
    if (r != VK_SUCCESS) return moe_vk_fail(b, r, "vkCreatePipelineCache");
    moe_log(b->base.ctx, MOE_LOG_DEBUG, "vulkan: pipeline cache %s (%zu bytes loaded)", b->cache_path, size);

    return MOE_OK;
}

void moe_vk_pipelines_release(moe_vk_backend *b)
{
    save_cache(b);
    for (size_t i = 0; i < b->n_pipelines; i++)
        b->vk.vkDestroyPipeline(b->device, b->pipelines[i].pipeline, NULL);
    moe_free(b->pipelines);
    if (b->pipeline_cache) b->vk.vkDestroyPipelineCache(b->device, b->pipeline_cache, NULL);
    for (int s = 0; s < MOE_VK_SHADER_COUNT; s++) {
        if (b->layouts[s]) b->vk.vkDestroyPipelineLayout(b->device, b->layouts[s], NULL);
        if (b->set_layouts[s]) b->vk.vkDestroyDescriptorSetLayout(b->device, b->set_layouts[s], NULL);
        if (b->modules[s]) b->vk.vkDestroyShaderModule(b->device, b->modules[s], NULL);
    }
}

moe_status moe_vk_pipeline_get(moe_vk_backend *b, moe_vk_shader_id shader, const moe_kargs *args,
                               VkPipeline *out)
{
    /* Specialization data: one 32-bit word per parameter, in the description's order, each
     * mapped to its constant_id. */
    const uint32_t n_spec = args->n_params;
    uint32_t spec[MOE_KMAX_PARAMS];
    VkSpecializationMapEntry map[MOE_KMAX_PARAMS];
    for (uint32_t i = 0; i < n_spec; i++) {
        spec[i] = moe_kparam_bits(&args->params[i]);
        map[i] = (VkSpecializationMapEntry){args->params[i].id, i * 4, 4};
    }
    for (size_t i = 0; i < b->n_pipelines; i++) {
        const moe_vk_pipeline *p = &b->pipelines[i];
        if (p->shader == shader && p->n_spec == n_spec && !memcmp(p->spec, spec, n_spec * sizeof *spec)) {
            *out = p->pipeline;
            return MOE_OK;
        }
    }
    if (b->n_pipelines == b->cap_pipelines) {
        const size_t cap = b->cap_pipelines ? 2 * b->cap_pipelines : 32;
        moe_vk_pipeline *p = moe_realloc(b->pipelines, cap * sizeof *p);
        if (!p) return moe_fail(b->base.ctx, MOE_ERROR_OUT_OF_MEMORY, "vulkan: out of host memory");
        b->pipelines = p;
        b->cap_pipelines = cap;
    }
    const VkSpecializationInfo si = {n_spec, map, n_spec * 4, spec};
    const VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = b->modules[shader],
                  .pName = "main",
                  .pSpecializationInfo = &si},
        .layout = b->layouts[shader]};
    moe_vk_pipeline *p = &b->pipelines[b->n_pipelines];
    const VkResult r = MOE_VK_ALLOC_CALL(
        VK_ERROR_OUT_OF_HOST_MEMORY,
        b->vk.vkCreateComputePipelines(b->device, b->pipeline_cache, 1, &ci, NULL, &p->pipeline));
    if (r != VK_SUCCESS) return moe_vk_fail(b, r, "vkCreateComputePipelines");
    p->shader = shader;
    p->n_spec = n_spec;
    memcpy(p->spec, spec, n_spec * sizeof *spec);
    b->n_pipelines++;
    *out = p->pipeline;
    return MOE_OK;
}
