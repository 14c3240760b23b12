/*
 * vk_internal.h — what the Vulkan backend's files share: the backend state, buffers carved
 * out of a few large VkDeviceMemory blocks, the pipeline table, and helpers that turn a
 * failing VkResult into a moe_status with a message naming the call.
 *
 * Vulkan is loaded at run time through volk: instance-level entry points live in volk's
 * globals (private to this library: it is built with hidden visibility), device-level ones
 * in a per-device VolkDeviceTable, so an application's own Vulkan function pointers are
 * never touched and a machine without a Vulkan loader simply reports zero devices.
 */
#ifndef MOE_VK_INTERNAL_H
#define MOE_VK_INTERNAL_H

#define VK_NO_PROTOTYPES
#include "../alloc.h"
#include "../internal.h"

#include <volk.h>

/* ---- shaders (generated at build time from the .comp files in shaders/) ------------------------------ */

typedef enum vk_shader_id {
    VK_SHADER_GEMM,
    VK_SHADER_SELECT,
    VK_SHADER_PLAN_COUNT,
    VK_SHADER_PLAN_SCAN,
    VK_SHADER_PLAN_SCATTER,
    VK_SHADER_COMBINE,
    VK_SHADER_COMBINE_SUBGROUP, /* needs Vulkan 1.1 subgroup arithmetic in compute */
    VK_SHADER_STATS,
    VK_SHADER_COUNT
} vk_shader_id;

typedef struct vk_shader_info {
    const uint32_t *code;
    size_t size;            /* bytes */
    uint32_t n_bindings;    /* storage buffers 0..n-1 */
    uint32_t push_bytes;    /* push constant block size */
    const char *name;
} vk_shader_info;

extern const vk_shader_info vk_shaders[VK_SHADER_COUNT];

/* ---- memory ----------------------------------------------------------------------------- */

typedef struct vk_range {
    VkDeviceSize offset, size;
} vk_range;

/* A VkDeviceMemory block that buffers are sub-allocated from (first fit, coalescing). */
typedef struct vk_block {
    VkDeviceMemory memory;
    VkDeviceSize size, used;
    uint32_t type_index;
    bool dedicated;            /* holds one buffer only (the staging buffer) */
    vk_range *free;
    size_t n_free, cap_free;
    struct vk_block *next;
} vk_block;

struct moe_bbuf {
    VkBuffer buffer;
    vk_block *block;
    VkDeviceSize offset, size; /* the range in the block; size >= requested bytes */
    size_t bytes;              /* requested */
};

/* ---- pipelines ---------------------------------------------------------------------------- */

#define VK_MAX_SPEC 16
#define VK_MAX_QUERIES 32
#define VK_MAX_SETS 1024

typedef struct vk_pipeline {
    vk_shader_id shader;
    uint32_t n_spec;
    uint32_t spec[VK_MAX_SPEC];
    VkPipeline pipeline;
} vk_pipeline;

/* ---- the backend -------------------------------------------------------------------------- */

