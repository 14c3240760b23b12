/*
 * cl_device.c — the OpenCL backend's platforms, devices and context: enumeration through the
 * ICD loader (every device of every platform, numbered in the loader's order, listed once per
 * process under a lock that also covers device-info queries and context creation), device
 * info (with the features a weight format's kernels could use, and those moe uses), limits →
 * kernel sizes, the cl_context and its one in-order command queue (with profiling where the
 * device has it), error names, and the backend's ops table.
 *
 * MOE_CL_INJECT=oom|lost|build makes buffer allocations fail with
 * CL_MEM_OBJECT_ALLOCATION_FAILURE / the next wait report CL_OUT_OF_RESOURCES (a lost
 * device) / program builds fail with a compiler error, so those paths can be tested.
 */
#define _POSIX_C_SOURCE 200809L
#include "../alloc.h"
#include "cl_internal.h"

#include "../platform/thread.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors -------------------------------------------------------------------------------- */

const char *moe_cl_error_name(cl_int err)
{
    switch (err) {
/* clang-format off */
#define N(x) case x: return #x;
        N(CL_SUCCESS)
        N(CL_DEVICE_NOT_FOUND)
        N(CL_DEVICE_NOT_AVAILABLE)
        N(CL_COMPILER_NOT_AVAILABLE)
        N(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        N(CL_OUT_OF_RESOURCES)
        N(CL_OUT_OF_HOST_MEMORY)
        N(CL_MEM_COPY_OVERLAP)
        N(CL_BUILD_PROGRAM_FAILURE)
        N(CL_MAP_FAILURE)
        N(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        N(CL_COMPILE_PROGRAM_FAILURE)
        N(CL_LINKER_NOT_AVAILABLE)
        N(CL_LINK_PROGRAM_FAILURE)
        N(CL_INVALID_VALUE)
        N(CL_INVALID_PLATFORM)
        N(CL_INVALID_DEVICE)
        N(CL_INVALID_CONTEXT)
        N(CL_INVALID_QUEUE_PROPERTIES)
        N(CL_INVALID_COMMAND_QUEUE)
        N(CL_INVALID_MEM_OBJECT)
        N(CL_INVALID_BINARY)
        N(CL_INVALID_BUILD_OPTIONS)
        N(CL_INVALID_PROGRAM)
        N(CL_INVALID_PROGRAM_EXECUTABLE)
        N(CL_INVALID_KERNEL_NAME)
        N(CL_INVALID_KERNEL_DEFINITION)
        N(CL_INVALID_KERNEL)
        N(CL_INVALID_ARG_INDEX)
        N(CL_INVALID_ARG_VALUE)
        N(CL_INVALID_ARG_SIZE)
        N(CL_INVALID_KERNEL_ARGS)
        N(CL_INVALID_WORK_DIMENSION)
        N(CL_INVALID_WORK_GROUP_SIZE)
        N(CL_INVALID_WORK_ITEM_SIZE)
        N(CL_INVALID_GLOBAL_OFFSET)
        N(CL_INVALID_EVENT_WAIT_LIST)
        N(CL_INVALID_EVENT)
        N(CL_INVALID_OPERATION)
        N(CL_INVALID_BUFFER_SIZE)
        N(CL_INVALID_GLOBAL_WORK_SIZE)
        N(CL_INVALID_PROPERTY)
        N(CL_INVALID_COMPILER_OPTIONS)
        N(CL_INVALID_LINKER_OPTIONS)
        N(CL_PROFILING_INFO_NOT_AVAILABLE)
        N(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        N(CL_INVALID_DEVICE_TYPE)
        N(CL_INVALID_HOST_PTR)
#undef N
        /* clang-format on */
    case -1001:
        return "CL_PLATFORM_NOT_FOUND_KHR";
    default:
        return "cl_int (unnamed)";
    }
}

moe_status moe_cl_fail(moe_cl_backend *b, cl_int err, const char *call)
{
    moe_status st = MOE_ERROR_BACKEND;
    if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE) st = MOE_ERROR_OUT_OF_DEVICE_MEMORY;
    if (err == CL_OUT_OF_HOST_MEMORY) st = MOE_ERROR_OUT_OF_MEMORY;
    return moe_fail(b ? b->base.ctx : NULL, st, "opencl: %s failed: %s (%d)", call, moe_cl_error_name(err),
                    (int)err);
}

moe_status moe_cl_fail_lost(moe_cl_backend *b, cl_int err, const char *call)
{
    if (b) b->lost = true;
    return moe_fail(b ? b->base.ctx : NULL, MOE_ERROR_DEVICE_LOST,
                    "opencl: %s failed: %s (%d); the device is lost", call, moe_cl_error_name(err), (int)err);
}

/* ---- enumeration --------------------------------------------------------------------------- */

#define MAX_PLATFORMS 16
#define MAX_DEVICES   64
#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001 /* cl_khr_icd: the loader found no platform */
#endif

/* The process's devices, enumerated once under g_lock. A driver's first enumeration builds
 * its global state and is not thread-safe everywhere (PoCL 3.1 crashed, or returned no
 * platform, when several threads made the process's first clGetPlatformIDs at once), so the
 * enumeration, every device-info query and the creation of a context and its queue — all
 * of which may touch that state — run under the lock. A success (no platform included) is
 * kept; a failure is not, so the next call enumerates again. */
static moe_mutex g_lock = MOE_MUTEX_INIT;
static bool g_listed;
static int g_n_devices;
static cl_platform_id g_plat_of[MAX_DEVICES];
static cl_device_id g_devs[MAX_DEVICES];

/* With g_lock held: lists every device of every platform, in the loader's order, unless
 * done already. CL_PLATFORM_NOT_FOUND_KHR (no ICD, no platform) is zero devices; any other
 * error is returned with the failing call's name in *call. The platform list is the driver's
 * process-wide state, so its first creation is an allocation point (moe.h). */
static cl_int list_devices_locked(const char **call)
{
    if (g_listed) return CL_SUCCESS;
#if defined(_WIN32)
    /* OpenCL.dll is delay-loaded (opencl.cmake): a call into it when it is missing would raise
     * an exception, so it is loaded here first, from System32 where the ICD loader lives (the
     * delay-load helper then finds it loaded); none there is zero devices. */
    if (!LoadLibraryExA("OpenCL.dll", NULL, LOAD_LIBRARY_SEARCH_SYSTEM32)) {
        g_n_devices = 0;
        g_listed = true;
        return CL_SUCCESS;
    }
#endif
    cl_uint np = 0;
    cl_platform_id plats[MAX_PLATFORMS];
    cl_int err = moe_alloc_injected() ? CL_OUT_OF_HOST_MEMORY : clGetPlatformIDs(MAX_PLATFORMS, plats, &np);
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && np == 0)) {
        g_n_devices = 0;
        g_listed = true;
        return CL_SUCCESS;
    }
    if (err != CL_SUCCESS) {
        *call = "clGetPlatformIDs";
        return err;
    }
    if (np > MAX_PLATFORMS) np = MAX_PLATFORMS;
    int n = 0;
    for (cl_uint p = 0; p < np && n < MAX_DEVICES; p++) {
        cl_uint nd = 0;
        err = clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, (cl_uint)(MAX_DEVICES - n), g_devs + n, &nd);
        if (err == CL_DEVICE_NOT_FOUND) continue; /* a platform without devices */
        if (err != CL_SUCCESS) {
            *call = "clGetDeviceIDs";
            return err;
        }
        if (nd > (cl_uint)(MAX_DEVICES - n)) nd = (cl_uint)(MAX_DEVICES - n);
        for (cl_uint d = 0; d < nd; d++) g_plat_of[n + (int)d] = plats[p];
        n += (int)nd;
    }
    g_n_devices = n;
    g_listed = true;
    return CL_SUCCESS;
}

