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
#include "interface.h" /* kernels/: moe_kargs, how a dispatch's arguments are described */

#include <volk.h>

#include "moe_vulkan.h"

/* ---- shaders (generated at build time from the .comp files in shaders/) ------------------------------ */

/* A shader's interface (specialization constants, bindings, push constants) is its kernel's
 * description in kernels/<kernel>.h; vk_shaders.c takes the binding count and push-constant
 * size from there, and every dispatch passes that kernel's moe_kargs. */

typedef enum moe_vk_shader_id {
    MOE_VK_SHADER_GEMM,
    MOE_VK_SHADER_MATVEC,
    MOE_VK_SHADER_MATVEC_SUBGROUP, /* needs Vulkan 1.1 subgroup arithmetic in compute */
    MOE_VK_SHADER_SELECT,
    MOE_VK_SHADER_PLAN_COUNT,
    MOE_VK_SHADER_PLAN_SCAN,
    MOE_VK_SHADER_PLAN_SCATTER,
    MOE_VK_SHADER_COMBINE,
    MOE_VK_SHADER_COMBINE_SUBGROUP, /* needs Vulkan 1.1 subgroup arithmetic in compute */
    MOE_VK_SHADER_STATS,
    MOE_VK_SHADER_COUNT
} moe_vk_shader_id;

typedef struct moe_vk_shader_info {
    const uint32_t *code;
    size_t size;         /* bytes */
    uint32_t n_bindings; /* storage buffers 0..n-1 */
    uint32_t push_bytes; /* push constant block size */
    const char *name;
    const char *kernel;       /* the interface it implements (moe_kargs.kernel) */
    bool subgroup_arithmetic; /* a variant for devices with subgroup arithmetic in compute (SPIR-V
                                 1.3): its module is created only there */
} moe_vk_shader_info;

extern const moe_vk_shader_info moe_vk_shaders[MOE_VK_SHADER_COUNT];

/* ---- memory ----------------------------------------------------------------------------- */

typedef struct moe_vk_range {
    VkDeviceSize offset, size;
} moe_vk_range;

/* A VkDeviceMemory block that buffers are sub-allocated from (first fit, coalescing). */
typedef struct moe_vk_block {
    VkDeviceMemory memory;
    VkDeviceSize size, used;
    uint32_t type_index;
    bool dedicated; /* holds one buffer only (the staging buffer) */
    moe_vk_range *free;
    size_t n_free, cap_free;
    struct moe_vk_block *next;
} moe_vk_block;

struct moe_backend_buffer {
    VkBuffer buffer;
    moe_vk_block *block;
    VkDeviceSize offset, size; /* the range in the block; size >= requested bytes */
    size_t bytes;              /* requested (a wrapped buffer: the bytes the application vouches for) */
    bool borrowed;             /* an application's VkBuffer (moe_vulkan_buffer_wrap): no block, and
                                  never destroyed */
};

/* ---- pipelines ---------------------------------------------------------------------------- */

#define MOE_VK_MAX_QUERIES 32
#define MOE_VK_MAX_SETS    1024

typedef struct moe_vk_pipeline {
    moe_vk_shader_id shader;
    uint32_t n_spec;
    uint32_t spec[MOE_KMAX_PARAMS];
    VkPipeline pipeline;
} moe_vk_pipeline;

/* ---- submissions ------------------------------------------------------------------------ */

/* Forwards submitted and not yet waited for (moe_layer_forward_async): a forward past this
 * many waits for the oldest first. Each has its own command buffer, fence, descriptor sets and
 * timestamps; the first slot is made with the context, the others when a chain needs them. */
#define MOE_VK_MAX_IN_FLIGHT 8

typedef struct moe_vk_slot {
    VkCommandBuffer cmd;
    VkFence fence;
    VkDescriptorPool desc_pool; /* reset when the slot records its next forward */
    VkQueryPool query_pool;     /* timestamps: begin, then one after each dispatch */
    uint32_t n_queries;
    moe_vk_shader_id query_shader[MOE_VK_MAX_QUERIES];
    bool pending; /* submitted, not yet waited for */
} moe_vk_slot;

/* ---- the backend -------------------------------------------------------------------------- */

