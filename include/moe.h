/*
 * moe.h — the whole public API of moe, a portable Mixture-of-Experts layer library.
 *
 * One forward of one MoE layer: route (router logits, softmax or sigmoid scores, top-k or
 * group-limited top-k), plan (per-expert counts, expert-sorted rows, capacity dropping),
 * expert FFN (one grouped GEMM with a fused gated activation, then the down projection) and
 * combine (a deterministic gather in slot order, plus optional shared experts). A layer's
 * weights come from host arrays (moe_layer_create) or straight from a Hugging Face checkpoint
 * directory, config.json + safetensors (moe_model_open, moe_model_create_layer).
 *
 * This header includes no Vulkan or OpenCL header. Conventions:
 *  - every fallible call returns a moe_status (0 = MOE_OK, negative = error); the library never
 *    prints, aborts or exits; moe_context_error() / moe_last_error() give a readable detail;
 *  - on error the caller's output buffers are left untouched;
 *  - every _create has a _destroy that accepts NULL;
 *  - descriptor structs are zero-initialised by the caller, a zero field means "default", and
 *    `struct_size` is set to sizeof(the struct) as the caller's moe.h has it.
 *
 * Extensible structs and the ABI. A public struct only ever grows, by fields added at its end
 * (the layout of each release is a prefix of the next). A program built against an older moe.h
 * keeps working with a newer library: its smaller struct_size is accepted, the fields it does
 * not have take their defaults in an input struct, and an output struct (device info, arena
 * stats, model info, layer desc, cache info) is written only up to its struct_size. A
 * struct_size larger than this library's sizeof (a program built against a newer moe.h than
 * the library it runs with), or smaller than the struct has ever been, is refused with
 * MOE_ERROR_INVALID_ARGUMENT and a message saying which. The shared library's SONAME carries
 * MOE_VERSION_MAJOR: the major version changes only when a program built against the previous
 * one could break — a field removed, moved or retyped to another size, a function removed or
 * its signature changed, an enum value renumbered or given another meaning, a default
 * changed. Minor versions add (functions, fields at a struct's end, enum values) and patch
 * versions fix; both keep the SONAME.
 *
 * Threading contract (as in Vulkan): a moe_context and every object created from it
 * (layers, buffers) are externally synchronised — at most one thread may call into one
 * context at a time. Separate contexts are independent and may be used from different
 * threads concurrently. Functions that take no context (version, status strings, device
 * enumeration, moe_reference_forward) are thread-safe; moe_last_error() is per thread.
 */
#ifndef MOE_H
#define MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_VERSION_MAJOR  0
#define MOE_VERSION_MINOR  16
#define MOE_VERSION_PATCH  0
#define MOE_VERSION_NUMBER (MOE_VERSION_MAJOR * 10000 + MOE_VERSION_MINOR * 100 + MOE_VERSION_PATCH)

#if defined(MOE_STATIC_DEFINE)
#define MOE_API
#elif defined(_WIN32)
#if defined(MOE_BUILDING)
#define MOE_API __declspec(dllexport)
#else
#define MOE_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define MOE_API __attribute__((visibility("default")))
#else
#define MOE_API
#endif

/* ---------------------------------------------------------------------------------------
 * Status codes. The set is small and stable; a detail message says more.
 * ------------------------------------------------------------------------------------- */
typedef enum moe_status {
    MOE_OK = 0,
    MOE_ERROR_NULL_POINTER = -1,         /* a required handle or pointer argument is NULL */
    MOE_ERROR_INVALID_SIZE = -2,         /* a size or count is zero, negative or out of range */
    MOE_ERROR_INVALID_CONFIG = -3,       /* inconsistent layer config (k > E, bad groups, ...) */
    MOE_ERROR_SIZE_OVERFLOW = -4,        /* a byte size derived from the shapes overflows size_t */
    MOE_ERROR_TOKEN_BUDGET = -5,         /* n_tokens exceeds the layer's max_tokens */
    MOE_ERROR_INVALID_ARGUMENT = -6,     /* any other bad argument (enum value, struct_size, ...) */
    MOE_ERROR_OUT_OF_MEMORY = -7,        /* host memory exhausted */
    MOE_ERROR_OUT_OF_DEVICE_MEMORY = -8, /* device memory exhausted */
    MOE_ERROR_BACKEND_UNAVAILABLE = -9,  /* the backend is not built in, or has no device */
    MOE_ERROR_DEVICE_LOST = -10,         /* the device stopped answering; the context is unusable */
    MOE_ERROR_BACKEND = -11,             /* a native call failed; the detail names it */
    MOE_ERROR_UNSUPPORTED = -12,         /* valid request the chosen backend/device cannot do */
    MOE_ERROR_IO = -13,                  /* a file could not be opened, read or written */
    MOE_ERROR_FORMAT = -14,              /* a file's contents are malformed */
    MOE_ERROR_INTERNAL = -15,            /* a bug in moe: please report it */
    MOE_ERROR_BUSY = -16                 /* (0.4.0) the object is in use by a forward still in
                                            flight (moe_layer_forward_async): moe_context_wait
                                            first */
} moe_status;

/* "MOE_ERROR_INVALID_SIZE" style name of a status; never NULL. */
MOE_API const char *moe_status_string(moe_status status);
/* Detail message of the last failing call made by this thread (any context); "" if none. */
MOE_API const char *moe_last_error(void);

/* Library version "MAJOR.MINOR.PATCH" at run time, and as MOE_VERSION_NUMBER. */
MOE_API const char *moe_version(void);
MOE_API int moe_version_number(void);

/* ---------------------------------------------------------------------------------------
 * Backends and devices.
 * ------------------------------------------------------------------------------------- */
typedef enum moe_backend_kind {
    MOE_BACKEND_AUTO = 0, /* Vulkan, then OpenCL, then CPU: the first with a device, passing
                             by a GPU API's CPU-type device (lavapipe, PoCL), which the
                             native CPU backend outruns */
    MOE_BACKEND_CPU = 1,
    MOE_BACKEND_VULKAN = 2,
    MOE_BACKEND_OPENCL = 3
} moe_backend_kind;

typedef enum moe_device_type {
    MOE_DEVICE_TYPE_OTHER = 0,
    MOE_DEVICE_TYPE_CPU = 1,
    MOE_DEVICE_TYPE_INTEGRATED_GPU = 2,
    MOE_DEVICE_TYPE_DISCRETE_GPU = 3,
    MOE_DEVICE_TYPE_VIRTUAL_GPU = 4
} moe_device_type;
/* (0.3.0) A device type's bit in moe_context_desc.device_types. */
#define MOE_DEVICE_TYPE_BIT(type) (1u << (unsigned)(type))

typedef struct moe_device_info {
    size_t struct_size; /* set to sizeof(moe_device_info) before the call */
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
    uint32_t features;            /* MOE_FEATURE_* bits: what the device has that a weight
                                     format's kernels can use */
    uint32_t features_used;       /* the subset moe's kernels use on it (a format runs without
                                     any of them: the plain variant reads 32-bit words / bytes) */
} moe_device_info;

/* Device features the weight formats' kernel variants use where present (moe_device_info). */
typedef enum moe_feature {
    MOE_FEATURE_F16C = 1u << 0,           /* CPU: F16C half↔float conversion instructions */
    MOE_FEATURE_AVX512_BF16 = 1u << 1,    /* CPU: AVX512_BF16 ((0.11.0) the avx512vnni level's
                                             bfloat16-pair activations: Q4_0, MXFP4, Q4_K) */
    MOE_FEATURE_AVX512_VNNI = 1u << 2,    /* CPU: AVX512_VNNI int8 dot products */
    MOE_FEATURE_AVX_VNNI = 1u << 3,       /* CPU: AVX-VNNI (256-bit) */
    MOE_FEATURE_STORAGE_16BIT = 1u << 4,  /* GPU: 16-bit types in storage buffers */
    MOE_FEATURE_STORAGE_8BIT = 1u << 5,   /* GPU: 8-bit types in storage buffers */
    MOE_FEATURE_FLOAT16 = 1u << 6,        /* GPU: float16 arithmetic (shaderFloat16, cl_khr_fp16) */
    MOE_FEATURE_INT_DOT = 1u << 7,        /* GPU: integer dot products (VK_KHR_shader_integer_dot_product,
                                             cl_khr_integer_dot_product); CPU (0.7.1): the integer-
                                             activation kernels' instructions (AVX2's vpmaddubsw /
                                             vpmaddwd, or VNNI; (0.14.0) Arm's FEAT_DotProd, sdot) */
    MOE_FEATURE_SUBGROUP_REDUCE = 1u << 8 /* GPU: subgroup add reductions */
} moe_feature;

/* "f16c", "avx512_bf16", "avx512_vnni", "avx_vnni", "storage_16bit", "storage_8bit", "float16",
 * "int_dot", "subgroup_reduce" for one bit; NULL for anything else. */
