/*
 * vk_shaders.c — the SPIR-V of every compute shader (the .comp files in shaders/), compiled by
 * glslang and checked by spirv-val at build time (src/vulkan/vulkan.cmake), embedded here with
 * the number of storage-buffer bindings and push-constant bytes of the kernel interface each
 * one implements (kernels/<kernel>.h, the same description the shader's declarations are
 * expanded from).
 */
#include "vk_internal.h"

#include "combine.h"
#include "gemm.h"
#include "matvec.h"
#include "plan_count.h"
#include "plan_scan.h"
#include "plan_scatter.h"
#include "select.h"
#include "stats.h"

#include "combine.spv.h"
#include "combine_subgroup.spv.h"
#include "gemm.spv.h"
#include "matvec.spv.h"
#include "matvec_subgroup.spv.h"
#include "plan_count.spv.h"
#include "plan_scan.spv.h"
#include "plan_scatter.spv.h"
#include "select.spv.h"
#include "stats.spv.h"

#define SHADER(array, kernel, name, subgroup)                                                                \
    {                                                                                                        \
        array, sizeof array, moe_##kernel##_n_buffers, 4 * moe_##kernel##_n_fields, name, #kernel, subgroup  \
    }

const moe_vk_shader_info moe_vk_shaders[MOE_VK_SHADER_COUNT] = {
    [MOE_VK_SHADER_GEMM] = SHADER(moe_spv_gemm, gemm, "gemm", false),
    [MOE_VK_SHADER_MATVEC] = SHADER(moe_spv_matvec, matvec, "matvec", false),
    [MOE_VK_SHADER_MATVEC_SUBGROUP] = SHADER(moe_spv_matvec_subgroup, matvec, "matvec_subgroup", true),
    [MOE_VK_SHADER_SELECT] = SHADER(moe_spv_select, select, "select", false),
    [MOE_VK_SHADER_PLAN_COUNT] = SHADER(moe_spv_plan_count, plan_count, "plan_count", false),
    [MOE_VK_SHADER_PLAN_SCAN] = SHADER(moe_spv_plan_scan, plan_scan, "plan_scan", false),
    [MOE_VK_SHADER_PLAN_SCATTER] = SHADER(moe_spv_plan_scatter, plan_scatter, "plan_scatter", false),
    [MOE_VK_SHADER_COMBINE] = SHADER(moe_spv_combine, combine, "combine", false),
    [MOE_VK_SHADER_COMBINE_SUBGROUP] = SHADER(moe_spv_combine_subgroup, combine, "combine_subgroup", true),
    [MOE_VK_SHADER_STATS] = SHADER(moe_spv_stats, stats, "stats", false),
};
