/*
 * context.c — backend registry, device enumeration, context create/destroy, arena stats.
 *
 * A device is chosen within one backend's list by name, type and index (moe.h, "Choosing the
 * device"). AUTO tries Vulkan, then OpenCL, then the CPU, taking the first backend that is built
 * and has such a device — a GPU API's CPU-type device (lavapipe, PoCL) excepted unless named,
 * since the native CPU backend does that work far faster; a backend with no driver reports zero
 * devices rather than failing. A driver that fails to enumerate is an error for an explicit
 * request, and a logged warning that AUTO passes by (the backends serialise their own
 * enumeration).
 */
#include "alloc.h"
#include "internal.h"
#include "platform/system.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
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

/* ---- choosing the device ----------------------------------------------------------------- */

static const char *const type_names[] = {"other", "cpu", "integrated", "discrete", "virtual"};

static const char *type_name(moe_device_type t)
{
    return (unsigned)t < sizeof type_names / sizeof type_names[0] ? type_names[t] : "other";
}

/* Does `hay` contain `needle`, ASCII case-insensitively? */
static bool name_has(const char *hay, const char *needle)
{
    const size_t n = strlen(needle);
    for (const char *p = hay;; p++) {
        size_t i = 0;
        while (i < n && p[i] && tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return true;
        if (!*p) return false;
    }
}

static bool named(const moe_context_desc *d)
{
    return d->device_name && *d->device_name;
}

/* "named like 'x', of type discrete or integrated" — what the filters ask, for messages. */
static void describe_filters(const moe_context_desc *d, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    if (named(d)) n += (size_t)snprintf(buf, size, " named like '%s'", d->device_name);
    for (unsigned t = 0, first = 1; t < 32 && n < size; t++)
        if (d->device_types & (1u << t)) {
            n += (size_t)snprintf(buf + n, size - n, "%s%s", first ? " of type " : " or ",
                                  type_name((moe_device_type)t));
            first = 0;
        }
}

/* The index on `ops` of the device desc chooses: the device_index-th of the devices its filters
 * leave (and, for AUTO, that are not a GPU API's CPU device it did not name). A backend with no
 * such device: MOE_ERROR_BACKEND_UNAVAILABLE, the message listing the devices it has. */
static moe_status find_device(moe_context *ctx, const moe_backend_ops *ops, const moe_context_desc *d,
                              bool for_auto, int *out)
{
    int count = 0;
    moe_status st = ops->device_count(&count);
    if (st != MOE_OK) return moe_fail(ctx, st, "%s", moe_last_error()); /* a driver error, with its detail */
    /* A plain index on a named backend needs no device's info (only a miss lists them). */
    if (!for_auto && !named(d) && !d->device_types && d->device_index >= 0 && d->device_index < count) {
        *out = d->device_index;
        return MOE_OK;
    }
    char list[768] = "", filters[256];
    size_t n = 0;
    int left = 0;
    for (int i = 0; i < count; i++) {
        moe_device_info info = {.struct_size = sizeof info};
        st = ops->device_info(i, &info);
        if (st != MOE_OK) return moe_fail(ctx, st, "%s", moe_last_error());
        if (n < sizeof list)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%d '%s' (%s)", i ? ", " : "", i, info.name,
                                  type_name(info.type));
        if (named(d) && !name_has(info.name, d->device_name)) continue;
        if (d->device_types && !(d->device_types & MOE_DEVICE_TYPE_BIT(info.type))) continue;
        /* A GPU API's CPU device (lavapipe, PoCL, SwiftShader) emulates on the CPU what the
         * native CPU backend does many times faster: AUTO passes it by unless it was named. */
        if (for_auto && ops->kind != MOE_BACKEND_CPU && info.type == MOE_DEVICE_TYPE_CPU && !named(d)) {
            moe_log(ctx, MOE_LOG_INFO, "auto: passing by %s device '%s' (a CPU device)", ops->name,
                    info.name);
            continue;
        }
        if (left++ == d->device_index) {
            *out = i;
            return MOE_OK;
        }
    }
    describe_filters(d, filters, sizeof filters);
    return moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE,
                    "backend '%s' has no device %d%s%s (%d device(s)%s%s)", ops->name, d->device_index,
                    filters[0] ? " among those" : "", filters, count, count ? ": " : "", list);
}