MOE_API const char *moe_feature_name(moe_feature feature);

/* "cpu", "vulkan", "opencl", "auto"; never NULL. */
MOE_API const char *moe_backend_name(moe_backend_kind kind);
/* 1 if this build of the library contains the backend. */
MOE_API int moe_backend_is_built(moe_backend_kind kind);
/* Number of devices of a backend on this machine; 0 (and MOE_OK) when the backend is built
 * but no driver or device is present. MOE_ERROR_BACKEND_UNAVAILABLE if it is not built. A
 * driver that is present but fails to enumerate gives its error (MOE_ERROR_OUT_OF_MEMORY, or
 * MOE_ERROR_BACKEND naming the native call), never "0 devices"; the next call tries again. */
MOE_API moe_status moe_device_count(moe_backend_kind kind, int *count);
MOE_API moe_status moe_device_get_info(moe_backend_kind kind, int index, moe_device_info *info);

/* ---------------------------------------------------------------------------------------
 * Context: one backend, one device, one buffer arena.
 * ------------------------------------------------------------------------------------- */
typedef struct moe_context moe_context;
typedef struct moe_layer moe_layer;
typedef struct moe_buffer moe_buffer;

typedef enum moe_log_level {
    MOE_LOG_ERROR = 0,
    MOE_LOG_WARNING = 1,
    MOE_LOG_INFO = 2,
    MOE_LOG_DEBUG = 3
} moe_log_level;

typedef void (*moe_log_fn)(moe_log_level level, const char *message, void *user_data);

/* Choosing the device. A backend's devices are those moe_device_get_info lists; device_name and
 * device_types narrow them (both unset: all), and device_index counts among those left (0: the
 * first). With backend AUTO, Vulkan, then OpenCL, then the CPU are tried, and the first with a
 * device left is taken — passing by a GPU API's CPU-type device (lavapipe, PoCL) unless
 * device_name picked it; device_index must be 0 there (an index means something only within
 * one backend's list: name the backend, or choose by device_name / device_types).
 * No device left: MOE_ERROR_BACKEND_UNAVAILABLE, the message listing what there is. */
typedef struct moe_context_desc {
    size_t struct_size;       /* sizeof(moe_context_desc) */
    moe_backend_kind backend; /* default AUTO; the environment variable MOE_BACKEND
                                 (cpu|vulkan|opencl) overrides AUTO only */
    int device_index;         /* default 0; among the devices device_name and device_types
                                 leave */
    int n_threads;            /* CPU backend worker threads, 1..1024; 0 = the environment
                                 variable MOE_NUM_THREADS if set, else every core it may
                                 run on (Linux: its affinity mask, e.g. an mpirun binding;
                                 at most 1024). Above 1024 (more threads than any machine
                                 has use for, the same bound everywhere so a setting that
                                 works on one machine works on all): MOE_ERROR_INVALID_SIZE.
                                 MOE_NUM_THREADS must be a plain decimal number 1..1024
                                 (digits only; empty = unset); anything else ("8x", "0",
                                 " 4", 4096) fails context creation with
                                 MOE_ERROR_INVALID_ARGUMENT naming the variable and its
                                 value, rather than being silently replaced. It is read only
                                 when n_threads is 0. A Vulkan or OpenCL context converts
                                 weights on n_threads host threads when a layer is created
                                 (0: every core it may run on, at most 64; the variable is
                                 the CPU backend's) */
    moe_log_fn log;           /* optional; receives the library's only text output */
    void *log_user_data;
    moe_log_level log_level;     /* messages up to this level reach `log`; default ERROR */
    const char *device_name;     /* (0.3.0) NULL or "": any name; else only devices whose name
                                    contains it, ASCII case-insensitively ("4090", "llvmpipe").
                                    Read during moe_context_create only */
    uint32_t device_types;       /* (0.3.0) 0: any type; else only devices whose type's
                                    MOE_DEVICE_TYPE_BIT is set (e.g. DISCRETE_GPU | INTEGRATED_GPU) */
    const void *external_device; /* (0.4.0) NULL: the context opens its own device. Else the
                                    application's own objects to run on, a moe_opencl_device
                                    (moe_opencl.h) or a moe_vulkan_device (moe_vulkan.h); its
                                    `backend` field says which, and `backend` here must be AUTO
                                    or the same. device_index, device_name and device_types
                                    must then be unset. Read during moe_context_create only */
} moe_context_desc;

/* (0.3.0) Fills desc's device choice from one text, the way the tools' --device reads it: a
 * decimal number is device_index; "discrete", "integrated", "virtual", "cpu" or "other" (several
 * joined by '+': "discrete+integrated") set device_types; "name:TEXT", or any other text, sets
 * device_name to TEXT (a pointer into `text`, which must outlive moe_context_create). Fields the
 * text does not name are left as they are. MOE_ERROR_INVALID_ARGUMENT for NULL, "" or a number
 * out of int range. */
MOE_API moe_status moe_context_desc_set_device(moe_context_desc *desc, const char *text);

/* Creates a context. `desc` may be NULL (all defaults). */
MOE_API moe_status moe_context_create(const moe_context_desc *desc, moe_context **out_context);
/* Destroy the context's layers and buffers first: they live in its arena. A context destroyed
 * while some are still alive is not freed at once (that would pull the memory from under
 * them): the call records MOE_ERROR_BUSY with a message counting them (moe_last_error, the log
 * callback), the context takes no new work (its live layers' and buffers' calls fail with
 * MOE_ERROR_INVALID_ARGUMENT, their _destroy works) and it is released with the last of them.
 * Forwards in flight are waited for first. */
MOE_API void moe_context_destroy(moe_context *context);
/* The backend and device the context runs on (what AUTO chose). */
MOE_API moe_backend_kind moe_context_backend(const moe_context *context);
MOE_API moe_status moe_context_get_device_info(const moe_context *context, moe_device_info *info);
/* Detail message of the last failed call on this context; "" if none. Valid until the next
 * call on the context. */
MOE_API const char *moe_context_error(const moe_context *context);

/* Arena statistics. The arena keeps three regions apart: weights (persistent, per layer),
 * scratch (every temporary of a forward, one region shared by all layers of the context)
 * and staging (host-visible transfer space; empty on the CPU backend). */
typedef struct moe_arena_stats {
    size_t struct_size;            /* sizeof(moe_arena_stats) */
    size_t weights_bytes;          /* bytes held for layer weights */
    size_t scratch_bytes;          /* bytes reserved for the shared scratch region */
    size_t scratch_peak_bytes;     /* largest scratch any forward so far has used */
    size_t staging_bytes;          /* bytes reserved for staging */
    size_t buffer_bytes;           /* bytes held by moe_buffer objects */
    uint64_t allocation_count;     /* backend allocations made since the context was created */
    uint64_t scratch_reservations; /* times the scratch region was (re)allocated */
} moe_arena_stats;

MOE_API moe_status moe_context_get_arena_stats(const moe_context *context, moe_arena_stats *stats);

