/*
 * vk_shaders.c — the SPIR-V of every compute shader (the .comp files in shaders/), compiled by glslang and
 * checked by spirv-val at build time (src/vulkan/vulkan.cmake), embedded here with the
 * number of storage-buffer bindings and push-constant bytes each one declares.
 */
#include "vk_internal.h"

#include "combine.spv.h"
#include "combine_subgroup.spv.h"
#include "gemm.spv.h"
#include "plan_count.spv.h"
#include "plan_scan.spv.h"
#include "plan_scatter.spv.h"
#include "select.spv.h"
#include "stats.spv.h"

#define SHADER(array, bindings, push, name) {array, sizeof array, bindings, push, name}

const vk_shader_info vk_shaders[VK_SHADER_COUNT] = {
    [VK_SHADER_GEMM] = SHADER(moe_spv_gemm, 5, 12, "gemm"),
    [VK_SHADER_SELECT] = SHADER(moe_spv_select, 5, 4, "select"),
    [VK_SHADER_PLAN_COUNT] = SHADER(moe_spv_plan_count, 2, 4, "plan_count"),
    [VK_SHADER_PLAN_SCAN] = SHADER(moe_spv_plan_scan, 5, 8, "plan_scan"),
    [VK_SHADER_PLAN_SCATTER] = SHADER(moe_spv_plan_scatter, 5, 4, "plan_scatter"),
    [VK_SHADER_COMBINE] = SHADER(moe_spv_combine, 7, 0, "combine"),
    [VK_SHADER_COMBINE_SUBGROUP] = SHADER(moe_spv_combine_subgroup, 7, 0, "combine_subgroup"),
    [VK_SHADER_STATS] = SHADER(moe_spv_stats, 4, 4, "stats"),
};