typedef struct moe_vk_backend {
    moe_backend base;
    VkInstance instance;
    VkPhysicalDevice physical;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem_props;
    VkDevice device;
    bool borrowed;                  /* instance, physical device, device and queue are the application's
                                       (moe_vulkan.h): never destroyed */
    PFN_vkGetInstanceProcAddr gipa; /* the loader entry point of the instance */
    uint32_t instance_api;          /* the version the instance was created for */
    struct VolkDeviceTable vk;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t timestamp_bits;

    /* limits the kernels are sized from */
    uint32_t wg_small, wg_big; /* workgroup sizes: per-item kernels, reductions */
    uint32_t gemm_bm, gemm_bn, gemm_bk, gemm_tm, gemm_tn;
    uint32_t gemm_shared;                /* 1: stage tiles through shared memory (GPUs) */
    uint32_t matvec_wg, matvec_cols;     /* the decode kernel's shape (kernels/matvec.h) */
    int64_t matvec_max_rows;             /* its choice over the GEMM (moe_kuse_matvec); 0 = never */
    bool subgroup_arithmetic;            /* compute shaders may use subgroupAdd (Vulkan 1.1) */
    uint32_t subgroup_size;              /* default subgroup width (Vulkan 1.1); 0 = unknown */
    uint32_t subgroup_min, subgroup_max; /* subgroup size control range (Vulkan 1.3); 0 = none */
    VkDeviceSize max_weight_binding;     /* bytes of weights one dispatch binds */
    VkDeviceSize max_allocation;         /* maxMemoryAllocationSize (Vulkan 1.1); 0 = unknown */

    moe_vk_block *blocks;
    VkDeviceSize block_size;
    moe_backend_buffer *staging; /* host-visible transfer buffer */
    void *staging_map;
    /* The forwards' own transfers (stage_in / stage_out, vk_memory.c): the upper half of the
     * staging buffer holds their bytes, `stage_used` of it since the last wait (the transfers
     * of their own then take the lower half only); the reads the wait completes; and what the
     * forward being recorded still owes: a barrier before its first dispatch (copies in), a
     * barrier before its copies out and one to the host at submit. */
    size_t stage_used;
    size_t stage_limit; /* at most half the staging buffer; MOE_VK_STAGE_LIMIT lowers it (tests) */
    moe_staged_reads outs;
    size_t stage_mark, outs_mark; /* stage_used and outs.n when the forward being recorded began */
    bool staged_in, staged_out;
    moe_backend_buffer *dummy; /* bound where a binding is absent */

    VkShaderModule modules[MOE_VK_SHADER_COUNT];
    VkDescriptorSetLayout set_layouts[MOE_VK_SHADER_COUNT];
    VkPipelineLayout layouts[MOE_VK_SHADER_COUNT];
    VkPipelineCache pipeline_cache;
    char cache_path[1024];
    moe_vk_pipeline *pipelines;
    size_t n_pipelines, cap_pipelines;

    VkCommandPool cmd_pool;
    VkCommandBuffer xfer; /* transfers, each submitted and waited for at once */
    VkFence xfer_fence;
    /* Forwards: a ring of submission slots (vk_submit.c), `next` the one the next forward
     * records into; `cur` the one being recorded. */
    moe_vk_slot slots[MOE_VK_MAX_IN_FLIGHT];
    uint32_t next;
    moe_vk_slot *cur;
    /* Set (by moe_vulkan_layer_record) while a forward is recorded into an application's
     * command buffer: begin and submit use it instead of a slot and submit nothing. */
    moe_vk_slot *record_into;
    bool recording;
    moe_status record_status; /* first failure while recording a forward */

    uint64_t wait_spin_ns; /* MOE_VK_WAIT_SPIN_US: a fence is polled this long before the blocking wait */
    bool lost;             /* VK_ERROR_DEVICE_LOST seen: the context is unusable */
    int inject_oom;        /* MOE_VK_INJECT=oom: device allocations fail */
    int inject_lost;       /* MOE_VK_INJECT=lost: the next submit reports loss */
} moe_vk_backend;

static inline moe_vk_backend *moe_vkb(moe_backend *be)
{
    return (moe_vk_backend *)be;
}

/* volk.c: a device's functions into `table` through the given vkGetDeviceProcAddr (an
 * application's, for a borrowed device), with volk's own table loader. */
void moe_vk_load_device_table(struct VolkDeviceTable *table, VkDevice device, PFN_vkGetDeviceProcAddr gdpa);