/* ---------------------------------------------------------------------------------------
 * Weight formats. Expert weights (routed and shared) may be handed over and stored in any of
 * these; the router and the small vectors are always float32, and so are activations (unless a
 * layer opts into integer ones or bfloat16 pairs: moe_layer_desc.activation_dtype).
 *
 * Q8_0 and Q4_0 are ggml's (GGUF's) block formats, byte for byte: each row of a weight matrix
 * (along the reduction dimension, HF [out][in] rows) is cut into blocks of MOE_BLOCK_SIZE = 32
 * values, so a row length that is not a multiple of 32 is refused for them.
 *   Q8_0  34 bytes a block: an IEEE fp16 scale d, then 32 int8 q; value = q·d.
 *   Q4_0  18 bytes a block: an fp16 scale d, then 16 bytes holding 32 4-bit q, value j in the
 *         low nibble of byte j and value j + 16 in its high nibble; value = (q − 8)·d.
 * F16 is IEEE binary16, BF16 the upper half of a float32, both little-endian. Quantising
 * (moe_convert_row, or at upload) follows ggml's reference quantizers exactly, so the bytes
 * are those of ggml's tools; float32 → fp16/bf16 rounds to nearest even (bf16 keeps NaN a NaN).
 *
 * (0.6.0) Q4_K, Q5_K and Q6_K are ggml's K-quants, byte for byte: super-blocks of
 * MOE_SUPER_BLOCK_SIZE = 256 values along the row, so a row length that is not a multiple of
 * 256 is refused for them (llama.cpp's Q4_K_M / Q5_K_M files mix them: Q4_K or Q5_K for most
 * tensors, Q6_K for some down projections).
 *   Q4_K  144 bytes: fp16 d, fp16 dmin, 12 bytes packing eight 6-bit scales sc and mins m, then
 *         128 bytes of 4-bit q (byte 32c + l: value 64c + l low, 64c + 32 + l high); value i =
 *         d·sc[i/32]·q − dmin·m[i/32].
 *   Q5_K  176 bytes: as Q4_K, with 32 bytes of fifth bits (byte l, bit 2c: value 64c + l; bit
 *         2c + 1: value 64c + 32 + l) before the nibbles: q = nibble + 16·bit.
 *   Q6_K  210 bytes: 128 bytes of low nibbles, 64 of high 2-bit pairs, sixteen int8 scales (one
 *         per 16 values), fp16 d; value i = d·sc[i/16]·(q − 32).
 * (0.15.0) Q3_K, the 3-bit K-quant of llama.cpp's Q3_K_S / Q3_K_M / Q3_K_L files (their other
 * tensors are Q4_K, Q5_K or Q6_K, so every expert tensor of such a file now runs):
 *   Q3_K  110 bytes: 32 bytes of third bits hmask, 64 bytes of 2-bit low pairs qs, 12 bytes
 *         packing sixteen 6-bit scales, fp16 d. Value i = 128n + 32j + l (n < 2, j < 4, l < 32)
 *         has low bits (qs[32n + l] >> 2j) & 3 and third bit (hmask[l] >> (4n + j)) & 1:
 *         q = low + 4·third, value i = d·(sc[i/16] − 32)·(q − 4). Scale s's low 4 bits are
 *         byte s's low nibble (s < 8) or byte s − 8's high one, its top 2 bits those at 2·(s/4)
 *         of byte 8 + s % 4.
 * (0.16.0) Q2_K, the 2-bit K-quant of llama.cpp's Q2_K / Q2_K_S files (the formats the largest
 * MoE models are most often run in; their other expert tensors are Q3_K, Q4_K or Q6_K):
 *   Q2_K  84 bytes: 16 bytes of scales (byte s: sub-block s's 4-bit scale sc in its low nibble,
 *         its 4-bit min m in the high one), 64 bytes of 2-bit q qs, fp16 d, fp16 dmin. Value
 *         i = 128n + 32j + l has q = (qs[32n + l] >> 2j) & 3 (as Q3_K's low bits), value i =
 *         d·sc[i/16]·q − dmin·m[i/16].
 * Files quantised by llama.cpp are read as they are. Quantising float weights to a K-quant here
 * (moe_convert_row, an upload, moe-bench) fits each sub-block's scale (and min) to its range in
 * one pass — not llama.cpp's iterative search, so the bytes differ from its llama-quantize's
 * (and the error is somewhat larger); for production files quantise with llama.cpp.
 *
 * (0.7.0) MXFP4 is ggml's block of 32 E2M1 (4-bit float) values with a shared E8M0 scale,
 * byte for byte, the format gpt-oss ships its experts in (MOE_BLOCK_SIZE values a block):
 *   MXFP4 17 bytes a block: the scale byte e, then 16 bytes of 4-bit codes q, value j in the
 *         low nibble of byte j and value j + 16 in its high nibble (as Q4_0); value =
 *         kv[q]·2^(e − 128), kv = {0, 1, 2, 3, 4, 6, 8, 12, 0, −1, −2, −3, −4, −6, −8, −12}
 *         (twice the E2M1 values, hence 128 where the OCP spec's bias is 127).
 * Quantising follows ggml's quantize_row_mxfp4_ref: e = floor(log2(max|x|)) − 2 + 127 (0 for
 * an all-zero block; below 2^-125 the byte wraps as ggml's cast does on x86 and the block
 * becomes zeros), then each value's nearest code, the first of equals.
 * ------------------------------------------------------------------------------------- */
typedef enum moe_dtype {
    MOE_DTYPE_DEFAULT = 0, /* a zero field: F32 for weights handed over, and "the format they
                              were handed over in" for a storage format */
    MOE_DTYPE_F32 = 1,
    MOE_DTYPE_F16 = 2,
    MOE_DTYPE_BF16 = 3,
    MOE_DTYPE_Q8_0 = 4,
    MOE_DTYPE_Q4_0 = 5,
    MOE_DTYPE_Q4_K = 6,  /* (0.6.0) */
    MOE_DTYPE_Q5_K = 7,  /* (0.6.0) */
    MOE_DTYPE_Q6_K = 8,  /* (0.6.0) */
    MOE_DTYPE_MXFP4 = 9, /* (0.7.0) */
    MOE_DTYPE_Q3_K = 10, /* (0.15.0) */
    MOE_DTYPE_Q2_K = 11  /* (0.16.0) */
} moe_dtype;

#define MOE_BLOCK_SIZE       32  /* values per block of Q8_0, Q4_0 and MXFP4 */
#define MOE_SUPER_BLOCK_SIZE 256 /* values per super-block of Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (0.6.0) */

/* "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "mxfp4", "q3_k", "q2_k" ("default" for
 * DEFAULT); NULL for a value that is not a moe_dtype. */
MOE_API const char *moe_dtype_name(moe_dtype dtype);
/* The dtype a name from moe_dtype_name spells (case-insensitive); MOE_ERROR_INVALID_ARGUMENT
 * for any other string. */
MOE_API moe_status moe_dtype_from_name(const char *name, moe_dtype *out);
/* Values per block: 1 for F32/F16/BF16, 32 for Q8_0/Q4_0/MXFP4, 256 for the K-quants; 0 for DEFAULT
 * or an unknown value. */
MOE_API int64_t moe_dtype_block_size(moe_dtype dtype);
/* Bytes of one row of n values; 0 when n is not a positive multiple of the block size (or the
 * dtype is not a format, or the size overflows). */
MOE_API size_t moe_dtype_row_bytes(moe_dtype dtype, int64_t n);
/* Converts one row of n values from src_dtype to dst_dtype (any pair of formats; the same
 * format copies the bytes): block formats are dequantised to float32 and quantised as ggml's
 * reference quantizers do. MOE_ERROR_INVALID_ARGUMENT for an unknown dtype,
 * MOE_ERROR_INVALID_SIZE when n does not fit both formats' blocks; dst is untouched then. */
MOE_API moe_status moe_convert_row(moe_dtype src_dtype, const void *src, moe_dtype dst_dtype, void *dst,
                                   int64_t n);
/* (0.12.0) 1 if a matrix product of weights stored in `weights` can run on `activations`
 * (moe_layer_desc.activation_dtype): F32 (or DEFAULT) for every format; the opt-ins Q8_0 (integer
 * activations) for Q8_0, Q4_0, Q4_K, (0.13.0) Q5_K and Q6_K, (0.15.0) Q3_K and (0.16.0) Q2_K, and BF16
 * (bfloat16 pairs)
 * for Q4_0, MXFP4 and Q4_K; else 0.
 * Each product of a layer (gate/up, down; routed and shared) decides for itself; whether it then
 * runs the opt-in also takes a backend (and CPU) with the path: moe_layer_activation_dtype says. */
MOE_API int moe_dtype_takes_activations(moe_dtype weights, moe_dtype activations);

/* ---------------------------------------------------------------------------------------
 * Layer configuration: plan-time settings. Covers Mixtral, OLMoE, Qwen2/3-MoE, DeepSeek-V2/V3,
 * Switch/GShard. Sizes are int64_t so that a bad value is caught, not wrapped.
 * ------------------------------------------------------------------------------------- */
typedef enum moe_score_func {
    MOE_SCORE_SOFTMAX = 0, /* softmax over all experts' logits (Mixtral, Qwen, OLMoE, Switch) */
    MOE_SCORE_SIGMOID = 1  /* independent sigmoid per expert (DeepSeek-V3) */
} moe_score_func;

typedef enum moe_group_score {
    MOE_GROUP_SCORE_TOP2_SUM = 0, /* sum of the group's two best selection scores (DeepSeek-V3) */
    MOE_GROUP_SCORE_MAX = 1       /* the group's best selection score (DeepSeek-V2) */
} moe_group_score;

typedef enum moe_activation {
    MOE_ACTIVATION_SWIGLU = 0,    /* silu(x·W_gateᵀ) ⊙ (x·W_upᵀ) */
    MOE_ACTIVATION_GEGLU = 1,     /* gelu(x·W_gateᵀ) ⊙ (x·W_upᵀ), gelu with erf */
    MOE_ACTIVATION_RELU = 2,      /* relu(x·W_upᵀ), no gate matrix (Switch) */
    MOE_ACTIVATION_GELU = 3,      /* gelu(x·W_upᵀ), erf form, no gate matrix */
    MOE_ACTIVATION_SWIGLU_OAI = 4 /* (0.7.0) gpt-oss's clamped SwiGLU (llama.cpp's swiglu_oai):
                                     g = min(x·W_gateᵀ, limit), u = clamp(x·W_upᵀ, −limit,
                                     limit), g·sigmoid(alpha·g)·(u + 1) — after the experts'
                                     biases, when they have them; alpha and limit are
                                     moe_layer_desc.swiglu_alpha and swiglu_limit */
} moe_activation;

