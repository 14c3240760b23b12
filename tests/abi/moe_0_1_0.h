/*
 * moe_0_1_0.h — the public structs as moe 0.1.0 (the first milestone) laid them out, frozen:
 * the test builds callers against these and runs them with today's library (test_abi.c).
 * Never edit a layout here; a release that grows a struct adds its own frozen file.
 * The enums and callback types are today's (an enum's values never change meaning).
 */
#ifndef MOE_TEST_ABI_0_1_0_H
#define MOE_TEST_ABI_0_1_0_H

#include "moe.h"

typedef struct moe_0_1_0_device_info {
    size_t struct_size; /* set to sizeof(moe_0_1_0_device_info) before the call */
    moe_backend_kind backend;
    int index; /* index within its backend */
    moe_device_type type;
    char name[256];
    char vendor[128];
    char driver[128];             /* driver name and version; for the CPU, the ISA level used */
    uint64_t memory_bytes;        /* device memory, or host memory for the CPU backend */
    int compute_units;            /* NVIDIA SMs, AMD CUs, OpenCL CL_DEVICE_MAX_COMPUTE_UNITS; CPU:
                                     worker threads the backend would use; 0 = unknown (Vulkan
                                     reports it only through NVIDIA's and AMD's extensions) */
    char api_version[64];         /* "Vulkan 1.3.255", "OpenCL 3.0 ..."; CPU: the ISA of the
                                     kernel set ("x86-64 AVX2+FMA", ...) */
    uint64_t max_workgroup_size;  /* invocations in one workgroup; 0 = not applicable (CPU) */
    uint64_t shared_memory_bytes; /* shared (local) memory per workgroup; 0 = not applicable */
    int subgroup_size;            /* subgroup width; CPU: float lanes of one vector */
    int fp16;                     /* 1 if the device can do fp16 arithmetic in kernels (Vulkan
                                     shaderFloat16, OpenCL cl_khr_fp16); moe computes in fp32 */
} moe_0_1_0_device_info;
typedef struct moe_0_1_0_context_desc {
    size_t struct_size;       /* sizeof(moe_0_1_0_context_desc) */
    moe_backend_kind backend; /* default AUTO; the environment variable MOE_BACKEND
                                 (cpu|vulkan|opencl) overrides AUTO only */
    int device_index;         /* default 0 */
    int n_threads;            /* CPU backend worker threads, 1..1024; 0 = the environment
                                 variable MOE_NUM_THREADS if set, else every online core
                                 (at most 1024). Above 1024 (more threads than any machine
                                 has use for, the same bound everywhere so a setting that
                                 works on one machine works on all): MOE_ERROR_INVALID_SIZE.
                                 MOE_NUM_THREADS must be a plain decimal number 1..1024
                                 (digits only; empty = unset); anything else ("8x", "0",
                                 " 4", 4096) fails context creation with
                                 MOE_ERROR_INVALID_ARGUMENT naming the variable and its
                                 value, rather than being silently replaced. It is read only
                                 when n_threads is 0 */
    moe_log_fn log;           /* optional; receives the library's only text output */
    void *log_user_data;
    moe_log_level log_level; /* messages up to this level reach `log`; default ERROR */
} moe_0_1_0_context_desc;
typedef struct moe_0_1_0_arena_stats {
    size_t struct_size;            /* sizeof(moe_0_1_0_arena_stats) */
    size_t weights_bytes;          /* bytes held for layer weights */
    size_t scratch_bytes;          /* bytes reserved for the shared scratch region */
    size_t scratch_peak_bytes;     /* largest scratch any forward so far has used */
    size_t staging_bytes;          /* bytes reserved for staging */
    size_t buffer_bytes;           /* bytes held by moe_buffer objects */
    uint64_t allocation_count;     /* backend allocations made since the context was created */
    uint64_t scratch_reservations; /* times the scratch region was (re)allocated */
} moe_0_1_0_arena_stats;
typedef struct moe_0_1_0_layer_desc {
    size_t struct_size; /* sizeof(moe_0_1_0_layer_desc) */
    int64_t d_model;    /* hidden size; required, > 0 */
    int64_t d_ff;       /* each routed expert's intermediate size; required, > 0 */
    int64_t n_experts;  /* routed experts E; required, > 0 */
    int64_t top_k;      /* experts per token k; required, 1..n_experts */
    int64_t max_tokens; /* token budget of one forward; required, > 0. Scratch is sized
                           for it on the first forward that needs it. The kernels index
                           one forward's rows with 32-bit integers, so max_tokens·top_k,
                           the padded row bound (max_tokens·top_k plus up to 255 rows of
                           tile padding per expert used) and
                           max_tokens·(n_experts + n_group) must each be at most
                           2^31 − 1: else MOE_ERROR_INVALID_SIZE at layer creation.
                           d_model, d_ff, d_ff_shared and n_experts are at most
                           2^30 − 1 for the same reason */

    moe_score_func score_func;   /* default SOFTMAX */
    int64_t n_group;             /* group-limited routing: experts split into n_group
                                    groups; 0 or 1 = plain top-k. Must divide n_experts */
    int64_t topk_group;          /* groups kept, 1..n_group (required when n_group > 1) */
    moe_group_score group_score; /* default TOP2_SUM */
    int renormalize;             /* nonzero: chosen weights are divided by their sum
                                    (Mixtral, DeepSeek, Qwen3 norm_topk_prob); default 0 */
    float routed_scaling_factor; /* chosen weights are multiplied by it; 0 = 1.0 */
    int has_selection_bias;      /* nonzero: weights.router_bias[E] is added to the scores
                                    for choosing only, never to the weights (DeepSeek-V3) */

    moe_activation activation; /* default SWIGLU (routed and shared experts alike) */

    int64_t d_ff_shared;    /* width of the shared expert(s), 0 = none. Several
                               shared experts of width f act as one of width n·f */
    int shared_expert_gate; /* nonzero: the shared output is scaled by
                               sigmoid(x·w_shared_gate) (Qwen2-MoE) */

    int64_t expert_capacity;     /* 0 = unlimited; else each expert keeps at most this many
                                    (token, slot) rows, in token order, and drops the rest.
                                    Any value at or above a forward's n_tokens·top_k rows
                                    (up to INT64_MAX) drops nothing and gives exactly what
                                    0 gives, on every backend */
    moe_drop_policy drop_policy; /* what a dropped row contributes; default ZERO */
} moe_0_1_0_layer_desc;
typedef struct moe_0_1_0_layer_weights {
    size_t struct_size;              /* sizeof(moe_0_1_0_layer_weights) */
    const float *router;             /* [n_experts][d_model]; required */
    const float *router_bias;        /* [n_experts]; required iff has_selection_bias */
    const float *gate;               /* [n_experts][d_ff][d_model]; required iff gated (SwiGLU/GeGLU) */
    const float *up;                 /* [n_experts][d_ff][d_model]; required (Switch's wi) */
    const float *down;               /* [n_experts][d_model][d_ff]; required (Switch's wo) */
    const float *shared_gate;        /* [d_ff_shared][d_model]; iff d_ff_shared and gated */
    const float *shared_up;          /* [d_ff_shared][d_model]; iff d_ff_shared */
    const float *shared_down;        /* [d_model][d_ff_shared]; iff d_ff_shared */
    const float *shared_expert_gate; /* [d_model]; iff shared_expert_gate */
} moe_0_1_0_layer_weights;
typedef struct moe_0_1_0_forward_stats {
    size_t struct_size;     /* sizeof(moe_0_1_0_forward_stats) */
    int32_t *topk_ids;      /* [n_tokens][top_k], slot order: best selection score first,
                               ties to the lower expert index */
    float *topk_weights;    /* [n_tokens][top_k], the final combine weights */
    int32_t *expert_counts; /* [n_experts], (token, slot) rows routed to each expert,
                               counted before capacity dropping */
    int32_t *dropped_count; /* [1], rows dropped by capacity */
    float *aux_loss;        /* [1], load balancing loss E·Σ_e f_e·P_e, where f_e is the share
                               of the T·k assignments routed to e and P_e the mean over
                               tokens of the per-token scores normalised to sum 1 */
    float *z_loss;          /* [1], router z-loss: mean over tokens of logsumexp(logits)² */
    double *device_ms;      /* [1], time the forward's steps took on the device, from GPU
                               timestamp queries / profiling events where the backend has
                               them; the CPU backend reports the wall time of its steps */
} moe_0_1_0_forward_stats;
typedef struct moe_0_1_0_model_info {
    size_t struct_size;       /* sizeof(moe_0_1_0_model_info) */
    char model_type[64];      /* config.json's model_type, e.g. "mixtral" */
    int64_t n_layers;         /* num_hidden_layers (Switch: encoder blocks, num_layers) */
    int64_t n_decoder_layers; /* Switch: decoder blocks; 0 for the other families */
    int64_t hidden_size;      /* d_model */
    int64_t n_experts;        /* routed experts per MoE block */
    int64_t top_k;            /* experts per token */
    int64_t n_moe_layers;     /* layers (Switch: encoder blocks) that have an MoE block */
    int64_t first_moe_layer;  /* the first of them, -1 if none */
    int n_files;              /* safetensors files mapped */
    int64_t n_tensors;        /* tensors in them */
} moe_0_1_0_model_info;
typedef struct moe_0_1_0_model_layer_options {
    size_t struct_size;          /* sizeof(moe_0_1_0_model_layer_options) */
    int64_t max_tokens;          /* the layer's token budget; 0 = 1024 */
    moe_drop_policy drop_policy; /* Switch: what a token past capacity gives; default ZERO */
    int decoder;                 /* Switch: nonzero = decoder block N instead of encoder */
} moe_0_1_0_model_layer_options;
typedef struct moe_0_1_0_cache_info {
    size_t struct_size;   /* sizeof(moe_0_1_0_cache_info) */
    char path[1024];      /* the cache directory ("" when there is none: no HOME, no variable) */
    uint64_t files;       /* moe's entries in it (vulkan-*.cache, opencl-*.bin) */
    uint64_t bytes;       /* their size */
    uint64_t limit_bytes; /* the bound kept after each write */
} moe_0_1_0_cache_info;

#endif /* MOE_TEST_ABI_0_1_0_H */