static moe_status create_backend(moe_context *ctx, moe_backend_kind kind, const moe_context_desc *desc,
                                 bool for_auto)
{
    const moe_backend_ops *ops = moe_backend_ops_of(kind);
    if (!ops)
        return moe_fail(ctx, MOE_ERROR_BACKEND_UNAVAILABLE, "backend '%s' is not built into this library",
                        moe_backend_name(kind));
    moe_context_desc chosen = *desc; /* the backends read device_index as their own index */
    if (desc->external_device) return ops->create(ctx, &chosen, &ctx->be); /* the backend checks it */
    moe_status st = find_device(ctx, ops, desc, for_auto, &chosen.device_index);
    return st == MOE_OK ? ops->create(ctx, &chosen, &ctx->be) : st;
}

moe_status moe_context_desc_set_device(moe_context_desc *desc, const char *text)
{
    moe_clear_error(NULL);
    if (!desc || !text) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "desc or text is NULL");
    size_t bytes;
    moe_status st = moe_abi_check(NULL, &moe_abi_context_desc, desc, &bytes);
    if (st != MOE_OK) return st;
    if (bytes < MOE_ABI_END(moe_context_desc, device_types))
        return moe_fail(
            NULL, MOE_ERROR_INVALID_ARGUMENT,
            "desc.struct_size %zu is a moe_context_desc from before 0.3.0, which has no device_name "
            "or device_types",
            desc->struct_size);
    if (!*text) return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT, "an empty device choice");
    if (strspn(text, "0123456789") == strlen(text)) {
        errno = 0;
        const long v = strtol(text, NULL, 10);
        if (errno == ERANGE || v > INT_MAX)
            return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT, "device index '%s' is out of range", text);
        desc->device_index = (int)v;
        return MOE_OK;
    }
    if (!strncmp(text, "name:", 5)) {
        if (!text[5]) return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT, "'name:' with no name after it");
        desc->device_name = text + 5;
        return MOE_OK;
    }
    uint32_t types = 0;
    for (const char *p = text; types != UINT32_MAX;) {
        const size_t len = strcspn(p, "+");
        size_t t = 0;
        while (t < sizeof type_names / sizeof type_names[0] &&
               (strlen(type_names[t]) != len || strncmp(p, type_names[t], len)))
            t++;
        if (t == sizeof type_names / sizeof type_names[0])
            types = UINT32_MAX; /* not a type list: a name */
        else
            types |= MOE_DEVICE_TYPE_BIT(t);
        if (!p[len]) break;
        p += len + 1;
    }
    if (types != UINT32_MAX)
        desc->device_types = types;
    else
        desc->device_name = text;
    return MOE_OK;
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
    if (desc.external_device) {
        /* The application's device: its struct's second field names the API (moe_opencl.h,
         * moe_vulkan.h), and nothing is chosen. */
        moe_backend_kind ext;
        memcpy(&ext, (const char *)desc.external_device + sizeof(size_t), sizeof ext);
        if (ext != MOE_BACKEND_VULKAN && ext != MOE_BACKEND_OPENCL)
            return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                            "external_device.backend is %d: a moe_vulkan_device has MOE_BACKEND_VULKAN, a "
                            "moe_opencl_device MOE_BACKEND_OPENCL",
                            (int)ext);
        if (desc.backend != MOE_BACKEND_AUTO && desc.backend != ext)
            return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                            "backend '%s' with an external %s device: leave backend AUTO or make them agree",
                            moe_backend_name(desc.backend), moe_backend_name(ext));
        if (desc.device_index != 0 || (desc.device_name && *desc.device_name) || desc.device_types != 0)
            return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                            "device_index, device_name and device_types choose among the devices moe opens; "
                            "with external_device the application has chosen: leave them unset");
        desc.backend = ext;
    }
    if (desc.backend == MOE_BACKEND_AUTO) desc.backend = env_backend();
    if (desc.backend == MOE_BACKEND_AUTO && desc.device_index != 0)
        return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                        "device_index %d with backend AUTO: an index means a device of one backend's list, "
                        "and AUTO may pick any backend; name the backend, or choose by device_name / "
                        "device_types",
                        desc.device_index);

    moe_context *ctx = moe_calloc(1, sizeof *ctx);
    if (!ctx) return moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    ctx->log = desc.log;
    ctx->log_user_data = desc.log_user_data;
    ctx->log_level = desc.log_level;
    const long cores = moe_sys_cpu_count();
    ctx->host_threads = desc.n_threads > 0 ? desc.n_threads : cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;

    moe_status st;
    if (desc.backend != MOE_BACKEND_AUTO) {
        st = create_backend(ctx, desc.backend, &desc, false);
    } else {
        static const moe_backend_kind order[] = {MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL, MOE_BACKEND_CPU};
        st = MOE_ERROR_BACKEND_UNAVAILABLE;
        for (size_t i = 0; i < sizeof order / sizeof order[0] && st != MOE_OK; i++) {
            if (!moe_backend_ops_of(order[i])) continue;
            /* A driver that fails to enumerate, a backend without such a device, a device that
             * fails to open: each is logged, and AUTO moves on (the CPU backend is always there). */
            st = create_backend(ctx, order[i], &desc, true);
            if (st != MOE_OK)
                moe_log(ctx, st == MOE_ERROR_BACKEND_UNAVAILABLE ? MOE_LOG_INFO : MOE_LOG_WARNING,
                        "auto: backend '%s' (%s: %s); trying the next", moe_backend_name(order[i]),
                        moe_status_string(st), ctx->error);
        }
        if (st == MOE_OK) {
            moe_log(ctx, MOE_LOG_INFO, "auto: chose backend '%s', device '%s'", ctx->be->ops->name,
                    ctx->be->info.name);
        } else {
            char filters[256];
            describe_filters(&desc, filters, sizeof filters);
            moe_fail(ctx, st, "auto: no backend has a device%s (the last one: %s)", filters, ctx->error);
        }
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

static void free_context(moe_context *ctx)
{
    moe_arena_release(&ctx->arena);
    if (ctx->be) ctx->be->ops->destroy(ctx->be);
    moe_free(ctx);
}

void moe_context_destroy(moe_context *ctx)
{
    if (!ctx) return;
    if (ctx->destroyed) return; /* already destroyed, waiting for its last layer or buffer */
    moe_context_wait_all(ctx);
    if (ctx->n_layers > 0 || ctx->n_buffers > 0) {
        /* Freeing now would pull the arena and the device from under them (their _destroy
         * frees into both): the context stays until the last of them goes. */
        ctx->destroyed = true;
        moe_fail(ctx, MOE_ERROR_BUSY,
                 "moe_context_destroy: %lld layer(s) and %lld buffer(s) of this context are still alive; "
                 "destroy them first — the context is released with the last of them",
                 (long long)ctx->n_layers, (long long)ctx->n_buffers);
        return;
    }
    free_context(ctx);
}

moe_status moe_context_wait_all(moe_context *ctx)
{
    if (ctx->completed == ctx->submitted) return MOE_OK;
    const moe_status st = ctx->be->ops->wait(ctx->be);
    ctx->completed = ctx->submitted;
    return st;
}

moe_status moe_context_wait(moe_context *ctx)
{
    if (!ctx) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context is NULL");
    moe_clear_error(ctx);
    return moe_context_wait_all(ctx);
}

moe_status moe_context_expect_backend(const moe_context *ctx, const moe_backend_ops *ops, const char *what)
{
    moe_context *c = (moe_context *)ctx; /* for the error message only */
    if (!ctx) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "%s: context is NULL", what);
    moe_clear_error(c);
    if (ctx->be->ops != ops)
        return moe_fail(c, MOE_ERROR_INVALID_ARGUMENT, "%s: the context runs on backend '%s', not %s", what,
                        ctx->be->ops->name, ops->name);
    return MOE_OK;
}