typedef enum moe_drop_policy {
    MOE_DROP_ZERO = 0,       /* a dropped (token, slot) contributes 0 (GShard / T5X) */
    MOE_DROP_PASSTHROUGH = 1 /* it contributes w·x, its routing weight times its input
                                (Hugging Face SwitchTransformers) */
} moe_drop_policy;

typedef struct moe_layer_desc {
    size_t struct_size; /* sizeof(moe_layer_desc) */
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

    moe_dtype weight_dtype;        /* the format the layer stores its routed experts' gate, up
                                      and down in (down: unless down_weight_dtype says
                                      otherwise); DEFAULT = the format they are handed over
                                      in (moe_layer_weights.dtype; a checkpoint's own). A
                                      different one is converted or quantised once, at upload */
    moe_dtype shared_weight_dtype; /* the same for the shared expert(s) */

    int32_t reserved_0_3_0;             /* unused, ignored: a 0.2.0 struct's sizeof includes 4 bytes of
                                           tail padding here, so the 0.3.0 fields start past it */
    moe_dtype activation_dtype;         /* (0.3.0) what the experts' inputs are rounded to for their
                                           matrix products. DEFAULT / F32: float32, exact (the
                                           reference's 1e-5). Q8_0, an opt-in for experts stored in
                                           Q8_0, Q4_0, (0.7.1) Q4_K, (0.13.0) Q5_K and Q6_K,
                                           (0.15.0) Q3_K or (0.16.0) Q2_K: the
                                           products run on integer
                                           dot products (x86 AVX512_VNNI, AVX-VNNI, or (0.7.1) AVX2's
                                           vpmaddubsw / vpmaddwd; (0.14.0) 64-bit Arm's sdot,
                                           FEAT_DotProd) — each token's input x
                                           quantised to int8
                                           per group of 16 values, q = round(a / d), d = max|a| / 127
                                           in float32 (ggml's Q8_0 rule on half blocks), and the
                                           intermediate act(gate)·up, heavier-tailed, to int16 the same
                                           way (d = max|a| / 32767). Faster decode; the output moves by
                                           ~0.5% (rel L2, at most 1e-2 over a forward's outputs; a
                                           single small token's can reach ~1%) from the float32-activation
                                           result on the same weights (docs/ARCHITECTURE.md has the
                                           figures per preset). A request, never a requirement: a
                                           backend or CPU without such a path (the CPU's avx512
                                           level, AVX-512 without VNNI, has none, nor an Arm CPU
                                           without the dot products), and products of
                                           weights in F32/F16/BF16 or MXFP4 (and before 0.13.0 Q5_K
                                           and Q6_K), compute in float32 as before. (0.12.0) Each
                                           product decides for itself: a Q4_K gate/up with an F16 down
                                           runs gate/up on the opt-in and down on float32 (before
                                           0.12.0 both on float32); a Q4_K_M file's Q4_K gate/up with
                                           a Q6_K down runs both on it (0.13.0).
                                           (0.11.0) BF16, an opt-in for experts stored in Q4_0,
                                           MXFP4 or Q4_K: bfloat16 pairs — each input value a (x, and
                                           the intermediate) as hi + lo, hi = a rounded to bfloat16,
                                           lo = a − hi rounded the same way (16 significant bits),
                                           their products with the 4-bit values by AVX512_BF16's
                                           vdpbf16ps (exact, summed in float32). 4-bit decode takes
                                           1.3–1.6× less time than on float32 activations (Zen 4); the
                                           output moves by ~4e-6 (rel L2, at most 2e-5 over a
                                           forward's outputs) from the float32-activation result.
                                           CPU only, and only where the CPU has AVX512_BF16 (the
                                           avx512vnni level). The same request rule as Q8_0's.
                                           moe_layer_activation_dtype tells what a layer runs */
    moe_dtype down_weight_dtype;        /* (0.5.0) the routed experts' down projection's format
                                           when it is not weight_dtype (GGUF files often keep
                                           down in more bits than gate and up); DEFAULT =
                                           weight_dtype. An activation opt-in applies to each
                                           projection whose format takes it. A desc the library fills in
                                           (moe_model_layer_desc) has it set: change it along
                                           with weight_dtype, or set it back to DEFAULT */
    moe_dtype shared_down_weight_dtype; /* (0.5.0) the same for the shared expert(s); DEFAULT =
                                           shared_weight_dtype */

    /* (0.7.0) gpt-oss: a router with a bias, routed experts with biases, the clamped SwiGLU. */
    int router_has_bias; /* nonzero: weights.router_bias[E] is the router's own bias (a Linear
                            with bias), added to the logits: logits = x·routerᵀ + router_bias,
                            so it moves the choice, the weights and the z-loss alike. Excludes
                            has_selection_bias (which reads the same array differently).
                            gpt-oss's top-k of the logits then softmax over the k chosen is
                            score_func SOFTMAX with renormalize: the same weights */
    int expert_has_bias; /* nonzero: every routed expert's projections add a bias
                            (weights.gate_bias, up_bias, down_bias): gate and up before the
                            activation, down before the routing weight multiplies its output
                            (gpt-oss). The shared expert has none */
    float swiglu_alpha;  /* SWIGLU_OAI's alpha, finite; 0 = 1.702 (gpt-oss's) */
    float swiglu_limit;  /* SWIGLU_OAI's limit, finite and > 0; 0 = 7.0 (gpt-oss's
                            config swiglu_limit) */
} moe_layer_desc;

/* Host weights in Hugging Face layout (nn.Linear weights are [out][in]), rows contiguous.
 * The router and the small vectors are float32; the experts' matrices are in `dtype` and the
 * shared expert's in `shared_dtype` (an [rows][cols] matrix is rows × moe_dtype_row_bytes(
 * dtype, cols) bytes, so a block format needs cols, the reduction length, to be a multiple of
 * 32). Copied — converted to the layer's storage formats, and re-laid out as the backend likes —
 * at moe_layer_create; the caller may free them after. */
typedef struct moe_layer_weights {
    size_t struct_size;       /* sizeof(moe_layer_weights) */
    const float *router;      /* [n_experts][d_model]; required */
    const float *router_bias; /* [n_experts]; required iff has_selection_bias or
                                 router_has_bias */
    const void *gate;         /* [n_experts][d_ff][d_model]; required iff gated (SwiGLU/GeGLU/SWIGLU_OAI) */
    const void *up;           /* [n_experts][d_ff][d_model]; required (Switch's wi) */
    const void *down;         /* [n_experts][d_model][d_ff]; required (Switch's wo) */
    const void *shared_gate;  /* [d_ff_shared][d_model]; iff d_ff_shared and gated */
    const void *shared_up;    /* [d_ff_shared][d_model]; iff d_ff_shared */
    const void *shared_down;  /* [d_model][d_ff_shared]; iff d_ff_shared */
    const float *shared_expert_gate; /* [d_model]; iff shared_expert_gate */
    moe_dtype dtype;                 /* format of gate, up and down; DEFAULT = F32 */
    moe_dtype shared_dtype;          /* format of shared_gate, shared_up, shared_down; DEFAULT = F32 */
    const float *gate_bias;          /* (0.7.0) [n_experts][d_ff]; iff expert_has_bias and gated */
    const float *up_bias;            /* (0.7.0) [n_experts][d_ff]; iff expert_has_bias */
    const float *down_bias;          /* (0.7.0) [n_experts][d_model]; iff expert_has_bias */
} moe_layer_weights;

/* Optional outputs of a forward; every pointer may be NULL. Host memory. */
typedef struct moe_forward_stats {
    size_t struct_size;     /* sizeof(moe_forward_stats) */
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
} moe_forward_stats;

/* Creates a layer on a context: validates the config, uploads the weights once into the
 * context's arena. */
MOE_API moe_status moe_layer_create(moe_context *context, const moe_layer_desc *desc,
                                    const moe_layer_weights *weights, moe_layer **out_layer);
/* A layer (or buffer) destroyed while a forward that uses it is in flight: the context's
 * forwards are waited for first, and MOE_ERROR_BUSY is recorded with a message saying so
 * (moe_last_error, moe_context_error, the log callback) — never freed under the device. */
MOE_API void moe_layer_destroy(moe_layer *layer);
/* (0.3.0) What the layer's routed experts round their inputs to: MOE_DTYPE_Q8_0 when
 * desc.activation_dtype asked for it and this backend runs integer dot products on the
 * routed experts' gate/up or (0.12.0: either; before, both) down format (Q8_0, Q4_0, the K-quants; the
 * other product, in another format, on float32; the shared expert decides the same way for itself);
 * (0.11.0) MOE_DTYPE_BF16 the same way for bfloat16 pairs (Q4_0, MXFP4 or Q4_K, a CPU with
 * AVX512_BF16); else MOE_DTYPE_F32. MOE_DTYPE_DEFAULT for a NULL layer. */
