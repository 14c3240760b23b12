/*
 * context.c — backend registry, device enumeration, context create/destroy, arena stats.
 *
 * AUTO tries Vulkan, then OpenCL, then the CPU, taking the first backend that is built and
 * reports a device — a GPU API's CPU-type device (lavapipe, PoCL) excepted, since the native
 * CPU backend does that work far faster; a backend with no driver reports zero devices rather
 * than failing. A driver that fails to enumerate is an error for an explicit request, and a
 * logged warning that AUTO passes by (the backends serialise their own enumeration).
 */
#include "alloc.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

const moe_backend_ops *moe_backend_ops_of(moe_backend_kind kind)
{
    switch (kind) {
    case MOE_BACKEND_CPU:
        return &moe_cpu_backend_ops;
#if MOE_HAVE_VULKAN
    case MOE_BACKEND_VULKAN:
        return &moe_vulkan_backend_ops;
#endif
#if MOE_HAVE_OPENCL
    case MOE_BACKEND_OPENCL:
        return &moe_opencl_backend_ops;
#endif
    default:
        return NULL;
    }
}

const char *moe_backend_name(moe_backend_kind kind)
{
    switch (kind) {
    case MOE_BACKEND_AUTO:
        return "auto";
    case MOE_BACKEND_CPU:
        return "cpu";
    case MOE_BACKEND_VULKAN:
        return "vulkan";
    case MOE_BACKEND_OPENCL:
        return "opencl";
    }
    return "unknown";
}

int moe_backend_is_built(moe_backend_kind kind)
{
    return moe_backend_ops_of(kind) != NULL;
}

moe_status moe_device_count(moe_backend_kind kind, int *count)
{
    moe_clear_error(NULL);
    if (!count) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "count is NULL");
    const moe_backend_ops *ops = moe_backend_ops_of(kind);
    if (!ops)
        return moe_fail(NULL, MOE_ERROR_BACKEND_UNAVAILABLE, "backend '%s' is not built into this library",
                        moe_backend_name(kind));
    return ops->device_count(count);
}

moe_status moe_device_get_info(moe_backend_kind kind, int index, moe_device_info *info)
{
    moe_clear_error(NULL);
    if (!info) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "info is NULL");
    size_t bytes;
    moe_status st = moe_abi_check(NULL, &moe_abi_device_info, info, &bytes);
    if (st != MOE_OK) return st;
    int count = 0;
    st = moe_device_count(kind, &count);
    if (st != MOE_OK) return st;
    if (index < 0 || index >= count)
        return moe_fail(NULL, MOE_ERROR_BACKEND_UNAVAILABLE, "backend '%s' has %d device(s); index %d",
                        moe_backend_name(kind), count, index);
    moe_device_info full = {.struct_size = sizeof full};
    st = moe_backend_ops_of(kind)->device_info(index, &full);
    return st == MOE_OK ? moe_abi_out(NULL, &moe_abi_device_info, info, &full) : st;
}

static moe_backend_kind env_backend(void)
{
    const char *s = getenv("MOE_BACKEND");
    if (!s) return MOE_BACKEND_AUTO;
    if (!strcmp(s, "cpu")) return MOE_BACKEND_CPU;
    if (!strcmp(s, "vulkan")) return MOE_BACKEND_VULKAN;
    if (!strcmp(s, "opencl")) return MOE_BACKEND_OPENCL;
    return MOE_BACKEND_AUTO;
}

static moe_status create_backend(moe_context *ctx, moe_backend_kind kind, const moe_context_desc *desc)
{
    const moe_backend_ops *ops = moe_backend_ops_of(kind);
    if (!ops)
        return moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE, "backend '%s' is not built into this library",
                        moe_backend_name(kind));
    int count = 0;
    moe_status st = ops->device_count(&count);
    if (st != MOE_OK) return moe_fail(ctx, st, "%s", moe_last_error()); /* a driver error, with its detail */
    if (desc->device_index < 0 || desc->device_index >= count)
        return moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE,
                        "backend '%s' has %d device(s); device_index %d is not one of them",
                        moe_backend_name(kind), count, desc->device_index);
    return ops->create(ctx, desc, &ctx->be);
}