static moe_status moe_cl_device_count(int *count)
{
    const char *call = NULL;
    moe_mutex_lock(&g_lock);
    const cl_int err = list_devices_locked(&call);
    const int n = g_n_devices;
    moe_mutex_unlock(&g_lock);
    if (err != CL_SUCCESS) return moe_cl_fail(NULL, err, call); /* a driver error, not "no device" */
    *count = n;
    return MOE_OK;
}

static void dev_string(cl_device_id d, cl_device_info what, char *out, size_t size)
{
    out[0] = '\0';
    if (clGetDeviceInfo(d, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
    out[size - 1] = '\0';
}

static void plat_string(cl_platform_id p, cl_platform_info what, char *out, size_t size)
{
    out[0] = '\0';
    if (clGetPlatformInfo(p, what, size, out, NULL) != CL_SUCCESS) out[0] = '\0';
    out[size - 1] = '\0';
}

/* With g_lock held (device-info queries). */
/* `text` into out[size], ending in "..." when it does not fit. */
static void fit_text(char *out, size_t size, const char *text)
{
    if (snprintf(out, size, "%s", text) >= (int)size && size > 4) memcpy(out + size - 4, "...", 4);
}

/* Whether the space-separated extension list names `name` as a whole word. */
static bool has_extension(const char *list, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return true;
    return false;
}

/* What the device offers that a weight format's kernels could use (moe.h's MOE_FEATURE_* bits),
 * from its extension list and OpenCL C version. With g_lock held.
 *   FLOAT16          cl_khr_fp16
 *   INT_DOT          cl_khr_integer_dot_product
 *   SUBGROUP_REDUCE  cl_khr_subgroups' reductions, with OpenCL C 2.0 or later to build the
 *                    variant with (-cl-std=CL2.0; the extension's functions are 2.0 built-ins):
 *                    what picks the decode kernel's subgroup variant (b->subgroups)
 * STORAGE_16BIT / STORAGE_8BIT are never set: byte and short loads and stores are core OpenCL C
 * (cl_khr_byte_addressable_store is core since 1.1, and vload_half needs no extension), so
 * there is no optional feature to report — those bits name Vulkan's storage features. */
static uint32_t device_features(cl_device_id d)
{
    char ext[8192], cver[128];
    dev_string(d, CL_DEVICE_EXTENSIONS, ext, sizeof ext);
    dev_string(d, CL_DEVICE_OPENCL_C_VERSION, cver, sizeof cver); /* "OpenCL C <major>.<minor> ..." */
    int major = 0, minor = 0;
    if (sscanf(cver, "OpenCL C %d.%d", &major, &minor) != 2) major = 0;
    uint32_t f = 0;
    if (has_extension(ext, "cl_khr_fp16")) f |= MOE_FEATURE_FLOAT16;
    if (has_extension(ext, "cl_khr_integer_dot_product")) f |= MOE_FEATURE_INT_DOT;
    if (has_extension(ext, "cl_khr_subgroups") && major >= 2) f |= MOE_FEATURE_SUBGROUP_REDUCE;
    return f;
}

/* The subset of a device's features moe's kernels use: sub-group reductions
 * (sub_group_reduce_add), by the decode (matvec) kernel's subgroup variant where it is picked
 * (`subgroup_variant`: the device has SUBGROUP_REDUCE and MOE_CL_DISABLE_SUBGROUPS is not set).
 * Nothing else: the kernels read every weight format as 32-bit words and halves (vload_half) and
 * compute in float32, so float16 arithmetic and integer dot products are reported but not used.
 * The one place that decides, for moe_device_get_info and a context's info alike. */
static uint32_t features_used(bool subgroup_variant)
{
    return subgroup_variant ? (uint32_t)MOE_FEATURE_SUBGROUP_REDUCE : 0u;
}

static void fill_info_locked(cl_platform_id plat, cl_device_id d, int index, moe_device_info *info)
{
    *info = (moe_device_info){.struct_size = sizeof *info, .backend = MOE_BACKEND_OPENCL, .index = index};
    cl_device_type type = 0;
    cl_bool unified = CL_FALSE;
    clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(d, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    if (type & CL_DEVICE_TYPE_CPU)
        info->type = MOE_DEVICE_TYPE_CPU;
    else if (type & CL_DEVICE_TYPE_GPU)
        info->type = unified ? MOE_DEVICE_TYPE_INTEGRATED_GPU : MOE_DEVICE_TYPE_DISCRETE_GPU;
    else
        info->type = MOE_DEVICE_TYPE_OTHER;
    dev_string(d, CL_DEVICE_NAME, info->name, sizeof info->name);
    dev_string(d, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
    char pname[128], drv[128], ver[256];
    plat_string(plat, CL_PLATFORM_NAME, pname, sizeof pname);
    dev_string(d, CL_DRIVER_VERSION, drv, sizeof drv);
    /* CL_DEVICE_VERSION is "OpenCL <major.minor> <vendor-specific information>": the API
     * version goes to api_version, the vendor's part (PoCL: its host triple and CPU) after the
     * driver, and a text too long for its field ends in "..." rather than being cut unseen. */
    dev_string(d, CL_DEVICE_VERSION, ver, sizeof ver);
    const char *space = strchr(ver, ' ');
    space = space ? strchr(space + 1, ' ') : NULL;
    const char *vendor_part = space ? space + 1 : "";
    snprintf(info->api_version, sizeof info->api_version, "%.*s", space ? (int)(space - ver) : 63, ver);
    char driver[512];
    snprintf(driver, sizeof driver, "%s, driver %s%s%s%s", pname, drv, *vendor_part ? " (" : "", vendor_part,
             *vendor_part ? ")" : "");
    fit_text(info->driver, sizeof info->driver, driver);
    cl_ulong mem = 0, local = 0;
    cl_uint cu = 0;
    size_t wg = 0;
    clGetDeviceInfo(d, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    info->memory_bytes = mem;
    info->shared_memory_bytes = local;
    info->compute_units = (int)cu;
    info->max_workgroup_size = wg;
    info->subgroup_size = 0; /* needs a built kernel and OpenCL 2.1 subgroups; not asked */
    /* features_used is what a new context would use with no test switch set: the subgroup
     * variant wherever the device has sub-group reductions. A context's own info is refilled
     * after MOE_CL_DISABLE_SUBGROUPS (moe_cl_create), so moe_context_get_device_info says what
     * that context really runs. */
    info->features = device_features(d);
    info->features_used = features_used((info->features & MOE_FEATURE_SUBGROUP_REDUCE) != 0);
    info->fp16 = (info->features & MOE_FEATURE_FLOAT16) != 0;
}

static moe_status moe_cl_device_info(int index, moe_device_info *info)
{
    const char *call = NULL;
    moe_mutex_lock(&g_lock);
    const cl_int err = list_devices_locked(&call);
    const int n = g_n_devices;
    if (err == CL_SUCCESS && index >= 0 && index < n)
        fill_info_locked(g_plat_of[index], g_devs[index], index, info);
    moe_mutex_unlock(&g_lock);
    if (err != CL_SUCCESS) return moe_cl_fail(NULL, err, call);
    if (index < 0 || index >= n)
        return moe_fail(NULL, MOE_ERROR_BACKEND_UNAVAILABLE, "opencl: no device %d (%d found)", index, n);
    return MOE_OK;
}

/* ---- context ------------------------------------------------------------------------------- */

static uint32_t pow2_floor(size_t v)
{
    uint32_t p = 1;
    while ((size_t)p * 2 <= v && p < (1u << 30)) p *= 2;
    return p;
}

static uint32_t env_u32(const char *name, uint32_t fallback)
{
    const char *s = getenv(name);
    return s && *s ? (uint32_t)atoi(s) : fallback;
}

/* Kernel sizes from the device's limits (never assumed). GEMM on GPUs: 64×64 tiles through
 * local memory, BK = 16, 256 work-items of 4×4 accumulators (64 of 8×8 where fewer
 * work-items are allowed). On CPU-type devices (PoCL) a work-group runs as loops on one core,
 * so few work-items with many accumulators win: 32×32 tiles of 16 work-items of 8×8,
 * measured on PoCL at T=128, d=512, f=1024, E=8, k=2: 0.30 s per forward, against 1.26 s for
 * the GPU sizes, 0.84 s for 32×32 of 4×4 and 2.3 s for 128×128 of 8×8.
 * MOE_CL_GEMM_BM / _TM / _BK override, for experiments. b->max_wg and b->local_mem are read
 * in open_device_locked. */
#define MATVEC_CPU_WG   8
#define MATVEC_CPU_COLS 16

static moe_status choose_sizes(moe_cl_backend *b)
{
    b->wg_big = pow2_floor(b->max_wg < 256 ? b->max_wg : 256);
    b->wg_small = b->wg_big < 64 ? b->wg_big : 64;
    const bool cpu_device = b->base.info.type == MOE_DEVICE_TYPE_CPU;
    b->gemm_bm = b->gemm_bn = env_u32("MOE_CL_GEMM_BM", cpu_device ? 32 : 64);
    b->gemm_bk = env_u32("MOE_CL_GEMM_BK", 16);
    b->gemm_tm = b->gemm_tn = env_u32("MOE_CL_GEMM_TM", cpu_device || b->max_wg < 256 ? 8 : 4);
    if (b->gemm_tm == 0 || b->gemm_bk == 0 || b->gemm_bm == 0 || b->gemm_bm % b->gemm_tm != 0)
        return moe_fail(b->base.ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "opencl: bad GEMM tile override (BM %u, TM %u, BK %u)", b->gemm_bm, b->gemm_tm,
                        b->gemm_bk);
    const size_t threads = (size_t)(b->gemm_bm / b->gemm_tm) * (b->gemm_bn / b->gemm_tn);
    const cl_ulong local = sizeof(float) * (cl_ulong)b->gemm_bk * (b->gemm_bm + 2 * b->gemm_bn);
    if (threads > b->max_wg || local > b->local_mem)
        return moe_fail(
            b->base.ctx, MOE_ERROR_UNSUPPORTED,
            "opencl: the GEMM tile needs %zu work-items and %llu bytes of local memory; the device "
            "allows %zu and %llu",
            threads, (unsigned long long)local, b->max_wg, (unsigned long long)b->local_mem);
    /* The decode kernel (matvec.cl). GPUs: 64 work-items split K, 4 columns a work-group (as on
     * Vulkan). CPU-type devices: a work-group is a loop on one core, vectorised across
     * work-items; MATVEC_CPU_WG × MATVEC_CPU_COLS measured best on PoCL at the olmoe-1b-7b
     * shape, T=1. It replaces the GEMM while experts get at most 4 rows each (moe_kuse_matvec).
     * MOE_CL_MATVEC_WG / _COLS / _ROWS override (ROWS 0: never; a large value: always). */
    b->matvec_wg = env_u32("MOE_CL_MATVEC_WG", cpu_device ? MATVEC_CPU_WG : b->wg_small);
    b->matvec_cols = env_u32("MOE_CL_MATVEC_COLS", cpu_device ? MATVEC_CPU_COLS : 4);
    const char *rows = getenv("MOE_CL_MATVEC_ROWS");
    b->matvec_max_rows = rows && *rows ? strtoll(rows, NULL, 10) : 4;
    const cl_ulong matvec_local = sizeof(float) * 2 * (cl_ulong)b->matvec_cols * b->matvec_wg;
    if (b->matvec_wg == 0 || (b->matvec_wg & (b->matvec_wg - 1)) != 0 || b->matvec_wg > b->max_wg ||
        b->matvec_cols == 0 || b->matvec_max_rows < 0 || matvec_local > b->local_mem)
        return moe_fail(b->base.ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "opencl: bad decode kernel shape (%u work-items, a power of two up to %zu; %u "
                        "columns; %lld rows; %llu bytes of local memory of %llu)",
                        b->matvec_wg, b->max_wg, b->matvec_cols, (long long)b->matvec_max_rows,
                        (unsigned long long)matvec_local, (unsigned long long)b->local_mem);
    return MOE_OK;
}

static void moe_cl_destroy(moe_backend *be);

/* With g_lock held: what the backend asks of its device (b->platform, b->device, numbered
 * `index` in the list, -1 when it is not in it), for an own or a borrowed device alike. */
static void query_device_locked(moe_cl_backend *b, int index)
{
    fill_info_locked(b->platform, b->device, index, &b->base.info);
    char pver[256], drv[128];
    plat_string(b->platform, CL_PLATFORM_VERSION, pver, sizeof pver);
    dev_string(b->device, CL_DRIVER_VERSION, drv, sizeof drv);
    snprintf(b->device_key, sizeof b->device_key, "%s|%s|%s|%s", b->base.info.name, b->base.info.api_version,
             drv, pver);
    size_t items[3] = {0, 0, 0};
    clGetDeviceInfo(b->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof b->max_wg, &b->max_wg, NULL);
    clGetDeviceInfo(b->device, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof items, items, NULL);
    clGetDeviceInfo(b->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof b->local_mem, &b->local_mem, NULL);
    if (items[0] && items[0] < b->max_wg) b->max_wg = items[0];
    cl_uint align_bits = 0;
    clGetDeviceInfo(b->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    b->base.alignment = align_bits / 8 > 16 ? align_bits / 8 : 16;
    b->subgroups = (b->base.info.features & MOE_FEATURE_SUBGROUP_REDUCE) != 0;
}

/* With g_lock held: device `index` of the list, and the cl_context and queue moe makes for it
 * (PoCL's first context creation sets up more of its global state). On failure returns the
 * error and the call's name; b is left for moe_cl_destroy. */
static cl_int open_device_locked(moe_cl_backend *b, int index, const char **call)
{
    b->platform = g_plat_of[index];
    b->device = g_devs[index];
    query_device_locked(b, index);
    cl_command_queue_properties qp = 0;
    clGetDeviceInfo(b->device, CL_DEVICE_QUEUE_PROPERTIES, sizeof qp, &qp, NULL);
    b->profiling = (qp & CL_QUEUE_PROFILING_ENABLE) != 0;

    cl_int err = CL_SUCCESS;
    const cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)b->platform, 0};
    b->context = MOE_CL_ALLOC_CALL(&err, CL_OUT_OF_HOST_MEMORY,
                                   clCreateContext(props, 1, &b->device, NULL, NULL, &err));
    if (err != CL_SUCCESS) {
        b->context = NULL;
        *call = "clCreateContext";
        return err;
    }
    /* clCreateCommandQueue is the 1.2 entry point (deprecated, still present, in 2.x/3.0). */
    b->queue = MOE_CL_ALLOC_CALL(
        &err, CL_OUT_OF_HOST_MEMORY,
        clCreateCommandQueue(b->context, b->device, b->profiling ? CL_QUEUE_PROFILING_ENABLE : 0, &err));
    if (err != CL_SUCCESS) {
        b->queue = NULL;
        *call = "clCreateCommandQueue";
    }
    return err;
}

/* The application's objects (moe_opencl.h), checked before anything is retained: the queue is
 * in-order and belongs to the context and the device. */
static moe_status check_borrowed(moe_context *ctx, const moe_opencl_device *d)
{
    size_t bytes; /* one version so far: the whole struct */
    const moe_status st = moe_abi_check(ctx, &moe_abi_opencl_device, d, &bytes);
    if (st != MOE_OK) return st;
    if (!d->context || !d->device || !d->queue)
        return moe_fail(ctx, MOE_ERROR_NULL_POINTER,
                        "moe_opencl_device: context, device and queue are required");
    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    cl_command_queue_properties qp = 0;
    cl_int err = clGetCommandQueueInfo(d->queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(d->queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL);
    if (err == CL_SUCCESS) err = clGetCommandQueueInfo(d->queue, CL_QUEUE_PROPERTIES, sizeof qp, &qp, NULL);
    if (err != CL_SUCCESS)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "moe_opencl_device.queue: clGetCommandQueueInfo failed: %s", moe_cl_error_name(err));
    if (qctx != d->context || qdev != d->device)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "moe_opencl_device.queue belongs to %s; it must be a queue of `context` on `device`",
                        qctx != d->context ? "another cl_context" : "another device");
    if (qp & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return moe_fail(ctx, MOE_ERROR_UNSUPPORTED,
                        "moe_opencl_device.queue is out-of-order; moe needs an in-order queue (its kernels' "
                        "order is their dependency)");
    return MOE_OK;
}

/* With g_lock held (the list, to give the device its index; device info): the application's
 * objects, retained. */
static cl_int borrow_device_locked(moe_cl_backend *b, const moe_opencl_device *d, const char **call)
{
    cl_int err = clGetDeviceInfo(d->device, CL_DEVICE_PLATFORM, sizeof b->platform, &b->platform, NULL);
    if (err != CL_SUCCESS) {
        *call = "clGetDeviceInfo(CL_DEVICE_PLATFORM)";
        return err;
    }
    int index = -1;
    if (list_devices_locked(call) == CL_SUCCESS)
        for (int i = 0; i < g_n_devices && index < 0; i++)
            if (g_devs[i] == d->device) index = i;
    b->device = d->device;
    query_device_locked(b, index);
    cl_command_queue_properties qp = 0;
    clGetCommandQueueInfo(d->queue, CL_QUEUE_PROPERTIES, sizeof qp, &qp, NULL);
    b->profiling = (qp & CL_QUEUE_PROFILING_ENABLE) != 0;
    /* Held from here: moe_cl_destroy lets go of each. */
    clRetainContext(d->context);
    b->context = d->context;
    clRetainCommandQueue(d->queue);
    b->queue = d->queue;
    clRetainDevice(d->device);
    b->borrowed_device = true;
    return CL_SUCCESS;
}

static moe_status moe_cl_create(moe_context *ctx, const moe_context_desc *desc, moe_backend **out)
{
    moe_cl_backend *b = moe_calloc(1, sizeof *b);
    if (!b) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "opencl: out of host memory");
    b->base = (moe_backend){.ops = &moe_opencl_backend_ops, .ctx = ctx};
    const char *inject = MOE_TEST_HOOKS ? getenv("MOE_CL_INJECT") : NULL; /* test hooks only */
    const bool inject_oom = inject && !strcmp(inject, "oom"); /* after the context's own buffers */
    b->inject_lost = inject && !strcmp(inject, "lost");
    b->inject_build = inject && !strcmp(inject, "build");

    /* Statuses and messages (and so the log callback) only after the lock is released. */
    const char *call = NULL;
    const moe_opencl_device *borrowed = desc->external_device;
    moe_status st = borrowed ? check_borrowed(ctx, borrowed) : MOE_OK;
    if (st != MOE_OK) {
        moe_free(b);
        return st;
    }
    moe_mutex_lock(&g_lock);
    cl_int err = borrowed ? CL_SUCCESS : list_devices_locked(&call);
    const int n = g_n_devices;
    const bool have = borrowed || (err == CL_SUCCESS && desc->device_index >= 0 && desc->device_index < n);
    if (borrowed)
        err = borrow_device_locked(b, borrowed, &call);
    else if (have)
        err = open_device_locked(b, desc->device_index, &call);
    moe_mutex_unlock(&g_lock);

    if (err != CL_SUCCESS)
        st = moe_cl_fail(b, err, call);
    else if (!have)
        st = moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE, "opencl: no device %d (%d found)",
                      desc->device_index, n);
    if (st == MOE_OK && (b->base.alignment & (b->base.alignment - 1)) != 0)
        st = moe_fail(ctx, MOE_ERROR_UNSUPPORTED, "opencl: base address alignment %zu is not a power of two",
                      b->base.alignment);
    /* MOE_CL_DISABLE_SUBGROUPS=1 forces the plain decode kernel where the device has subgroups. */
    const char *no_sub = getenv("MOE_CL_DISABLE_SUBGROUPS");
    if (no_sub && *no_sub && strcmp(no_sub, "0") != 0) b->subgroups = false;
    b->base.info.features_used = features_used(b->subgroups); /* this context's own view */
    if (st == MOE_OK) st = choose_sizes(b);
    b->base.row_tile = b->gemm_bm;
    if (st == MOE_OK) st = moe_cl_memory_init(b);
    b->inject_oom = inject_oom;
    if (st == MOE_OK) st = moe_cl_programs_init(b);
    if (st != MOE_OK) {
        moe_cl_destroy(&b->base);
        return st;
    }
    *out = &b->base;
    return MOE_OK;
}

static void moe_cl_destroy(moe_backend *be)
{
    if (!be) return;
    moe_cl_backend *b = moe_clb(be);
    if (b->queue) clFinish(b->queue);
    for (int i = 0; i < b->n_events; i++) clReleaseEvent(b->events[i]);
    moe_staged_reads_free(&b->outs);
    moe_cl_programs_release(b);
    moe_cl_memory_release(b);
    if (b->queue) clReleaseCommandQueue(b->queue);
    if (b->context) clReleaseContext(b->context);
    if (b->borrowed_device) clReleaseDevice(b->device);
    moe_free(b);
}

const moe_backend_ops moe_opencl_backend_ops = {
    .kind = MOE_BACKEND_OPENCL,
    .name = "opencl",
    .device_count = moe_cl_device_count,
    .device_info = moe_cl_device_info,
    .create = moe_cl_create,
    .destroy = moe_cl_destroy,
    .buffer_alloc = moe_cl_buffer_alloc,
    .buffer_free = moe_cl_buffer_free,
    .buffer_write = moe_cl_buffer_write,
    .buffer_read = moe_cl_buffer_read,
    .stage_in = moe_cl_buffer_write,
    .stage_out = moe_cl_stage_out,
    .weight_bytes = moe_cl_weight_bytes,
    .weight_upload = moe_cl_weight_upload,
    .begin = moe_cl_begin,
    .route = moe_cl_route,
    .plan = moe_cl_plan,
    .ffn = moe_cl_ffn,
    .combine = moe_cl_combine,
    .stats = moe_cl_stats,
    .submit = moe_cl_submit,
    .wait = moe_cl_wait,
};