MOE_API moe_dtype moe_layer_activation_dtype(const moe_layer *layer);

/* One forward from host pointers: x [n_tokens][d_model] → y [n_tokens][d_model].
 * `stats` may be NULL. y (and stats) are written only if the call succeeds (one exception: a
 * GPU lost while the results are read back, MOE_ERROR_DEVICE_LOST, may leave them written in
 * part).
 *
 * Non-finite input: values are not checked or cleaned. A NaN or Inf in token t's input
 * propagates through token t's own arithmetic (its output row is non-finite in general),
 * never changes another token's output or expert choice, and makes the losses NaN. A NaN
 * score ranks below every number; a token still occupies its k expert slots. */
MOE_API moe_status moe_layer_forward(moe_layer *layer, int64_t n_tokens, const float *x, float *y,
                                     moe_forward_stats *stats);

/* ---------------------------------------------------------------------------------------
 * Device-resident buffers: keep activations on the device across layers.
 * ------------------------------------------------------------------------------------- */
/* A float32 tensor of n_elements on the context's device, contents undefined. */
MOE_API moe_status moe_buffer_create(moe_context *context, int64_t n_elements, moe_buffer **out_buffer);
MOE_API void moe_buffer_destroy(moe_buffer *buffer);
MOE_API int64_t moe_buffer_elements(const moe_buffer *buffer);
/* Copies n_elements floats between host memory and the buffer at element offset `offset`. */
MOE_API moe_status moe_buffer_write(moe_buffer *buffer, int64_t offset, int64_t n_elements, const float *src);
MOE_API moe_status moe_buffer_read(const moe_buffer *buffer, int64_t offset, int64_t n_elements, float *dst);
/* Forward on device buffers: x and y hold at least n_tokens·d_model elements and may not be
 * the same buffer. No host round trip of activations. */
MOE_API moe_status moe_layer_forward_buffers(moe_layer *layer, int64_t n_tokens, const moe_buffer *x,
                                             moe_buffer *y, moe_forward_stats *stats);

/* (0.4.0) Asynchronous forwards. moe_layer_forward_async checks its arguments, records the forward
 * and hands it to the device, and returns without waiting: a chain of layers (y of one the x of
 * the next) runs on the device back to back, and one moe_context_wait completes them all. The
 * device runs a context's forwards in the order they were submitted, so a forward may read the
 * y of one still in flight. Until the wait:
 *  - moe_buffer_read / moe_buffer_write on a buffer an unfinished forward uses (x or y) fail
 *    with MOE_ERROR_BUSY and leave the host memory untouched;
 *  - moe_layer_forward and moe_layer_forward_buffers may be called: they run after the
 *    forwards in flight and, as always, return complete — which completes those too;
 *  - destroying a layer, a buffer or the context in flight waits first (see their _destroy).
 * A failure while the device ran a forward (MOE_ERROR_DEVICE_LOST, ...) is returned by
 * moe_context_wait. On the CPU backend the forward runs on the context's worker threads during
 * the call (the CPU is the device), so the wait has nothing left to do; the rules above hold all
 * the same. No stats: a forward that wants them is a moe_layer_forward_buffers. At most
 * a backend-set number of forwards is queued at once (Vulkan: one command buffer each); a
 * submission past it waits for the oldest first. */
MOE_API moe_status moe_layer_forward_async(moe_layer *layer, int64_t n_tokens, const moe_buffer *x,
                                           moe_buffer *y);
/* Waits until every forward submitted on the context has completed; returns the first failure
 * any of them met (MOE_OK when there were none in flight). */
MOE_API moe_status moe_context_wait(moe_context *context);

/* ---------------------------------------------------------------------------------------
 * (0.8.0) Expert usage: how many (token, slot) rows each routed expert of a layer receives, in
 * total and over a window of the last forwards — what a placement's expert_order (below) and an
 * expert cache want to know. Tracking is asked for per layer: it reads the forward's per-expert
 * counts back after its wait, a small transfer. Forwards that complete in the call
 * (moe_layer_forward, moe_layer_forward_buffers) are counted; one submitted without a wait
 * (moe_layer_forward_async) leaves its counts on the device and adds one to uncounted_forwards
 * instead, as does each recording made (moe_vulkan_layer_record; however often it is submitted).
 * A forward that fails counts nothing.
 * ------------------------------------------------------------------------------------- */
typedef struct moe_expert_usage {
    size_t struct_size;         /* sizeof(moe_expert_usage) */
    int64_t *routed_total;      /* in: [n_experts] to fill, or NULL. Rows routed to each expert
                                   (before capacity) by the counted forwards since tracking began */
    int64_t *routed_window;     /* in: [n_experts] to fill, or NULL. The same over the last
                                   window_forwards counted forwards */
    int64_t window;             /* out: the window asked for (0: the layer does not track) */
    int64_t window_forwards;    /* out: forwards in the window, min(forwards, window) */
    int64_t forwards;           /* out: counted forwards */
    int64_t tokens;             /* out: their tokens */
    int64_t uncounted_forwards; /* out: asynchronous forwards and recordings since tracking began */
} moe_expert_usage;

/* Starts tracking with a window of `window` forwards (1..65536), restarting from zero if the
 * layer tracked already; 0 stops and drops the counts. */
MOE_API moe_status moe_layer_track_usage(moe_layer *layer, int64_t window);
/* The counts so far (zeros and window 0 for a layer that does not track). */
MOE_API moe_status moe_layer_get_usage(const moe_layer *layer, moe_expert_usage *usage);
/* order[0..n_experts) = the experts by `routed` (routed_total or routed_window, or counts loaded
 * with moe_usage_load), most rows first, ties to the lower index: a placement's expert_order. */
MOE_API moe_status moe_usage_expert_order(const int64_t *routed, int64_t n_experts, int32_t *order);
/* Writes the usage of n_layers tracking layers to a JSON file (replaced atomically):
 * {"format": "moe-usage", "version": 1, "layers": [{"index", "n_experts", "forwards", "tokens",
 * "window", "window_forwards", "routed_total": [...], "routed_window": [...]}, ...]}, each layer's
 * "index" from layer_indices (the model's layer numbers, each once, 0..2^53; NULL: 0, 1, ...).
 * (0.9.0) A layer with an expert cache adds "cache": moe_expert_cache_stats's counts under their
 * names, "slot_expert", "expert_hits", "expert_misses" and "expert_uploads" (moe_usage_load
 * reads routed_total only). */
MOE_API moe_status moe_usage_save(const char *path, const moe_layer *const *layers,
                                  const int64_t *layer_indices, int64_t n_layers);
/* Reads routed_total [n_experts] of the layer with that "index" from a file moe_usage_save wrote
 * (by a previous run): MOE_ERROR_IO / MOE_ERROR_FORMAT for a missing or malformed file,
 * MOE_ERROR_INVALID_ARGUMENT when it has no such layer or another expert count. Counts are whole
 * numbers up to 9·10^15. routed_total is written only on success. */
MOE_API moe_status moe_usage_load(const char *path, int64_t layer_index, int64_t n_experts,
                                  int64_t *routed_total);

/* ---------------------------------------------------------------------------------------
 * (0.8.0) Experts placed on several devices: one layer whose routed experts are spread over
 * contexts the application created — a GPU and the CPU, so the experts that do not fit in GPU
 * memory stay in host RAM and still run, or two GPUs. The home context holds the router, the
 * shared expert and the small vectors, routes every token once, and combines; it is the layer's
 * context (moe_layer_forward_buffers takes its buffers). Each context holds its own experts and
 * runs the grouped GEMM of the rows routed to them; the contexts run at the same time (a GPU's
 * part is submitted before the CPU computes its own). The combine gathers every expert's output
 * row in slot order on the home context, as a one-context forward does, so the result is
 * deterministic run to run and within the test suite's tolerance of the one-context layer
 * (bit-identical when every context is a CPU one). The stats are the whole layer's; its
 * device_ms is the home's two phases plus the slowest context's experts.
 * moe_layer_activation_dtype says Q8_0 (BF16) only when every context holding experts runs them on
 * integer activations (bfloat16 pairs); each context decides for its own experts, as for a
 * one-context layer.
 *
 * The layer's contexts must not be used from other threads during its calls, and each must
 * outlive it (destroyed first, a context is released with its last layer, as always). Such a
 * layer runs with moe_layer_forward and moe_layer_forward_buffers, which complete before they
 * return; moe_layer_forward_async and the embedding headers' recordings return
 * MOE_ERROR_UNSUPPORTED for it.
 * ------------------------------------------------------------------------------------- */
#define MOE_MAX_PLACEMENT_CONTEXTS 16