moe_status moe_context_check_live(moe_context *ctx, const char *what)
{
    if (!ctx->destroyed) return MOE_OK;
    return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                    "%s: the context was destroyed (moe_context_destroy); only _destroy calls are left for "
                    "its layers and buffers",
                    what);
}

void moe_context_child_destroying(moe_context *ctx, uint64_t serial, const char *what)
{
    if (!moe_in_flight(ctx, serial)) return;
    const moe_status st = moe_context_wait_all(ctx);
    moe_fail(ctx, MOE_ERROR_BUSY,
             "%s: destroyed while a forward using it was in flight (call moe_context_wait first); waited for "
             "the context's forwards before freeing it%s%s",
             what, st != MOE_OK ? ", which failed: " : "", st != MOE_OK ? moe_status_string(st) : "");
}

bool moe_context_defer_destroy(moe_context *ctx, int64_t pins, bool *pending, const char *what)
{
    if (*pending) return true;
    if (pins == 0) return false;
    *pending = true; /* an application's command buffer still holds it */
    moe_fail(ctx, MOE_ERROR_BUSY,
             "%s: %lld recorded forward(s) use it (moe_vulkan_layer_record); it is freed when the last is "
             "destroyed",
             what, (long long)pins);
    return true;
}

void moe_context_release_child(moe_context *ctx, int64_t *count)
{
    (*count)--;
    if (ctx->destroyed && ctx->n_layers == 0 && ctx->n_buffers == 0) free_context(ctx);
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
