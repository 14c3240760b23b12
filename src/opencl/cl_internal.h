/*
 * cl_internal.h — what the OpenCL backend's files share: the backend state, buffers (one
 * cl_mem per arena allocation), the table of built programs, and helpers that turn a failing
 * cl_int into a moe_status with a message naming the call.
 *
 * The backend uses the OpenCL 1.2 API only (CL_TARGET_OPENCL_VERSION 120), through the ICD
 * loader, so it runs on every OpenCL 1.2+ driver; a machine without a platform reports zero
 * devices. Devices are numbered across platforms: every device of platform 0, then of
 * platform 1, and so on, in the loader's order.
 */
#ifndef MOE_CL_INTERNAL_H
#define MOE_CL_INTERNAL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include "../alloc.h"
#include "../internal.h"
#include "interface.h" /* kernels/: moe_kargs, how a launch's arguments are described */

#include <CL/cl.h>

#include "moe_opencl.h"

/* `call`, a native object creation reporting through `err` (a cl_int *), or NULL with
 * *err = `fail` (its out-of-memory code) when moe_alloc_injected() makes this allocation
 * point fail. */
#define MOE_CL_ALLOC_CALL(err, fail, call) (moe_alloc_injected() ? (*(err) = (fail), NULL) : (call))

/* ---- kernels (generated at build time from opencl/<name>.cl) ------------------------------------ */

/* A kernel's parameters (-D options), arguments and work-group size come from its description
 * in kernels/<kernel>.h; every launch passes that kernel's moe_kargs. */

typedef enum moe_cl_kernel_id {
    MOE_CL_K_GEMM,
    MOE_CL_K_MATVEC,
    MOE_CL_K_MATVEC_SUBGROUP, /* needs cl_khr_subgroups (OpenCL C 2.0) */
    MOE_CL_K_SELECT,
    MOE_CL_K_PLAN_COUNT,
    MOE_CL_K_PLAN_SCAN,
    MOE_CL_K_PLAN_SCATTER,
    MOE_CL_K_COMBINE,
    MOE_CL_K_STATS,
    MOE_CL_K_COUNT
} moe_cl_kernel_id;

typedef struct moe_cl_source {
    const char *text;      /* the .cl file, its includes (common.cl, kernels/<kernel>.h) inlined */
    const char *file;      /* "gemm.cl" */
    const char *kernel;    /* the __kernel function's name */
    const char *interface; /* the description it implements (moe_kargs.kernel) */
    const char *variant;   /* build options of this variant of the file, before the launch's own
                              ("" for most; the subgroup decode kernel's -DUSE_SUBGROUP=1 and
                              -cl-std=CL2.0), so the same text builds a program per variant */
} moe_cl_source;

extern const moe_cl_source moe_cl_sources[MOE_CL_K_COUNT];

/* ---- memory -------------------------------------------------------------------------------- */

struct moe_backend_buffer {
    cl_mem mem;
    size_t bytes;
};

/* ---- programs ------------------------------------------------------------------------------ */

#define MOE_CL_OPTIONS_MAX 512
#define MOE_CL_MAX_EVENTS  64

typedef struct moe_cl_program {
    moe_cl_kernel_id id;
    char options[MOE_CL_OPTIONS_MAX];
    cl_program program;
    cl_kernel kernel;
} moe_cl_program;

/* ---- the backend ---------------------------------------------------------------------------- */