/* (0.9.0) An expert cache: room for `slots` experts on one of the placement's contexts (a GPU) for
 * copies of experts that live on the others (host RAM), refilled as the routing moves. Each
 * forward, after routing, every routed expert that lives elsewhere is looked up:
 *  - resident in a slot (a hit): its rows run there;
 *  - not resident (a miss): when the forward routes at least `min_rows` rows to it, it is uploaded
 *    into a slot first and its rows run there; otherwise, or when no slot can be given, they run
 *    where the expert lives. Misses are taken most rows first (ties to the lower index). A slot
 *    is given from those this forward does not use: an empty one (the lowest), else the policy's
 *    victim (an eviction).
 * An upload gives the expert the bytes layer creation would, from the weights the layer was made
 * from — so those must stay valid and unchanged while a layer with a cache lives (a layer made
 * from a model keeps the model's files open until it is destroyed). Where those weights are in
 * another format than the cache's context stores (float32 weights stored as Q4_0, say), the
 * experts that can be cached are converted once, at creation, into a host copy in the stored
 * format (their bytes in that format, in host memory, for the layer's life), so that an upload
 * copies bytes rather than quantising on the forward's critical path. A slot being uploaded is
 * empty until its upload has completed: a failed upload fails the forward and leaves the slot
 * empty, never a partial expert. The slots' bytes count in that context's arena like any
 * weights, and never exceed budget_bytes. Where an expert's rows run depends on what the
 * cache holds, so with the slots on a GPU and the experts on the CPU two forwards of the same
 * input may differ by the devices' rounding (within the test suite's tolerance); with CPU
 * contexts only they are bit-identical, as any placement. At creation the slots are filled
 * with the first experts of expert_order (identity when NULL) that live elsewhere — so
 * statistics from a previous run (moe_usage_load, moe_usage_expert_order) start the cache warm;
 * those uploads are not counted. A forward's uploads run while the CPU computes its share: on a
 * thread of the library's own during the call, which is also where the cache's context's log
 * callback hears of a failure there. */
typedef enum moe_cache_policy {
    /* The slot whose expert was last routed longest ago (ties: the lower slot). */
    MOE_CACHE_LRU = 0,
    /* Frequency-weighted: each expert counts the forwards that route rows to it, every count
     * halved (rounded down) after each halving_forwards forwards. The victim is the slot whose
     * expert counts least (ties as LRU), and a miss takes it only when the missed expert's count
     * (this forward included) is at least the victim's: a one-off does not push out a hot expert. */
    MOE_CACHE_LFU = 1
} moe_cache_policy;

typedef struct moe_expert_cache_desc {
    size_t struct_size;       /* sizeof(moe_expert_cache_desc) */
    int context;              /* index in the placement's contexts of the one holding the slots */
    int64_t slots;            /* expert slots, 1 up to the number of experts that live elsewhere
                                 (more are cut to that); 0: as many as budget_bytes holds */
    uint64_t budget_bytes;    /* with slots 0: the bytes the slots may take, as the context's
                                 backend stores them (moe_expert_cache_stats.bytes) */
    moe_cache_policy policy;  /* MOE_CACHE_LRU (default) or MOE_CACHE_LFU */
    int64_t min_rows;         /* the upload rule: a miss is uploaded when the forward routes at
                                 least this many rows to it (0: 1, every miss). An upload moves
                                 the expert's bytes once; computing where it lives reads them
                                 once per forward, so on a slow bus raise it for decode */
    int64_t halving_forwards; /* MOE_CACHE_LFU: forwards between halvings (0: 64) */
} moe_expert_cache_desc;

typedef struct moe_placement {
    size_t struct_size;                 /* sizeof(moe_placement) */
    int n_contexts;                     /* 1..MOE_MAX_PLACEMENT_CONTEXTS */
    moe_context *const *contexts;       /* [n_contexts], each a different context */
    int home;                           /* index in contexts of the home context */
    const int32_t *expert_context;      /* [n_experts]: the index in contexts of each routed expert's
                                           context (explicit placement); NULL: filled from budget_bytes */
    const uint64_t *budget_bytes;       /* [n_contexts], used when expert_context is NULL: the bytes of
                                           routed-expert weights each context may hold, as its backend
                                           stores them (UINT64_MAX: no limit). Experts are taken in
                                           expert_order and each goes to the first context, in
                                           contexts' order, whose budget it still fits: {GPU, CPU} with
                                           {gpu_bytes, UINT64_MAX} fills the GPU with the first experts
                                           of expert_order and leaves the rest on the CPU. An expert
                                           that fits nowhere fails the call (MOE_ERROR_OUT_OF_DEVICE_MEMORY) */
    const int32_t *expert_order;        /* [n_experts], a permutation of 0..n_experts-1: the order the
                                           budgets are filled in, most used first; NULL: 0, 1, ... */
    const moe_expert_cache_desc *cache; /* (0.9.0) an expert cache, or NULL: none */
} moe_placement;

/* Creates a layer whose routed experts are placed as `placement` says (the weights and checks as
 * moe_layer_create). Errors are recorded on the home context and the thread's last error — a
 * failure on another context with its index ("placement context 1: ...") — except those found
 * before the home is known (NULL placement, struct_size, contexts, n_contexts, home), which only
 * moe_last_error reports. */
MOE_API moe_status moe_layer_create_placed(const moe_placement *placement, const moe_layer_desc *desc,
                                           const moe_layer_weights *weights, moe_layer **out_layer);
/* Where each routed expert of a layer lives: expert_context[e] is the index in the placement's
 * contexts (0 for every expert of a layer made with moe_layer_create). [n_experts] int32. */
MOE_API moe_status moe_layer_get_placement(const moe_layer *layer, int32_t *expert_context);

/* (0.9.0) What a layer's expert cache has done since the layer was created: counts over the
 * forwards that succeeded (a failed forward counts nothing; the slots it left are reported as
 * they are). A lookup is one routed expert that lives off the cache's context in one forward:
 * a hit or a miss. A layer without a cache reports slots 0 and zeros. */
typedef struct moe_expert_cache_stats {
    size_t struct_size;      /* sizeof(moe_expert_cache_stats) */
    int context;             /* out: the cache's context (index in the placement's contexts) */
    int64_t slots;           /* out */
    size_t bytes;            /* out: what the slots take on that context (its arena's weights) */
    int64_t forwards;        /* out: forwards counted */
    int64_t hits, misses;    /* out: lookups found resident, and not */
    int64_t uploads;         /* out: misses uploaded into a slot (the others ran where they live) */
    int64_t evictions;       /* out: uploads that replaced a resident expert */
    uint64_t upload_bytes;   /* out: bytes written into slots */
    double upload_ms;        /* out: host time the uploads took */
    int64_t rows_cached;     /* out: routed rows computed in slots (hits' and uploads') */
    int64_t rows_elsewhere;  /* out: routed rows of cacheable experts computed where they live */
    int32_t *slot_expert;    /* in: [slots] to fill, or NULL: each slot's expert, -1 empty */
    int64_t *expert_hits;    /* in: [n_experts] to fill, or NULL: per expert */
    int64_t *expert_misses;  /* in: [n_experts] or NULL */
    int64_t *expert_uploads; /* in: [n_experts] or NULL */
} moe_expert_cache_stats;

MOE_API moe_status moe_layer_get_cache_stats(const moe_layer *layer, moe_expert_cache_stats *stats);
/* (0.9.0) The device time a placed layer's forwards that succeeded have spent on each of its
 * contexts since it was created: ms[c] for the placement's contexts[c], [n_contexts] (the
 * placement's count; MOE_ERROR_INVALID_ARGUMENT for another, or for a layer that is not placed).
 * The home's is its two phases (routing, shared expert, combine) and any experts or cache slots
 * it holds; a CPU context's is the wall time of its steps, as moe_forward_stats.device_ms. */
MOE_API moe_status moe_layer_get_context_ms(const moe_layer *layer, int n_contexts, double *ms);

/* ---------------------------------------------------------------------------------------
 * (0.10.0) Expert parallelism: one layer spread over the ranks of a communicator, each rank
 * holding the router, the shared expert and a contiguous range of the routed experts
 * (moe_ep_partition), on the context and backend it chose. `moe_mpi.h` (target moe::moe_mpi)
 * gives this over MPI; the core library only needs the two collectives below, so any transport
 * an application already has (NCCL, a custom one) can carry it.
 *
 * moe_layer_forward on such a layer is a collective call: every rank calls it, each with its own
 * tokens (any count, 0 too: x and y may then be NULL). Each rank routes its tokens; every rank
 * learns every rank's per-expert counts (one allgather); each (token, slot) row goes to the rank
 * owning its expert (one alltoallv, rows packed by destination, then by expert, tokens
 * ascending), which runs its experts through the same backend steps as a one-context forward;
 * the output rows come back (a second alltoallv) and each rank combines its tokens in slot
 * order. The result is that of one forward over every rank's tokens concatenated in rank order
 * — bit for bit on the CPU backend — and so are the statistics: expert_capacity applies in that
 * global token order, and expert_counts, dropped_count, aux_loss and z_loss are the global ones
 * (topk_ids and topk_weights are the rank's own tokens'; aux_loss and z_loss, when any rank
 * asks, gather every rank's router logits). A rank whose call fails (bad arguments, out of
 * memory, a device error) makes every rank's call return an error — its own status on that
 * rank, MOE_ERROR_BACKEND naming it elsewhere — rather than leave the others waiting; a
 * transport call that fails fails the forward on the ranks where it failed. Not for a layer
 * made so: moe_layer_forward_buffers / _async, recording, placement, usage tracking.
 * ------------------------------------------------------------------------------------- */