moe_status moe_context_create(const moe_context_desc *desc_in, moe_context **out)
{
    moe_clear_error(NULL);
    if (!out) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "out_context is NULL");
    moe_context_desc desc = {.struct_size = sizeof desc};
    if (desc_in) {
        const moe_status ast = moe_abi_in(NULL, &moe_abi_context_desc, desc_in, &desc);
        if (ast != MOE_OK) return ast;
    }
    if ((unsigned)desc.backend > MOE_BACKEND_OPENCL)
        return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT, "unknown backend %d", (int)desc.backend);
    /* The same bound on every backend (the CPU backend uses it; the others ignore it). */
    moe_status vst = moe_validate_threads(NULL, desc.n_threads);
    if (vst != MOE_OK) return vst;
    if (desc.backend == MOE_BACKEND_AUTO) desc.backend = env_backend();

    moe_context *ctx = moe_calloc(1, sizeof *ctx);
    if (!ctx) return moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    ctx->log = desc.log;
    ctx->log_user_data = desc.log_user_data;
    ctx->log_level = desc.log_level;

    moe_status st;
    if (desc.backend != MOE_BACKEND_AUTO) {
        st = create_backend(ctx, desc.backend, &desc);
    } else {
        static const moe_backend_kind order[] = {MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL, MOE_BACKEND_CPU};
        st = MOE_ERROR_BACKEND_UNAVAILABLE;
        for (size_t i = 0; i < sizeof order / sizeof order[0] && st != MOE_OK; i++) {
            int count = 0;
            const moe_backend_ops *ops = moe_backend_ops_of(order[i]);
            if (!ops) continue;
            /* A driver that fails to enumerate (as opposed to having no device) is reported,
             * and AUTO moves on: the CPU backend is always there. */
            const moe_status cst = ops->device_count(&count);
            if (cst != MOE_OK) {
                moe_log(ctx, MOE_LOG_WARNING,
                        "auto: backend '%s' cannot list its devices (%s: %s); trying the next", ops->name,
                        moe_status_string(cst), moe_last_error());
                continue;
            }
            if (count <= desc.device_index) continue;
            /* A GPU API's CPU device (lavapipe, PoCL, SwiftShader) emulates on the CPU what
             * the native CPU backend does many times faster: AUTO passes it by. */
            moe_device_info info = {.struct_size = sizeof info};
            if (order[i] != MOE_BACKEND_CPU) {
                const moe_status ist = ops->device_info(desc.device_index, &info);
                if (ist != MOE_OK) {
                    moe_log(ctx, MOE_LOG_WARNING,
                            "auto: backend '%s' cannot describe device %d (%s: %s); trying the next",
                            ops->name, desc.device_index, moe_status_string(ist), moe_last_error());
                    continue;
                }
                if (info.type == MOE_DEVICE_TYPE_CPU) {
                    moe_log(ctx, MOE_LOG_INFO, "auto: passing by %s device '%s' (a CPU device)", ops->name,
                            info.name);
                    continue;
                }
            }
            st = create_backend(ctx, order[i], &desc);
            if (st != MOE_OK)
                moe_log(ctx, MOE_LOG_WARNING, "auto: backend '%s' failed (%s: %s); trying the next",
                        ops->name, moe_status_string(st), ctx->error);
        }
        if (st == MOE_OK)
            moe_log(ctx, MOE_LOG_INFO, "auto: chose backend '%s', device '%s'", ctx->be->ops->name,
                    ctx->be->info.name);
        else if (st == MOE_ERROR_BACKEND_UNAVAILABLE)
            moe_fail(ctx, st, "auto: no backend has a device with index %d", desc.device_index);
    }
    if (st != MOE_OK) {
        moe_fail(NULL, st, "%s", ctx->error); /* keep the detail for the caller */
        moe_free(ctx);
        return st;
    }
    ctx->arena.be = ctx->be;
    ctx->arena.staging_bytes = ctx->be->staging_bytes;
    *out = ctx;
    return MOE_OK;
}

void moe_context_destroy(moe_context *ctx)
{
    if (!ctx) return;
    moe_arena_release(&ctx->arena);
    if (ctx->be) ctx->be->ops->destroy(ctx->be);
    moe_free(ctx);
}

moe_backend_kind moe_context_backend(const moe_context *ctx)
{
    return ctx && ctx->be ? ctx->be->ops->kind : MOE_BACKEND_AUTO;
}

moe_status moe_context_get_device_info(const moe_context *ctx, moe_device_info *info)
{
    if (!ctx || !info) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context or info is NULL");
    return moe_abi_out(NULL, &moe_abi_device_info, info, &ctx->be->info);
}

const char *moe_context_error(const moe_context *ctx)
{
    return ctx ? ctx->error : moe_last_error();
}

moe_status moe_context_get_arena_stats(const moe_context *ctx, moe_arena_stats *stats)
{
    if (!ctx || !stats) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context or stats is NULL");
    const moe_arena *a = &ctx->arena;
    const moe_arena_stats full = {
        .struct_size = sizeof full,
        .weights_bytes = a->weights_bytes,
        .scratch_bytes = a->scratch_bytes,
        .scratch_peak_bytes = a->scratch_peak_bytes,
        .staging_bytes = a->staging_bytes,
        .buffer_bytes = a->buffer_bytes,
        .allocation_count = a->allocation_count,
        .scratch_reservations = a->scratch_reservations,
    };
    return moe_abi_out(NULL, &moe_abi_arena_stats, stats, &full);
}