typedef struct moe_cl_backend {
    moe_backend base;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;     /* the backend's own, or the application's (moe_opencl.h), retained */
    cl_command_queue queue; /* likewise */
    bool borrowed_device;   /* the application's device, retained (clRetainDevice) */
    bool profiling;         /* the queue records profiling events */

    /* limits the kernels are sized from */
    size_t max_wg;             /* min(CL_DEVICE_MAX_WORK_GROUP_SIZE, max work-item size [0]) */
    cl_ulong local_mem;        /* CL_DEVICE_LOCAL_MEM_SIZE */
    uint32_t wg_small, wg_big; /* work-group sizes: per-item kernels, reductions */
    uint32_t gemm_bm, gemm_bn, gemm_bk, gemm_tm, gemm_tn;
    uint32_t matvec_wg, matvec_cols; /* the decode kernel's shape (kernels/matvec.h) */
    int64_t matvec_max_rows;         /* its choice over the GEMM (moe_kuse_matvec); 0 = never */
    bool subgroups;                  /* cl_khr_subgroups with OpenCL C 2.0+: the subgroup variant */

    /* program build and cache */
    char cache_dir[768];   /* "" = no disk cache */
    char device_key[1024]; /* device name, driver and platform versions */
    moe_cl_program *programs;
    size_t n_programs, cap_programs;
    uint64_t builds_from_source, builds_from_cache;
    double build_ms_source, build_ms_cache;

    /* the forward being enqueued, and those submitted since the last wait */
    bool recording;
    bool pending;                       /* submitted forwards not yet waited for */
    moe_status record_status;           /* first failure while enqueueing a forward */
    cl_event events[MOE_CL_MAX_EVENTS]; /* profiling events of the pending forwards' kernels (the
                                           first MOE_CL_MAX_EVENTS of them) */
    moe_cl_kernel_id event_kernel[MOE_CL_MAX_EVENTS];
    int n_events;
    int forward_first_event; /* the last forward's first event */
    double wall_t0;
    moe_staged_reads outs; /* stage_out's reads, done by the wait (blocking reads after clFinish) */
    size_t outs_mark;      /* outs.n when the forward being enqueued began */

    unsigned char *staging; /* host staging for weight conversion */
    size_t staging_size;    /* bytes */
    cl_mem dummy;           /* bound where a buffer is absent */

    bool lost;        /* an execution error was seen: the context is unusable */
    int inject_oom;   /* MOE_CL_INJECT=oom: buffer allocations fail */
    int inject_lost;  /* MOE_CL_INJECT=lost: the next wait reports a failure */
    int inject_build; /* MOE_CL_INJECT=build: program builds fail */
} moe_cl_backend;

static inline moe_cl_backend *moe_clb(moe_backend *be)
{
    return (moe_cl_backend *)be;
}

/* cl_int → status + message "opencl: <call> failed: <CL_ERROR> (<n>)". CL_OUT_OF_HOST_MEMORY
 * → OUT_OF_MEMORY, CL_MEM_OBJECT_ALLOCATION_FAILURE → OUT_OF_DEVICE_MEMORY, anything else
 * → BACKEND (callers waiting on the queue use moe_cl_fail_lost). */
moe_status moe_cl_fail(moe_cl_backend *b, cl_int err, const char *call);
/* An error while the queue ran (kernels failed, CL_OUT_OF_RESOURCES at clFinish, …): the
 * device is treated as lost, MOE_ERROR_DEVICE_LOST, and the context stays unusable. */
moe_status moe_cl_fail_lost(moe_cl_backend *b, cl_int err, const char *call);
const char *moe_cl_error_name(cl_int err);
#define MOE_CL_TRY(b, expr)                                                                                  \
    do {                                                                                                     \
        const cl_int e_ = (expr);                                                                            \
        if (e_ != CL_SUCCESS) return moe_cl_fail((b), e_, #expr);                                            \
    } while (0)

/* cl_memory.c */
moe_status moe_cl_memory_init(moe_cl_backend *b);
void moe_cl_memory_release(moe_cl_backend *b);
moe_status moe_cl_buffer_alloc(moe_backend *be, size_t bytes, moe_backend_buffer_usage usage,
                               moe_backend_buffer **out);
void moe_cl_buffer_free(moe_backend *be, moe_backend_buffer *buf);
moe_status moe_cl_buffer_write(moe_backend *be, moe_addr dst, const void *src, size_t bytes);
moe_status moe_cl_buffer_read(moe_backend *be, moe_addr src, void *dst, size_t bytes);
moe_status moe_cl_stage_out(moe_backend *be, moe_addr src, void *dst, size_t bytes);
size_t moe_cl_weight_bytes(moe_backend *be, const moe_weight_src *src);
moe_status moe_cl_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *src);

/* cl_program.c */
moe_status moe_cl_programs_init(moe_cl_backend *b);
void moe_cl_programs_release(moe_cl_backend *b);
/* The kernel of `id` built with `options` (on first use: from the disk cache if present,
 * else compiled and saved; then kept for the context). */
moe_status moe_cl_kernel_get(moe_cl_backend *b, moe_cl_kernel_id id, const char *options, cl_kernel *out);

/* cl_steps.c */
moe_status moe_cl_begin(moe_backend *be);
moe_status moe_cl_route(moe_backend *be, const moe_route_step *s);
moe_status moe_cl_plan(moe_backend *be, const moe_plan_step *s);
moe_status moe_cl_ffn(moe_backend *be, const moe_ffn_step *s);
moe_status moe_cl_combine(moe_backend *be, const moe_combine_step *s);
moe_status moe_cl_stats(moe_backend *be, const moe_stats_step *s);
moe_status moe_cl_submit(moe_backend *be);
moe_status moe_cl_wait(moe_backend *be);

/* cl_embed.c: moe_opencl_device's versions (abi.h), for its checks here and there. */
extern const moe_abi_struct moe_abi_opencl_device;

#endif /* MOE_CL_INTERNAL_H */