/* Rank `rank` of n_ranks owns experts [*first_expert, *first_expert + *n_local): contiguous
 * ranges in rank order, the first n_experts mod n_ranks ranks one expert more (a rank may hold
 * none when n_ranks > n_experts). */
MOE_API moe_status moe_ep_partition(int64_t n_experts, int n_ranks, int rank, int64_t *first_expert,
                                    int64_t *n_local);

/* The collectives a layer's ranks share. Each returns 0 on success, anything else on failure
 * (reported as MOE_ERROR_BACKEND with that code). Every rank calls them in the same order. */
typedef struct moe_ep_transport {
    size_t struct_size; /* sizeof(moe_ep_transport) */
    int rank, n_ranks;  /* this process's rank, 0..n_ranks-1 */
    void *user;         /* passed to each function */
    /* Every rank's `bytes` bytes (the same count on every rank) into recv, rank after rank. */
    int (*allgather)(void *user, const void *send, size_t bytes, void *recv);
    /* send: n_ranks blocks back to back, send_bytes[r] of them for rank r; recv: what each rank
     * sends this one, recv_bytes[r] from rank r, back to back in rank order. */
    int (*alltoallv)(void *user, const void *send, const size_t *send_bytes, void *recv,
                     const size_t *recv_bytes);
    /* Called when the layer is destroyed (or its creation fails); NULL: nothing to release. */
    void (*release)(void *user);
    /* A text naming a failure code of the two collectives (MPI_Error_string's, say), put in the
     * forward's error message; NULL: the code alone. */
    const char *(*describe)(void *user, int code);
} moe_ep_transport;

/* What one rank of an expert-parallel layer has done, over the forwards that succeeded since
 * the layer was created (output struct: set struct_size). exchange_ms is the time spent inside
 * the transport's calls — the exchanges and the status rounds, waiting for slower ranks
 * included — and forward_ms - exchange_ms this rank's own work (routing, its experts, the
 * combine, copies). Rows and bytes count what crossed to or from other ranks only (a rank's rows
 * for its own experts stay local, though they pass through the same buffers). */
typedef struct moe_ep_stats {
    size_t struct_size;    /* sizeof(moe_ep_stats) */
    int64_t forwards;      /* forwards that succeeded */
    int64_t tokens;        /* this rank's tokens over them */
    double forward_ms;     /* wall time of those forwards on this rank */
    double exchange_ms;    /* of which inside the transport's calls */
    int64_t rows_sent;     /* (token, slot) rows sent to other ranks' experts */
    int64_t rows_received; /* rows other ranks sent this rank's experts */
    double bytes_sent;     /* every payload byte sent to other ranks: rows out, output rows back,
                              logits (when the losses are asked for), the status rounds */
    double bytes_received; /* likewise received */
} moe_ep_stats;

MOE_API moe_status moe_layer_get_ep_stats(const moe_layer *layer, moe_ep_stats *stats);

/* A layer of which this rank holds the experts moe_ep_partition gives it. `desc` is the whole
 * layer's (every rank the same: compared across the ranks, a difference is
 * MOE_ERROR_INVALID_ARGUMENT on every rank); `weights` holds the router, the shared expert and the
 * small vectors whole, and the routed experts' tensors (gate, up, down and their biases) for
 * this rank's experts only, stacked as moe_layer_weights stacks all of them ([n_local][...]; NULL
 * when it holds none). A collective call: every rank's creation succeeds or none does. The
 * transport is copied (read by its struct_size, as the other structs); its release runs when the
 * layer is destroyed, or on failure once every rank knows (not for a transport whose struct_size
 * is refused: nothing of it is trusted then). */
MOE_API moe_status moe_layer_create_ep(moe_context *context, const moe_ep_transport *transport,
                                       const moe_layer_desc *desc, const moe_layer_weights *local_weights,
                                       moe_layer **out_layer);

/* ---------------------------------------------------------------------------------------
 * Checkpoints: a Hugging Face model directory — config.json plus model.safetensors, or the
 * shards model.safetensors.index.json lists — or a GGUF file, opened once, and a layer made from the MoE
 * block of one of its layers. Weights go from the memory-mapped files straight into the backend's upload
 * (converted row by row when the layer stores another format), never through a float copy of every expert.
 *
 * model_type         tensors of layer N                                 config keys
 * mixtral            model.layers.N.block_sparse_moe.{gate, experts.E.w1 (gate), w3 (up),
 *                    w2 (down)}.weight           num_local_experts, num_experts_per_tok,
 *                                                hidden_size, intermediate_size
 * olmoe, qwen2_moe,  model.layers.N.mlp.{gate, experts.E.{gate_proj,up_proj,down_proj}}.weight;
 * qwen3_moe          qwen2_moe: mlp.shared_expert.{gate,up,down}_proj.weight and
 *                    mlp.shared_expert_gate.weight   num_experts, num_experts_per_tok,
 *                    moe_intermediate_size (or intermediate_size), norm_topk_prob,
 *                    shared_expert_intermediate_size, decoder_sparse_step, mlp_only_layers
 * deepseek_v2,       model.layers.N.mlp.{gate.weight, gate.e_score_correction_bias,
 * deepseek_v3        experts.E.*, shared_experts.*}   n_routed_experts, n_shared_experts,
 *                    moe_intermediate_size, n_group, topk_group, topk_method, scoring_func,
 *                    routed_scaling_factor, norm_topk_prob, first_k_dense_replace, moe_layer_freq
 * switch_transformers encoder.block.N.layer.1.mlp.{router.classifier, experts.expert_E.{wi,wo}}
 *                    .weight (decoder.block.N.layer.2.mlp... with `decoder`)   num_experts,
 *                    expert_capacity, d_model, d_ff, dense_act_fn, encoder/decoder_sparse_step
 * gpt_oss (0.7.0)    model.layers.N.mlp.{router.{weight,bias}, experts.{gate_up_proj,down_proj}_
 *                    {blocks,scales,bias}}: the experts in MXFP4 as released (U8 blocks [E, out,
 *                    in/32, 16] and E8M0 scales [E, out, in/32]; gate_up_proj's even rows are
 *                    gate, the odd up), kept MXFP4   num_local_experts, num_experts_per_tok (or
 *                    experts_per_token), hidden_size, intermediate_size, swiglu_limit (7.0),
 *                    swiglu_alpha (1.702): router_has_bias, expert_has_bias, SWIGLU_OAI
 *
 * (0.5.0) GGUF files (llama.cpp's format, v2 and v3) open the same way: moe_model_open takes
 * the .gguf file (the first of a split, NAME-00001-of-0000N.gguf, which brings the others).
 * Architectures: llama with experts (Mixtral), qwen2moe, qwen3moe, olmoe, deepseek2, gpt-oss; experts
 * stacked (blk.N.ffn_{gate,up,down}_exps.weight, or ffn_gate_up_exps) or one tensor each (older
 * files); a layer has an MoE block when it has blk.N.ffn_gate_inp.weight. Keys and routing as
 * llama.cpp reads them: docs/GGUF.md. model_type is the architecture ("qwen3moe"). Tensors
 * may be F32, F16, BF16, Q8_0, Q4_0, (0.16.0) Q2_K, (0.15.0) Q3_K, Q4_K, Q5_K, Q6_K or MXFP4 (other ggml
 * types are named in the error); each projection keeps the file's format (down_weight_dtype when down's
 * differs from gate/up's).
 *
 * Safetensors tensors may be F32, F16 or BF16 (and gpt-oss's U8 MXFP4 blocks); the experts are stored in the
 * checkpoint's own dtype unless moe_model_layer_options asks for another (F16 and BF16 stay 16-bit on every
 * backend). Errors: MOE_ERROR_IO (a file or directory cannot be opened or mapped), MOE_ERROR_FORMAT
 * (malformed JSON or safetensors, a missing tensor, a tensor of the wrong shape or dtype),
 * MOE_ERROR_UNSUPPORTED (a model_type, activation or routing method this version does not run),
 * MOE_ERROR_INVALID_ARGUMENT (a layer index out of range or with no MoE block). The detail message names the
 * file and the tensor or key. A moe_model is read-only once open and may be used from several threads at
 * once; a layer created from it stays valid after moe_model_close (one with an expert cache keeps the
 * model's files open, and reads them, until it is destroyed).
 * ------------------------------------------------------------------------------------- */