typedef struct vk_backend {
    moe_backend base;
    VkInstance instance;
    VkPhysicalDevice physical;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem_props;
    VkDevice device;
    struct VolkDeviceTable vk;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t timestamp_bits;

    /* limits the kernels are sized from */
    uint32_t wg_small, wg_big;          /* workgroup sizes: per-item kernels, reductions */
    uint32_t gemm_bm, gemm_bn, gemm_bk, gemm_tm, gemm_tn;
    uint32_t gemm_shared;               /* 1: stage tiles through shared memory (GPUs) */
    bool subgroup_arithmetic;           /* compute shaders may use subgroupAdd (Vulkan 1.1) */
    uint32_t subgroup_size;             /* default subgroup width (Vulkan 1.1); 0 = unknown */
    uint32_t subgroup_min, subgroup_max;/* subgroup size control range (Vulkan 1.3); 0 = none */
    VkDeviceSize max_weight_binding;    /* bytes of weights one dispatch binds */
    VkDeviceSize max_allocation;        /* maxMemoryAllocationSize (Vulkan 1.1); 0 = unknown */

    vk_block *blocks;
    VkDeviceSize block_size;
    moe_bbuf *staging;                  /* host-visible transfer buffer */
    void *staging_map;
    moe_bbuf *dummy;                    /* bound where a binding is absent */

    VkShaderModule modules[VK_SHADER_COUNT];
    VkDescriptorSetLayout set_layouts[VK_SHADER_COUNT];
    VkPipelineLayout layouts[VK_SHADER_COUNT];
    VkPipelineCache pipeline_cache;
    char cache_path[1024];
    vk_pipeline *pipelines;
    size_t n_pipelines, cap_pipelines;

    VkCommandPool cmd_pool;
    VkCommandBuffer cmd;                /* the forward's */
    VkCommandBuffer xfer;               /* transfers */
    VkFence fence;
    VkDescriptorPool desc_pool;
    VkQueryPool query_pool;             /* timestamps: begin, then one after each dispatch */
    uint32_t n_queries;
    vk_shader_id query_shader[VK_MAX_QUERIES];
    bool recording;
    moe_status record_status;           /* first failure while recording a forward */

    bool lost;                          /* VK_ERROR_DEVICE_LOST seen: the context is unusable */
    int inject_oom;                     /* MOE_VK_INJECT=oom: device allocations fail */
    int inject_lost;                    /* MOE_VK_INJECT=lost: the next submit reports loss */
} vk_backend;

static inline vk_backend *vkb(moe_backend *be) { return (vk_backend *)be; }

/* VkResult → status + message "vulkan: <call> failed: <VkResult>". */
moe_status vk_fail(vk_backend *b, VkResult r, const char *call);
const char *vk_result_name(VkResult r);
/* `call`, a native allocation or object creation returning a VkResult, or `fail` (its
 * out-of-memory result) when moe_alloc_injected() makes this allocation point fail. */
#define VK_INJECT(fail, call) (moe_alloc_injected() ? (fail) : (call))

#define VK_TRY(b, expr)                                                                           \
    do {                                                                                          \
        const VkResult r_ = (expr);                                                               \
        if (r_ != VK_SUCCESS) return vk_fail((b), r_, #expr);                                     \
    } while (0)

/* Validation-layer messages seen since the last check become an error here. */
moe_status vk_check_validation(vk_backend *b);

/* vk_memory.c */
moe_status vk_memory_init(vk_backend *b);
void vk_memory_release(vk_backend *b);
moe_status vk_buffer_alloc(moe_backend *be, size_t bytes, moe_bbuf_usage usage, moe_bbuf **out);
void vk_buffer_free(moe_backend *be, moe_bbuf *buf);
moe_status vk_buffer_write(moe_backend *be, moe_addr dst, const void *src, size_t bytes);
moe_status vk_buffer_read(moe_backend *be, moe_addr src, void *dst, size_t bytes);
size_t vk_weight_bytes(moe_backend *be, const moe_weight_src *src);
moe_status vk_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *src);

/* vk_pipeline.c */
moe_status vk_pipelines_init(vk_backend *b);
void vk_pipelines_release(vk_backend *b);
/* The pipeline of `shader` specialised with `spec` (created on first use, then cached). */
moe_status vk_pipeline_get(vk_backend *b, vk_shader_id shader, const uint32_t *spec, uint32_t n_spec,
                           VkPipeline *out);

/* vk_steps.c */
moe_status vk_begin(moe_backend *be);
moe_status vk_route(moe_backend *be, const moe_route_step *s);
moe_status vk_plan(moe_backend *be, const moe_plan_step *s);
moe_status vk_ffn(moe_backend *be, const moe_ffn_step *s);
moe_status vk_combine(moe_backend *be, const moe_combine_step *s);
moe_status vk_stats(moe_backend *be, const moe_stats_step *s);
moe_status vk_finish(moe_backend *be);
/* Runs `record` on the transfer command buffer, submits and waits. */
moe_status vk_run_transfer(vk_backend *b, void (*record)(vk_backend *, VkCommandBuffer, void *), void *arg);

#endif /* MOE_VK_INTERNAL_H */