/* VkResult → status + message "vulkan: <call> failed: <VkResult>". */
moe_status moe_vk_fail(moe_vk_backend *b, VkResult r, const char *call);
const char *moe_vk_result_name(VkResult r);
/* `call`, a native allocation or object creation returning a VkResult, or `fail` (its
 * out-of-memory result) when moe_alloc_injected() makes this allocation point fail. */
#define MOE_VK_ALLOC_CALL(fail, call) (moe_alloc_injected() ? (fail) : (call))

#define MOE_VK_TRY(b, expr)                                                                                  \
    do {                                                                                                     \
        const VkResult r_ = (expr);                                                                          \
        if (r_ != VK_SUCCESS) return moe_vk_fail((b), r_, #expr);                                            \
    } while (0)

/* Validation-layer messages seen since the last check become an error here. */
moe_status moe_vk_check_validation(moe_vk_backend *b);

/* vk_memory.c */
moe_status moe_vk_memory_init(moe_vk_backend *b);
void moe_vk_memory_release(moe_vk_backend *b);
moe_status moe_vk_buffer_alloc(moe_backend *be, size_t bytes, moe_backend_buffer_usage usage,
                               moe_backend_buffer **out);
void moe_vk_buffer_free(moe_backend *be, moe_backend_buffer *buf);
moe_status moe_vk_buffer_write(moe_backend *be, moe_addr dst, const void *src, size_t bytes);
moe_status moe_vk_buffer_read(moe_backend *be, moe_addr src, void *dst, size_t bytes);
/* Waits for a fence: polled for wait_spin_ns first, then vkWaitForFences. */
VkResult moe_vk_wait_fence(moe_vk_backend *b, VkFence fence);
moe_status moe_vk_stage_in(moe_backend *be, moe_addr dst, const void *src, size_t bytes);
moe_status moe_vk_stage_out(moe_backend *be, moe_addr src, void *dst, size_t bytes);
/* The wait's end: stage_out's reads into the host's memory, or (failed: false) dropped. */
moe_status moe_vk_finish_outs(moe_vk_backend *b, bool ok);
/* A forward that is never submitted: its own staged bytes and reads go, not those of the
 * submissions before it, which still run and are read at the wait. */
void moe_vk_drop_forward_outs(moe_vk_backend *b);
size_t moe_vk_weight_bytes(moe_backend *be, const moe_weight_src *src);
moe_status moe_vk_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *src);

/* vk_pipeline.c */
moe_status moe_vk_pipelines_init(moe_vk_backend *b);
void moe_vk_pipelines_release(moe_vk_backend *b);
/* The pipeline of `shader` specialised with the parameters of `args` (created on first use,
 * then cached). The parameters must fit their 32 bits (moe_kargs_overflow). */
moe_status moe_vk_pipeline_get(moe_vk_backend *b, moe_vk_shader_id shader, const moe_kargs *args,
                               VkPipeline *out);

/* vk_submit.c */
/* The first slot (with the context: a forward then needs no object of its own). */
moe_status moe_vk_slots_init(moe_vk_backend *b);
void moe_vk_slots_release(moe_vk_backend *b);
moe_status moe_vk_begin(moe_backend *be);
moe_status moe_vk_submit(moe_backend *be);
moe_status moe_vk_wait(moe_backend *be);
/* A memory barrier on `cmd`. */
void moe_vk_barrier(moe_vk_backend *b, VkCommandBuffer cmd, VkPipelineStageFlags src,
                    VkAccessFlags src_access, VkPipelineStageFlags dst, VkAccessFlags dst_access);

/* vk_steps.c */
moe_status moe_vk_route(moe_backend *be, const moe_route_step *s);
moe_status moe_vk_plan(moe_backend *be, const moe_plan_step *s);
moe_status moe_vk_ffn(moe_backend *be, const moe_ffn_step *s);
moe_status moe_vk_combine(moe_backend *be, const moe_combine_step *s);
moe_status moe_vk_stats(moe_backend *be, const moe_stats_step *s);
/* Runs `record` on the transfer command buffer, submits and waits. */
moe_status moe_vk_run_transfer(moe_vk_backend *b, void (*record)(moe_vk_backend *, VkCommandBuffer, void *),
                               void *arg);

/* vk_embed.c: moe_vulkan_device's versions (abi.h), for its checks here and there. */
extern const moe_abi_struct moe_abi_vulkan_device;

#endif /* MOE_VK_INTERNAL_H */