typedef struct moe_model moe_model;

/* Opens the model directory `path` — or the GGUF file `path` — : reads config.json (GGUF: its
 * keys), maps and checks every safetensors (GGUF) header. Tensors are checked against the config when a layer
 * is asked for. Every file must be a regular file (symbolic links to one are followed, as in the Hugging Face
 * cache); a directory, FIFO, device or socket in its place is MOE_ERROR_IO "... is a FIFO, not a regular
 * file", refused without being read or blocking. config.json may be at most 8 MiB and
 * model.safetensors.index.json 64 MiB (MOE_ERROR_FORMAT, giving both sizes); a safetensors file has no size
 * limit but its header's (100 MB). JSON with a key repeated in one object, or a string holding a NUL
 * character, is MOE_ERROR_FORMAT. */
MOE_API moe_status moe_model_open(const char *path, moe_model **out_model);
MOE_API void moe_model_close(moe_model *model);

typedef struct moe_model_info {
    size_t struct_size;  /* sizeof(moe_model_info) */
    char model_type[64]; /* config.json's model_type, e.g. "mixtral" (GGUF: the architecture, "qwen3moe") */
    int64_t n_layers;    /* num_hidden_layers (Switch: encoder blocks, num_layers) */
    int64_t n_decoder_layers; /* Switch: decoder blocks; 0 for the other families */
    int64_t hidden_size;      /* d_model */
    int64_t n_experts;        /* routed experts per MoE block */
    int64_t top_k;            /* experts per token */
    int64_t n_moe_layers;     /* layers (Switch: encoder blocks) that have an MoE block */
    int64_t first_moe_layer;  /* the first of them, -1 if none */
    int n_files;              /* safetensors (GGUF) files mapped */
    int64_t n_tensors;        /* tensors in them */
} moe_model_info;

MOE_API moe_status moe_model_get_info(const moe_model *model, moe_model_info *info);

/* (0.5.0) One tensor of the model's files, as the file describes it: moe_model_get_tensor_info
 * walks them by index, 0 .. moe_model_info.n_tensors - 1, in name order (moe-info --model
 * lists them by layer). `type` is the file's spelling of the element type ("BF16", "Q4_K");
 * dtype is the moe_dtype it is, or MOE_DTYPE_DEFAULT for a type the layer does not read.
 * MOE_ERROR_INVALID_ARGUMENT for an index out of range. */
#define MOE_MODEL_TENSOR_MAX_DIMS 8
typedef struct moe_model_tensor_info {
    size_t struct_size; /* sizeof(moe_model_tensor_info) */
    char name[256];     /* truncated if longer (no format moe reads has such names in practice) */
    char type[16];
    moe_dtype dtype;
    int n_dims;
    int64_t shape[MOE_MODEL_TENSOR_MAX_DIMS]; /* outermost first (numpy order; GGUF's ne reversed) */
    uint64_t bytes;
    int file; /* which of the model's files holds it (0 = the first) */
} moe_model_tensor_info;

MOE_API moe_status moe_model_get_tensor_info(const moe_model *model, int64_t index,
                                             moe_model_tensor_info *info);
/* 1 if layer `layer` (a Switch decoder block when `decoder` is nonzero) has an MoE block,
 * 0 if it is dense or out of range. */
MOE_API int moe_model_layer_is_moe(const moe_model *model, int64_t layer, int decoder);

typedef struct moe_model_layer_options {
    size_t struct_size;            /* sizeof(moe_model_layer_options) */
    int64_t max_tokens;            /* the layer's token budget; 0 = 1024 */
    moe_drop_policy drop_policy;   /* Switch: what a token past capacity gives; default ZERO */
    int decoder;                   /* Switch: nonzero = decoder block N instead of encoder */
    moe_dtype weight_dtype;        /* storage of the routed experts; DEFAULT = the checkpoint's
                                      own dtype (a BF16 model stays BF16) */
    moe_dtype shared_weight_dtype; /* storage of the shared expert(s); DEFAULT = the checkpoint's */
    moe_dtype activation_dtype;    /* (0.3.0) moe_layer_desc.activation_dtype; DEFAULT = F32 */
} moe_model_layer_options;

/* The layer desc of layer `layer`'s MoE block, after checking that every tensor it needs is
 * present with the right shape and a supported dtype. `options` may be NULL (defaults).
 * out_desc is an output struct: set its struct_size before the call (its other fields are
 * written, up to that size). A gpt-oss block into a desc older than 0.7.0, which cannot hold its
 * biases and activation, is MOE_ERROR_UNSUPPORTED. */
MOE_API moe_status moe_model_layer_desc(const moe_model *model, int64_t layer,
                                        const moe_model_layer_options *options, moe_layer_desc *out_desc);
/* Creates a layer on `context` from layer `layer`'s MoE block (as moe_layer_create does from
 * host arrays). */
MOE_API moe_status moe_model_create_layer(moe_context *context, const moe_model *model, int64_t layer,
                                          const moe_model_layer_options *options, moe_layer **out_layer);
/* (0.8.0) The same with the routed experts placed on several contexts (moe_layer_create_placed):
 * each context uploads only its own experts. */
MOE_API moe_status moe_model_create_layer_placed(const moe_placement *placement, const moe_model *model,
                                                 int64_t layer, const moe_model_layer_options *options,
                                                 moe_layer **out_layer);
/* (0.10.0) One rank's part of an expert-parallel layer (moe_layer_create_ep) from a checkpoint:
 * the router, shared expert and small vectors, and only the routed experts moe_ep_partition gives
 * this rank — the other experts' bytes in the files are never read (the files stay mapped; their
 * pages are untouched). A collective call, as moe_layer_create_ep; the transport is taken. */
MOE_API moe_status moe_model_create_layer_ep(moe_context *context, const moe_ep_transport *transport,
                                             const moe_model *model, int64_t layer,
                                             const moe_model_layer_options *options, moe_layer **out_layer);

/* ---------------------------------------------------------------------------------------
 * The scalar reference: the same forward written for clarity, accumulating in double, on
 * the host. Slow; it is the oracle every backend is tested against. Needs no context.
 * ------------------------------------------------------------------------------------- */
MOE_API moe_status moe_reference_forward(const moe_layer_desc *desc, const moe_layer_weights *weights,
                                         int64_t n_tokens, const float *x, float *y,
                                         moe_forward_stats *stats);

/* ---------------------------------------------------------------------------------------
 * The on-disk cache of the GPU backends (Vulkan pipeline caches, OpenCL program binaries):
 * $MOE_CACHE_DIR, else $XDG_CACHE_HOME/moe, else ~/.cache/moe. Optional: a file that cannot be
 * read or written is a miss. Bounded: after each write the oldest entries are removed until
 * moe's entries take at most MOE_CACHE_SIZE_MB MiB (default 256); other files are untouched.
 * ------------------------------------------------------------------------------------- */
typedef struct moe_cache_info {
    size_t struct_size;   /* sizeof(moe_cache_info) */
    char path[1024];      /* the cache directory ("" when there is none: no HOME, no variable) */
    uint64_t files;       /* moe's entries in it (vulkan-*.cache, opencl-*.bin) */
    uint64_t bytes;       /* their size */
    uint64_t limit_bytes; /* the bound kept after each write */
} moe_cache_info;

MOE_API moe_status moe_get_cache_info(moe_cache_info *info);

/* ---------------------------------------------------------------------------------------
 * Testing hook: allocation-failure injection. Every allocation the library makes — host
 * memory (its own and cJSON's), device memory and buffers, pipelines, programs, kernels,
 * threads — passes one counted point. After moe_test_inject_alloc_failure(n) with n > 0,
 * the n-th point from then on fails once, as if the system were out of memory; the call that
 * hit it returns MOE_ERROR_OUT_OF_MEMORY or MOE_ERROR_OUT_OF_DEVICE_MEMORY with a message and
 * leaves the caller's outputs untouched. n < 0 only counts, n = 0 turns injection off (the
 * default; then the hook costs one relaxed atomic load per allocation). Returns the number
 * of points counted since the previous call, so a test can count an operation's points and
 * then fail each in turn. Process-wide: meant for tests that run one operation at a time.
 * (0.4.0) Built only with the tests (or the fuzzer): a release build (MOE_BUILD_TESTS=OFF) has no
 * hook at all — allocations cost nothing more — and this returns -1 and injects nothing.
 * ------------------------------------------------------------------------------------- */
MOE_API int64_t moe_test_inject_alloc_failure(int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* MOE_H */
